r"""Record episodes to disk and reuse them as offline data D0: data retention across trials.

What, in three trials (each could be a separate process, day or robot session):

0. A scripted controller with exploration noise drives the robot; ``make_env(robot,
   recording=...)`` writes every finished episode atomically to ``trial-0/`` as an ``.npz`` file
   with its provenance (robot, backend, env config hash, policy version, seed, times).
1. A SAC learner with the paper recipe starts with D0 = the recorded trial-0 episodes
   (:func:`~sim2online_envs.wrappers.recording.fill_offline_buffer` into its
   :class:`~sim2online_envs.agents.MixingReplayBuffer`) and trains online for a few episodes,
   which are recorded in turn to ``trial-1/``, each stamped with the policy version that acted.
2. The next trial's D0 is everything recorded so far (trial 0 and trial 1), loaded from disk.

Why: on a real robot every transition is expensive. Recording each episode as it ends (a crash
loses at most the current one) and loading all earlier trials as D0 means no trial starts from
nothing, and the files say which policy and config produced which data.

Run::

    .venv/bin/python examples/record_and_reuse.py --out runs/record_and_reuse
    .venv/bin/python examples/record_and_reuse.py --robot go1 --episodes 4 --online-episodes 1
    .venv/bin/python examples/record_and_reuse.py --robot panda --episodes 2 --online-episodes 1 \
        --gradient-steps 10

The defaults are a smoke run (about 20 s on a laptop CPU): the learner is far too short to
improve on the scripted controller; it shows the data flow. ``summary.json`` in ``--out`` holds
the counts and returns. The Panda (64×64 images, a CNN learner) takes about 90 s with the
defaults on 2 CPU cores, the short Panda command above about 10 s.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

import sim2online_envs
from sim2online_envs.agents import SAC, MixingReplayBuffer, paper_recipe
from sim2online_envs.wrappers import (
    RecordEpisodes,
    RecordingConfig,
    fill_offline_buffer,
    load_episodes,
)

logger = logging.getLogger("examples.record_and_reuse")

#: The scripted controller of each robot (``make_controller(env) -> policy(obs)``). The Panda's
#: recordings keep the camera's channel-last (64, 64, 1) frames; ``fill_offline_buffer``
#: transposes them for the learner's buffer, channel-first like SB3's ``VecTransposeImage``.
CONTROLLERS = {
    "racecar": "sim2online_envs.controllers.racecar",
    "go1": "sim2online_envs.controllers.go1",
    "panda": "sim2online_envs.controllers.panda",
}


def find_recorder(env: gym.Env) -> RecordEpisodes:
    """The :class:`RecordEpisodes` layer of a wrapped env (``make_env`` puts it outermost)."""
    layer: Any = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, RecordEpisodes):
            return layer
        layer = layer.env
    raise ValueError(f"{env} has no RecordEpisodes wrapper: pass recording=... to make_env")


def record_scripted(
    robot: str, directory: Path, episodes: int, noise: float, seed: int
) -> list[Path]:
    """Trial 0: the scripted controller plus Gaussian action noise, every episode recorded."""
    env = sim2online_envs.make_env(
        robot, recording=RecordingConfig(directory, policy_version=f"scripted+noise{noise:g}")
    )
    controller: Callable[[Any], np.ndarray] = importlib.import_module(
        CONTROLLERS[robot]
    ).make_controller(env.unwrapped)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                action = controller(obs) + noise * rng.standard_normal(env.action_space.shape)
                obs, _, terminated, truncated, _ = env.step(np.clip(action, low, high))
                done = terminated or truncated
    finally:
        env.close()
    return list(find_recorder(env).written)


def describe(episodes: Sequence[Any], name: str) -> dict[str, Any]:
    """Log and return counts, mean return and success rate of recorded episodes."""
    returns = [float(np.sum(e.rewards)) for e in episodes]
    successes = [
        bool(e.infos["is_success"][-1]) for e in episodes if "is_success" in e.infos and len(e)
    ]
    versions = Counter(str(e.provenance.get("policy_version")) for e in episodes)
    stats = {
        "episodes": len(episodes),
        "transitions": int(sum(len(e) for e in episodes)),
        "mean_return": float(np.mean(returns)) if returns else None,
        "success_rate": float(np.mean(successes)) if successes else None,
        "policy_versions": dict(versions),
    }
    logger.info(
        "%s: %d episodes, %d transitions, mean return %s, success at the last step %s, "
        "policy versions %s",
        name,
        stats["episodes"],
        stats["transitions"],
        "n/a" if stats["mean_return"] is None else f"{stats['mean_return']:.2f}",
        "n/a" if stats["success_rate"] is None else f"{stats['success_rate']:.0%}",
        dict(versions),
    )
    return stats


class PolicyVersionCallback(BaseCallback):
    """Stamps each recorded episode with the learner's version (gradient steps so far).

    With ``train_freq=(1, "episode")`` the weights are fixed during a rollout, so the version set
    at the rollout's start names the policy that acted in the whole episode.
    """

    def __init__(self, recorder: RecordEpisodes, prefix: str):
        super().__init__()
        self.recorder = recorder
        self.prefix = prefix

    def _on_rollout_start(self) -> None:
        self.recorder.set_policy_version(f"{self.prefix}/updates-{self.model._n_updates}")

    def _on_step(self) -> bool:
        return True


def train_with_recordings(
    robot: str,
    d0: Path,
    directory: Path,
    online_episodes: int,
    gradient_steps: int,
    critic_width: int,
    seed: int,
) -> tuple[SAC, int]:
    """Trial 1: SAC (paper recipe) with D0 = trial 0's files; its own episodes recorded too."""
    env = sim2online_envs.make_env(robot, recording=directory)
    recipe = paper_recipe(robot, buffer_size=max(online_episodes, 1) * 1000)
    # CPU-sized (the paper: BRO width 512, K = 1250/2500 gradient steps per episode). No warm
    # start: there is no prior whose actions it would replay; D0 already holds good data.
    recipe["policy_kwargs"]["critic_width"] = critic_width
    recipe.update(gradient_steps=gradient_steps, warm_start_steps=0)
    policy = (
        "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    )
    model = SAC(policy, env, seed=seed, **recipe)
    assert isinstance(model.replay_buffer, MixingReplayBuffer)
    # D0 from disk; robot= refuses recordings of another robot.
    loaded = fill_offline_buffer(model.replay_buffer, d0, robot=robot)
    logger.info("trial 1: D0 = %d recorded transitions from %s", loaded, d0)
    stamp = PolicyVersionCallback(find_recorder(env), "sac-trial-1")
    for episode in range(online_episodes):
        # With train_freq=(1, "episode") learn(1) collects one whole episode (however short a
        # fall or a safety abort makes it), then makes its K gradient steps.
        model.learn(1, callback=stamp, reset_num_timesteps=episode == 0)
    env.close()
    return model, loaded


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/record_and_reuse"))
    parser.add_argument("--robot", choices=sorted(CONTROLLERS), default="racecar")
    parser.add_argument("--episodes", type=int, default=10, help="scripted episodes (trial 0)")
    parser.add_argument("--noise", type=float, default=0.2, help="action noise std (trial 0)")
    parser.add_argument("--online-episodes", type=int, default=2, help="learner episodes (trial 1)")
    parser.add_argument(
        "--gradient-steps", type=int, default=100, help="K per episode (paper: 1250 or 2500)"
    )
    parser.add_argument("--critic-width", type=int, default=128, help="BRO width (paper: 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)
    for name in ("episodes", "online_episodes", "gradient_steps", "critic_width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.noise < 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the three trials and write ``summary.json``; returns the summary."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    th.set_num_threads(args.torch_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    trial0, trial1 = args.out / "trial-0", args.out / "trial-1"
    for folder in (trial0, trial1):
        if folder.exists() and any(folder.glob("*.npz")):
            raise FileExistsError(
                f"{folder} already holds recordings; choose another --out (recordings are "
                "never overwritten or mixed between runs)"
            )
    start = time.perf_counter()

    written = record_scripted(args.robot, trial0, args.episodes, args.noise, args.seed)
    logger.info("trial 0: %d episodes recorded to %s", len(written), trial0)
    scripted = describe(load_episodes(trial0, robot=args.robot), "trial 0 (scripted)")

    model, d0_trial1 = train_with_recordings(
        args.robot,
        trial0,
        trial1,
        args.online_episodes,
        args.gradient_steps,
        args.critic_width,
        args.seed,
    )
    online = describe(load_episodes(trial1, robot=args.robot), "trial 1 (SAC, recorded online)")

    # Trial 2 starts where trial 1 left off: every recording so far becomes its D0. Paths from
    # both folders, in recording order; a fresh buffer stands for the next process's learner.
    paths = sorted(trial0.glob("*.npz")) + sorted(trial1.glob("*.npz"))
    next_d0 = MixingReplayBuffer(
        1000, model.observation_space, model.action_space, device="cpu", online_fraction=0.5
    )
    d0_trial2 = fill_offline_buffer(next_d0, paths, robot=args.robot)
    logger.info(
        "trial 2: D0 = %d transitions (%d files: trial 0 and trial 1)", d0_trial2, len(paths)
    )
    summary = {
        "robot": args.robot,
        "trial_0": scripted,
        "trial_1": {**online, "d0_transitions": d0_trial1, "gradient_steps": model._n_updates},
        "trial_2": {"d0_transitions": d0_trial2, "files": len(paths)},
        "wall_s": time.perf_counter() - start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("summary written to %s (%.1f s)", args.out / "summary.json", summary["wall_s"])
    return summary


if __name__ == "__main__":
    main()
