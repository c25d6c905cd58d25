"""``cumel stream``: frames from a file to a WAV, as a stream."""
import os
import wave

import numpy as np
import pytest

import cumel
import cumel.stream
from cumel import cli


def _features(seconds=0.4, channels=None):
    fe = cumel.frontend("tacotron2")
    t = np.arange(int(seconds * fe.sample_rate)) / fe.sample_rate
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t)).astype(np.float32)
    f = fe.features(x)
    return f if channels is None else np.stack([f, f[:, ::-1]][:channels])


def _read(path):
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getframerate(), np.frombuffer(w.readframes(w.getnframes()),
                                                                 "<i2")


def test_stream_command_writes_the_stream(tmp_path, capsys):
    feats = _features()
    np.save(tmp_path / "in.npy", feats)
    out = tmp_path / "out.wav"
    rc = cli.main(["stream", str(tmp_path / "in.npy"), "--frontend", "tacotron2", "-o", str(out),
                   "--lookahead", "2", "--n-iter", "2", "--chunk", "3", "--realtime"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "x real time" in text
    stream = cumel.MelStream(frontend="tacotron2", lookahead=2, n_iter=2)
    assert f"latency {stream.latency} samples" in text
    y = np.concatenate([stream.push(feats), stream.flush()])
    channels, rate, pcm = _read(out)
    assert (channels, rate) == (1, 22050)
    assert pcm.shape == y.shape == (256 * (feats.shape[-1] - 1),)
    assert np.array_equal(pcm, np.round(np.clip(y.astype(np.float64), -1, 1) * 32767))
    assert f"-> {out}: {pcm.size} samples ({pcm.size / 22050:.2f} s at 22050 Hz)" in text


def test_stream_command_writes_as_it_reads(tmp_path, monkeypatch):
    feats = _features(channels=2)
    np.save(tmp_path / "in.npy", feats)
    out = tmp_path / "out.wav"
    sizes = []
    flush = cumel.stream.MelStream.flush

    def watched(self):
        sizes.append(os.path.getsize(out))
        return flush(self)

    monkeypatch.setattr(cumel.stream.MelStream, "flush", watched)
    assert cli.main(["stream", str(tmp_path / "in.npy"), "--frontend", "tacotron2", "-o",
                     str(out), "--n-iter", "1"]) == 0
    channels, _, pcm = _read(out)
    assert channels == 2 and pcm.size == 2 * 256 * (feats.shape[-1] - 1)
    # before the flush, all but the last lookahead frames' samples were already in the file
    assert sizes[0] > 44 + 2 * 2 * 256 * (feats.shape[-1] - 8)


def test_stream_command_figures_of_a_two_channel_stream(tmp_path, capsys, monkeypatch):
    """Every printed figure of a 2-channel run from known inputs: the samples and seconds per
    channel, the clipped samples of both channels, and the real-time factor counting both
    channels' audio over the work's time (a clock that moves 0.125 s a reading)."""
    import types

    from cumel import _stream_cli
    readings = iter(np.arange(10_000) * 0.125)
    monkeypatch.setattr(_stream_cli, "time", types.SimpleNamespace(perf_counter=lambda: next(readings)))
    feats = _features(channels=2)
    np.save(tmp_path / "in.npy", feats + 2.0)          # log mels: e**2 louder, some samples clip
    out = tmp_path / "out.wav"
    assert cli.main(["stream", str(tmp_path / "in.npy"), "--frontend", "tacotron2", "-o", str(out),
                     "--n-iter", "1", "--chunk", "5", "--realtime"]) == 0
    text = capsys.readouterr().out
    stream = cumel.MelStream(frontend="tacotron2", n_iter=1)
    y = np.concatenate([stream.push(feats + 2.0), stream.flush()], axis=-1).astype(np.float64)
    channels, rate, pcm = _read(out)
    T = feats.shape[-1]
    samples = 256 * (T - 1)
    assert channels == 2 and y.shape == (2, samples) and pcm.size == 2 * samples
    clipped = int((np.abs(y) > 1).sum())
    assert clipped > 0
    busy = 0.125 * (-(-T // 5) + 1)                     # each push and the flush
    seconds = samples / rate
    assert (f"cumel stream: {T} frames x 2 channel(s) -> {out}: {samples} samples "
            f"({seconds:.2f} s at {rate} Hz), lookahead {stream.lookahead}; {clipped} samples clipped "
            "at full scale") in text
    assert (f"real time: {busy:.3f} s of work for {seconds:.2f} s of audio x 2 channel(s): "
            f"{2 * seconds / busy:.1f}x real time") in text


def test_stream_command_bad_input(tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.zeros(10))
    assert cli.main(["stream", str(tmp_path / "flat.npy"), "--frontend", "hifigan", "-o",
                     str(tmp_path / "o.wav")]) == 2
    assert "(n_mels, T)" in capsys.readouterr().err
    np.save(tmp_path / "mel.npy", np.zeros((80, 4), np.float32))
    assert cli.main(["stream", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "o.wav")]) == 2
    assert "n_fft is required" in capsys.readouterr().err
    assert cli.main(["stream", str(tmp_path / "mel.npy"), "--frontend", "whisper-128", "-o",
                     str(tmp_path / "o.wav")]) == 2
    assert "80 mel bands" in capsys.readouterr().err


@pytest.mark.parametrize("chunk", ["0"])
def test_stream_command_bad_chunk(tmp_path, capsys, chunk):
    np.save(tmp_path / "mel.npy", np.ones((80, 4), np.float32))
    assert cli.main(["stream", str(tmp_path / "mel.npy"), "--frontend", "hifigan", "-o",
                     str(tmp_path / "o.wav"), "--chunk", chunk]) == 2
    assert "--chunk must be at least 1" in capsys.readouterr().err


def test_stream_command_says_once_when_it_compiles(tmp_path):
    """In a fresh process with an empty numba cache, ``cumel stream`` (its magnitudes on the
    compiled nnls loop, its passes compiled too) says once on stderr that it compiles; with the
    cache that run filled, nothing."""
    pytest.importorskip("numba", reason="the compiled CPU loop needs numba (the cpu extra)")
    import subprocess
    import sys
    from cumel.solvers.nnls.compiled import COLD_COMPILE_NOTE
    np.save(tmp_path / "in.npy", _features(0.1))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("CUMEL_CPU", None)

    def run():
        done = subprocess.run([sys.executable, "-m", "cumel.cli", "stream", "in.npy",
                               "--frontend", "tacotron2", "-o", "out.wav", "--n-iter", "1"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert run().count(COLD_COMPILE_NOTE) == 1
    assert any((tmp_path / "cache").rglob("compiled.overlap-*.nbi"))
    assert COLD_COMPILE_NOTE not in run()
