"""``sim2online learner --listen ADDRESS`` (learner server) and ``sim2online actor --learner
ADDRESS`` (robot PC or sim worker): the learner and the actor on machines of their own.

The server runs a Ray instance held to loopback and serves Ray Client on the one address the
user gives; the actor joins it as a Ray Client and fine-tunes through it (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import signal
import threading
import time
from typing import Any

logger = logging.getLogger("sim2online.distributed")


def _setting(text: str) -> tuple[str, Any]:
    from sim2online_envs.cli import _setting as parse

    return parse(text)


def _algorithm(name: str) -> type:
    from sim2online_envs import agents

    return getattr(agents, name)


def serve_learner(args: argparse.Namespace) -> int:
    """Start (or resume) the learner and serve it on ``--listen`` until stopped."""
    import ray
    from ray.util.client.server.server import serve

    from sim2online_envs.agents.checkpoint import read_manifest, save_checkpoint
    from sim2online_envs.agents.distributed import (
        LEARNER_NAME,
        parse_address,
        spawn_learner,
        start_engine,
    )

    host, port = parse_address(args.listen)
    start_engine()
    directory = pathlib.Path(args.checkpoint_dir)
    cls = _algorithm(args.algorithm)
    try:
        read_manifest(directory)
        model = None
        logger.info("resuming the learner from %s", directory)
    except FileNotFoundError:
        if args.model is None:
            raise SystemExit("a new learner needs --model (the prior's model file)") from None
        model = cls.load(args.model, **dict(args.set))
        save_checkpoint(model, directory)
    learner = spawn_learner(
        model if model is not None else cls,
        directory,
        name=LEARNER_NAME,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
    )
    ray.get(learner.version.remote(), timeout=300)
    server = serve(host, port)
    logger.info("learner serving Ray Client on %s:%d (checkpoints in %s)", host, port, directory)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop.wait(timeout=args.report_every):
            stats = ray.get(learner.stats.remote(), timeout=60)
            logger.info("learner: %s", stats)
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        ray.get(learner.drain.remote(600), timeout=610)
        server.stop(1)
        ray.kill(learner, no_restart=True)
        ray.shutdown()
    return 0


def run_actor(args: argparse.Namespace) -> int:
    """Act on ``env_id`` with the prior in ``--model`` and fine-tune through the learner."""
    import gymnasium as gym

    import sim2online_envs  # noqa: F401  (registers the ids)
    from sim2online_envs.agents.distributed import attach_learner, last_process_learner

    env = gym.make(args.env_id, **dict(args.env))
    model = _algorithm(args.algorithm).load(args.model, env=env, seed=args.seed)
    attach_learner(
        model,
        address=args.learner,
        actor_id=args.actor_id,
        spool_dir=str(args.spool),
    )
    from sim2online_envs.realtime import realtime_loop

    with realtime_loop(args.realtime_priority):
        model.learn(args.steps)
    process = last_process_learner(model)
    logger.info(
        "actor %s: %d episodes sent, weights versions %s, spool %s",
        args.actor_id,
        process.episodes_sent,
        process.versions,
        args.spool,
    )
    return 0


def add_subcommands(sub: Any) -> None:
    """Register ``learner`` and ``actor`` on the CLI's subparsers."""
    server = sub.add_parser("learner", help="serve a learner (GPU server) to actors")
    server.add_argument(
        "--listen", required=True, help="HOST[:PORT] to serve on (default port 10001)"
    )
    server.add_argument("--checkpoint-dir", type=pathlib.Path, default=pathlib.Path("learner"))
    server.add_argument("--model", type=pathlib.Path, default=None, help="prior model file")
    server.add_argument("--algorithm", default="SAC", choices=["SAC", "TD3", "TQC", "CrossQ"])
    server.add_argument("--checkpoint-every", type=int, default=1, help="episodes")
    server.add_argument("--threads", type=int, default=1, help="torch threads of the learner")
    server.add_argument("--duration", type=float, default=0.0, help="seconds (0: until stopped)")
    server.add_argument("--report-every", type=float, default=10.0, help="seconds")
    server.add_argument("--set", action="append", default=[], type=_setting, metavar="KEY=VALUE")
    server.set_defaults(job=serve_learner)

    actor = sub.add_parser("actor", help="act on a robot or sim, learn on a learner server")
    actor.add_argument("env_id", help="RealRaceCar-v0, SimRaceCar-v0, ...")
    actor.add_argument("--learner", required=True, help="HOST[:PORT] of `sim2online learner`")
    actor.add_argument("--model", type=pathlib.Path, required=True, help="prior model file")
    actor.add_argument("--algorithm", default="SAC", choices=["SAC", "TD3", "TQC", "CrossQ"])
    actor.add_argument("--actor-id", default="actor-0")
    actor.add_argument("--spool", type=pathlib.Path, default=pathlib.Path("spool"))
    actor.add_argument("--steps", type=int, default=10_000)
    actor.add_argument("--seed", type=int, default=None)
    actor.add_argument(
        "--env",
        action="append",
        default=[],
        type=_setting,
        metavar="KEY=VALUE",
        help="env keyword (hardware=twin); repeatable",
    )
    actor.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the control loop's thread at SCHED_FIFO priority N (needs CAP_SYS_NICE)",
    )
    actor.set_defaults(job=run_actor)


__all__ = ["add_subcommands", "run_actor", "serve_learner"]
