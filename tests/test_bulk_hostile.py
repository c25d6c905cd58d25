"""``cumel invert PATH... -o OUTDIR`` against hostile files and odd folders: each case lets one
bad file fail alone (a per-file error, the good files of the same run written, a summary, a
report, exit 1), or refuses the run up front (exit 2); none does nothing and says it succeeded.

The classes: (1) headers that promise more memory than there is, and MemoryError; (2) .npz
members that are not arrays; (3) reports with extreme or non-finite values; (4) a bad file in
a --batch-frames batch; (5) output folders that overlap the input folder; (6) file names near
NAME_MAX; (7) special files (FIFOs) at output and input paths; (9) folders that cannot be
searched. (8), the signals, is in test_bulk_signals.py.
"""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

import cumel
from cumel import cli
from cumel._bulk import inputs

N_STFT, N_MELS = 65, 16
ARGS = ["--n-stft", str(N_STFT), "--no-progress"]


def _mel(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def _good_files(root, n=3, shape=(N_MELS, 12)):
    """``n`` good .npy files in ``root``; returns {name: expected spectrogram}."""
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i in range(n):
        mel = _mel(shape, i)
        np.save(root / f"good{i}.npy", mel)
        expected[f"good{i}.npy"] = cumel.InverseMelScale(N_STFT, N_MELS)(mel)
    return expected


def _npy_with_header(path, shape, dtype="<f4", body=b"\0" * 64):
    """A .npy whose header says ``shape`` and whose data is only ``body``."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(body)


def _strict_json(path):
    """The report, parsed strictly: NaN, Infinity and -Infinity are not JSON."""
    def bad(token):
        raise AssertionError(f"{path}: {token} is not valid JSON")
    return json.loads(Path(path).read_text(), parse_constant=bad)


def _run(argv, capsys):
    rc = cli.main(argv)
    return rc, capsys.readouterr()


def _assert_good_written(out, expected):
    for name, S in expected.items():
        np.testing.assert_array_equal(np.load(out / name), S)


def _temporaries(folder):
    return [p.name for p in Path(folder).rglob(".*") if p.is_file()]


# -- (1) memory the header promises, and MemoryError -----------------------------------------------

@pytest.mark.parametrize("mode", [[], ["--jobs", "2"], ["--batch-frames", "100"]])
def test_headers_that_promise_too_much_fail_alone(tmp_path, capsys, mode):
    root, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "run.json"
    expected = _good_files(root)
    _npy_with_header(root / "huge.npy", (N_MELS, 10**12))          # 64 TB promised, 64 B held
    with zipfile.ZipFile(root / "vast.npz", "w") as zf, zf.open("mel.npy", "w") as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f8", "fortran_order": False, "shape": (N_MELS, 10**11)})
    _npy_with_header(root / "flat.npy", (10**12,))                  # the (1e12,)
    rc, text = _run(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS, *mode],
                    capsys)
    assert rc == 1
    _assert_good_written(out, expected)
    doc = _strict_json(report)
    rows = {Path(r["input"]).name: r for r in doc["files"]}
    assert doc["counts"]["written"] == 3 and doc["counts"]["failed"] == 3
    assert "truncated: its header promises 64,000,000,000,000 bytes of data" in rows["huge.npy"]["error"]
    assert "the file holds 64" in rows["huge.npy"]["error"]
    assert "array 'mel'" in rows["vast.npz"]["error"] and "truncated" in rows["vast.npz"]["error"]
    assert "expected an array of shape (..., n_mels, time), got shape (1000000000000,)" \
        in rows["flat.npy"]["error"]
    assert "3 written, 0 skipped (already there), 3 failed" in text.out


def test_memory_check_before_reading_names_needed_and_available(tmp_path, capsys, monkeypatch):
    # a real file too large for this machine: the available memory is made small here
    root, out = tmp_path / "in", tmp_path / "out"
    expected = _good_files(root)
    np.save(root / "big.npy", _mel((N_MELS, 3000), 9))           # 192 kB to read, 780 kB out
    read = []
    real_read = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(1) or real_read(*a, **k))
    monkeypatch.setattr(inputs, "available_memory", lambda: 500_000)
    rc, text = _run(["invert", str(root), "-o", str(out), *ARGS], capsys)
    assert rc == 1 and len(read) == 3                               # big.npy never read
    _assert_good_written(out, expected)
    assert not (out / "big.npy").exists()
    need = N_MELS * 3000 * 4 + N_STFT * 3000 * 4
    assert (f"big.npy: needs about {need:,} bytes of memory to invert (192,000 to read shape "
            f"({N_MELS}, 3000) float32, 780,000 for the spectrogram) but 500,000 bytes are "
            "available") in text.out


def test_memory_error_in_the_solve_fails_that_file_alone(tmp_path, capsys, monkeypatch):
    root, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "run.json"
    expected = _good_files(root)
    np.save(root / "zz.npy", _mel((N_MELS, 77), 5))                 # 77 frames: this one fails
    real_call = cumel.InverseMelScale.__call__

    def call(self, mel, **kw):
        if mel.shape[-1] == 77:
            raise MemoryError
        return real_call(self, mel, **kw)

    monkeypatch.setattr(cumel.InverseMelScale, "__call__", call)
    rc, text = _run(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS], capsys)
    assert rc == 1
    _assert_good_written(out, expected)
    row = next(r for r in _strict_json(report)["files"] if r["input"].endswith("zz.npy"))
    assert row["status"] == "failed" and "out of memory (MemoryError)" in row["error"]
    # one file, no folder: a clear error, no traceback
    rc, text = _run(["invert", str(root / "zz.npy"), "-o", str(tmp_path / "one.npy"), *ARGS[:2]],
                    capsys)
    assert rc == 2 and "cumel: error: out of memory" in text.err and "Traceback" not in text.err


# -- (2) an .npz member that is not an array -------------------------------------------------------

@pytest.mark.parametrize("mode", [[], ["--jobs", "2"], ["--batch-frames", "100"]])
def test_npz_member_that_is_not_an_array_fails_alone(tmp_path, capsys, mode):
    root, out = tmp_path / "in", tmp_path / "out"
    expected = _good_files(root)
    with zipfile.ZipFile(root / "raw.npz", "w") as zf:
        zf.writestr("mel", b"raw bytes, not an array")
    rc, text = _run(["invert", str(root), "-o", str(out), *ARGS, *mode], capsys)
    assert rc == 1
    _assert_good_written(out, expected)
    assert ("raw.npz: array 'mel' is not a NumPy array (the zip member 'mel' has no .npy header)"
            in text.out)
    rc, text = _run(["invert", str(root / "raw.npz"), "-o", str(tmp_path / "S.npy"), *ARGS[:2]],
                    capsys)
    assert rc == 2 and "is not a NumPy array" in text.err and "Traceback" not in text.err


# -- (3) reports with extreme and non-finite values ------------------------------------------------

def test_report_of_extreme_float64_values_is_valid_json(tmp_path, capsys):
    root, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "run.json"
    root.mkdir()
    mel = _mel((N_MELS, 20), 1, np.float64) * 1e200                 # squares overflow float64
    np.save(root / "loud.npy", mel)
    rc, _ = _run(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS], capsys)
    assert rc == 0
    row = _strict_json(report)["files"][0]
    _, info = cumel.InverseMelScale(N_STFT, N_MELS)(mel, return_info=True)
    assert row["status"] == "written" and 0 < row["mel_residual"] < 1
    assert row["mel_residual"] == pytest.approx(info.total_mel_residual, rel=1e-9)
    assert "non_finite" not in row


def test_report_writes_non_finite_numbers_as_null_and_says_so(tmp_path):
    from cumel._bulk import Result, write_report
    rows = [Result("a.npy", "o/a.npy", "written", 3, float("inf"), float("nan")),
            Result("b.npy", "o/b.npy", "written", 3, 0.5, 1e-6)]
    write_report(tmp_path / "r.json", rows, float("nan"), None, "cumel invert")
    doc = _strict_json(tmp_path / "r.json")
    a, b = doc["files"]
    assert a["seconds"] is None and a["mel_residual"] is None
    assert a["non_finite"] == {"seconds": "inf", "mel_residual": "nan"}
    assert "non_finite" not in b and b["mel_residual"] == 1e-6
    assert doc["seconds"] is None and "written as null" in doc["non_finite"]


def test_unwritable_report_is_refused_before_any_work(tmp_path, capsys):
    root, out = tmp_path / "in", tmp_path / "out"
    _good_files(root)
    (tmp_path / "file").write_text("")
    for report in (tmp_path / "file" / "run.json", tmp_path):       # under a file; a folder
        rc, text = _run(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS],
                        capsys)
        assert rc == 2 and f"--report {report}" in text.err
        assert not out.exists()                                     # nothing was solved
        rc, text = _run(["invert", str(root / "good0.npy"), "-o", str(tmp_path / "S.npy"),
                         "--report", str(report), *ARGS[:2]], capsys)
        assert rc == 2 and f"--report {report}" in text.err and not (tmp_path / "S.npy").exists()


# -- (4) a bad file in a --batch-frames batch --------------------------------------------------------

def test_batch_whose_solve_fails_is_retried_file_by_file(tmp_path, capsys):
    # slaney weights are ~0.007: a float32 mel of 3e37 gives a spectrogram beyond float32
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    inv = cumel.InverseMelScale(N_STFT, N_MELS, norm="slaney")
    expected = {}
    for i in range(4):
        mel = _mel((N_MELS, 10), i)
        np.save(root / f"m{i}.npy", mel)
        expected[f"m{i}.npy"] = inv(mel)
    np.save(root / "m2.npy", _mel((N_MELS, 10), 2) * np.float32(3e37))   # in the first batch
    del expected["m2.npy"]
    rc, text = _run(["invert", str(root), "-o", str(out), "--batch-frames", "40", "--norm",
                     "slaney", *ARGS], capsys)
    assert rc == 1
    _assert_good_written(out, expected)                             # same bits as alone
    assert "3 written, 0 skipped (already there), 1 failed" in text.out
    assert "m2.npy: solver='nnls' produced non-finite values" in text.out
    assert text.out.count("failed:") == 1
    # the same file alone: a clear error (exit 2), no traceback
    rc, text = _run(["invert", str(root / "m2.npy"), "-o", str(tmp_path / "S.npy"), "--norm",
                     "slaney", "--n-stft", str(N_STFT)], capsys)
    assert rc == 2 and "produced non-finite values" in text.err and "Traceback" not in text.err


# -- (5) output folders that overlap the input folder --------------------------------------------

def test_output_folder_equal_to_or_a_symlink_to_the_input_folder_is_refused(tmp_path, capsys):
    root = tmp_path / "in"
    _good_files(root)
    os.symlink(root, tmp_path / "link")
    for out in (root, tmp_path / "link", Path(str(root) + "/")):
        rc, text = _run(["invert", str(root), "-o", str(out), *ARGS], capsys)
        assert rc == 2 and "is the input folder" in text.err and "choose an output folder" in text.err
        assert sorted(p.name for p in root.iterdir()) == ["good0.npy", "good1.npy", "good2.npy"]


def test_output_folder_containing_or_inside_the_input_folder(tmp_path, capsys):
    # containing: data/in -> data (the old run found no inputs and said "0 failed", exit 0)
    data = tmp_path / "data"
    root = data / "in"
    expected = _good_files(root)
    rc, text = _run(["invert", str(root), "-o", str(data), *ARGS], capsys)
    assert rc == 0 and "3 written" in text.out
    _assert_good_written(data, expected)
    # inside: in -> in/specs; a re-run takes none of the outputs for an input
    rc, text = _run(["invert", str(root), "-o", str(root / "specs"), *ARGS], capsys)
    assert rc == 0 and "3 written" in text.out
    _assert_good_written(root / "specs", expected)
    rc, text = _run(["invert", str(root), "-o", str(root / "specs"), *ARGS], capsys)
    assert rc == 0 and "0 written, 3 skipped" in text.out
    # an output that would replace another input fails, alone
    nested = tmp_path / "n"
    _good_files(nested / "n")
    np.save(nested / "good0.npy", _mel((N_MELS, 5), 7))
    rc, text = _run(["invert", str(nested / "n"), str(nested / "good0.npy"), "-o", str(nested),
                     *ARGS], capsys)
    assert rc == 1 and "would replace an input" in text.out


# -- (6) names near NAME_MAX ---------------------------------------------------------------------

@pytest.mark.parametrize("length", [236, 250, 255])
def test_file_names_up_to_name_max(tmp_path, capsys, length):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    name = "é" * ((length - 4) // 2) + "a" * ((length - 4) % 2) + ".npy"   # bytes, not chars
    assert len(os.fsencode(name)) == length
    mel = _mel((N_MELS, 6), 3)
    np.save(root / name, mel)
    rc, text = _run(["invert", str(root), "-o", str(out), *ARGS], capsys)
    assert rc == 0, text.out
    np.testing.assert_array_equal(np.load(out / name), cumel.InverseMelScale(N_STFT, N_MELS)(mel))
    assert os.listdir(out) == [name]


# -- (7) special files ------------------------------------------------------------------------------

def _cli_subprocess(argv, timeout=60):
    # a regression here would hang: a subprocess with a timeout, not the test process
    return subprocess.run([sys.executable, "-m", "cumel.cli", *argv], cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_at_an_output_path_is_reported_never_opened(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    expected = _good_files(root)
    out.mkdir()
    os.mkfifo(out / "good1.npy")
    os.mkfifo(root / "pipe.npy")                                    # and one among the inputs
    del expected["good1.npy"]
    for extra in ([], ["--overwrite"]):
        result = _cli_subprocess(["invert", str(root), "-o", str(out), *ARGS, *extra])
        assert result.returncode == 1, result.stderr
        assert (f"{out / 'good1.npy'}: the output path is a FIFO, not a regular file; not opened, "
                "not replaced") in result.stdout
        assert f"{root / 'pipe.npy'}: not a regular file (a FIFO); not read" in result.stdout
        assert "2 written" in result.stdout or "0 written, 2 skipped" in result.stdout
        _assert_good_written(out, expected)
    import stat
    assert stat.S_ISFIFO(os.lstat(out / "good1.npy").st_mode)        # still the FIFO
    one = _cli_subprocess(["invert", str(root / "good0.npy"), "-o", str(out / "good1.npy"),
                           "--n-stft", str(N_STFT)])
    assert one.returncode == 2 and "is a FIFO, not a regular file; not replaced" in one.stderr
    named = _cli_subprocess(["invert", str(root / "pipe.npy"), "-o", str(tmp_path / "S.npy"),
                             "--n-stft", str(N_STFT)])
    assert named.returncode == 2 and "not a regular file (a FIFO); not read" in named.stderr


# -- (9) folders that cannot be searched --------------------------------------------------------

def test_symlink_loop_is_reported_and_symlinked_folders_are_followed(tmp_path, capsys):
    root, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "run.json"
    expected = _good_files(root)
    os.symlink(".", root / "loop")                                   # back to in/ itself
    elsewhere = tmp_path / "elsewhere"
    more = _good_files(elsewhere, 1)
    os.symlink(elsewhere, root / "linked")
    os.symlink(elsewhere, root / "again")                           # the same folder twice
    rc, text = _run(["invert", str(root), "-o", str(out), "--report", str(report), *ARGS], capsys)
    assert rc == 1
    _assert_good_written(out, expected)
    # "again" sorts first: it is searched, "linked" is the duplicate
    _assert_good_written(out / "again", more)
    assert f"{root / 'loop'}: folder not searched: a symlink loop (it is {root})" in text.out
    assert f"{root / 'linked'}: folder not searched: the same folder as {root / 'again'}" in text.out
    assert "4 written, 0 skipped (already there), 0 failed, 0 not run, 2 folder(s) not searched" \
        in text.out
    doc = _strict_json(report)
    assert doc["counts"]["not searched"] == 2
    assert {r["status"] for r in doc["files"]} == {"written", "not searched"}


CANNOT_DROP = 77


def _run_forked(argv, log, ids=None):
    """``cli.main(argv)`` in a forked child, as ``ids`` = (uid, gid) when given (privileges
    dropped after the fork: no interpreter to exec, whose path "nobody" may not reach); its
    output goes to ``log``. Returns the exit status."""
    pid = os.fork()
    if pid == 0:                                                    # the child
        rc = 99
        try:
            if ids is not None:
                try:
                    os.setgroups([])
                    os.setgid(ids[1])
                    os.setuid(ids[0])
                except OSError as exc:
                    Path(log).write_text(f"cannot drop root privileges here: {exc}")
                    rc = CANNOT_DROP
                    return
            with open(log, "w") as stream:
                sys.stdout = sys.stderr = stream
                rc = cli.main(argv)
        except BaseException:                                       # noqa: BLE001 - said in the log
            import traceback
            with open(log, "a") as f:
                traceback.print_exc(file=f)
        finally:
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_unreadable_folder_is_reported_and_the_run_exits_1():
    # root reads every folder: as root, the CLI runs as "nobody" (setuid after fork)
    import pwd
    import shutil
    import tempfile
    ids = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user 'nobody' to drop privileges to")
        ids = (entry.pw_uid, entry.pw_gid)
    base = Path(tempfile.mkdtemp(prefix="cumel-unreadable-"))       # not under root's 0700 tmp
    try:
        os.chmod(base, 0o777)
        root, out, log = base / "in", base / "out", base / "log.txt"
        expected = _good_files(root)
        (root / "private").mkdir()
        np.save(root / "private" / "hidden.npy", _mel((N_MELS, 4), 1))
        os.chmod(root / "private", 0o000)
        rc = _run_forked(["invert", str(root), "-o", str(out), *ARGS], log, ids)
        text = log.read_text()
        if rc == CANNOT_DROP:
            pytest.skip(text)
        assert rc == 1, text
        assert f"{root / 'private'}: folder not searched: Permission denied" in text
        assert "3 written, 0 skipped (already there), 0 failed, 0 not run, 1 folder(s) not searched" \
            in text
        _assert_good_written(out, expected)
        assert not (out / "private").exists()
    finally:
        os.chmod(base / "in" / "private", 0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("where", [0, (1 << 22) - 1, 1 << 22, (1 << 22) + 6])
def test_a_non_finite_value_anywhere_is_found(where):
    """The finite check reads a large input a block of 2**22 values at a time: a NaN or an Inf
    at either end of a block, or in the last partial block, is found all the same."""
    mel = np.zeros((1 << 22) + 7, np.float32)
    assert inputs._all_finite(mel)
    mel[where] = np.nan
    assert not inputs._all_finite(mel)
    mel[where] = -np.inf
    assert not inputs._all_finite(mel.reshape(1, -1))
