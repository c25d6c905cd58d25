"""GriffinLim on the CuPy path, run through the CUDA emulator, against the NumPy path.

The fixture ``emulated_cupy`` (tests/cudasim/, merged separately) installs a fake ``cupy``
whose ``RawModule`` compiles ``kernels/*.cu`` with g++ and runs every CUDA thread as a fiber;
``cupy.fft`` is ``numpy.fft`` underneath. With it active, a CuPy input takes cumel's device path:
``cupy.fft`` for the transforms and ``kernels/griffinlim.cu`` for the fused update.

Tolerances: both paths do the same operations in the same precision, but the kernel computes
``|a|`` with ``hypot`` and ``a * (mag / (|a| + eps))`` in its own order, and a fused multiply-add
may round differently. Measured on the NumPy side, swapping in such an update changes the
3-iteration results of these tests by 9e-16 (float64) and 1.7e-7 (float32) relative to the
peak; bounds 1e-9 and 1e-3 leave far more than 5x for the emulator's libm and the FFTs.
"""
import numpy as np
import pytest

import cumel
from cumel import _backend
from cumel import stft as _stft

pytestmark = pytest.mark.emulated


def _clear_caches():
    # cumel caches "is CuPy importable" and device-side constants; the fake CuPy comes and goes
    _backend._cupy_or_none.cache_clear()
    _backend.gpu_available.cache_clear()
    _stft._DEVICE_CACHE.clear()


@pytest.fixture
def emulated(request):
    """The emulator's ``emulated_cupy`` fixture (the fake cupy module); a clean skip where the
    emulator (tests/cudasim) is not part of the checkout."""
    try:
        cupy = request.getfixturevalue("emulated_cupy")
    except pytest.FixtureLookupError:
        pytest.skip("needs the CUDA emulator's fixture emulated_cupy (tests/cudasim), absent here")
    _clear_caches()
    yield cupy
    _clear_caches()


def _spectrogram(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) ** 3).astype(dtype)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-3)])
@pytest.mark.parametrize("momentum", [0.99, 0.0])
def test_griffinlim_cupy_equals_numpy(emulated, dtype, rtol, momentum):
    cupy = emulated
    S = _spectrogram((2, 33, 6), dtype)          # n_fft 64, hop 16: 2 items x 6 frames x 33 bins
    gl = cumel.GriffinLim(64, n_iter=3, hop_length=16, momentum=momentum, seed=4)
    expected = gl(S)
    got = gl(cupy.asarray(S))
    assert isinstance(got, cupy.ndarray)
    got = _host(got)
    assert got.shape == expected.shape == (2, 16 * 5) and got.dtype == expected.dtype
    assert np.abs(got - expected).max() <= rtol * np.abs(expected).max()


def test_griffinlim_cupy_item_sounds_the_same_in_any_batch(emulated):
    # the seeded start is per item index on the host for both paths: a batch of three on the
    # device gives item 0 the sound the NumPy path gives it alone
    cupy = emulated
    S = _spectrogram((3, 33, 6), np.float64, seed=5)
    gl = cumel.GriffinLim(64, n_iter=3, hop_length=16, seed=4)
    whole = _host(gl(cupy.asarray(S)))
    alone = cumel.GriffinLim(64, n_iter=3, hop_length=16, seed=4)(S[:1])
    assert np.abs(whole[:1] - alone).max() <= 1e-9 * np.abs(alone).max()
    pair = _host(cumel.GriffinLim(64, n_iter=3, hop_length=16, seed=4)(cupy.asarray(S[1:2])))
    assert np.abs(pair[0] - whole[1]).max() > 1e-3 * np.abs(whole[1]).max()   # index 0, not 1


def test_griffinlim_cupy_input_untouched_and_numpy_device_cuda(emulated):
    cupy = emulated
    S = _spectrogram((33, 5), np.float64, seed=1)
    S_dev = cupy.asarray(S)
    gl = cumel.GriffinLim(64, n_iter=2, hop_length=16, length=70, seed=0)
    y = _host(gl(S_dev))
    assert np.array_equal(_host(S_dev), S)
    assert y.shape == (70,)
    y_np = cumel.GriffinLim(64, n_iter=2, hop_length=16, length=70, seed=0, device="cuda")(S)
    assert isinstance(y_np, np.ndarray)
    assert np.abs(y_np - y).max() <= 1e-12 * np.abs(y).max()


def test_update_kernel_equals_numpy_update(emulated):
    from cumel import cuda
    from cumel.griffin_lim import update
    cupy = emulated
    rng = np.random.default_rng(3)
    shape = (2, 3, 17)
    rebuilt = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    tprev = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    mag = rng.random(shape)
    for prev in (None, tprev):
        expected = update(rebuilt.copy(), None if prev is None else prev.copy(), mag, 0.4, np)
        got = _host(cuda.griffinlim_update(cupy.asarray(rebuilt),
                                           None if prev is None else cupy.asarray(prev),
                                           cupy.asarray(mag), 0.4))
        assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


def test_mel_to_audio_cupy_equals_numpy(emulated):
    cupy = emulated
    rng = np.random.default_rng(5)
    S = rng.random((129, 8)) ** 2                        # n_fft 256
    mel = cumel.MelScale(n_mels=16, n_stft=129)(S)
    kw = dict(hop_length=64, n_iter=2, seed=2)
    expected = cumel.mel_to_audio(mel, 256, **kw)
    got = _host(cumel.mel_to_audio(cupy.asarray(mel), 256, **kw))
    assert got.shape == expected.shape == (64 * 7,)
    # the nnls kernel and the NumPy nnls agree to rounding of their own iterations (tests/
    # test_gpu.py bounds them by 1e-4); measured here 2.6e-5 of the peak after Griffin-Lim
    assert np.abs(got - expected).max() <= 5e-4 * np.abs(expected).max()


# -- the frame grids and the front ends on the CuPy path ----------------------------------------------

@pytest.mark.parametrize("framing", [dict(center=False, pad=(24, 8)), dict(pad_mode="constant")])
def test_griffinlim_framings_cupy_equal_numpy(emulated, framing):
    cupy = emulated
    S = _spectrogram((33, 7), np.float64, seed=2)
    gl = cumel.GriffinLim(64, n_iter=2, hop_length=16, seed=1, **framing)
    expected = gl(S)
    got = _host(gl(cupy.asarray(S)))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-9 * np.abs(expected).max()


def _small_front_end(**kw):
    # HiFi-GAN's recipe at a size the emulator runs in seconds: magnitude + 1e-9, ln, 1e-5 floor,
    # center=False with (n_fft - hop) / 2 of reflect padding
    args = dict(sample_rate=8000, n_fft=128, hop_length=32, center=False, pad=48, power=1.0,
                magnitude_eps=1e-9, n_mels=12, f_max=4000.0, norm="slaney", mel_type="slaney",
                log="ln", floor=1e-5)
    args.update(kw)
    return cumel.Frontend(**args)


@pytest.mark.parametrize("kw", [dict(), dict(log="log10", multiplier=10.0, ref="max",
                                             dynamic_range=40.0, power=2.0, magnitude_eps=0.0)])
def test_front_end_cupy_equals_numpy(emulated, kw):
    cupy = emulated
    fe = _small_front_end(**kw)
    t = np.arange(320) / 8000
    x = (np.sin(2 * np.pi * 440 * t) * np.exp(-8 * t)).astype(np.float64)
    F = fe.features(x)
    F_dev = fe.features(cupy.asarray(x))
    assert isinstance(F_dev, cupy.ndarray)
    assert np.abs(_host(F_dev) - F).max() <= 1e-9 * max(1.0, np.abs(F).max())
    np.testing.assert_array_equal(_host(fe.floor_mask(F_dev)), fe.floor_mask(F))
    y = fe.audio(F, length=len(x), n_iter=2, seed=0)
    y_dev = _host(fe.audio(cupy.asarray(F), length=len(x), n_iter=2, seed=0))
    assert y_dev.shape == y.shape == x.shape
    # nnls on the device and on the host agree to their own rounding (see the test above)
    assert np.abs(y_dev - y).max() <= 5e-4 * np.abs(y).max()
    y_np = fe.audio(F, length=len(x), n_iter=2, seed=0, device="cuda")
    assert isinstance(y_np, np.ndarray) and np.abs(y_np - y_dev).max() <= 1e-12 * np.abs(y).max()
