"""``cumel invert --wav`` and ``cumel demo --wav``: audio written with the standard library."""
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

import cumel
from cumel import cli
from cumel.workloads import read_wav


def _mel(shape, seed=0):
    rng = np.random.default_rng(seed)
    S = rng.random((201,) + shape[1:]) ** 4
    return cumel.MelScale(n_mels=shape[0], n_stft=201)(S.astype(np.float32))


def test_cli_invert_writes_a_wav(tmp_path, capsys):
    mel = _mel((40, 30))
    np.save(tmp_path / "mel.npy", mel)
    wav = tmp_path / "out.wav"
    rc = cli.main(["invert", str(tmp_path / "mel.npy"), "--n-stft", "201", "--wav", str(wav),
                   "--hop-length", "160", "--seed", "0"])
    assert rc == 0
    with wave.open(str(wav), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16000)
        assert f.getnframes() == 160 * 29
    y, rate = read_wav(wav)
    S = cumel.InverseMelScale(201, 40)(mel)
    ref = cumel.GriffinLim(400, hop_length=160, seed=0)(S)
    assert 0.05 < np.abs(ref).max() < 0.5                     # measured 0.16: well inside
    assert np.abs(y - ref).max() < 2e-4                      # the level computed, 16-bit rounding
    out = capsys.readouterr().out
    assert "spectral convergence" in out and str(wav) in out and "level computed" in out
    # every figure of the audio lines from the known answer: samples, seconds, the spectral
    # convergence of |STFT(y)| against the magnitudes S ** (1 / power), relative to S's, the peak
    from cumel.stft import stft
    target = np.asarray(S, np.float64) ** 0.5
    rebuilt = np.abs(stft(np.asarray(ref, np.float64), 400, 160, 400))[..., :target.shape[-1]]
    sc = np.linalg.norm(rebuilt - target) / np.linalg.norm(target)
    assert 0.01 < sc < 0.5
    head = ("  audio: Griffin-Lim 32 iterations, n_fft=400, hop=160: 4640 samples (0.29 s at 16000 Hz), "
            "spectral convergence against the inverted spectrogram ")
    assert head in out
    assert float(out.split(head)[1].split()[0]) == pytest.approx(sc, abs=1e-4)     # printed to 4 places
    peak = float(out.split("at the level computed: peak ")[1].split()[0])
    assert peak == pytest.approx(np.abs(ref).max(), rel=5e-3)
    assert f"wrote {wav} (16-bit PCM, 1 channel(s), at the level computed" in out
    rc = cli.main(["invert", str(tmp_path / "mel.npy"), "--n-stft", "201", "--wav", str(wav),
                   "--hop-length", "160", "--seed", "0", "--normalize"])
    assert rc == 0
    y, _ = read_wav(wav)
    assert 0.98 <= np.abs(y).max() <= 0.99 + 1e-4            # normalised, no clipping
    assert np.abs(y - ref * (0.99 / np.abs(ref).max())).max() < 2e-4
    assert "peak scaled to 0.99" in capsys.readouterr().out


def test_cli_wav_beyond_full_scale_is_clipped_with_a_warning(tmp_path, capsys):
    mel = _mel((40, 30)) * 400.0        # power x 400: 20 times the amplitude, peak about 3.3
    np.save(tmp_path / "mel.npy", mel)
    wav = tmp_path / "loud.wav"
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "--n-stft", "201", "--wav", str(wav),
                     "--hop-length", "160", "--seed", "0", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "cumel: warning:" in captured.err and "exceed full scale" in captured.err
    assert "--normalize" in captured.err and "clipped" in captured.out
    y, _ = read_wav(wav)
    assert np.abs(y).max() == 32767 / 32768                  # clipped at full scale, not wrapped
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "--n-stft", "201", "--wav", str(wav),
                     "--hop-length", "160", "--seed", "0", "--normalize"]) == 0
    assert "exceed full scale" not in capsys.readouterr().err


def test_write_wav_level_clip_guard_and_normalize(tmp_path):
    from cumel.griffin_lim import write_wav
    y = np.array([0.5, -0.25, 0.0, 0.125])
    write_wav(tmp_path / "a.wav", y, 8000)
    got, _ = read_wav(tmp_path / "a.wav")
    np.testing.assert_allclose(got, np.round(y * 32767) / 32768)     # as computed, not scaled
    with pytest.warns(UserWarning, match=r"a\.wav: 2 of 4 samples \(50\.00%\) exceed full scale"):
        write_wav(tmp_path / "a.wav", np.array([2.0, -1.5, 1.0, 0.5]), 8000)
    got, _ = read_wav(tmp_path / "a.wav")
    np.testing.assert_allclose(got, np.array([32767, -32767, 32767, 16384]) / 32768)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_wav(tmp_path / "b.wav", np.array([2.0, -1.0]), 8000, normalize=True)
        write_wav(tmp_path / "c.wav", np.zeros(3), 8000)                 # silence stays silent
    got, _ = read_wav(tmp_path / "b.wav")
    np.testing.assert_allclose(got, np.round(np.array([0.99, -0.495]) * 32767) / 32768)
    assert not read_wav(tmp_path / "c.wav")[0].any()


def test_cli_invert_needs_an_output(tmp_path, capsys):
    np.save(tmp_path / "mel.npy", _mel((40, 9)))
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "--n-stft", "201"]) == 2
    assert "--wav" in capsys.readouterr().err


def test_cli_demo_writes_its_reconstruction(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--seed", "0"]) == 0
    y, rate = read_wav(tmp_path / "demo_reconstruction.wav")
    assert rate == 16000 and y.shape == (160 * 399,)
    out = capsys.readouterr().out
    # measured: 0.078 against the inverted spectrogram; bound 0.4
    sc = float(out.split("spectral convergence against the inverted spectrogram ")[1].split()[0])
    assert sc < 0.4
    # the line says where the file is: its full path, whatever folder the demo ran in
    written = Path(out.split("  wrote ")[1].split(" (16-bit PCM")[0])
    assert written.is_absolute() and written == (tmp_path / "demo_reconstruction.wav").resolve()
    assert cli.main(["demo", "--wav", "other.wav", "--method", "admm", "--n-iter", "4"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {(tmp_path / 'other.wav').resolve()} " in out and "ADMM 4 iterations" in out
    assert (tmp_path / "other.wav").exists()
