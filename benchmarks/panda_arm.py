"""How the simulated Panda tracks its tip target under each arm control (docs/parameters.md).

Run ``python -m benchmarks.panda_arm``. From the home posture, no randomisation, the cube out of
the way, for ``arm_control`` "impedance" (the default, the real arm's Cartesian impedance) and
"joint_servo" (IK into stiff joint servos):

- lag: the tip target moves at full action along y (the study's 5 mm per 50 ms step, 0.1 m/s)
  for 2 s; the target's lead over the tip at the end (m);
- settling: the target then holds; the time (s) until the tip stays within 1 mm of where it
  comes to rest (after 4 s), and that rest's distance from the target (m);
- static offset: the tip's distance from a held target 17 cm in front of home, (0.49, 0, 0.18),
  after 6 s (m);
- held torques: the impedance controller's null-space and Coriolis torques, evaluated once per
  control period, against the same evaluated at every physics step: the largest tip distance
  between the two over a 0.12 m diagonal move and 2.5 s of holding (m).
"""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from sim2online_envs.robots.panda import HOME_TIP_POS, MAX_TIP_STEP
from sim2online_envs.sim.panda import PandaSimConfig, PandaVectorBackend

logger = logging.getLogger(__name__)


def _backend(arm_control: str) -> PandaVectorBackend:
    backend = PandaVectorBackend(
        1,
        domain_randomization=False,
        render_pixels=False,
        config=PandaSimConfig(arm_control=arm_control),
    )
    backend.reset_worlds(
        np.array([0]), [np.random.default_rng(0)], {"object_pos": (0.45, 0.25, 0.025)}
    )
    return backend


def _apply(backend: PandaVectorBackend, target: np.ndarray) -> np.ndarray:
    state = backend.apply({"tip_target": target[None], "gripper_closed": np.zeros(1)})
    return state["tip_pos"][0]


def tracking(arm_control: str) -> dict[str, float]:
    """Lag at full action, settling time and static offset of one arm control."""
    backend = _backend(arm_control)
    dt = backend.config.control_dt
    target = HOME_TIP_POS.copy()
    for _ in range(round(2.0 / dt)):
        target = target + np.array([0.0, -MAX_TIP_STEP, 0.0])
        tip = _apply(backend, target)
    lag = float(np.linalg.norm(target - tip))
    path = np.array([_apply(backend, target).copy() for _ in range(round(4.0 / dt))])
    moving = np.flatnonzero(np.linalg.norm(path - path[-1], axis=1) >= 0.001)
    settle = (moving[-1] + 2 if moving.size else 1) * dt
    rest_offset = float(np.linalg.norm(target - path[-1]))
    backend.close()
    backend = _backend(arm_control)
    held = np.array([0.49, 0.0, 0.18])
    target = HOME_TIP_POS.copy()
    for _ in range(round(6.0 / dt)):
        target = target + np.clip(held - target, -MAX_TIP_STEP, MAX_TIP_STEP)
        tip = _apply(backend, target)
    backend.close()
    return {
        "lag_m": lag,
        "settling_s": float(settle),
        "rest_offset_m": rest_offset,
        "static_offset_m": float(np.linalg.norm(held - tip)),
    }


def held_torques() -> float:
    """Largest tip distance (m) between held and per-physics-step null-space/Coriolis torques."""
    tips = []
    for per_step in (False, True):
        backend = _backend("impedance")
        target = HOME_TIP_POS.copy()
        path = []
        for step in range(80):
            if step < 30:
                target = target + np.array([-0.005, 0.005, -0.004])
            if not per_step:
                path.append(_apply(backend, target).copy())
                continue
            backend._ctrl[:, backend._tcp_act] = target
            for _ in range(backend.n_substeps):
                backend._ctrl[:, backend._arm_act] = backend.joint_torques()
                backend.batch.step(nstep=1, stage=mujoco.mjtStage.mjSTAGE_VEL)
            path.append(backend._site_xpos[0, backend._tcp].copy())
        backend.close()
        tips.append(np.array(path))
    return float(np.linalg.norm(tips[0] - tips[1], axis=1).max())


def measure() -> dict[str, object]:
    out: dict[str, object] = {arm: tracking(arm) for arm in ("impedance", "joint_servo")}
    out["held_torques_max_difference_m"] = held_torques()
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("%s", json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
