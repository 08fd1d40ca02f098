"""Throughput of the process-separated learner's link (agents.distributed, Ray on loopback).

Episodes/s: recorded 250-step race-car episodes submitted to a learner process that takes them
into its buffer without gradient steps (K = 0), so the figure is the engine and buffer path
alone. Weight fetch: round trip of the published weights of the paper's policy (BRO 512x2
critic, 256x256 actor). Run::

    .venv/bin/python benchmarks/distributed_throughput.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import gymnasium as gym
import numpy as np

import sim2online_envs  # noqa: F401  (registers the env ids)
from sim2online_envs.agents import SAC, paper_recipe
from sim2online_envs.agents.distributed import (
    EpisodeRecorder,
    spawn_learner,
    start_engine,
)


def episode(env: gym.Env, seq: int) -> dict[str, np.ndarray]:
    recorder = EpisodeRecorder()
    obs, _ = env.reset(seed=seq)
    for _ in range(250):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        recorder.add(
            obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]),
            [{"TimeLimit.truncated": truncated}],
        )  # fmt: skip
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    out = recorder.pop_episode("bench", seq, 1, 1.0)
    assert out is not None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--fetches", type=int, default=50)
    args = parser.parse_args(argv)
    import ray

    start_engine()
    env = gym.make("SimRaceCar-v0")
    recipe = paper_recipe("racecar", buffer_size=args.episodes * 250 + 1000)
    recipe.update(gradient_steps=0, warm_start_steps=0)
    model = SAC("MlpPolicy", env, **recipe)
    episodes = [episode(env, seq) for seq in range(args.episodes)]
    with tempfile.TemporaryDirectory() as tmp:
        learner = spawn_learner(model, f"{tmp}/ckpt", checkpoint_every=10**9)
        ray.get(learner.version.remote(), timeout=300)
        start = time.perf_counter()
        ray.get([learner.submit.remote(item) for item in episodes], timeout=600)
        ray.get(learner.drain.remote(600), timeout=610)  # includes one checkpoint at the end
        elapsed = time.perf_counter() - start
        stats = ray.get(learner.stats.remote(), timeout=60)
        times, size = [], 0
        for _ in range(args.fetches):
            t = time.perf_counter()
            weights = ray.get(learner.weights.remote(-1), timeout=60)
            times.append(time.perf_counter() - t)
            size = sum(value.nbytes for value in weights.values())
        ray.kill(learner, no_restart=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f} (1 min) at the end")
    print(
        f"episodes: {args.episodes} x 250 transitions in {elapsed:.1f} s "
        f"(incl. one checkpoint): {args.episodes / elapsed:.1f} episodes/s, "
        f"{stats['buffer_size']} transitions in the buffer"
    )
    print(
        f"weights: {size / 1e6:.2f} MB, fetch round trip median "
        f"{1e3 * np.median(times):.1f} ms, p90 {1e3 * np.percentile(times, 90):.1f} ms"
    )


if __name__ == "__main__":
    main()
