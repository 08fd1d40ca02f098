"""System identification of the race car: fit a preset's parameters to recorded episodes.

``sim2online sysid racecar <episodes folder>`` (and :func:`fit_racecar`) reads episodes written
by :class:`~sim2online_envs.wrappers.recording.RecordEpisodes` on ``SimRaceCar-v0`` or
``RealRaceCar-v0``, and fits the car model of a base preset to them by least squares
(``scipy.optimize.least_squares``) on predicted trajectories:

1. Commands are rebuilt from the recorded actions with the base preset's steering and throttle
   scales, and the step loop's default speed cap (``RaceCarLimits``: above its speed the throttle
   may only brake).
2. Every episode is cut into windows of ``horizon`` steps, one starting every ``stride`` steps.
   A window starts from the recorded observation (pose in the goal frame and body velocities:
   the model does not depend on the frame), the actuators' states from the commands before it
   (they do not depend on the car's motion) and the delayed commands in flight.
3. The simulator (the base preset's model, no randomisation) predicts each window open loop; the
   residuals are the errors of position, heading and velocities at every step, each over a scale
   (:data:`RESIDUAL_SCALES`).

What is fitted, and why this subset: trajectories fix forces only over mass (the motor's, the
drag's, the tyres' ``mu m g``), and yaw moments over inertia, so the mass itself is not
identifiable from poses: it stays the base preset's (or ``mass=``, weighed on a scale) and the
fit finds the motor gain ``motor_cm1``, the drag (``viscous_drag``, or ``motor_cm2`` and
``rolling_resistance`` where the base model uses those), the tyre friction ``friction``, the yaw
inertia ``inertia_z`` (over that mass) and the steering offset. The action delay is a whole
number of control periods: it is chosen by fitting at each candidate delay and keeping the
lowest cost. Tyre shape factors, actuator lags and geometry stay the base preset's, unless
``extra=`` asks for the rolling resistance (fitted from zero where the base has none, as the
study's has not) and the actuator lags (:data:`EXTRA_CANDIDATES`): a real car has both, and
without them the fit puts their effect into the drag and the delay.

Recorded velocities may lag the poses (a motion-capture rig differentiates poses through a
filter; the real car's driver fits a line through its last frames): the lag, in whole control
periods, is estimated from the recordings (:func:`estimate_velocity_lag`) and each step's
velocities are read that many steps later. ``loss="soft_l1"`` keeps a few glitched windows (a
dropped frame, a stalled loop) from pulling the fit.

The result is a TOML preset file over the base preset (``gym.make("SimRaceCar-v0",
preset="car.toml")``), with the fit error before and after in its header.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim2online_envs.robots import racecar as car_robot
from sim2online_envs.safety import RaceCarLimits
from sim2online_envs.sim.racecar import (
    GRAVITY,
    CarParams,
    RaceCarVectorBackend,
    delay_steps,
    resolve_preset,
    write_preset,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EXTRA_CANDIDATES",
    "FIT_CANDIDATES",
    "RESIDUAL_SCALES",
    "FitResult",
    "estimate_velocity_lag",
    "fit_racecar",
    "prediction_error",
]

#: CarParams fields the fit may change (those with a nonzero base value), then the offset.
FIT_CANDIDATES = (
    "motor_cm1",
    "motor_cm2",
    "viscous_drag",
    "rolling_resistance",
    "friction",
    "inertia_z",
)
#: Fields fitted only where asked (``fit_racecar(extra=...)``): the rolling resistance and the
#: actuator lags, which a real car has unlike the base (the study's model has no rolling
#: resistance) but which trade off against the drag and the delay on short recordings.
EXTRA_CANDIDATES = ("rolling_resistance", "steering_time_constant", "throttle_time_constant")
#: Upper bound of a field fitted from zero, in its unit (:func:`_linear_unit`): the rolling
#: resistance as a fraction of the car's weight, a lag in seconds.
LINEAR_BOUND = 0.5
#: Where such a field starts, in the same unit.
LINEAR_START = 0.01
#: Scales of the residual channels: position (m), heading (rad), vx, vy (m/s), yaw rate (rad/s).
RESIDUAL_SCALES = (0.05, 0.05, 0.1, 0.1, 0.5)
#: How far (a factor) the fit may move a positive parameter from the base, and the offset (rad).
FACTOR_BOUND = 5.0
OFFSET_BOUND = 0.3


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_racecar` found.

    ``params``: the fitted car; ``action_delay_steps``: the chosen delay; ``fitted``: the
    fitted fields and their values; ``error_before`` / ``error_after``: RMS position error (m)
    over all window steps with the base preset and with the fit; ``cost_by_delay``: the
    least-squares cost at each candidate delay; ``velocity_lag``: control periods by which
    the recorded velocities lagged the poses (corrected for in the fit).
    """

    base: str
    params: CarParams
    action_delay_steps: int
    control_dt: float
    fitted: dict[str, float]
    error_before: float
    error_after: float
    cost_by_delay: dict[int, float] = field(default_factory=dict)
    windows: int = 0
    velocity_lag: int = 0

    def preset(self) -> dict[str, Any]:
        """The fit as a preset over its base (what :func:`write_preset` writes)."""
        return {
            "base": self.base,
            "action_delay": self.action_delay_steps * self.control_dt,
            "car": dict(self.fitted),
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit as a TOML preset file, the errors in its header."""
        header = (
            f"Race car preset fitted by `sim2online sysid racecar` over base {self.base!r}\n"
            f"on {self.windows} windows (velocities lagging {self.velocity_lag} steps); RMS "
            f"position error {self.error_before:.4f} m with the base, {self.error_after:.4f} m "
            "fitted.\n"
            f"Fitted: {', '.join(self.fitted)}; the rest (tyre shape, geometry, randomisation) "
            "is the base preset's."
        )
        return write_preset(path, self.preset(), header=header)


@dataclass(frozen=True)
class _Windows:
    """Prediction windows cut from the episodes (arrays over windows W)."""

    commands: list[np.ndarray]  # per episode (T, 2) steering rad, throttle duty
    episode: np.ndarray  # (W,) episode index
    start: np.ndarray  # (W,) first step
    observations: list[np.ndarray]  # per episode (T + 1, 7)
    horizon: int


def _linear_unit(name: str, params: CarParams) -> float:
    """The unit of a field fitted from zero: the car's weight (N) for the rolling resistance."""
    return params.mass * GRAVITY if name == "rolling_resistance" else 1.0


def _episode_arrays(episodes: Iterable[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(observations (T+1, 7), actions (T, 2)) of each episode, as float64."""
    out = []
    for episode in episodes:
        observations = np.asarray(episode.observations, dtype=np.float64)
        actions = np.asarray(episode.actions, dtype=np.float64)
        if observations.ndim != 2 or observations.shape[1] != 7 or actions.shape[1:] != (2,):
            raise ValueError(
                f"{getattr(episode, 'path', 'episode')}: not a race car recording "
                f"(observations {observations.shape}, actions {actions.shape})"
            )
        out.append((observations, actions))
    return out


def _commands(
    observations: np.ndarray, actions: np.ndarray, preset: Mapping[str, Any]
) -> np.ndarray:
    """(T, 2) steering (rad) and throttle as the loop sent them: scaled, speed-capped."""
    clipped = np.clip(actions, -1.0, 1.0)
    command = {
        "steering": clipped[:, 0] * preset["car"]["max_steering"],
        "throttle": clipped[:, 1] * preset["max_throttle"],
    }
    state = {"pose": np.zeros((len(actions), 3)), "velocity": observations[:-1, 4:7]}
    fresh = np.ones(len(actions), dtype=bool)
    limited, _ = RaceCarLimits().limit(command, state, None, fresh)
    return np.stack([limited["steering"], limited["throttle"]], axis=1)


def estimate_velocity_lag(
    episodes: Iterable[Any], control_dt: float = car_robot.CONTROL_DT, max_lag: int = 3
) -> int:
    """Control periods by which the recorded velocities lag the recorded poses.

    A motion-capture rig differentiates poses through a filter (the real car's driver: a line
    through the last few frames, the velocity at the window's middle), so its velocities are
    older than its poses; the simulator's are not. The lag is the shift that best matches the
    recorded velocities (body frame) to central differences of the recorded poses, each channel
    over its residual scale.
    """
    errors = np.zeros(max_lag + 1)
    for obs, _ in _episode_arrays(episodes):
        n = len(obs) - 2 - max_lag
        if n < 1:
            continue
        psi = np.unwrap(np.arctan2(obs[:, 2], obs[:, 3]))
        dx, dy = (obs[2:, :2] - obs[:-2, :2]).T
        dpsi = psi[2:] - psi[:-2]
        c, s = np.cos(psi[1:-1]), np.sin(psi[1:-1])
        derived = np.stack([c * dx + s * dy, -s * dx + c * dy, dpsi], axis=1) / (2 * control_dt)
        for lag in range(max_lag + 1):
            recorded = obs[1 + lag : 1 + lag + n, 4:7]
            errors[lag] += np.sum(((recorded - derived[:n]) / RESIDUAL_SCALES[2:]) ** 2)
    return int(np.argmin(errors))


def _unlag(observations: np.ndarray, lag: int) -> np.ndarray:
    """Observations with each step's velocities taken from ``lag`` steps later (their time)."""
    if lag == 0:
        return observations
    out = observations[:-lag].copy()
    out[:, 4:7] = observations[lag:, 4:7]
    return out


def _cut(
    episodes: list[tuple[np.ndarray, np.ndarray]],
    preset: Mapping[str, Any],
    horizon: int,
    stride: int,
    velocity_lag: int = 0,
) -> _Windows:
    commands, index, starts, observations = [], [], [], []
    for number, (obs, actions) in enumerate(episodes):
        # The speed cap saw the velocities as recorded; the model compares them at their time.
        steps = max(0, len(actions) - velocity_lag)
        commands.append(_commands(obs, actions, preset)[:steps])
        observations.append(_unlag(obs, velocity_lag))
        first = np.arange(0, steps - horizon + 1, stride)
        index.append(np.full(len(first), number))
        starts.append(first)
    if not starts or sum(len(s) for s in starts) == 0:
        raise ValueError(f"no episode has {horizon} steps for a prediction window")
    return _Windows(commands, np.concatenate(index), np.concatenate(starts), observations, horizon)


def _predict(
    windows: _Windows,
    params: CarParams,
    dynamics: str,
    control_dt: float,
    delay: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and recorded (W, H, 7) observations of every window."""
    episodes = len(windows.commands)
    longest = max(len(c) for c in windows.commands)
    padded = np.zeros((longest, 2, episodes))
    for number, command in enumerate(windows.commands):
        padded[: len(command), :, number] = command
    actuators = RaceCarVectorBackend(
        num_worlds=episodes,
        dynamics=dynamics,
        control_dt=control_dt,
        params=params,
        domain_randomization=False,
        action_delay_steps=delay,
    )
    # Actual steering and throttle after each period: the state before period t is row t - 1.
    history = np.concatenate([np.zeros((1, 2, episodes)), actuators.actuate(padded)])
    ep, start, h = windows.episode, windows.start, windows.horizon
    count = len(ep)
    sim = RaceCarVectorBackend(
        num_worlds=count,
        dynamics=dynamics,
        control_dt=control_dt,
        params=params,
        domain_randomization=False,
        action_delay_steps=delay,
    )
    obs0 = np.stack([windows.observations[e][s] for e, s in zip(ep, start, strict=True)])
    in_flight = np.zeros((delay, 2, count))
    for k in range(delay):
        step = start - delay + k
        valid = step >= 0
        in_flight[k, :, valid] = padded[step[valid], :, ep[valid]]
    sim.set_state(
        pose=np.stack([obs0[:, 0], obs0[:, 1], np.arctan2(obs0[:, 2], obs0[:, 3])], axis=1),
        velocity=obs0[:, 4:7],
        steering=history[start, 0, ep],
        throttle=history[start, 1, ep],
        in_flight=in_flight,
    )
    predicted = np.empty((count, h, 7))
    recorded = np.empty((count, h, 7))
    for t in range(h):
        state = sim.apply(
            {"steering": padded[start + t, 0, ep], "throttle": padded[start + t, 1, ep]}
        )
        pose, velocity = state["pose"], state["velocity"]
        predicted[:, t, 0:2] = pose[:, :2]
        predicted[:, t, 2] = np.sin(pose[:, 2])
        predicted[:, t, 3] = np.cos(pose[:, 2])
        predicted[:, t, 4:7] = velocity
        recorded[:, t] = np.stack(
            [windows.observations[e][s + t + 1] for e, s in zip(ep, start, strict=True)]
        )
    return predicted, recorded


def _residuals(predicted: np.ndarray, recorded: np.ndarray) -> np.ndarray:
    """Scaled errors of position (x, y), heading, vx, vy and yaw rate, flattened."""
    scales = RESIDUAL_SCALES
    heading = np.arctan2(
        predicted[..., 2] * recorded[..., 3] - predicted[..., 3] * recorded[..., 2],
        predicted[..., 3] * recorded[..., 3] + predicted[..., 2] * recorded[..., 2],
    )
    parts = [
        (predicted[..., 0] - recorded[..., 0]) / scales[0],
        (predicted[..., 1] - recorded[..., 1]) / scales[0],
        heading / scales[1],
        (predicted[..., 4] - recorded[..., 4]) / scales[2],
        (predicted[..., 5] - recorded[..., 5]) / scales[3],
        (predicted[..., 6] - recorded[..., 6]) / scales[4],
    ]
    return np.stack(parts, axis=-1).ravel()


def _position_error(predicted: np.ndarray, recorded: np.ndarray) -> float:
    """RMS position error (m) over every window step."""
    error = np.hypot(*(predicted[..., :2] - recorded[..., :2]).transpose(2, 0, 1))
    return float(np.sqrt(np.mean(error * error)))


def prediction_error(
    episodes: Iterable[Any],
    preset: str | os.PathLike[str] | Mapping[str, Any] = car_robot.DEFAULT_PRESET,
    horizon: int = 30,
    stride: int = 10,
    control_dt: float = car_robot.CONTROL_DT,
    velocity_lag: int | None = None,
) -> float:
    """RMS position error (m) of the preset's open-loop predictions over the episodes' windows.

    ``velocity_lag``: as :func:`fit_racecar`'s (None: :func:`estimate_velocity_lag`).
    """
    resolved = resolve_preset(preset)
    episodes = list(episodes)
    if velocity_lag is None:
        velocity_lag = estimate_velocity_lag(episodes, control_dt)
    windows = _cut(_episode_arrays(episodes), resolved, horizon, stride, velocity_lag)
    params = CarParams(**resolved["car"])
    delay = delay_steps(resolved["action_delay"], control_dt)
    return _position_error(*_predict(windows, params, resolved["dynamics"], control_dt, delay))


def fit_racecar(
    episodes: Iterable[Any],
    base: str = car_robot.DEFAULT_PRESET,
    mass: float | None = None,
    delays: Sequence[int] | None = None,
    horizon: int = 30,
    stride: int = 10,
    control_dt: float = car_robot.CONTROL_DT,
    max_nfev: int = 60,
    extra: Sequence[str] = (),
    velocity_lag: int | None = None,
    loss: str = "linear",
) -> FitResult:
    """Fit the base preset's car to recorded episodes (see the module docstring).

    :param episodes: loaded episodes (``load_episodes``) of one car.
    :param base: the preset the fit starts from and writes over (a name of ``PRESETS``).
    :param mass: the car's weighed mass, kg (None: the base preset's); not fitted.
    :param delays: candidate action delays in control periods (default: the base's, +-2).
    :param horizon: steps each prediction runs open loop (0.5 s at 60 Hz by default).
    :param stride: steps between window starts.
    :param control_dt: the recording's control period, s.
    :param max_nfev: least-squares evaluations per candidate delay.
    :param extra: more fields to fit, of :data:`EXTRA_CANDIDATES` (the rolling resistance, the
        actuator lags); one that is zero in the base is fitted from zero (see
        :data:`LINEAR_BOUND`).
    :param velocity_lag: control periods by which the recorded velocities lag the poses (a
        motion-capture velocity filter's); None: :func:`estimate_velocity_lag`. Each window
        then reads a step's velocities that many steps later.
    :param loss: ``least_squares``'s loss on the scaled residuals: "linear" (least squares),
        or a robust one ("soft_l1", "huber") where a few windows hold glitches (a dropped
        frame, a stalled loop) that would pull the fit.
    """
    from scipy.optimize import least_squares

    unknown = sorted(set(extra) - set(EXTRA_CANDIDATES))
    if unknown:
        raise ValueError(f"extra: unknown parameter(s) {unknown}; known: {EXTRA_CANDIDATES}")
    if base not in car_robot.PRESETS:
        raise ValueError(f"unknown base preset {base!r}; known: {sorted(car_robot.PRESETS)}")
    resolved = resolve_preset(base)
    params = CarParams(**resolved["car"])
    if mass is not None:
        params = params.replace(mass=float(mass))
    dynamics = resolved["dynamics"]
    base_delay = delay_steps(resolved["action_delay"], control_dt)
    if delays is None:
        delays = range(max(0, base_delay - 2), base_delay + 3)
    episodes = list(episodes)
    if velocity_lag is None:
        velocity_lag = estimate_velocity_lag(episodes, control_dt)
    windows = _cut(_episode_arrays(episodes), resolved, horizon, stride, velocity_lag)
    names = [name for name in FIT_CANDIDATES if getattr(params, name) > 0]
    names += [name for name in extra if name not in names and getattr(params, name) > 0]
    # Zero in the base: fitted from zero on a linear scale (a log scale cannot leave zero).
    linear = [name for name in extra if name not in names]
    start = np.array([getattr(params, name) for name in names])
    units = np.array([_linear_unit(name, params) for name in linear])

    def unpack(x: np.ndarray) -> CarParams:
        values = dict(zip(names, start * np.exp(x[: len(names)]), strict=True))
        values.update(zip(linear, units * x[len(names) : -1], strict=True))
        return params.replace(**values, steering_offset=float(x[-1]))

    def residuals(x: np.ndarray, delay: int) -> np.ndarray:
        predicted, recorded = _predict(windows, unpack(x), dynamics, control_dt, delay)
        residual = _residuals(predicted, recorded)
        # A diverged prediction counts as a large, finite error (keeps the solver going).
        return np.where(np.isfinite(residual), residual, 1e3)

    error_before = _position_error(*_predict(windows, params, dynamics, control_dt, base_delay))
    logger.info(
        "sysid: %d windows of %d steps from %d episodes (velocities lag %d steps); base %r: "
        "RMS position error %.4f m",
        len(windows.start),
        horizon,
        len(windows.commands),
        velocity_lag,
        base,
        error_before,
    )
    # A start inside the bounds: the solver (trf) does not leave a start on a bound.
    x0 = np.concatenate(
        [np.zeros(len(names)), np.full(len(linear), LINEAR_START), [params.steering_offset]]
    )
    bound = math.log(FACTOR_BOUND)
    lower = np.concatenate([np.full(len(names), -bound), np.zeros(len(linear)), [-OFFSET_BOUND]])
    upper = np.concatenate(
        [np.full(len(names), bound), np.full(len(linear), LINEAR_BOUND), [OFFSET_BOUND]]
    )
    best, costs = None, {}
    for delay in delays:
        solution = least_squares(
            residuals,
            x0,
            bounds=(lower, upper),
            args=(int(delay),),
            x_scale=1.0,
            diff_step=1e-4,
            max_nfev=max_nfev,
            loss=loss,
        )
        costs[int(delay)] = float(solution.cost)
        logger.info("sysid: delay %d steps: cost %.6g", delay, solution.cost)
        if best is None or solution.cost < best[0].cost:
            best = (solution, int(delay))
    assert best is not None
    solution, delay = best
    fitted_params = unpack(solution.x)
    error_after = _position_error(*_predict(windows, fitted_params, dynamics, control_dt, delay))
    fitted = {name: float(getattr(fitted_params, name)) for name in (*names, *linear)}
    fitted["steering_offset"] = float(fitted_params.steering_offset)
    if mass is not None:
        fitted["mass"] = float(mass)
    logger.info(
        "sysid: fitted %s, delay %d steps: RMS position error %.4f m (base %.4f m)",
        {k: round(v, 4) for k, v in fitted.items()},
        delay,
        error_after,
        error_before,
    )
    return FitResult(
        base=base,
        params=fitted_params,
        action_delay_steps=delay,
        control_dt=control_dt,
        fitted=fitted,
        error_before=error_before,
        error_after=error_after,
        cost_by_delay=costs,
        windows=len(windows.start),
        velocity_lag=velocity_lag,
    )


def sysid_racecar(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    base: str = car_robot.DEFAULT_PRESET,
    **kwargs: Any,
) -> FitResult:
    """Load the episodes in ``folder``, fit them (:func:`fit_racecar`), write the preset file."""
    from sim2online_envs.wrappers.recording import load_episodes

    episodes = load_episodes(folder, robot=car_robot.NAME)
    if not episodes:
        raise ValueError(f"no race car episodes in {str(folder)!r}")
    result = fit_racecar(episodes, base=base, **kwargs)
    path = result.write(output)
    logger.info("sysid: wrote %s", path)
    return result
