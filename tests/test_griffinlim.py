"""Griffin-Lim, the STFT conventions and mel_to_audio (NumPy path).

The STFT conventions are pinned against a reference written here (np.pad reflect + explicit
frames, torch.stft/librosa semantics); librosa itself is used only where importable.
"""
import warnings

import numpy as np
import pytest

import cumel
from cumel import stft as cstft
from cumel.workloads import WORKLOADS, read_wav

from conftest import data_path

SR = 16000


def harmonic(seconds=0.5, f0=220.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t + 0.3 * k) / k for k in range(1, 8))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def reference_stft(x, n_fft, hop, win_length=None):
    """torch.stft(center=True, pad_mode="reflect", window=torch.hann_window(win_length)) /
    librosa.stft(pad_mode="reflect"), written out: (n_fft // 2 + 1, 1 + len // hop)."""
    win_length = win_length or n_fft
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)   # periodic Hann
    window = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    window[left:left + win_length] = w
    padded = np.pad(np.asarray(x, np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop      # = 1 + len(x) // hop for even n_fft
    frames = np.stack([padded[t * hop:t * hop + n_fft] for t in range(n_frames)])
    return np.fft.rfft(frames * window, axis=-1).T


def reference_griffinlim(S, n_fft, hop, n_iter, momentum, start, length):
    """torchaudio.functional.griffinlim's loop, statement by statement, on reference_stft and a
    plain overlap-add ISTFT (torch.istft: divide by the squared-window envelope, trim n_fft//2)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)

    def istft(X):
        T = X.shape[1]
        frames = np.fft.irfft(X.T, n=n_fft, axis=-1) * window
        total = n_fft + hop * (T - 1)
        y, env = np.zeros(total), np.zeros(total)
        for t in range(T):
            y[t * hop:t * hop + n_fft] += frames[t]
            env[t * hop:t * hop + n_fft] += window ** 2
        y = y[n_fft // 2:n_fft // 2 + length] / env[n_fft // 2:n_fft // 2 + length]
        return y

    momentum = momentum / (1 + momentum)
    mag = np.sqrt(S)
    angles = start
    tprev = 0.0
    for _ in range(n_iter):
        inverse = istft(mag * angles)
        rebuilt = reference_stft(inverse, n_fft, hop)
        angles = rebuilt
        if momentum:
            angles = angles - tprev * momentum
        angles = angles / (np.abs(angles) + 1e-16)
        tprev = rebuilt
    return istft(mag * angles)


def sc(y, x, n_fft=400, hop=160):
    return cumel.spectral_convergence(y, x, n_fft, hop)


def speech(seconds=2.0):
    x, rate = read_wav(data_path("audio", "speech_05.wav"))
    assert rate == SR
    return x[:int(seconds * SR)]


# -- STFT conventions -------------------------------------------------------------------------------

@pytest.mark.parametrize("n_fft, hop, win", [(400, 160, None), (1024, 256, None), (512, 128, 400),
                                             (401, 100, None)])
def test_stft_matches_reflect_padded_reference_on_a_real_clip(n_fft, hop, win):
    x = speech(1.0)
    X = cstft.stft(x.astype(np.float64), n_fft, hop, win)
    ref = reference_stft(x, n_fft, hop, win)
    n_frames = 1 + len(x) // hop if n_fft % 2 == 0 else 1 + (len(x) - 1) // hop
    assert X.shape == (n_fft // 2 + 1, n_frames) == ref.shape
    assert np.abs(X - ref).max() <= 1e-9 * np.abs(ref).max()


def test_stft_is_the_workload_power_spectrogram():
    x = speech(1.0)
    w = WORKLOADS["speech-201x128"]
    X = cstft.stft(x.astype(np.float64), w.n_fft, w.hop)
    P = w.spectrogram(x)
    assert np.allclose(np.abs(X) ** 2, P, rtol=1e-4, atol=1e-6 * P.max())


def test_frame_t_is_centred_on_sample_t_times_hop():
    # an impulse at sample k * hop puts the energy peak of the frames at frame k
    n_fft, hop = 400, 160
    x = np.zeros(16000)
    for k in (3, 40, 77):
        x[:] = 0
        x[k * hop] = 1.0
        energy = (np.abs(cstft.stft(x, n_fft, hop)) ** 2).sum(axis=0)
        assert int(np.argmax(energy)) == k


@pytest.mark.parametrize("n, hop", [(16000, 160), (16007, 160), (8000, 256), (12345, 512)])
def test_istft_inverts_stft_with_length_and_alignment(n, hop):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n)
    n_fft = 4 * hop
    X = cstft.stft(x, n_fft, hop)
    assert X.shape[-1] == 1 + n // hop
    y = cstft.istft(X, n_fft, hop, length=n)
    assert y.shape == (n,)
    assert np.abs(y - x).max() < 1e-10
    y_default = cstft.istft(X, n_fft, hop)             # torch/librosa default: hop * (T - 1)
    assert y_default.shape == (hop * (X.shape[-1] - 1),)
    assert np.abs(y_default - x[:y_default.size]).max() < 1e-10
    y_long = cstft.istft(X, n_fft, hop, length=n + 3 * hop)   # zero padded past the frames
    assert np.abs(y_long[:n] - x).max() < 1e-10


def test_stft_batched_and_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4000)).astype(np.float32)
    X = cstft.stft(x, 256, 64)
    assert X.shape == (2, 3, 129, 1 + 4000 // 64) and X.dtype == np.complex64
    assert np.allclose(X[1, 2], cstft.stft(x[1, 2], 256, 64))
    y = cstft.istft(X, 256, 64, length=4000)
    assert y.dtype == np.float32 and np.abs(y - x).max() < 1e-5


def test_stft_rejects_signals_too_short_for_reflect_padding():
    with pytest.raises(ValueError, match="longer than n_fft // 2 = 200"):
        cstft.stft(np.zeros(200), 400, 100)


def test_librosa_conventions_when_installed():
    librosa = pytest.importorskip("librosa")
    x = speech(1.0).astype(np.float64)
    X = cstft.stft(x, 400, 160)
    L = librosa.stft(x, n_fft=400, hop_length=160, pad_mode="reflect")
    assert X.shape == L.shape and np.abs(X - L).max() <= 1e-9 * np.abs(L).max()
    y = cstft.istft(X, 400, 160, length=len(x))
    assert np.abs(y - librosa.istft(L, hop_length=160, n_fft=400, length=len(x))).max() < 1e-9


# -- Griffin-Lim --------------------------------------------------------------------------------------

def test_iteration_is_torchaudios_update_order():
    x = harmonic(0.2).astype(np.float64)
    n_fft, hop = 256, 64
    S = np.abs(reference_stft(x, n_fft, hop)) ** 2
    gl = cumel.GriffinLim(n_fft, n_iter=5, hop_length=hop, length=len(x), seed=3)
    start = gl.start((1, S.shape[1], S.shape[0]))[0].T
    ref = reference_griffinlim(S, n_fft, hop, 5, 0.99, start, len(x))
    y = gl(S)
    assert y.dtype == np.float64 and y.shape == (len(x),)
    assert np.abs(y - ref).max() <= 1e-9 * np.abs(ref).max()


def test_round_trip_of_a_harmonic_signal():
    # measured (float32, 64 iterations, seeds 0-2): spectral convergence 0.06-0.11; bound 0.5.
    # The start alone (0 iterations) is at 0.77.
    x = harmonic(0.5)
    S = np.abs(cstft.stft(x, 400, 160)) ** 2
    y = cumel.GriffinLim(400, n_iter=64, hop_length=160, length=len(x), seed=0)(S)
    y0 = cumel.GriffinLim(400, n_iter=0, hop_length=160, length=len(x), seed=0)(S)
    assert y.shape == x.shape and y.dtype == np.float32
    assert sc(y, x) < 0.5, (sc(y, x), sc(y0, x))
    assert sc(y, x) < sc(y0, x) / 3


def test_more_iterations_converge_further_and_momentum_helps():
    x = harmonic(0.5)
    S = np.abs(cstft.stft(x, 400, 160)) ** 2
    errs = {(n, m): sc(cumel.GriffinLim(400, n, hop_length=160, length=len(x), momentum=m,
                                        seed=1)(S), x)
            for n, m in [(2, 0.99), (32, 0.99), (32, 0.0)]}
    assert errs[(32, 0.99)] < errs[(2, 0.99)]
    assert errs[(32, 0.99)] < errs[(32, 0.0)]


def test_power_one_takes_magnitudes():
    x = harmonic(0.3).astype(np.float64)
    X = cstft.stft(x, 400, 160)
    a = cumel.GriffinLim(400, 8, hop_length=160, power=1.0, seed=0)(np.abs(X))
    b = cumel.GriffinLim(400, 8, hop_length=160, power=2.0, seed=0)(np.abs(X) ** 2)
    assert np.allclose(a, b, atol=1e-9)


def test_batched_equals_per_item():
    rng = np.random.default_rng(0)
    S = (rng.random((2, 3, 201, 40)) ** 4).astype(np.float32)
    gl = cumel.GriffinLim(400, n_iter=4, hop_length=160, rand_init=False)
    y = gl(S)
    assert y.shape == (2, 3, 160 * 39)
    for i in range(2):
        for j in range(3):
            assert np.allclose(y[i, j], gl(S[i, j]), rtol=1e-5, atol=1e-6 * np.abs(y).max())


def test_seeded_reproducibility():
    rng = np.random.default_rng(1)
    S = rng.random((201, 30)).astype(np.float32)
    a = cumel.GriffinLim(400, 3, hop_length=160, seed=7)(S)
    b = cumel.GriffinLim(400, 3, hop_length=160, seed=7)(S)
    c = cumel.GriffinLim(400, 3, hop_length=160, seed=8)(S)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    gl = cumel.GriffinLim(400, 3, hop_length=160, seed=7)
    assert np.array_equal(gl(S), gl(S))           # same start every call


def test_seeded_item_sounds_the_same_in_any_batch():
    # the start of item b comes from (seed, b): neither the batch size nor the other items
    # change it, so neither do they change the sound
    rng = np.random.default_rng(4)
    S = rng.random((3, 201, 12)) ** 2                   # float64: the same bits expected
    gl = cumel.GriffinLim(400, 3, hop_length=160, seed=7)
    whole = gl(S)
    alone = cumel.GriffinLim(400, 3, hop_length=160, seed=7)(S[:1])
    pair = cumel.GriffinLim(400, 3, hop_length=160, seed=7)(S[:2])
    np.testing.assert_allclose(alone[0], whole[0], rtol=0, atol=1e-12 * np.abs(whole).max())
    np.testing.assert_allclose(pair, whole[:2], rtol=0, atol=1e-12 * np.abs(whole).max())
    other = S.copy()
    other[0] = rng.random((201, 12))                    # another item 0: item 1 unchanged
    changed = gl(other)
    np.testing.assert_allclose(changed[1:], whole[1:], rtol=0, atol=1e-12 * np.abs(whole).max())
    starts = gl.start((3, 12, 201))
    np.testing.assert_array_equal(cumel.GriffinLim(400, seed=7).start((1, 12, 201))[0], starts[0])
    assert not np.array_equal(starts[0], starts[1])     # each item its own start


def test_unseeded_items_start_apart():
    c = cumel.GriffinLim(400).start((2, 5, 201))
    assert not np.array_equal(c[0], c[1])
    assert not np.array_equal(c, cumel.GriffinLim(400).start((2, 5, 201)))


def test_start_is_torch_rand_like_complex():
    gl = cumel.GriffinLim(400, seed=0)
    c = gl.start((2, 5, 201))
    assert c.shape == (2, 5, 201) and c.dtype == np.complex128
    assert (c.real >= 0).all() and (c.real < 1).all() and (c.imag >= 0).all() and (c.imag < 1).all()
    assert np.array_equal(cumel.GriffinLim(400, rand_init=False).start((1, 2, 3)), np.ones((1, 2, 3)))


def test_input_untouched():
    rng = np.random.default_rng(2)
    S = rng.random((201, 20)).astype(np.float32)
    S_view = np.asfortranarray(S)
    before = S.copy()
    cumel.GriffinLim(400, 3, hop_length=160, seed=0)(S)
    cumel.GriffinLim(400, 3, hop_length=160, seed=0)(S_view)
    assert np.array_equal(S, before) and np.array_equal(S_view, before)


def test_zero_batch_and_dtypes():
    gl = cumel.GriffinLim(400, 2, hop_length=160, seed=0)
    assert gl(np.zeros((0, 201, 10), np.float32)).shape == (0, 160 * 9)
    assert gl(np.ones((201, 10), np.float64)).dtype == np.float64
    assert gl(np.ones((201, 10), np.int64)).dtype == np.float32
    assert np.isfinite(gl(np.zeros((201, 10), np.float32))).all()   # silence stays finite


def test_default_hop_and_length_follow_torch():
    gl = cumel.GriffinLim(512, 1, seed=0)
    assert (gl.hop_length, gl.win_length) == (128, 512)
    assert gl(np.ones((257, 11), np.float32)).shape == (128 * 10,)
    gl = cumel.GriffinLim(512, 1, win_length=400, seed=0)
    assert gl.hop_length == 100
    assert cumel.GriffinLim(400, 1, hop_length=160, length=1234, seed=0)(
        np.ones((201, 11))).shape == (1234,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_fft=0), "n_fft must be a positive integer, got 0"),
    (dict(n_fft=1), "n_fft must be at least 2, got 1"),
    (dict(n_fft=400.0), "n_fft must be a positive integer, got 400.0"),
    (dict(n_iter=-1), "n_iter must be an integer >= 0, got -1"),
    (dict(win_length=500), "win_length must be <= n_fft=400, got 500"),
    (dict(hop_length=0), "hop_length must be a positive integer, got 0"),
    (dict(window="hamming"), "window must be 'hann'.*got 'hamming'"),
    (dict(power=0.0), "power must be a finite number > 0, got 0.0"),
    (dict(momentum=1.0), r"momentum must be a number in \[0.0, 1.0\), got 1.0"),
    (dict(momentum=-0.1), r"momentum must be a number in \[0.0, 1.0\), got -0.1"),
    (dict(length=0), "length must be a positive integer, got 0"),
    (dict(rand_init="yes"), "rand_init must be True or False, got 'yes'"),
    (dict(seed=-1), "seed must be None or an integer"),
    (dict(device="tpu"), "device must be None, 'cpu', 'cuda' or 'auto', got 'tpu'"),
])
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cumel.GriffinLim(**kwargs)


@pytest.mark.parametrize("S, error, match", [
    (np.ones((200, 10)), ValueError, r"specgram must have shape \(..., n_fft // 2 \+ 1 = 201"),
    (np.ones(201), ValueError, "specgram must have shape"),
    (np.ones((201, 0)), ValueError, "at least one frame"),
    (-np.ones((201, 10)), ValueError, "specgram must be non-negative"),
    (np.full((201, 10), np.nan), ValueError, "specgram contains NaN or Inf"),
    (np.ones((201, 10), np.complex64), TypeError, "specgram must hold real numbers"),
    (np.ones((201, 2)), ValueError, "too few frames"),
])
def test_call_validation(S, error, match):
    with pytest.raises(error, match=match):
        cumel.GriffinLim(400, 2, hop_length=160)(S)


# -- mel_to_audio ------------------------------------------------------------------------------------

def _clip_mel(name="speech-201x128", seconds=2.0):
    w = WORKLOADS[name]
    x = speech(seconds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, M = w.pair(x)
    return w, x, M


def test_mel_to_audio_on_a_real_clip():
    # measured: spectral convergence 0.10-0.11 on speech clips at 32 iterations; bound 0.5
    w, x, M = _clip_mel()
    y = cumel.mel_to_audio(M, w.n_fft, hop_length=w.hop, length=len(x), seed=0)
    assert y.shape == x.shape and y.dtype == np.float32
    assert sc(y, x, w.n_fft, w.hop) < 0.5


def test_mel_to_audio_is_inverse_mel_scale_then_griffinlim():
    w, x, M = _clip_mel("tts-513x80", 1.0)
    kw = dict(sample_rate=w.sample_rate, f_max=w.f_max, norm=w.norm, mel_type=w.mel_scale)
    y = cumel.mel_to_audio(M, w.n_fft, hop_length=w.hop, n_iter=4, seed=5, **kw)
    S = cumel.InverseMelScale(w.n_stft, w.n_mels, **kw)(M)
    ref = cumel.GriffinLim(w.n_fft, 4, hop_length=w.hop, seed=5)(S)
    assert y.shape == (w.hop * (M.shape[-1] - 1),)
    assert np.array_equal(y, ref)


def test_mel_to_audio_batched_shape_and_input_untouched():
    w, x, M = _clip_mel(seconds=0.5)
    batch = np.stack([M, 0.5 * M])[:, None]          # (2, 1, 128, T)
    before = batch.copy()
    y = cumel.mel_to_audio(batch, w.n_fft, hop_length=w.hop, n_iter=2, seed=0)
    assert y.shape == (2, 1, w.hop * (M.shape[-1] - 1))
    assert np.array_equal(batch, before)


def test_mel_to_audio_validation():
    with pytest.raises(ValueError, match="mel must have at least 2 dims"):
        cumel.mel_to_audio(np.ones(10), 400)
    with pytest.raises(ValueError, match="n_fft must be a positive integer"):
        cumel.mel_to_audio(np.ones((128, 10)), -400)
    with pytest.raises(ValueError, match="solver must be one of"):
        cumel.mel_to_audio(np.ones((128, 10)), 400, solver="adam")


def test_spectral_convergence_is_zero_for_the_signal_itself():
    x = harmonic(0.3)
    assert sc(x, x) == 0.0
    assert sc(-x, x) < 1e-12                   # magnitudes only
    assert abs(sc(np.zeros_like(x), x) - 1.0) < 1e-12


def test_device_cuda_without_cupy_is_a_clear_error():
    from cumel import _backend
    if _backend.gpu_available():
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError, match="device='cuda'"):
        cumel.GriffinLim(400, 1, hop_length=160, device="cuda")(np.ones((201, 10)))


@pytest.mark.parametrize("n_fft, hop, win", [(401, 100, None), (512, 128, 300)])
def test_odd_n_fft_and_short_window_keep_frames_and_length(n_fft, hop, win):
    x = harmonic(0.25).astype(np.float64)
    S = np.abs(cstft.stft(x, n_fft, hop, win)) ** 2
    gl = cumel.GriffinLim(n_fft, 8, win_length=win, hop_length=hop, length=len(x), seed=0)
    y = gl(S)
    assert y.shape == x.shape
    assert sc(y, x, n_fft, hop) < sc(cumel.GriffinLim(n_fft, 0, win_length=win, hop_length=hop,
                                                      length=len(x), seed=0)(S), x, n_fft, hop)
