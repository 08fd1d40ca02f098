"""Sim-to-sim on the Go1: a prior trained on narrow commands, fine-tuned where they are full.

The prior is SAC pretrained with :func:`sim2online_envs.priors.pretrain_prior` on the batched
Go1 (``make_vec("SimGo1-v0", N, preset="study_prior")``: the study's narrow command range
±(0.5 m/s, 0.8 m/s, 1.2 rad/s), domain randomised, noisy scripted stand episodes as half of
every minibatch), one prior per seed, cached in ``--priors``. "Reality" is the same simulator
with the full range ±(1.5, 0.8, 1.2) (``make_env("go1", preset="playground")``, the package's
standard stack): the prior has never been asked to walk faster than 0.5 m/s forwards or
backwards. Each method (``recipe("go1", method)``, :data:`benchmarks.sim_to_sim.METHODS`)
fine-tunes the same prior for ``episodes`` episodes on reality; after every episode the
deterministic policy is evaluated on fixed starts (``reset(seed=10000 + i)``: the same start,
randomisation and command sequence for every method, since the command draws come from the
reset's generator) and its return is reported relative to the prior's on the same starts;
the critic's Q against the Monte-Carlo return (``QErrorCallback``) per episode. The runs,
statistics, table and plots are :mod:`benchmarks.sim_to_sim`'s.

Sizing, for one core shared with nothing else of this benchmark (the default run must finish
within an hour there with at least two seeds). The rates it rests on are in
``docs/results.md``; the arithmetic:

* Episodes are cut to ``max_episode_steps`` = 250 (5 s at 50 Hz, the task's own setting;
  the study's Go1 episode is 1000 steps) in pretraining and on reality alike, so an
  evaluation start costs a quarter of a full episode and every method sees 15 episodes of
  different commands instead of four.
* The gradient step is the cost: SAC with the recipe's batch of 512 and a BRO critic of width
  128 (the car benchmark's; the paper's 512 is several times slower) makes a few tens of
  updates a second on one core, env steps are two orders of magnitude cheaper. A prior gets
  80k world-steps of 16 worlds with 4 updates per batched step: 20k gradient steps a seed,
  the two priors the larger part of the hour.
* Fine-tuning: K = 150 gradient steps per 250-step episode (UTD 0.6; the study's Go1:
  1250 per 1000 steps), 15 episodes, N* = 500 warm-start transitions (two episodes of the
  prior) for the recipes that have one, ResFiT's critic-only warm-up one episode's K, five
  evaluation starts after every episode: 2,250 updates a run, a tenth of a prior's, so all
  six methods (vanilla, delayed actor, mixing, the full recipe, ResFiT, SGFT) fit twice in the
  rest of the hour. The delay ablation of the car benchmark is not run here.

Outputs (``--out``, default ``docs/``): ``sim_to_sim_go1.csv`` (a row per seed, method and
episode, appended as runs finish; finished runs are skipped on a rerun),
``sim_to_sim_go1_gap.csv`` (the prior and the scripted stand controller on narrow and full
commands), ``sim_to_sim_go1_curves.png``, ``sim_to_sim_go1_q_error.png`` and the generated
section of ``results.md`` (between the ``sim_to_sim_go1`` markers). Run::

    .venv/bin/python -m benchmarks.sim_to_sim_go1 --quick --out /tmp/s2s_go1   # ~2 min
    nohup nice -n 5 .venv/bin/python -m benchmarks.sim_to_sim_go1 > /tmp/s2s_go1.log 2>&1 &
    .venv/bin/python -m benchmarks.sim_to_sim_go1 --plots-only              # from the CSV
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import logging
import multiprocessing as mp
import pathlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import sim_to_sim as s2s

logger = logging.getLogger("benchmarks.sim_to_sim_go1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAME = "sim_to_sim_go1"
HEADING = "## Go1: narrow → full commands"
TITLE = "Go1, narrow-command prior → full commands"
#: The prior's simulator: the study's narrow commands.
SIM: dict[str, Any] = {"preset": "study_prior"}
#: "Reality": Playground's full command range, otherwise the same simulator.
REALITY: dict[str, Any] = {"preset": "playground"}
#: The runs, each a method of :data:`benchmarks.sim_to_sim.METHODS`.
RUNS: tuple[str, ...] = ("vanilla", "delayed_actor", "mixing", "full", "resfit", "sgft")
GAP_FIELDS = ("seed", "prior_narrow", "prior_full", "stand_narrow", "stand_full")


@dataclasses.dataclass(frozen=True)
class Go1Budget(s2s.Budget):
    """The car benchmark's budget fields with the Go1's sizes (module docstring), plus the
    episode length used in pretraining and on reality."""

    seeds: int = 2
    episodes: int = 15
    gradient_steps: int = 150
    warm_start_steps: int = 500
    eval_episodes: int = 5
    num_envs: int = 16
    demo_steps: int = 250
    pretrain_steps: int = 80_000
    pretrain_gradient_steps: int = 4
    critic_width: int = 128
    max_episode_steps: int = 250


QUICK = Go1Budget(
    seeds=2,
    episodes=2,
    gradient_steps=10,
    warm_start_steps=100,
    eval_episodes=1,
    num_envs=4,
    demo_steps=25,
    pretrain_steps=400,
    pretrain_gradient_steps=1,
    critic_width=32,
    max_episode_steps=50,
)


def _task(max_episode_steps: int) -> dict[str, Any]:
    return {"task_config": {"max_episode_steps": max_episode_steps}}


def make_reality(max_episode_steps: int) -> Any:
    """Reality: full commands, the package's standard wrapper stack."""
    import sim2online_envs

    return sim2online_envs.make_env("go1", **REALITY, **_task(max_episode_steps))


def make_sim(max_episode_steps: int) -> Any:
    """The prior's own task (narrow commands), through the same stack as reality."""
    import sim2online_envs

    return sim2online_envs.make_env("go1", **SIM, **_task(max_episode_steps))


def pretrain_prior(budget: Go1Budget, seed: int, folder: pathlib.Path) -> pathlib.Path:
    """The seed's prior on narrow commands (cached: an existing checkpoint is reused)."""
    prior_dir = folder / f"prior_seed{seed}" / "prior"
    if (prior_dir / "checkpoint.json").is_file():
        return prior_dir
    import torch as th

    from sim2online_envs.priors import PriorBudget
    from sim2online_envs.priors import pretrain_prior as pretrain
    from sim2online_envs.robots import go1

    th.set_num_threads(1)
    prior_budget = PriorBudget(
        env_id=go1.SIM_ID,
        env_kwargs=(*SIM.items(), *_task(budget.max_episode_steps).items(), ("num_threads", 1)),
        num_envs=budget.num_envs,
        demo_steps=budget.demo_steps,
        demo_noise=0.3,
        steps=budget.pretrain_steps,
        gradient_steps=budget.pretrain_gradient_steps,
        critic_width=budget.critic_width,
    )
    started = time.perf_counter()
    path = pretrain(prior_budget, prior_dir.parent, seed=seed)
    logger.info("prior seed %d: %.0f s", seed, time.perf_counter() - started)
    return path


def measure_gap(budget: Go1Budget, seed: int, prior_dir: str) -> dict[str, float]:
    """The prior's and the stand controller's deterministic returns on narrow and full
    commands, on the evaluation starts: the gap fine-tuning faces, and a floor to read it by."""
    import torch as th

    from sim2online_envs.agents import SAC, load_checkpoint
    from sim2online_envs.controllers.go1 import Go1StandController

    th.set_num_threads(1)
    model = load_checkpoint(SAC, prior_dir, load_replay_buffer=False)
    stand = Go1StandController()
    result: dict[str, float] = {"seed": seed}
    for name, factory in (("narrow", make_sim), ("full", make_reality)):
        env = factory(budget.max_episode_steps)
        result[f"prior_{name}"] = s2s.evaluate(model, env, budget.eval_episodes)
        result[f"stand_{name}"] = s2s.evaluate(stand, env, budget.eval_episodes)
        env.close()
    return result


def finetune_run(job: s2s.Job) -> list[dict[str, Any]]:
    """One method on one seed's prior (:func:`benchmarks.sim_to_sim.finetune_run` on the Go1)."""
    budget = job.budget
    assert isinstance(budget, Go1Budget)
    factory = functools.partial(make_reality, budget.max_episode_steps)
    return s2s.finetune_run(
        job, reality_factory=factory, robot="go1", episode_steps=budget.max_episode_steps
    )


def _run_job(job: s2s.Job) -> list[dict[str, Any]]:
    return s2s.guarded_run(finetune_run, job)


# -- report -------------------------------------------------------------------------------------


def read_gap(path: pathlib.Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


def per_seed_final(rows: list[dict[str, Any]], last: int = 5) -> dict[str, dict[int, float]]:
    """run -> seed -> the mean relative return over the seed's last ``last`` episodes."""
    by: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by[row["run"]][int(row["seed"])].append(row)
    out: dict[str, dict[int, float]] = {}
    for run, seeds in by.items():
        out[run] = {}
        for seed, seed_rows in sorted(seeds.items()):
            seed_rows.sort(key=lambda r: r["episode"])
            out[run][seed] = float(np.mean([r["relative_return"] for r in seed_rows[-last:]]))
    return out


def markdown_section(
    rows: list[dict[str, Any]],
    gap: list[dict[str, float]],
    budget: Go1Budget,
    runs: Sequence[str] = RUNS,
) -> str:
    """The generated part of the Go1 section of ``results.md``."""
    lines = [
        f"<!-- {NAME}:begin (generated by benchmarks/sim_to_sim_go1.py; edits here are lost) -->",
        "",
        f"Budget: {json.dumps(dataclasses.asdict(budget))}.",
        "",
    ]
    if gap:
        stats = {key: s2s.mean_se([g[key] for g in gap]) for key in GAP_FIELDS[1:]}
        lines += [
            f"Deterministic return on {budget.eval_episodes} fixed starts of "
            f"{budget.max_episode_steps} steps (mean ± s.e. over seeds "
            f"{', '.join(str(int(g['seed'])) for g in gap)}): the prior "
            f"{stats['prior_narrow'][0]:.2f} ± {stats['prior_narrow'][1]:.2f} on its narrow "
            f"commands, {stats['prior_full'][0]:.2f} ± {stats['prior_full'][1]:.2f} on full "
            f"commands (reality); the scripted stand controller {stats['stand_narrow'][0]:.2f} "
            f"on narrow, {stats['stand_full'][0]:.2f} on full.",
            "",
        ]
    done = {(r["run"], int(r["seed"])) for r in rows}
    lines += [
        f"Runs finished: {len(done)} of {len(runs) * budget.seeds} "
        f"({len(runs)} methods, {budget.seeds} seeds).",
        "",
        "| run | seeds | episodes | prior on reality | last-5 return - prior | per seed | "
        "worst episode - prior | Q - G, last 5 |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    finals = per_seed_final(rows)
    for r in s2s.summary_table(rows):
        seeds = ", ".join(f"{v:+.2f}" for v in finals[r["run"]].values())
        lines.append(
            f"| {r['run']} | {r['seeds']} | {r['episodes']} | {r['prior'][0]:.2f} | "
            f"{_fmt(r['final'])} | {seeds} | {_fmt(r['dip'])} | {_fmt(r['q_error'])} |"
        )
    lines += [
        "",
        "Mean ± standard error over seeds (each seed's value first averaged over its last 5 "
        f"episodes). Plots: `{NAME}_curves.png`, `{NAME}_q_error.png`.",
        "",
        f"<!-- {NAME}:end -->",
    ]
    return "\n".join(lines)


def _fmt(pair: tuple[float, float]) -> str:
    mean, se = pair
    return f"{mean:+.2f} ± {se:.2f}" if not np.isnan(se) else f"{mean:+.2f}"


def report(out: pathlib.Path, budget: Go1Budget, markdown: pathlib.Path) -> None:
    """Plots and the generated section from the CSVs in ``out``."""
    rows = s2s.read_rows(out / f"{NAME}.csv")
    if rows:
        s2s.plot(rows, out, prefix=NAME, title=TITLE, delay=False)
    section = markdown_section(rows, read_gap(out / f"{NAME}_gap.csv"), budget)
    text = markdown.read_text() if markdown.is_file() else ""
    if f"<!-- {NAME}:begin" not in text:
        section = f"{HEADING}\n\n{section}"
    s2s.write_markdown(section, markdown, marker=NAME)


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a minutes-long smoke run")
    parser.add_argument(
        "--out", type=pathlib.Path, default=None, help="default: docs/ (--quick: a temp folder)"
    )
    parser.add_argument("--priors", type=pathlib.Path, default=None, help="prior cache folder")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--gradient-steps", type=int, default=None)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--plots-only", action="store_true", help="redraw from the CSV")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    budget = QUICK if args.quick else Go1Budget()
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
    out = args.out or s2s.default_out(args.quick)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / "results.md"
    if args.plots_only:
        report(out, budget, markdown)
        return 0
    priors_dir = args.priors or pathlib.Path("/tmp/sim2online_sim_to_sim_go1") / (
        "quick" if args.quick else "full"
    )
    seeds = list(range(budget.seeds))
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        paths = pool.starmap(pretrain_prior, [(budget, s, priors_dir) for s in seeds])
        priors = dict(zip(seeds, paths, strict=True))
        logger.info("priors ready in %.0f s: %s", time.perf_counter() - started, priors)
        gap = pool.starmap(measure_gap, [(budget, s, str(p)) for s, p in priors.items()])
        with (out / f"{NAME}_gap.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=GAP_FIELDS)
            writer.writeheader()
            writer.writerows(gap)
        logger.info("the prior on narrow and full commands: %s", gap)
        csv_path = out / f"{NAME}.csv"
        done = {(r["run"], int(r["seed"])) for r in s2s.read_rows(csv_path)}
        jobs = [
            s2s.Job(seed, run, run, None, str(prior), budget)
            for seed, prior in priors.items()  # seed-major: every method's seed 0 first
            for run in args.runs
            if (run, seed) not in done
        ]
        logger.info("%d runs to do (%d done before)", len(jobs), len(done))
        s2s.append_runs(
            pool, _run_job, jobs, csv_path, lambda: report(out, budget, markdown), digits=2
        )
    report(out, budget, markdown)
    logger.info("done in %.0f s; results in %s", time.perf_counter() - started, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
