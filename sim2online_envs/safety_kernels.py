"""The Go1 limits and abort test compiled with numba: one call per step whatever the batch size.

:class:`~sim2online_envs.safety.Go1Limits` calls these kernels from its ``limit`` and
``abort_masks``; its NumPy methods ``limit_reference`` and ``abort_masks_reference`` are the
specification (``tests/test_safety.py`` checks the two against each other on random and hostile
states). At batch size 1 the NumPy versions cost about 35 NumPy calls per step (the trunk height
from the leg kinematics, roll and pitch, the target-rate and joint limits), which is the single
env's cost; compiled, each is one call. Every world's numbers come from the same scalar loop
whatever the batch (numba runs without ``fastmath``: no reassociation, no fused multiply-add),
so the single env and ``make_vec`` stay bit-identical world by world.

The same arithmetic in the same order as the NumPy reference: the limits' targets, clamps and
counts agree bit for bit. The abort test's sines and cosines come from the C library here and
from NumPy's own (vectorised) routines in the reference, which may differ in the last bit; an
abort could only differ for a state within a rounding error of ``max_tilt`` or ``min_height``.

The robot's facts (leg kinematics, joint limits) are arguments, taken from
:mod:`sim2online_envs.robots.go1` by the caller: none is written here.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from sim2online_envs.numba_cache import use_a_writable_numba_cache

use_a_writable_numba_cache()  # before the first njit: the kernels below cache there

#: ``status`` values of :func:`go1_limit`: all finite, non-finite targets, non-finite joints.
OK, TARGETS_NOT_FINITE, JOINTS_NOT_FINITE = 0, 1, 2


def _array(dtype: numba.types.Type, ndim: int) -> numba.types.Array:
    """Any memory layout, read-only allowed (broadcast or memory-mapped inputs)."""
    return numba.types.Array(dtype, ndim, "A", readonly=True)


_F8 = numba.float64
_F8_1D, _F8_2D = _array(numba.float64, 1), _array(numba.float64, 2)
_B1_1D = _array(numba.boolean, 1)
_OUT_F8_1D = numba.types.Array(numba.float64, 1, "C")
_OUT_F8_2D = numba.types.Array(numba.float64, 2, "C")
_OUT_I8_2D = numba.types.Array(numba.int64, 2, "C")
_OUT_B1_1D = numba.types.Array(numba.boolean, 1, "C")


def _kernel(signature: numba.types.Type):
    """Compile for one signature when this module is imported, cached on disk."""
    return numba.njit(signature, cache=True, nogil=True)


@numba.njit(cache=True, nogil=True, inline="always")
def _clip(value: float, low: float, high: float) -> float:
    """``np.clip`` of one float64: NaN propagates, else ``min(max(value, low), high)`` with
    NumPy's comparisons (so that the bits, signed zeros included, are NumPy's)."""
    if value != value:
        return value
    bounded = value if value > low else low
    return bounded if bounded < high else high


@_kernel(
    numba.types.Tuple((_OUT_F8_2D, _OUT_I8_2D, numba.int64))(
        _F8_2D, _F8_2D, _F8_2D, _B1_1D, numba.boolean, _F8_1D, _F8_1D, _F8
    )
)
def go1_limit(targets, measured, previous, fresh, use_previous, lower, upper, max_change):
    """Go1 joint targets after the rate and position limits (``Go1Limits.limit_reference``).

    ``targets``, ``measured`` (joint angles) and ``previous`` (the last limited targets; ignored
    unless ``use_previous``) are (B, J); ``fresh`` (B,) worlds that start from their measured
    joints; ``lower`` and ``upper`` (J,) the position limits with the margin applied. Returns
    the limited targets, (B, 2) counts (joint limits, target change) and a status: ``OK``, or
    which input is not finite (then nothing else is meaningful).
    """
    count, joints = targets.shape
    clamped = np.empty((count, joints))
    counts = np.zeros((count, 2), dtype=np.int64)
    for b in range(count):
        for j in range(joints):
            if not math.isfinite(targets[b, j]):
                return clamped, counts, TARGETS_NOT_FINITE
    for b in range(count):
        for j in range(joints):
            if not math.isfinite(measured[b, j]):
                return clamped, counts, JOINTS_NOT_FINITE
    for b in range(count):
        start_from_joints = not use_previous or fresh[b]
        position_limited = 0
        rate_limited = 0
        for j in range(joints):
            reference = measured[b, j] if start_from_joints else previous[b, j]
            change = targets[b, j] - reference
            limited = reference + _clip(change, -max_change, max_change)
            value = _clip(limited, lower[j], upper[j])
            clamped[b, j] = value
            if limited != value:
                position_limited = 1
            if abs(change) > max_change:
                rate_limited = 1
        counts[b, 0] = position_limited
        counts[b, 1] = rate_limited
    return clamped, counts, OK


@_kernel(
    numba.types.Tuple((_OUT_B1_1D, _OUT_B1_1D, _OUT_F8_1D))(
        _F8_2D, _F8_2D, _F8_2D, _F8_1D, _F8, _F8, _F8, _F8, _F8
    )
)
def go1_abort(
    quat,
    joint_pos,
    hip_offsets,
    thigh_y,
    thigh_length,
    calf_length,
    foot_radius,
    max_tilt,
    min_height,
):
    """Per world: tilted (|roll| or |pitch| above ``max_tilt``), too low (trunk height below
    ``min_height``), and the trunk height (``robots.go1.trunk_height``'s arithmetic).

    ``quat`` (B, 4) w, x, y, z; ``joint_pos`` (B, 12); ``hip_offsets`` (4, 3) and ``thigh_y``
    (4,) (the thigh offset with each leg's sign) in the trunk frame. NaN compares false, as in
    NumPy: a NaN state aborts nothing (the loop never hands one over).
    """
    count = quat.shape[0]
    tilted = np.empty(count, dtype=np.bool_)
    low = np.empty(count, dtype=np.bool_)
    height = np.empty(count)
    num_legs = hip_offsets.shape[0]
    for b in range(count):
        w, x, y, z = quat[b, 0], quat[b, 1], quat[b, 2], quat[b, 3]
        roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
        pitch = math.asin(_clip(2.0 * (w * y - z * x), -1.0, 1.0))
        tilted[b] = abs(roll) > max_tilt or abs(pitch) > max_tilt
        # the third row of the rotation matrix: a trunk-frame vector's world z
        row_x = 2.0 * (x * z - w * y)
        row_y = 2.0 * (y * z + w * x)
        row_z = 1.0 - 2.0 * (x * x + y * y)
        lowest = 0.0
        for leg in range(num_legs):
            abduction = joint_pos[b, 3 * leg]
            thigh = joint_pos[b, 3 * leg + 1]
            knee = joint_pos[b, 3 * leg + 2]
            foot_x = -thigh_length * math.sin(thigh) - calf_length * math.sin(thigh + knee)
            foot_z = -thigh_length * math.cos(thigh) - calf_length * math.cos(thigh + knee)
            side = thigh_y[leg]
            turned_y = side * math.cos(abduction) - foot_z * math.sin(abduction)
            turned_z = side * math.sin(abduction) + foot_z * math.cos(abduction)
            world_z = (
                row_x * (hip_offsets[leg, 0] + foot_x)
                + row_y * (hip_offsets[leg, 1] + turned_y)
                + row_z * (hip_offsets[leg, 2] + turned_z)
            )
            # the lowest foot, with NumPy's minimum: a NaN wins
            if leg == 0 or (lowest == lowest and (world_z != world_z or world_z < lowest)):
                lowest = world_z
        height[b] = -lowest + foot_radius
        low[b] = height[b] < min_height
    return tilted, low, height
