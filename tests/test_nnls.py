"""The default solver: optimality (KKT), frame independence, precision on real audio."""
import warnings

import numpy as np
import pytest

import cumel
from cumel.solvers import nnls

from conftest import audio_pair, floor_rule_stops, mel_residual, signed_nnls_frames

WORKLOAD_CLIPS = [
    ("speech-201x128", "speech_00"), ("speech-201x128", "speech_05"),
    ("tts-513x80", "speech_00"), ("tts-513x80", "speech_07"),
    ("music-1025x128", "music_00"), ("music-1025x128", "music_01"),
]


def _transform(workload_name, **kwargs):
    from cumel.workloads import WORKLOADS
    return cumel.InverseMelScale(**WORKLOADS[workload_name].inverse_kwargs(), **kwargs)


def lawson_hanson(C, d, tol=1e-12, max_outer=2000):
    """Slow, simple reference: Lawson & Hanson's active-set NNLS, min ||C x - d||, x >= 0."""
    n = C.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, bool)
    w = C.T @ (d - C @ x)
    for _ in range(max_outer):
        if passive.all() or w[~passive].max() <= tol * np.abs(w).max():
            break
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(C[:, passive], d, rcond=None)[0]
            if z[passive].min() > 0:
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol * max(np.abs(x).max(), 1e-300)
        x = z
        w = C.T @ (d - C @ x)
    return x


def kkt_violation(A, eps, s, m):
    """Largest violation of the KKT conditions of min 1/2||A s - m||^2 + eps/2||s||^2, s >= 0,
    relative to ||A.T m|| : s >= 0, g = A.T (A s - m) + eps s >= 0, s * g = 0."""
    g = A.T @ (A @ s - m) + eps * s
    scale = np.linalg.norm(A.T @ m) + 1e-300
    negative = max(-s.min(), 0.0)
    return max(negative * np.linalg.norm(A, 2) ** 2 if negative else 0.0, max(-g.min(), 0.0),
               np.abs(s * g).max() / (np.abs(s).max() + 1e-300)) / scale


def _frames_solve(inv, m, **kw):
    args = dict(max_iter=inv.max_iter, tolerance_loss=inv.tolerance_loss,
                tolerance_change=inv.tolerance_change)
    args.update(kw)
    return nnls.solve(inv.plan.nnls(), m, **args)


def kkt_violation_bound(A, kkt, m):
    """What the solver's own KKT residual guarantees for :func:`kkt_violation`.

    With ``s = max(t, 0)``, ``t = A.T mu`` and ``F = A s + eps mu - m``:
    ``g = A.T (A s - m) + eps s = A.T F + eps (s - t)``, which is ``(A.T F)_j`` on the support
    and ``(A.T F)_j - eps t_j >= (A.T F)_j`` off it, so every term of the violation is at most
    ``||A.T F||_inf <= ||A||_2 ||F|| = ||A||_2 kkt ||m||``, relative to ``||A.T m||``.
    ``||A||_2`` is bounded by ``sqrt(||A||_1 ||A||_inf)`` (no SVD; the bound stays rigorous).
    """
    norm_a = np.sqrt(np.abs(A).sum(axis=0).max() * np.abs(A).sum(axis=1).max())
    return norm_a * kkt * np.linalg.norm(m) / np.linalg.norm(A.T @ m)


def _random_case(case):
    rng = np.random.default_rng(7)
    inv = cumel.InverseMelScale(n_stft=201, n_mels=80, sample_rate=16000)
    A = inv.plan.fb64.T
    S_true = rng.gamma(0.5, 1.0, size=(201, 40)) * (rng.random((201, 40)) < 0.6)
    M = A @ S_true
    if case == "noisy":
        M = M + 0.05 * np.abs(M).mean() * rng.standard_normal(M.shape)
    elif case == "other_filterbank":
        fb = cumel.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, "slaney", "slaney", dtype=np.float64)
        M = fb.T @ S_true
    elif case == "negative_values":
        M[rng.random(M.shape) < 0.05] *= -1.0
    return inv, A, M


@pytest.mark.parametrize("case", ["consistent", "noisy", "other_filterbank", "negative_values"])
@pytest.mark.parametrize("tolerance_loss, tolerance_change", [(1e-5, 1e-8), (1e-10, 1e-12)])
def test_kkt_optimality_random_and_inconsistent(case, tolerance_loss, tolerance_change, cpu_loop):
    inv, A, M = _random_case(case)
    eps = inv.plan.nnls().eps
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)           # no frame runs out of steps
        s, iterations, kkt = _frames_solve(inv, M, tolerance_loss=tolerance_loss,
                                           tolerance_change=tolerance_change)
    # every frame meets the tolerance, or stopped at its rounding floor (tight tolerances)
    assert (kkt <= max(tolerance_loss, nnls.FLOOR_KKT)).all()
    if tolerance_loss >= nnls.FLOOR_KKT:
        assert (kkt <= tolerance_loss).all()
    # the optimality of s itself follows from kkt (the bound's derivation is exact; the slack
    # covers the test's own float64 rounding)
    for t in range(M.shape[1]):
        assert kkt_violation(A, eps, s[:, t], M[:, t]) <= kkt_violation_bound(A, kkt[t], M[:, t]) + 1e-12
    # measured: at most 19 Newton steps (the spin this pins ran to max_iter = 100000)
    assert iterations.max() <= 100
    if case == "consistent":
        assert mel_residual(A.T, s, M) <= 2e-6   # the eps bias (measured 2.1e-7)
    else:
        assert mel_residual(A.T, s, M) > 1e-4   # inconsistent: an optimum, not a fit


def test_matches_slow_reference_solver(cpu_loop):
    # The regularised problem has a unique solution: Lawson-Hanson on [A; sqrt(eps) I] s = [m; 0]
    rng = np.random.default_rng(3)
    inv = cumel.InverseMelScale(n_stft=129, n_mels=40, sample_rate=8000)
    A = inv.plan.fb64.T
    eps = inv.plan.nnls().eps
    S_true = rng.gamma(0.7, 1.0, size=(129, 6))
    M = A @ S_true + 0.02 * rng.standard_normal((40, 6))
    s, _, _ = _frames_solve(inv, M, tolerance_loss=1e-12, tolerance_change=0.0)
    C = np.vstack([A, np.sqrt(eps) * np.eye(129)])
    for t in range(6):
        ref = lawson_hanson(C, np.concatenate([M[:, t], np.zeros(129)]))
        assert np.linalg.norm(s[:, t] - ref) <= 1e-6 * np.linalg.norm(ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workload, clip", [("speech-201x128", "speech_01"),
                                            ("tts-513x80", "speech_03"),
                                            ("music-1025x128", "music_00")])
def test_frame_alone_equals_frame_in_batch(workload, clip, dtype, cpu_loop):
    _, M = audio_pair(workload, clip)
    M = M[:, :120].astype(dtype)
    inv = _transform(workload)
    batch = inv(np.stack([M[:, :60], M[:, 60:]]))
    for t in range(60):
        np.testing.assert_array_equal(batch[0][:, t:t + 1], inv(M[:, t:t + 1]))
    # and inside batches of other shapes and orders
    np.testing.assert_array_equal(inv(M[:, 119:59:-1])[:, ::-1], batch[1])
    pick = np.random.default_rng(0).permutation(120)[:37]
    np.testing.assert_array_equal(inv(M[:, pick]), np.concatenate(batch, axis=1)[:, pick])


@pytest.mark.parametrize("workload, clip", WORKLOAD_CLIPS)
def test_residual_on_real_audio_beats_lstsq(workload, clip, cpu_loop):
    S_true, M = audio_pair(workload, clip)
    inv = _transform(workload)
    S, info = inv(M, return_info=True)
    assert S.dtype == np.float32 and (S >= 0).all()
    # tolerance_loss = 1e-5 bounds each frame's KKT residual; the mel residual adds the eps bias
    # (A s - m = F - eps mu, measured <= 1e-6): 2e-5 holds by construction (measured 2.7e-6)
    assert mel_residual(inv.fb, S, M) <= 2e-5
    assert info.mel_residual.max() <= 2e-5          # every frame, not just the clip
    assert info.converged.all()
    assert info.iterations.max() <= 50               # measured at most 10
    S_lstsq = _transform(workload, solver="lstsq")(M)
    # the spectrogram itself is at least as close to the truth as lstsq + relu's
    assert np.linalg.norm(S - S_true) <= np.linalg.norm(S_lstsq - S_true) * 1.001


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_inputs(dtype, cpu_loop):
    _, M = audio_pair("tts-513x80", "speech_03")
    inv = _transform("tts-513x80")
    S = inv(M.astype(dtype))
    assert S.dtype == dtype
    assert mel_residual(inv.fb, S, M.astype(np.float64)) <= 1e-5


def test_silent_and_zero_frames(cpu_loop):
    inv = cumel.InverseMelScale(201, 128)
    _, M = audio_pair("speech-201x128", "speech_02")
    M = M[:, :20].copy()
    M[:, 3] = 0.0
    M[:, 4] *= 1e-12
    S, info = inv(M, return_info=True)
    assert (S[:, 3] == 0).all() and info.iterations[3] == 0
    np.testing.assert_allclose(S[:, 4], inv(M[:, 4:5] * 1e12)[:, 0] * 1e-12, rtol=1e-4, atol=0)
    assert info.mel_residual.max() <= 2e-5


def test_max_iter_caps_newton_steps(cpu_loop):
    _, M = audio_pair("music-1025x128", "music_00")
    inv = _transform("music-1025x128", max_iter=2)
    with pytest.warns(RuntimeWarning, match="stopped after max_iter=2 Newton steps"):
        S, info = inv(M, return_info=True)
    assert info.iterations.max() == 2 and not info.converged.all()
    assert mel_residual(inv.fb, S, M) > 1e-5     # not converged after 2 steps


def test_first_step_is_the_pseudo_inverse(cpu_loop):
    # mu_0 = (A A.T + eps I)^-1 m: clipping A.T mu_0 is torchaudio 2.x's lstsq + relu answer
    _, M = audio_pair("speech-201x128", "speech_04")
    inv = cumel.InverseMelScale(201, 128, max_iter=1, tolerance_loss=0.0)
    plan = inv.plan.nnls()
    s0, iterations, _ = nnls.solve(plan, M[:, :30], max_iter=0, tolerance_loss=0.0,
                                   tolerance_change=0.0)                # s(mu_0): no Newton step
    assert (iterations == 0).all()
    lstsq = cumel.InverseMelScale(201, 128, solver="lstsq")(M[:, :30].astype(np.float64))
    assert np.linalg.norm(s0 - lstsq) <= 1e-5 * np.linalg.norm(lstsq)


def test_rounding_floor_rule_stops_a_frame_at_its_first_non_halving_kkt(cpu_loop):
    # Below FLOOR_KKT a frame whose residual did not halve against the best of its last
    # FLOOR_WINDOW iterates stops there: checked on every frame's own residual sequence
    _, M = signed_nnls_frames()
    plan = cumel.InverseMelScale(n_stft=201, n_mels=80).plan.nnls()

    def solve(max_iter):
        _, iterations, kkt = nnls.solve(plan, M, max_iter=max_iter, tolerance_loss=0.0,
                                        tolerance_change=0.0)
        return iterations, kkt

    assert floor_rule_stops(solve, M.shape[1]) >= 2      # measured: 5 of the 40 frames


def test_plan_is_cached_per_filterbank():
    a = cumel.InverseMelScale(201, 128)
    b = cumel.InverseMelScale(201, 128, max_iter=10)
    assert a.plan is b.plan and a.plan.nnls() is b.plan.nnls()


def test_large_batch_is_solved_in_chunks_with_the_same_bits(monkeypatch, cpu_loop):
    _, M = audio_pair("speech-201x128", "speech_06")
    inv = cumel.InverseMelScale(201, 128)
    whole = inv(M)
    monkeypatch.setattr(nnls.chunks, "CHUNK_ELEMENTS", 201 * 37)     # 37 frames a chunk
    monkeypatch.setattr(nnls.chunks, "COMPILED_CHUNK_ELEMENTS", 201 * 37)
    np.testing.assert_array_equal(inv(M), whole)


def _dphi(t, u, step, c0, c1, a):
    """phi'(a) of every column, straight from its definition (float64)."""
    return (np.maximum(t + a * step, 0.0) * u).sum(axis=0) + c0 + a * c1


@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("crowded", [False, True])
def test_line_search_root_is_exact(prior, crowded):
    # Columns whose roots lie anywhere from 1e-10 to 1 (hard frames take steps of 1e-6, below
    # most breakpoints), with breakpoints spread over many binary exponents; or every bin
    # crossing in [1/2, 1), one bucket holding them all.
    rng = np.random.default_rng(7)
    n_bins, n = 300, 64
    t = rng.standard_normal((n_bins, n))
    if crowded:
        u = -t / rng.uniform(0.5, 1.0, (n_bins, n))          # breakpoints -t / u in [1/2, 1)
    else:
        u = rng.standard_normal((n_bins, n)) * 10.0 ** rng.uniform(-6, 3, (n_bins, 1))
    step = u * rng.uniform(0.1, 10.0, (n_bins, n)) if prior and not crowded else u
    c1 = 10.0 ** rng.uniform(-12, -6, n)
    g0, g1 = _dphi(t, u, step, 0.0, c1, 0.0), _dphi(t, u, step, 0.0, c1, 1.0)
    share = rng.uniform(0.05, 1.0, n) if crowded else 10.0 ** rng.uniform(-10, 0, n)
    c0 = -(g0 + share * (g1 - g0))
    lo, hi = np.zeros(n), np.ones(n)
    for _ in range(200):                                    # bisection: the reference root
        mid = 0.5 * (lo + hi)
        below = _dphi(t, u, step, c0, c1, mid) < 0.0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    on_zero, on_one = t > 0.0, t + step > 0.0
    args = (c0, c1, _dphi(t, u, step, c0, c1, 0.0), _dphi(t, u, step, c0, c1, 1.0))

    def root(cols):
        k = len(cols)
        return nnls.iteration._root_of_dphi(t[:, cols], u[:, cols], on_zero[:, cols], on_one[:, cols],
                                  *(a[cols] for a in args), np.empty((n_bins, k)),
                                  np.empty((n_bins, k), bool), step[:, cols] if prior else None)

    alpha = root(np.arange(n))
    assert ((alpha >= 0.0) & (alpha <= 1.0)).all()
    # phi'(alpha) is zero up to the rounding of its own terms (measured: 2e-15 of their sum; a
    # root on a wrong piece misses by the piece's slope times the distance)
    terms = (np.abs(np.maximum(t + alpha * step, 0.0) * u)).sum(axis=0) + np.abs(c0) + alpha * c1
    assert (np.abs(_dphi(t, u, step, c0, c1, alpha)) <= 1e-13 * terms).all()
    # and it is the bisection's root, up to the conditioning of the tiniest (measured: 2e-8)
    np.testing.assert_allclose(alpha, hi, rtol=1e-6, atol=0.0)
    # a column alone gives the bits it has among the others
    for col in (0, 17, n - 1):
        assert root([col])[0] == alpha[col]


@pytest.mark.parametrize("n_stft, n_mels", [(201, 128), (513, 80), (1025, 128)])
def test_j_update_equals_a_fresh_sum(n_stft, n_mels):
    # J - eps I of d, from that of d_prev plus the bins that changed: the sums _tridiag_into
    # makes afresh, to rounding, and "changed" says which frames had any bin change
    plan = cumel.InverseMelScale(n_stft, n_mels).plan.nnls()
    n = 50
    rng = np.random.default_rng(n_stft)
    work = nnls.work._Work(plan, n)
    d_prev = work.bin_view("d_prev", n)
    d_prev[...] = rng.random((n_stft, n)) < 0.6
    d = work.bin_view("d", n)
    d[...] = d_prev
    flips = rng.random((n_stft, n)) < 0.05
    flips[:, :5] = False                       # five frames keep every bin
    d ^= flips
    diag, upper = np.empty((n_mels, n)), np.empty((n_mels, n))
    nnls.iteration._tridiag_into(plan, work, d_prev.astype(np.float64), diag, upper)
    fresh_diag, fresh_upper = np.empty((n_mels, n)), np.empty((n_mels, n))
    nnls.iteration._tridiag_into(plan, work, d.astype(np.float64), fresh_diag, fresh_upper)
    changed = nnls.iteration._tridiag_update(plan, work, d, d_prev, diag, upper)
    scale = np.abs(fresh_diag).max()
    assert np.abs(diag - fresh_diag).max() <= 1e-14 * scale
    assert np.abs(upper - fresh_upper).max() <= 1e-14 * scale
    np.testing.assert_array_equal(changed, flips.any(axis=0))
    assert not changed[:5].any() and changed[5:].any()


def test_j_kept_between_steps_or_summed_every_step_gives_the_same_solve(monkeypatch, numpy_loop):
    # J_REFRESH = 1 sums J afresh every step (no update); 2 alternates; the default updates it
    # for 31 steps in 32. Same Newton steps, results within rounding of each other.
    _, M = audio_pair("music-1025x128", "music_01")
    M = M[:, :80].astype(np.float64)
    inv = _transform("music-1025x128")
    results = {}
    for refresh in (1, 2, nnls.J_REFRESH):
        monkeypatch.setattr(nnls.iteration, "J_REFRESH", refresh)
        results[refresh] = _frames_solve(inv, M)
    s1, it1, kkt1 = results[1]
    for refresh in (2, nnls.J_REFRESH):
        s, it, kkt = results[refresh]
        np.testing.assert_array_equal(it, it1)
        assert np.abs(s - s1).max() <= 1e-9 * np.abs(s1).max()
        assert (kkt <= inv.tolerance_loss).all()


@pytest.mark.parametrize("case", ["consistent", "noisy", "negative_values"])
def test_t_kept_between_steps_or_computed_every_step_gives_the_same_solve(monkeypatch, case, numpy_loop):
    # T_REFRESH = 1 computes t = A.T mu every step (the kernel's way); the default adds alpha u
    # to the last step's t for 31 steps in 32. Same Newton steps; results within rounding
    # (measured: 3e-16 relative on real clips, 2e-9 on these inconsistent frames, where the
    # dual is ill-conditioned by design).
    inv, A, M = _random_case(case)
    default = nnls.T_REFRESH
    results = {}
    for refresh in (1, default):
        monkeypatch.setattr(nnls.iteration, "T_REFRESH", refresh)
        results[refresh] = _frames_solve(inv, M)
    (s1, it1, _), (s, it, kkt) = results[1], results[default]
    assert it1.max() >= 4                     # several steps kept t between them
    np.testing.assert_array_equal(it, it1)
    assert np.abs(s - s1).max() <= 1e-7 * np.abs(s1).max()
    assert (kkt <= inv.tolerance_loss).all()
    assert mel_residual(A.T, s, M) <= mel_residual(A.T, s1, M) * (1 + 1e-6) + 1e-12


def test_stopped_frames_leave_at_once_or_ride_along_with_the_same_bits(monkeypatch, numpy_loop):
    # COMPACT_DEAD = 1 never moves the running frames together (the stopped ones ride along to
    # the end: they would have to be all of them); a huge value moves them at every stop. No
    # operation mixes columns, so every frame's bits, steps and kkt are the same either way.
    inv, A, M = _random_case("negative_values")
    results = []
    for dead in (1, nnls.COMPACT_DEAD, 10 ** 9):
        monkeypatch.setattr(nnls.iteration, "COMPACT_DEAD", dead)
        results.append(_frames_solve(inv, M))
    assert np.unique(results[0][1]).size >= 4      # frames stop at several different steps
    for s, it, kkt in results[1:]:
        np.testing.assert_array_equal(s, results[0][0])
        np.testing.assert_array_equal(it, results[0][1])
        np.testing.assert_array_equal(kkt, results[0][2])
