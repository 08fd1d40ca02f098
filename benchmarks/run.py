"""Simulation throughput of sim2online-envs, in one table with ratios.

Run from the repository root::

    .venv/bin/python -m benchmarks.run            # the full run (a few minutes)
    .venv/bin/python -m benchmarks.run --quick    # under a minute, noisier
    .venv/bin/python -m benchmarks.run --only go1 racecar --out docs/bench.md

What it measures, in world-steps (control periods of one world) per second:

* Go1 raw physics: ``mujoco.mj_step`` on one ``MjData`` (``nstep`` = the env's substeps), and
  ``mujoco.batch.Batch.step`` (same substeps) at 1 … 1024 worlds on all cores;
* the single env (``gym.make``), ``make_vec`` at 1 … 1024 worlds, and SB3's ``DummyVecEnv`` and
  ``SubprocVecEnv`` over a few single envs, for the Go1, the race car and the Panda;
* the race car's simulator alone (``apply`` of one command to every world), compiled and its
  NumPy reference;
* the Panda camera: 64x64 grayscale frames per second (see ``benchmarks/images.py``).

Every env is driven by the same pre-drawn random actions (scaled down for the Go1 so that it
mostly stands); finished worlds are reset as in training. Each rate is the best of a few timed
blocks (other processes on a shared machine only ever slow a block down).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import sim2online_envs  # noqa: F401  (sets MUJOCO_GL before mujoco loads; registers the ids)
from benchmarks._timing import (
    Measurement,
    Row,
    markdown_table,
    measure,
    measure_interleaved,
    median_ratio,
)

logger = logging.getLogger("benchmarks")

GO1_WORLDS = (1, 16, 64, 256, 1024)
RACECAR_WORLDS = (1, 16, 64, 256, 1024, 4096, 16384)
QUICK_RACECAR_WORLDS = (1, 64, 256, 1024, 4096)
PANDA_WORLDS = (1, 4, 16, 64)
#: Worlds of SB3's DummyVecEnv / SubprocVecEnv over single envs ("a few": the machine has 2
#: cores). The make_vec ratio is taken against the fastest SubprocVecEnv.
SB3_WORLDS = (2, 4)
#: Go1 actions are this fraction of the action range, so that the robot mostly stands and the
#: physics stays representative (a fallen robot has fewer, cheaper contacts).
GO1_ACTION_SCALE = 0.2


@dataclasses.dataclass
class Settings:
    """How long to time each configuration."""

    seconds: float
    repeats: int
    quick: bool


def _actions(num_envs: int, action_dim: int, scale: float, seed: int = 0) -> list[np.ndarray]:
    """A small pool of (num_envs, action_dim) float32 actions, cycled through by the steps."""
    rng = np.random.default_rng(seed)
    return [
        (scale * rng.uniform(-1.0, 1.0, (num_envs, action_dim))).astype(np.float32)
        for _ in range(8)
    ]


def _cycle(pool: list[np.ndarray]) -> Callable[[], np.ndarray]:
    index = [0]

    def next_action() -> np.ndarray:
        index[0] = (index[0] + 1) % len(pool)
        return pool[index[0]]

    return next_action


def _single_env_stepper(
    env_id: str, scale: float, skip_physics: bool = False
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A step of one ``gym.make`` env with random actions (reset when an episode ends), and
    the env's ``close``.

    ``skip_physics``: the MuJoCo batch's ``step`` does nothing, so that the step costs only the
    env's own work (task, state reads, Python) on a state that stays put; with warm caches,
    unlike the real step where the physics has just evicted them.
    """
    import gymnasium as gym

    env = gym.make(env_id)
    env.reset(seed=0)
    if skip_physics:
        env.unwrapped.backend.batch.step = lambda *args, **kwargs: None
    next_action = _cycle([a[0] for a in _actions(1, env.action_space.shape[0], scale)])

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(next_action())
        if terminated or truncated:
            env.reset()

    return step, env.close


def _single_env(
    env_id: str, settings: Settings, scale: float, skip_physics: bool = False
) -> Measurement:
    """The rate of :func:`_single_env_stepper`'s step."""
    step, close = _single_env_stepper(env_id, scale, skip_physics)
    try:
        return measure(step, 1, seconds=settings.seconds, repeats=settings.repeats)
    finally:
        close()


def _vec(venv: Any, settings: Settings, scale: float) -> Measurement:
    """A VecEnv stepped with random actions (it resets finished worlds itself); closes it."""
    venv.seed(0)
    venv.reset()
    next_action = _cycle(_actions(venv.num_envs, venv.action_space.shape[0], scale))
    try:
        return measure(
            lambda: venv.step(next_action()),
            venv.num_envs,
            seconds=settings.seconds,
            repeats=settings.repeats,
        )
    finally:
        venv.close()


def _make_vec(
    env_id: str, num_envs: int, settings: Settings, scale: float, **kwargs: Any
) -> Measurement:
    from sim2online_envs.vec import make_vec

    return _vec(make_vec(env_id, num_envs, seed=0, **kwargs), settings, scale)


def _sb3_rows(section: str, env_id: str, settings: Settings, scale: float) -> list[Row]:
    """SB3's DummyVecEnv and SubprocVecEnv over SB3_WORLDS single envs (``gym.make``)."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    def make() -> gym.Env:
        return gym.make(env_id)

    rows = []
    for cls in (DummyVecEnv, SubprocVecEnv):
        for num in SB3_WORLDS:
            result = _vec(cls([make] * num), settings, scale)
            cpu = None if cls is SubprocVecEnv else result.cpu_us
            rows.append(
                Row(section, f"SB3 {cls.__name__} of single envs", num, result.rate, cpu_us=cpu)
            )
    return rows


@dataclasses.dataclass
class PhysicsShare:
    """A make_vec's rate and the share of its step time spent in its own ``Batch.step``."""

    rate: float
    cpu_us: float
    share: float


class _TimedBatch:
    """A ``mujoco.batch.Batch`` whose ``step`` adds its wall time to ``seconds``."""

    def __init__(self, batch: Any) -> None:
        self._batch = batch
        self.seconds = 0.0

    def step(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._batch.step(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)


def _go1_physics_share(num_envs: int, settings: Settings, **kwargs: Any) -> PhysicsShare:
    """make_vec against the physics it runs itself: its domain-randomised worlds in their own
    states (falls, contacts, resets included), where the plain Batch.step rows step identical
    worlds standing at home."""
    from sim2online_envs.vec import make_vec

    venv = make_vec("SimGo1-v0", num_envs, seed=0, **kwargs)
    backend = venv.loop.backend
    timed = _TimedBatch(backend.batch)
    backend.batch = timed
    venv.reset()
    next_action = _cycle(_actions(num_envs, venv.action_space.shape[0], GO1_ACTION_SCALE))
    try:
        for _ in range(2):
            venv.step(next_action())
        best: PhysicsShare | None = None
        calls = max(3, math.ceil(settings.seconds / 0.15))
        for _ in range(settings.repeats):
            timed.seconds = 0.0
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                venv.step(next_action())
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            block = PhysicsShare(
                num_envs * calls / wall, 1e6 * cpu / (num_envs * calls), timed.seconds / wall
            )
            if best is None or block.rate > best.rate:
                best = block
        assert best is not None
        return best
    finally:
        backend.batch = timed._batch
        venv.close()


def _batch_stepper(
    batch: Any, ctrl: np.ndarray, next_ctrl: Callable[[], np.ndarray], n_substeps: int
) -> Callable[[], None]:
    """One control period of raw ``Batch.step``: write the controls, step the substeps."""

    def step() -> None:
        ctrl[:] = next_ctrl()
        batch.step(nstep=n_substeps)

    return step


def _percent(value: float) -> str:
    return f"{100.0 * value:.0f} %"


def _signed_percent(value: float) -> str:
    return f"{100.0 * value:+.0f} %"


# -- Go1 -------------------------------------------------------------------------------------------


def bench_go1(settings: Settings, worlds: Sequence[int]) -> list[Row]:
    """Raw MuJoCo physics of the Go1 against the single env, make_vec and SB3's vec envs."""
    import mujoco
    import mujoco.batch

    from sim2online_envs.sim.go1 import Go1VectorBackend, load_model
    from sim2online_envs.tasks.go1 import HOME_JOINT_POS, Go1TaskConfig

    section = "Go1"
    model = load_model()
    n_substeps = Go1VectorBackend(1, control_dt=Go1TaskConfig().control_dt).n_substeps
    action_scale = Go1TaskConfig().action_scale
    home_key = model.key("home").id
    rows: list[Row] = []

    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, home_key)
    next_ctrl = _cycle(
        [HOME_JOINT_POS + action_scale * a[0] for a in _actions(1, 12, GO1_ACTION_SCALE)]
    )

    def mj_step() -> None:
        data.ctrl[:] = next_ctrl()
        mujoco.mj_step(model, data, nstep=n_substeps)

    raw = measure(mj_step, 1, seconds=settings.seconds, repeats=settings.repeats)
    rows.append(
        Row(section, f"mj_step (nstep={n_substeps}), one MjData", 1, raw.rate, cpu_us=raw.cpu_us)
    )

    batch_rates = {}
    for num in worlds:
        batch = mujoco.batch.Batch(model, num, 1 if num == 1 else 0)
        batch.reset(keyframe=home_key)
        ctrl = batch.bind("ctrl")
        pool = [HOME_JOINT_POS + action_scale * a for a in _actions(num, 12, GO1_ACTION_SCALE)]
        result = measure(
            _batch_stepper(batch, ctrl, _cycle(pool), n_substeps),
            num,
            seconds=settings.seconds,
            repeats=settings.repeats,
        )
        batch_rates[num] = result.rate
        rows.append(
            Row(
                section,
                f"Batch.step (nstep={n_substeps}, {batch.nthread} threads)",
                num,
                result.rate,
                ratio=f"{result.rate / raw.rate:.2f}x mj_step",
                cpu_us=result.cpu_us,
            )
        )

    # the overhead's two sides measured in turn, so that both see the same load
    single_step, close_single = _single_env_stepper("SimGo1-v0", GO1_ACTION_SCALE)
    try:
        paired = measure_interleaved(
            {"mj_step": mj_step, "single": single_step},
            1,
            seconds=settings.seconds,
            repeats=2 * settings.repeats + 1,
        )
    finally:
        close_single()
    single, paired_raw = paired["single"], paired["mj_step"]
    overhead = median_ratio(single, paired_raw) - 1.0
    rows.append(
        Row(
            section,
            "single env (gym.make)",
            1,
            single.rate,
            ratio=f"overhead {_signed_percent(overhead)} over mj_step (median of paired blocks)",
            target="≤ +25 %",
            cpu_us=single.cpu_us,
        )
    )
    rows.append(
        Row(
            section,
            "mj_step, timed in turn with the single env (the overhead's base)",
            1,
            paired_raw.rate,
            ratio=f"best blocks: {_signed_percent(single.cpu_us / paired_raw.cpu_us - 1.0)}",
            cpu_us=paired_raw.cpu_us,
        )
    )
    no_physics = _single_env("SimGo1-v0", settings, GO1_ACTION_SCALE, skip_physics=True)
    rows.append(
        Row(
            section,
            "single env, physics skipped (env's own work, warm caches)",
            1,
            no_physics.rate,
            ratio=f"{_percent(no_physics.cpu_us / paired_raw.cpu_us)} of mj_step (CPU)",
            cpu_us=no_physics.cpu_us,
        )
    )
    largest = max(worlds)
    vec_rates = {}
    for num in worlds:
        result = _make_vec("SimGo1-v0", num, settings, GO1_ACTION_SCALE)
        vec_rates[num] = result.rate
        rows.append(
            Row(
                section,
                "make_vec",
                num,
                result.rate,
                ratio=f"{_percent(result.rate / batch_rates[num])} of Batch.step",
                target="≥ 85 %" if num == largest else "",
                cpu_us=result.cpu_us,
            )
        )
    lean = _make_vec("SimGo1-v0", largest, settings, GO1_ACTION_SCALE, full_infos=False)
    rows.append(
        Row(
            section,
            "make_vec (full_infos=False)",
            largest,
            lean.rate,
            ratio=f"{_percent(lean.rate / batch_rates[largest])} of Batch.step",
            cpu_us=lean.cpu_us,
        )
    )
    for full_infos in (True, False):
        share = _go1_physics_share(largest, settings, full_infos=full_infos)
        rows.append(
            Row(
                section,
                f"make_vec (full_infos={full_infos}): its own Batch.step's share of the step",
                largest,
                share.rate,
                ratio=f"{_percent(share.share)} in Batch.step",
                target="≥ 85 %" if full_infos else "",
                cpu_us=share.cpu_us,
            )
        )
    sb3 = _sb3_rows(section, "SimGo1-v0", settings, GO1_ACTION_SCALE)
    rows += sb3
    subproc = max((row for row in sb3 if "Subproc" in row.name), key=lambda row: row.rate)
    rows.append(
        Row(
            section,
            f"make_vec({largest}) against the fastest SubprocVecEnv ({subproc.worlds})",
            largest,
            vec_rates[largest],
            ratio=f"{vec_rates[largest] / subproc.rate:.1f}x SubprocVecEnv",
            target="≥ 10x",
        )
    )
    return rows


# -- race car ------------------------------------------------------------------------------------


def bench_racecar(settings: Settings, worlds: Sequence[int]) -> list[Row]:
    """The race car: its simulator alone (compiled and the NumPy reference), make_vec (full and
    lean infos), SB3 vec envs."""
    from sim2online_envs.vec import make_vec

    section = "race car"
    rows: list[Row] = []
    sim_rates = {}
    for num in worlds:
        rates = {}
        # The compiled substeps (what the envs run), then the NumPy reference on the same worlds.
        for use_kernels in (True, False):
            venv = make_vec("SimRaceCar-v0", num, seed=0)
            venv.reset()
            action = _actions(num, venv.action_space.shape[0], 1.0)[0].astype(np.float64)
            command = venv.task.command(action, venv.state, venv.task_state)
            backend = venv.vector_backend
            backend.use_kernels = use_kernels
            result = measure(
                lambda backend=backend, command=command: backend.apply(command),
                num,
                seconds=settings.seconds,
                repeats=settings.repeats,
            )
            venv.close()
            rates[use_kernels] = result.rate
            label = "" if use_kernels else ", NumPy reference (use_kernels=False)"
            ratio = "" if use_kernels else f"{rates[True] / result.rate:.1f}x slower"
            rows.append(
                Row(
                    section,
                    f"simulator alone (VectorBackend.apply){label}",
                    num,
                    result.rate,
                    ratio=ratio,
                    cpu_us=result.cpu_us,
                )
            )
        sim_rates[num] = rates[True]
    single = _single_env("SimRaceCar-v0", settings, 1.0)
    rows.append(Row(section, "single env (gym.make)", 1, single.rate, cpu_us=single.cpu_us))
    for full_infos in (True, False):
        for num in worlds:
            result = _make_vec("SimRaceCar-v0", num, settings, 1.0, full_infos=full_infos)
            rows.append(
                Row(
                    section,
                    f"make_vec (full_infos={full_infos})",
                    num,
                    result.rate,
                    ratio=f"{_percent(result.rate / sim_rates[num])} of simulator",
                    target="> 1,000,000" if num >= 1024 else "",
                    cpu_us=result.cpu_us,
                )
            )
    rows += _sb3_rows(section, "SimRaceCar-v0", settings, 1.0)
    return rows


# -- Panda ---------------------------------------------------------------------------------------


def bench_panda(settings: Settings, worlds: Sequence[int]) -> list[Row]:
    """The Panda with 64x64 grayscale camera images in every observation."""
    section = "Panda"
    single = _single_env("SimPanda-v0", settings, 1.0)
    rows = [Row(section, "single env (gym.make)", 1, single.rate, cpu_us=single.cpu_us)]
    for num in worlds:
        result = _make_vec("SimPanda-v0", num, settings, 1.0)
        rows.append(
            Row(
                section,
                "make_vec",
                num,
                result.rate,
                ratio=f"{result.rate / single.rate:.2f}x single env",
                cpu_us=result.cpu_us,
            )
        )
    rows += _sb3_rows(section, "SimPanda-v0", settings, 1.0)
    return rows


def bench_images(settings: Settings) -> list[Row]:
    from benchmarks.images import run_study

    return run_study(quick=settings.quick, with_osmesa=not settings.quick)


# -- main ----------------------------------------------------------------------------------------


def machine_summary() -> str:
    """What the numbers were measured on."""
    import mujoco
    import stable_baselines3

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} logical CPUs, "
        f"Python {platform.python_version()}, MuJoCo {mujoco.__version__}, NumPy {np.__version__}, "
        f"SB3 {stable_baselines3.__version__}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}"
    )


SECTIONS = ("go1", "racecar", "panda", "images")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (under a minute)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    quick = args.quick
    settings = (
        Settings(seconds=0.1, repeats=2, quick=True)
        if quick
        else Settings(seconds=1.0, repeats=3, quick=False)
    )
    # SubprocVecEnv workers fork from a server that has the package and SB3 imported already,
    # so that starting them costs a fork rather than a fresh interpreter importing torch.
    multiprocessing.set_forkserver_preload(["sim2online_envs", "stable_baselines3"])
    racecar_worlds = QUICK_RACECAR_WORLDS if quick else RACECAR_WORLDS
    panda_worlds = PANDA_WORLDS[:2] if quick else PANDA_WORLDS
    benches: dict[str, Callable[[], list[Row]]] = {
        "go1": lambda: bench_go1(settings, GO1_WORLDS),
        "racecar": lambda: bench_racecar(settings, racecar_worlds),
        "panda": lambda: bench_panda(settings, panda_worlds),
        "images": lambda: bench_images(settings),
    }
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    for name in args.only:
        logger.info("benchmarking %s ...", name)
        section_start = time.perf_counter()
        rows += benches[name]()
        logger.info("  %s took %.0f s", name, time.perf_counter() - section_start)
    mode = "--quick" if args.quick else "full"
    text = (
        f"Measured {machine_summary()} ({mode} run, {time.perf_counter() - started:.0f} s; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
        f"on {os.cpu_count()} CPUs).\n\n" + markdown_table(rows)
    )
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
