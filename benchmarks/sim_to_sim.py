"""Sim-to-sim on the race car: which fine-tuning method recovers what the reality gap costs.

The prior is SAC pretrained on the kinematic bicycle (``SimRaceCar-v0``, ``dynamics=
"kinematic"``, domain randomised, the recipe of ``examples/pretrain_then_finetune_racecar.py``);
"reality" is the dynamic model with Pacejka tyres (:data:`REALITY`, the package's standard
wrapper stack). Each method fine-tunes the same prior for ``--episodes`` episodes on reality;
after every episode the deterministic policy is evaluated on fixed start states and its return
is reported relative to the prior's on the same starts. Methods (``recipe("racecar", method)``):
vanilla SAC, delayed actor only, mixing only, the full recipe, ResFiT-style residual, SGFT-style
shaping; and the delay ablation M ∈ {1, 5, 10, 20} of the full recipe.

Budgets are the CPU's, the same for every method (:class:`Budget`): K gradient steps per episode,
N* warm-start transitions for the methods whose recipe has a warm start, ResFiT's critic-only
warm-up of one episode's K. The algorithmic settings are each recipe's own.

Outputs (``--out``, default ``docs/``): ``sim_to_sim.csv`` (one row per seed, method and
episode, appended as runs finish), ``sim_to_sim_gap.csv`` (the prior on sim and reality),
``sim_to_sim_*.png`` and the generated section of ``results.md``. Run::

    .venv/bin/python -m benchmarks.sim_to_sim --quick --out /tmp/s2s   # minutes
    nohup .venv/bin/python -m benchmarks.sim_to_sim > /tmp/sim_to_sim.log 2>&1 &   # ~2 h
    .venv/bin/python -m benchmarks.sim_to_sim --plots-only             # redraw from the CSV
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import logging
import math
import multiprocessing as mp
import pathlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.sim_to_sim")

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: "Reality": the dynamic model (the env's other keyword arguments: the default preset's).
REALITY: dict[str, Any] = {"dynamics": "dynamic"}
#: The prior's simulator.
SIM: dict[str, Any] = {"dynamics": "kinematic"}
#: The methods compared, with the recipe each runs.
METHODS: dict[str, str] = {
    "vanilla": "vanilla",
    "delayed_actor": "delayed_actor",
    "mixing": "mixing",
    "full": "paper",
    "resfit": "resfit",
    "sgft": "sgft",
}
DELAYS = (1, 5, 10, 20)
EVAL_SEED = 10_000
FIELDS = (
    "seed",
    "run",
    "method",
    "policy_delay",
    "episode",
    "eval_return",
    "prior_return",
    "relative_return",
    "train_return",
    "q_error_mean",
    "q_error_abs_mean",
    "elapsed_s",
)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Compute per stage; every method gets the same."""

    seeds: int = 5
    episodes: int = 20
    gradient_steps: int = 250
    warm_start_steps: int = 1250
    eval_episodes: int = 5
    # The prior (examples/pretrain_then_finetune_racecar.py's stage 1).
    num_envs: int = 16
    demo_steps: int = 500
    pretrain_steps: int = 60_000
    pretrain_gradient_steps: int = 4
    critic_width: int = 128


QUICK = Budget(
    seeds=2,
    episodes=2,
    gradient_steps=20,
    warm_start_steps=250,
    eval_episodes=1,
    num_envs=4,
    demo_steps=50,
    pretrain_steps=600,
    pretrain_gradient_steps=1,
    critic_width=32,
)


def _example() -> Any:
    """The race car example module (its pretraining and evaluation helpers)."""
    path = ROOT / "examples" / "pretrain_then_finetune_racecar.py"
    spec = importlib.util.spec_from_file_location("pretrain_then_finetune_racecar", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


#: Realities the gap search (``--gap-only``) measures the priors on.
GAP_CANDIDATES: dict[str, dict[str, Any]] = {
    "sim": {},
    "dynamic": {"dynamics": "dynamic"},
    "dynamic_friction_0.5": {"dynamics": "dynamic", "friction": 0.5},
    "dynamic_friction_0.3": {"dynamics": "dynamic", "friction": 0.3},
    "dynamic_delay_0.1": {"dynamics": "dynamic", "action_delay": 0.1},
    "f1tenth_dynamic": {"preset": "f1tenth", "dynamics": "dynamic"},
}


def make_reality(reality: dict[str, Any] | None = None) -> Any:
    import sim2online_envs

    return sim2online_envs.make_env("racecar", **(REALITY if reality is None else reality))


def make_sim() -> Any:
    import gymnasium as gym

    import sim2online_envs  # noqa: F401

    return gym.make("SimRaceCar-v0", **SIM)


# -- stage 1: priors ---------------------------------------------------------------------------


def pretrain_prior(budget: Budget, seed: int, folder: pathlib.Path) -> pathlib.Path:
    """The seed's prior (cached: an existing checkpoint in ``folder`` is reused)."""
    prior_dir = folder / f"prior_seed{seed}" / "prior"
    if (prior_dir / "checkpoint.json").is_file():
        return prior_dir
    import torch as th

    th.set_num_threads(1)
    example = _example()
    args = argparse.Namespace(
        seed=seed,
        num_envs=budget.num_envs,
        demo_steps=budget.demo_steps,
        demo_noise=0.3,
        pretrain_steps=budget.pretrain_steps,
        pretrain_gradient_steps=budget.pretrain_gradient_steps,
        critic_width=budget.critic_width,
    )
    out = prior_dir.parent
    out.mkdir(parents=True, exist_ok=True)
    return example.pretrain(args, out)


def evaluate(model: Any, env: Any, episodes: int) -> float:
    """Mean deterministic return over the fixed start states."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        total, done = 0.0, False
        while not done:
            action = model.predict(obs, deterministic=True)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


# -- stage 2: one fine-tuning run -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    seed: int
    run: str
    method: str
    policy_delay: int | None
    prior_dir: str
    budget: Budget


def finetune_run(
    job: Job,
    reality_factory: Callable[[], Any] | None = None,
    robot: str = "racecar",
    episode_steps: int = 250,
) -> list[dict[str, Any]]:
    """Fine-tune the seed's prior with one method; a row per fine-tuning episode.

    ``reality_factory`` builds reality's env (default: :func:`make_reality`), ``robot`` names
    the recipe and ``episode_steps`` sizes the online buffer: the Go1 benchmark reuses this."""
    import torch as th

    from sim2online_envs.agents import (
        SAC,
        MixingReplayBuffer,
        QErrorCallback,
        load_checkpoint,
        load_replay_buffer_as_offline,
        recipe,
    )

    th.set_num_threads(1)
    logging.getLogger("sim2online_envs").setLevel(logging.WARNING)
    budget = job.budget
    started = time.perf_counter()
    factory = make_reality if reality_factory is None else reality_factory
    env, eval_env = factory(), factory()
    buffer_size = (budget.episodes + 2) * episode_steps + budget.warm_start_steps
    kwargs = recipe(robot, METHODS[job.method], buffer_size=buffer_size, for_load=True)
    kwargs["gradient_steps"] = budget.gradient_steps
    if kwargs.get("warm_start_steps"):
        kwargs["warm_start_steps"] = budget.warm_start_steps
    if kwargs.get("critic_warmup_steps"):
        kwargs["critic_warmup_steps"] = budget.gradient_steps
    if job.policy_delay is not None:
        kwargs["policy_delay"] = job.policy_delay
    model = load_checkpoint(
        SAC,
        job.prior_dir,
        env=env,
        load_replay_buffer=False,
        action_noise=None,
        seed=job.seed,
        **kwargs,
    )
    if isinstance(model.replay_buffer, MixingReplayBuffer):
        load_replay_buffer_as_offline(model, job.prior_dir, include_offline=True)
    model.set_random_seed(job.seed)
    prior_return = evaluate(model, eval_env, budget.eval_episodes)
    q_error = QErrorCallback()
    if model.warm_start_steps:
        model.learn(model.warm_start_steps, callback=q_error)
    rows = []
    for episode in range(budget.episodes):
        first = episode == 0 and not model.warm_start_steps
        model.learn(1, callback=q_error, reset_num_timesteps=first)
        eval_return = evaluate(model, eval_env, budget.eval_episodes)
        last = q_error.history[-1]
        rows.append(
            {
                "seed": job.seed,
                "run": job.run,
                "method": job.method,
                "policy_delay": model.policy_delay,
                "episode": episode + 1,
                "eval_return": eval_return,
                "prior_return": prior_return,
                "relative_return": eval_return - prior_return,
                "train_return": last["episode_return"],
                "q_error_mean": last["mean"],
                "q_error_abs_mean": last["abs_mean"],
                "elapsed_s": time.perf_counter() - started,
            }
        )
    env.close()
    eval_env.close()
    return rows


def guarded_run(run: Callable[[Job], list[dict[str, Any]]], job: Job) -> list[dict[str, Any]]:
    """``run(job)``, or no rows where it fails: one failed run must not lose the others'."""
    try:
        return run(job)
    except Exception:
        logger.exception("run %s seed %d failed", job.run, job.seed)
        return []


def _run_job(job: Job) -> list[dict[str, Any]]:
    return guarded_run(finetune_run, job)


# -- statistics, tables and plots ---------------------------------------------------------------


def read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for key in FIELDS:
            if key in ("run", "method"):
                continue
            row[key] = float(row[key])
    return rows


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def curves(rows: list[dict[str, Any]], key: str) -> dict[str, dict[int, list[float]]]:
    """run -> episode -> the seeds' values of ``key``."""
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[row["run"]][int(row["episode"])].append(row[key])
    return out


def summary_table(rows: list[dict[str, Any]], last: int = 5) -> list[dict[str, Any]]:
    """Per run: seeds, prior return, the mean over the last ``last`` episodes of the relative
    return (per seed, then mean ± s.e. over seeds), the worst episode (dip), Q-error."""
    by_run: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_run[row["run"]][int(row["seed"])].append(row)
    table = []
    for run, seeds in by_run.items():
        finals, dips, priors, q_last = [], [], [], []
        for seed_rows in seeds.values():
            seed_rows.sort(key=lambda r: r["episode"])
            rel = [r["relative_return"] for r in seed_rows]
            finals.append(float(np.mean(rel[-last:])))
            dips.append(float(np.min(rel)))
            priors.append(seed_rows[0]["prior_return"])
            q_last.append(float(np.mean([r["q_error_mean"] for r in seed_rows[-last:]])))
        episodes = min(len(s) for s in seeds.values())
        table.append(
            {
                "run": run,
                "seeds": len(seeds),
                "episodes": episodes,
                "prior": mean_se(priors),
                "final": mean_se(finals),
                "dip": mean_se(dips),
                "q_error": mean_se(q_last),
            }
        )
    order = {name: i for i, name in enumerate(run_names())}
    table.sort(key=lambda r: order.get(r["run"], 99))
    return table


def run_names() -> list[str]:
    return [*METHODS, *(f"full_M{m}" for m in DELAYS if m != 20)]


def _fmt(pair: tuple[float, float]) -> str:
    mean, se = pair
    return f"{mean:+.1f} ± {se:.1f}" if not math.isnan(se) else f"{mean:+.1f}"


def markdown_section(
    rows: list[dict[str, Any]], gap: list[dict[str, Any]], budget: Budget, out: pathlib.Path
) -> str:
    lines = [
        "<!-- sim_to_sim:begin (generated by benchmarks/sim_to_sim.py; edits here are lost) -->",
        "",
        f"Budget: {json.dumps(dataclasses.asdict(budget))}.",
        "",
    ]
    if gap:
        sim = mean_se([g["prior_sim"] for g in gap])
        real = mean_se([g["prior_reality"] for g in gap])
        lines += [
            f"The prior (seeds {', '.join(str(int(g['seed'])) for g in gap)}), deterministic, "
            f"{budget.eval_episodes} fixed starts: {sim[0]:.1f} ± {sim[1]:.1f} on sim "
            f"(kinematic), {real[0]:.1f} ± {real[1]:.1f} on reality (dynamic).",
            "",
        ]
    lines += [
        "| run | seeds | episodes | prior on reality | last-5 return - prior | worst episode - "
        "prior | Q - G, last 5 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary_table(rows):
        lines.append(
            f"| {r['run']} | {r['seeds']} | {r['episodes']} | {r['prior'][0]:.1f} | "
            f"{_fmt(r['final'])} | {_fmt(r['dip'])} | {_fmt(r['q_error'])} |"
        )
    lines += [
        "",
        "Mean ± standard error over seeds (each seed's value first averaged over its last 5 "
        "episodes). Plots: `sim_to_sim_curves.png`, `sim_to_sim_q_error.png`, "
        "`sim_to_sim_delay.png`.",
        "",
        "<!-- sim_to_sim:end -->",
    ]
    return "\n".join(lines)


def write_markdown(section: str, path: pathlib.Path, marker: str = "sim_to_sim") -> None:
    """Replace the ``marker`` section of ``path`` with ``section`` (appended if absent)."""
    text = path.read_text() if path.is_file() else "# Results\n\n"
    begin, end = f"<!-- {marker}:begin", f"<!-- {marker}:end -->"
    if begin in text and end in text:
        head = text[: text.index(begin)]
        tail = text[text.index(end) + len(end) :]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def plot(
    rows: list[dict[str, Any]],
    out: pathlib.Path,
    prefix: str = "sim_to_sim",
    title: str = "race car, kinematic prior → dynamic reality",
    delay: bool = True,
) -> list[pathlib.Path]:
    """``{prefix}_curves.png``, ``_q_error.png`` and (``delay``) ``_delay.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = [
        ("relative_return", "curves", "return - prior's (deterministic)", list(METHODS)),
        ("q_error_mean", "q_error", "Q - G per episode (mean over steps)", list(METHODS)),
    ]
    if delay:
        panels.append(
            (
                "relative_return",
                "delay",
                "return - prior's, full recipe",
                [*(f"full_M{m}" for m in DELAYS if m != 20), "full"],
            )
        )
    for key, name, ylabel, runs in panels:
        data = curves(rows, key)
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = False
        for run in runs:
            if run not in data:
                continue
            episodes = sorted(data[run])
            stats = [mean_se(data[run][e]) for e in episodes]
            mean = np.array([s[0] for s in stats])
            se = np.nan_to_num(np.array([s[1] for s in stats]))
            label = "full_M20" if name == "delay" and run == "full" else run
            ax.plot(episodes, mean, label=f"{label} (n={len(data[run][episodes[0]])})")
            drawn = True
            ax.fill_between(episodes, mean - se, mean + se, alpha=0.2)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("fine-tuning episode on reality")
        ax.set_ylabel(ylabel)
        if drawn:
            ax.legend(fontsize=8)
        ax.set_title(f"{title} ({name})")
        fig.tight_layout()
        path = out / f"{prefix}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def report(out: pathlib.Path, budget: Budget, markdown: pathlib.Path) -> None:
    rows = read_rows(out / "sim_to_sim.csv")
    gap = []
    if (out / "sim_to_sim_gap.csv").is_file():
        with (out / "sim_to_sim_gap.csv").open() as file:
            gap = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(file)]
    if rows:
        plot(rows, out)
    write_markdown(markdown_section(rows, gap, budget, out), markdown)


# -- command line -------------------------------------------------------------------------------


def jobs_for(budget: Budget, priors: dict[int, pathlib.Path], done: set[tuple[str, int]]) -> list:
    jobs = []
    for seed, prior in priors.items():
        for method in METHODS:
            jobs.append(Job(seed, method, method, None, str(prior), budget))
        for delay in DELAYS:
            if delay != 20:  # the full recipe is M = 20
                jobs.append(Job(seed, f"full_M{delay}", "full", delay, str(prior), budget))
    # Seed-major order: every method's first seeds finish before later seeds start.
    jobs.sort(key=lambda j: (j.seed, run_names().index(j.run)))
    return [j for j in jobs if (j.run, j.seed) not in done]


def append_runs(
    pool: Any,
    run_job: Callable[[Job], list[dict[str, Any]]],
    jobs: Sequence[Job],
    csv_path: pathlib.Path,
    after_each: Callable[[], None],
    digits: int = 1,
) -> None:
    """Run ``jobs`` on ``pool``, appending each run's rows to ``csv_path`` as it finishes (a
    restart skips what is there) and calling ``after_each`` (the report) after every run."""
    from tqdm import tqdm

    new = not csv_path.is_file()
    with csv_path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        bar = tqdm(total=len(jobs), desc="fine-tuning runs", file=sys.stderr)
        for rows in pool.imap_unordered(run_job, jobs):
            writer.writerows(rows)
            file.flush()
            bar.update(1)
            if rows:
                logger.info(
                    f"%s seed %d: prior %.{digits}f, last episode %+.{digits}f relative (%.0f s)",
                    rows[0]["run"],
                    rows[0]["seed"],
                    rows[0]["prior_return"],
                    rows[-1]["relative_return"],
                    rows[-1]["elapsed_s"],
                )
            after_each()
        bar.close()


def default_out(quick: bool) -> pathlib.Path:
    """docs/ for a full run; a fresh temp folder for ``--quick``, which must never overwrite the
    committed results with a smoke run's."""
    if not quick:
        return ROOT / "docs"
    import tempfile

    out = pathlib.Path(tempfile.mkdtemp(prefix="sim_to_sim_quick_"))
    logger.info("--quick without --out: writing to %s", out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a minutes-long smoke run")
    parser.add_argument(
        "--out", type=pathlib.Path, default=None, help="default: docs/ (--quick: a temp folder)"
    )
    parser.add_argument("--priors", type=pathlib.Path, default=None, help="prior cache folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--gradient-steps", type=int, default=None)
    parser.add_argument("--plots-only", action="store_true", help="redraw from the CSV")
    parser.add_argument(
        "--gap-only",
        action="store_true",
        help="pretrain the priors and measure them on every GAP_CANDIDATES reality, then stop",
    )
    parser.add_argument(
        "--reality",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword of reality's env over REALITY (friction=0.5, preset=f1tenth); repeatable",
    )
    args = parser.parse_args(argv)
    for item in args.reality:
        key, _, value = item.partition("=")
        try:
            REALITY[key] = float(value)
        except ValueError:
            REALITY[key] = value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    budget = QUICK if args.quick else Budget()
    overrides = {
        k: v
        for k, v in (
            ("seeds", args.seeds),
            ("episodes", args.episodes),
            ("gradient_steps", args.gradient_steps),
        )
        if v is not None
    }
    budget = dataclasses.replace(budget, **overrides)
    out = args.out or default_out(args.quick)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / "results.md"
    if args.plots_only:
        report(out, budget, markdown)
        return 0
    priors_dir = args.priors or pathlib.Path("/tmp/sim2online_sim_to_sim") / (
        "quick" if args.quick else "full"
    )
    seeds = list(range(budget.seeds))
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with ctx.Pool(args.workers) as pool:
        results = pool.starmap(pretrain_prior, [(budget, s, priors_dir) for s in seeds])
        priors = dict(zip(seeds, results, strict=True))
        logger.info("priors ready in %.0f s: %s", time.perf_counter() - started, priors)
        if args.gap_only:
            tasks = [
                (budget, s, str(p), name) for s, p in priors.items() for name in GAP_CANDIDATES
            ]
            measured = pool.starmap(_gap_candidate, tasks)
            path = out / "sim_to_sim_gap_search.csv"
            with path.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=["seed", "reality", "prior_return"])
                writer.writeheader()
                writer.writerows(measured)
            for name in GAP_CANDIDATES:
                values = [m["prior_return"] for m in measured if m["reality"] == name]
                mean, se = mean_se(values)
                logger.info("prior on %-24s %7.1f ± %.1f", name, mean, se)
            return 0
        gap_path = out / "sim_to_sim_gap.csv"
        gap_rows = pool.starmap(_gap, [(budget, s, str(p)) for s, p in priors.items()])
        with gap_path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["seed", "prior_sim", "prior_reality"])
            writer.writeheader()
            writer.writerows(gap_rows)
        logger.info("the prior on sim and reality: %s", gap_rows)
        csv_path = out / "sim_to_sim.csv"
        done = {(r["run"], int(r["seed"])) for r in read_rows(csv_path)}
        jobs = jobs_for(budget, priors, done)
        logger.info("%d runs to do (%d done before)", len(jobs), len(done))
        append_runs(pool, _run_job, jobs, csv_path, lambda: report(out, budget, markdown))
    report(out, budget, markdown)
    logger.info("done in %.0f s; results in %s", time.perf_counter() - started, markdown)
    return 0


def _gap_candidate(budget: Budget, seed: int, prior_dir: str, name: str) -> dict[str, Any]:
    import torch as th

    from sim2online_envs.agents import SAC, load_checkpoint

    th.set_num_threads(1)
    model = load_checkpoint(SAC, prior_dir, load_replay_buffer=False)
    env = make_sim() if name == "sim" else make_reality(GAP_CANDIDATES[name])
    result = {"seed": seed, "reality": name, "prior_return": evaluate(model, env, 10)}
    env.close()
    return result


def _gap(budget: Budget, seed: int, prior_dir: str) -> dict[str, float]:
    """The prior's deterministic return on sim and on reality (the gap fine-tuning faces)."""
    import torch as th

    from sim2online_envs.agents import SAC, load_checkpoint

    th.set_num_threads(1)
    model = load_checkpoint(SAC, prior_dir, load_replay_buffer=False)
    sim, reality = make_sim(), make_reality()
    result = {
        "seed": seed,
        "prior_sim": evaluate(model, sim, budget.eval_episodes),
        "prior_reality": evaluate(model, reality, budget.eval_episodes),
    }
    sim.close()
    reality.close()
    return result


if __name__ == "__main__":
    raise SystemExit(main())
