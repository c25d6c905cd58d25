"""Atomic files: every output is written under a temporary name in its own folder, flushed to
disk (fsync) and renamed over the final name (``os.replace``), so an output that exists is
complete, and an interrupted write leaves no partial or temporary file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

TEMP_SUFFIX = ".cumel-tmp"

_TEMPS = set()       # temporary files of this process not yet renamed or removed


def write_atomic(path, write):
    """Create ``path`` atomically: ``write(fileobj)`` into a temporary file of the same folder,
    flush and fsync it, then ``os.replace`` it onto ``path``. On any error or interrupt the
    temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    _TEMPS.add(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)                 # mkstemp's 0600 -> what open() would give
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        _TEMPS.discard(tmp)


def save_npy(path, array):
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), atomically."""
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_wav(path, y, sample_rate):
    """:func:`cumel.griffin_lim.write_wav` to exactly ``path``, atomically."""
    from ..griffin_lim import write_wav
    write_atomic(path, lambda f: write_wav(f, y, sample_rate))


def remove_temporaries():
    """Remove this process's temporary files that are still there (after an interrupt)."""
    for tmp in list(_TEMPS):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        _TEMPS.discard(tmp)
