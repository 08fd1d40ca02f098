"""Control-loop latency of episodic SAC updates, synchronous vs. in a background learner.

The car env is wrapped as a real-time robot (each step returns at the next 60 Hz tick, like a
driver that blocks until the control period is over). We measure the interval between
consecutive commands, i.e. what the robot sees: inside an episode, and across the episode
boundary (reset plus, in synchronous mode, the K gradient steps). Run::

    .venv/bin/python benchmarks/agents_latency.py                    # CPU-sized networks
    .venv/bin/python benchmarks/agents_latency.py --paper            # BRO 512, K = 2500

and read the table: with ``async_updates=True`` the boundary costs a weight copy instead of K
gradient steps, at the price of some jitter inside episodes while the learner thread runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from sim2online_envs.agents import SAC, paper_recipe

import sim2online_envs  # noqa: F401  (registers the env ids)

logger = logging.getLogger("agents_latency")


class RealTimeRobot(gym.Wrapper):
    """Steps return at the next control tick (sleeping as a driver would); records when each
    command arrived and which commands follow a reset."""

    def __init__(self, env: gym.Env, control_dt: float):
        super().__init__(env)
        self.control_dt = control_dt
        self.command_times: list[float] = []
        self.after_reset: list[bool] = []
        self._next_tick = 0.0
        self._reset_since_last = True

    def reset(self, **kwargs: Any):
        out = self.env.reset(**kwargs)
        self._reset_since_last = True
        self._next_tick = time.perf_counter() + self.control_dt
        return out

    def step(self, action: np.ndarray):
        now = time.perf_counter()
        self.command_times.append(now)
        self.after_reset.append(self._reset_since_last)
        self._reset_since_last = False
        out = self.env.step(action)
        delay = self._next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
            self._next_tick += self.control_dt
        else:  # late: the next period starts now
            self._next_tick = time.perf_counter() + self.control_dt
        return out


def run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    env = RealTimeRobot(gym.make("SimRaceCar-v0"), 1 / 60)
    recipe = paper_recipe("racecar", buffer_size=100_000)
    recipe.update(warm_start_steps=0, async_updates=(mode == "async"), seed=0)
    if not args.paper:
        recipe.update(gradient_steps=args.gradient_steps, batch_size=args.batch_size)
        recipe["policy_kwargs"].update(critic_width=args.critic_width, net_arch=[256, 256])
    model = SAC("MlpPolicy", env, **recipe)
    episodes = args.episodes
    start = time.perf_counter()
    model.learn(250 * episodes)
    wall = time.perf_counter() - start
    times = np.array(env.command_times)
    intervals = np.diff(times) * 1e3
    boundary = np.array(env.after_reset[1:])
    inside = intervals[~boundary]
    at_boundary = intervals[boundary]
    dt_ms = 1e3 / 60
    return {
        "mode": mode,
        "K": recipe["gradient_steps"],
        "critic": f"BRO {recipe['policy_kwargs']['critic_width']}x2",
        "median": float(np.median(inside)),
        "p99": float(np.percentile(inside, 99)),
        "max_inside": float(inside.max()),
        "max_boundary": float(at_boundary.max()) if at_boundary.size else float("nan"),
        "late": int(np.sum(inside > 1.5 * dt_ms)),
        "steps": int(inside.size),
        "updates": int(model._n_updates),
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--gradient-steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--critic-width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--paper", action="store_true", help="the recipe's K and critic size")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    rows = [run(mode, args) for mode in ("sync", "async")]
    print(
        f"SimRaceCar-v0 at 60 Hz (16.7 ms), {args.episodes} episodes of 250 steps, "
        f"torch threads {args.threads}, {sys.platform}"
    )
    print()
    print(
        "| updates | K | critic | median step (ms) | p99 in episode | worst in episode "
        "| worst at episode boundary | late steps (>25 ms) | gradient steps | wall (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['K']} | {r['critic']} | {r['median']:.1f} | {r['p99']:.1f} "
            f"| {r['max_inside']:.1f} | {r['max_boundary']:.1f} | {r['late']}/{r['steps']} "
            f"| {r['updates']} | {r['wall']:.0f} |"
        )


if __name__ == "__main__":
    main()
