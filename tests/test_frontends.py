"""Front ends (cumel.frontend), the framing knobs (center/pad), fb= and the log-mel warning.

NumPy only: each preset's forward is checked against a restatement written here from the
projects' own definitions (../shared/REFERENCE.md, "Front ends"), in float64 with explicit
frames, independent of cumel.stft. The real libraries (transformers, librosa, torch) are in
tests/test_frontends_peers.py.
"""
import pickle
import re
import warnings

import numpy as np
import pytest

import cumel
from cumel import stft as cstft
from cumel.workloads import read_wav

from conftest import data_path


def clip(name, seconds, offset=0.0):
    x, rate = read_wav(data_path("audio", name + ".wav"))
    return x[int(offset * rate):int((offset + seconds) * rate)].astype(np.float32), rate


def resample(x, rate_in, rate_out):
    """Band-limited resampling by FFT (enough to play a 16 kHz clip to a 22.05 kHz front end)."""
    n_out = int(round(len(x) * rate_out / rate_in))
    X = np.fft.rfft(x)
    Y = np.zeros(n_out // 2 + 1, complex)
    k = min(len(X), len(Y))
    Y[:k] = X[:k]
    return (np.fft.irfft(Y, n_out) * (n_out / len(x))).astype(np.float32)


def speech_22k(seconds=2.0):
    x, rate = clip("speech_07", seconds * 16000 / 16000)
    return resample(x, rate, 22050)


def clip_for(fe, seconds=2.0):
    if fe.sample_rate == 16000:
        return clip("speech_07", seconds)[0]
    return speech_22k(seconds)


# -- restatements of the presets' definitions (float64, explicit frames) ----------------------------

def triangles(sr, n_fft, n_mels, fmin, fmax, htk, slaney_norm):
    """librosa.filters.mel / torchaudio melscale_fbanks, written out: (n_fft // 2 + 1, n_mels)."""
    if htk:
        to_mel, to_hz = (lambda f: 2595 * np.log10(1 + f / 700.0)), (lambda m: 700 * (10 ** (m / 2595) - 1))
    else:
        step, logstep = 200.0 / 3, np.log(6.4) / 27

        def to_mel(f):
            f = np.asarray(f, float)
            return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-300) / 1000) / logstep, f / step)

        def to_hz(m):
            return np.where(m >= 15, 1000 * np.exp(logstep * (m - 15)), step * m)
    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    fb = np.zeros((len(freqs), n_mels))
    for k in range(n_mels):
        lower = (freqs - edges[k]) / (edges[k + 1] - edges[k])
        upper = (edges[k + 2] - freqs) / (edges[k + 2] - edges[k + 1])
        fb[:, k] = np.maximum(0, np.minimum(lower, upper))
        if slaney_norm:
            fb[:, k] *= 2 / (edges[k + 2] - edges[k])
    return fb


def framed(x, n_fft, hop, left, right, mode):
    padded = np.pad(np.asarray(x, np.float64), (left, right), mode=mode)
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)       # periodic Hann
    frames = np.stack([padded[t * hop:t * hop + n_fft] for t in range(n_frames)])
    return np.fft.rfft(frames * window, axis=-1).T                            # (bins, frames)


def whisper(x, n_mels=80):
    """openai-whisper log_mel_spectrogram after transformers' padding to 30 s."""
    x = np.pad(np.asarray(x, np.float64), (0, max(0, 480000 - len(x))))
    power = np.abs(framed(x, 400, 160, 200, 200, "reflect")[:, :-1]) ** 2
    log = np.log10(np.maximum(triangles(16000, 400, n_mels, 0, 8000, False, True).T @ power, 1e-10))
    return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0


def hifigan(x):
    """HiFi-GAN meldataset.mel_spectrogram: reflect pad 384, center=False, sqrt(|X|^2 + 1e-9)."""
    mag = np.sqrt(np.abs(framed(x, 1024, 256, 384, 384, "reflect")) ** 2 + 1e-9)
    return np.log(np.maximum(triangles(22050, 1024, 80, 0, 8000, False, True).T @ mag, 1e-5))


def tacotron2(x):
    """Tacotron 2 TacotronSTFT.mel_spectrogram: reflect pad n_fft / 2, plain magnitude."""
    mag = np.abs(framed(x, 1024, 256, 512, 512, "reflect"))
    return np.log(np.maximum(triangles(22050, 1024, 80, 0, 8000, False, True).T @ mag, 1e-5))


def librosa_db(x, ref=1.0):
    """librosa.feature.melspectrogram (zero padding since 0.10) + power_to_db(top_db=80)."""
    mel = triangles(22050, 2048, 128, 0, 11025, False, True).T @ (
        np.abs(framed(x, 2048, 512, 1024, 1024, "constant")) ** 2)
    ref = mel.max() if ref == "max" else ref
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(max(1e-10, ref))
    return np.maximum(db, db.max() - 80.0)


def torchaudio_db(x):
    """torchaudio MelSpectrogram() (hop 200, 128 HTK mels, no norm) + AmplitudeToDB("power")."""
    mel = triangles(16000, 400, 128, 0, 8000, True, False).T @ (
        np.abs(framed(x, 400, 200, 200, 200, "reflect")) ** 2)
    return 10 * np.log10(np.maximum(mel, 1e-10))


RESTATED = {"whisper": whisper, "whisper-128": lambda x: whisper(x, 128), "hifigan": hifigan,
            "tacotron2": tacotron2, "librosa": librosa_db, "torchaudio": torchaudio_db}

# feature units per natural-log unit of the mel (to compare every preset in one unit)
PER_NEPER = {"whisper": 0.25 / np.log(10), "whisper-128": 0.25 / np.log(10), "hifigan": 1.0,
             "tacotron2": 1.0, "librosa": 10 / np.log(10), "torchaudio": 10 / np.log(10)}


# -- presets ------------------------------------------------------------------------------------------

def test_presets_are_listed_and_frozen():
    presets = cumel.frontends()
    assert list(presets) == ["whisper", "whisper-128", "hifigan", "tacotron2", "librosa",
                             "torchaudio"]
    fe = cumel.frontend("Whisper")
    assert fe is presets["whisper"] and isinstance(fe, cumel.Frontend)
    with pytest.raises(AttributeError):
        fe.n_fft = 512
    assert hash(fe) == hash(cumel.frontend("whisper"))
    assert (fe.n_fft, fe.hop_length, fe.win_length, fe.n_mels, fe.f_max, fe.norm, fe.mel_type) == (
        400, 160, 400, 80, 8000.0, "slaney", "slaney")
    assert cumel.frontend("whisper-128").n_mels == 128
    h = cumel.frontend("hifigan")
    assert (h.sample_rate, h.n_fft, h.hop_length, h.center, h.pad, h.power, h.magnitude_eps,
            h.log, h.floor) == (22050, 1024, 256, False, (384, 384), 1.0, 1e-9, "ln", 1e-5)
    t = cumel.frontend("tacotron2")
    assert (t.center, t.pad, t.magnitude_eps) == (True, None, 0.0)
    lb = cumel.frontend("librosa")
    assert (lb.n_fft, lb.hop_length, lb.pad_mode, lb.multiplier, lb.dynamic_range) == (
        2048, 512, "constant", 10.0, 80.0)
    ta = cumel.frontend("torchaudio")
    assert (ta.hop_length, ta.n_mels, ta.mel_type, ta.norm, ta.dynamic_range) == (
        200, 128, "htk", None, None)
    for name, fe in presets.items():
        text = "\n".join(fe.describe())
        assert name in text and "Hz" in text


@pytest.mark.parametrize("n_fft, n_mels, mel_type", [(128, 64, "htk"), (256, 96, "slaney"),
                                                     (400, 80, "slaney")])
def test_describe_counts_the_empty_filters_of_the_filterbank(n_fft, n_mels, mel_type):
    """The number of filters describe() calls empty is that of the filterbank written out here
    (filters with no weight on any bin); none is mentioned where there are none."""
    fe = cumel.Frontend(n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, mel_type=mel_type)
    fb = triangles(16000, n_fft, n_mels, 0.0, 8000.0, mel_type == "htk", False)
    empty = int((fb.max(axis=0) == 0).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the filterbank's own warning of empty filters
        text = "\n".join(fe.describe())
    if empty:
        assert f"({empty} filters empty at this resolution" in text
    else:
        assert "filters empty" not in text


def test_overrides_follow_the_presets_rules():
    fe = cumel.frontend("hifigan", sample_rate=44100, n_fft=2048, hop_length=512, f_max=None)
    assert (fe.win_length, fe.pad, fe.f_max) == (2048, (768, 768), 22050.0)   # (n_fft - hop) // 2
    lb = cumel.frontend("librosa", sample_rate=16000, n_fft=400, hop_length=160, ref=np.max)
    assert (lb.f_max, lb.win_length, lb.ref) == (8000.0, 400, "max")
    assert cumel.frontend("hifigan", center=True).pad is None
    again = cumel.frontend(fe, n_mels=100)
    assert again.n_mels == 100 and again.pad == (768, 768)


@pytest.mark.parametrize("call, match", [
    (lambda: cumel.frontend("whisperx"), "unknown front end 'whisperx'; the presets are 'whisper', "
                                         "'whisper-128', 'hifigan', 'tacotron2', 'librosa', 'torchaudio'"),
    (lambda: cumel.frontend("whisper", hop=160), r"unknown front end field\(s\) \['hop'\]"),
    (lambda: cumel.frontend("whisper", log="log2"), "log must be one of"),
    (lambda: cumel.frontend("whisper", scale=0.0), "scale must be a finite number > 0, got 0.0"),
    (lambda: cumel.frontend("whisper", ref=-1.0), "ref .* got -1.0"),
    (lambda: cumel.frontend("hifigan", pad=(1, 2, 3)), "pad must be an integer >= 0 or a pair"),
    (lambda: cumel.frontend("whisper", pad=3), "pad=3 applies with center=False"),
    (lambda: cumel.frontend("whisper", pad_mode="edge"), "pad_mode must be one of"),
    (lambda: cumel.frontend("whisper", n_fft=400, win_length=500), "win_length must be <= n_fft=400"),
    (lambda: cumel.Frontend(n_mels=0), "n_mels must be a positive integer, got 0"),
])
def test_bad_front_end_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- forward: equal to the restated definitions -----------------------------------------------------

@pytest.mark.parametrize("name", list(RESTATED))
def test_features_equal_the_restated_definition(name):
    fe = cumel.frontend(name)
    x = clip_for(fe, 1.5).astype(np.float64)
    ref = RESTATED[name](x)
    got = fe.features(x)
    assert got.dtype == np.float64 and got.shape == ref.shape == (fe.n_mels, fe.frames(len(x)))
    # both in float64 from the same definition: the difference is rounding (measured at most
    # 9e-13 nepers of the mel; bound 1e-9)
    assert np.abs(got - ref).max() / PER_NEPER[name] < 1e-9
    got32 = fe.features(x.astype(np.float32))
    # float32 arithmetic: measured at most 7.9e-5 nepers (torchaudio's preset, its lowest mels);
    # bound 4e-4
    assert got32.dtype == np.float32
    assert np.abs(got32 - ref).max() / PER_NEPER[name] < 4e-4


@pytest.mark.parametrize("power", [1.0, 1.5, 2.0, 3.0])
def test_features_are_the_mel_of_the_magnitude_to_the_power(power):
    """Any ``power``: the mel of ``|X| ** power``, X framed here (float64), the filterbank
    from the front end's own parameters."""
    x = clip("speech_07", 0.5)[0].astype(np.float64)
    fe = cumel.Frontend(n_fft=400, hop_length=160, n_mels=40, power=power, f_max=8000.0)
    fb = cumel.melscale_fbanks(201, fe.f_min, fe.f_max, fe.n_mels, fe.sample_rate, norm=fe.norm,
                               mel_scale=fe.mel_type, dtype=np.float64)
    expected = fb.T @ np.abs(framed(x, 400, 160, 200, 200, "reflect")) ** power
    got = fe.features(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-9 * np.abs(expected).max()


def test_frame_counts_of_each_grid():
    n = 16000 * 3 + 77
    assert cumel.frontend("whisper").frames(n) == 3000                  # padded to 30 s
    assert cumel.frontend("whisper", pad_to=None).frames(n) == n // 160  # openai-whisper, no pad
    n22 = 22050 * 2 + 5
    assert cumel.frontend("hifigan").frames(n22) == n22 // 256
    assert cumel.frontend("tacotron2").frames(n22) == 1 + n22 // 256
    assert cumel.frontend("librosa").frames(n22) == 1 + n22 // 512
    assert cumel.frontend("torchaudio").frames(n) == 1 + n // 200
    x = np.zeros(n, np.float32)
    assert cumel.frontend("whisper").features(x).shape == (80, 3000)


def test_features_batched_equal_per_item_and_input_untouched():
    fe = cumel.frontend("hifigan")
    x = speech_22k(1.0)
    batch = np.stack([x, 0.5 * x, x[::-1].copy()])[:, None]       # (3, 1, n)
    before = batch.copy()
    F = fe.features(batch)
    assert F.shape == (3, 1, 80, fe.frames(len(x)))
    for i in range(3):
        np.testing.assert_allclose(F[i, 0], fe.features(batch[i, 0]), atol=1e-5)
    np.testing.assert_array_equal(batch, before)


def test_dynamic_range_and_ref_max_are_per_item():
    fe = cumel.frontend("librosa", ref=np.max)
    x = speech_22k(1.0)
    F = fe.features(np.stack([x, 0.1 * x]))
    assert np.isclose(F[0].max(), 0, atol=1e-5) and np.isclose(F[1].max(), 0, atol=1e-5)
    np.testing.assert_allclose(F[0], F[1], atol=1e-3)                  # ref=max: level gone
    np.testing.assert_allclose(F[0], librosa_db(x.astype(np.float64), ref="max"), atol=1e-3)
    assert F[0].min() >= -80 - 1e-4                                    # top_db


@pytest.mark.parametrize("name", ["whisper", "librosa"])
def test_dynamic_range_is_each_items_own_at_different_levels(name):
    """Whisper's ``max - 8`` and librosa's ``top_db`` clamp each item at its own peak: in a batch
    of one clip at two levels 20 dB apart (ref=1, so the level stays in the features) each item
    has the features, the floor and the mel it has alone. A clamp taken over the whole batch
    would put the quiet item's floor 20 dB too high. (The levels keep both items' clamps above
    the absolute floor, 1e-10, where the dynamic range decides.)"""
    fe = cumel.frontend(name)
    x = clip_for(fe, 1.0)
    batch = np.stack([x, 0.1 * x])
    F = fe.features(batch)
    floor, mel = fe.floor_mask(F), fe.mel(F)
    unit = PER_NEPER[name]
    for i in range(2):
        alone = fe.features(batch[i])
        # float32 features of the same item alone or in a batch: rounding only (bound 1e-4 nepers)
        np.testing.assert_allclose(F[i], alone, rtol=0, atol=1e-4 * unit)
        np.testing.assert_array_equal(floor[i], fe.floor_mask(alone))
        np.testing.assert_allclose(mel[i], fe.mel(alone), rtol=1e-4, atol=0)
    # each item's floor sits exactly its dynamic range below its own peak
    span = {"whisper": 8.0 / 4.0, "librosa": 80.0}[name]
    for i in range(2):
        assert F[i].max() - F[i].min() == pytest.approx(span, rel=1e-5)
    # 20 dB in power is 2 ln(10) nepers
    assert F[0].max() - F[1].max() == pytest.approx(2 * np.log(10) * unit, rel=1e-3)


# -- undoing the compression -----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RESTATED))
def test_mel_undoes_the_compression_except_at_the_floor(name):
    fe = cumel.frontend(name)
    x = clip_for(fe, 1.0).astype(np.float64)
    F = fe.features(x)
    mel = fe.mel(F)
    floor = fe.floor_mask(F)
    assert mel.shape == F.shape and floor.shape == F.shape and floor.dtype == bool
    assert (mel[floor] == 0).all() and (mel >= 0).all()
    # away from the floor the compression is undone: compressing again gives the features back
    again = fe.compress(np.where(floor, 0, mel)[None])[0]
    np.testing.assert_allclose(again[~floor], F[~floor], rtol=0, atol=1e-9 * PER_NEPER[name] + 1e-12)
    assert floor.any() if name.startswith("whisper") else True      # 30 s padding is at the floor
    # and the check above is not made on an empty set: in the frames that hold the clip most
    # features are off the floor (measured 91.5 % for librosa's top_db, 100 % for Whisper's
    # max - 8 and the others; bound 15 %)
    clip_frames = len(x) // fe.hop_length
    assert (~floor[:, :clip_frames]).mean() >= 0.15


def test_a_fixed_reference_level_is_undone():
    """ref=50 (power_to_db's ref): the features are the ref=1 features less 10 log10(50) dB, and
    mel() gives the same absolute mel back from either."""
    x = clip_for(cumel.frontend("librosa"), 1.0).astype(np.float64)
    one, fifty = cumel.frontend("librosa"), cumel.frontend("librosa", ref=50.0)
    F1, F50 = one.features(x), fifty.features(x)
    np.testing.assert_allclose(F50, F1 - 10 * np.log10(50.0), rtol=0, atol=1e-9)
    floor = one.floor_mask(F1)
    np.testing.assert_array_equal(fifty.floor_mask(F50), floor)
    assert (~floor).mean() > 0.5
    np.testing.assert_allclose(fifty.mel(F50)[~floor], one.mel(F1)[~floor], rtol=1e-9)


def test_a_frame_of_pure_floor_is_silence():
    fe = cumel.frontend("whisper")
    x, _ = clip("speech_07", 1.0)
    F = fe.features(x)
    assert fe.floor_mask(F)[:, 200:].all()          # the zero padding after 1 s
    y = fe.audio(F, length=32000, n_iter=4, seed=0)
    assert y.shape == (32000,)
    assert np.abs(y[16000 + 400:]).max() == 0.0      # past the clip and one window: exactly silent


def test_ref_max_audio_comes_back_peak_normalised():
    fe = cumel.frontend("librosa", ref=np.max)
    x = 0.01 * speech_22k(1.0)
    y = fe.audio(fe.features(x), length=len(x), n_iter=4, seed=0)
    assert np.isclose(np.abs(y).max(), 1.0)


@pytest.mark.parametrize("method", ["griffinlim", "admm", "griffin_lim of spectrogram"])
def test_ref_max_audio_is_peak_normalised_item_by_item(method):
    """ref=max: every item of a batch comes back at a peak of 1 on its own, whatever the
    other items' raw peaks (a peak taken over the whole batch leaves all but one below 1)."""
    fe = cumel.frontend("librosa", ref=np.max)
    x = speech_22k(0.5)
    t = np.arange(len(x)) / 22050.0
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    F = fe.features(np.stack([0.01 * x, tone, 3.0 * x[::-1].copy()]))
    if method == "griffin_lim of spectrogram":
        y = fe.griffin_lim(fe.spectrogram(F, length=len(x)), length=len(x), n_iter=2, seed=0)
    else:
        y = fe.audio(F, length=len(x), n_iter=2, seed=0, method=method)
    assert y.shape == (3, len(x))
    np.testing.assert_allclose(np.abs(y).max(axis=-1), 1.0, rtol=1e-6)


# -- audio: alignment, length, bad input ------------------------------------------------------------

def best_lag(y, x, n_fft, hop, lags):
    """The shift of ``y`` (samples, positive: later) that best matches ``x`` in spectral
    convergence."""
    def shifted(lag):
        return np.roll(y, -lag) if lag else y
    scores = [cumel.spectral_convergence(shifted(lag), x, n_fft, hop) for lag in lags]
    return lags[int(np.argmin(scores))]


def test_hifigan_audio_is_aligned_sample_for_sample():
    fe = cumel.frontend("hifigan")
    x = speech_22k(2.0)
    y = cumel.mel_to_audio(fe.features(x), frontend="hifigan", length=len(x), seed=0)
    assert y.shape == x.shape
    lags = list(range(-192, 193, 32))
    assert best_lag(y, x, fe.n_fft, fe.hop_length, lags) == 0
    # the check sees half a hop: the same audio 128 samples late (the center=True grid's error)
    # fails it
    late = np.concatenate([np.zeros(128, y.dtype), y[:-128]])
    assert best_lag(late, x, fe.n_fft, fe.hop_length, lags) == 128
    # and on the center=True grid without the shift (what a plain Griffin-Lim gives) it is off
    S = fe.spectrogram(fe.features(x))
    plain = cumel.GriffinLim(1024, 32, hop_length=256, power=1.0, seed=0)(S)
    assert best_lag(plain[:len(x)], x, fe.n_fft, fe.hop_length, lags) != 0


@pytest.mark.parametrize("name", list(RESTATED))
def test_audio_has_the_clips_length_and_beats_the_naive_call(name):
    fe = cumel.frontend(name)
    x = clip_for(fe, 1.5)
    F = fe.features(x)
    y = cumel.mel_to_audio(F, frontend=name, length=len(x), seed=0)
    assert y.shape == x.shape and y.dtype == np.float32
    sc = cumel.spectral_convergence(y, x, fe.n_fft, fe.hop_length)
    with pytest.warns(UserWarning, match="looks like a log or dB mel"):
        naive = cumel.mel_to_audio(F, fe.n_fft, hop_length=fe.hop_length,
                                   sample_rate=fe.sample_rate, length=len(x), seed=0)
    # measured: 0.11-0.24 through the front end; 0.51 (torchaudio's dB mel, partly positive) to
    # 0.999 for the naive call, which takes the features as a linear mel (0.955 on Whisper
    # features in the issue). The comparison with librosa is in test_frontends_peers.py.
    assert sc < cumel.spectral_convergence(naive, x, fe.n_fft, fe.hop_length)


def test_audio_inverts_only_the_frames_it_needs():
    fe = cumel.frontend("whisper")
    x, _ = clip("speech_07", 1.0)
    F = fe.features(x)                                    # 3000 frames
    y_short = fe.audio(F, length=len(x), n_iter=2, seed=0)
    y_same = fe.audio(F[:, :1 + len(x) // 160], length=len(x), n_iter=2, seed=0)
    np.testing.assert_array_equal(y_short, y_same)


@pytest.mark.parametrize("name", ["whisper", "hifigan", "librosa"])
def test_the_longest_length_is_accepted_and_one_more_refused(name):
    """``length`` may be exactly :meth:`Frontend.longest` (the features describe that many
    samples: every frame is kept), and one sample more is refused."""
    fe = cumel.frontend(name)
    audio = np.random.default_rng(0).standard_normal(fe.hop_length * 12).astype(np.float32) * 0.1
    features = fe.features(audio)
    T = features.shape[-1]
    longest = fe.longest(T)
    assert fe.mel(features, length=longest).shape[-1] == T
    assert fe.audio(features, length=longest, n_iter=0).shape[-1] == longest
    with pytest.raises(ValueError, match=f"length={longest + 1} is longer than the features"):
        fe.mel(features, length=longest + 1)


def test_bad_features_and_length():
    fe = cumel.frontend("whisper")
    F = np.zeros((128, 3000), np.float32)
    with pytest.raises(ValueError, match=r"features have 128 mel bands \(shape \(128, 3000\)\), but "
                                         r"the 'whisper' front end has n_mels=80.*'whisper-128'"):
        fe.audio(F)
    with pytest.raises(ValueError, match="features have 80 mel bands.*n_mels=128"):
        cumel.mel_to_audio(np.zeros((80, 30)), frontend="whisper-128")
    with pytest.raises(ValueError, match="length=480160 is longer than the features allow: 3000 "
                                         "frames of the 'whisper' front end .* at most 480159 samples"):
        fe.audio(np.zeros((80, 3000), np.float32), length=480160)
    with pytest.raises(ValueError, match="length=2816 is longer than the features allow: 10 "
                                         "frames.* at most 2815"):
        cumel.mel_to_audio(np.zeros((80, 10)), frontend="hifigan", length=256 * 10 + 256)
    with pytest.raises(ValueError, match="features contain NaN or Inf"):
        fe.audio(np.full((80, 10), np.nan))
    with pytest.raises(ValueError, match="features must have shape"):
        fe.audio(np.zeros(80))
    with pytest.raises(ValueError, match="unknown front end 'whisper-large'; the presets are"):
        cumel.mel_to_audio(np.zeros((80, 10)), frontend="whisper-large")
    with pytest.raises(ValueError, match="n_fft is required without frontend="):
        cumel.mel_to_audio(np.ones((80, 10)))
    with pytest.raises(ValueError, match="audio must have shape"):
        fe.features(np.zeros((0,)))


def test_mel_to_audio_keywords_override_the_front_end():
    F = cumel.frontend("hifigan").features(speech_22k(0.5))
    a = cumel.mel_to_audio(F, frontend="hifigan", n_iter=2, seed=0)
    b = cumel.frontend("hifigan").audio(F, n_iter=2, seed=0)
    np.testing.assert_array_equal(a, b)
    c = cumel.mel_to_audio(F, frontend="hifigan", center=True, n_iter=2, seed=0)
    d = cumel.frontend("hifigan", center=True).audio(F, n_iter=2, seed=0)
    np.testing.assert_array_equal(c, d)
    assert c.shape != a.shape                     # 256 * (T - 1) against 256 * T samples


# -- framing knobs: stft/istft, GriffinLim --------------------------------------------------------

@pytest.mark.parametrize("pad, mode", [((384, 384), "reflect"), ((0, 0), "reflect"), ((100, 30), "constant"),
                                       ((700, 700), "constant")])
def test_stft_center_false_with_padding_matches_the_reference(pad, mode):
    x = speech_22k(0.5).astype(np.float64)
    X = cstft.stft(x, 1024, 256, center=False, pad=pad, pad_mode=mode)
    ref = framed(x, 1024, 256, pad[0], pad[1], mode)
    assert X.shape == ref.shape
    assert np.abs(X - ref).max() <= 1e-9 * np.abs(ref).max()
    n = len(x)
    y = cstft.istft(X, 1024, 256, center=False, pad=pad, length=n)
    # the overlap-add inverts the STFT wherever frames cover the signal
    covered = slice(max(0, 1024 - pad[0]), n - 1024)
    assert np.abs(y[covered] - x[covered]).max() < 1e-9


@pytest.mark.parametrize("pad", [(100, 30), (0, 700), (511, 3), (257, 257)])
def test_frame_and_sample_counts_of_uneven_padding_are_the_stfts_own(pad):
    """Every count of the grid (frame_count, Frontend.frames, default_length, longest) agrees
    with frames counted one by one in the padded signal, for padding that differs on the two
    sides and lengths prime to the hop."""
    n_fft, hop = 1024, 256
    grid = cstft.padding(n_fft, False, pad, "constant")
    fe = cumel.Frontend(n_fft=n_fft, hop_length=hop, n_mels=40, center=False, pad=pad,
                        pad_mode="constant")
    x = np.random.default_rng(0).standard_normal(4099)
    for n in (1031, 2039, 4099):
        padded = n + pad[0] + pad[1]
        T = sum(1 for t in range(padded) if t * hop + n_fft <= padded)   # frames that fit
        assert cstft.stft(x[:n], n_fft, hop, center=False, pad=pad, pad_mode="constant").shape[-1] == T
        assert cstft.frame_count(n, n_fft, hop, grid) == T
        assert fe.frames(n) == T
        assert fe.features(x[:n]).shape == (40, T)
        assert cstft.default_length(T, n_fft, hop, grid) == n_fft + hop * (T - 1) - pad[0] - pad[1]
        longest = fe.longest(T)                     # the last sample T frames can describe
        assert fe.frames(longest) == T and fe.frames(longest + 1) == T + 1


def test_stft_center_true_constant_padding_is_librosas_default():
    x = speech_22k(0.5).astype(np.float64)
    X = cstft.stft(x, 2048, 512, pad_mode="constant")
    assert np.abs(X - framed(x, 2048, 512, 1024, 1024, "constant")).max() <= 1e-9 * np.abs(X).max()
    y = cstft.istft(X, 2048, 512, length=len(x))
    assert np.abs(y - x).max() < 1e-9


def test_griffinlim_center_false_lines_up_with_its_grid():
    x = speech_22k(1.0).astype(np.float64)
    S = np.abs(cstft.stft(x, 1024, 256, center=False, pad=384))
    gl = cumel.GriffinLim(1024, 32, hop_length=256, power=1.0, center=False, pad=384,
                          length=len(x), seed=0)
    assert (gl.center, gl.pad, gl.pad_mode) == (False, (384, 384), "reflect")
    assert "center=False" in repr(gl)
    y = gl(S)
    assert y.shape == x.shape
    assert best_lag(y, x, 1024, 256, list(range(-192, 193, 32))) == 0
    default = cumel.GriffinLim(1024, 1, hop_length=256, power=1.0, center=False, pad=384, seed=0)
    assert default(S).shape == (256 * S.shape[-1],)     # n_fft + hop (T - 1) - 768


def test_griffinlim_framing_validation():
    with pytest.raises(ValueError, match="pad=384 applies with center=False"):
        cumel.GriffinLim(1024, pad=384)
    with pytest.raises(ValueError, match="center must be True or False"):
        cumel.GriffinLim(1024, center="no")
    with pytest.raises(ValueError, match="specgram has too few frames"):
        cumel.GriffinLim(1024, 2, hop_length=256, center=False, pad=384)(np.ones((513, 1)))


# -- fb=: a filterbank of your own ----------------------------------------------------------------

def _librosa_layout():
    return triangles(22050, 1024, 80, 0, 8000, False, True).T            # (n_mels, n_stft)


def test_fb_in_either_layout_equals_the_built_in_filterbank():
    fb = _librosa_layout()
    builtin = cumel.InverseMelScale(513, 80, 22050, 0.0, 8000.0, norm="slaney", mel_type="slaney")
    assert np.abs(builtin.plan.fb64 - fb.T).max() < 1e-12
    mel = cumel.MelScale(80, 22050, 0.0, 8000.0, 513, "slaney", "slaney")(
        np.random.default_rng(0).random((513, 20)).astype(np.float32) ** 4)
    own = cumel.InverseMelScale(513, fb=fb)                  # librosa's layout, n_mels from it
    own_t = cumel.InverseMelScale(513, 80, fb=fb.T)          # torchaudio's layout
    assert own.n_mels == 80 and "fb=<filterbank 513 x 80 sha256:" in repr(own)
    a, b, c = own(mel), own_t(mel), builtin(mel)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6 * c.max())
    assert own.plan is own_t.plan                            # one plan per matrix (its bytes)
    again = pickle.loads(pickle.dumps(own))
    np.testing.assert_array_equal(again(mel), a)
    y = cumel.mel_to_audio(mel, 1024, hop_length=256, fb=fb, n_iter=2, seed=0)
    z = cumel.mel_to_audio(mel, 1024, hop_length=256, sample_rate=22050, f_max=8000.0,
                           norm="slaney", mel_type="slaney", n_iter=2, seed=0)
    np.testing.assert_allclose(y, z, atol=1e-4 * np.abs(z).max())
    assert cumel.frontend("hifigan", fb=fb).n_mels == 80
    assert cumel.MelScale(n_stft=513, fb=fb).n_mels == 80


@pytest.mark.parametrize("make, match", [
    (lambda fb: np.random.default_rng(0).random(fb.shape), "bin 0 lies in triangles .* cumel's "
                                                            "solvers rely on this structure"),
    (lambda fb: fb[::-1], "not ordered by frequency"),
    (lambda fb: -fb, "fb has negative weights"),
    (lambda fb: np.where(fb > 0, np.nan, 0), "fb contains NaN or Inf"),
    (lambda fb: fb[:, :100], "fb must have n_stft=513 rows"),
    (lambda fb: fb[0], "fb must be a 2-D matrix"),
    (lambda fb: fb.astype(complex), "fb must hold real numbers"),
])
def test_fb_without_the_structure_is_refused_saying_why(make, match):
    with pytest.raises(ValueError, match=match):
        cumel.InverseMelScale(513, fb=make(_librosa_layout()))


def test_fb_n_mels_must_agree():
    with pytest.raises(ValueError, match="fb has 80 mel filters .* but n_mels=64"):
        cumel.InverseMelScale(513, 64, fb=_librosa_layout())


# -- the log-mel warning ------------------------------------------------------------------------------

def test_a_log_mel_given_as_linear_is_warned_about():
    fe = cumel.frontend("hifigan")
    F = fe.features(speech_22k(0.5))
    from cumel._validate import percent
    share = percent(float((F < 0).mean()))                  # 99.7 %: said so, not 100 %
    with pytest.warns(UserWarning, match=rf"mel: {re.escape(share)} of its values are negative.*"
                                         r"looks like a log or dB mel; pass frontend="):
        cumel.InverseMelScale(513, 80, 22050, f_max=8000.0)(F)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mel = fe.mel(F)
        cumel.InverseMelScale(513, 80, 22050, f_max=8000.0)(mel)            # linear: quiet
        noisy = mel.copy()
        noisy.reshape(-1)[::20] *= -1                                       # 5 % negative
        cumel.InverseMelScale(513, 80, 22050, f_max=8000.0)(noisy)
        fe.audio(F, n_iter=1, seed=0)                                       # the frontend path
    noisy.reshape(-1)[::10] = -1.0                                          # 10 %: warned
    with pytest.warns(UserWarning, match="10.0% of its values are negative"):
        cumel.InverseMelScale(513, 80, 22050, f_max=8000.0)(noisy)


def test_workers_reach_the_solver_and_change_no_bit():
    fe = cumel.frontend("tacotron2")
    F = fe.features(speech_22k(0.5))
    one = fe.audio(F, n_iter=2, seed=0, workers=1)
    np.testing.assert_array_equal(one, fe.audio(F, n_iter=2, seed=0, workers=2))
    np.testing.assert_array_equal(one, cumel.mel_to_audio(F, frontend="tacotron2", n_iter=2, seed=0,
                                                          workers=2))
    assert cumel.mel_frontends._inverse_mel_scale(fe, "nnls", "cpu", 2).workers == 2
    with pytest.raises(ValueError, match="workers"):
        fe.audio(F, workers=0)


def test_fb_transform_in_a_dask_graph():
    da = pytest.importorskip("dask.array", reason="dask not installed (test extra)")
    import dask
    fb = _librosa_layout()
    inv = cumel.InverseMelScale(513, fb=fb, seed=0)       # a seed: the graph's name is fixed
    mel = cumel.MelScale(n_stft=513, fb=fb)(np.random.default_rng(1).random((2, 513, 12)) ** 4)
    lazy = inv(da.from_array(mel, chunks=(1, 80, 6)))
    again = cumel.InverseMelScale(513, fb=fb.copy(), seed=0)(da.from_array(mel, chunks=(1, 80, 6)))
    assert lazy.name == again.name                       # the matrix tokenizes by its digest
    with dask.config.set(scheduler="processes", num_workers=1):   # the transform pickles
        np.testing.assert_array_equal(lazy.compute(), inv(mel))


def test_audio_is_spectrogram_then_griffin_lim():
    for name in ("whisper", "hifigan", "librosa"):
        fe = cumel.frontend(name, ref=np.max) if name == "librosa" else cumel.frontend(name)
        x = clip_for(fe, 0.5)
        F = fe.features(x)
        S = fe.spectrogram(F, length=len(x))
        assert S.shape == (fe.n_stft, min(F.shape[-1], cstft.frame_count(len(x), fe.n_fft,
                                                                          fe.hop_length, fe.framing)))
        assert fe.mel(F, length=len(x)).shape == (fe.n_mels, S.shape[-1])
        y = fe.griffin_lim(S, length=len(x), n_iter=3, seed=1)
        np.testing.assert_array_equal(y, fe.audio(F, length=len(x), n_iter=3, seed=1))


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_griffin_lim_leaves_the_callers_spectrogram_alone(power):
    # with magnitude_eps the magnitude is taken back from |X|^2 + eps before Griffin-Lim; the
    # caller's spectrogram (power 2: already |X|^2 + eps) must not be where that happens
    fe = cumel.Frontend(n_fft=400, hop_length=160, n_mels=64, log="log10", multiplier=10.0,
                        power=power, magnitude_eps=1e-3)
    x = clip_for(fe, 0.3)
    S = fe.spectrogram(fe.features(x), length=len(x))
    kept = S.copy()
    y = fe.griffin_lim(S, length=len(x), n_iter=2, seed=1)
    np.testing.assert_array_equal(S, kept)
    np.testing.assert_array_equal(y, fe.griffin_lim(kept, length=len(x), n_iter=2, seed=1))
