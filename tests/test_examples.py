"""The examples run as a researcher runs them (a subprocess, their quick settings) and their
outputs are there and sane: recordings that load, checkpoints that load into fine-tuning, a
summary whose numbers add up."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs  # noqa: F401  (registers the env ids)
from sim2online_envs.agents import SAC, load_checkpoint, paper_recipe
from sim2online_envs.agents.checkpoint import read_manifest
from sim2online_envs.wrappers import load_episodes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: str, *args: str, timeout: float = 600) -> str:
    """Run ``examples/<script>`` with ``args``; return its log (stderr), fail with its tail."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stderr[-4000:]}"
    return result.stderr


def load_module(script: str) -> ModuleType:
    """Import an example as a module (for its argument parsing), without running it."""
    name = f"examples_{script.removesuffix('.py')}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def read_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


# -- record_and_reuse.py (fast) ----------------------------------------------------------------


def test_record_and_reuse_keeps_every_trial_as_offline_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    log = run_example(
        "record_and_reuse.py",
        *("--out", str(out), "--episodes", "3", "--online-episodes", "1"),
        *("--gradient-steps", "10", "--critic-width", "32"),
        timeout=300,
    )
    summary = read_summary(out)
    trial0, trial1, trial2 = summary["trial_0"], summary["trial_1"], summary["trial_2"]
    # Trial 0: three full scripted episodes of the car (T = 250), good data: the noisy scripted
    # parker still ends inside the goal radius.
    assert trial0["episodes"] == 3 and trial0["transitions"] == 3 * 250
    assert trial0["success_rate"] >= 2 / 3
    assert trial0["policy_versions"] == {"scripted+noise0.2": 3}
    # Trial 1's D0 is exactly trial 0's recordings; its own episode is recorded with the
    # version of the weights that acted (no update before the first episode).
    assert trial1["d0_transitions"] == trial0["transitions"]
    assert trial1["episodes"] == 1 and trial1["transitions"] == 250
    assert trial1["policy_versions"] == {"sac-trial-1/updates-0": 1}
    assert trial1["gradient_steps"] == 10
    # The next trial starts from everything recorded so far.
    assert trial2 == {"d0_transitions": 1000, "files": 4}
    # The files on disk are what the summary says, readable without the script.
    episodes = load_episodes(out / "trial-0", robot="racecar") + load_episodes(
        out / "trial-1", robot="racecar"
    )
    assert [len(e) for e in episodes] == [250] * 4
    assert all(e.provenance["backend"] == "sim" and e.provenance["complete"] for e in episodes)
    assert sum(float(e.rewards.sum()) for e in episodes[:3]) / 3 == pytest.approx(
        trial0["mean_return"]
    )
    assert "trial 2: D0 = 1000 transitions" in log


@pytest.mark.slow
def test_record_and_reuse_counts_episodes_that_end_early_on_the_go1(tmp_path: Path) -> None:
    out = tmp_path / "go1"
    run_example(
        "record_and_reuse.py",
        *("--robot", "go1", "--out", str(out), "--episodes", "2", "--online-episodes", "2"),
        *("--gradient-steps", "5", "--critic-width", "32"),
    )
    summary = read_summary(out)
    # Standing still with noise lasts the full 1000 steps or falls; either way each requested
    # episode is one file, and a fall ends the learner's episode without eating the next one.
    assert summary["trial_0"]["episodes"] == 2
    assert summary["trial_1"]["episodes"] == 2
    assert summary["trial_1"]["policy_versions"] == {
        "sac-trial-1/updates-0": 1,
        "sac-trial-1/updates-5": 1,
    }
    total = summary["trial_0"]["transitions"] + summary["trial_1"]["transitions"]
    assert summary["trial_2"] == {"d0_transitions": total, "files": 4}
    lengths = [len(e) for e in load_episodes(out / "trial-1", robot="go1")]
    assert sum(lengths) == summary["trial_1"]["transitions"]
    assert all(1 <= n <= 1000 for n in lengths)


def test_record_and_reuse_refuses_to_mix_into_old_recordings(tmp_path: Path) -> None:
    module = load_module("record_and_reuse.py")
    (tmp_path / "trial-0").mkdir()
    (tmp_path / "trial-0" / "episode-x.npz").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds recordings"):
        module.main(["--out", str(tmp_path)])


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("record_and_reuse.py", ["--episodes", "0"], "--episodes must be >= 1, got 0"),
        ("record_and_reuse.py", ["--noise", "-1"], "--noise must be >= 0"),
        ("batched_pretraining_go1.py", ["--num-envs", "0"], "--num-envs must be >= 1"),
        (
            "pretrain_then_finetune_racecar.py",
            ["--quick", "--gradient-steps", "0"],
            "--gradient-steps must be >= 1, got 0",
        ),
        ("pretrain_then_finetune_racecar.py", ["--prior", "/nonexistent"], "no checkpoint.json"),
    ],
)
def test_bad_arguments_are_named(
    script: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_module(script)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- batched_pretraining_go1.py ----------------------------------------------------------------


def test_batched_go1_sac_prior_loads_for_fine_tuning(tmp_path: Path) -> None:
    out = tmp_path / "go1"
    run_example(
        "batched_pretraining_go1.py",
        *("--out", str(out), "--num-envs", "16", "--total-timesteps", "512"),
        *("--learning-starts", "256", "--gradient-steps", "1", "--critic-width", "32"),
        *("--num-threads", "1"),
    )
    summary = read_summary(out)
    assert summary["algo"] == "sac" and summary["num_envs"] == 16
    assert summary["timesteps"] == 512
    assert summary["world_steps_per_s"] > 0
    terms = summary["reward_terms_per_step"]
    assert {"tracking_lin_vel", "tracking_ang_vel", "orientation"} <= set(terms)
    assert all(math.isfinite(v) for v in terms.values())
    assert summary["mean_reward_per_step"] == pytest.approx(sum(terms.values()))
    # VecMonitor's file: a JSON header line, then r,l,t.
    monitor = (out / "monitor.csv").read_text().splitlines()
    assert monitor[0].startswith("#") and monitor[1] == "r,l,t"
    assert len(monitor) - 2 == summary["finished_episodes"]
    # The prior (model + the 512 sim transitions) goes straight into paper-recipe fine-tuning.
    prior = out / "prior"
    env = gym.make("SimGo1-v0")
    sim_buffer = prior / read_manifest(prior)["replay_buffer"]["file"]
    model = load_checkpoint(
        SAC,
        prior,
        env=env,
        load_replay_buffer=False,
        **paper_recipe("go1", offline_data=sim_buffer, buffer_size=1000, for_load=True),
    )
    assert model.replay_buffer.offline_size == 512
    assert model.policy_delay == 20
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)


@pytest.mark.slow
def test_batched_go1_ppo_default_budget(tmp_path: Path) -> None:
    out = tmp_path / "go1_ppo"
    run_example("batched_pretraining_go1.py", "--out", str(out), "--algo", "ppo")
    summary = read_summary(out)
    assert summary["algo"] == "ppo" and summary["num_envs"] == 256
    assert summary["timesteps"] == 8192  # two rollouts of 16 steps x 256 worlds
    assert (out / "ppo_go1.zip").is_file() and (out / "vecnormalize.pkl").is_file()
    assert all(math.isfinite(v) for v in summary["reward_terms_per_step"].values())


# -- pretrain_then_finetune_racecar.py ---------------------------------------------------------


@pytest.mark.slow
def test_racecar_quick_run_and_reusing_its_prior(tmp_path: Path) -> None:
    out = tmp_path / "car"
    log = run_example("pretrain_then_finetune_racecar.py", "--quick", "--out", str(out))
    summary = read_summary(out)
    rows = {(row["policy"], row["env"]): row for row in summary["evaluation"]}
    assert set(rows) == {
        ("scripted", "sim (kinematic)"),
        ("scripted", "reality (dynamic)"),
        ("prior", "sim (kinematic)"),
        ("prior", "reality (dynamic)"),
        ("fine-tuned", "reality (dynamic)"),
        ("vanilla", "reality (dynamic)"),
    }
    for row in rows.values():
        assert math.isfinite(row["mean_return"]) and 0.0 <= row["success_rate"] <= 1.0
    # The scripted parker is the sanity anchor: it parks in both physics.
    assert rows["scripted", "sim (kinematic)"]["success_rate"] == 1.0
    assert rows["scripted", "reality (dynamic)"]["success_rate"] >= 0.75
    assert summary["return_change_on_reality"] == pytest.approx(
        rows["fine-tuned", "reality (dynamic)"]["mean_return"]
        - rows["prior", "reality (dynamic)"]["mean_return"]
    )
    # One Q-error row per episode on reality: the warm start's and the fine-tuning episodes
    # (the safety wrapper may cut episodes short, so steps are not episodes x 250).
    budget = summary["budget"]
    episodes = summary["warm_start_episodes"] + budget["finetune_episodes"]
    assert summary["warm_start_episodes"] >= 1
    assert len(summary["q_error_mean_per_episode"]) == episodes
    assert len(summary["episode_returns_on_reality"]) == episodes
    assert len((out / "q_error.csv").read_text().splitlines()) == episodes + 1
    assert "fine-tuned   reality (dynamic)" in log
    # The vanilla baseline ran the same episodes on the same prior, without warm start or D0.
    vanilla = summary["vanilla"]
    assert len(vanilla["q_error_mean_per_episode"]) == budget["finetune_episodes"]
    assert len((out / "q_error_vanilla.csv").read_text().splitlines()) == (
        budget["finetune_episodes"] + 1
    )
    assert vanilla["return_change_on_reality"] == pytest.approx(
        rows["vanilla", "reality (dynamic)"]["mean_return"]
        - rows["prior", "reality (dynamic)"]["mean_return"]
    )
    baseline = load_checkpoint(SAC, out / "finetuned_vanilla", env=gym.make("SimRaceCar-v0"))
    assert type(baseline.replay_buffer).__name__ == "ReplayBuffer"
    assert baseline.policy_delay == 1

    # The fine-tuned checkpoint: every step on reality online, the prior's sim buffer as D0
    # (the pretraining agent's own transitions and the demonstrations).
    tuned = load_checkpoint(SAC, out / "finetuned", env=gym.make("SimRaceCar-v0"))
    prior_manifest = read_manifest(out / "prior")
    assert tuned.num_timesteps == summary["finetune_steps"] >= budget["warm_start_steps"]
    assert tuned.replay_buffer.online_transitions() == summary["finetune_steps"]
    demos = budget["demo_steps"] * budget["num_envs"]
    assert tuned.replay_buffer.offline_size == budget["pretrain_steps"] + demos
    assert prior_manifest["num_timesteps"] == budget["pretrain_steps"]

    # --prior skips pretraining and fine-tunes the saved prior again.
    again = tmp_path / "again"
    run_example(
        "pretrain_then_finetune_racecar.py",
        *("--quick", "--prior", str(out / "prior"), "--out", str(again)),
        *("--finetune-episodes", "1", "--warm-start-steps", "0", "--eval-episodes", "1"),
        "--no-compare-vanilla",
    )
    assert not (again / "prior").exists()
    assert read_summary(again)["vanilla"] is None
    assert len(read_summary(again)["q_error_mean_per_episode"]) == 1
    assert np.isfinite(read_summary(again)["return_change_on_reality"])
