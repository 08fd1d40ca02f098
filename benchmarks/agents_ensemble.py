"""Gradient steps per second of a REDQ-style critic ensemble against SB3's two critics.

SAC's ``train`` on a filled replay buffer (random Pendulum-sized transitions, so only the
learner is timed): SB3's default critic pair, the same pair with LayerNorm, and N LayerNorm
critics with the target's minimum over a random subset of M (``target_subset_size``). Run from
the repository root::

    .venv/bin/python -m benchmarks.agents_ensemble                 # N = 10, M = 2, 256x256
    .venv/bin/python -m benchmarks.agents_ensemble --critics 5 --width 128 --seconds 2

and read the table: gradient steps per second and the ratio to the two-critic row (each row's
blocks taken in turn with the others', so all saw the same load).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.logger import configure

from benchmarks._timing import Row, markdown_table, measure_interleaved
from sim2online_envs.agents import SAC

logger = logging.getLogger("agents_ensemble")


def _learner(policy_kwargs: dict[str, Any], batch_size: int, **kwargs: Any) -> SAC:
    env = gym.make("Pendulum-v1")
    model = SAC(
        "MlpPolicy",
        env,
        policy_kwargs=policy_kwargs,
        batch_size=batch_size,
        buffer_size=10_000,
        seed=0,
        device="cpu",
        **kwargs,
    )
    model.set_logger(configure(folder=None, format_strings=[]))
    rng = np.random.default_rng(0)
    n = 5000
    obs = rng.normal(size=(n, 1, 3)).astype(np.float32)
    actions = rng.uniform(-2, 2, size=(n, 1, 1)).astype(np.float32)
    for i in range(n):
        model.replay_buffer.add(
            obs[i], obs[(i + 1) % n], actions[i], np.array([rng.normal()]), np.array([0.0]), [{}]
        )
    return model


def _step(model: SAC, gradient_steps: int) -> Callable[[], None]:
    return lambda: model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--critics", type=int, default=10, help="N of the ensemble")
    parser.add_argument("--subset", type=int, default=2, help="M: critics in the target's min")
    parser.add_argument("--width", type=int, default=256, help="hidden width (two layers)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    arch = [args.width, args.width]
    learners = {
        "SB3 critics (2)": _learner({"net_arch": arch}, args.batch_size),
        "LayerNorm critics (2)": _learner(
            {"net_arch": arch, "critic_layer_norm": True}, args.batch_size
        ),
        f"REDQ ensemble (N={args.critics}, M={args.subset})": _learner(
            {"net_arch": arch, "n_critics": args.critics, "critic_layer_norm": True},
            args.batch_size,
            target_subset_size=args.subset,
        ),
    }
    gradient_steps = 10
    results = measure_interleaved(
        {name: _step(model, gradient_steps) for name, model in learners.items()},
        gradient_steps,
        seconds=args.seconds,
        repeats=args.repeats,
    )
    base = results["SB3 critics (2)"].rate
    section = (
        f"SAC train, {args.width}x{args.width}, batch {args.batch_size}, "
        f"{args.threads} torch thread(s)"
    )
    rows = [
        Row(
            section=section,
            name=name,
            worlds="-",
            rate=measurement.rate,
            unit="gradient steps/s",
            ratio=f"{measurement.rate / base:.2f}x",
            cpu_us=measurement.cpu_us,
        )
        for name, measurement in results.items()
    ]
    sys.stdout.write(markdown_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
