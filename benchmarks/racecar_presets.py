"""Top speed and full-lock turning radius of the race car under each preset (docs/parameters.md).

Run ``python -m benchmarks.racecar_presets``. Each preset's nominal car (no randomisation, the
simulator alone: no safety speed cap) is driven from rest:

- top speed: full action (the preset's throttle cap) straight ahead for 12 s, the final speed;
- turning radius at full lock: steering action 1 at a steady 1 m/s (a speed controller on the
  throttle), the radius of the centre of mass's circle ``v / omega`` after 6 s, in the preset's
  own model and in the other (kinematic/dynamic).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from sim2online_envs.robots import racecar as car_robot
from sim2online_envs.sim.racecar import RaceCarVectorBackend, car_params

logger = logging.getLogger(__name__)


def _backend(preset: str, dynamics: str) -> RaceCarVectorBackend:
    sim = RaceCarVectorBackend(
        params=car_params(preset), dynamics=dynamics, domain_randomization=False
    )
    sim.reset_worlds(np.array([0]), [np.random.default_rng(0)], {"start_pose": (0.0, 0.0, 0.0)})
    return sim


def top_speed(preset: str, dynamics: str, seconds: float = 12.0) -> float:
    """Forward speed (m/s) after ``seconds`` at full action, straight."""
    sim = _backend(preset, dynamics)
    cap = car_robot.PRESETS[preset]["max_throttle"]
    for _ in range(round(seconds / sim.control_dt)):
        state = sim.apply({"steering": np.zeros(1), "throttle": np.array([cap])})
    return float(state["velocity"][0, 0])


def full_lock_radius(preset: str, dynamics: str, speed: float = 1.0, seconds: float = 6.0) -> float:
    """Radius (m) of the centre of mass's circle at full lock and a steady ``speed`` (m/s)."""
    sim = _backend(preset, dynamics)
    params = sim.params
    state = sim.apply({"steering": np.zeros(1), "throttle": np.zeros(1)})
    for _ in range(round(seconds / sim.control_dt)):
        vx = state["velocity"][0, 0]
        duty = np.clip(0.5 * (speed - vx) + params.viscous_drag * speed / params.motor_cm1, -1, 1)
        state = sim.apply(
            {"steering": np.array([params.max_steering]), "throttle": np.array([duty])}
        )
    vx, vy, omega = state["velocity"][0]
    return float(math.hypot(vx, vy) / abs(omega))


def measure() -> dict[str, dict[str, float]]:
    """Per preset: top speed and full-lock radius in each model, and the kinematic formula."""
    out = {}
    for preset, data in car_robot.PRESETS.items():
        params = car_params(preset)
        row = {
            "model": data["dynamics"],
            "top_speed": top_speed(preset, data["dynamics"]),
            "top_speed_formula": params.top_speed_at(data["max_throttle"]),
            "kinematic_rear_axle_radius": params.min_turning_radius,
        }
        for dynamics in ("kinematic", "dynamic"):
            row[f"radius_{dynamics}"] = full_lock_radius(preset, dynamics)
        out[preset] = row
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for preset, row in measure().items():
        logger.info(
            "%s: %s", preset, {k: v if isinstance(v, str) else round(v, 3) for k, v in row.items()}
        )


if __name__ == "__main__":
    main()
