"""mel_to_audio(method="admm") on the CuPy path, run through the CUDA emulator, against NumPy.

The emulator (tests/cudasim, fixture ``emulated_cupy``) runs ``kernels/admm.cu`` (the fused
element-wise pass) and ``nnls_prior`` of ``kernels/nnls.cu`` (the mel step) unmodified;
``cupy.fft`` is ``numpy.fft`` underneath. Both paths start from the same seeded phases and run the
same iterations.

Tolerances (measured on this machine, then 5x or more head-room): the element-wise pass is the
same operations in the same order as NumPy; the mel step's sums run in another order and its
tridiagonal solve is Thomas, not cyclic reduction, as in nnls_solve (measured: 2.7e-16 relative
in float64, float32 bit-equal); the whole mel_to_audio, a few ADMM iterations after one or two
Griffin-Lim ones: at most 2.3e-14 (float64) and 1.2e-5 (float32) of the peak.
"""
import importlib.util

import numpy as np
import pytest

import cumel
from cumel import _backend, admm
from cumel import stft as _stft
from cumel.solvers import nnls as _nnls
from cumel.transforms import InverseMelScale

from conftest import audio_pair

pytestmark = pytest.mark.emulated

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}
PRIOR_RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}


def _clear_caches():
    _backend._cupy_or_none.cache_clear()
    _backend.gpu_available.cache_clear()
    _stft._DEVICE_CACHE.clear()


@pytest.fixture
def emulated(request):
    try:
        cupy = request.getfixturevalue("emulated_cupy")
    except pytest.FixtureLookupError:
        pytest.skip("needs the CUDA emulator's fixture emulated_cupy (tests/cudasim), absent here")
    _clear_caches()
    yield cupy
    _clear_caches()


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _excerpt(name="speech-201x128", clip="speech_00", frames=24, first=20):
    from cumel.workloads import WORKLOADS
    w = WORKLOADS[name]
    _, M = audio_pair(name, clip)
    return w, np.ascontiguousarray(M[:, first:first + frames])


def _kw(w, **extra):
    return dict(sample_rate=w.sample_rate, hop_length=w.hop, f_min=w.f_min, f_max=w.f_max,
                norm=w.norm, mel_type=w.mel_scale, seed=3, method="admm", **extra)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mel_to_audio_admm_cupy_equals_numpy(emulated, dtype):
    cupy = emulated
    w, M = _excerpt()
    m = M.astype(dtype)
    kw = _kw(w, n_iter=4, start_iter=2)
    expected = cumel.mel_to_audio(m, w.n_fft, **kw)
    got = cumel.mel_to_audio(cupy.asarray(m), w.n_fft, **kw)
    assert isinstance(got, cupy.ndarray)
    got = _host(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.dtype(dtype)
    assert np.abs(got - expected).max() <= RTOL[np.dtype(dtype)] * np.abs(expected).max()


def test_mel_to_audio_admm_device_cuda_on_numpy_input(emulated):
    w, M = _excerpt(name="tts-513x80", clip="speech_01", frames=20, first=50)
    batch = np.stack([M, 0.25 * M]).astype(np.float64)
    kw = _kw(w, n_iter=3, start_iter=1, inner_steps=2, length=w.hop * 19 + 7)
    expected = cumel.mel_to_audio(batch, w.n_fft, **kw)
    got = cumel.mel_to_audio(batch, w.n_fft, device="cuda", **kw)
    assert isinstance(got, np.ndarray) and got.shape == expected.shape == (2, w.hop * 19 + 7)
    assert np.abs(got - expected).max() <= RTOL[got.dtype] * np.abs(expected).max()


def _prior_case(w, M, seed=0):
    rng = np.random.default_rng(seed)
    inverse = InverseMelScale(w.n_stft, w.n_mels, w.sample_rate, w.f_min, w.f_max, norm=w.norm,
                              mel_type=w.mel_scale)
    S = inverse(M).astype(np.float64)
    b = np.sqrt(S) * np.exp(0.4 * rng.standard_normal(S.shape))
    b[:, 3] = 0.0                                          # a frame with no spread at all
    M = M.copy()
    M[:, 5] = 0.0                                          # a silent frame
    # frames-major (T, F) arrays seen as (F, T), as the ADMM hands them over
    center = np.ascontiguousarray((b * b).T)[None].transpose(0, 2, 1)
    spread = np.ascontiguousarray(b.T)[None].transpose(0, 2, 1)
    return inverse, M[None], center, spread


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("inner_steps", [0, 3, 200])
def test_nnls_prior_kernel_equals_numpy_in_every_order(emulated_cupy_order, dtype, inner_steps,
                                                       monkeypatch):
    cupy = emulated_cupy_order
    _clear_caches()
    from cumel import cuda
    w, M = _excerpt(frames=12)
    inverse, mel, center, spread = _prior_case(w, M)
    mel, center, spread = (a.astype(dtype) for a in (mel, center, spread))
    # the NumPy loop's answer, and the compiled loop's (numba) where installed: both the kernel's
    loops = ["numpy"] + (["numba"] if importlib.util.find_spec("numba") is not None else [])
    answers = []
    for loop in loops:
        monkeypatch.setenv("CUMEL_CPU", loop)
        answers.append(np.empty((1, w.n_stft, mel.shape[2]), dtype))
        _nnls.solve_into(inverse.plan.nnls(), mel, answers[-1], max_iter=inner_steps,
                         tolerance_loss=1e-6, tolerance_change=1e-12,
                         prior=_nnls.Prior(center, spread, 1e-5))
    out_t = cupy.full((1, mel.shape[2], w.n_stft), np.nan, dtype)        # poisoned, (T, F)
    cuda.nnls_prior(inverse, cupy.asarray(mel), out_t.transpose(0, 2, 1),
                    cupy.asarray(np.ascontiguousarray(center.transpose(0, 2, 1))).transpose(0, 2, 1),
                    cupy.asarray(np.ascontiguousarray(spread.transpose(0, 2, 1))).transpose(0, 2, 1),
                    1e-5, inner_steps, 1e-6)
    got = _host(out_t).transpose(0, 2, 1)
    assert np.isfinite(got).all()
    for expected in answers:
        assert np.abs(got - expected).max() <= PRIOR_RTOL[np.dtype(dtype)] * np.abs(expected).max()
    free = (inverse.plan.fb64 == 0).all(axis=1)
    assert np.array_equal(got[0, :, 5], np.where(free, np.maximum(center[0, :, 5], 0), 0))
    _clear_caches()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("power", [2.0, 1.0, 1.5])
def test_update_kernel_equals_numpy_update(emulated, dtype, power):
    from cumel import cuda
    cupy = emulated
    rng = np.random.default_rng(4)
    shape = (2, 3, 33)
    cplx = np.complex128 if dtype == np.float64 else np.complex64
    Z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cplx)
    XU = (Z + 0.3 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))).astype(cplx)
    P = (rng.random(shape) ** 2).astype(dtype)
    b = (rng.random(shape) - 0.2).astype(dtype)
    spread_np = None
    state = [a.copy() for a in (Z, XU, P, b)]
    center = np.empty_like(P)
    spread = center if power == 2.0 else np.empty_like(P)
    admm.update(*state, center, spread, 0.07, 0.7, power, np)
    spread_np = spread
    dev = [cupy.asarray(a) for a in (Z, XU, P, b)]
    c_dev = cupy.empty(shape, dtype)
    s_dev = c_dev if power == 2.0 else cupy.empty(shape, dtype)
    cuda.admm_update(*dev, c_dev, s_dev, 0.07, 0.7, power)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for got, want in ((dev[1], state[1]), (dev[3], state[3]), (c_dev, center), (s_dev, spread_np)):
        got = _host(got)
        assert np.abs(got - want).max() <= rtol * max(np.abs(want).max(), 1.0)
