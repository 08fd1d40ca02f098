"""How fast can a CPU or a GPU make the Panda's 64x64 gray camera frames, and how good are they?

Run from the repository root::

    .venv/bin/python -m benchmarks.images [--quick]

The header names the OpenGL vendor and renderer that drew the frames (Mesa's llvmpipe on a
machine without a GPU; the NVIDIA driver with ``MUJOCO_GL=egl`` on a GPU machine), so that every
table says where it was measured. The script runs unchanged on both.

Every variant renders the Panda pick scene (``sim2online_envs.sim.panda.build_scene``) from the
D455 camera for a few worlds reset with different seeds, and ends in a (64, 64) uint8 grayscale
frame. The rate counts whole frames: scene update, render, read-back, resize, grayscale. The
error is the mean absolute difference, in gray levels (0-255), from a reference frame rendered
at 256x256 with 4x multisampling, a 4096 px shadow map and MuJoCo's default (fine) tessellation,
area-averaged down to 64x64: what the scene "really" looks like at this resolution.

Variants:

* the settings of MuJoCo's defaults (4x MSAA, 4096 px shadow map, fine tessellation),
* the Panda simulator's own settings (``PandaSimConfig``: pixel_samples, pixel_shadow_size,
  pixel_tessellation, pixel_supersample), the settings it used before (64x64 with 4x MSAA and a
  256 px shadow map), and neighbours: no MSAA, smaller or no shadow maps, supersampling (render
  at 96 or 128 px without MSAA and area-average down), coarser and finer tessellation, coarser
  box faces (``numquads``), the static backdrop (floor, wall) left out of the shadow map, and
  the reflection/skybox/haze passes off,
* a fresh ``mujoco.Renderer`` per frame (what to avoid) and one renderer per world (what the
  GL context switches cost against one shared renderer),
* tiled rendering: K worlds drawn into one offscreen buffer, one viewport each, read back with
  one ``mjr_readPixels``; each tile is compared with the one-frame render of its world,
* the grayscale conversion alone: OpenCV ``cvtColor`` against a NumPy dot product,
* on llvmpipe, the variants again in a subprocess with llvmpipe's own default of one
  rasteriser thread per CPU (``LP_NUM_THREADS`` = the CPU count), against the package's
  default ``LP_NUM_THREADS=0`` (set when ``sim2online_envs`` is imported, unless the user set
  it: llvmpipe then rasterises on the calling thread instead of handing 64 px tiles to worker
  threads),
* OSMesa instead of EGL (a subprocess with ``MUJOCO_GL=osmesa``; both are Mesa's llvmpipe
  software rasteriser on a machine without a GPU).

Where the time goes on llvmpipe: MuJoCo's renderer draws the scene's geoms (24 in the D455
view: floor, wall, table, the arm's capsules, the hand's boxes, the object) with fixed-function
OpenGL, lit per vertex by three lights: the headlight and the model's "fill" light, which cast
no shadows, and its "key" light, the only one that casts a shadow, with or without domain
randomisation (which moves the lights and scales their intensity, never their shadows). With
shadows on, every geom is drawn three times: the pass with the lights that cast none, the depth
pass into the key light's shadow map, and an additive pass with the key light and the shadow
comparison. llvmpipe transforms and lights vertices on the calling thread, so the cost follows
the vertex count times the passes more than the pixels: with an 8 px map the shadows still cost
more than half of what they cost with a 256 px one, 24x12 tessellation doubles the frame's cost
against 12x6, and box faces cut into 2x2 quads instead of 4x4 save little and change the
lighting (per vertex) by 8 gray levels. Leaving the floor and wall out of the shadow map, or
switching off the reflection, skybox and haze passes (the scene has no reflective, skybox or
infinite-plane geoms, so they draw nothing), changes nothing that the noise lets one see.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
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
#: World counts of the tiled-rendering rows.
TILED_WORLDS = (8, 64)
#: MuJoCo's own visual quality settings (a model that sets none).
_MUJOCO_QUALITY = mujoco.MjModel.from_xml_string("<mujoco/>").vis.quality
MUJOCO_TESSELLATION = (int(_MUJOCO_QUALITY.numslices), int(_MUJOCO_QUALITY.numstacks))
#: Geoms of the static backdrop, which a variant may leave out of the shadow map.
BACKDROP_GEOMS = ("floor", "wall")
_NO_REFLECTION_SKYBOX_HAZE = (
    int(mujoco.mjtRndFlag.mjRND_REFLECTION),
    int(mujoco.mjtRndFlag.mjRND_SKYBOX),
    int(mujoco.mjtRndFlag.mjRND_HAZE),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to make a frame: offscreen samples, shadow map, tessellation, render size, ..."""

    name: str
    samples: int
    shadow_size: int  # 0: shadows off
    tessellation: tuple[int, int]  # (slices, stacks) of capsules, cylinders and spheres
    render_size: int = SIZE
    numquads: int | None = None  # quads per box-face side; None: MuJoCo's default (4)
    backdrop_shadows: bool = True  # False: the floor and wall cast no shadow
    flags_off: tuple[int, ...] = ()  # mjtRndFlag entries switched off


@dataclasses.dataclass(frozen=True)
class GLInfo:
    """The OpenGL implementation that MuJoCo's offscreen contexts render with."""

    vendor: str
    renderer: str
    version: str

    def __str__(self) -> str:
        return f"{self.vendor} / {self.renderer} / OpenGL {self.version}"


@functools.lru_cache(maxsize=1)
def gl_info() -> GLInfo:
    """Vendor, renderer and version strings of a context made the way ``mujoco.Renderer`` does.

    Read through PyOpenGL, which MuJoCo's Python package already depends on for its EGL and
    OSMesa contexts; "unknown" where no context can be made or the strings cannot be read.
    """
    unknown = GLInfo("unknown", "unknown", "unknown")
    gl_context = getattr(mujoco, "GLContext", None)
    if gl_context is None:
        return unknown
    try:
        context = gl_context(16, 16)
    except Exception as error:  # any platform's failure: the header then says "unknown"
        logger.warning("no OpenGL context for the header: %s", error)
        return unknown
    try:
        context.make_current()
        from OpenGL import GL

        values = [GL.glGetString(name) for name in (GL.GL_VENDOR, GL.GL_RENDERER, GL.GL_VERSION)]
    except Exception as error:  # PyOpenGL missing or its platform not matching the context
        logger.warning("could not read the OpenGL strings: %s", error)
        return unknown
    finally:
        context.free()
    return GLInfo(*(value.decode() if value else "unknown" for value in values))


def _variants() -> list[Variant]:
    from sim2online_envs.sim.panda import PandaSimConfig

    cfg = PandaSimConfig()
    tess = (int(cfg.pixel_tessellation[0]), int(cfg.pixel_tessellation[1]))
    sim = Variant(
        f"PandaSimConfig ({_describe(cfg.pixel_samples, cfg.pixel_shadow_size, tess)}, "
        f"rendered at {SIZE * cfg.pixel_supersample} px"
        + (", area to 64)" if cfg.pixel_supersample > 1 else ")"),
        cfg.pixel_samples,
        cfg.pixel_shadow_size,
        tess,
        SIZE * cfg.pixel_supersample,
    )
    neighbours = [
        Variant("before: 64x64, 4x MSAA, 256 px shadows, 12x6 tessellation", 4, 256, (12, 6)),
        Variant("4x MSAA, 8 px shadows (the shadow passes, hardly any map)", 4, 8, tess),
        Variant("4x MSAA, no shadows", 4, 0, tess),
        Variant("no MSAA, 128 px shadows", 0, 128, tess),
        Variant("no MSAA, no shadows", 0, 0, tess),
        Variant("96x96 no MSAA, 256 px shadows, area to 64", 0, 256, tess, 96),
        Variant("128x128 no MSAA, 128 px shadows, area to 64", 0, 128, tess, 128),
        Variant("128x128 no MSAA, 256 px shadows, area to 64", 0, 256, tess, 128),
        Variant("128x128 no MSAA, no shadows, area to 64", 0, 0, tess, 128),
    ]
    variants = [
        Variant(
            f"MuJoCo defaults (4x MSAA, 4096 px shadows, {_tess(MUJOCO_TESSELLATION)})",
            4,
            4096,
            MUJOCO_TESSELLATION,
        ),
        sim,
    ]
    settings = {_settings(sim)}
    for variant in neighbours:
        if _settings(variant) not in settings:
            settings.add(_settings(variant))
            variants.append(variant)
    variants += [
        dataclasses.replace(sim, name="PandaSimConfig, 8x4 tessellation", tessellation=(8, 4)),
        dataclasses.replace(sim, name="PandaSimConfig, 24x12 tessellation", tessellation=(24, 12)),
        dataclasses.replace(sim, name="PandaSimConfig, box faces of 2x2 quads", numquads=2),
        dataclasses.replace(
            sim, name="PandaSimConfig, floor and wall cast no shadow", backdrop_shadows=False
        ),
        dataclasses.replace(
            sim,
            name="PandaSimConfig, reflection, skybox and haze passes off",
            flags_off=_NO_REFLECTION_SKYBOX_HAZE,
        ),
    ]
    return variants


def _tess(tessellation: tuple[int, int]) -> str:
    return f"{tessellation[0]}x{tessellation[1]} tessellation"


def _describe(samples: int, shadow_size: int, tessellation: tuple[int, int]) -> str:
    msaa = f"{samples}x MSAA" if samples else "no MSAA"
    shadows = f"{shadow_size} px shadows" if shadow_size else "no shadows"
    return f"{msaa}, {shadows}, {_tess(tessellation)}"


def _settings(variant: Variant) -> tuple:
    return dataclasses.astuple(dataclasses.replace(variant, name=""))


@dataclasses.dataclass
class Result:
    """Frames per second of one way to make frames, its error, and the rate it is compared to."""

    name: str
    rate: float
    error: float | None = None
    base_rate: float | None = None
    cpu_us: float | None = None
    note: str = ""


def _scene_states(num_worlds: int) -> tuple[mujoco.MjModel, list[mujoco.MjData]]:
    """The nominal Panda scene and ``num_worlds`` reset configurations of it (seeds 0, 1, ...)."""
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


def _model_for(model: mujoco.MjModel, variant: Variant, width: int, height: int) -> mujoco.MjModel:
    """A copy of ``model`` with the variant's visual quality settings and a large enough buffer."""
    copy = deepcopy(model)
    quality = copy.vis.quality
    quality.offsamples = variant.samples
    quality.shadowsize = max(variant.shadow_size, 1)
    quality.numslices, quality.numstacks = variant.tessellation
    quality.numquads = _MUJOCO_QUALITY.numquads if variant.numquads is None else variant.numquads
    copy.vis.global_.offwidth = max(copy.vis.global_.offwidth, width)
    copy.vis.global_.offheight = max(copy.vis.global_.offheight, height)
    return copy


class _SceneEdits:
    """What a variant changes in an updated ``MjvScene`` before it is rendered."""

    def __init__(self, model: mujoco.MjModel, variant: Variant):
        self.shadows = variant.shadow_size > 0
        self.flags_off = variant.flags_off
        self.no_cast = (
            set()
            if variant.backdrop_shadows
            else {int(model.geom(name).id) for name in BACKDROP_GEOMS}
        )
        self._indices: list[int] | None = None

    def apply(self, scene: mujoco.MjvScene) -> None:
        if not self.shadows:
            scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        for flag in self.flags_off:
            scene.flags[flag] = False
        if self.no_cast:
            if self._indices is None:  # static geoms keep their place in the scene
                self._indices = [
                    i
                    for i in range(scene.ngeom)
                    if scene.geoms[i].objtype == mujoco.mjtObj.mjOBJ_GEOM
                    and scene.geoms[i].objid in self.no_cast
                ]
            for i in self._indices:
                # mjr_render leaves decor geoms out of the shadow map and draws them otherwise.
                scene.geoms[i].category = mujoco.mjtCatBit.mjCAT_DECOR


def _gray(rgb: np.ndarray, render_size: int) -> np.ndarray:
    """Grayscale, area-averaged down by render_size / SIZE (rows and columns alike)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if render_size != SIZE:
        shape = (gray.shape[1] * SIZE // render_size, gray.shape[0] * SIZE // render_size)
        gray = cv2.resize(gray, shape, interpolation=cv2.INTER_AREA)
    return gray


class _FrameMaker:
    """Makes (64, 64) uint8 grayscale frames for one variant with one reused renderer."""

    def __init__(self, model: mujoco.MjModel, variant: Variant, camera: int):
        size = variant.render_size
        self.variant = variant
        self.model = _model_for(model, variant, size, size)
        self.renderer = mujoco.Renderer(self.model, size, size)
        self.edits = _SceneEdits(self.model, variant)
        self.camera = camera
        self.buffer = np.empty((size, size, 3), np.uint8)

    def frame(self, data: mujoco.MjData) -> np.ndarray:
        self.renderer.update_scene(data, camera=self.camera)
        self.edits.apply(self.renderer.scene)
        return _gray(self.renderer.render(out=self.buffer), self.variant.render_size)

    def close(self) -> None:
        self.renderer.close()


class _TiledFrameMaker:
    """Renders K worlds into one offscreen buffer, one viewport (tile) each, one read-back.

    The low-level path: ``mjv_updateScene`` per world into one ``MjvScene``, ``mjr_render``
    with the world's tile as viewport into one ``MjrContext`` sized for all tiles, then one
    ``mjr_readPixels``, grayscale and area resize of the whole buffer, split into tiles (an
    integer area factor keeps each tile's pixels inside its tile).
    """

    def __init__(self, model: mujoco.MjModel, variant: Variant, camera: int, count: int):
        size = variant.render_size
        self.variant = variant
        self.count = count
        self.cols = math.ceil(math.sqrt(count))
        self.rows = math.ceil(count / self.cols)
        width, height = self.cols * size, self.rows * size
        self.model = _model_for(model, variant, width, height)
        self.context = mujoco.GLContext(width, height)
        self.context.make_current()
        self.mjr_context = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.mjr_context)
        self.scene = mujoco.MjvScene(self.model, maxgeom=1000)
        self.option = mujoco.MjvOption()
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.camera.fixedcamid = camera
        self.edits = _SceneEdits(self.model, variant)
        self.tiles = [
            mujoco.MjrRect((k % self.cols) * size, (k // self.cols) * size, size, size)
            for k in range(count)
        ]
        self.whole = mujoco.MjrRect(0, 0, width, height)
        self.buffer = np.empty((height, width, 3), np.uint8)

    @property
    def buffer_size(self) -> str:
        return f"{self.buffer.shape[1]}x{self.buffer.shape[0]}"

    def frames(self, datas: Sequence[mujoco.MjData]) -> list[np.ndarray]:
        """The (64, 64) gray frames of ``datas`` (at most ``count``), world k in tile k."""
        self.context.make_current()
        for data, tile in zip(datas, self.tiles, strict=False):
            mujoco.mjv_updateScene(
                self.model,
                data,
                self.option,
                None,
                self.camera,
                mujoco.mjtCatBit.mjCAT_ALL,
                self.scene,
            )
            self.edits.apply(self.scene)
            mujoco.mjr_render(tile, self.scene, self.mjr_context)
        mujoco.mjr_readPixels(self.buffer, None, self.whole, self.mjr_context)
        gray = _gray(self.buffer, self.variant.render_size)
        # OpenGL rows run bottom-up: tile k sits at row block k // cols, upside down.
        return [
            gray[(k // self.cols) * SIZE : (k // self.cols + 1) * SIZE][::-1][
                :, (k % self.cols) * SIZE : (k % self.cols + 1) * SIZE
            ]
            for k in range(len(datas))
        ]

    def close(self) -> None:
        self.context.make_current()
        self.mjr_context.free()
        self.context.free()


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


def study(quick: bool, variants_only: bool = False) -> list[Result]:
    """Frames/s and error of every variant; then renderer reuse, tiling and grayscale costs."""
    seconds, repeats = (0.15, 2) if quick else (0.6, 3)
    model, all_datas = _scene_states(max(NUM_WORLDS, *TILED_WORLDS))
    datas = all_datas[:NUM_WORLDS]
    camera = int(model.camera("d455").id)
    reference_variant = Variant("reference", 4, 4096, MUJOCO_TESSELLATION, REFERENCE_SIZE)
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
    if variants_only:
        return results

    sim_variant, before_variant = variants[1], variants[2]
    fine_boxes = dataclasses.replace(reference_variant, numquads=16)
    maker = _FrameMaker(model, fine_boxes, camera)
    frames = [maker.frame(data).copy() for data in datas]
    timing = measure(
        _cycle(lambda i: maker.frame(datas[i]), len(datas)), 1, seconds=seconds, repeats=1
    )
    maker.close()
    results.append(
        Result(
            "the reference with box faces of 16x16 quads instead of 4x4",
            timing.rate,
            _error(frames, reference),
            base_rate,
            timing.cpu_us,
            note="faces are lit per vertex (fixed-function OpenGL), so finer box faces change "
            "the light falloff on the table and wall; every other row keeps MuJoCo's 4x4",
        )
    )

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

    for label, variant, count in [
        ("PandaSimConfig", sim_variant, TILED_WORLDS[0]),
        ("PandaSimConfig", sim_variant, TILED_WORLDS[-1]),
        ("before (64x64, 4x MSAA)", before_variant, TILED_WORLDS[-1]),
    ]:
        results.append(
            _tiled_result(label, model, all_datas[:count], variant, camera, reference, seconds)
        )
        results[-1].base_rate = base_rate

    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    weights = np.array([0.299, 0.587, 0.114])
    for name, convert in (
        ("grayscale alone: cv2.cvtColor", lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)),
        ("grayscale alone: NumPy dot, rint", lambda: np.rint(rgb @ weights).astype(np.uint8)),
    ):
        timing = measure(convert, 1, seconds=0.05, repeats=repeats)
        results.append(Result(name, timing.rate, cpu_us=timing.cpu_us))
    return results


def _tiled_result(
    label: str,
    model: mujoco.MjModel,
    datas: Sequence[mujoco.MjData],
    variant: Variant,
    camera: int,
    reference: Sequence[np.ndarray],
    seconds: float,
) -> Result:
    """Frames/s of tiled rendering, its error, and how far tiles are from one-frame renders."""
    single = _FrameMaker(model, variant, camera)
    singles = [single.frame(data).copy() for data in datas]
    single.close()
    maker = _TiledFrameMaker(model, variant, camera, len(datas))
    tiles = [tile.copy() for tile in maker.frames(datas)]
    timing = measure(lambda: maker.frames(datas), len(datas), seconds=seconds, repeats=2)
    buffer_size = maker.buffer_size
    maker.close()
    diffs = [
        np.abs(tile.astype(np.int16) - one.astype(np.int16))
        for tile, one in zip(tiles, singles, strict=True)
    ]
    differing = sum(int(d.max() > 0) for d in diffs)
    return Result(
        f"{label}, tiled: {len(datas)} worlds in one {buffer_size} buffer, one read-back",
        timing.rate,
        _error(tiles[: len(reference)], reference),
        None,
        timing.cpu_us,
        note=f"tiles against one-frame renders: {differing} of {len(datas)} tiles differ, max "
        f"{max(int(d.max()) for d in diffs)}, mean {np.mean([d.mean() for d in diffs]):.5f} "
        "gray levels",
    )


def _subprocess_results(env_updates: dict[str, str], quick: bool) -> tuple[str, list[Result]]:
    """The variants measured again in a subprocess with ``env_updates`` in its environment."""
    env = {**os.environ, **env_updates}
    command = [sys.executable, "-m", "benchmarks.images", "--json", "--variants-only"]
    command += ["--quick"] if quick else []
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, check=True
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        logger.warning("the run with %s failed: %s", env_updates, getattr(error, "stderr", error))
        return "", []
    output = json.loads(done.stdout.strip().splitlines()[-1])
    return output["gl_renderer"], [Result(**item) for item in output["results"]]


def run_study(
    quick: bool = False, with_osmesa: bool = True, with_one_thread: bool | None = None
) -> list[Row]:
    """The study as table rows: every variant through ``MUJOCO_GL`` (EGL by default) with this
    process's ``LP_NUM_THREADS`` (the package's 0 unless set), then on llvmpipe the variants
    with llvmpipe's own default of one thread per CPU (``with_one_thread``, default: as
    ``with_osmesa``), then the variants through OSMesa. Sections name the OpenGL renderer."""
    platform = os.environ.get("MUJOCO_GL")
    renderer = gl_info().renderer
    threads = os.environ.get("LP_NUM_THREADS", "unset")
    label = f", LP_NUM_THREADS={threads}" if "llvmpipe" in renderer else ""
    rows = [_row(f"Panda camera ({platform}: {renderer}{label})", r) for r in study(quick)]
    if with_one_thread is None:
        with_one_thread = with_osmesa
    cpus = str(os.cpu_count() or 1)
    if with_one_thread and "llvmpipe" in renderer and threads != cpus:
        name, results = _subprocess_results({"LP_NUM_THREADS": cpus}, quick)
        section = f"Panda camera ({platform}: {name}, LP_NUM_THREADS={cpus}: llvmpipe's default)"
        rows += [_row(section, r) for r in results]
    if with_osmesa and platform != "osmesa":
        env = {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
        name, results = _subprocess_results(env, quick)
        rows += [_row(f"Panda camera (osmesa: {name})", r) for r in results]
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
        note=result.note,
        cpu_us=result.cpu_us,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument(
        "--variants-only", action="store_true", help="only the variants (with --json)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.json:
        results = study(args.quick, variants_only=args.variants_only)
        output = {
            "gl_renderer": gl_info().renderer,
            "results": [dataclasses.asdict(result) for result in results],
        }
        print(json.dumps(output))
        return 0
    print(
        f"OpenGL: {gl_info()} (MUJOCO_GL={os.environ.get('MUJOCO_GL')}, "
        f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')})\n"
    )
    print(markdown_table(run_study(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
