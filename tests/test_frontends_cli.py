"""The command line with a model's features: ``--frontend``, the Griffin-Lim options (``--power``,
``--n-iter``, ``--win-length``, ``--length``), ``--wav-only``, ``cumel frontends``, and the word
about mels that look like log or dB mels."""
import numpy as np
import pytest

import cumel
from cumel import cli
from cumel.workloads import read_wav

from test_frontends import clip, resample


def _hifigan_features(seconds=0.5, clip_name="speech_05"):
    x, rate = clip(clip_name, seconds)
    x = resample(x, rate, 22050)
    return x, cumel.frontend("hifigan").features(x)


def _wav_equals(path, y, rate, normalize=False):
    """The WAV at ``path`` holds ``y`` at its own level (or its peak at 0.99 with --normalize)."""
    got, got_rate = read_wav(path)
    assert got_rate == rate and got.shape == y.shape
    assert np.abs(y).max() <= 1.0                                  # nothing clipped here
    ref = y * (0.99 / np.abs(y).max()) if normalize else y
    assert np.abs(got - ref).max() < 2e-4                          # 16-bit rounding


def test_frontends_lists_every_preset(capsys):
    assert cli.main(["frontends"]) == 0
    out = capsys.readouterr().out
    for name in cumel.frontends():
        assert f"\n{name}: " in "\n" + out
    assert "center=False, pad=(384, 384) (frame t centred on sample t * hop + 128)" in out
    assert "clamped at max - 8, then (x + 4) * 0.25" in out
    assert "cumel invert FEATURES.npy --frontend NAME --wav OUT.wav" in out


def test_one_file_of_features_to_sound(tmp_path, capsys):
    x, F = _hifigan_features()
    np.save(tmp_path / "f.npy", F)
    wav = tmp_path / "f.wav"
    assert cli.main(["invert", str(tmp_path / "f.npy"), "--frontend", "hifigan", "--wav", str(wav),
                     "--length", str(len(x)), "--seed", "0", "--no-progress"]) == 0
    _wav_equals(wav, cumel.frontend("hifigan").audio(F, length=len(x), seed=0), 22050)
    captured = capsys.readouterr()
    assert "hifigan features (80, 43)" in captured.out and "on the 'hifigan' front end's grid" in \
        captured.out
    assert "cumel: front end hifigan: 22050 Hz" in captured.err
    assert not (tmp_path / "f.npy.wav").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "f.npy", "f.wav"]                                              # sound only: no spectrogram


def test_one_file_spectrogram_and_wav_only_with_o(tmp_path):
    x, F = _hifigan_features()
    np.save(tmp_path / "f.npy", F)
    fe = cumel.frontend("hifigan")
    assert cli.main(["invert", str(tmp_path / "f.npy"), "--frontend", "hifigan", "-o",
                     str(tmp_path / "s.npy"), "--no-progress"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), fe.spectrogram(F), rtol=1e-6,
                               atol=1e-7)
    assert cli.main(["invert", str(tmp_path / "f.npy"), "--frontend", "hifigan", "-o",
                     str(tmp_path / "only.wav"), "--wav-only", "--seed", "3", "--n-iter", "4",
                     "--no-progress"]) == 0
    _wav_equals(tmp_path / "only.wav", fe.audio(F, n_iter=4, seed=3), 22050)


@pytest.mark.parametrize("extra", [[], ["--jobs", "2"], ["--batch-frames", "1000"]])
def test_folders_of_features_wav_only(tmp_path, capsys, extra):
    (tmp_path / "in" / "a").mkdir(parents=True)
    features = {}
    for name in ("speech_05", "speech_06"):
        x, F = _hifigan_features(0.3, name)
        np.save(tmp_path / "in" / "a" / f"{name}.npy", F)
        features[name] = F
    out = tmp_path / "out"
    args = ["invert", str(tmp_path / "in"), "-o", str(out), "--frontend", "hifigan", "--wav-only",
            "--seed", "0", "--n-iter", "4", "--no-progress", *extra]
    assert cli.main(args) == 0
    assert sorted(p.name for p in (out / "a").iterdir()) == ["speech_05.wav", "speech_06.wav"]
    for name, F in features.items():
        _wav_equals(out / "a" / f"{name}.wav", cumel.frontend("hifigan").audio(F, n_iter=4, seed=0),
                    22050)
    assert "2 written" in capsys.readouterr().out
    assert cli.main(args) == 0                                  # a re-run: the .wav are there
    assert "0 written, 2 skipped" in capsys.readouterr().out


def test_folders_with_wav_beside_each_spectrogram(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    x, F = _hifigan_features(0.3)
    np.save(tmp_path / "in" / "f.npy", F)
    assert cli.main(["invert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--frontend",
                     "hifigan", "--wav", "--seed", "0", "--n-iter", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.npy", "f.wav"]
    fe = cumel.frontend("hifigan")
    np.testing.assert_allclose(np.load(tmp_path / "out" / "f.npy"), fe.spectrogram(F),
                               rtol=1e-6, atol=1e-7)


def test_log_mels_given_as_linear_are_said_so(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    _, F = _hifigan_features(0.3)
    np.save(tmp_path / "in" / "f.npy", F)
    assert cli.main(["invert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--n-stft",
                     "513", "--sample-rate", "22050", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 written" in out and "1 looked like log or dB mels (pass --frontend" in out
    from cumel._validate import percent
    share = percent(float((F < 0).mean()))
    assert "warning: " in out and f"f.npy: mel: {share} of its values are negative" in out
    assert cli.main(["invert", str(tmp_path / "in" / "f.npy"), "-o", str(tmp_path / "s.npy"),
                     "--n-stft", "513", "--sample-rate", "22050", "--no-progress"]) == 0
    assert "looks like a log or dB mel; pass --frontend NAME" in capsys.readouterr().err
    import json
    assert cli.main(["invert", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--n-stft",
                     "513", "--report", str(tmp_path / "r.json"), "--no-progress"]) == 0
    row = json.loads((tmp_path / "r.json").read_text())["files"][0]
    assert "looks like a log or dB mel" in row["warning"]


def test_griffin_lim_options_without_a_front_end(tmp_path):
    rng = np.random.default_rng(0)
    S = (rng.random((129, 20)) ** 4).astype(np.float32)           # a magnitude spectrogram
    mel = cumel.MelScale(24, n_stft=129)(S)
    np.save(tmp_path / "m.npy", mel)
    wav = tmp_path / "m.wav"
    assert cli.main(["invert", str(tmp_path / "m.npy"), "--n-stft", "129", "--wav", str(wav),
                     "--power", "1", "--n-iter", "5", "--win-length", "200", "--hop-length", "64",
                     "--length", "1300", "--seed", "2", "--no-progress"]) == 0
    ref = cumel.GriffinLim(256, 5, win_length=200, hop_length=64, power=1.0, length=1300,
                           seed=2)(cumel.InverseMelScale(129, 24)(mel))
    _wav_equals(wav, ref, 16000)


@pytest.mark.parametrize("args, message", [
    (["--wav", "o.wav"], "give --n-stft (n_fft // 2 + 1), or --frontend NAME"),
    (["--n-stft", "129", "--wav-only"], "--wav-only needs -o"),
    (["--frontend", "hifigan", "--wav", "o.wav", "--length", "100000"],
     "length=100000 is longer than the features allow: 43 frames of the 'hifigan' front end"),
    (["--frontend", "whisper-128", "--wav", "o.wav"], "(..., n_mels=128, time), got shape (80, 43)"),
    (["--n-stft", "129", "--n-iter", "-1", "--wav", "o.wav"], "--n-iter must be an integer >= 0"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    _, F = _hifigan_features()
    np.save(tmp_path / "f.npy", F)
    assert cli.main(["invert", "f.npy", *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_the_log_mel_warning_gives_the_true_share(tmp_path, capsys):
    # 16 positive values among 4000: 99.6 % negative, which a whole percent would round to 100
    mel = -np.ones((16, 250), np.float32)
    mel.reshape(-1)[::250] = 1.0
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "m.npy", mel)
    assert cli.main(["invert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--n-stft",
                     "65", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "m.npy: mel: 99.6% of its values are negative" in out
    with pytest.warns(UserWarning, match=r"mel: 99\.6% of its values are negative"):
        cumel.InverseMelScale(65, 16)(mel)
    from cumel._validate import percent
    assert (percent(0.99996), percent(4e-5), percent(1.0), percent(0.0)) == \
        ("99.9%", "0.1%", "100.0%", "0.0%")


def test_the_demo_wav_is_ignored_by_the_repository():
    from conftest import REPO
    ignore = REPO / ".gitignore"
    if not ignore.exists():
        pytest.skip("not a checkout of the repository (no .gitignore)")
    patterns = {ln.strip() for ln in ignore.read_text().splitlines()}
    assert patterns & {"demo_reconstruction.wav", "/demo_reconstruction.wav"}
