"""Command line: ``sim2online demo`` runs every sim robot with its scripted controller;
``sim2online check <robot>`` runs a real robot's (or its twin's) pre-flight checks;
``sim2online calibrate panda-camera [--twin]`` calibrates the Panda's camera;
``sim2online compare panda-camera --real frame.png`` puts a real camera frame next to the
simulator's from the same arm pose (:mod:`sim2online_envs.compare`).

The demo is the package's main job on its embedded default (no hardware attached): for each
robot it runs one seeded episode with the privileged scripted controller and writes a PNG strip
of frames plus a JSON summary (return, success, steps, reward terms) to the output folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs import robots

logger = logging.getLogger("sim2online")

#: robot -> (env id, module of its scripted controller), from the robot modules
DEMO_ROBOTS = {
    name: (module.SIM_ID, module.CONTROLLER_MODULE) for name, module in robots.ROBOT_MODULES.items()
}


def _controller(module_name: str, env: gym.Env) -> Callable[[Any], np.ndarray]:
    """The robot's scripted controller: ``make_controller(env)`` -> ``policy(obs)``."""
    module = importlib.import_module(module_name)
    return module.make_controller(env.unwrapped)


def frame_strip(frames: Sequence[np.ndarray], count: int = 8) -> np.ndarray:
    """``count`` evenly spaced frames side by side, separated by a thin white line."""
    if not frames:
        raise ValueError("no frames to put in a strip")
    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    height = frames[0].shape[0]
    separator = np.full((height, 2, 3), 255, dtype=np.uint8)
    tiles: list[np.ndarray] = []
    for index in picks:
        tiles.extend([frames[index], separator])
    return np.concatenate(tiles[:-1], axis=1)


def run_demo(
    robot: str, out_dir: Path, seed: int = 0, max_steps: int | None = None
) -> dict[str, Any]:
    """Run one scripted episode of ``robot``; write ``<robot>.png`` and return a summary."""
    import cv2

    env_id, controller_module = DEMO_ROBOTS[robot]
    env = gym.make(env_id, render_mode="rgb_array")
    try:
        policy = _controller(controller_module, env)
        obs, info = env.reset(seed=seed)
        frames = [env.render()]
        episode_return, steps, terms_total = 0.0, 0, {}
        limit = max_steps or env.unwrapped.max_episode_steps
        render_every = max(1, limit // 64)
        started = time.perf_counter()
        terminated = truncated = False
        while not (terminated or truncated) and steps < limit:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            episode_return += float(reward)
            steps += 1
            for name, value in info["reward_terms"].items():
                terms_total[name] = terms_total.get(name, 0.0) + value
            if steps % render_every == 0 or terminated or truncated:
                frames.append(env.render())
        elapsed = time.perf_counter() - started
        strip_path = out_dir / f"{robot}.png"
        cv2.imwrite(str(strip_path), cv2.cvtColor(frame_strip(frames), cv2.COLOR_RGB2BGR))
        return {
            "robot": robot,
            "env_id": env_id,
            "seed": seed,
            "steps": steps,
            "return": episode_return,
            "is_success": bool(info.get("is_success", False)),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "reward_terms": terms_total,
            "steps_per_second": steps / elapsed if elapsed > 0 else float("inf"),
            "strip": str(strip_path),
        }
    finally:
        env.close()


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as a keyword argument (numbers and booleans parsed, the rest strings)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set needs KEY=VALUE, got {text!r}")
    for parse in (int, float):
        try:
            return key, parse(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    return key, value


def run_check(robot: str, hardware: str, settings: Sequence[str]) -> int:
    """Run ``robot``'s pre-flight checks and report each; exit status 0 only if all pass."""
    name = robots.resolve(robot)
    module = importlib.import_module(f"sim2online_envs.hardware.{name}.check")
    results = module.run_checks(hardware=hardware, **dict(_setting(item) for item in settings))
    width = max((len(check_name) for check_name, _, _ in results), default=0)
    for check_name, ok, detail in results:
        logger.info("%s  %-*s  %s", "ok  " if ok else "FAIL", width, check_name, detail)
    failed = [check_name for check_name, ok, _ in results if not ok]
    if failed:
        logger.error("%s: %d of %d checks failed: %s", name, len(failed), len(results), failed)
        return 1
    logger.info("%s: all %d checks passed", name, len(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sim2online`` and ``python -m sim2online_envs``."""
    parser = argparse.ArgumentParser(prog="sim2online", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run each sim robot with its scripted controller")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    demo.add_argument("--robots", nargs="+", choices=sorted(DEMO_ROBOTS), default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max-steps", type=int, default=None, help="cap steps per episode")
    check = sub.add_parser("check", help="pre-flight checks of a real robot (or its twin)")
    check.add_argument("robot", help="panda, go1 or racecar")
    check.add_argument("--twin", action="store_true", help="check the twin on loopback instead")
    check.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a connection setting (port=/dev/ttyACM0, robot_ip=...); repeatable",
    )
    sysid = sub.add_parser("sysid", help="fit a robot's sim parameters to recorded episodes")
    sysid.add_argument("robot", choices=["racecar"], help="the robot (the race car)")
    sysid.add_argument("episodes", type=Path, help="folder of recorded episodes (.npz)")
    sysid.add_argument("--out", type=Path, default=Path("racecar_sysid.toml"), help="preset file")
    sysid.add_argument("--base", default=robots.racecar.DEFAULT_PRESET, help="preset to fit from")
    sysid.add_argument("--mass", type=float, default=None, help="weighed mass, kg (not fitted)")
    sysid.add_argument(
        "--fit",
        action="append",
        default=[],
        metavar="FIELD",
        help="also fit this field of sysid.EXTRA_CANDIDATES (repeatable; the rolling resistance "
        "and the two actuator lags: a real car or the twin needs all three)",
    )
    sysid.add_argument(
        "--loss",
        default="linear",
        choices=["linear", "soft_l1", "huber"],
        help="robust loss for recordings with glitches (late or dropped mocap frames)",
    )
    calibrate = sub.add_parser("calibrate", help="calibrate a real robot's camera (or its twin's)")
    calibrate.add_argument("target", choices=["panda-camera"], help="what to calibrate")
    calibrate.add_argument("--twin", action="store_true", help="calibrate the twin's camera")
    calibrate.add_argument("--poses", type=int, default=12, help="arm poses to visit")
    calibrate.add_argument("--method", choices=["pnp", "handeye"], default="pnp")
    calibrate.add_argument("--out", type=Path, default=None, help="calibration file to write")
    calibrate.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE"
    )
    compare = sub.add_parser("compare", help="a real camera frame next to the sim's, same pose")
    compare.add_argument("target", choices=["panda-camera"], help="what to compare")
    compare.add_argument("--real", type=Path, default=None, help="real frame (image file)")
    compare.add_argument("--episode", type=Path, default=None, help="recorded episode (.npz)")
    compare.add_argument("--step", type=int, default=0, help="the episode's observation index")
    compare.add_argument("--qpos", type=float, nargs=7, default=None, help="joint angles, rad")
    compare.add_argument("--opening", type=float, default=0.08, help="gripper opening, m")
    compare.add_argument("--object-pos", type=float, nargs=3, default=None, help="cube, m")
    compare.add_argument("--object-yaw", type=float, default=0.0, help="cube yaw, rad")
    compare.add_argument("--calibration", type=Path, default=None, help="camera calibration")
    compare.add_argument("--out", type=Path, default=Path("panda_camera_compare.png"))
    from sim2online_envs.train import add_subcommands

    add_subcommands(sub)  # pretrain, finetune, evaluate
    from sim2online_envs.agents.distributed_cli import add_subcommands as add_distributed

    add_distributed(sub)  # learner, actor (agents.distributed, docs/distributed.md)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "job", None) is not None:
        return args.job(args)
    if args.command == "check":
        return run_check(args.robot, "twin" if args.twin else "real", args.settings)
    if args.command == "calibrate":
        from sim2online_envs.hardware.panda.calibration import run_calibration

        _, path, report = run_calibration(
            hardware="twin" if args.twin else "real",
            poses=args.poses,
            method=args.method,
            out=args.out,
            **dict(_setting(item) for item in args.settings),
        )
        logger.info("panda-camera calibration written to %s: %s", path, report)
        return 0
    if args.command == "compare":
        from sim2online_envs.compare import compare_panda_camera

        result = compare_panda_camera(
            args.out,
            real=args.real,
            episode=args.episode,
            step=args.step,
            qpos=args.qpos,
            opening=args.opening,
            object_pos=args.object_pos,
            object_yaw=args.object_yaw,
            calibration=args.calibration,
        )
        logger.info(
            "panda-camera: mean |real - sim| %.1f gray levels (sim %.1f, real %.1f) -> %s",
            result["mean_abs_difference"],
            result["sim_mean"],
            result["real_mean"],
            result["out"],
        )
        return 0
    if args.command == "sysid":
        from sim2online_envs.sysid import sysid_racecar

        result = sysid_racecar(
            args.episodes,
            args.out,
            base=args.base,
            mass=args.mass,
            extra=tuple(dict.fromkeys(args.fit)),
            loss=args.loss,
        )
        logger.info(
            "sysid: RMS position error %.4f m before, %.4f m after; preset written to %s",
            result.error_before,
            result.error_after,
            args.out,
        )
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for robot in args.robots or list(DEMO_ROBOTS):
        summary = run_demo(robot, args.out, seed=args.seed, max_steps=args.max_steps)
        logger.info(
            "%-8s %4d steps  return %8.2f  success %-5s  %6.0f steps/s  -> %s",
            robot,
            summary["steps"],
            summary["return"],
            summary["is_success"],
            summary["steps_per_second"],
            summary["strip"],
        )
        summaries.append(summary)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=2))
    logger.info("summary written to %s", args.out / "summary.json")
    return 0
