"""``cumel invert`` over folders: mirrored outputs, bad files, re-runs, workers, batches,
Ctrl-C, the exact single-file path, .npz keys and shape errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cumel
from cumel import _bulk, cli
from conftest import REPO

N_STFT, N_MELS = 65, 16
ARGS = ["--n-stft", str(N_STFT), "--no-progress"]


def _mel(shape, seed):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _expected(mel):
    return cumel.InverseMelScale(N_STFT, mel.shape[-2])(mel)


@pytest.fixture
def tree(tmp_path):
    """in/: six .npy and .npz mels (8-40 frames, one with a batch axis) in two levels, and a
    corrupt file. Returns (in folder, {relative output path: expected spectrogram})."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    expected = {}
    for i, (rel, shape) in enumerate([("a.npy", (16, 8)), ("b.npy", (16, 40)),
                                      ("sub/c.npy", (2, 16, 13)), ("sub/deeper/d.npy", (16, 21))]):
        mel = _mel(shape, i)
        np.save(root / rel, mel)
        expected[rel] = _expected(mel)
    mel = _mel((16, 30), 10)
    np.savez(root / "sub" / "e.npz", mel=mel, other=np.zeros(3))   # 'mel' chosen
    expected["sub/e.npy"] = _expected(mel)
    mel = _mel((16, 17), 11)
    np.savez(root / "f.npz", spectrum=mel)                          # the only array
    expected["f.npy"] = _expected(mel)
    (root / "sub" / "broken.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (root / "notes.txt").write_text("not an input")
    return root, expected


def _outputs(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def test_folder_tree_mirrored_with_a_corrupt_file(tree, tmp_path, capsys):
    root, expected = tree
    out, report = tmp_path / "out", tmp_path / "run.json"
    rc = cli.main(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS])
    assert rc == 1
    assert _outputs(out) == sorted(expected)
    for rel, S in expected.items():
        np.testing.assert_array_equal(np.load(out / rel), S)
    text = capsys.readouterr()
    broken = str(root / "sub" / "broken.npy")
    assert broken in text.err and broken in text.out
    assert "6 written, 0 skipped (already there), 1 failed" in text.out
    doc = json.loads(report.read_text())
    assert doc["counts"] == {"written": 6, "skipped": 0, "failed": 1, "not run": 0, "not searched": 0}
    rows = {Path(r["input"]).name: r for r in doc["files"]}
    assert set(rows) == {"a.npy", "b.npy", "c.npy", "d.npy", "e.npz", "f.npz", "broken.npy"}
    assert rows["broken.npy"]["status"] == "failed" and broken in rows["broken.npy"]["error"]
    assert rows["c.npy"]["frames"] == 26 and rows["c.npy"]["output"] == str(out / "sub" / "c.npy")
    _, info = cumel.InverseMelScale(N_STFT, N_MELS)(np.load(root / "b.npy"), return_info=True)
    assert rows["b.npy"]["mel_residual"] == pytest.approx(info.total_mel_residual, rel=1e-9)
    assert rows["b.npy"]["seconds"] > 0


def test_rerun_skips_and_overwrite_redoes(tree, tmp_path, capsys):
    root, expected = tree
    out = tmp_path / "out"
    cli.main(["invert", str(root), "-o", str(out), *ARGS])
    stamp = {rel: os.stat(out / rel).st_mtime_ns for rel in expected}
    capsys.readouterr()
    assert cli.main(["invert", str(root), "-o", str(out), *ARGS]) == 1     # broken still fails
    assert "0 written, 6 skipped" in capsys.readouterr().out
    assert {rel: os.stat(out / rel).st_mtime_ns for rel in expected} == stamp
    time.sleep(0.01)
    cli.main(["invert", str(root), "-o", str(out), "--overwrite", *ARGS])
    assert "6 written, 0 skipped" in capsys.readouterr().out
    assert all(os.stat(out / rel).st_mtime_ns != stamp[rel] for rel in expected)


@pytest.mark.parametrize("extra", [["--jobs", "2"], ["--batch-frames", "50"]])
def test_workers_and_batches_give_the_same_outputs(tree, tmp_path, extra):
    root, expected = tree
    out = tmp_path / "out"
    assert cli.main(["invert", str(root), "-o", str(out), *ARGS, *extra]) == 1
    assert _outputs(out) == sorted(expected)
    for rel, S in expected.items():           # nnls: a frame's bits do not depend on its batch
        np.testing.assert_array_equal(np.load(out / rel), S)


# frames in every channel, prime counts: a count that drops the channels, or a file's frames
# counted twice or not at all, shows in the totals
COUNTED = {"a.npy": (16, 13), "b.npy": (3, 16, 17), "sub/c.npy": (2, 2, 16, 11), "d.npy": (16, 7)}


@pytest.mark.parametrize("extra", [[], ["--batch-frames", "31"], ["--batch-frames", "1000"],
                                   ["--jobs", "2"]])
def test_report_and_summary_count_every_channels_frames_of_written_files_only(tmp_path, capsys,
                                                                              extra):
    root, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "run.json"
    (root / "sub").mkdir(parents=True)
    for i, (rel, shape) in enumerate(COUNTED.items()):
        np.save(root / rel, _mel(shape, i))
    out.mkdir()
    np.save(out / "d.npy", np.zeros((N_STFT, 7), np.float32))         # already there: skipped
    assert cli.main(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS,
                     *extra]) == 0
    doc = json.loads(report.read_text())
    rows = {str(Path(r["input"]).relative_to(root)): r for r in doc["files"]}
    # one row a file, in the inputs' order whatever order they finished in; totals by status
    inputs = [r["input"] for r in doc["files"]]
    assert inputs == sorted(inputs) and len(inputs) == 4
    assert doc["counts"] == {"written": 3, "skipped": 1, "failed": 0, "not run": 0, "not searched": 0}
    assert {rel: (r["status"], r["frames"]) for rel, r in rows.items()} == {
        "a.npy": ("written", 13), "b.npy": ("written", 3 * 17), "sub/c.npy": ("written", 2 * 2 * 11),
        "d.npy": ("skipped", 7)}
    written = 13 + 3 * 17 + 2 * 2 * 11
    assert f"3 written, 1 skipped (already there), 0 failed, 0 not run; {written:,} frames in " \
        in capsys.readouterr().out
    for rel in ("a.npy", "b.npy", "sub/c.npy"):
        np.testing.assert_array_equal(np.load(out / rel), _expected(np.load(root / rel)))


def test_a_batch_never_mixes_precisions(tmp_path):
    """--batch-frames: float32 and float64 files are solved apart, each in its own precision,
    with the bits and dtype it has alone."""
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    mels = {"a.npy": _mel((16, 11), 1), "b.npy": _mel((16, 13), 2).astype(np.float64),
            "c.npy": _mel((2, 16, 7), 3)}
    for name, mel in mels.items():
        np.save(root / name, mel)
    assert cli.main(["invert", str(root), "-o", str(out), *ARGS, "--batch-frames", "1000"]) == 0
    for name, mel in mels.items():
        got, expected = np.load(out / name), _expected(mel)
        assert got.dtype == expected.dtype == mel.dtype
        np.testing.assert_array_equal(got, expected)


def test_files_named_directly_go_to_the_folder(tree, tmp_path):
    root, expected = tree
    out = tmp_path / "out"
    assert cli.main(["invert", str(root / "a.npy"), str(root / "sub" / "e.npz"), "-o", str(out),
                     *ARGS]) == 0
    assert _outputs(out) == ["a.npy", "e.npy"]
    np.testing.assert_array_equal(np.load(out / "e.npy"), expected["sub/e.npy"])


def test_progress_bar_and_plain_fallback(tree, tmp_path, capsys, monkeypatch):
    root, _ = tree
    cli.main(["invert", str(root), "-o", str(tmp_path / "o1"), "--n-stft", str(N_STFT)])
    err = capsys.readouterr().err
    assert "7/7" in err and "file/s" in err and "frames/s" in err            # tqdm's bar
    monkeypatch.setitem(sys.modules, "tqdm", None)                            # tqdm missing
    cli.main(["invert", str(root), "-o", str(tmp_path / "o2"), "--n-stft", str(N_STFT)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cumel: [")]
    assert len(lines) == 7 and lines[-1].startswith("cumel: [7/7]") and "frames/s" in lines[-1]


def test_single_file_writes_exactly_the_path_given(tmp_path, capsys):
    mel = _mel((16, 9), 0)
    np.save(tmp_path / "mel.npy", mel)
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "out"),
                     "--n-stft", str(N_STFT)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mel.npy", "out"]
    np.testing.assert_array_equal(np.load(tmp_path / "out"), _expected(mel))
    assert f"wrote {tmp_path / 'out'}" in capsys.readouterr().out
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "o2.npy"),
                     "--n-stft", str(N_STFT), "--report", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [(r["status"], r["frames"]) for r in rows] == [("written", 9)]


def test_single_file_prints_its_shapes_steps_and_residual(tmp_path, capsys):
    """The single-file lines, every figure from the same solve done here: the shapes, the mean
    and max Newton steps a frame (3 channels of 11 frames, steps that differ between frames),
    and the residual ||A S - M|| / ||M|| over the whole file."""
    mel = _mel((3, N_MELS, 11), 4)
    np.save(tmp_path / "mel.npy", mel)
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "out.npy"),
                     "--n-stft", str(N_STFT)]) == 0
    out = capsys.readouterr().out
    S, info = cumel.InverseMelScale(N_STFT, N_MELS)(mel, return_info=True)
    steps = np.asarray(info.iterations)
    assert steps.size == 33 and steps.max() > steps.min()
    M = mel.astype(np.float64)
    AS = cumel.MelScale(n_mels=N_MELS, n_stft=N_STFT)(S.astype(np.float64))
    residual = np.linalg.norm(AS - M) / np.linalg.norm(M)
    assert f"mel (3, {N_MELS}, 11) float32 -> spectrogram (3, {N_STFT}, 11) float32" in out
    assert f"iterations/frame: mean {steps.mean():.1f}, max {steps.max()}\n" in out
    printed = float(out.split("mel residual ||A S - M|| / ||M|| = ")[1].split()[0])
    assert printed == pytest.approx(residual, rel=2e-3)


def test_npz_keys(tmp_path, capsys):
    a, b = _mel((16, 5), 1), _mel((16, 6), 2)
    np.savez(tmp_path / "two.npz", a=a, b=b)
    np.savez(tmp_path / "named.npz", mel=a, b=b)
    assert cli.main(["invert", str(tmp_path / "two.npz"), "-o", str(tmp_path / "S.npy"),
                     "--n-stft", str(N_STFT)]) == 2
    assert "holds arrays ['a', 'b'] and none is named 'mel'; pick one with --key" in capsys.readouterr().err
    assert cli.main(["invert", str(tmp_path / "two.npz"), "-o", str(tmp_path / "S.npy"),
                     "--n-stft", str(N_STFT), "--key", "b"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "S.npy"), _expected(b))
    assert cli.main(["invert", str(tmp_path / "named.npz"), "-o", str(tmp_path / "T.npy"),
                     "--n-stft", str(N_STFT)]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "T.npy"), _expected(a))
    assert cli.main(["invert", str(tmp_path / "named.npz"), "-o", str(tmp_path / "U.npy"),
                     "--n-stft", str(N_STFT), "--key", "nope"]) == 2
    assert "no array named 'nope' (--key); it has ['mel', 'b']" in capsys.readouterr().err


def test_one_dimensional_input_says_what_was_expected(tmp_path, capsys):
    np.save(tmp_path / "mel.npy", np.zeros(400, np.float32))
    assert cli.main(["invert", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "S.npy"),
                     "--n-stft", str(N_STFT)]) == 2
    err = capsys.readouterr().err
    assert "mel.npy: expected an array of shape (..., n_mels, time), got shape (400,)" in err
    assert not (tmp_path / "S.npy").exists()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _bulk.write_atomic(tmp_path / "x.npy", fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_cleanly(tmp_path, jobs):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    n_files = 40
    for i in range(n_files):
        np.save(root / f"m{i:02d}.npy", _mel((16, 6000), i))
    proc = subprocess.Popen([sys.executable, "-m", "cumel.cli", "invert", str(root), "-o", str(out),
                             "--n-stft", str(N_STFT), "--jobs", jobs, "--report",
                             str(tmp_path / "run.json")],
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a test run started in the background inherits SIGINT ignored, and
                            # Python then installs no KeyboardInterrupt handler: give the CLI the
                            # default disposition an interactive user's process has
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (out.exists() and any(p.suffix == ".npy" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "no output appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "cumel: interrupted (SIGINT):" in stdout
    names = sorted(p.name for p in out.iterdir())
    assert all(name.endswith(".npy") and not name.startswith(".") for name in names), names
    assert 0 < len(names) < n_files
    for name in names:                                  # every output there is complete
        assert np.load(out / name).shape == (N_STFT, 6000)
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["interrupted"] is True and doc["counts"]["written"] == len(names)
    assert doc["counts"]["not run"] == n_files - len(names)


def test_device_cuda_without_a_gpu_is_one_clear_error(tree, tmp_path, capsys):
    from cumel import _backend
    if _backend.gpu_available():
        pytest.skip("a GPU is present (tests/test_gpu_bulk.py covers --device cuda)")
    root, _ = tree
    assert cli.main(["invert", str(root), "-o", str(tmp_path / "out"), "--device", "cuda",
                     *ARGS]) == 2
    assert "device='cuda'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_progress_lines_name_the_file_written(tree, tmp_path, capsys, monkeypatch):
    root, _ = tree
    monkeypatch.setitem(sys.modules, "tqdm", None)                 # the plain lines
    out = tmp_path / "out"
    cli.main(["invert", str(root), "-o", str(out), "--n-stft", str(N_STFT)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cumel: [")]
    written = [ln for ln in lines if "] written " in ln]
    assert len(written) == 6
    assert any(f"written {out / 'sub' / 'e.npy'} (from {root / 'sub' / 'e.npz'})" in ln
               for ln in written), written
    assert any(f"failed {root / 'sub' / 'broken.npy'} " in ln for ln in lines), lines
    cli.main(["invert", str(root), "-o", str(tmp_path / "wavs"), "--n-stft", str(N_STFT),
              "--wav-only", "--n-iter", "1"])
    lines = capsys.readouterr().err.splitlines()
    assert any(f"written {tmp_path / 'wavs' / 'a.wav'} (from {root / 'a.npy'})" in ln
               for ln in lines), lines


def test_sigterm_while_collecting_inputs_still_prints_the_summary(tree, tmp_path, capsys,
                                                                  monkeypatch):
    root, _ = tree
    collect = _bulk.collect_inputs

    def stopped_while_collecting(paths, outdir):
        os.kill(os.getpid(), signal.SIGTERM)       # the stop handler raises here, in the search
        time.sleep(5)
        return collect(paths, outdir)

    monkeypatch.setattr(_bulk, "collect_inputs", stopped_while_collecting)
    report = tmp_path / "run.json"
    rc = cli.main(["invert", str(root), "-o", str(tmp_path / "out"), *ARGS, "--report",
                   str(report)])
    assert rc == 143
    out = capsys.readouterr().out
    assert out.startswith("cumel: interrupted (SIGTERM): 0 written, 0 skipped (already there), 0 failed")
    assert "stopped while collecting the inputs" in out
    doc = json.loads(report.read_text())
    assert doc["interrupted"] is True and doc["signal"] == "SIGTERM" and doc["files"] == []


@pytest.mark.parametrize("batch", [[], ["--batch-frames", "64"]])
def test_method_admm_makes_the_sound_over_a_folder(tree, tmp_path, batch):
    import wave
    root, expected = tree
    out = tmp_path / "out"
    assert cli.main(["invert", str(root / "a.npy"), str(root / "sub" / "c.npy"), "-o", str(out),
                     *ARGS, "--wav", "--method", "admm", "--n-iter", "3", "--seed", "1",
                     *batch]) == 0
    for name, rel in (("a", "a.npy"), ("c", "sub/c.npy")):
        mel = np.load(root / rel)
        ref = cumel.mel_to_audio(mel, 2 * (N_STFT - 1), method="admm", n_iter=3, seed=1)
        with wave.open(str(out / f"{name}.wav"), "rb") as f:      # every channel
            pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, f.getnchannels())
        y = pcm.T.astype(np.float64) / 32767
        assert np.abs(ref).max() <= 1.0
        # the ADMM of mel_to_audio, at its level; 16-bit rounding, the nnls start's rounding
        assert np.abs(y.reshape(ref.shape) - ref).max() < 2e-4 + 1e-3 * np.abs(ref).max()
        gl = cumel.mel_to_audio(mel, 2 * (N_STFT - 1), n_iter=3, seed=1)
        assert np.abs(gl - ref).max() > 1e-2 * np.abs(ref).max()       # not Griffin-Lim's


def test_method_admm_needs_the_sound(tree, tmp_path, capsys):
    root, _ = tree
    assert cli.main(["invert", str(root), "-o", str(tmp_path / "out"), *ARGS, "--method",
                     "admm"]) == 2
    assert "--method admm makes the sound: give --wav or --wav-only" in capsys.readouterr().err
