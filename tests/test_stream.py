"""cumel.MelStream: the guarantees (chunking, length, latency), bad input, quality."""
import doctest
import re
import warnings

import numpy as np
import pytest

import cumel
import cumel.stream
from conftest import data_path

SMALL = dict(n_fft=128, hop_length=32, n_iter=3)      # 65 bins, R = 4 frames a slot


def _mel(shape, seed=0):
    return np.random.default_rng(seed).random(shape) ** 2


def _run(stream, mel, chunk):
    """Push ``mel`` (..., n_mels, T) in chunks of ``chunk`` frames (a list: cycled), then flush."""
    sizes = chunk if isinstance(chunk, list) else [chunk]
    parts, t, i = [], 0, 0
    while t < mel.shape[-1]:
        k = sizes[i % len(sizes)]
        parts.append(stream.push(mel[..., t:t + k]))
        t, i = t + k, i + 1
    parts.append(stream.flush())
    return np.concatenate(parts, axis=-1)


def _small_front_end(**kw):
    args = dict(sample_rate=8000, n_fft=128, hop_length=32, center=False, pad=48, power=1.0,
                magnitude_eps=1e-9, n_mels=12, f_max=4000.0, norm="slaney", mel_type="slaney",
                log="ln", floor=1e-5)
    args.update(kw)
    return cumel.Frontend(**args)


# -- the guarantees ----------------------------------------------------------------------------

@pytest.mark.parametrize("lookahead", [0, 3])
@pytest.mark.parametrize("batched", [False, True])
def test_chunking_gives_the_same_bits(lookahead, batched, cpu_loop):
    mel = _mel((3, 16, 23) if batched else (16, 23))
    runs = [_run(cumel.MelStream(**SMALL, lookahead=lookahead), mel, chunk)
            for chunk in (1, 7, 23, [2, 0, 5, 1, 9])]
    for y in runs[1:]:
        assert y.dtype == runs[0].dtype and np.array_equal(y, runs[0])
    assert runs[0].shape == mel.shape[:-2] + (32 * 22,)


def test_front_end_chunking_and_length(cpu_loop):
    fe = _small_front_end()
    t = np.arange(2400) / 8000
    x = np.sin(2 * np.pi * 300 * t) * np.exp(-2 * t)
    feats = fe.features(x.astype(np.float32))
    a = _run(cumel.MelStream(frontend=fe, lookahead=2, n_iter=2), feats, 1)
    b = _run(cumel.MelStream(frontend=fe, lookahead=2, n_iter=2), feats, 7)
    assert np.array_equal(a, b) and a.dtype == np.float32
    offline = cumel.mel_to_audio(feats, frontend=fe, n_iter=1, seed=0)
    assert a.shape == offline.shape


@pytest.mark.parametrize("grid", [dict(), dict(center=False, pad=(24, 8)),
                                  dict(n_fft=100, hop_length=32), dict(n_fft=128, hop_length=48)])
@pytest.mark.parametrize("T", [2, 5, 20])
def test_length_equals_mel_to_audio(grid, T, cpu_loop):
    kw = dict(SMALL, **grid)
    mel = _mel((16, T))
    y = _run(cumel.MelStream(**kw, lookahead=3), mel, 1)
    offline = cumel.mel_to_audio(mel, kw["n_fft"], hop_length=kw["hop_length"], n_iter=0,
                                 center=grid.get("center", True), pad=grid.get("pad"))
    assert y.shape == offline.shape


def test_samples_of_frame_t_are_final_after_frame_t_plus_k(cpu_loop):
    # two streams sharing the first j + 1 frames: what stream A returns after frame j is
    # exactly stream B's output there, whatever B's later frames are
    K, H, left, j = 2, 32, 64, 11
    mel_a, mel_b = _mel((16, 20), 1), _mel((16, 20), 2)
    mel_b[:, :j + 1] = mel_a[:, :j + 1]
    a = cumel.MelStream(**SMALL, lookahead=K)
    got = a.push(mel_a[:, :j + 1])
    assert got.shape == ((j - K + 1) * H - left,)
    assert a.samples_out == got.shape[0]
    b = _run(cumel.MelStream(**SMALL, lookahead=K), mel_b, 1)
    full_a = np.concatenate([got, _run(a, mel_a[:, j + 1:], 1)])
    assert np.array_equal(b[:got.shape[0]], got)
    assert not np.array_equal(b, full_a)          # the later frames do differ


@pytest.mark.parametrize("grid", [dict(), dict(n_fft=100, hop_length=32)])
@pytest.mark.parametrize("lookahead", [0, 2])
def test_compiled_passes_are_the_numpy_twin(grid, lookahead, monkeypatch):
    """The stream on its compiled passes (cumel/stream/compiled.py), its update swapped for the
    NumPy twin's (``|b|`` by hypot, where the compiled one takes sqrt: next tests), equals the
    NumPy twin bit for bit on 3 streams of 19 frames, pushed one at a time and 5 at a time; the
    magnitudes come from the same nnls loop."""
    pytest.importorskip("numba", reason="the compiled CPU loop needs numba (the cpu extra)")
    from cumel.stream import compiled as passes
    monkeypatch.setenv("CUMEL_CPU", "numba")
    kw = dict(SMALL, **grid)
    mel = _mel((3, 16, 19), 4)
    fast = _run(cumel.MelStream(**kw, lookahead=lookahead), mel, 1)
    def numpy_update(rebuilt, tprev, mag, alpha, eps, out=None):
        out[...] = cumel.stream._update(rebuilt, tprev, mag, alpha, np)
        return out

    monkeypatch.setattr(passes, "update", numpy_update)
    compiled = [_run(cumel.MelStream(**kw, lookahead=lookahead), mel, chunk) for chunk in (1, 5)]
    monkeypatch.setattr(cumel.stream, "compiled_module", lambda: None)
    twin = _run(cumel.MelStream(**kw, lookahead=lookahead), mel, 1)
    assert np.array_equal(compiled[0], twin) and np.array_equal(compiled[1], twin)
    assert not np.array_equal(fast, twin)        # the swap above did change the update


def test_compiled_update_is_the_numpy_update_to_rounding():
    """mag * b / (|b| + eps) with |b| = sqrt(re^2 + im^2) against NumPy's complex abs: each
    side's output is within ~3 ulps of the exact value (|b|, the sum, the division and the
    product each round once), so they differ by at most ~6 ulps of mag: checked against 16, on
    values spread over 600 decades (the squares' guard: hypot beyond 1e+-140), zeros, and equal
    bits where b is real (|b| exact both ways)."""
    pytest.importorskip("numba", reason="the compiled CPU loop needs numba (the cpu extra)")
    from cumel.stream import compiled as passes
    rng = np.random.default_rng(6)
    shape = (2, 3, 4000)
    exponent = rng.uniform(-300, 300, shape)
    rebuilt = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * 10.0 ** exponent
    tprev = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * 10.0 ** exponent
    rebuilt[0, 0, :50] = 0
    tprev[0, 0, :50] = 0
    rebuilt[0, 1, :50] = rng.standard_normal(50)          # a real b: |b| exact both ways
    tprev[0, 1, :50] = 0
    mag = rng.random(shape) * 10.0 ** rng.uniform(-100, 100, shape)
    got = passes.update(rebuilt, tprev, mag, 0.5, 1e-16)
    want = cumel.stream._update(rebuilt, tprev, mag, 0.5, np)
    assert np.array_equal(got[0, 0, :50], want[0, 0, :50]) and np.array_equal(got[0, 1, :50], want[0, 1, :50])
    assert np.all(np.abs(got - want) <= 16 * np.spacing(mag))
    assert np.all(np.isfinite(got))


def test_compiled_overlap_is_the_numpy_twins_bits():
    """The overlap-add, normalisation and re-framing pass, compiled, equals the NumPy twin's
    operations (window, adds in r order, envelope, window) bit for bit, ragged n_fft included."""
    pytest.importorskip("numba", reason="the compiled CPU loop needs numba (the cpu extra)")
    from cumel.stream import compiled
    rng = np.random.default_rng(5)
    for n_fft, hop, k in ((128, 32, 4), (100, 32, 3), (96, 96, 2)):
        R = -(-n_fft // hop)
        frames = rng.standard_normal((2, k, n_fft))
        tail = rng.standard_normal((2, R - 1, hop))
        inv = rng.random((k + R - 1, hop))
        window = np.zeros(R * hop)
        window[:n_fft] = np.hanning(n_fft)
        seg = np.empty_like(frames)
        compiled.overlap(frames, tail, inv, window, hop, seg)
        padded = np.zeros((2, k, R * hop))
        padded[..., :n_fft] = frames * window[:n_fft]
        ola = np.zeros((2, k + R - 1, hop))
        ola[:, :R - 1] = tail
        for r in range(R):
            ola[:, r:r + k] += padded.reshape(2, k, R, hop)[:, :, r]
        ola *= inv
        expect = np.stack([(ola[:, i:i + R].reshape(2, R * hop) * window)[:, :n_fft]
                           for i in range(k)], axis=1)
        assert np.array_equal(seg, expect), (n_fft, hop, k)


@pytest.mark.parametrize("n_fft", [99, 100, 127, 128, 401])
def test_the_streams_ffts_are_numpys_for_every_n_fft(n_fft):
    """cumel.stream.fft's rfft / irfft (the stream's NumPy passes) give numpy.fft's values for
    odd and even n_fft, into a new array or into ``out``."""
    from cumel.stream import fft
    rng = np.random.default_rng(n_fft)
    x = rng.standard_normal((3, 2, n_fft))
    X = np.fft.rfft(x, n=n_fft, axis=-1)
    scale = np.abs(X).max()
    got = fft.rfft(x, n_fft)
    assert got.shape == X.shape and np.abs(got - X).max() <= 1e-12 * scale
    out = np.empty_like(X)
    assert fft.rfft(x, n_fft, out=out) is out and np.abs(out - X).max() <= 1e-12 * scale
    back = fft.irfft(X, n_fft)
    assert back.shape == x.shape and np.abs(back - x).max() <= 1e-12 * np.abs(x).max()
    into = np.empty_like(x)
    assert fft.irfft(X, n_fft, out=into) is into and np.abs(into - x).max() <= 1e-12 * np.abs(x).max()


def test_one_frame_at_a_time_returns_one_hop_per_frame():
    K, H, left = 3, 32, 64
    stream = cumel.MelStream(**SMALL, lookahead=K)
    mel = _mel((16, 12))
    sizes = [stream.push(mel[:, t:t + 1]).shape[0] for t in range(12)]
    assert sizes == [max(0, min(H, (t - K + 1) * H - left)) for t in range(12)]


def test_latency_table_in_the_docstring():
    doc = cumel.stream.__doc__
    rows = re.findall(r"^\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s*$", doc, re.M)
    assert len(rows) == 5
    for name, rate, n_fft, hop, samples, ms in rows:
        stream = cumel.MelStream(frontend=name, lookahead=3)
        assert (stream.sample_rate, stream.n_fft, stream.hop_length) == (int(rate), int(n_fft),
                                                                        int(hop))
        assert stream.latency == int(samples)
        assert f"{stream.latency_ms:.1f}" == ms


def test_streams_are_seeded_by_index():
    mel = _mel((3, 16, 10))
    batch = _run(cumel.MelStream(**SMALL, seed=5), mel, 4)
    alone = _run(cumel.MelStream(**SMALL, seed=5), mel[0], 4)
    assert np.array_equal(batch[0], alone)
    other = _run(cumel.MelStream(**SMALL, seed=6), mel[0], 4)
    assert not np.array_equal(other, alone)


def test_generator_form_and_float64():
    mel = _mel((16, 9))
    chunks = [mel[:, :4], mel[:, 4:]]
    parts = list(cumel.mel_to_audio_stream(chunks, **SMALL, lookahead=1))
    assert len(parts) == 3
    y = np.concatenate(parts)
    assert y.dtype == np.float64
    assert np.array_equal(y, _run(cumel.MelStream(**SMALL, lookahead=1), mel, 9))
    y32 = _run(cumel.MelStream(**SMALL, lookahead=1), mel.astype(np.float32), 9)
    assert y32.dtype == np.float32


def test_input_untouched():
    mel = _mel((2, 16, 6))
    copy = mel.copy()
    _run(cumel.MelStream(**SMALL), mel, 2)
    assert np.array_equal(mel, copy)


def test_doctests():
    result = doctest.testmod(cumel.stream, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


# -- bad input ---------------------------------------------------------------------------------

def _same_as_clean(stream, mel, head):
    """After the bad push the stream goes on as if it had not been made."""
    y = np.concatenate([head, _run(stream, mel[..., 4:], 3)], axis=-1)
    clean = _run(cumel.MelStream(**SMALL), mel, 4)
    assert np.array_equal(y, clean)


def test_wrong_n_mels_mid_stream():
    mel = _mel((16, 10))
    stream = cumel.MelStream(**SMALL)
    head = stream.push(mel[:, :4])
    with pytest.raises(ValueError, match=r"n_mels=16"):
        stream.push(_mel((12, 2)))
    _same_as_clean(stream, mel, head)


def test_nan_frames():
    mel = _mel((2, 16, 10))
    stream = cumel.MelStream(**SMALL)
    head = stream.push(mel[..., :4])
    bad = mel[..., 4:6].copy()
    bad[1, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"mel_frames contain NaN.*stream 1, frame 1"):
        stream.push(bad)
    _same_as_clean(stream, mel, head)


def test_dtype_change():
    mel = _mel((16, 10))
    stream = cumel.MelStream(**SMALL)
    head = stream.push(mel[:, :4])
    with pytest.raises(ValueError, match=r"dtype float32.*float64"):
        stream.push(mel[:, 4:6].astype(np.float32))
    _same_as_clean(stream, mel, head)


def test_shape_change():
    mel = _mel((2, 16, 10))
    stream = cumel.MelStream(**SMALL)
    head = stream.push(mel[..., :4])
    with pytest.raises(ValueError, match=r"mel_frames has shape \(16, 2\)"):
        stream.push(mel[0, :, 4:6])
    with pytest.raises(ValueError, match=r"mel_frames has shape \(3, 16, 2\)"):
        stream.push(_mel((3, 16, 2)))
    with pytest.raises(ValueError, match=r"mel_frames must have shape"):
        stream.push(mel[0, 0])
    with pytest.raises(TypeError, match=r"mel_frames must hold real numbers"):
        stream.push(mel[..., 4:6] + 0j)
    _same_as_clean(stream, mel, head)


def test_push_after_flush_and_reset():
    mel = _mel((16, 6))
    stream = cumel.MelStream(**SMALL)
    y = _run(stream, mel, 2)
    with pytest.raises(RuntimeError, match=r"push after flush"):
        stream.push(mel)
    with pytest.raises(RuntimeError, match=r"flush called twice"):
        stream.flush()
    stream.reset()
    assert np.array_equal(_run(stream, mel, 3), y)


@pytest.mark.parametrize("kw, match", [
    (dict(lookahead=-1), "lookahead must be an integer >= 0"),
    (dict(n_iter=0), "n_iter must be an integer >= 1"),
    (dict(method="adam"), "method must be one of"),
    (dict(momentum=1.0), r"momentum must be a number in \[0.0, 1.0\)"),
    (dict(seed=None), r"seed must be an integer"),
    (dict(n_mels=0), "n_mels must be an integer >= 1"),
])
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        cumel.MelStream(**dict(SMALL, **kw))


def test_frontend_settings():
    with pytest.raises(ValueError, match=r"n_fft is required"):
        cumel.MelStream(lookahead=1)
    with pytest.raises(ValueError, match=r"ref='max'"):
        cumel.MelStream(frontend=cumel.frontend("librosa", ref="max"))
    # a dynamic-range floor is not known until the end: the stream runs without it
    stream = cumel.MelStream(frontend="whisper", lookahead=1, n_iter=1)
    y = _run(stream, np.full((80, 4), -0.5, np.float32), 2)
    assert y.shape == (160 * 3,) and np.isfinite(y).all()


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    mel = _mel((16, 6)).astype(np.float32)
    stream = cumel.MelStream(**SMALL)
    parts = [stream.push(torch.from_numpy(mel[:, :3])), stream.push(torch.from_numpy(mel[:, 3:])),
             stream.flush()]
    assert all(isinstance(p, torch.Tensor) for p in parts)
    y = torch.cat(parts).numpy()
    assert np.array_equal(y, _run(cumel.MelStream(**SMALL), mel, 3))


# -- quality --------------------------------------------------------------------------------------

@pytest.mark.parametrize("workload", ["speech-201x128", "tts-513x80"])
def test_spectral_convergence_near_offline(workload):
    # 1.5 s of a speech clip, K = 3 and 8 iterations per arriving frame against offline fast
    # Griffin-Lim with the same 32 iterations a frame: measured 1.07x (speech-201x128) and 1.01x
    # (tts-513x80) here, 0.92-1.10x on the full clips (python -m bench stream); the bound is the
    # acceptance figure, 1.15x
    from cumel.workloads import WORKLOADS, read_wav
    w = WORKLOADS[workload]
    audio, rate = read_wav(data_path("audio", "speech_01.wav"))
    audio = audio[rate // 2:2 * rate]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, M = w.pair(audio)
    kw = dict(sample_rate=w.sample_rate, f_max=w.f_max, norm=w.norm, mel_type=w.mel_scale,
              hop_length=w.hop)
    offline = cumel.mel_to_audio(M, w.n_fft, n_iter=32, seed=0, workers=1, **kw)
    y = _run(cumel.MelStream(w.n_fft, lookahead=3, n_iter=8, **kw), M, 5)
    assert y.shape == offline.shape
    sc_offline = cumel.spectral_convergence(offline, audio, w.n_fft, w.hop)
    sc = cumel.spectral_convergence(y, audio, w.n_fft, w.hop)
    assert sc <= 1.15 * sc_offline


@pytest.mark.parametrize("f0", [440.0, 1000.0])
@pytest.mark.parametrize("lookahead", [0, 3])
def test_the_flushed_end_is_normalised_like_the_offline_inverse(f0, lookahead):
    # after the flush the last slots' overlap-add is divided by the envelope of the frames that
    # exist (no frame comes after the last one); counting one more frame there fades the last hop
    # to ~0.1 % of the offline inverse's, which divides by the true envelope. Measured ratio of
    # the last hop's RMS to the offline one: 0.5 to 4.3; bounds with >= 5x head-room.
    fe = _small_front_end(pad=0)
    x = np.sin(2 * np.pi * f0 * np.arange(4000) / 8000).astype(np.float32)
    feats = fe.features(x)
    y = _run(cumel.MelStream(frontend=fe, lookahead=lookahead, n_iter=8), feats, 1)
    offline = cumel.mel_to_audio(feats, frontend=fe, n_iter=(lookahead + 1) * 8, seed=0)
    assert y.shape == offline.shape
    hop = fe.hop_length
    ratio = np.sqrt(np.mean(y[-hop:] ** 2) / np.mean(offline[-hop:] ** 2))
    assert 0.1 < ratio < 25.0, ratio
