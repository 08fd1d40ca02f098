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
library's scalar routines, which cost most of the period. Here each block of worlds is copied
into one scratch array, and one loop over the worlds per substep runs the whole RK4 substep as
straight-line code (every helper inlined, the elementary functions written without calls or
branches), which LLVM vectorises: several worlds per SIMD instruction. The tyre model's result
is dropped where the blend weight is zero (below ``blend_speed[0]``: the reference multiplies it
by zero there).

The same arithmetic in the same order as the reference, without ``fastmath`` (no reassociation,
no fused multiply-add). The elementary functions are Cephes' (below), not the C library's, so the
results agree with the NumPy path to a few units in the last place per period, not bit for bit
(the tests demand 1e-12 relative over tens of periods). Each world's numbers come from the same
code whatever the batch (a SIMD lane computes what the scalar remainder loop computes), so the
single env and ``make_vec`` stay bit-identical world by world. Clamps propagate NaN as
``np.minimum`` and ``np.maximum`` do; NaN and inf give the reference's NaN and inf.

The cost: numba inlines everything into one loop body per model, which takes about a minute per
model the first time (each model is compiled at its first use, then loaded from numba's on-disk
cache in a fraction of a second).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from sim2online_envs.numba_cache import use_a_writable_numba_cache

use_a_writable_numba_cache()  # before the first njit: the kernels below cache there

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

#: Every helper is inlined by numba itself into the loop over worlds (LLVM's inliner leaves some
#: out, and a call in the loop stops its vectorisation): the loop body is then straight-line
#: code that LLVM vectorises (SIMD, several worlds at a time). ``error_model="numpy"``: a division
#: by zero gives inf or NaN, as in the NumPy reference, instead of raising ZeroDivisionError.
_always_inline = numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")

# -- elementary functions, vectorisable ---------------------------------------------------------
# The C library's atan, sin, cos and tanh are calls that LLVM cannot vectorise and cost most of a
# scalar substep. These are Cephes' double-precision algorithms (S. L. Moshier) written without
# branches: the same range reductions and rational approximations, accurate to about one unit in
# the last place (tests/test_racecar_kernels.py checks them against the C library).

_PIO2 = 1.57079632679489661923
_PIO4 = 0.78539816339744830962
_MOREBITS = 6.123233995736765886130e-17  # pi/2 - _PIO2
_T3P8 = 2.41421356237309504880  # tan(3 pi / 8)
_FOPI = 1.27323954473516268615  # 4 / pi
_DP1, _DP2, _DP3 = 7.85398125648498535156e-1, 3.77489470793079817668e-8, 2.69515142907905952645e-15
#: Above this the sine's range reduction loses accuracy (arguments here are below 4).
_MAX_SIN_ARGUMENT = 1e15
_LOG2E = 1.4426950408889634073599
_LN2_HI, _LN2_LO = 6.93145751953125e-1, 1.42860682030941723212e-6
#: exp's argument is clipped here in tanh (tanh(40) is 1 to double precision).
_MAX_EXP_ARGUMENT = 80.0


@_always_inline
def _minimum(value: float, bound: float) -> float:
    """``np.minimum(value, bound)`` for a finite ``bound``: NaN propagates."""
    return value if (value != value or value < bound) else bound


@_always_inline
def _maximum(value: float, bound: float) -> float:
    """``np.maximum(value, bound)`` for a finite ``bound``: NaN propagates."""
    return value if (value != value or value > bound) else bound


@_always_inline
def atan(x: float) -> float:
    """arctan(x) (Cephes ``atan``): NaN for NaN, +-pi/2 for +-inf."""
    ax = abs(x)
    big = ax > _T3P8
    mid = ax > 0.66
    reduced = -1.0 / ax if big else ((ax - 1.0) / (ax + 1.0) if mid else ax)
    offset = _PIO2 if big else (_PIO4 if mid else 0.0)
    extra = _MOREBITS if big else (0.5 * _MOREBITS if mid else 0.0)
    z = reduced * reduced
    p = (
        (((-8.750608600031904122785e-1 * z - 1.615753718733365076637e1) * z
          - 7.500855792314704667340e1) * z - 1.228866684490136173410e2) * z
        - 6.485021904942025371773e1
    )  # fmt: skip
    q = (
        ((((z + 2.485846490142306297962e1) * z + 1.650270098316988542046e2) * z
          + 4.328810604912902668951e2) * z + 4.853903996359136964868e2) * z
        + 1.945506571482613964425e2
    )  # fmt: skip
    result = offset + ((reduced * (z * p / q) + reduced) + extra)
    return -result if x < 0.0 else result


@_always_inline
def atan2_nonnegative(y: float, x: float) -> float:
    """arctan2(y, x) for x >= 0 (or NaN), as the C library's: atan(y / x), with its values where
    the ratio is 0 / 0 or inf / inf."""
    ratio = y / x
    result = atan(ratio)
    if ratio != ratio and x == x and y == y:  # 0 / 0 or inf / inf (no test against inf:
        # LLVM turns that into an intrinsic its vectoriser does not know)
        result = y if x == 0.0 else (_PIO4 if y > 0.0 else -_PIO4)  # atan2(+-0, 0) = +-0
    return result


@_always_inline
def sincos(x: float) -> tuple[float, float]:
    """(sin x, cos x) (Cephes ``sin`` and ``cos``, one range reduction): NaN for non-finite x."""
    ax = abs(x)
    finite = ax < _MAX_SIN_ARGUMENT  # False for inf and NaN
    safe = ax if finite else 0.0  # no float-to-int conversion of inf or NaN
    # Cephes' integer octant arithmetic in floats (exact below 2^53; no int conversions).
    y = np.floor(safe * _FOPI)
    y += y - 2.0 * np.floor(0.5 * y)  # to the even octant above an odd one
    octant = y - 8.0 * np.floor(0.125 * y)  # 0, 2, 4 or 6
    upper = octant > 3.0
    swap = octant == 2.0 or octant == 6.0
    z = ((safe - y * _DP1) - y * _DP2) - y * _DP3
    zz = z * z
    sin_poly = z + z * zz * (
        ((((1.58962301576546568060e-10 * zz - 2.50507477628578072866e-8) * zz
           + 2.75573136213857245213e-6) * zz - 1.98412698295895385996e-4) * zz
         + 8.33333333332211858878e-3) * zz - 1.66666666666666307295e-1
    )  # fmt: skip
    cos_poly = (1.0 - 0.5 * zz) + zz * zz * (
        ((((-1.13585365213876817300e-11 * zz + 2.08757008419747316778e-9) * zz
           - 2.75573141792967388112e-7) * zz + 2.48015872888517045348e-5) * zz
         - 1.38888888888730564116e-3) * zz + 4.16666666666665929218e-2
    )  # fmt: skip
    sin = cos_poly if swap else sin_poly
    cos = sin_poly if swap else cos_poly
    if upper != (x < 0.0):
        sin = -sin
    if upper != swap:
        cos = -cos
    if not finite:
        sin = cos = ax - ax  # NaN
    return sin, cos


@_always_inline
def tanh(x: float) -> float:
    """tanh(x) (Cephes ``tanh``, its ``exp`` inlined): NaN for NaN, +-1 for +-inf."""
    ax = abs(x)
    z = x * x
    small = x + x * z * (
        ((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
         - 1.61468768441708447952e3)
        / (((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
           + 4.84406305325125486048e3)
    )  # fmt: skip
    # Large |x|: 1 - 2 / (exp(2 |x|) + 1), exp by Cephes' reduction to 2^k exp(r).
    y = 2.0 * ax
    y = y if y < _MAX_EXP_ARGUMENT else _MAX_EXP_ARGUMENT  # NaN too: fixed below
    k = np.floor(_LOG2E * y + 0.5)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    rr = r * r
    px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
              + 9.99999999999999999910e-1)  # fmt: skip
    qx = (((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
           + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0)  # fmt: skip
    # 2^k (k <= 116) from its binary digits, exact.
    scale = 1.0
    if k >= 64.0:
        scale *= 18446744073709551616.0
        k -= 64.0
    if k >= 32.0:
        scale *= 4294967296.0
        k -= 32.0
    if k >= 16.0:
        scale *= 65536.0
        k -= 16.0
    if k >= 8.0:
        scale *= 256.0
        k -= 8.0
    if k >= 4.0:
        scale *= 16.0
        k -= 4.0
    if k >= 2.0:
        scale *= 4.0
        k -= 2.0
    if k >= 1.0:
        scale *= 2.0
    exp_y = (1.0 + 2.0 * (px / (qx - px))) * scale
    large = 1.0 - 2.0 / (exp_y + 1.0)
    if x < 0.0:
        large = -large
    result = small if ax < 0.625 else large
    return result if ax == ax else x


# -- the car ---------------------------------------------------------------------------------------


@_always_inline
def _actuation(steer, throttle, target_steer, target_throttle, steer_gain, max_change,
               throttle_gain, inv_wheelbase, cm1, cm2):  # fmt: skip
    """``_actuation_after`` for one world: (steer, sin, cos, tan / L, throttle, drive, back-EMF)."""
    change = (target_steer - steer) * steer_gain
    change = _maximum(_minimum(change, max_change), -max_change)
    steer = change + steer
    throttle = (target_throttle - throttle) * throttle_gain + throttle
    sin, cos = sincos(steer)
    tan_over_l = (sin / cos) * inv_wheelbase
    return steer, sin, cos, tan_over_l, throttle, cm1 * throttle, abs(throttle) * cm2


@_always_inline
def _longitudinal(vx, drive, back_emf, inv_mass, viscous, cr0, cr2, fx_max, inv_eps):  # fmt: skip
    """``_longitudinal_acceleration`` for one world, m/s^2."""
    force = drive - (((abs(vx) * cr2 + back_emf) + viscous) * vx)
    force -= tanh(vx * inv_eps) * cr0
    force = _maximum(_minimum(force, fx_max), -fx_max)
    return force * inv_mass


@_always_inline
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
    front_lateral = lf * omega + vy
    forward_front = abs(vx * cos + front_lateral * sin)
    side_front = front_lateral * cos - vx * sin
    side_rear = omega * (-lr) + vy
    force_front = sincos(atan(atan2_nonnegative(side_front, forward_front) * c[8]) * c[10])[0]
    force_front *= peak_front
    force_rear = sincos(atan(atan2_nonnegative(side_rear, abs(vx)) * c[9]) * c[11])[0]
    force_rear *= peak_rear
    dyn_vx = (vy * omega + ax) - (force_front * sin) * inv_mass
    front_y = force_front * cos
    dyn_vy = (force_rear + front_y) * inv_mass - vx * omega
    dyn_omega = (front_y * lf - force_rear * lr) * inv_inertia
    dvx = ax + (dyn_vx - ax) * weight
    dvy = kin_vy + (dyn_vy - kin_vy) * weight
    domega = kin_omega + (dyn_omega - kin_omega) * weight
    if weight == 0.0 and abs(omega) < _SKIP_MAX_YAW_RATE:
        # The reference adds (dyn - kin) * 0 = 0 (the tyres are finite here): exactly kin.
        dvx, dvy, domega = ax, kin_vy, kin_omega
    return (
        cos_psi * vx + (-sin_psi) * vy,
        sin_psi * vx + cos_psi * vy,
        (-sin_psi) * omega,
        cos_psi * omega,
        dvx,
        dvy,
        domega,
    )


#: Worlds copied into the kernel's scratch array at a time: its rows are a compile-time distance
#: apart, so LLVM sees that the loop over worlds touches one array at fixed offsets and vectorises
#: it without runtime alias checks (with the backend's two dozen separate arrays it does not).
_BLOCK = 256
#: Rows of the scratch array: state, actuators, command, world constants, negated peak forces.
_Q, _ACT, _CMD, _WORLD, _PEAK, _ROWS = 0, 7, 14, 16, 24, 26


@_always_inline
def _substep(dynamic, s, j, c):  # fmt: skip
    """One RK4 substep (``_rk4_substep``) of the world in column ``j`` of scratch ``s``."""
    b = _BLOCK
    h, half_h, sixth_h, lr, inv_l = c[0], 0.5 * c[0], c[0] / 6.0, c[2], c[3]
    x, y, cs, sn = s[j], s[b + j], s[2 * b + j], s[3 * b + j]
    vx, vy, om = s[4 * b + j], s[5 * b + j], s[6 * b + j]
    o = _ACT * b + j
    a = (s[o], s[o + b], s[o + 2 * b], s[o + 3 * b], s[o + 4 * b], s[o + 5 * b], s[o + 6 * b])
    ts, tt = s[_CMD * b + j], s[(_CMD + 1) * b + j]
    o = _WORLD * b + j
    inv_mass, inv_inertia, cm1, cm2 = s[o], s[o + b], s[o + 2 * b], s[o + 3 * b]
    w = (inv_mass, inv_inertia, s[o + 4 * b], s[o + 5 * b], s[o + 6 * b], s[o + 7 * b])
    pf, pr = s[_PEAK * b + j], s[(_PEAK + 1) * b + j]
    mid = _actuation(a[0], a[4], ts, tt, c[12], c[13], c[14], inv_l, cm1, cm2)
    end = _actuation(a[0], a[4], ts, tt, c[15], c[16], c[17], inv_l, cm1, cm2)
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
    vx += ((k1[4] + k4[4]) + 2.0 * (k2[4] + k3[4])) * sixth_h
    vy += ((k1[5] + k4[5]) + 2.0 * (k2[5] + k3[5])) * sixth_h
    om += ((k1[6] + k4[6]) + 2.0 * (k2[6] + k3[6])) * sixth_h
    if not dynamic:
        # No slip: vy and omega are set by vx and the steering angle.
        om = vx * end[3]
        vy = om * lr
    s[j] = x + ((k1[0] + k4[0]) + 2.0 * (k2[0] + k3[0])) * sixth_h
    s[b + j] = y + ((k1[1] + k4[1]) + 2.0 * (k2[1] + k3[1])) * sixth_h
    s[2 * b + j] = cs + ((k1[2] + k4[2]) + 2.0 * (k2[2] + k3[2])) * sixth_h
    s[3 * b + j] = sn + ((k1[3] + k4[3]) + 2.0 * (k2[3] + k3[3])) * sixth_h
    s[4 * b + j], s[5 * b + j], s[6 * b + j] = vx, vy, om
    o = _ACT * b + j
    s[o], s[o + b], s[o + 2 * b], s[o + 3 * b] = end[0], end[1], end[2], end[3]
    s[o + 4 * b], s[o + 5 * b], s[o + 6 * b] = end[4], end[5], end[6]


@_always_inline
def _period(dynamic, q, act, command, world, neg_peak_force, constants, n_substeps):  # fmt: skip
    """:func:`rk4_substeps` for one model, ``dynamic`` a compile-time constant."""
    c = (
        constants[0], constants[1], constants[2], constants[3], constants[4], constants[5],
        constants[6], constants[7], constants[8], constants[9], constants[10], constants[11],
        constants[12], constants[13], constants[14], constants[15], constants[16], constants[17],
    )  # fmt: skip
    b = _BLOCK
    s = np.empty(_ROWS * b)
    for start in range(0, q.shape[1], b):
        m = min(b, q.shape[1] - start)
        for j in range(m):
            for r in range(7):
                s[(_Q + r) * b + j] = q[r, start + j]
                s[(_ACT + r) * b + j] = act[r][start + j]
            for r in range(8):
                s[(_WORLD + r) * b + j] = world[r][start + j]
            for r in range(2):
                s[(_CMD + r) * b + j] = command[r, start + j]
                s[(_PEAK + r) * b + j] = neg_peak_force[r, start + j]
        # One loop over the worlds per substep: a straight-line body, vectorised.
        for _ in range(n_substeps):
            for j in range(m):
                _substep(dynamic, s, j, c)
        for j in range(m):
            cs, sn = s[(_Q + 2) * b + j], s[(_Q + 3) * b + j]
            norm = 1.0 / math.sqrt(cs * cs + sn * sn)
            q[0, start + j], q[1, start + j] = s[_Q * b + j], s[(_Q + 1) * b + j]
            q[2, start + j], q[3, start + j] = cs * norm, sn * norm
            for r in range(4, 7):
                q[r, start + j] = s[(_Q + r) * b + j]
            for r in range(7):
                act[r][start + j] = s[(_ACT + r) * b + j]


# Compiled at their first call, each model on its own (everything is inlined into one loop body:
# about a minute per model on a cold cache, then loaded from numba's on-disk cache).
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dynamic_period(q, act, command, world, neg_peak_force, constants, n_substeps):  # fmt: skip
    _period(True, q, act, command, world, neg_peak_force, constants, n_substeps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _kinematic_period(q, act, command, world, neg_peak_force, constants, n_substeps):  # fmt: skip
    _period(False, q, act, command, world, neg_peak_force, constants, n_substeps)


def rk4_substeps(
    q: np.ndarray,
    act: tuple[np.ndarray, ...],
    command: np.ndarray,
    world: tuple[np.ndarray, ...],
    neg_peak_force: np.ndarray,
    constants: np.ndarray,
    n_substeps: int,
    dynamic: bool,
) -> None:
    """Hold ``command`` for ``n_substeps`` RK4 substeps in every world, in place.

    ``q`` (7, N): x, y, cos psi, sin psi, vx, vy, omega, updated and its heading renormalised at
    the end, as ``apply`` does. ``act``: the seven (N,) rows of ``_Actuation`` (steer, sin, cos,
    tan / L, throttle, drive, back-EMF), updated to the end of the period. ``command`` (2, N):
    held steering target (rad, with the offset) and throttle. ``world``: (N,) inverse mass,
    inverse inertia, C_m1, C_m2, C_v, C_r0, C_r2, traction limit; ``neg_peak_force`` (2, N);
    ``constants``: see :data:`CONSTANT_NAMES`. ``dynamic``: the dynamic bicycle, else the
    kinematic one. All float64.
    """
    period = _dynamic_period if dynamic else _kinematic_period
    period(q, act, command, world, neg_peak_force, constants, n_substeps)
