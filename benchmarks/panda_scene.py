"""The Panda camera's view at the study's start: cube size in pixels, table and cube gray levels.

Run ``python -m benchmarks.panda_scene`` (``MUJOCO_GL=egl`` without a display). The cube rests
at the study's start, (0.631, 0, 0.025) m (its ``x_plane``: the start tip's x minus 3 cm), yaw
0, the arm at home, no randomisation (``--seeds N`` adds N randomised resets). The 64x64
observation is measured against a segmentation render of the same view at 8 times its side: a
pixel of the observation is the cube's (the table's) when all of its 64 sub-pixels show the
cube (the table top).

- cube width: the widest row of the cube's silhouette, counting partly covered pixels by the
  fraction covered (px of the 64x64 frame);
- gray levels: the mean of the observation over the pixels wholly on the cube and wholly on
  the table top (0-255), to compare with the study's real frame (table ~50, cube ~115).

The numbers are in docs/parameters.md (Panda section).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from sim2online_envs.robots.panda import CAMERA, CUBE_SIZE, HOME_TIP_POS
from sim2online_envs.sim.panda import PandaSimConfig, PandaVectorBackend

logger = logging.getLogger(__name__)

#: The cube's centre at the study's start (m): its x_plane, on the table.
STUDY_CUBE_POS = (float(HOME_TIP_POS[0]) - 0.03, 0.0, CUBE_SIZE / 2)


def _masks(
    backend: PandaVectorBackend, world: int, factor: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Fractions (S, S) of each observation pixel covered by the cube and by the table top,
    from a segmentation render at ``factor`` times the observation's side."""
    size = backend.config.image_size
    backend._load_render_world(world)
    model = backend._render_model
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, size * factor)
    model.vis.global_.offheight = max(model.vis.global_.offheight, size * factor)
    with mujoco.Renderer(model, size * factor, size * factor) as renderer:
        renderer.enable_segmentation_rendering()
        renderer.update_scene(backend._render_data, camera=CAMERA.name)
        segmentation = renderer.render()
    ids, types = segmentation[..., 0], segmentation[..., 1]
    geoms = types == int(mujoco.mjtObj.mjOBJ_GEOM)
    model = backend.model
    cube_geoms = np.flatnonzero(model.geom_bodyid == model.body("object").id)
    cube = geoms & np.isin(ids, cube_geoms)
    table = geoms & (ids == model.geom("table").id)

    def coverage(mask: np.ndarray) -> np.ndarray:
        return mask.reshape(size, factor, size, factor).mean(axis=(1, 3))

    return coverage(cube), coverage(table)


def measure_world(backend: PandaVectorBackend, world: int) -> dict[str, float]:
    """Cube width (px), cube and table gray levels of one world's current observation."""
    pixels = backend.render_pixels(world)[:, :, 0].astype(np.float64)
    cube, table = _masks(backend, world)
    return {
        "cube_width_px": float(cube.sum(axis=1).max()),
        "cube_height_px": float(cube.sum(axis=0).max()),
        "cube_gray": float(pixels[cube == 1.0].mean()),
        "table_gray": float(pixels[table == 1.0].mean()),
    }


def measure(seeds: int = 0, config: PandaSimConfig | None = None) -> dict[str, object]:
    """The nominal view (no randomisation) and, over ``seeds`` randomised resets, the range."""
    place = {"object_pos": STUDY_CUBE_POS, "object_yaw": 0.0}
    nominal = PandaVectorBackend(1, domain_randomization=False, config=config)
    nominal.reset_worlds(np.array([0]), [np.random.default_rng(0)], place)
    out: dict[str, object] = {"nominal": measure_world(nominal, 0)}
    nominal.close()
    if seeds:
        randomized = PandaVectorBackend(seeds, domain_randomization=True, config=config)
        randomized.reset_worlds(
            np.arange(seeds), [np.random.default_rng(seed) for seed in range(seeds)], place
        )
        rows = [measure_world(randomized, world) for world in range(seeds)]
        randomized.close()
        out["randomized"] = {
            key: (min(row[key] for row in rows), max(row[key] for row in rows)) for key in rows[0]
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=0, help="randomised resets to add")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("%s", json.dumps(measure(args.seeds), indent=2))


if __name__ == "__main__":
    main()
