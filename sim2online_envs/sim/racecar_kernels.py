"""The race car's control period compiled with numba: every RK4 substep of every world in one call.

:meth:`RaceCarVectorBackend.apply <sim2online_envs.sim.racecar.RaceCarVectorBackend.apply>`
calls :func:`rk4_substeps` for the rigid body and the actuators of all worlds; the NumPy methods
of the backend (``_rk4_substep``, ``_dynamic_rates``, ``_kinematic_rates``,
``_actuation_after``, ``_longitudinal_acceleration``) stay the specification, selected with
``RaceCarVectorBackend.use_kernels = False``, and ``tests/test_racecar_kernels.py`` checks the two
against each other on random states, commands and world parameters, both models, the sliding
regime and non-finite states.

Why: the NumPy version makes about a hundred passes over the world axis per control period, each
writing a temporary, and its tyre functions (``arctan2``, ``arctan``, ``sin``, ``tanh``) are the C
library's scalar routines in NumPy too. Compiled, each world's state stays in registers through
its substeps, and the tyre model is skipped where the blend weight is zero (below
``blend_speed[0]``), where the reference multiplies it by zero.

The same arithmetic in the same order as the reference, without ``fastmath`` (no reassociation,
no fused multiply-add), and the same C library functions: the results agree with the NumPy path
to the last bit or within a rounding error, and each world's numbers come from the same scalar
code whatever the batch, so the single env and ``make_vec`` stay bit-identical world by world.
Clamps propagate NaN as ``np.minimum`` and ``np.maximum`` do.
"""

from __future__ import annotations

import math

import numba

# Importing the Go1 task first points numba's on-disk cache at a writable folder
# (``use_a_writable_numba_cache``); the kernels below are compiled against it.
import sim2online_envs.tasks.go1  # noqa: F401

#: Entries of the ``constants`` array of :func:`rk4_substeps` (built by
#: ``RaceCarVectorBackend._kernel_constants``).
CONSTANT_NAMES = (
    "physics_dt",
    "lf",
    "lr",
    "inv_wheelbase",
    "inv_rolling_smoothing_speed",
    "inv_kinematic_relaxation",
    "blend_low",
    "inv_blend_width",
    "tire_b_front",
    "tire_b_rear",
    "tire_c_front",
    "tire_c_rear",
    "steer_gain_half",
    "max_change_half",
    "throttle_gain_half",
    "steer_gain_end",
    "max_change_end",
    "throttle_gain_end",
)
#: Above this yaw rate (rad/s) the tyre model is evaluated even where its blend weight is zero,
#: so that an overflow gives the reference's NaN (far beyond any physical state).
_SKIP_MAX_YAW_RATE = 1e100

#: ``error_model="numpy"``: a division by zero gives inf or NaN, as in the NumPy reference,
#: instead of raising ZeroDivisionError.
_compiled = numba.njit(cache=True, nogil=True, error_model="numpy")
_IN_1D = numba.types.Array(numba.float64, 1, "A", readonly=True)
_IN_2D = numba.types.Array(numba.float64, 2, "A", readonly=True)
_OUT_1D = numba.types.Array(numba.float64, 1, "A")
_OUT_2D = numba.types.Array(numba.float64, 2, "A")


@_compiled
def _minimum(value: float, bound: float) -> float:
    """``np.minimum(value, bound)`` for a finite ``bound``: NaN propagates."""
    return value if (value != value or value < bound) else bound


@_compiled
def _maximum(value: float, bound: float) -> float:
    """``np.maximum(value, bound)`` for a finite ``bound``: NaN propagates."""
    return value if (value != value or value > bound) else bound


@_compiled
def _actuation(steer, throttle, target_steer, target_throttle, steer_gain, max_change,
               throttle_gain, inv_wheelbase, cm1, cm2):  # fmt: skip
    """``_actuation_after`` for one world: (steer, sin, cos, tan / L, throttle, drive, back-EMF)."""
    change = (target_steer - steer) * steer_gain
    change = _maximum(_minimum(change, max_change), -max_change)
    steer = change + steer
    throttle = (target_throttle - throttle) * throttle_gain + throttle
    sin, cos = math.sin(steer), math.cos(steer)
    tan_over_l = (sin / cos) * inv_wheelbase
    return steer, sin, cos, tan_over_l, throttle, cm1 * throttle, abs(throttle) * cm2


@_compiled
def _longitudinal(vx, drive, back_emf, inv_mass, viscous, cr0, cr2, fx_max, inv_eps):  # fmt: skip
    """``_longitudinal_acceleration`` for one world, m/s^2."""
    force = drive - (((abs(vx) * cr2 + back_emf) + viscous) * vx)
    force -= math.tanh(vx * inv_eps) * cr0
    force = _maximum(_minimum(force, fx_max), -fx_max)
    return force * inv_mass


@_compiled
def _rates(dynamic, cos_psi, sin_psi, vx, vy, omega, sin, cos, tan_over_l, drive, back_emf,
           world, peak_front, peak_rear, c):  # fmt: skip
    """d/dt of (x, y, cos psi, sin psi, vx, vy, omega) of one world (``_dynamic_rates`` or
    ``_kinematic_rates``). ``world``: its inverse mass, inverse inertia, C_v, C_r0, C_r2 and
    traction limit; ``peak_*``: its negated peak tyre forces; ``c``: the constants."""
    inv_mass, inv_inertia, viscous, cr0, cr2, fx_max = world
    lf, lr = c[1], c[2]
    ax = _longitudinal(vx, drive, back_emf, inv_mass, viscous, cr0, cr2, fx_max, c[4])
    if not dynamic:
        yaw = vx * tan_over_l
        side = yaw * lr
        return (
            cos_psi * vx + (-sin_psi) * side,
            sin_psi * vx + cos_psi * side,
            (-sin_psi) * yaw,
            cos_psi * yaw,
            ax,
            0.0,
            0.0,
        )
    # Kinematic bicycle with relaxation toward the no-slip vy and omega.
    inv_relax = c[5]
    kin_omega = ax * tan_over_l + (vx * tan_over_l - omega) * inv_relax
    kin_vy = kin_omega * lr + (lr * omega - vy) * inv_relax
    weight = math.sqrt(vx * vx + vy * vy)
    weight = _maximum(_minimum((weight - c[6]) * c[7], 1.0), 0.0)
    if weight == 0.0 and abs(omega) < _SKIP_MAX_YAW_RATE:
        # The reference adds (dyn - kin) * 0 = 0: the tyres are finite here.
        dvx, dvy, domega = ax, kin_vy, kin_omega
    else:
        front_lateral = lf * omega + vy
        forward_front = abs(vx * cos + front_lateral * sin)
        side_front = front_lateral * cos - vx * sin
        side_rear = omega * (-lr) + vy
        force_front = math.sin(math.atan(math.atan2(side_front, forward_front) * c[8]) * c[10])
        force_front *= peak_front
        force_rear = math.sin(math.atan(math.atan2(side_rear, abs(vx)) * c[9]) * c[11])
        force_rear *= peak_rear
        dyn_vx = (vy * omega + ax) - (force_front * sin) * inv_mass
        front_y = force_front * cos
        dyn_vy = (force_rear + front_y) * inv_mass - vx * omega
        dyn_omega = (front_y * lf - force_rear * lr) * inv_inertia
        dvx = ax + (dyn_vx - ax) * weight
        dvy = kin_vy + (dyn_vy - kin_vy) * weight
        domega = kin_omega + (dyn_omega - kin_omega) * weight
    return (
        cos_psi * vx + (-sin_psi) * vy,
        sin_psi * vx + cos_psi * vy,
        (-sin_psi) * omega,
        cos_psi * omega,
        dvx,
        dvy,
        domega,
    )


@numba.njit(
    numba.void(
        _OUT_2D,
        numba.types.UniTuple(_OUT_1D, 7),
        _IN_2D,
        numba.types.UniTuple(_IN_1D, 8),
        _IN_2D,
        _IN_1D,
        numba.int64,
        numba.boolean,
    ),
    cache=True,
    nogil=True,
    error_model="numpy",
)
def rk4_substeps(q, act, command, world, neg_peak_force, constants, n_substeps, dynamic):
    """Hold ``command`` for ``n_substeps`` RK4 substeps in every world, in place.

    ``q`` (7, N): x, y, cos psi, sin psi, vx, vy, omega, updated and its heading renormalised at
    the end, as ``apply`` does. ``act``: the seven (N,) rows of ``_Actuation`` (steer, sin, cos,
    tan / L, throttle, drive, back-EMF), updated to the end of the period. ``command`` (2, N):
    held steering target (rad, with the offset) and throttle. ``world``: (N,) inverse mass,
    inverse inertia, C_m1, C_m2, C_v, C_r0, C_r2, traction limit; ``neg_peak_force`` (2, N);
    ``constants``: see :data:`CONSTANT_NAMES`. ``dynamic``: the dynamic bicycle, else the
    kinematic one.
    """
    inv_mass, inv_inertia, cm1, cm2, viscous, cr0, cr2, fx_max = world
    c = constants
    h = c[0]
    half_h = 0.5 * h
    sixth_h = h / 6.0
    lr, inv_l = c[2], c[3]
    for i in range(q.shape[1]):
        x, y, cs, sn, vx, vy, om = q[0, i], q[1, i], q[2, i], q[3, i], q[4, i], q[5, i], q[6, i]
        a = (act[0][i], act[1][i], act[2][i], act[3][i], act[4][i], act[5][i], act[6][i])
        w = (inv_mass[i], inv_inertia[i], viscous[i], cr0[i], cr2[i], fx_max[i])
        pf, pr = neg_peak_force[0, i], neg_peak_force[1, i]
        ts, tt = command[0, i], command[1, i]
        for _ in range(n_substeps):
            mid = _actuation(a[0], a[4], ts, tt, c[12], c[13], c[14], inv_l, cm1[i], cm2[i])
            end = _actuation(a[0], a[4], ts, tt, c[15], c[16], c[17], inv_l, cm1[i], cm2[i])
            k1 = _rates(dynamic, cs, sn, vx, vy, om, a[1], a[2], a[3], a[5], a[6], w, pf, pr, c)
            k2 = _rates(
                dynamic,
                cs + half_h * k1[2],
                sn + half_h * k1[3],
                vx + half_h * k1[4],
                vy + half_h * k1[5],
                om + half_h * k1[6],
                mid[1], mid[2], mid[3], mid[5], mid[6], w, pf, pr, c,
            )  # fmt: skip
            k3 = _rates(
                dynamic,
                cs + half_h * k2[2],
                sn + half_h * k2[3],
                vx + half_h * k2[4],
                vy + half_h * k2[5],
                om + half_h * k2[6],
                mid[1], mid[2], mid[3], mid[5], mid[6], w, pf, pr, c,
            )  # fmt: skip
            k4 = _rates(
                dynamic,
                cs + h * k3[2],
                sn + h * k3[3],
                vx + h * k3[4],
                vy + h * k3[5],
                om + h * k3[6],
                end[1], end[2], end[3], end[5], end[6], w, pf, pr, c,
            )  # fmt: skip
            x += ((k1[0] + k4[0]) + 2.0 * (k2[0] + k3[0])) * sixth_h
            y += ((k1[1] + k4[1]) + 2.0 * (k2[1] + k3[1])) * sixth_h
            cs += ((k1[2] + k4[2]) + 2.0 * (k2[2] + k3[2])) * sixth_h
            sn += ((k1[3] + k4[3]) + 2.0 * (k2[3] + k3[3])) * sixth_h
            vx += ((k1[4] + k4[4]) + 2.0 * (k2[4] + k3[4])) * sixth_h
            vy += ((k1[5] + k4[5]) + 2.0 * (k2[5] + k3[5])) * sixth_h
            om += ((k1[6] + k4[6]) + 2.0 * (k2[6] + k3[6])) * sixth_h
            if not dynamic:
                # No slip: vy and omega are set by vx and the steering angle.
                om = vx * end[3]
                vy = om * lr
            a = end
        norm = 1.0 / math.sqrt(cs * cs + sn * sn)
        q[0, i], q[1, i], q[2, i], q[3, i] = x, y, cs * norm, sn * norm
        q[4, i], q[5, i], q[6, i] = vx, vy, om
        for row in range(7):
            act[row][i] = a[row]
