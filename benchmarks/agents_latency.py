"""Control-loop latency of episodic SAC updates, synchronous vs. in a background learner.

The car env is wrapped as a real-time robot (each step returns at the next 60 Hz tick, like a
driver that blocks until the control period is over). We measure the interval between
consecutive commands, i.e. what the robot sees: inside an episode, and across the episode
boundary (reset plus, in synchronous mode, the K gradient steps). Run::

    .venv/bin/python benchmarks/agents_latency.py                    # CPU-sized networks
    .venv/bin/python benchmarks/agents_latency.py --paper            # BRO 512, K = 2500

and read the table: with ``async_updates=True`` the boundary costs a weight copy instead of K
gradient steps, at the price of some jitter inside episodes while the learner thread runs; with
``async_updates="process"`` (``--modes process``, needs Ray) the learner runs in a process of its
own (agents.distributed) and the loop shares no interpreter with it. For that mode the table
also gives the gradient steps per episode the learner had done by the last episode's end and
after ``learn`` returned (it waits for the learner), and the weight-publish latency.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

import sim2online_envs  # noqa: F401  (registers the env ids)
from sim2online_envs.agents import SAC, paper_recipe
from sim2online_envs.realtime import realtime_loop

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
    # "idle": the same loop with no gradient step at all, the floor this machine's load sets
    modes = {"idle": False, "sync": False, "async": True, "process": "process"}
    async_updates: bool | str = modes[mode]
    recipe.update(warm_start_steps=0, async_updates=async_updates, seed=0)
    if not args.paper:
        recipe.update(gradient_steps=args.gradient_steps, batch_size=args.batch_size)
        recipe["policy_kwargs"].update(critic_width=args.critic_width, net_arch=[256, 256])
    if mode == "idle":
        recipe.update(gradient_steps=0)
    model = SAC("MlpPolicy", env, **recipe)
    episodes = args.episodes
    start = time.perf_counter()
    # The loop's thread: a learner thread or process started inside runs normal, sync updates not.
    with realtime_loop(args.realtime_priority):
        model.learn(250 * episodes)
    wall = time.perf_counter() - start
    during, publish_ms = float("nan"), float("nan")
    if mode == "process":
        from sim2online_envs.agents.distributed import last_process_learner

        process = last_process_learner(model)
        during = process.boundary_updates[-1] / max(len(process.boundary_updates), 1)
        if process.link.publish_latency_s:
            publish_ms = 1e3 * float(np.median(process.link.publish_latency_s))
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
        "episodes": int(np.sum(env.after_reset)),
        "during": during,
        "publish_ms": publish_ms,
        "late_5ms": int(np.sum(intervals - dt_ms > 5.0)),
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
    parser.add_argument("--modes", default="sync,async", help="idle,sync,async,process")
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="run the control loop's thread at SCHED_FIFO with this priority (0: normal)",
    )
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    rows = [run(mode, args) for mode in args.modes.split(",")]
    load = os.getloadavg()
    print(
        f"SimRaceCar-v0 at 60 Hz (16.7 ms), {args.episodes} episodes of 250 steps, "
        f"torch threads {args.threads}, {sys.platform}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end; control loop "
        + (
            f"SCHED_FIFO priority {args.realtime_priority}"
            if args.realtime_priority
            else "at normal priority"
        )
    )
    print()
    print(
        "| updates | K | critic | median step (ms) | p99 in episode | worst in episode "
        "| worst at episode boundary | late steps (>25 ms) | steps >5 ms late (all) "
        "| gradient steps | steps/episode at last boundary | publish latency (ms) | wall (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['K']} | {r['critic']} | {r['median']:.1f} | {r['p99']:.1f} "
            f"| {r['max_inside']:.1f} | {r['max_boundary']:.1f} | {r['late']}/{r['steps']} "
            f"| {r['late_5ms']} | {r['updates']} ({r['updates'] / max(r['episodes'], 1):.0f}/ep) "
            f"| {r['during']:.0f} | {r['publish_ms']:.1f} | {r['wall']:.0f} |"
        )


if __name__ == "__main__":
    main()
