"""The default solver stops on every input, at any scale, in bounded memory.

Regular tests pin the cases found by hand and by the property tests at the end of this file
(hypothesis: random filterbanks, shapes, dtypes, signs and scales from 1e-300 to 1e300).
"""
import os
import tracemalloc
import warnings

import numpy as np
import pytest

import cumel
from cumel.solvers import nnls

from conftest import audio_pair
from test_nnls import kkt_violation, kkt_violation_bound

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis (test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# mels with negative values are given on purpose here: the warning that they look like log mels
# (pinned in test_frontends.py) is noise in this file
pytestmark = pytest.mark.filterwarnings("ignore:mel.*looks like a log or dB mel:UserWarning")

# -- scale ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1e30, 1e200])
def test_float64_answer_scales_with_the_mel(scale, cpu_loop):
    _, M = audio_pair("speech-201x128", "speech_00")
    M = M[:, :120].astype(np.float64)
    inv = cumel.InverseMelScale(201, 128)
    ref = inv(M)
    scaled = inv(M * scale) / scale
    # c M is rounded once (1e-16) and the solve amplifies that by its conditioning: measured
    # 7.8e-13 (before the rescaling: 1.0 at 1e-200, where the frames came back as zeros)
    assert np.abs(scaled - ref).max() <= 1e-9 * np.abs(ref).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [-1000, -900, -100, 100, 900])
def test_power_of_two_scales_give_the_same_bits(dtype, exponent, cpu_loop):
    _, M = audio_pair("tts-513x80", "speech_02")
    M = M[:, :60].astype(dtype)
    if dtype == np.float32:
        exponent = int(np.clip(exponent, -60, 60))
    inv = cumel.InverseMelScale(513, 80, norm="slaney", mel_type="slaney")
    ref = inv(M)
    scaled = inv(np.ldexp(M, exponent))
    expected = np.ldexp(ref, exponent)
    normal = (np.abs(expected) >= np.finfo(dtype).tiny) | (expected == 0)
    np.testing.assert_array_equal(scaled[normal], expected[normal])
    np.testing.assert_allclose(scaled[~normal], expected[~normal], rtol=0,
                               atol=2 * np.finfo(dtype).smallest_subnormal)


def test_answer_beyond_the_dtype_range_raises_clearly(cpu_loop):
    _, M = audio_pair("speech-201x128", "speech_00")
    mel = (M[:, :20] / M[:, :20].max() * 3e38).astype(np.float32)
    with pytest.raises(FloatingPointError, match="exceeds the float32 range"):
        cumel.InverseMelScale(201, 128)(mel)
    S = cumel.InverseMelScale(201, 128)(mel.astype(np.float64))     # float64 holds it
    assert np.isfinite(S).all() and S.max() > 3e38


def test_sgd_squares_the_loss_in_float64():
    # float32 mel values of 1e19-1e37 used to overflow the float32 square of the residual and
    # were reported as "diverged: lower lr"; the loss is squared in float64 now
    _, M = audio_pair("speech-201x128", "speech_00")
    M = M[:, :30] / M[:, :30].max()
    for solver in ("torchaudio", "mindspore"):
        inv = cumel.InverseMelScale(201, 128, solver=solver, seed=1, max_iter=50)
        ref = inv(M.astype(np.float32) * np.float32(1e19)) / np.float32(1e19)
        big = inv(M.astype(np.float32) * np.float32(1e37)) / np.float32(1e37)
        assert np.isfinite(big).all()
        np.testing.assert_allclose(big, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_sgd_overflow_is_named_as_such():
    _, M = audio_pair("speech-201x128", "speech_00")
    mel = (M[:, :30] / M[:, :30].max() * 3e38).astype(np.float32)
    with pytest.raises(FloatingPointError, match="overflow float32 arithmetic"):
        cumel.InverseMelScale(201, 128, solver="torchaudio", seed=1, max_iter=50)(mel)
    # a real divergence at ordinary scale still says so (MindSpore's loop has no clamp)
    with pytest.raises(FloatingPointError, match=r"diverged: lower sgdargs\['lr'\]"):
        cumel.InverseMelScale(201, 128, solver="mindspore", seed=0, max_iter=5000,
                              sgdargs={"sgd_lr": 1e3})(M[:, :30])


# -- stopping and reporting -------------------------------------------------------------------


def _signed_frames():
    rng = np.random.default_rng(7)
    inv = cumel.InverseMelScale(n_stft=201, n_mels=80, sample_rate=16000)
    S_true = rng.gamma(0.5, 1.0, size=(201, 40)) * (rng.random((201, 40)) < 0.6)
    M = inv.plan.fb64.T @ S_true
    M[rng.random(M.shape) < 0.05] *= -1.0
    return M


def test_tight_tolerances_on_signed_frames_stop_at_the_rounding_floor(cpu_loop):
    # the case that spun to max_iter = 100000 (59 s) on another machine
    M = _signed_frames()
    inv = cumel.InverseMelScale(201, 80, tolerance_loss=1e-10, tolerance_change=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        S, info = inv(M, return_info=True)
    assert info.iterations.max() <= 100                 # measured 16
    _, _, kkt = nnls.solve(inv.plan.nnls(), M, max_iter=100000, tolerance_loss=1e-10,
                           tolerance_change=1e-12)
    assert (kkt <= nnls.FLOOR_KKT).all()                # floor, never far from the optimum
    np.testing.assert_array_equal(info.converged, kkt <= 1e-10)


def test_step_bound_caps_every_frame_whatever_max_iter(monkeypatch, cpu_loop):
    # a frame that could only stop on the cap: no rule may fire (no rounding floor, and never a
    # full step, so the exact line search cannot end the solve on an unchanged active set)
    monkeypatch.setattr(nnls.iteration, "FLOOR_KKT", 0.0)
    monkeypatch.setattr(nnls.iteration, "FULL_STEP_TIE", -np.inf)
    _, M = audio_pair("speech-201x128", "speech_03")
    M = M[:, :40].astype(np.float64)
    M[::3] *= -1.0
    inv = cumel.InverseMelScale(201, 128, tolerance_loss=0.0, tolerance_change=0.0)
    with pytest.warns(RuntimeWarning, match=r"the step bound 4 \* n_mels \+ 32 = 544"):
        _, info = inv(M, return_info=True)
    assert info.iterations.max() <= nnls.step_bound(128)
    assert not info.converged.any()


def test_converged_and_one_warning_when_frames_run_out():
    _, M = audio_pair("music-1025x128", "music_00")
    M = M[:, :60]
    inv = cumel.InverseMelScale(1025, 128, 22050, norm="slaney", mel_type="slaney", max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = inv(M, return_info=True)
    ran_out = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(ran_out) == 1
    n_out = int((~info.converged).sum())
    assert 0 < n_out and f"{n_out} of 60 frames stopped after max_iter=2" in str(ran_out[0].message)
    assert (info.iterations[~info.converged] == 2).all()
    full = cumel.InverseMelScale(1025, 128, 22050, norm="slaney", mel_type="slaney")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, info = full(M, return_info=True)
    assert info.converged.all() and info.converged.shape == (60,)


@pytest.mark.parametrize("solver", ["lstsq", "torchaudio", "mindspore"])
def test_converged_for_the_other_solvers(solver):
    _, M = audio_pair("speech-201x128", "speech_00")
    mel = np.stack([M[:, :10], M[:, 10:20] * 0.5])
    _, info = cumel.InverseMelScale(201, 128, solver=solver, seed=0, max_iter=5)(mel, return_info=True)
    assert info.converged.shape == (2, 10) and info.converged.dtype == bool
    if solver == "lstsq":
        assert info.converged.all()
    else:   # 5 iterations of SGD never meet the default tolerances
        assert not info.converged.any()
    tiny = cumel.InverseMelScale(201, 128, solver=solver, seed=0, max_iter=5,
                                 tolerance_change=1e30)   # the rule fires at once
    assert tiny(mel, return_info=True)[1].converged.all()


# -- out= and memory ----------------------------------------------------------------------------


def test_out_receives_the_result_in_any_layout(cpu_loop):
    _, M = audio_pair("speech-201x128", "speech_01")
    mel = np.stack([M[:, :50], M[:, 50:100]])
    inv = cumel.InverseMelScale(201, 128)
    expected = inv(mel)
    for out in (np.full((2, 201, 50), np.nan, np.float32),
                np.asfortranarray(np.full((2, 201, 50), np.nan, np.float32)),
                np.full((2, 50, 201), np.nan, np.float32).transpose(0, 2, 1),
                np.full((2, 201, 100), np.nan, np.float32)[:, :, ::2]):
        result = inv(mel, out=out)
        assert result is out
        np.testing.assert_array_equal(out, expected)
    S = cumel.inverse_mel_scale(mel, 201, out=np.empty((2, 201, 50), np.float32), solver="lstsq")
    np.testing.assert_array_equal(S, cumel.InverseMelScale(201, 128, solver="lstsq")(mel))


def test_out_is_checked():
    mel = np.abs(np.random.default_rng(0).standard_normal((128, 5))).astype(np.float32)
    inv = cumel.InverseMelScale(201, 128)
    with pytest.raises(ValueError, match=r"out must have shape \(201, 5\) and dtype float32"):
        inv(mel, out=np.empty((201, 5), np.float64))
    with pytest.raises(ValueError, match=r"out must have shape"):
        inv(mel, out=np.empty((201, 6), np.float32))
    ro = np.empty((201, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        inv(mel, out=ro)
    buf = np.zeros((400, 5), np.float32)
    buf[:128] = mel
    with pytest.raises(ValueError, match="overlap"):
        inv(buf[:128], out=buf[100:301])
    with pytest.raises(ValueError, match="numpy.ndarray"):
        inv(mel, out=[[0.0] * 5] * 201)


def test_cpu_work_memory_does_not_grow_with_the_batch():
    # NumPy reports its allocations to tracemalloc. Each worker thread keeps one chunk's work
    # arrays for the whole call (measured: about 15 chunks of float64 a thread at 201 x 128),
    # whatever the batch; the old path copied the input three times in float64 and kept every
    # chunk's float64 result. Twice the batch (both large enough to fill every thread's chunks
    # at their largest) may not take more memory.
    _, M = audio_pair("speech-201x128", "speech_00")
    frames = np.stack([M[:, i:i + 500] for i in range(0, 108, 9)]).astype(np.float32)
    for workers in (1, 2):
        chunk_elements = nnls.CHUNK_ELEMENTS if workers == 1 else nnls.THREAD_CHUNK_ELEMENTS
        chunk_bytes = chunk_elements * 8
        filled = -(-nnls.CHUNKS_PER_WORKER * workers * chunk_elements // (frames[:, 0].size * 201))
        inv = cumel.InverseMelScale(201, 128, workers=workers)
        peaks = []
        for copies in (filled, 2 * filled):         # 12 clips of 500 frames a copy
            mel = np.concatenate([frames] * copies)
            out = np.empty((mel.shape[0], 201, 500), np.float32)
            inv(mel[:1], out=out[:1])               # plan built outside the measurement
            tracemalloc.start()
            try:
                inv(mel, out=out)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            peaks.append(peak)
            np.testing.assert_array_equal(out[:12], inv(mel[:12]))
        assert peaks[1] <= 1.25 * peaks[0] + chunk_bytes, peaks
        assert peaks[1] <= workers * 80 * chunk_bytes, peaks   # 5x the measured per-thread size


def test_info_memory_does_not_grow_with_the_batch():
    # return_info=True used to hold the whole batch in float64 four times over (a 1e6-frame
    # batch peaked at 4.6 GB against 1.04 GB without it), and the finiteness check a bool mask
    # of a whole batch item; both now go chunk by chunk: per-frame results (a few 8-byte
    # values a frame) and one chunk's float64 work. A (128, 1e5) float32 batch into a
    # preallocated 80 MB output (lstsq: a cheap solve into out=): measured 13 MB above it
    # (16 %, 9 MB of it the diagnostics); the old path took 426 MB.
    _, M = audio_pair("speech-201x128", "speech_00")
    T = 100_000
    mel = np.tile(M, (1, T // M.shape[1] + 1))[:, :T].astype(np.float32)
    inv = cumel.InverseMelScale(201, 128, solver="lstsq")
    out = np.empty((201, T), np.float32)
    inv(mel[:, :8], out=out[:, :8])                # pseudo-inverse built outside the measurement
    tracemalloc.start()
    try:
        _, info = inv(mel, out=out, return_info=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 0.25 * out.nbytes               # the acceptance bound: output + 25 %
    S64, M64 = out.astype(np.float64), mel.astype(np.float64)
    r = np.linalg.norm(inv.plan.fb64.T @ S64 - M64, axis=0)
    m = np.linalg.norm(M64, axis=0)
    np.testing.assert_allclose(info.mel_residual, r / m, rtol=1e-9)
    assert info.total_mel_residual == pytest.approx(np.linalg.norm(r) / np.linalg.norm(m), rel=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_info_chunk_seams(dtype, monkeypatch):
    # chunks of 7 frames across 3 batch items of 20 frames, and of whole batch items where
    # the time axis is short: every frame's residual equals the one computed at once
    from cumel import transforms
    rng = np.random.default_rng(3)
    inv = cumel.InverseMelScale(65, 16)
    for shape in [(3, 16, 20), (5, 16, 3)]:
        mel = (rng.random(shape) * 10.0 ** rng.integers(-30, 30, shape[:1] + (1, 1))).astype(dtype)
        whole = inv(mel, return_info=True)[1]
        monkeypatch.setattr(transforms, "INFO_CHUNK_ELEMENTS", 65 * 7)
        S, chunked = inv(mel, return_info=True)
        monkeypatch.undo()
        # A s - m cancels to ~1e-8 of |m| here: BLAS rounding (which depends on the chunk's
        # width) moves a ratio by ~n eps, not by eps of itself
        np.testing.assert_allclose(chunked.mel_residual, whole.mel_residual, rtol=1e-9, atol=1e-13)
        assert chunked.total_mel_residual == pytest.approx(whole.total_mel_residual, rel=1e-9,
                                                           abs=1e-13)
        S64, M64 = S.astype(np.float64), mel.astype(np.float64)
        scale = np.abs(M64).max(axis=1, keepdims=True)          # keep the squares finite
        r = np.linalg.norm((inv.plan.fb64.T @ (S64 / scale)) - M64 / scale, axis=1)
        np.testing.assert_allclose(chunked.mel_residual, r / np.linalg.norm(M64 / scale, axis=1),
                                   rtol=1e-9, atol=1e-13)


# -- properties ---------------------------------------------------------------------------------

SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)


@st.composite
def filterbanks(draw):
    sample_rate = draw(st.sampled_from(SAMPLE_RATES))
    n_stft = draw(st.integers(2, 2049))
    n_mels = draw(st.integers(1, 256))
    f_max = draw(st.floats(0.1, 1.0)) * sample_rate / 2
    f_min = draw(st.floats(0.0, 0.95)) * f_max
    norm = draw(st.sampled_from([None, "slaney"]))
    mel_type = draw(st.sampled_from(["htk", "slaney"]))
    return dict(n_stft=n_stft, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max,
                norm=norm, mel_type=mel_type)


@st.composite
def problems(draw):
    fb = draw(filterbanks())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    T = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["consistent", "signed", "log", "noise", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = lead + (fb["n_mels"], T)
    if kind == "consistent":
        A = cumel.melscale_fbanks(fb["n_stft"], fb["f_min"], fb["f_max"], fb["n_mels"],
                                  fb["sample_rate"], fb["norm"], fb["mel_type"], dtype=np.float64).T
        S = rng.gamma(0.5, 1.0, size=lead + (fb["n_stft"], T))
        m = np.matmul(A, S)
    elif kind == "signed":
        m = np.abs(rng.standard_normal(shape)) * np.where(rng.random(shape) < 0.1, -1, 1)
    elif kind == "log":
        m = np.log(rng.gamma(0.3, 1.0, size=shape) + 1e-6)
    elif kind == "noise":
        m = rng.standard_normal(shape)
    else:
        m = rng.random(shape) * (rng.random(shape) < 0.2)
    top = 1e30 if dtype == np.float32 else 1e300
    exponent = draw(st.integers(int(np.log2(1 / top)) + 8, int(np.log2(top)) - 8))
    return fb, np.ldexp(m, exponent).astype(dtype), exponent


# CI runs a fixed set of 400 examples (derandomized: the same on every machine, ~10 s);
# CUMEL_HYPOTHESIS_EXAMPLES=N explores N fresh random ones.
EXPLORE = int(os.environ.get("CUMEL_HYPOTHESIS_EXAMPLES", "0"))


@settings(max_examples=EXPLORE or 400, deadline=None, derandomize=not EXPLORE,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problems())
def test_properties_of_the_default_solver(problem):
    fb, mel, exponent = problem
    inv = cumel.InverseMelScale(**fb)
    before = mel.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # empty filters, as torchaudio warns
        warnings.simplefilter("error", RuntimeWarning)     # no frame may run out of steps
        try:
            S, info = inv(mel, return_info=True)
        except FloatingPointError as exc:                  # only when the answer is unrepresentable
            assert "exceeds the" in str(exc)
            assert np.abs(mel).max() > 1e-3 * np.finfo(mel.dtype).max / 2**16
            return
    np.testing.assert_array_equal(mel, before)             # input untouched
    assert S.shape == mel.shape[:-2] + (fb["n_stft"], mel.shape[-1]) and S.dtype == mel.dtype
    assert np.isfinite(S).all() and (S >= 0).all()
    cap = nnls.step_bound(fb["n_mels"])
    assert info.iterations.max() <= cap                    # every frame stops within the bound
    # a frame alone gives the bits it has in the batch
    frames = mel.reshape(-1, fb["n_mels"], mel.shape[-1])
    solved = S.reshape(-1, fb["n_stft"], mel.shape[-1])
    np.testing.assert_array_equal(inv(frames[-1][:, -1:]), solved[-1][:, -1:])
    # s(c m) = c s(m) for a power of two c, bit for bit where c s(m) is a normal number
    shift = 8 if exponent < 0 else -8
    scaled = inv(np.ldexp(mel, shift))
    expected = np.ldexp(S, shift)
    # (where S or c S is subnormal, S's own rounding is scaled too)
    tiny, sub = np.finfo(S.dtype).tiny, np.finfo(S.dtype).smallest_subnormal
    normal = (np.abs(S) >= tiny) & (np.abs(expected) >= tiny)
    np.testing.assert_array_equal(scaled[normal], expected[normal])
    np.testing.assert_allclose(scaled[~normal], expected[~normal], rtol=0,
                               atol=2 * np.ldexp(sub, max(shift, 0)) + sub)
    # KKT: wherever a frame is reported converged, the optimality of s follows (in float64)
    plan = inv.plan.nnls()
    m64 = frames.transpose(1, 0, 2).reshape(fb["n_mels"], -1).astype(np.float64)
    s64, iterations, kkt = nnls.solve(plan, m64, max_iter=inv.max_iter,
                                      tolerance_loss=inv.tolerance_loss,
                                      tolerance_change=inv.tolerance_change)
    np.testing.assert_array_equal(kkt <= inv.tolerance_loss, info.converged.reshape(-1))
    A = inv.plan.fb64.T
    for t in np.flatnonzero(kkt <= inv.tolerance_loss)[:4]:
        m = np.ldexp(m64[:, t], -exponent)        # the bound is scale-free; keep the norms finite
        s = np.ldexp(s64[:, t], -exponent)
        if np.linalg.norm(A.T @ m) > 0:
            assert kkt_violation(A, plan.eps, s, m) <= kkt_violation_bound(A, inv.tolerance_loss, m) + 1e-9


def test_info_norms_at_extreme_scales():
    # found by the property test: the per-frame residual norms squared 1e163 (overflow)
    for value, n_stft in ((1.34892149e+163, 106), (1.35407992e+154, 42)):
        S, info = cumel.InverseMelScale(n_stft, 1, 8000)(np.array([[value]]), return_info=True)
        assert np.isfinite(S).all() and S.max() > 0
        assert info.mel_residual[0] <= 1e-5 and info.total_mel_residual <= 1e-5
        assert info.converged.all()
    # a subnormal mel: the answer is subnormal too, with the few digits subnormals have
    S, info = cumel.InverseMelScale(42, 1, 8000)(np.array([[3e-320]]), return_info=True)
    assert 0 < S.max() < 1e-300 and info.converged.all()
    assert np.isfinite(info.mel_residual).all() and info.total_mel_residual <= 1e-2
