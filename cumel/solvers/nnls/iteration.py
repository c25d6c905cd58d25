"""The NumPy iteration of the package docstring on the frames of one chunk's work arrays
(columns), every step one vectorised operation across the frames; and its line search."""
from __future__ import annotations

import numpy as np

from .._rows import col_sum

EPS_REL = 1e-9
FULL_STEP_TIE = 1e-12            # phi'(1) within this fraction of |phi'(0)|: a full step
FLOOR_KKT = 1e-6                  # the rounding-floor rule applies below this relative KKT residual
FLOOR_RATIO = 0.5                 # ... and stops a frame that did not halve it ...
FLOOR_WINDOW = 3                  # ... within the last FLOOR_WINDOW iterates
T_REFRESH = 32                    # t = A.T mu computed afresh every this many steps (else t += alpha u)
J_REFRESH = 32                    # J summed afresh every this many steps (else updated)
COMPACT_DEAD = 16                 # stopped frames leave the work arrays once 1/16 of them


def step_bound(n_mels):
    """Newton steps a frame may take whatever ``max_iter`` says: ``4 n_mels + 32``.

    Each step of the semismooth Newton method changes the active set or ends the solve; in
    practice a frame needs 2-28 steps (package docstring).  The bound only keeps a pathological
    frame from holding its warp (or the CPU loop) for ``max_iter = 100000`` steps.
    """
    return 4 * int(n_mels) + 32


def _run_sums_into(plan, work, x, weight, out):
    """``out`` (n_mels, n), mel order <- ``x * plan.weights[weight]`` summed over each mel's bin
    run, for run-major ``x`` (n_freqs, n); ``work``'s ``x`` and ``sums`` are scratch."""
    n = x.shape[1]
    np.multiply(x, plan.weights[weight], out=work.bin_view("x", n))
    return plan.to_mel_order(work.run_sums(plan, n), out)


def _own_and_below_into(plan, work, x, own, below, out):
    """``out[k]`` <- the ``own``-weighted sum over mel k's bin run plus the ``below``-weighted
    sum over the run below it (``work``'s ``sums_hi`` is scratch too)."""
    _run_sums_into(plan, work, x, own, out)
    lower = _run_sums_into(plan, work, x, below, work.mel_view("sums_hi", x.shape[1]))
    out[1:] += lower[:-1]


def _tridiag_into(plan, work, d, diag, upper):
    """``diag``, ``upper`` <- the tridiagonal ``A diag(d) A.T`` of run-major bin weights ``d``
    (n_freqs, n): ``diag_k`` sums ``w_lo^2 d`` over mel k's run and ``w_hi^2 d`` over the run
    below, ``upper_k`` sums ``w_lo w_hi d`` over mel k's run."""
    _own_and_below_into(plan, work, d, "w_lo2", "w_hi2", diag)
    _run_sums_into(plan, work, d, "w_lohi", upper)


def _tridiag_update(plan, work, d, d_prev, diag, upper):
    """``diag``, ``upper`` (n_mels, n), the tridiagonal ``A diag(d_prev) A.T``, <- that of
    ``A diag(d) A.T``: the weights of the bins that came on added, of those that went off
    subtracted (one at a time, in bin order: a frame's bits do not depend on the others).
    Returns, per frame, whether any bin changed.

    The same sums as :func:`_tridiag_into` up to rounding: measured, the kept J drifts from a
    fresh sum by at most 1e-15 of its largest entry (3e-7 of ``eps``) over 20 steps on signed
    frames; the caller sums afresh every ``J_REFRESH`` steps all the same.
    """
    n = d.shape[1]
    flip = np.flatnonzero(np.not_equal(d, d_prev, out=work.bin_view("cross", n)))
    bins, cols = np.divmod(flip, n)
    went_off = ~d.ravel()[flip]
    own = plan.lo[bins] * n + cols                 # flat (mel, frame) of the bin's own run
    for name, at, out in (("w_lo2", own, diag), ("w_hi2", plan.hi[bins] * n + cols, diag),
                          ("w_lohi", own, upper)):
        w = plan.bin_weights[name][bins]
        np.negative(w, out=w, where=went_off)
        np.add.at(out.reshape(-1), at, w)
    return np.bincount(cols, minlength=n) > 0


def _matvec_into(plan, work, s, out):
    """``out`` <- ``A s`` for run-major ``s`` (n_freqs, n): the ``w_lo`` part of each mel's bin
    run plus the ``w_hi`` part of the run below it."""
    _own_and_below_into(plan, work, s, "w_lo", "w_hi", out)


def _solve_frames(plan, work, N, cap, tolerance_loss, tolerance_change, floor=None):
    """The iteration of the package docstring on the ``N`` frames in ``work``'s ``m`` (float64,
    overwritten); with ``floor`` not None, the prior variant with ``work``'s ``c`` and ``v``
    (run-major, overwritten: rescaled and normalised).

    Returns ``s`` (n_freqs, N) in bin order (a view of ``work``'s ``y``), ``iterations`` and
    ``kkt`` (N,).  The frames still running are the first columns of the work arrays; a frame
    that stops writes its ``s`` (already computed from its final ``mu``) and leaves them.
    """
    eps = plan.eps
    lo, hi, wt = plan.lo, plan.hi, plan.weights
    # views of earlier chunks' column counts: each a small Python object, but a thousand of
    # them a set are a megabyte (one set a thread) outside SCRATCH_BYTES
    if len(work.views) > 1024:
        work.views.clear()
    m, tmp = work.mel_view("m", N), work.mel_view("tmp", N)
    s_out = work.bin_view("s_out", N)
    # Exact rescaling by a power of two: every frame's largest |m| lands in [0.5, 1), so no
    # norm under- or overflows and s(c m) = c s(m) whatever the scale c.
    np.abs(m, out=tmp)
    _, exponent = np.frexp(tmp.max(axis=0))
    np.ldexp(m, -exponent, out=m)
    np.multiply(m, m, out=tmp)
    m_norm = np.sqrt(col_sum(tmp))
    iterations = np.zeros(N, dtype=np.int64)
    kkt = np.zeros(N)
    s_out[...] = 0.0
    prior = floor is not None
    priors = ["c", "v"] if prior else []
    if prior:
        c, v = work.bin_view("c", N), work.bin_view("v", N)
        np.ldexp(c, -exponent, out=c)                 # the same scale as m
        v_max = v.max(axis=0)
        v /= np.where(v_max > 0, v_max, 1.0)
        v[:, ~(v_max > 0)] = 1.0
        v += floor
        # m = 0: s = max(c, 0) on the bins no triangle covers, 0 elsewhere (exact)
        silent = np.flatnonzero(~(m_norm > 0))
        if silent.size:
            free = (wt["w_lo"] == 0) & (wt["w_hi"] == 0)
            s_out[:, silent] = np.maximum(c[:, silent], 0.0) * free
    frames = np.flatnonzero(m_norm > 0)               # chunk column of each running frame
    n = frames.size
    if n < N and n:
        m, *_ = work.compact(["m"] + priors, N, frames)
        m_norm = m_norm[frames]
    if n and not prior:
        # mu_0 = (A A.T + eps I)^-1 m by the Newton steps' cyclic reduction (a Thomas sweep is
        # three operations a row, too many small calls: threads would hand the GIL over at each)
        diag, upper = work.mel_view("diag", n), work.mel_view("upper", n)
        np.copyto(diag, plan.start_diag[:, None])
        np.copyto(upper, plan.start_upper[:, None])
        mu = work.tridiag.solve(diag, upper, m, work.mel_view("mu", n))
    elif n:
        # mu_0 = (A diag(v) A.T + eps I)^-1 (m - A c): the J below with every bin active
        c, v = work.bin_view("c", n), work.bin_view("v", n)
        diag, upper, rhs = (work.mel_view(name, n) for name in ("diag", "upper", "F"))
        _tridiag_into(plan, work, v, diag, upper)
        diag += plan.eps
        _matvec_into(plan, work, c, rhs)
        np.subtract(m, rhs, out=rhs)
        mu = work.tridiag.solve(diag, upper, rhs, work.mel_view("mu", n))
    # exact[i]: the last step of frame i was a full Newton step; if its active set is unchanged,
    # F is zero up to rounding (Newton is exact on a piece of the piecewise linear F).
    exact = np.zeros(n, dtype=bool)
    recent = np.full((FLOOR_WINDOW, n), np.inf)      # kkt of the last FLOOR_WINDOW iterates
    stalled = np.zeros(n, dtype=bool)                 # the last step moved nothing: stop here
    live = np.ones(n, dtype=bool)                     # not stopped (columns of stopped frames ride along)
    n_live = n
    for it in range(cap + 1):
        if n == 0:
            break
        t, s, u, x = (work.bin_view(name, n) for name in ("t", "s", "u", "x"))
        d, d_prev = work.bin_view("d", n), work.bin_view("d_prev", n)
        F, tmp = work.mel_view("F", n), work.mel_view("tmp", n)
        # t = A.T mu, s = max(t, 0), d = (t > 0).  t is the last step's plus alpha u (below), two
        # passes over the bins where the product takes five, and computed afresh every
        # T_REFRESH steps: the same iterate up to rounding (the same Newton steps, measured).
        if it % T_REFRESH == 0:
            np.take(mu, lo, axis=0, out=t, mode="clip")
            t *= wt["w_lo"]
            np.take(mu, hi, axis=0, out=x, mode="clip")
            x *= wt["w_hi"]
            t += x
            if prior:                                     # z = c + v t, kept in t
                c, v = work.bin_view("c", n), work.bin_view("v", n)
                t *= v
                t += c
        np.greater(t, 0.0, out=d)
        np.maximum(t, 0.0, out=s)
        # F = A s + eps mu - m: the w_lo part of each mel's bin run, plus the w_hi part of the
        # run below it.  (Not J mu - m, equal in exact arithmetic: where mu is large, on frames
        # no non-negative spectrum fits, its rounding would no longer describe the s returned.)
        _matvec_into(plan, work, s, F)
        np.multiply(mu, eps, out=tmp)
        F += tmp
        F -= m
        np.multiply(F, F, out=tmp)
        rel = np.sqrt(col_sum(tmp)) / m_norm
        # a non-finite frame stops too (the transform then raises): it can never meet a rule
        done = (rel <= tolerance_loss) | ~np.isfinite(rel) | (it == cap) | stalled
        done |= (rel <= FLOOR_KKT) & (rel > FLOOR_RATIO * recent.min(axis=0))
        recent[it % FLOOR_WINDOW] = rel
        j_diag, j_upper = work.mel_view("j_diag", n), work.mel_view("j_upper", n)
        changed = None                            # per frame: d differs from the last step's
        if not prior and it % J_REFRESH:
            changed = _tridiag_update(plan, work, d, d_prev, j_diag, j_upper)
        check = np.flatnonzero(exact & ~done & live)  # a full step last time: the same active set?
        if check.size:
            if changed is None:
                done[check] = (d[:, check] == d_prev[:, check]).all(axis=0)
            else:
                done[check] = ~changed[check]
        done &= live
        if done.any():
            gone = np.flatnonzero(done)
            s_out[:, frames[gone]] = s[:, gone]
            kkt[frames[gone]] = rel[gone]
            live[gone] = False
            n_live -= gone.size
            if n_live == 0:
                break
            # Drop the stopped frames from the work arrays once they are 1 / COMPACT_DEAD of
            # them (or one is not finite): until then they ride along, a few per cent of a
            # step, where moving the others costs about five passes over the bins each time.
            if (n - n_live) * COMPACT_DEAD >= n or not np.isfinite(rel[gone]).all():
                keep = np.flatnonzero(live)
                frames, m_norm, rel, exact = frames[keep], m_norm[keep], rel[keep], exact[keep]
                recent, live = recent[:, keep], live[keep]
                t, mu, m, F, *_ = work.compact(["t", "mu", "m", "F", "j_diag", "j_upper"] + priors,
                                               n, keep)
                n = keep.size
                # s and d again from the kept t: one pass each, where moving them took two
                s, d = work.bin_view("s", n), work.bin_view("d", n)
                np.greater(t, 0.0, out=d)
                np.maximum(t, 0.0, out=s)
                u, x, d_prev = (work.bin_view(name, n) for name in ("u", "x", "d_prev"))
                tmp = work.mel_view("tmp", n)
        running = frames if n_live == n else frames[live]
        iterations[running] += 1
        kkt[running] = rel if n_live == n else rel[live]
        # J = A diag(d) A.T + eps I (tridiagonal): diag_k sums w_lo^2 over the active bins of
        # mel k's run and w_hi^2 over the run below; upper_k sums w_lo w_hi over mel k's run.
        # Without a prior, a step changes d on a few bins only: J - eps I is the last step's
        # plus theirs (above, _tridiag_update), summed afresh every J_REFRESH steps.
        j_diag, j_upper = work.mel_view("j_diag", n), work.mel_view("j_upper", n)
        if prior:                                     # J = A diag(v d) A.T + eps I
            v, dv = work.bin_view("v", n), work.bin_view("w", n)
            np.multiply(v, d, out=dv)
            _tridiag_into(plan, work, dv, j_diag, j_upper)
        elif changed is None:
            _tridiag_into(plan, work, d, j_diag, j_upper)
        diag, upper = np.add(j_diag, eps, out=work.mel_view("diag", n)), j_upper
        # delta = -J^-1 F
        delta = work.tridiag.solve(diag, upper, F, work.mel_view("delta", n))
        np.negative(delta, out=delta)
        # u = A.T delta
        np.take(delta, lo, axis=0, out=u, mode="clip")
        u *= wt["w_lo"]
        np.take(delta, hi, axis=0, out=x, mode="clip")
        x *= wt["w_hi"]
        u += x
        # Stalled: the step moves the unclamped spectrum t = A.T mu by a negligible amount
        # compared with the answer s = max(t, 0). (Not compared with ||t||: on an inconsistent
        # frame the clamped bins of t grow like residual / eps and dwarf any useful step.)
        # The frame stops at the top of the next pass, so that its kkt is the returned iterate's.
        step = None                                   # z moves by alpha * (v u) with a prior
        if prior:
            step = np.multiply(work.bin_view("v", n), u, out=work.bin_view("w", n))
        np.multiply(s, s, out=x)
        s_norm = np.sqrt(col_sum(x))
        np.multiply(u if step is None else step, u if step is None else step, out=x)
        u_norm = np.sqrt(col_sum(x))
        alpha, full = _line_search(work, n, mu, delta, m, F, eps, step)
        delta *= alpha
        mu += delta
        upd = u if step is None else step             # t (z with a prior) at the new mu
        upd *= alpha
        t += upd
        exact = full
        np.copyto(d_prev, d)
        stalled = alpha * u_norm <= tolerance_change * s_norm
    s_bins = np.take(s_out, plan.inverse, axis=0, out=work.bin_view("y", N), mode="clip")
    np.ldexp(s_bins, exponent, out=s_bins)
    return s_bins, iterations, kkt


def _line_search(work, n, mu, delta, m, F, eps, step=None):
    """Step length along the Newton direction, every frame's own: ``(alpha, full)``.

    ``phi'(a) = max(t + a step, 0).u + c0 + a c1`` (``step`` None means ``u``; with a prior it
    is ``v u`` and ``t`` holds ``z``) with ``c0 = (eps mu - m).delta`` and
    ``c1 = eps delta.delta``.  Full step (``alpha = 1``, ``full`` True) where
    ``phi'(1) <= FULL_STEP_TIE |phi'(0)|``, ``phi'(0) = F.delta``; elsewhere the exact root of
    ``phi'`` on ``(0, 1)`` (:func:`_root_of_dphi`).  Reads ``t``, ``u``, ``d`` from ``work``;
    uses ``x``, ``s``, ``y``, ``d_one``, ``d_prev`` and ``cross`` as scratch.
    """
    t, u, x, d = (work.bin_view(name, n) for name in ("t", "u", "x", "d"))
    d_one = work.bin_view("d_one", n)
    tmp = work.mel_view("tmp", n)
    np.multiply(mu, eps, out=tmp)
    tmp -= m
    tmp *= delta
    c0 = col_sum(tmp)
    np.multiply(delta, delta, out=tmp)
    c1 = eps * col_sum(tmp)
    np.multiply(F, delta, out=tmp)
    slope0 = col_sum(tmp)                       # phi'(0) < 0: a descent direction
    np.add(t, u if step is None else step, out=x)
    np.greater(x, 0.0, out=d_one)               # active at a = 1
    np.maximum(x, 0.0, out=x)
    x *= u
    dphi_one = col_sum(x) + c0 + c1
    alpha = np.ones(n)
    # At a converged Newton step phi'(1) is a rounding-level +-1e-15 |phi'(0)|: its sign must not
    # decide between the full step and the search (the kernel rounds differently).
    full = dphi_one <= FULL_STEP_TIE * np.abs(slope0)
    cols = np.flatnonzero(~full)
    k = cols.size
    if 2 * k >= n:
        # most frames search: work on the whole arrays (a frame's search never reads another's
        # columns) rather than gather the columns first
        alpha[cols] = _root_of_dphi(t, u, d, d_one, c0, c1, slope0, dphi_one,
                                    work.bin_view("y", n), work.bin_view("cross", n), step)[cols]
    elif k:
        tc, uc, scratch = (work.bin_view(name, k) for name in ("s", "x", "y"))
        on_zero, on_one = work.bin_view("d_prev", k), work.bin_view("cross", k)
        np.take(t, cols, axis=1, out=tc, mode="clip")
        np.take(u, cols, axis=1, out=uc, mode="clip")
        np.take(d, cols, axis=1, out=on_zero, mode="clip")
        np.take(d_one, cols, axis=1, out=on_one, mode="clip")
        step_cols = None
        if step is not None:
            step_cols = np.take(step, cols, axis=1, out=work.bin_view("w_cols", k), mode="clip")
        alpha[cols] = _root_of_dphi(tc, uc, on_zero, on_one, c0[cols], c1[cols], slope0[cols],
                                    dphi_one[cols], scratch, work.bin_view("d_one", k),
                                    step_cols)
    return alpha, full


ROOT_BUCKETS = 32                 # breakpoints grouped by binary exponent: [2^-31, 2^-30), ..., [1/2, 1]


def _root_of_dphi(t, u, on_zero, on_one, c0, c1, dphi_zero, dphi_one, scratch, crossing,
                  step=None):
    """The root in ``(0, 1)`` of ``phi'(a) = sum_j max(t_j + a u_j, 0) u_j + c0 + a c1``
    (with ``step``: ``max(t_j + a step_j, 0) u_j``, the prior variant; ``step`` is ``u``
    otherwise, and every product below the plain one), for every column.

    Parameters
    ----------
    t, u : ndarray, shape (n_freqs, n)
    on_zero, on_one : ndarray of bool, shape (n_freqs, n)
        ``t > 0`` and ``t + u > 0``, the bins active at ``a = 0`` and at ``a = 1``.
    c0, c1, dphi_zero, dphi_one : ndarray, shape (n,)
        ``c1 > 0``; ``phi'(0) < 0 < phi'(1)``.
    scratch, crossing : ndarray, shape (n_freqs, n), float64 and bool
        Work arrays.

    Returns
    -------
    ndarray, shape (n,)

    ``phi'`` is continuous, increasing and linear between the breakpoints ``b_j = -t_j / u_j``
    of the crossing bins, those active at one end of ``[0, 1]`` only (the others are active on
    all of it or nowhere).  Below every breakpoint the bins active at 0 add ``A + a B`` with
    ``A = c0 + sum t_j u_j``, ``B = c1 + sum u_j^2`` (sums over the bins active at 0; ``A`` is
    ``phi'(0)``, given: ``s.u = (A s).delta``); past a breakpoint the bin switching off
    takes its ``t_j u_j + a u_j^2`` away, a bin switching on adds it.  So running sums over the
    breakpoints in increasing order give ``phi'`` at each of them, and the root lies on the first
    piece where ``phi'`` turns positive, the linear interpolation between the piece's ends (the
    kernel reaches the same root by a secant step and a walk over the pieces; both are exact up
    to rounding).  Sorting every breakpoint would cost more than the rest of the step, and the
    root is often far below most of them (steps of 1e-6 on hard frames), so the breakpoints are
    first summed by binary exponent (``ROOT_BUCKETS`` buckets, an exact partition of ``[0, 1]``),
    ``phi'`` at the bucket edges picks the bucket holding the root, and only that bucket's
    breakpoints are sorted.
    """
    n = t.shape[1]
    a_start = dphi_zero                                  # = c0 + sum_(on_zero) t u, one pass fewer
    np.multiply(u if step is None else step, u, out=scratch)
    scratch *= on_zero
    b_start = c1 + col_sum(scratch)
    # crossing bins (flatnonzero: np.nonzero on 2-D is several times slower)
    bin_, frame = np.divmod(np.flatnonzero(np.not_equal(on_zero, on_one, out=crossing)), n)
    tb, ub = t[bin_, frame], u[bin_, frame]
    sb = ub if step is None else step[bin_, frame]
    brk = -tb / sb                                       # in [0, 1]
    d_a, d_b = tb * ub, sb * ub                          # what each adds where it is active
    switch_off = on_zero[bin_, frame]                    # active up to its breakpoint
    np.negative(d_a, out=d_a, where=switch_off)
    np.negative(d_b, out=d_b, where=switch_off)
    # bucket q >= 1 holds [2^(q - G), 2^(q - G + 1)) (the last one also 1), bucket 0 [0, 2^(1 - G))
    G = ROOT_BUCKETS
    _, bucket = np.frexp(brk)
    bucket += G - 1
    np.maximum(bucket, 0, out=bucket)
    np.minimum(bucket, G - 1, out=bucket)
    bucket[brk == 0.0] = 0
    # edge[q] = (A, B) rows, column f: A and B above every breakpoint of frame f's buckets <= q.
    # (Running sums row after row, A and B side by side so that one call adds both: np.cumsum
    # along a short axis is slow and holds the GIL, and each call costs a GIL hand-over when
    # threads solve chunks side by side; np.bincount returns integers when there is nothing to
    # count.)
    slot = bucket * (2 * n) + frame
    edge = np.bincount(np.concatenate((slot, slot + n)), np.concatenate((d_a, d_b)), 2 * G * n)
    edge = edge.astype(np.float64, copy=False).reshape(G, 2, n)
    a_edge, b_edge = edge[:, 0], edge[:, 1]
    a_edge[0] += a_start
    b_edge[0] += b_start
    for q in range(1, G):
        np.add(edge[q - 1], edge[q], out=edge[q])
    edges = np.ldexp(1.0, np.arange(1 - G, 1))           # upper edge of bucket q: 2^(q + 1 - G)
    edge_values = edges[:, None] * b_edge                # phi' there (the last: phi'(1))
    edge_values += a_edge
    edge_values[-1] = dphi_one
    root_bucket = np.argmax(edge_values > 0.0, axis=0)
    cols = np.arange(n)
    below = np.maximum(root_bucket - 1, 0)
    first = root_bucket == 0
    lower = np.where(first, 0.0, edges[below])
    lower_value = np.where(first, dphi_zero, edge_values[below, cols])
    a_lower = np.where(first, a_start, a_edge[below, cols])
    b_lower = np.where(first, b_start, b_edge[below, cols])
    upper, upper_value = edges[root_bucket], edge_values[root_bucket, cols]
    # the root's bucket: its breakpoints in order, frame by frame
    inside = np.flatnonzero(bucket == root_bucket[frame])
    order = inside[np.lexsort((brk[inside], frame[inside]))]
    frame, brk, d_a, d_b = frame[order], brk[order], d_a[order], d_b[order]
    counts = np.bincount(frame, minlength=n)
    width = int(counts.max(initial=0))
    position = np.arange(frame.size) - (np.cumsum(counts) - counts)[frame]
    # column f, row i + 1: A, B past its bucket's i-th breakpoint (padding: no change)
    run = np.zeros((width + 1, 2, n))
    a_run, b_run = run[:, 0], run[:, 1]
    a_run[0], b_run[0] = a_lower, b_lower
    a_run[position + 1, frame] = d_a
    b_run[position + 1, frame] = d_b
    if width <= 32:
        for i in range(1, width + 1):
            np.add(run[i - 1], run[i], out=run[i])
    else:                                                # (the same additions, in one call)
        np.cumsum(run, axis=0, out=run)
    # points: the bucket's lower edge, its breakpoints, its upper edge (padding: the upper edge)
    points = np.empty((width + 2, n))
    points[0] = lower
    points[1:] = upper
    points[position + 1, frame] = brk
    values = np.empty((width + 2, n))
    values[0] = lower_value
    np.multiply(points[1:-1], b_run[:-1], out=values[1:-1])
    values[1:-1] += a_run[:-1]
    padding = np.arange(width)[:, None] >= counts
    np.copyto(values[1:-1], upper_value, where=padding)
    values[-1] = upper_value
    right = np.maximum(np.argmax(values > 0.0, axis=0), 1)
    p0, p1 = points[right - 1, cols], points[right, cols]
    v0, v1 = values[right - 1, cols], values[right, cols]
    # (v0 <= 0 < v1 where phi'(1) > 0; a column not searched, solved alongside, may have neither)
    gap = v1 - v0
    alpha = p0 - v0 * np.divide(p1 - p0, gap, out=np.zeros(n), where=gap > 0.0)
    return np.minimum(np.maximum(alpha, p0), p1)
