"""The compiled race car substeps (sim/racecar_kernels.py) against the NumPy reference.

Two backends with the same worlds, one with ``use_kernels = False`` (the NumPy methods, the
specification); both are stepped with the same commands from the same random states and world
parameters, and must agree to 1e-12 relative (both models, the blend region, the sliding
regime, reverse, actuator lags and delays), and treat non-finite states the same way.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sim2online_envs.sim.racecar import RaceCarVectorBackend, car_params

DYNAMICS = ("kinematic", "dynamic")
RTOL = 1e-12
STATE_KEYS = ("pose", "velocity", "steering", "throttle")


def _pair(num: int, seed: int, **kwargs) -> tuple[RaceCarVectorBackend, RaceCarVectorBackend]:
    """(compiled, reference) backends with the same randomised worlds."""
    compiled = RaceCarVectorBackend(num, **kwargs)
    reference = RaceCarVectorBackend(num, **kwargs)
    reference.use_kernels = False
    assert compiled.use_kernels
    for sim in (compiled, reference):
        ids = np.arange(num)
        sim.reset_worlds(ids, [np.random.default_rng(seed + i) for i in ids])
    return compiled, reference


def _random_state(rng: np.random.Generator, num: int, max_steering: float, speed: float) -> dict:
    """Poses, body velocities (forward and reverse, sliding), actuator states."""
    return {
        "pose": rng.uniform([-2, -2, -np.pi], [2, 2, np.pi], (num, 3)),
        "velocity": rng.uniform([-speed, -speed / 2, -8], [speed, speed / 2, 8], (num, 3)),
        "steering": rng.uniform(-max_steering, max_steering, num),
        "throttle": rng.uniform(-1, 1, num),
    }


def _assert_close(compiled: dict, reference: dict, context: str) -> None:
    """Equal to RTOL of each quantity's magnitude (a value near zero: of its row's scale)."""
    for key in STATE_KEYS:
        a, b = np.asarray(compiled[key]), np.asarray(reference[key])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{context}: {key} NaN")
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=f"{context}: {key}")
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=f"{context}: {key}")
        finite = np.isfinite(b)
        scale = np.abs(np.where(finite, b, 0.0)).max(axis=0) if b.size else 0.0
        tolerance = RTOL * np.maximum(np.abs(np.where(finite, b, 0.0)), 1e-3 * scale + 1e-300)
        with np.errstate(invalid="ignore"):
            error = np.abs(np.where(finite, a - b, 0.0))
        worst = np.unravel_index(np.argmax(error - tolerance), error.shape)
        assert (error <= tolerance).all(), (
            f"{context}: {key}{list(worst)} compiled {a[worst]!r} reference {b[worst]!r}"
        )
    assert compiled.keys() == reference.keys()
    for key in reference.keys() - set(STATE_KEYS):  # validity, time stamps, faults
        np.testing.assert_array_equal(compiled[key], reference[key], err_msg=f"{context}: {key}")


def _run(
    compiled: RaceCarVectorBackend,
    reference: RaceCarVectorBackend,
    rng: np.random.Generator,
    steps: int,
    context: str,
) -> None:
    num = compiled.num_worlds
    limit = compiled.params.max_steering
    for step in range(steps):
        command = {
            "steering": rng.uniform(-1.5 * limit, 1.5 * limit, num),  # some beyond the limit
            "throttle": rng.uniform(-1.2, 1.2, num),
        }
        with np.errstate(all="ignore"):  # NumPy warns of the non-finite worlds, numba does not
            expected = reference.apply(command)
        _assert_close(compiled.apply(command), expected, f"{context}, step {step}")
    for key, value in reference.privileged().items():
        np.testing.assert_allclose(compiled.privileged()[key], value, rtol=RTOL, err_msg=key)


@pytest.mark.parametrize("dynamics", DYNAMICS)
@pytest.mark.parametrize("preset", ["study", "f1tenth"])
def test_compiled_substeps_equal_the_numpy_reference_from_random_states(
    dynamics: str, preset: str
) -> None:
    """Random states, commands and randomised world parameters: one control period at a time."""
    params = car_params(preset)
    compiled, reference = _pair(64, seed=10, dynamics=dynamics, params=params)
    rng = np.random.default_rng(1)
    for trial in range(5):
        state = _random_state(rng, 64, params.max_steering, speed=6.0)
        for sim in (compiled, reference):
            sim.set_state(**state)
        _run(compiled, reference, rng, steps=3, context=f"{preset} {dynamics} trial {trial}")


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_compiled_substeps_follow_the_reference_over_episodes(dynamics: str) -> None:
    """From rest through the blend region (0.3-0.8 m/s) to speed, with resets of some worlds,
    the actuator lags, an action delay and four substeps per period."""
    kwargs = {"dynamics": dynamics, "action_delay_steps": 2, "physics_dt": 1 / 240}
    compiled, reference = _pair(32, seed=3, **kwargs)
    assert compiled.n_substeps == 4
    rng = np.random.default_rng(2)
    for episode in range(3):
        _run(compiled, reference, rng, steps=40, context=f"{dynamics} episode {episode}")
        ids = np.arange(episode, 32, 3)
        for sim in (compiled, reference):
            sim.reset_worlds(ids, [np.random.default_rng(100 + i) for i in ids])


def test_compiled_substeps_in_the_sliding_regime() -> None:
    """Low friction and fast, sideways, spinning cars: tyre forces saturated, the dynamic
    model's slip angles far from zero."""
    params = car_params("f1tenth").replace(friction=0.2)
    compiled, reference = _pair(64, seed=5, dynamics="dynamic", params=params)
    rng = np.random.default_rng(3)
    state = _random_state(rng, 64, params.max_steering, speed=8.0)
    state["velocity"][:, 1] = rng.uniform(-4, 4, 64)  # large side slip
    state["velocity"][:, 2] = rng.uniform(-15, 15, 64)
    for sim in (compiled, reference):
        sim.set_state(**state)
    _run(compiled, reference, rng, steps=30, context="sliding")
    slip = np.abs(np.arctan2(compiled._q[5], np.abs(compiled._q[4])))
    assert slip.max() > 0.2  # some worlds did slide


def test_compiled_substeps_near_standstill_where_the_tyre_model_is_skipped() -> None:
    """Below blend_speed[0] the kernel leaves out the tyre model the reference multiplies by 0."""
    compiled, reference = _pair(64, seed=7, dynamics="dynamic")
    rng = np.random.default_rng(4)
    state = _random_state(rng, 64, compiled.params.max_steering, speed=0.0)
    state["velocity"] = rng.uniform([-0.2, -0.1, -2], [0.2, 0.1, 2], (64, 3))
    state["throttle"] = np.zeros(64)
    for sim in (compiled, reference):
        sim.set_state(**state)
    _run(compiled, reference, rng, steps=5, context="standstill")


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_non_finite_states_are_handled_as_in_the_reference(
    dynamics: str, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN and inf in any state row give the reference's NaN and inf, the same warning and the
    same invalid worlds; the other worlds are untouched."""
    compiled, reference = _pair(21, seed=11, dynamics=dynamics)
    bad = [np.nan, np.inf, -np.inf]
    for sim in (compiled, reference):
        for k, value in enumerate(bad):
            for row in range(7):
                sim._q[row, 7 * k + row] = value
        sim._q[5, 3] = 1e200  # finite, but overflows in the rates
        sim._q[6, 10] = 1e200  # a yaw rate near standstill (vy and vx small)
        sim._q[4:6, 10] = 0.01
        sim._q[2:4, 12] = 0.0  # no heading: the renormalisation divides by zero
    rng = np.random.default_rng(5)
    with caplog.at_level(logging.WARNING, logger="sim2online_envs.sim.racecar"):
        _run(compiled, reference, rng, steps=2, context=f"{dynamics} non-finite")
    warned = [record.getMessage() for record in caplog.records if "non-finite" in record.message]
    assert len(warned) == 4 and warned[0::2] == warned[1::2]
    np.testing.assert_array_equal(compiled._readings.diverged, reference._readings.diverged)
    assert compiled._readings.diverged.sum() >= 14


def test_the_elementary_functions_match_the_c_library() -> None:
    """The kernels' Cephes atan, atan2 (x >= 0), sin, cos and tanh against NumPy's (the C
    library's) to a few units in the last place, and their NaN and inf values."""
    import numba

    from sim2online_envs.sim import racecar_kernels as kernels

    @numba.njit(error_model="numpy")
    def evaluate(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty((5, x.size))
        for i in range(x.size):
            out[0, i] = kernels.atan(x[i])
            out[1, i] = kernels.atan2_nonnegative(y[i], abs(x[i]))
            out[2, i], out[3, i] = kernels.sincos(x[i])
            out[4, i] = kernels.tanh(x[i])
        return out

    rng = np.random.default_rng(6)
    special = [0.0, -0.0, 1e-300, 0.625, -0.625, 0.66, 2.414213562373095, 22.0, 1e10, -1e10]
    special += [np.inf, -np.inf, np.nan]
    x = np.concatenate([special, rng.uniform(-8, 8, 20000), rng.standard_cauchy(20000)])
    y = np.concatenate([special[::-1], rng.uniform(-8, 8, 20000), rng.standard_cauchy(20000)])
    large = np.isfinite(x[:30]) & (np.abs(x[:30]) > 1e5)  # sin's finite argument stays moderate
    x[:30] = np.where(large, 1.0, x[:30])  # (the infinities stay: NaN for sin and cos)
    got = evaluate(x, y)
    with np.errstate(all="ignore"):
        want = np.stack([np.arctan(x), np.arctan2(y, np.abs(x)), np.sin(x), np.cos(x), np.tanh(x)])
    for name, a, b in zip(("atan", "atan2", "sin", "cos", "tanh"), got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=name)
        scale = np.abs(b[finite])
        if name in ("sin", "cos"):  # relative where no zero of cos is near, else absolute
            scale = np.where(np.abs(x[finite]) < 1.2, scale, np.maximum(scale, 1.0))
        error = np.abs(a[finite] - b[finite]) / np.maximum(scale, 1e-300)
        limit = 4e-16 if name in ("atan", "tanh") else 1e-15
        worst = np.argmax(error)
        assert error[worst] <= limit, f"{name}({x[finite][worst]!r}): {error[worst]:.3g}"


def test_a_reset_derives_the_parameters_of_its_worlds_as_a_full_derivation_does() -> None:
    """``reset_worlds`` updates only its worlds' constants: the same bits as recomputing all."""
    sim = RaceCarVectorBackend(16, dynamics="dynamic")
    sim.reset_worlds(np.arange(16), [np.random.default_rng(i) for i in range(16)])
    ids = np.array([3, 7, 8, 15])
    sim.reset_worlds(ids, [np.random.default_rng(50 + i) for i in ids])
    partial = sim._world
    sim._derive_world_params()
    for name, mine, full in zip(partial._fields, partial, sim._world, strict=True):
        np.testing.assert_array_equal(mine, full, err_msg=name)
