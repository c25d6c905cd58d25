"""Atomic files of the folder CLI (cumel/_bulk/atomic.py): the order of the system calls that
make an output complete or absent."""
import os

import numpy as np

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
