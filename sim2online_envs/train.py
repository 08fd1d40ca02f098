"""``sim2online pretrain``, ``finetune`` and ``evaluate``: the package's training jobs.

Any registered env id (``SimRaceCar-v0`` with other physics or a preset through ``--env
KEY=VALUE``, or ``RealRaceCar-v0`` with ``--env hardware=twin``). Every run folder holds
``tb/`` (TensorBoard), ``checkpoint/`` (:func:`~sim2online_envs.agents.save_checkpoint`, every
episode when fine-tuning), ``q_error.csv`` and ``progress.json``, and the PNG plots
``learning_curve.png`` and ``q_error.png``; ``episodes.csv`` says how each episode ended
(``time_limit``, a truncation reason such as ``safety_arena`` or a device fault, or
``terminated``), and each end is logged. ``finetune --resume`` continues from the run's own
checkpoint (whole learner state and replay buffer) at the episode it reached.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import pathlib
from typing import Any

import gymnasium as gym
import numpy as np

logger = logging.getLogger("sim2online.train")

#: ``finetune --prior shipped``: the package's own prior of the env's robot.
SHIPPED = "shipped"


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with numbers, booleans and ``None`` parsed (the rest strings)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for parse in (int, float):
        try:
            return key, parse(value)
        except ValueError:
            pass
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if lowered == "none":
        return key, None
    return key, value


def make_env(env_id: str, settings: list[tuple[str, Any]]) -> gym.Env:
    import sim2online_envs  # noqa: F401  (registers the ids)

    return gym.make(env_id, **dict(settings))


def robot_of(env_id: str) -> str:
    """The recipe's robot for an env id (``SimRaceCar-v0`` -> ``racecar``)."""
    name = env_id.lower()
    for robot in ("panda", "go1", "racecar"):
        if robot in name:
            return robot
    raise ValueError(f"no recipe robot for env id {env_id!r} (panda, go1 or racecar)")


# -- episode log ---------------------------------------------------------------------------------

EPISODE_FIELDS = ("episode", "num_timesteps", "length", "episode_return", "end", "is_success")


def episode_end(info: dict[str, Any]) -> str:
    """How an episode ended: its ``truncation_reason`` (``time_limit`` included), else
    ``terminated``."""
    reason = info.get("truncation_reason")
    if reason:
        return str(reason)
    return "time_limit" if info.get("TimeLimit.truncated", False) else "terminated"


def episode_log_callback(path: pathlib.Path) -> Any:
    """An SB3 callback appending one row per finished episode to ``path`` and logging it: a cut
    episode (a fault, a safety limit) is seen in the run folder, not only in the return."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLog(BaseCallback):
        def _init_callback(self) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = 0
            if path.is_file():
                with path.open() as file:
                    rows = sum(1 for _ in csv.DictReader(file))
            self._done = rows
            self._lengths = np.zeros(self.training_env.num_envs, dtype=np.int64)
            self._returns = np.zeros(self.training_env.num_envs, dtype=np.float64)

        def _on_step(self) -> bool:
            self._lengths += 1
            self._returns += np.asarray(self.locals["rewards"], dtype=np.float64)
            for i, done in enumerate(self.locals["dones"]):
                if done:
                    self._write(self.locals["infos"][i], i)
            return True

        def _write(self, info: dict[str, Any], i: int) -> None:
            row = {
                "episode": self._done,
                "num_timesteps": self.num_timesteps,
                "length": int(self._lengths[i]),
                "episode_return": float(self._returns[i]),
                "end": episode_end(info),
                "is_success": bool(info.get("is_success", False)),
            }
            new = not path.is_file() or path.stat().st_size == 0
            with path.open("a", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=EPISODE_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            logger.info(
                "episode %d: %d steps, return %.2f, ended: %s",
                row["episode"],
                row["length"],
                row["episode_return"],
                row["end"],
            )
            self._done += 1
            self._lengths[i] = 0
            self._returns[i] = 0.0

    return EpisodeLog()


# -- plots ---------------------------------------------------------------------------------------


def read_q_error(path: pathlib.Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as file:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(file)
        ]


def write_plots(run: pathlib.Path) -> list[pathlib.Path]:
    """``learning_curve.png`` (episode return) and ``q_error.png`` from ``q_error.csv``."""
    rows = read_q_error(run / "q_error.csv")
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = np.arange(1, len(rows) + 1)
    written = []
    for name, keys, ylabel in (
        ("learning_curve", ("episode_return",), "episode return"),
        ("q_error", ("mean", "abs_mean"), "Q - G over the episode"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            ax.plot(episodes, [row.get(key, np.nan) for row in rows], marker=".", label=key)
        ax.set_xlabel("episode")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = run / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# -- jobs ---------------------------------------------------------------------------------------


def pretrain(args: argparse.Namespace) -> int:
    """SAC from scratch in sim with the recipe's networks; a checkpoint every episode."""
    from stable_baselines3.common.callbacks import BaseCallback

    from sim2online_envs.agents import SAC, QErrorCallback, paper_recipe, save_checkpoint

    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    env = make_env(args.env_id, args.env)
    recipe = paper_recipe(robot_of(args.env_id))
    policy_kwargs = {**recipe["policy_kwargs"], "critic_width": args.critic_width}
    policy = (
        "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    )
    settings: dict[str, Any] = {
        "batch_size": recipe["batch_size"],
        "gamma": recipe["gamma"],
        "learning_starts": args.learning_starts,
        "ent_coef": "auto_0.01",
        "max_grad_norm": recipe["max_grad_norm"],
        "policy_kwargs": policy_kwargs,
        "tensorboard_log": str(run / "tb"),
        "seed": args.seed,
    }
    settings.update(dict(args.set))
    model = SAC(policy, env, **settings)

    class EveryEpisode(BaseCallback):
        def _on_step(self) -> bool:
            if any(self.locals.get("dones", [])):
                save_checkpoint(self.model, run / "checkpoint", include_replay_buffer=False)
            return True

    q_error = QErrorCallback(csv_path=run / "q_error.csv")
    episodes = episode_log_callback(run / "episodes.csv")
    model.learn(args.steps, callback=[q_error, episodes, EveryEpisode()], progress_bar=True)
    save_checkpoint(model, run / "checkpoint")
    write_plots(run)
    logger.info("pretrained %d steps on %s -> %s", model.num_timesteps, args.env_id, run)
    return 0


def finetune(args: argparse.Namespace) -> int:
    """Fine-tune a prior with a method's recipe, an episode at a time; resumable."""
    from sim2online_envs.realtime import realtime_loop

    env = make_env(args.env_id, args.env)
    try:
        # The job's thread steps the robot (warm start included); threads and processes it
        # starts (a process learner, Ray) stay at normal priority. An in-process learner's
        # gradient steps run at this priority too: use it with --learner or a process learner.
        with realtime_loop(args.realtime_priority):
            return _finetune(args, env)
    finally:
        env.close()  # a real robot's devices (or its twin) released, the robot stopped


def _finetune(args: argparse.Namespace, env: gym.Env) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from sim2online_envs.agents import (
        SAC,
        MixingReplayBuffer,
        QErrorCallback,
        load_checkpoint,
        load_replay_buffer_as_offline,
        recipe,
        save_checkpoint,
    )

    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    progress_path = run / "progress.json"
    own = run / "checkpoint"
    resuming = args.resume and (own / "checkpoint.json").is_file()
    done = json.loads(progress_path.read_text())["episodes"] if resuming else 0
    if resuming:
        model = load_checkpoint(SAC, own, env=env, load_replay_buffer=True)
        logger.info("resuming %s at episode %d", run, done)
    else:
        if args.prior is None:
            raise SystemExit(
                "finetune needs --prior (a save_checkpoint folder, or `shipped` for the "
                "package's own prior) or --resume"
            )
        if str(args.prior) == SHIPPED:
            from sim2online_envs.priors import shipped_prior

            args.prior = shipped_prior(robot_of(args.env_id))
            logger.info("the package's shipped prior: %s", args.prior)
        kwargs = recipe(
            robot_of(args.env_id),
            args.method,
            buffer_size=args.buffer_size,
            for_load=True,
        )
        if args.gradient_steps is not None:
            kwargs["gradient_steps"] = args.gradient_steps
        if args.warm_start_steps is not None and kwargs.get("warm_start_steps"):
            kwargs["warm_start_steps"] = args.warm_start_steps
        kwargs.update(dict(args.set))
        model = load_checkpoint(
            SAC, args.prior, env=env, load_replay_buffer=False, action_noise=None, **kwargs
        )
        if isinstance(model.replay_buffer, MixingReplayBuffer):
            load_replay_buffer_as_offline(model, args.prior, include_offline=True)
    model.tensorboard_log = str(run / "tb")
    if getattr(args, "learner", None):
        from sim2online_envs.agents.distributed import attach_learner

        attach_learner(model, address=args.learner, spool_dir=str(run / "spool"))
    q_error = QErrorCallback(csv_path=run / "q_error.csv")
    callbacks = [q_error, episode_log_callback(run / "episodes.csv")]
    if not resuming and model.warm_start_steps:
        logger.info("warm start: %d transitions with the prior's actions", model.warm_start_steps)
        model.learn(model.warm_start_steps, callback=callbacks, tb_log_name="finetune")
    bar = tqdm(total=args.episodes, initial=done, desc=f"fine-tuning ({args.method})", unit="ep")
    with logging_redirect_tqdm():  # log lines above the bar, not through it
        for episode in range(done, args.episodes):
            first = episode == 0 and not model.warm_start_steps and not resuming
            model.learn(1, callback=callbacks, reset_num_timesteps=first, tb_log_name="finetune")
            save_checkpoint(model, own)
            progress_path.write_text(json.dumps({"episodes": episode + 1, "method": args.method}))
            row = q_error.history[-1]
            bar.set_postfix(ret=f"{row['episode_return']:.1f}", q_err=f"{row['mean']:+.2f}")
            bar.update(1)
            write_plots(run)
    bar.close()
    logger.info("fine-tuned %d episodes on %s -> %s", args.episodes, args.env_id, run)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Deterministic episodes of a checkpoint's policy; JSON to stdout's logger and a file."""
    from tqdm import tqdm

    from sim2online_envs.agents import SAC, load_checkpoint

    env = make_env(args.env_id, args.env)
    model = load_checkpoint(SAC, args.model, env=env, load_replay_buffer=False)
    returns, successes = [], []
    for i in tqdm(range(args.episodes), desc="evaluating", unit="ep"):
        obs, _ = env.reset(seed=args.seed + i)
        total, done, info = 0.0, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(
                model.predict(obs, deterministic=True)[0]
            )
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info.get("is_success", False)))
    result = {
        "env_id": args.env_id,
        "model": str(args.model),
        "episodes": args.episodes,
        "mean_return": float(np.mean(returns)),
        "se_return": float(np.std(returns, ddof=1) / np.sqrt(len(returns)))
        if len(returns) > 1
        else float("nan"),
        "success_rate": float(np.mean(successes)),
        "returns": returns,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    logger.info(
        "%s on %s: return %.1f ± %.1f over %d episodes, success %.0f%%",
        args.model,
        args.env_id,
        result["mean_return"],
        result["se_return"],
        args.episodes,
        100 * result["success_rate"],
    )
    env.close()
    return 0


def shipped_budgets() -> dict[str, Any]:
    """The robots with a shipped prior, and their budgets."""
    from sim2online_envs.priors import SHIPPED_BUDGETS

    return SHIPPED_BUDGETS


def regenerate_prior(args: argparse.Namespace) -> int:
    """Pretrain a robot's shipped prior again and replace the package's copy."""
    from sim2online_envs.priors import regenerate_shipped

    folder = regenerate_shipped(args.robot, seed=args.seed)
    logger.info("the %s prior is regenerated in %s", args.robot, folder)
    return 0


def add_subcommands(sub: Any) -> None:
    """Register ``pretrain``, ``finetune``, ``prior`` and ``evaluate`` on the CLI's subparsers."""
    from sim2online_envs.agents import METHODS

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("env_id", help="a registered id: SimRaceCar-v0, RealRaceCar-v0, ...")
        parser.add_argument(
            "--env",
            action="append",
            default=[],
            type=parse_setting,
            metavar="KEY=VALUE",
            help="env keyword (dynamics=dynamic, preset=f1tenth, hardware=twin); repeatable",
        )
        parser.add_argument("--seed", type=int, default=0)

    def agent_settings(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            type=parse_setting,
            metavar="KEY=VALUE",
            help="an SAC keyword over the recipe (policy_delay=10, learning_rate=1e-4)",
        )

    pre = sub.add_parser("pretrain", help="train SAC from scratch in sim (the prior)")
    common(pre)
    agent_settings(pre)
    pre.add_argument("--steps", type=int, default=50_000)
    pre.add_argument("--learning-starts", type=int, default=1000)
    pre.add_argument("--critic-width", type=int, default=128, help="BRO width (paper: 512)")
    pre.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/pretrain"))
    pre.set_defaults(job=pretrain)

    fine = sub.add_parser("finetune", help="fine-tune a prior online with a method's recipe")
    common(fine)
    agent_settings(fine)
    fine.add_argument(
        "--prior",
        type=pathlib.Path,
        default=None,
        help=f"save_checkpoint folder, or {SHIPPED!r}: the package's prior for the robot",
    )
    fine.add_argument("--method", choices=METHODS, default="paper")
    fine.add_argument("--episodes", type=int, default=20)
    fine.add_argument("--gradient-steps", type=int, default=None, help="K per episode")
    fine.add_argument("--warm-start-steps", type=int, default=None, help="N*")
    fine.add_argument("--buffer-size", type=int, default=100_000)
    fine.add_argument("--resume", action="store_true", help="continue the run in --out")
    fine.add_argument(
        "--learner",
        default=None,
        metavar="HOST[:PORT]",
        help="learn on a `sim2online learner` server (agents.distributed); this process acts",
    )
    fine.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the control loop's thread at SCHED_FIFO priority N (needs CAP_SYS_NICE)",
    )
    fine.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/finetune"))
    fine.set_defaults(job=finetune)

    ship = sub.add_parser(
        "prior", help="regenerate the package's shipped prior of a robot (sim2online_envs.priors)"
    )
    ship.add_argument("robot", choices=sorted(shipped_budgets()))
    ship.add_argument("--seed", type=int, default=0)
    ship.set_defaults(job=regenerate_prior)

    ev = sub.add_parser("evaluate", help="deterministic episodes of a checkpoint's policy")
    common(ev)
    ev.add_argument("--model", type=pathlib.Path, required=True, help="save_checkpoint folder")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--out", type=pathlib.Path, default=None, help="JSON file to write")
    ev.set_defaults(job=evaluate)


__all__ = ["add_subcommands", "evaluate", "finetune", "pretrain", "regenerate_prior", "write_plots"]
