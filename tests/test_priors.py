"""Priors: the batched pretraining stage, the shipped race-car prior and its regeneration."""

from __future__ import annotations

import json
import pathlib

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs
from sim2online_envs import priors
from sim2online_envs.agents import SAC, MixingReplayBuffer, load_checkpoint
from sim2online_envs.cli import main

TINY = priors.PriorBudget(num_envs=2, demo_steps=20, steps=120, gradient_steps=1, critic_width=16)


def test_the_shipped_racecar_prior_fits_sim_and_real_spaces() -> None:
    folder = priors.shipped_prior("racecar")
    manifest = json.loads((folder / "checkpoint.json").read_text())
    assert {"model", "replay_buffer"} <= set(manifest)
    model = load_checkpoint(SAC, folder, load_replay_buffer=False)
    sim = gym.make("SimRaceCar-v0")
    assert model.observation_space == sim.observation_space
    assert model.action_space == sim.action_space
    # Its policy drives: deterministic actions on a reset state are finite and inside the space.
    obs, _ = sim.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert np.all(np.isfinite(action)) and sim.action_space.contains(action.astype(np.float32))


def test_no_shipped_prior_for_a_robot_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no shipped prior for 'go1'.*racecar"):
        priors.shipped_prior("go1")


def test_pretrain_prior_saves_model_and_demonstrations(tmp_path: pathlib.Path) -> None:
    prior = priors.pretrain_prior(TINY, tmp_path, seed=3)
    assert prior == tmp_path / "prior" and (tmp_path / "pretrain_monitor.csv").is_file()
    model = load_checkpoint(SAC, prior)
    buffer = model.replay_buffer
    assert isinstance(buffer, MixingReplayBuffer)
    assert buffer.offline_size == TINY.num_envs * TINY.demo_steps  # the scripted transitions
    assert model.num_timesteps >= TINY.steps
    assert model._n_updates == model.num_timesteps // TINY.num_envs * TINY.gradient_steps


def test_scripted_demonstrations_are_whole_transitions() -> None:
    venv = sim2online_envs.make_vec("SimRaceCar-v0", 3, seed=0, max_episode_steps=5)
    calls = []

    def controller(obs: np.ndarray) -> np.ndarray:
        calls.append(obs.shape)
        return np.zeros((len(obs), 2))

    demos = priors.scripted_demonstrations(venv, controller, steps=7, noise=0.0, seed=0)
    assert calls == [(3, 7)] * 7
    assert demos["observations"].shape == (21, 7) and demos["actions"].shape == (21, 2)
    assert demos["timeouts"].sum() == 3  # every world's 5-step episode ended once
    ended = np.flatnonzero(demos["dones"])
    # The stored next observation of an ended episode is its last one, not the reset's.
    assert not np.allclose(demos["next_observations"][ended], demos["observations"][ended + 3])


def test_regenerating_replaces_the_shipped_prior_only_when_complete(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(priors, "SHIPPED_DIR", tmp_path)
    monkeypatch.setitem(priors.SHIPPED_BUDGETS, "racecar", TINY)
    old = tmp_path / "racecar"
    old.mkdir()
    (old / "checkpoint.json").write_text("{}")

    def fails(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(priors, "pretrain_prior", fails)
    with pytest.raises(KeyboardInterrupt):
        priors.regenerate_shipped("racecar", progress_bar=False)
    assert (old / "checkpoint.json").read_text() == "{}"  # the old prior is still whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["racecar"]
    monkeypatch.undo()
    monkeypatch.setattr(priors, "SHIPPED_DIR", tmp_path)
    monkeypatch.setitem(priors.SHIPPED_BUDGETS, "racecar", TINY)
    folder = priors.regenerate_shipped("racecar", progress_bar=False)
    assert folder == old and priors.shipped_prior("racecar") == folder
    assert json.loads((folder / "checkpoint.json").read_text())["algorithm"] == "SAC"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["racecar"]


def test_finetune_from_the_shipped_prior(tmp_path: pathlib.Path) -> None:
    run = tmp_path / "fine"
    args = ["finetune", "SimRaceCar-v0", "--env", "dynamics=dynamic", "--prior", "shipped"]
    args += ["--gradient-steps", "5", "--warm-start-steps", "250", "--episodes", "1"]
    assert main([*args, "--out", str(run)]) == 0
    assert json.loads((run / "progress.json").read_text()) == {"episodes": 1, "method": "paper"}
    assert (run / "learning_curve.png").is_file()
