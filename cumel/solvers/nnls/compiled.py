"""The iteration compiled (numba): ``kernels/nnls.cu``'s per-frame loop, frame by frame, on the CPU.

One call solves the frames of one chunk, one frame after the other, each exactly as one warp of
the kernel does (the package docstring's iteration; the kernel's order of operations, the
Thomas sweep and its line search): the start, then per Newton step one pass, mel by mel over
its bin run, for ``t`` (``z`` with a prior), the active set, ``A s``, ``F`` and ``J``'s diagonal
and super-diagonal (a run's terms of the next mel carried to it), the Thomas sweep, one pass for
``u`` and ``phi'(1)``, and where the full step is not taken, one pass that sets aside the bins
whose sign changes on ``(0, 1)`` (the others add a linear part to ``phi'``): the exact line
search's rounds visit those few bins only, where the kernel's visit every bin.  Where the
kernel recomputes ``t`` and ``u`` from ``mu`` and ``delta`` at each pass, this loop keeps them
in two ``n_freqs`` vectors computed once a step by the same expressions: the same values.  Sums
run in index order (the kernel's lanes sum in another order: the same iterates up to rounding,
and the same Newton steps, tested).

The function holds no Python object and releases the GIL (``nogil``): the worker threads of
:func:`cumel.solvers.nnls.solve_into` run their chunks truly side by side.  The machine code is
cached on disk (``cache=True``, numba's ``__pycache__`` next to this file or its cache
directory): a process compiles it once (:data:`COLD_COMPILE_NOTE`), later processes load it.

Importing this module imports numba; :func:`cumel.solvers.nnls.chunks.compiled_module` decides
whether to (``CUMEL_CPU``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

COLD_COMPILE_NOTE = ("cumel: compiling the CPU solver (numba, once: cached on disk for the next "
                     "runs) ...")


@njit(nogil=True, cache=True, error_model="numpy")
def _thomas(diag, upper, upper_scaled, rhs, x, n):
    """``x <- T^-1 rhs``, the kernel's ``thomas_sweep`` (``upper_scaled`` is scratch)."""
    inv_pivot = 1.0 / diag[0]
    upper_scaled[0] = upper[0] * inv_pivot
    y = rhs[0] * inv_pivot
    x[0] = y
    for k in range(1, n):
        inv_pivot = 1.0 / (diag[k] - upper[k - 1] * upper_scaled[k - 1])
        upper_scaled[k] = upper[k] * inv_pivot
        y = (rhs[k] - upper[k - 1] * y) * inv_pivot
        x[k] = y
    for k in range(n - 2, -1, -1):
        x[k] -= upper_scaled[k] * x[k + 1]


@njit(nogil=True, cache=True, error_model="numpy")
def backward_frames(s_all, g_all, out, lo, w_lo, w_hi, row_start, eps):
    """The gradient of the answer (:mod:`cumel.solvers.gradient`), ``kernels/nnls.cu``'s
    ``nnls_backward`` frame by frame: ``out[f] = J^-1 A D g`` with ``D = diag(s > 0)``.

    ``s_all``, ``g_all`` (n, n_freqs), float64, bin order, read only; ``out`` (n, n_mels) float64.
    Per mel ``k`` the sums over its bin run and the run below it, in bin order (the kernel's), then
    the Thomas sweep.
    """
    n_frames, n_mels = out.shape
    rhs = np.empty(n_mels)
    diag = np.empty(n_mels)
    upper = np.empty(n_mels)
    upper_scaled = np.empty(n_mels)
    x = np.empty(n_mels)
    for f in range(n_frames):
        s = s_all[f]
        g = g_all[f]
        for k in range(n_mels):
            r = 0.0
            dg = 0.0
            up = 0.0
            for j in range(row_start[k], row_start[k + 1]):          # lo[j] == k
                if s[j] > 0.0:
                    r += w_lo[j] * g[j]
                    dg += w_lo[j] * w_lo[j]
                    up += w_lo[j] * w_hi[j]
            if k > 0:
                for j in range(row_start[k - 1], row_start[k]):      # lo[j] == k - 1
                    if s[j] > 0.0:
                        r += w_hi[j] * g[j]
                        dg += w_hi[j] * w_hi[j]
            rhs[k] = r
            diag[k] = dg + eps
            upper[k] = up
        _thomas(diag, upper, upper_scaled, rhs, x, n_mels)
        for k in range(n_mels):
            out[f, k] = x[k]


@njit(nogil=True, cache=True, error_model="numpy")
def solve_frames(m_all, s_all, iterations, kkt_out, lo, w_lo, w_hi, row_start, start_inv_pivot,
                 start_upper_scaled, start_upper, eps, cap, tolerance_loss, tolerance_change,
                 full_step_tie, floor_kkt, floor_ratio, prior, center, spread, floor):
    """Solve the frames ``m_all[f]`` (n, n_mels), float64, not modified, into ``s_all[f]``
    (n, n_freqs), float64, bin order; ``iterations`` and ``kkt_out`` (n,).

    With ``prior`` True, ``center`` and ``spread`` (n, n_freqs), float64, bin order (read only)
    are the proximal variant's ``c`` and ``v`` before their per-frame scaling; otherwise they are
    not read.
    """
    n_frames, n_mels = m_all.shape
    n_freqs = s_all.shape[1]
    m = np.empty(n_mels)
    mu = np.zeros(n_mels + 1)          # mu[n_mels] = 0 pads A.T mu at the last mel
    delta = np.zeros(n_mels + 1)
    F = np.empty(n_mels)
    diag = np.empty(n_mels)
    upper = np.empty(n_mels)
    upper_scaled = np.empty(n_mels)
    t = np.empty(n_freqs)              # A.T mu (z = c + v A.T mu with a prior)
    u = np.empty(n_freqs)              # A.T delta
    cross_t = np.empty(n_freqs)        # the line search's crossing bins: t, v u, u, breakpoint
    cross_su = np.empty(n_freqs)
    cross_u = np.empty(n_freqs)
    cross_b = np.empty(n_freqs)
    c = np.zeros(n_freqs)
    v = np.ones(n_freqs)
    ww_lo = w_lo * w_lo                # J's terms of each bin
    ww_hi = w_hi * w_hi
    ww_lohi = w_lo * w_hi
    mask = np.zeros(n_freqs, dtype=np.bool_)
    mask_prev = np.zeros(n_freqs, dtype=np.bool_)
    inf = np.inf
    for f in range(n_frames):
        # ---- m, rescaled exactly by a power of two (max |m| in [0.5, 1)), ||m|| ----
        # (the maximum as np.max takes it: a NaN anywhere gives NaN, whose exponent is 0)
        m_max = 0.0
        for k in range(n_mels):
            a = abs(m_all[f, k])
            if a > m_max or a != a:
                m_max = a
                if a != a:
                    break
        exponent = math.frexp(m_max)[1]
        # x 2^-e and x 2^e: a product with the power of two where it is a double (the same
        # correctly rounded value as ldexp, a libm call a value), ldexp at the extremes
        by_power = -1022 <= exponent <= 1022
        scale_down = math.ldexp(1.0, -exponent) if by_power else 0.0
        scale_up = math.ldexp(1.0, exponent) if by_power else 0.0
        m_sq = 0.0
        for k in range(n_mels):
            x = m_all[f, k] * scale_down if by_power else math.ldexp(m_all[f, k], -exponent)
            m[k] = x
            m_sq += x * x
        m_norm = math.sqrt(m_sq)
        if prior:
            v_max = 0.0
            for j in range(n_freqs):
                a = spread[f, j]
                if a > v_max or a != a:
                    v_max = a
                    if a != a:
                        break
            for j in range(n_freqs):
                c[j] = center[f, j] * scale_down if by_power else math.ldexp(center[f, j], -exponent)
                v[j] = (spread[f, j] / v_max if v_max > 0.0 else 1.0) + floor
        it_count = 0
        kkt = 0.0
        if not (m_norm > 0.0):
            # m = 0 (or not a number): s = 0; with a prior, max(c, 0) on the bins no triangle covers
            for j in range(n_freqs):
                x = 0.0
                if prior and w_lo[j] == 0.0 and w_hi[j] == 0.0:
                    x = max(c[j], 0.0) if c[j] == c[j] else c[j]
                s_all[f, j] = x * scale_up if by_power else math.ldexp(x, exponent)
            iterations[f] = 0
            kkt_out[f] = 0.0
            continue
        # ---- the start: mu_0 = (A diag(v) A.T + eps I)^-1 (m - A c), or the plan's factors ----
        if prior:
            for k in range(n_mels):
                ac = 0.0
                dg = 0.0
                up = 0.0
                for j in range(row_start[k], row_start[k + 1]):          # lo[j] == k
                    ac += w_lo[j] * c[j]
                    dg += (w_lo[j] * w_lo[j]) * v[j]
                    up += (w_lo[j] * w_hi[j]) * v[j]
                if k > 0:
                    for j in range(row_start[k - 1], row_start[k]):      # lo[j] == k - 1
                        ac += w_hi[j] * c[j]
                        dg += (w_hi[j] * w_hi[j]) * v[j]
                F[k] = m[k] - ac
                diag[k] = dg + eps
                upper[k] = up
            _thomas(diag, upper, upper_scaled, F, mu, n_mels)
        else:
            y = m[0] * start_inv_pivot[0]
            mu[0] = y
            for k in range(1, n_mels):
                y = (m[k] - start_upper[k - 1] * y) * start_inv_pivot[k]
                mu[k] = y
            for k in range(n_mels - 2, -1, -1):
                mu[k] -= start_upper_scaled[k] * mu[k + 1]
        mu[n_mels] = 0.0
        for j in range(n_freqs):
            mask_prev[j] = False
        exact = False
        stalled = False
        recent0 = inf
        recent1 = inf
        recent2 = inf
        it = 0
        while True:
            # ---- one pass, mel by mel over its bin run (lo[j] == k: mu[k] and mu[k + 1] at
            # hand): t = A.T mu (z with a prior), d = (t > 0) and whether it changed since the
            # last step, and (A s)_k, F_k, J's diag_k and upper_k; a run's w_hi terms belong to
            # the next mel, carried to it.  Branch-free sums: an inactive bin adds +0.0 ----
            changed = False
            f_sq = 0.0
            carry_as = 0.0
            carry_dg = 0.0
            for k in range(n_mels):
                mu_k = mu[k]
                mu_k1 = mu[k + 1]
                a_s = 0.0
                dg = 0.0
                up = 0.0
                next_as = 0.0
                next_dg = 0.0
                for j in range(row_start[k], row_start[k + 1]):
                    x = w_lo[j] * mu_k + w_hi[j] * mu_k1
                    if prior:
                        x = x * v[j] + c[j]
                    t[j] = x
                    pos = x > 0.0
                    changed = changed or pos != mask_prev[j]
                    mask[j] = pos
                    sx = x if pos else 0.0
                    dv = (v[j] if prior else 1.0) if pos else 0.0
                    a_s += w_lo[j] * sx
                    next_as += w_hi[j] * sx
                    dg += ww_lo[j] * dv
                    next_dg += ww_hi[j] * dv
                    up += ww_lohi[j] * dv
                r = (a_s + carry_as) + eps * mu_k - m[k]
                F[k] = r
                diag[k] = (dg + carry_dg) + eps
                upper[k] = up
                f_sq += r * r
                carry_as = next_as
                carry_dg = next_dg
            kkt = math.sqrt(f_sq) / m_norm
            at_floor = kkt <= floor_kkt and kkt > floor_ratio * min(recent0, min(recent1, recent2))
            recent2 = recent1
            recent1 = recent0
            recent0 = kkt
            # a non-finite frame stops too (the transform then raises): it can never meet a rule
            if (kkt <= tolerance_loss or not math.isfinite(kkt) or it == cap or stalled or at_floor
                    or (exact and not changed)):
                break
            it_count += 1
            it += 1
            # ---- delta = -J^-1 F (Thomas) ----
            _thomas(diag, upper, upper_scaled, F, delta, n_mels)
            for k in range(n_mels):
                delta[k] = -delta[k]
            # ---- line search on phi'(alpha) ----
            c0 = 0.0
            c1 = 0.0
            slope0 = 0.0
            for k in range(n_mels):
                c0 += (eps * mu[k] - m[k]) * delta[k]
                c1 += delta[k] * delta[k]
                slope0 += F[k] * delta[k]
            c1 = eps * c1
            s_sq = 0.0
            u_sq = 0.0
            dphi1 = 0.0
            for k in range(n_mels):
                delta_k = delta[k]
                delta_k1 = delta[k + 1]
                for j in range(row_start[k], row_start[k + 1]):
                    uj = w_lo[j] * delta_k + w_hi[j] * delta_k1
                    u[j] = uj
                    su = v[j] * uj if prior else uj
                    x = t[j]
                    s = 0.0 if x < 0.0 else x
                    s_sq += s * s
                    u_sq += su * su
                    x1 = x + su
                    dphi1 += (0.0 if x1 < 0.0 else x1) * uj
            hi_start = dphi1 + c0 + c1
            alpha = 1.0
            # full step unless phi'(1) is clearly positive (a rounding tie is a full step)
            full = not (hi_start > full_step_tie * abs(slope0))
            if not full:
                # phi' on (0, 1): the bins on throughout add a linear part (p0 + a p1), the bins
                # off throughout nothing; only the crossing bins (t and t + u of opposite signs)
                # have a breakpoint inside, so the search's rounds visit those alone
                p0 = 0.0
                p1 = 0.0
                n_cross = 0
                for j in range(n_freqs):
                    x = t[j]
                    uj = u[j]
                    su = v[j] * uj if prior else uj
                    x1 = x + su
                    if (x > 0.0 and x1 < 0.0) or (x < 0.0 and x1 > 0.0):
                        cross_t[n_cross] = x
                        cross_su[n_cross] = su
                        cross_u[n_cross] = uj
                        cross_b[n_cross] = -x / su
                        n_cross += 1
                    elif x > 0.0 or x1 > 0.0:     # on for every alpha in (0, 1)
                        p0 += x * uj
                        p1 += su * uj
                a_lo = 0.0
                a_hi = 1.0
                lo_val = slope0
                hi_val = hi_start
                alpha = -1.0
                r_round = 0
                # every round ends the search or removes a breakpoint from the bracket
                while r_round < n_cross + 2 and alpha < 0.0:
                    r_round += 1
                    width = a_hi - a_lo
                    step = hi_val - lo_val
                    cc = a_lo - lo_val * width / step if step > 0.0 else a_lo + 0.5 * width
                    cc = min(max(cc, a_lo), a_hi)
                    # the piece of phi' at cc: value, slope just right of cc, nearest breakpoints
                    value = p0 + cc * p1
                    slope = p1
                    left = a_lo
                    right = a_hi
                    for i in range(n_cross):
                        su = cross_su[i]
                        uj = cross_u[i]
                        xc = cross_t[i] + cc * su
                        value += (0.0 if xc < 0.0 else xc) * uj
                        if xc > 0.0 or (xc == 0.0 and su > 0.0):
                            slope += su * uj
                        b = cross_b[i]
                        if b > a_lo and b <= cc:
                            left = max(left, b)
                        if b > cc and b < a_hi:
                            right = min(right, b)
                    value = value + c0 + cc * c1
                    slope = slope + c1
                    root = cc - value / slope
                    if root >= left and root <= right:
                        alpha = root                  # phi' is linear on [left, right]
                    elif a_hi <= a_lo:
                        alpha = a_lo                  # rounding left no room
                    elif value < 0.0:
                        lo_val = value + slope * (right - cc)
                        a_lo = right
                    else:
                        hi_val = value - slope * (cc - left)
                        a_hi = left
                if alpha < 0.0:
                    alpha = a_lo
            # ---- step, remember d, stall check ----
            for k in range(n_mels):
                mu[k] += alpha * delta[k]
            for j in range(n_freqs):
                mask_prev[j] = mask[j]
            exact = full
            stalled = alpha * math.sqrt(u_sq) <= tolerance_change * math.sqrt(s_sq)
        # ---- out = 2^e max(t, 0) (t of the final mu; NaN stays NaN, as np.maximum keeps it) ----
        for j in range(n_freqs):
            x = t[j]
            x = 0.0 if x < 0.0 else x
            s_all[f, j] = x * scale_up if by_power else math.ldexp(x, exponent)
        iterations[f] = it_count
        kkt_out[f] = kkt


def is_cached():
    """Whether numba's on-disk cache holds machine code of this module's source for
    :func:`solve_frames` (an index written for another version of the file does not count).
    Unknown (a numba whose cache is laid out otherwise): True, nothing is announced."""
    try:
        return bool(solve_frames._cache._cache_file._load_index())
    except Exception:
        return True
