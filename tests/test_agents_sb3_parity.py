"""With every addition off, this package's SAC, TD3, TQC and CrossQ are SB3's (sb3-contrib's)
to the bit, and SB3's own API behaviours hold: each test runs SB3 itself beside ours."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib
import stable_baselines3 as sb3
import torch as th
from stable_baselines3.common.logger import configure

from sim2online_envs.agents import SAC, TD3, TQC, CrossQ

OURS_AND_SB3 = {
    "SAC": (SAC, sb3.SAC),
    "TD3": (TD3, sb3.TD3),
    "TQC": (TQC, sb3_contrib.TQC),
    "CrossQ": (CrossQ, sb3_contrib.CrossQ),
}
#: Small networks that still exercise every part (TQC: few quantiles; CrossQ: its BatchRenorm).
POLICY_KWARGS: dict[str, dict[str, Any]] = {
    "SAC": {"net_arch": [16, 16]},
    "TD3": {"net_arch": [16, 16]},
    "TQC": {"net_arch": [16, 16], "n_quantiles": 5},
    "CrossQ": {"net_arch": [16, 16]},
}


def pendulum(steps: int = 50) -> gym.Env:
    return gym.make("Pendulum-v1", max_episode_steps=steps)


def make(name: str, ours: bool, env: gym.Env | None = None, **kwargs: Any) -> Any:
    cls = OURS_AND_SB3[name][0 if ours else 1]
    settings: dict[str, Any] = dict(
        policy_kwargs=dict(POLICY_KWARGS[name]),
        batch_size=16,
        learning_starts=40,
        seed=0,
        device="cpu",
    )
    settings.update(kwargs)
    return cls("MlpPolicy", env if env is not None else pendulum(), **settings)


def trained_state(model: Any) -> dict[str, Any]:
    """Weights, targets, every optimiser's state, temperature, counters and the buffer."""
    state: dict[str, Any] = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items()}
    for name in ("actor.optimizer", "critic.optimizer", "ent_coef_optimizer"):
        owner, _, attribute = name.rpartition(".")
        optimizer = getattr(getattr(model, owner) if owner else model, attribute, None)
        if optimizer is None:
            continue
        for index, values in optimizer.state_dict()["state"].items():
            for key, value in values.items():
                state[f"{name}.{index}.{key}"] = value.clone()
        state[f"{name}.lr"] = optimizer.param_groups[0]["lr"]
    if getattr(model, "log_ent_coef", None) is not None:
        state["log_ent_coef"] = model.log_ent_coef.detach().clone()
    state["counters"] = (model.num_timesteps, model._n_updates, model._episode_num)
    state["actions"] = model.replay_buffer.actions.copy()
    state["observations"] = model.replay_buffer.observations.copy()
    return state


def assert_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, th.Tensor):
            assert th.equal(value, b[key]), key
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, b[key], err_msg=key)
        else:
            assert value == b[key], key


def learned(name: str, ours: bool, steps: int, **kwargs: Any) -> dict[str, Any]:
    model = make(name, ours, **kwargs)
    model.learn(steps)
    return trained_state(model)


# -- bit-identical training ----------------------------------------------------------------

PARITY_CASES = [
    ("SAC", {}),
    # Several gradient steps per call and a target interval: SB3 counts it within each call.
    ("SAC", {"gradient_steps": 3, "target_update_interval": 2, "train_freq": 2}),
    ("SAC", {"ent_coef": 0.1, "learning_rate": lambda progress: 1e-3 * progress}),
    ("SAC", {"use_sde": True, "sde_sample_freq": 4}),  # gSDE: smooth exploration
    ("TD3", {}),
    ("TD3", {"gradient_steps": 3, "policy_delay": 3, "train_freq": (1, "episode")}),
    ("TQC", {}),
    ("TQC", {"gradient_steps": 2, "target_update_interval": 3, "top_quantiles_to_drop_per_net": 1}),
    ("CrossQ", {}),
    ("CrossQ", {"gradient_steps": 2, "policy_delay": 2}),
]


@pytest.mark.parametrize(("name", "kwargs"), PARITY_CASES)
def test_every_addition_off_trains_bit_for_bit_like_sb3(name: str, kwargs: dict[str, Any]) -> None:
    steps = 120
    reference = learned(name, False, steps, **kwargs)
    ours = learned(name, True, steps, **kwargs)
    assert reference["counters"][1] > 0
    assert_identical(reference, ours)


def test_policy_delay_one_is_sb3_also_when_given_explicitly() -> None:
    reference = learned("SAC", False, 120)
    ours = learned("SAC", True, 120, policy_delay=1, actor_learning_rate=None, max_grad_norm=None)
    assert_identical(reference, ours)


# -- SB3's API behaviours ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OURS_AND_SB3))
def test_tensorboard_folders_are_named_as_sb3_names_them(name: str, tmp_path: pathlib.Path) -> None:
    pytest.importorskip("tensorboard")
    folders = {}
    for ours in (False, True):
        root = tmp_path / ("ours" if ours else "sb3")
        model = make(name, ours, tensorboard_log=str(root), learning_starts=0)
        model.learn(4)
        model.learn(4, reset_num_timesteps=True)
        folders[ours] = sorted(p.name for p in root.iterdir())
    assert folders[True] == folders[False] == [f"{name}_1", f"{name}_2"]


@pytest.mark.parametrize("name", ["SAC", "TD3"])
def test_load_replay_buffer_after_deleting_it(name: str, tmp_path: pathlib.Path) -> None:
    sizes = []
    for ours in (False, True):
        model = make(name, ours, learning_starts=0)
        model.learn(20)
        model.save_replay_buffer(tmp_path / f"buffer_{ours}")
        del model.replay_buffer
        model.load_replay_buffer(tmp_path / f"buffer_{ours}")
        sizes.append(model.replay_buffer.size())
        model.learn(5, reset_num_timesteps=False)
    assert sizes == [20, 20]


@pytest.mark.parametrize("name", list(OURS_AND_SB3))
def test_a_replaced_lr_schedule_reaches_every_optimiser(name: str) -> None:
    rates = {}
    for ours in (False, True):
        model = make(name, ours, learning_starts=0)
        model.learn(20)
        model.lr_schedule = lambda progress: 1.25e-4  # SB3's way to change the rate mid-run
        model.learn(10, reset_num_timesteps=False)
        optimizers = [model.actor.optimizer, model.critic.optimizer]
        if getattr(model, "ent_coef_optimizer", None) is not None:
            optimizers.append(model.ent_coef_optimizer)
        rates[ours] = [o.param_groups[0]["lr"] for o in optimizers]
    assert rates[True] == rates[False]
    assert all(rate == 1.25e-4 for rate in rates[True])


def test_an_own_actor_rate_stays_when_lr_schedule_is_replaced() -> None:
    model = make("SAC", True, learning_starts=0, actor_learning_rate=2e-5)
    model.learn(20)
    model.lr_schedule = lambda progress: 1.25e-4
    model.learn(10, reset_num_timesteps=False)
    assert model.actor.optimizer.param_groups[0]["lr"] == 2e-5
    assert model.critic.optimizer.param_groups[0]["lr"] == 1.25e-4
    assert model.ent_coef_optimizer.param_groups[0]["lr"] == 1.25e-4


def test_target_update_interval_is_counted_within_each_train_call() -> None:
    """SB3 updates the targets at gradient steps 0, k, 2k, ... of every ``train`` call."""
    for ours in (False, True):
        model = make("SAC", ours, target_update_interval=4)
        model.set_logger(configure(folder=None, format_strings=[]))
        model.learn(40)  # fill the buffer (no update yet)
        updates = []
        original = sb3.common.utils.polyak_update

        def counting(*args: Any, _log: list = updates, _f: Any = original) -> None:
            _log.append(1)
            _f(*args)

        module = sys.modules[type(model).train.__module__]
        previous = module.polyak_update
        module.polyak_update = counting
        try:
            model.train(gradient_steps=6, batch_size=8)  # steps 0 and 4
            model.train(gradient_steps=3, batch_size=8)  # step 0
        finally:
            module.polyak_update = previous
        assert len(updates) == 2 * 3, type(model)  # critic params and running stats each time


# -- plain SB3 loads the package's files ----------------------------------------------------

LOAD_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, pathlib, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "sim2online_envs":
                raise ImportError("sim2online_envs is not installed")
            return None

    sys.meta_path.insert(0, Blocked())
    import numpy as np, torch as th
    import stable_baselines3, sb3_contrib
    th.set_num_threads(1)
    folder = pathlib.Path(sys.argv[1])
    obs = np.load(folder / "obs.npy")
    for name in sys.argv[2:]:
        cls = getattr(stable_baselines3, name, None) or getattr(sb3_contrib, name)
        model = cls.load(folder / f"{name}.zip", device="cpu")
        action, _ = model.predict(obs, deterministic=True)
        np.save(folder / f"{name}_action.npy", action)
        print(name, type(model.policy).__module__)
    """
)


def test_plain_sb3_loads_saved_models_without_this_package(tmp_path: pathlib.Path) -> None:
    """Each algorithm's file, with additions in use (delayed actor, own actor rate) but no
    policy extra, loads in plain SB3 / sb3-contrib with this package impossible to import,
    and acts as the saved model does."""
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    models = {}
    for name in OURS_AND_SB3:
        policy_kwargs = dict(POLICY_KWARGS[name])
        if name in ("SAC", "TD3"):  # this package's keys at their defaults: nothing is lost
            policy_kwargs.update(critic_arch="mlp", critic_width=64, image_augmentation=None)
        model = make(
            name,
            True,
            learning_starts=0,
            policy_delay=2,
            actor_learning_rate=1e-4,
            policy_kwargs=policy_kwargs,
        )
        model.learn(20)
        model.save(tmp_path / name)
        models[name] = model
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_PACKAGE)
    result = subprocess.run(
        # -I: neither the working directory nor PYTHONPATH nor the user site is on the path.
        [sys.executable, "-I", str(script), str(tmp_path), *OURS_AND_SB3],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sim2online_envs" not in result.stdout
    for name, model in models.items():
        expected, _ = model.predict(obs, deterministic=True)
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}_action.npy"), expected)
        # ... and this package loads it back as its own, with the additions' settings.
        loaded = type(model).load(tmp_path / name, env=pendulum())
        assert type(loaded.policy).__module__.startswith(("sim2online_envs", "sb3_contrib"))
        assert loaded.policy_delay == 2 and loaded.actor_learning_rate == 1e-4
        assert loaded.actor.optimizer.param_groups[0]["lr"] == 1e-4


def test_a_policy_with_extras_keeps_this_packages_class(tmp_path: pathlib.Path) -> None:
    model = make("SAC", True, policy_kwargs={"net_arch": [8], "critic_layer_norm": True})
    model.save(tmp_path / "model")
    loaded = SAC.load(tmp_path / "model")
    assert loaded.policy.critic_layer_norm
    assert_identical(
        {k: v for k, v in model.policy.state_dict().items()},
        {k: v for k, v in loaded.policy.state_dict().items()},
    )
