"""Atomic files of the folder CLI (cumel/_bulk/atomic.py): the order of the system calls that
make an output complete or absent, temporary names that fit the name limit and say whose they
are, errors that name their errno and path (a full disk), special files never replaced, and
stale temporary files removed by the next run."""
import errno
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from cumel._bulk import atomic


def test_temporary_file_is_fsynced_before_it_replaces_the_output(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        calls.append(("fsync", st.st_dev, st.st_ino, st.st_size))
        real_fsync(fd)

    def replace(src, dst):
        st = os.stat(src)
        calls.append(("replace", st.st_dev, st.st_ino, str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "S.npy"
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    atomic.save_npy(target, array)
    monkeypatch.undo()
    done = os.stat(target)
    # the file that was fsynced, with all its bytes, is the one renamed onto the output
    assert [c[0] for c in calls] == ["fsync", "replace"]
    assert calls[0][1:3] == calls[1][1:3] == (done.st_dev, done.st_ino)
    assert calls[0][3] == done.st_size and calls[1][3] == str(target)
    np.testing.assert_array_equal(np.load(target), array)


@pytest.mark.parametrize("name", ["S.npy", "a" * 251 + ".npy", "é" * 125 + "a.npy",
                                  "日本" * 41 + "a.npy"],
                         ids=["short", "255-ascii", "255-2-byte", "252-3-byte"])
def test_temporary_names_fit_the_name_limit_and_say_whose_they_are(tmp_path, name):
    assert len(os.fsencode(name)) <= 255
    for _ in range(20):
        tmp = atomic.temp_name(name, 255)
        assert len(os.fsencode(tmp)) <= 255 and tmp.startswith(".") and tmp.endswith(".cumel-tmp")
        tmp.encode("utf-8")                             # cut at a character, not inside one
        m = atomic._TEMP_NAME.fullmatch(tmp)
        assert m and int(m["pid"]) == os.getpid() and m["host"] == atomic._HOST
    atomic.save_npy(tmp_path / name, np.zeros((2, 3), np.float32))
    assert os.listdir(tmp_path) == [name]


def test_disk_full_names_the_errno_and_the_path(tmp_path, monkeypatch):
    # a disk that fills after 1000 bytes: os.write writes part, then fails with ENOSPC
    written = [0]
    real_write = os.write

    def write(fd, data):
        room = 1000 - written[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(memoryview(data)[:room]))
        written[0] += n
        return n

    monkeypatch.setattr(atomic.os, "write", write)
    target = tmp_path / "sub" / "S.npy"
    with pytest.raises(OSError) as info:
        atomic.save_npy(target, np.zeros((100, 100), np.float32))
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"[Errno {errno.ENOSPC}] cannot write {target}: ENOSPC "
                               f"({os.strerror(errno.ENOSPC)})")
    assert written[0] == 1000 and os.listdir(target.parent) == []      # no temporary file left


def _tmpfs_available():
    if sys.platform != "linux" or shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs Linux, unshare and root to mount a small tmpfs"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True, check=False)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


def test_a_really_full_disk(tmp_path):
    # a 200 kB tmpfs (private mount namespace): two outputs fit, the others fail with ENOSPC,
    # and the run goes on, with no temporary file left behind
    reason = _tmpfs_available()
    if reason:
        pytest.skip(reason)
    root, small = tmp_path / "in", tmp_path / "small"
    root.mkdir()
    small.mkdir()
    for i in range(5):
        np.save(root / f"m{i}.npy", np.random.default_rng(i).random((16, 300)).astype(np.float32))
    cli = (f"mount -t tmpfs -o size=200k tmpfs {shlex.quote(str(small))} && "
           f"{shlex.quote(sys.executable)} -m cumel.cli invert {shlex.quote(str(root))} -o "
           f"{shlex.quote(str(small / 'out'))} --n-stft 65 --no-progress; rc=$?; "
           f"ls -a {shlex.quote(str(small / 'out'))}; exit $rc")
    result = subprocess.run(["unshare", "-m", "sh", "-c", cli], cwd=str(REPO), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "2 written, 0 skipped (already there), 3 failed" in result.stdout     # 78 kB each
    assert f"cannot write {small / 'out' / 'm2.npy'}: ENOSPC (No space left on device)" \
        in result.stdout
    listing = result.stdout.splitlines()                # `ls -a` of the full folder, at the end
    assert {"m0.npy", "m1.npy"} <= set(listing)
    assert not [n for n in listing if n.endswith(".cumel-tmp")], listing


def test_output_path_that_is_a_special_file_is_never_replaced(tmp_path):
    os.mkdir(tmp_path / "folder.npy")
    with pytest.raises(OSError, match="is a folder, not a regular file; not replaced"):
        atomic.save_npy(tmp_path / "folder.npy", np.zeros((2, 2)))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.npy")
        with pytest.raises(OSError, match="is a FIFO, not a regular file; not replaced"):
            atomic.save_npy(tmp_path / "fifo.npy", np.zeros((2, 2)))
    assert set(os.listdir(tmp_path)) <= {"fifo.npy", "folder.npy"}          # nothing else made


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_rerun_removes_stale_temporaries_of_no_running_process(tmp_path, capsys):
    from cumel import cli
    root, out = tmp_path / "in", tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (root / "sub").mkdir(parents=True)
    np.save(root / "sub" / "a.npy", np.random.default_rng(0).random((16, 5)).astype(np.float32))
    host = atomic._HOST
    stale = [out / "sub" / f".a.npy.{_dead_pid()}-{host}-abc123.cumel-tmp",
             out / "sub" / f".other.npy.{_dead_pid()}-{host}-zz0099.cumel-tmp"]
    kept = [out / "sub" / f".a.npy.{os.getpid()}-{host}-abc123.cumel-tmp",     # this process
            out / "sub" / f".a.npy.1-{host}-abc123.cumel-tmp",                 # init: it runs
            out / "sub" / f".a.npy.{_dead_pid()}-{'0' * 6 if host != '0' * 6 else '1' * 6}"
                          "-abc123.cumel-tmp",                                 # another host
            out / "sub" / ".a.npy.abcd1234.cumel-tmp",                         # not our format
            out / "sub" / "notes.txt"]
    for p in stale + kept:
        p.write_bytes(b"partial")
    assert cli.main(["invert", str(root), "-o", str(out), "--n-stft", "65", "--no-progress"]) == 0
    text = capsys.readouterr()
    assert "removed 2 temporary file(s) left by an earlier run that was killed" in text.err
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert (out / "sub" / "a.npy").exists()


def test_check_writable_before_the_run(tmp_path):
    atomic.check_writable(tmp_path / "new" / "r.json", "--report")     # creates the folder only
    assert os.listdir(tmp_path / "new") == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"--report .*file/r\.json: cannot be written"):
        atomic.check_writable(tmp_path / "file" / "r.json", "--report")
    with pytest.raises(OSError, match="--report .* is a folder, not a regular file"):
        atomic.check_writable(tmp_path / "new", "--report")
