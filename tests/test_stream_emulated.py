"""cumel.MelStream on the CuPy path (kernels/stream.cu), run through the CUDA emulator, against
the NumPy path.

Tolerances: both paths add the same products in the same order, but the kernel may fuse a
multiply-add and cupy.fft is numpy.fft here; measured on the NumPy side, rounding every product
differently moves these outputs by ~1e-16 relative (float64). The bound 1e-10 of the peak is far
above that; the magnitudes are solved by "lstsq" (one matrix product, the same on both paths) so
the phase path is what is compared.
"""
import numpy as np
import pytest

import cumel
from cumel import _backend
from cumel import stft as _stft

pytestmark = pytest.mark.emulated


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


def _reference(frames, tail, inv, window, hop):
    """The NumPy path's overlap-add and re-framing (cumel/stream/__init__.py), spelt out."""
    S, k, n_fft = frames.shape
    R = window.shape[0] // hop
    padded = np.zeros((S, k, R * hop))
    padded[..., :n_fft] = frames * window[:n_fft]
    padded = padded.reshape(S, k, R, hop)
    ola = np.zeros((S, k + R - 1, hop))
    ola[:, :R - 1] = tail
    for r in range(R):
        ola[:, r:r + k] += padded[:, :, r]
    ola *= inv
    seg = np.empty((S, k, R, hop))
    w = window.reshape(R, hop)
    for r in range(R):
        seg[:, :, r] = ola[:, r:r + k] * w[r]
    return seg.reshape(S, k, R * hop)[..., :n_fft]


@pytest.mark.parametrize("S, k, n_fft, hop", [(2, 3, 64, 16), (1, 1, 64, 16), (3, 4, 60, 16),
                                              (2, 2, 48, 20)])
def test_overlap_kernel_equals_numpy(emulated, S, k, n_fft, hop):
    from cumel import cuda
    cupy = emulated
    rng = np.random.default_rng(k)
    R = -(-n_fft // hop)
    frames = rng.standard_normal((S, k, n_fft))
    tail = rng.standard_normal((S, R - 1, hop))
    inv = rng.random((k + R - 1, hop)) + 0.5
    window = np.zeros(R * hop)
    window[:n_fft] = _stft.hann_window(n_fft, n_fft)
    expected = _reference(frames, tail, inv, window, hop)
    got = _host(cuda.stream_overlap(cupy.asarray(frames), cupy.asarray(tail), cupy.asarray(inv),
                                    cupy.asarray(window), hop))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


def _run(stream, mel, chunk):
    parts = [stream.push(mel[..., t:t + chunk]) for t in range(0, mel.shape[-1], chunk)]
    parts.append(stream.flush())
    return parts


@pytest.mark.parametrize("grid", [dict(n_fft=64, hop_length=16),
                                  dict(n_fft=60, hop_length=16, center=False, pad=(20, 8))])
def test_stream_cupy_equals_numpy(emulated, grid):
    cupy = emulated
    mel = np.random.default_rng(3).random((2, 8, 9)) ** 2
    kw = dict(grid, lookahead=2, n_iter=2, solver="lstsq")
    expected = np.concatenate(_run(cumel.MelStream(**kw), mel, 4), axis=-1)
    parts = _run(cumel.MelStream(**kw), cupy.asarray(mel), 4)
    assert all(isinstance(p, cupy.ndarray) for p in parts)
    got = np.concatenate([_host(p) for p in parts], axis=-1)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-10 * np.abs(expected).max()
    # one frame at a time on the device: the same bits as four at a time
    again = np.concatenate([_host(p) for p in _run(cumel.MelStream(**kw), cupy.asarray(mel), 1)],
                           axis=-1)
    assert np.array_equal(again, got)


def test_stream_numpy_input_on_the_device(emulated):
    mel = np.random.default_rng(4).random((8, 6)) ** 2
    kw = dict(n_fft=64, hop_length=16, lookahead=1, n_iter=2, solver="lstsq")
    parts = _run(cumel.MelStream(**kw, device="cuda"), mel, 3)
    assert all(isinstance(p, np.ndarray) for p in parts)
    got = np.concatenate(parts)
    expected = np.concatenate(_run(cumel.MelStream(**kw), mel, 3))
    assert np.abs(got - expected).max() <= 1e-10 * np.abs(expected).max()
