"""Priors: SAC pretrained in batched sim worlds, and the small ones the package ships.

A prior is a :func:`~sim2online_envs.agents.save_checkpoint` folder: the whole learner state and
its sim replay buffer (the agent's own transitions and the scripted demonstrations), which the
paper recipe mixes into fine-tuning as D0. :func:`pretrain_prior` makes one on
``make_vec(env_id, num_envs)``: episodes of the robot's scripted controller with action noise
are half of every minibatch (RLPD's symmetric sampling, through the same
:class:`~sim2online_envs.agents.MixingReplayBuffer` that fine-tuning uses); the policy is SAC's
own, never cloned. The paper recipe's networks, so that the prior fine-tunes without surgery.

The package ships a CPU-sized race-car prior (``shipped_prior("racecar")``, what ``sim2online
finetune --prior shipped`` loads); ``sim2online prior racecar`` regenerates it with
:data:`SHIPPED_BUDGETS`. Its measured returns are in ``docs/results.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np

from sim2online_envs.robots import racecar

logger = logging.getLogger("sim2online.priors")

#: Where the shipped priors live, one folder per robot.
SHIPPED_DIR = pathlib.Path(__file__).parent / "assets" / "priors"


@dataclasses.dataclass(frozen=True)
class PriorBudget:
    """How a prior is pretrained.

    :param env_id: the sim it is pretrained in.
    :param env_kwargs: ``make_vec`` keywords (physics, preset).
    :param num_envs: worlds stepped together.
    :param demo_steps: batched steps of noisy scripted episodes (0: from scratch).
    :param demo_noise: standard deviation of the Gaussian noise on the scripted actions.
    :param steps: environment steps of SAC (all worlds counted).
    :param gradient_steps: gradient steps per batched step.
    :param critic_width: BRO critic width (the paper: 512).
    :param learning_rate: one Adam learning rate for actor, critic and temperature.
    """

    env_id: str = racecar.SIM_ID
    env_kwargs: tuple[tuple[str, Any], ...] = (("dynamics", "kinematic"),)
    num_envs: int = 16
    demo_steps: int = 500
    demo_noise: float = 0.3
    steps: int = 60_000
    gradient_steps: int = 4
    critic_width: int = 128
    learning_rate: float = 3e-4


#: The budgets of the priors the package ships (``sim2online prior <robot>`` regenerates them).
SHIPPED_BUDGETS: dict[str, PriorBudget] = {"racecar": PriorBudget()}


def shipped_prior(robot: str) -> pathlib.Path:
    """The folder of the prior the package ships for ``robot`` (a checkpoint folder)."""
    if robot not in SHIPPED_BUDGETS:
        raise ValueError(
            f"no shipped prior for {robot!r}; the package ships {sorted(SHIPPED_BUDGETS)}, "
            "other robots: `sim2online pretrain` and --prior <folder>"
        )
    folder = SHIPPED_DIR / robot
    if not (folder / "checkpoint.json").is_file():
        raise FileNotFoundError(
            f"the shipped {robot} prior is missing from {folder}; regenerate it with "
            f"`sim2online prior {robot}`"
        )
    return folder


def scripted_demonstrations(
    venv: Any, controller: Any, steps: int, noise: float, seed: int
) -> dict[str, np.ndarray]:
    """``steps`` batched steps of noisy scripted episodes in every world, as transition arrays.

    ``controller`` maps a batch of observations to a batch of actions in [-1, 1]; the arrays
    are in ``MixingReplayBuffer.add_offline_transitions``'s form, with each finished episode's
    true last observation (the vec env has already reset that world).
    """
    rng = np.random.default_rng(seed)
    fields: dict[str, list[np.ndarray]] = {
        key: []
        for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
    }
    action_dim = venv.action_space.shape[0]
    obs = venv.reset()
    for _ in range(steps):
        noisy = controller(obs) + noise * rng.standard_normal((venv.num_envs, action_dim))
        actions = np.clip(noisy, -1.0, 1.0).astype(np.float32)
        next_obs, rewards, dones, infos = venv.step(actions)
        real_next = next_obs.copy()
        for i in np.flatnonzero(dones):
            real_next[i] = infos[i]["terminal_observation"]
        timeouts = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        for key, value in zip(
            fields, (obs, real_next, actions, rewards, dones, timeouts), strict=True
        ):
            fields[key].append(value)
        obs = next_obs
    return {key: np.concatenate(values) for key, values in fields.items()}


def pretrain_prior(
    budget: PriorBudget, out: str | pathlib.Path, seed: int = 0, progress_bar: bool = False
) -> pathlib.Path:
    """Pretrain SAC on ``budget`` and save it (model and sim buffer) in ``out / "prior"``.

    Writes ``out / "pretrain_monitor.csv"`` (the training episodes); returns the prior's folder.
    """
    from stable_baselines3.common.vec_env import VecMonitor

    import sim2online_envs
    from sim2online_envs.agents import SAC, MixingReplayBuffer, paper_recipe, save_checkpoint
    from sim2online_envs.train import robot_of

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = dict(budget.env_kwargs)
    venv = VecMonitor(
        sim2online_envs.make_vec(budget.env_id, budget.num_envs, seed=seed, **env_kwargs),
        filename=str(out / "pretrain_monitor.csv"),
    )
    robot = robot_of(budget.env_id)
    recipe = paper_recipe(robot)
    # Initial temperature 0.01: SB3's 1.0 outweighs rewards of a few centimetres of progress
    # per step for tens of thousands of steps.
    model = SAC(
        "MlpPolicy",
        venv,
        learning_rate=budget.learning_rate,
        buffer_size=budget.steps + budget.num_envs,
        batch_size=recipe["batch_size"],
        gamma=recipe["gamma"],
        tau=recipe["tau"],
        train_freq=1,
        gradient_steps=budget.gradient_steps,
        learning_starts=0 if budget.demo_steps else 2000,
        ent_coef="auto_0.01",
        max_grad_norm=recipe["max_grad_norm"],
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={"online_fraction": 0.5 if budget.demo_steps else 1.0},
        policy_kwargs={**recipe["policy_kwargs"], "critic_width": budget.critic_width},
        seed=seed,
    )
    if budget.demo_steps:
        import importlib

        make_controller = importlib.import_module(
            f"sim2online_envs.controllers.{robot}"
        ).make_controller
        # Their own worlds (seeds after the training worlds'), kept out of the monitor file.
        demo_venv = sim2online_envs.make_vec(
            budget.env_id, budget.num_envs, seed=seed + budget.num_envs, **env_kwargs
        )
        controller = make_controller(gym.make(budget.env_id, **env_kwargs))
        demos = scripted_demonstrations(
            demo_venv, controller, budget.demo_steps, budget.demo_noise, seed
        )
        demo_venv.close()
        model.replay_buffer.add_offline_transitions(**demos)
        logger.info(
            "demonstrations: %d scripted transitions, mean reward per step %.3f",
            len(demos["rewards"]),
            float(np.mean(demos["rewards"])),
        )
    start = time.perf_counter()
    model.learn(budget.steps, log_interval=10_000, progress_bar=progress_bar)
    logger.info(
        "pretrained on %d worlds of %s: %d steps, %d gradient steps, %.0f s",
        budget.num_envs,
        budget.env_id,
        model.num_timesteps,
        model._n_updates,
        time.perf_counter() - start,
    )
    prior_dir = out / "prior"
    save_checkpoint(model, prior_dir)
    venv.close()
    return prior_dir


def regenerate_shipped(robot: str, seed: int = 0, progress_bar: bool = True) -> pathlib.Path:
    """Pretrain ``robot``'s shipped prior with its budget and replace the package's copy.

    The new prior is written in a temporary folder first; the shipped folder is replaced only
    once it is complete, so an interrupted run leaves the old prior in place.
    """
    if robot not in SHIPPED_BUDGETS:
        raise ValueError(f"no shipped prior for {robot!r}; known: {sorted(SHIPPED_BUDGETS)}")
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SHIPPED_DIR, prefix=f".{robot}-") as scratch:
        prior = pretrain_prior(
            SHIPPED_BUDGETS[robot], scratch, seed=seed, progress_bar=progress_bar
        )
        target = SHIPPED_DIR / robot
        old = SHIPPED_DIR / f".{robot}-old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        prior.rename(target)
        if old.exists():
            shutil.rmtree(old)
    logger.info("shipped %s prior regenerated in %s", robot, target)
    return target
