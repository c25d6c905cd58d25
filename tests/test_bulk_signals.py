"""``cumel invert PATH... -o OUTDIR`` stopped by signals, and workers that die.

SIGTERM (what ``timeout``, systemd, Kubernetes and batch schedulers send) is handled like
Ctrl-C: the files in hand finish or leave nothing, the rest are not run, the summary and report
are written, exit 143. Workers never outlive the run, whatever killed it: afterwards its process
group (the CLI, the forkserver, the resource tracker, the workers) is empty. A worker that dies
fails its file alone.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

import cumel
from cumel import _bulk

N_STFT, N_MELS = 65, 16
N_FILES, FRAMES = 30, 3000


def _mel(i):
    return np.random.default_rng(i).random((N_MELS, FRAMES)).astype(np.float32)


_EXPECTED = {}


def _expected(i):
    if i not in _EXPECTED:
        _EXPECTED[i] = cumel.InverseMelScale(N_STFT, N_MELS)(_mel(i))
    return _EXPECTED[i]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals") / "in"
    root.mkdir()
    for i in range(N_FILES):
        np.save(root / f"m{i:02d}.npy", _mel(i))
    return root


def _live_members(pgid):
    """Processes of group ``pgid`` that are not zombies (from /proc; ``killpg`` elsewhere)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return ["?"]
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _assert_group_empties(pgid, within=15.0):
    deadline = time.monotonic() + within
    while _live_members(pgid):
        assert time.monotonic() < deadline, f"orphans left in the run's process group: {_live_members(pgid)}"
        time.sleep(0.05)


def _start(root, out, report, jobs):
    # its own session and process group: the group is the run's, and empty once it is over
    return subprocess.Popen(
        [sys.executable, "-m", "cumel.cli", "invert", str(root), "-o", str(out), "--n-stft",
         str(N_STFT), "--jobs", jobs, "--no-progress", "--report", str(report)],
        cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def _wait_for_an_output(proc, out):
    deadline = time.monotonic() + 60
    while not (out.exists() and any(p.suffix == ".npy" for p in out.iterdir())):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.01)


def _assert_outputs_complete(out):
    """Every file in ``out`` is a complete output, bit-equal to the in-memory answer; no
    temporary file. Returns their names."""
    names = sorted(p.name for p in out.iterdir())
    assert all(n.endswith(".npy") and not n.startswith(".") for n in names), names
    for name in names:
        np.testing.assert_array_equal(np.load(out / name), _expected(int(name[1:3])))
    return names


@pytest.mark.parametrize("jobs,target", [("1", "process"), ("2", "process"), ("2", "group")])
def test_sigterm_stops_cleanly(folder, tmp_path, jobs, target):
    # "process": kill -TERM <cli> (timeout, Kubernetes); "group": kill -TERM -<pgid> (systemd's
    # control group, a shell's job), which reaches the forkserver and the workers as well
    out, report = tmp_path / "out", tmp_path / "run.json"
    proc = _start(folder, out, report, jobs)
    _wait_for_an_output(proc, out)
    if target == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "cumel: interrupted (SIGTERM):" in stdout and "Traceback" not in stderr
    _assert_group_empties(proc.pid)
    names = _assert_outputs_complete(out)
    assert 0 < len(names) < N_FILES
    doc = json.loads(report.read_text())
    assert doc["interrupted"] is True and doc["signal"] == "SIGTERM"
    assert doc["counts"]["written"] == len(names) and doc["counts"]["failed"] == 0
    assert doc["counts"]["not run"] == N_FILES - len(names)
    assert f"{len(names)} written, 0 skipped (already there), 0 failed, " \
           f"{N_FILES - len(names)} not run" in stdout


def test_sigkill_of_the_cli_leaves_no_worker_and_a_rerun_finishes(folder, tmp_path):
    out, report = tmp_path / "out", tmp_path / "run.json"
    few = tmp_path / "in"                      # a third of the folder: the re-run does the rest
    few.mkdir()
    for p in sorted(folder.iterdir())[:N_FILES // 3]:
        os.symlink(p, few / p.name)
    folder = few
    proc = _start(folder, out, report, "2")
    _wait_for_an_output(proc, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _assert_group_empties(proc.pid)            # the workers saw the parent die and left
    names = _assert_outputs_complete(out)      # and removed their temporary files
    proc = _start(folder, out, report, "2")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"{N_FILES // 3 - len(names)} written, {len(names)} skipped" in stdout
    assert len(_assert_outputs_complete(out)) == N_FILES // 3
    _assert_group_empties(proc.pid)


def kill_own_worker(job, settings):
    """``solve`` for the worker test (imported by the workers from this module): a file named
    ``die*`` kills the worker solving it, as the kernel's out-of-memory killer would."""
    if Path(job.input).name.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _bulk.solve_file(job, settings)


def test_a_worker_that_dies_fails_its_file_alone(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    inv = cumel.InverseMelScale(N_STFT, N_MELS)
    expected = {}
    for i, name in enumerate(["a", "b", "die", "c", "d", "e"]):
        mel = np.random.default_rng(i).random((N_MELS, 20)).astype(np.float32)
        np.save(root / f"{name}.npy", mel)
        expected[name] = inv(mel)
    jobs, problems = _bulk.collect_inputs([root], tmp_path / "out")
    assert not problems
    results = []
    _bulk.run_parallel(jobs, _bulk.Settings(N_STFT), 2, results.append, solve=kill_own_worker)
    status = {Path(r.input).stem: r for r in results}
    assert sorted(status) == sorted(expected)                      # each file recorded once
    assert len(results) == len(expected)
    assert status["die"].status == "failed" and "the worker process solving it died" in status["die"].error
    for name, S in expected.items():
        if name != "die":
            assert status[name].status == "written"
            np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{name}.npy"), S)


@pytest.mark.parametrize("batch_frames", [None, 10**6])
def test_a_stop_signal_right_after_an_output_lands_still_counts_it(tmp_path, monkeypatch, batch_frames):
    # The race: SIGTERM between the rename that puts an output in place and the run's record of
    # it. The output is complete, so the report must call it written (not "not run"). The signal
    # is sent from inside os.replace, just after the rename: no timing involved.
    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        np.save(root / f"m{i:02d}.npy", _mel(i)[:, :40])
    jobs, problems = _bulk.collect_inputs([root], tmp_path / "out")
    replace = os.replace
    sent = []

    def replace_then_signal(src, dst):
        replace(src, dst)
        if str(dst).endswith(".npy") and not sent:
            sent.append(dst)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    report, summary = tmp_path / "run.json", io.StringIO()
    status = _bulk.run(jobs, problems, _bulk.Settings(N_STFT), n_workers=1, batch_frames=batch_frames,
                       progress=False, report=report, out=summary)
    assert status == 143 and len(sent) == 1
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["m00.npy"]
    doc = json.loads(report.read_text())
    assert doc["signal"] == "SIGTERM"
    assert doc["counts"]["written"] == 1 and doc["counts"]["not run"] == 2, doc["counts"]
    assert "1 written, 0 skipped (already there), 0 failed, 2 not run" in summary.getvalue()
