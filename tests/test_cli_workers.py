"""The CLI's threads (``--workers``) and its progress bar within one large file."""
import io
import os
import time

import numpy as np
import pytest

import cumel
from cumel import _bulk, cli
from cumel.solvers import nnls

N_STFT = 201
ARGS = ["--n-stft", str(N_STFT)]


def _parse(*extra):
    args = cli._build_parser().parse_args(["invert", "in.npy", "-o", "out", *ARGS, *extra])
    args.argv = []
    return args


def test_threads_per_process_follow_jobs_unless_given():
    assert cli._settings(_parse()).transform["workers"] is None          # every core
    assert cli._settings(_parse("--jobs", "2")).transform["workers"] == 1   # N processes: 1 each
    assert cli._settings(_parse("--jobs", "2", "--workers", "3")).transform["workers"] == 3
    assert cli._settings(_parse("--workers", "1")).transform["workers"] == 1


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_bad_workers_exit_2_naming_the_option(bad, tmp_path, capsys):
    mel = tmp_path / "m.npy"
    np.save(mel, np.ones((128, 4), np.float32))
    assert cli.main(["invert", str(mel), "-o", str(tmp_path / "s.npy"), *ARGS, "--workers", bad]) == 2
    assert f"--workers must be a positive integer, got {bad}" in capsys.readouterr().err


def test_bar_moves_by_files_within_a_batch_of_several():
    """--batch-frames: one solve holds several files; the bar moves by their share of files
    (4 files of 331 frames each, 662 frames solved: 2 files' worth)."""
    bar = _bulk.Progress(5, stream=io.StringIO())
    if bar.bar is None:
        pytest.skip("tqdm is not installed (the plain fallback prints one line per file)")
    advance = bar.within(4 * 331, files=4)
    advance(331)
    advance(331)
    assert bar.bar.n == pytest.approx(2.0)
    advance(2 * 331)
    assert bar.bar.n == pytest.approx(4.0)
    for name in "abcd":
        bar.update(_bulk.Result(f"{name}.npy", f"{name}.out.npy", "written", 331, 1.0))
    assert bar.bar.n == pytest.approx(4.0) and bar.frames == 4 * 331
    bar.close()


def test_bar_moves_within_one_file():
    stream = io.StringIO()
    bar = _bulk.Progress(2, stream=stream)
    if bar.bar is None:
        pytest.skip("tqdm is not installed (the plain fallback prints one line per file)")
    advance = bar.within(1000)
    advance(250)
    advance(250)
    assert bar.bar.n == pytest.approx(0.5)
    bar.update(_bulk.Result("a.npy", "a.out.npy", "written", 1000, 1.0))
    assert bar.bar.n == pytest.approx(1.0)                  # the rest of the file, not 1 more
    bar.update(_bulk.Result("b.npy", "b.out.npy", "failed", error="b.npy: bad"))
    assert bar.bar.n == pytest.approx(2.0)
    bar.close()


def test_a_file_reports_its_frames_as_they_are_solved(tmp_path, monkeypatch):
    for name in ("CHUNK_ELEMENTS", "THREAD_CHUNK_ELEMENTS", "MIN_CHUNK_ELEMENTS"):
        monkeypatch.setattr(nnls.chunks, name, 50 * N_STFT)              # 8 chunks of 50 frames
    from conftest import audio_pair
    _, M = audio_pair("speech-201x128", "speech_00")
    np.save(tmp_path / "big.npy", M[:, :400].astype(np.float32))
    calls = []

    def within(frames, files=1):
        calls.append(("file", frames, files))
        return lambda n: calls.append(("frames", n))

    settings = cli._settings(_parse("--workers", "2"))
    job = _bulk.Job(str(tmp_path / "big.npy"), str(tmp_path / "big.out.npy"))
    result = _bulk.solve_file(job, settings, within)
    assert result.status == "written"
    assert calls[0] == ("file", 400, 1)
    solved = [n for kind, n in calls[1:] if kind == "frames"]
    assert len(solved) >= 2 and sum(solved) == 400
    np.testing.assert_array_equal(np.load(job.output),
                                  cumel.InverseMelScale(N_STFT, 128, workers=1)(M[:, :400]))


def _wait_for(path, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def report_in_halves(job, settings, progress=None):
    """``solve`` for the test below (imported by the workers from this module): reports half of
    a 100-frame file, waits until the parent has shown it, then the rest, and waits again."""
    assert progress is not None
    advance = progress(100, 1)
    for done in (50, 100):
        advance(50)
        _wait_for(f"{job.input}.seen{done}")
    return _bulk.Result(job.input, job.output, "written", 100, 0.0)


class _Seen:
    """Stands for the bar: records what the workers report, and says so to them."""

    def __init__(self):
        self.calls = []

    def solved(self, key, frames, total):
        self.calls.append((os.path.basename(key), frames, total))
        open(f"{key}.seen{frames}", "w").close()


def test_worker_processes_report_solved_frames_within_a_file(tmp_path):
    jobs = [_bulk.Job(str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}.out.npy"))
            for name in ("a", "b", "c")]
    results, seen = [], _Seen()
    _bulk.run_parallel(jobs, _bulk.Settings(N_STFT), 2, results.append, solve=report_in_halves,
                       progress=seen)
    assert sorted(r.status for r in results) == ["written"] * 3
    for name in ("a", "b", "c"):
        mine = [(frames, total) for key, frames, total in seen.calls if key == f"{name}.npy"]
        assert (50, 100) in mine and (100, 100) in mine          # half a file, then all of it
        assert mine == sorted(mine)                               # never back


def test_bar_keeps_each_worker_file_apart():
    stream = io.StringIO()
    bar = _bulk.Progress(3, stream=stream)
    if bar.bar is None:
        pytest.skip("tqdm is not installed (the plain fallback prints one line per file)")
    bar.solved("a.npy", 50, 100)
    bar.solved("b.npy", 25, 100)
    bar.solved("a.npy", 40, 100)                                 # a stale count: no move back
    assert bar.bar.n == pytest.approx(0.75)
    assert bar.partial_frames == 75
    bar.update(_bulk.Result("a.npy", "a.out.npy", "written", 100, 1.0))
    assert bar.bar.n == pytest.approx(1.25)                      # a whole, b a quarter
    bar.solved("b.npy", 100, 100)
    bar.update(_bulk.Result("b.npy", "b.out.npy", "failed", error="b.npy: bad"))
    assert bar.bar.n == pytest.approx(2.0)
    assert bar.partial_frames == 0 and bar.frames == 100
    bar.update(_bulk.Result("c.npy", "c.out.npy", "written", 10, 1.0))   # never reported
    assert bar.bar.n == pytest.approx(3.0)
    bar.close()
