"""Batched pretraining on the Go1: many MuJoCo worlds as one Stable-Baselines3 ``VecEnv``.

What: trains a joystick-tracking policy on ``make_vec("SimGo1-v0", N)`` (``N`` = 256 worlds
stepped together through ``mujoco.batch.Batch``) with SB3, wrapped in ``VecMonitor`` (episode
returns and lengths to ``monitor.csv``). Every world is domain randomised (floor friction, link
masses, joint friction, command) from its own generator, so world ``i`` of a vec env seeded
``s`` equals ``gym.make("SimGo1-v0")`` reset with seed ``s + i``.

Why: a prior for the sim-to-online study is trained in simulation at scale, then fine-tuned on
the robot. ``--algo sac`` (the default) trains this package's SAC with the paper recipe's critic
(a BRO residual, layer-normalised critic; width set by ``--critic-width``), so the checkpoint it
writes (model and replay buffer, :func:`sim2online_envs.agents.save_checkpoint`) loads straight
into fine-tuning with ``paper_recipe("go1", offline_data=..., for_load=True)``. ``--algo ppo``
shows the same batched env under SB3's on-policy PPO, with ``VecNormalize`` observation
statistics as MuJoCo Playground's PPO uses them (SAC stays on raw observations, so that its
prior and replay buffer fit the real robot's env as they are).

The default budget is a smoke run (a few thousand steps, under a minute on a laptop CPU); raise
``--total-timesteps`` for real training. Per-term reward means come from the vec env's batched
``last_reward_terms`` (one (N,) array per term each step, no per-world info dicts needed).

Run::

    .venv/bin/python examples/batched_pretraining_go1.py --out runs/go1_batched
    .venv/bin/python examples/batched_pretraining_go1.py --algo ppo --total-timesteps 2000000

Outputs in ``--out``: ``monitor.csv`` (VecMonitor), the model (``prior/`` checkpoint for SAC;
``ppo_go1.zip`` and ``vecnormalize.pkl`` for PPO) and ``summary.json``.

Measured (2 shared CPUs, 2026-11-23): ``--algo ppo --total-timesteps 2000000`` took 663 s
(3,000 world-steps/s, PPO's updates included). The first 24 episodes returned 0.07 on average
(falls after 69 steps); the last 400 returned 30.2, 97 % of them the full 1000 steps. The
scripted stand controller scores 22 (19-27) on the same task, so the policy stands and tracks
part of the command. (With an entropy bonus of 0.01 and std 1, 360k steps learnt nothing.)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

import sim2online_envs
from sim2online_envs.agents import SAC, paper_recipe, save_checkpoint

logger = logging.getLogger("examples.batched_pretraining_go1")

ENV_ID = "SimGo1-v0"


class RewardTermsCallback(BaseCallback):
    """Accumulates each reward term over all worlds and steps, from the batched vec env.

    ``TaskVecEnv.last_reward_terms`` holds every weighted term of the last step as an (N,) array,
    so the per-term means cost one sum per term per step whatever N is. Also counts finished
    episodes and the worlds' successes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.term_sums: dict[str, float] = {}
        self.world_steps = 0
        self.episodes = 0

    def _on_step(self) -> bool:
        base = self.training_env.unwrapped  # the TaskVecEnv under VecMonitor (and VecNormalize)
        for name, values in base.last_reward_terms.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + float(np.sum(values))
        self.world_steps += base.num_envs
        self.episodes += int(np.count_nonzero(self.locals["dones"]))
        return True

    def term_means(self) -> dict[str, float]:
        """Mean of each weighted term per world-step."""
        steps = max(self.world_steps, 1)
        return {name: total / steps for name, total in sorted(self.term_sums.items())}


def make_batched_env(
    num_envs: int, seed: int, num_threads: int | None, out: Path, normalize: bool
) -> tuple[VecEnv, VecEnv]:
    """``num_envs`` Go1 worlds with VecMonitor (monitor.csv), optionally VecNormalize.

    Returns the wrapped env to train on and the batched env underneath.
    """
    venv = sim2online_envs.make_vec(
        ENV_ID,
        num_envs,
        seed=seed,
        num_threads=num_threads,
        full_infos=False,  # infos only where episodes end: what VecMonitor and SB3 read
    )
    env: VecEnv = VecMonitor(venv, filename=str(out / "monitor.csv"))
    if normalize:
        # rewards are about 0.02 a step (Playground's weights times control_dt): scale them for
        # the value function; VecMonitor, inside, still logs the env's own returns
        env = VecNormalize(env, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=0.97)
    return env, venv


def build_model(
    algo: str, env: VecEnv, args: argparse.Namespace, rollout_steps: int
) -> BaseAlgorithm:
    """SAC with the paper recipe's critic (a prior for fine-tuning), or PPO."""
    if algo == "sac":
        recipe = paper_recipe("go1")
        policy_kwargs = {**recipe["policy_kwargs"], "critic_width": args.critic_width}
        # Pretraining is plain off-policy SAC (one learning rate, no mixing, no warm start): the
        # stabilisers matter at the sim-to-real hand-off, not here. Each batched step adds
        # num_envs transitions and makes gradient_steps updates. Initial temperature 0.01: the
        # terms are weight x control_dt (about 0.01 per step), which SB3's 1.0 would swamp.
        return SAC(
            "MlpPolicy",
            env,
            learning_rate=3e-4,
            # Room for every transition of the run, no more: SB3 allocates (and saves) it whole.
            buffer_size=args.buffer_size or max(args.total_timesteps, env.num_envs),
            batch_size=recipe["batch_size"],
            gamma=recipe["gamma"],
            train_freq=1,
            gradient_steps=args.gradient_steps,
            learning_starts=min(args.learning_starts, args.total_timesteps // 2),
            ent_coef="auto_0.01",
            max_grad_norm=recipe["max_grad_norm"],
            policy_kwargs=policy_kwargs,
            seed=args.seed,
            verbose=0,
        )
    # PPO in the style of MuJoCo Playground's Go1 joystick: discount 0.97, 512-256-128 networks,
    # normalised observations. Unlike Playground's tanh-squashed policy, SB3's Gaussian is clipped
    # to the action bounds, so an entropy bonus only widens it into flailing (measured: with 0.01
    # and std 1 the robot fell within 0.8 s for 360k steps, every return 0): no bonus, std 0.37.
    batch = rollout_steps * env.num_envs
    return PPO(
        "MlpPolicy",
        env,
        n_steps=rollout_steps,
        batch_size=min(args.ppo_minibatch, batch),
        n_epochs=args.ppo_epochs,
        learning_rate=3e-4,
        gamma=0.97,
        gae_lambda=0.95,
        ent_coef=0.0,
        clip_range=0.2,
        policy_kwargs={
            "net_arch": {"pi": [512, 256, 128], "vf": [512, 256, 128]},
            "log_std_init": -1.0,
        },
        seed=args.seed,
        verbose=0,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/go1_batched"), help="output folder")
    parser.add_argument("--algo", choices=("sac", "ppo"), default="sac")
    parser.add_argument("--num-envs", type=int, default=256, help="worlds stepped together")
    parser.add_argument(
        "--total-timesteps",
        type=int,
        default=8192,
        help="world-steps in all (default: a smoke run of 32 batched steps of 256 worlds)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-threads", type=int, default=None, help="MuJoCo batch threads (default: all CPUs)"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch CPU threads (small nets: 1 is fastest)"
    )
    sac = parser.add_argument_group("SAC")
    sac.add_argument("--critic-width", type=int, default=128, help="BRO critic width (paper 512)")
    sac.add_argument("--gradient-steps", type=int, default=4, help="updates per batched step")
    sac.add_argument("--learning-starts", type=int, default=2048, help="random-action steps")
    sac.add_argument(
        "--buffer-size", type=int, default=None, help="default: --total-timesteps (all of it)"
    )
    ppo = parser.add_argument_group("PPO")
    ppo.add_argument("--rollout-steps", type=int, default=16, help="steps per world per rollout")
    ppo.add_argument("--ppo-minibatch", type=int, default=1024)
    ppo.add_argument("--ppo-epochs", type=int, default=5)
    args = parser.parse_args(argv)
    for name in ("num_envs", "total_timesteps", "critic_width", "rollout_steps", "ppo_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, save, and write ``summary.json``; returns the summary."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    th.set_num_threads(args.torch_threads)
    args.out.mkdir(parents=True, exist_ok=True)

    env, base = make_batched_env(
        args.num_envs, args.seed, args.num_threads, args.out, normalize=args.algo == "ppo"
    )
    logger.info(
        "%s x %d worlds: observation %s, action %s, %.0f Hz, %d steps per episode",
        ENV_ID,
        base.num_envs,
        base.observation_space.shape,
        base.action_space.shape,
        1.0 / base.control_dt,
        base.max_episode_steps,
    )
    model = build_model(args.algo, env, args, args.rollout_steps)
    terms = RewardTermsCallback()
    start = time.perf_counter()
    model.learn(args.total_timesteps, callback=terms)
    wall = time.perf_counter() - start

    if args.algo == "sac":
        saved = save_checkpoint(model, args.out / "prior")  # model + replay buffer, atomically
    else:
        saved = args.out / "ppo_go1.zip"
        model.save(saved)
        assert isinstance(env, VecNormalize)
        env.save(str(args.out / "vecnormalize.pkl"))  # observation statistics, needed to act
    episode_returns = [float(info["r"]) for info in model.ep_info_buffer]
    summary = {
        "env_id": ENV_ID,
        "algo": args.algo,
        "num_envs": base.num_envs,
        "timesteps": int(model.num_timesteps),
        "wall_s": wall,
        "world_steps_per_s": model.num_timesteps / wall,
        "finished_episodes": terms.episodes,
        "mean_episode_return": float(np.mean(episode_returns)) if episode_returns else None,
        "mean_reward_per_step": sum(terms.term_means().values()),
        "reward_terms_per_step": terms.term_means(),
        "model": str(saved),
    }
    env.close()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info(
        "%s: %d world-steps in %.1f s (%.0f per s incl. learning), %d episodes ended "
        "(falls or time limit), mean reward per step %.4f",
        args.algo.upper(),
        summary["timesteps"],
        wall,
        summary["world_steps_per_s"],
        terms.episodes,
        summary["mean_reward_per_step"],
    )
    for name, value in summary["reward_terms_per_step"].items():
        logger.info("  %-20s %+.5f per step", name, value)
    logger.info("saved %s and %s", saved, args.out / "summary.json")
    return summary


if __name__ == "__main__":
    main()
