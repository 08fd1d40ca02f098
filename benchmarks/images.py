"""How fast can a CPU make the Panda's 64x64 grayscale camera frames, and how good are they?

Run from the repository root::

    .venv/bin/python -m benchmarks.images [--quick]

Every variant renders the Panda pick scene (``sim2online_envs.sim.panda.build_scene``) from the
D455 camera for a few worlds reset with different seeds, and ends in a (64, 64) uint8 grayscale
frame. The rate counts whole frames: scene update, render, read-back, resize, grayscale. The
error is the mean absolute difference, in gray levels (0-255), from a reference frame rendered
at 256x256 with 4x multisampling and a 4096 px shadow map, area-averaged down to 64x64: what the
scene "really" looks like at this resolution.

Variants:

* the settings of MuJoCo's defaults (4x MSAA, 4096 px shadow map, fine tessellation),
* the Panda simulator's own settings (``PandaSimConfig``: pixel_samples, pixel_shadow_size,
  pixel_tessellation), and neighbours of them: no MSAA, smaller or no shadow maps,
* rendering at 128x128 without MSAA and area-averaging down (supersampling instead of MSAA),
* a fresh ``mujoco.Renderer`` per frame (what to avoid) and one renderer per world (what the
  GL context switches cost against one shared renderer),
* the grayscale conversion alone: OpenCV ``cvtColor`` against a NumPy dot product,
* OSMesa instead of EGL (a subprocess with ``MUJOCO_GL=osmesa``; both are Mesa's llvmpipe
  software rasteriser on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from copy import deepcopy

import cv2
import mujoco
import numpy as np

from benchmarks._timing import Row, markdown_table, measure

logger = logging.getLogger("benchmarks.images")

SIZE = 64
REFERENCE_SIZE = 256
NUM_WORLDS = 8


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to make a frame: offscreen samples, shadow map, tessellation, render size."""

    name: str
    samples: int
    shadow_size: int  # 0: shadows off
    tessellation: tuple[int, int] | None  # (slices, stacks); None: MuJoCo's default
    render_size: int = SIZE


def _variants() -> list[Variant]:
    from sim2online_envs.sim.panda import PandaSimConfig

    cfg = PandaSimConfig()
    sim_tess = tuple(cfg.pixel_tessellation)
    return [
        Variant("MuJoCo defaults (4x MSAA, 4096 px shadows)", 4, 4096, None),
        Variant(
            f"PandaSimConfig ({cfg.pixel_samples}x MSAA, {cfg.pixel_shadow_size} px shadows, "
            f"{sim_tess[0]}x{sim_tess[1]} tessellation)",
            cfg.pixel_samples,
            cfg.pixel_shadow_size,
            sim_tess,
        ),
        Variant("4x MSAA, no shadows", 4, 0, sim_tess),
        Variant("no MSAA, 128 px shadows", 0, 128, sim_tess),
        Variant("no MSAA, no shadows", 0, 0, sim_tess),
        Variant("96x96 no MSAA, 256 px shadows, area to 64", 0, 256, sim_tess, 96),
        Variant("128x128 no MSAA, 128 px shadows, area to 64", 0, 128, sim_tess, 128),
        Variant("128x128 no MSAA, no shadows, area to 64", 0, 0, sim_tess, 128),
    ]


@dataclasses.dataclass
class Result:
    """Frames per second of one way to make frames, its error, and the rate it is compared to."""

    name: str
    rate: float
    error: float | None = None
    base_rate: float | None = None
    cpu_us: float | None = None


def _scene_states(num_worlds: int) -> tuple[mujoco.MjModel, list[mujoco.MjData]]:
    """The nominal Panda scene and ``num_worlds`` reset configurations of it."""
    from sim2online_envs.sim.panda import PandaVectorBackend

    backend = PandaVectorBackend(num_worlds, domain_randomization=False, render_pixels=False)
    rngs = [np.random.default_rng(seed) for seed in range(num_worlds)]
    backend.reset_worlds(np.arange(num_worlds), rngs)
    datas = [backend.batch.get_data(i) for i in range(num_worlds)]
    model = backend.model
    backend.close()
    for data in datas:
        mujoco.mj_kinematics(model, data)
        mujoco.mj_camlight(model, data)
    return model, datas


def _model_for(model: mujoco.MjModel, variant: Variant) -> mujoco.MjModel:
    """A copy of ``model`` with the variant's visual quality settings."""
    copy = deepcopy(model)
    copy.vis.quality.offsamples = variant.samples
    copy.vis.quality.shadowsize = max(variant.shadow_size, 1)
    if variant.tessellation is not None:
        copy.vis.quality.numslices, copy.vis.quality.numstacks = variant.tessellation
    copy.vis.global_.offwidth = max(copy.vis.global_.offwidth, variant.render_size)
    copy.vis.global_.offheight = max(copy.vis.global_.offheight, variant.render_size)
    return copy


class _FrameMaker:
    """Makes (64, 64) uint8 grayscale frames for one variant with one reused renderer."""

    def __init__(self, model: mujoco.MjModel, variant: Variant, camera: int):
        self.variant = variant
        self.model = _model_for(model, variant)
        self.renderer = mujoco.Renderer(self.model, variant.render_size, variant.render_size)
        if variant.shadow_size == 0:
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self.camera = camera
        self.buffer = np.empty((variant.render_size, variant.render_size, 3), np.uint8)

    def frame(self, data: mujoco.MjData) -> np.ndarray:
        self.renderer.update_scene(data, camera=self.camera)
        gray = cv2.cvtColor(self.renderer.render(out=self.buffer), cv2.COLOR_RGB2GRAY)
        if self.variant.render_size != SIZE:
            gray = cv2.resize(gray, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        return gray

    def close(self) -> None:
        self.renderer.close()


def _error(frames: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Mean absolute difference in gray levels."""
    diffs = [
        np.abs(frame.astype(np.int16) - ref.astype(np.int16)).mean()
        for frame, ref in zip(frames, reference, strict=True)
    ]
    return float(np.mean(diffs))


def _cycle(make: Callable[[int], object], count: int) -> Callable[[], None]:
    """A step that makes the frame of the next world, round robin."""
    index = [0]

    def step() -> None:
        index[0] = (index[0] + 1) % count
        make(index[0])

    return step


def study(quick: bool) -> list[Result]:
    """Frames/s and error of every variant, plus renderer-reuse and grayscale costs."""
    seconds, repeats = (0.15, 2) if quick else (0.6, 3)
    model, datas = _scene_states(NUM_WORLDS)
    camera = int(model.camera("d455").id)
    reference_variant = Variant("reference", 4, 4096, None, REFERENCE_SIZE)
    reference_maker = _FrameMaker(model, reference_variant, camera)
    reference = [reference_maker.frame(data).copy() for data in datas]
    reference_maker.close()

    results: list[Result] = []
    base_rate: float | None = None
    variants = _variants()
    for variant in variants:
        maker = _FrameMaker(model, variant, camera)
        frames = [maker.frame(data).copy() for data in datas]
        timing = measure(
            _cycle(lambda i, maker=maker: maker.frame(datas[i]), len(datas)),
            1,
            seconds=seconds,
            repeats=repeats,
        )
        maker.close()
        base_rate = base_rate or timing.rate
        error = _error(frames, reference)
        results.append(Result(variant.name, timing.rate, error, base_rate, timing.cpu_us))

    sim_variant = variants[1]

    def fresh_renderer(world: int) -> None:
        maker = _FrameMaker(model, sim_variant, camera)
        maker.frame(datas[world])
        maker.close()

    timing = measure(
        _cycle(fresh_renderer, len(datas)), 1, seconds=seconds, repeats=1, warmup_calls=1
    )
    results.append(
        Result(
            "PandaSimConfig, a new Renderer per frame", timing.rate, None, base_rate, timing.cpu_us
        )
    )

    makers = [_FrameMaker(model, sim_variant, camera) for _ in datas]
    timing = measure(
        _cycle(lambda i: makers[i].frame(datas[i]), len(datas)),
        1,
        seconds=seconds,
        repeats=repeats,
    )
    for maker in makers:
        maker.close()
    name = f"PandaSimConfig, one Renderer per world ({len(datas)})"
    results.append(Result(name, timing.rate, None, base_rate, timing.cpu_us))

    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    weights = np.array([0.299, 0.587, 0.114])
    for name, convert in (
        ("grayscale alone: cv2.cvtColor", lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)),
        ("grayscale alone: NumPy dot, rint", lambda: np.rint(rgb @ weights).astype(np.uint8)),
    ):
        timing = measure(convert, 1, seconds=0.05, repeats=repeats)
        results.append(Result(name, timing.rate, cpu_us=timing.cpu_us))
    return results


def _osmesa_results(quick: bool) -> list[Result]:
    """The variants measured again in a subprocess that renders through OSMesa."""
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    command = [sys.executable, "-m", "benchmarks.images", "--json"] + (["--quick"] if quick else [])
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, check=True
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        logger.warning("the OSMesa run failed: %s", getattr(error, "stderr", error))
        return []
    return [Result(**item) for item in json.loads(done.stdout.strip().splitlines()[-1])]


def run_study(quick: bool = False, with_osmesa: bool = True) -> list[Row]:
    """The study as table rows: every variant through EGL, then the variants through OSMesa."""
    rows = [_row(f"Panda camera ({os.environ.get('MUJOCO_GL')})", r) for r in study(quick)]
    if with_osmesa and os.environ.get("MUJOCO_GL") != "osmesa":
        rows += [
            _row("Panda camera (osmesa)", r) for r in _osmesa_results(quick)[: len(_variants())]
        ]
    return rows


def _row(section: str, result: Result) -> Row:
    return Row(
        section,
        result.name,
        "-",
        result.rate,
        unit="frames/s",
        ratio="" if result.base_rate is None else f"{result.rate / result.base_rate:.1f}x defaults",
        target="" if result.error is None else f"error {result.error:.2f} gray levels",
        cpu_us=result.cpu_us,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.json:
        print(json.dumps([dataclasses.asdict(result) for result in study(args.quick)]))
        return 0
    print(markdown_table(run_study(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
