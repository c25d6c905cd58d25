"""Atomic files: every output is written under a temporary name in its own folder, flushed to
disk (fsync) and renamed over the final name (``os.replace``), so an output that exists is
complete, and an interrupted write leaves no partial file.

A temporary name is ``.<name>.<pid>-<host>-<random>.cumel-tmp``: hidden, never taken for an
output, cut to the file system's name limit (``<name>`` is shortened, never the rest), and
saying which process wrote it. A process removes its own temporary files on any error or
interrupt; what a process killed outright (SIGKILL, power loss) leaves behind is removed by the
next run (:func:`remove_stale_temporaries`), once no process of that id runs on this host.

An output in place and its result recorded are one step against stop signals: the run puts
outputs in place and records them inside :func:`committing`, and its signal handler hands the
interrupt to :func:`defer` there, which raises it once the step is over.  (Raised in between,
it left a complete output that the report called "not run".)
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import threading
import warnings
from pathlib import Path

import numpy as np

TEMP_SUFFIX = ".cumel-tmp"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMP_NAME = re.compile(r"\..*\.(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{6})-[0-9a-z]{6}"
                        + re.escape(TEMP_SUFFIX))

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_TEMPS: set[str] = set()    # temporary files of this process not yet renamed or removed
_LOCK = threading.Lock()    # _TEMPS and _abandoned: a watcher thread may abandon them
_abandoned = False


_COMMIT = {"depth": 0, "deferred": None}   # committing() blocks entered; the interrupt kept


@contextlib.contextmanager
def committing():
    """Put an output in place and record its result in here: an interrupt that a stop-signal
    handler passes to :func:`defer` while inside is raised when the outermost block exits,
    after the record (the run's handler runs in the main thread, as do these blocks)."""
    _COMMIT["depth"] += 1
    try:
        yield
    finally:
        _COMMIT["depth"] -= 1
        deferred = _COMMIT["deferred"]
        if deferred is not None and _COMMIT["depth"] == 0:
            _COMMIT["deferred"] = None
            raise deferred


def defer(exc):
    """For a signal handler: inside :func:`committing`, keep ``exc`` to be raised at its end
    and return True; outside, return False (the handler raises it now)."""
    if _COMMIT["depth"]:
        _COMMIT["deferred"] = exc
        return True
    return False


class _Writer:
    """A write-only binary file on ``fd`` whose errors name their errno.

    NumPy writes an array to a real file object with C ``fwrite`` and reports a short write as
    "40200 requested and 30688 written"; through a plain object it calls ``write`` with whole
    buffers, and ``os.write`` raises ``OSError`` with the errno (ENOSPC, EDQUOT, EIO ...).
    """

    def __init__(self, fd):
        self.fd, self.position = fd, 0

    def write(self, data):
        view = memoryview(data).cast("B")
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.position += n
        return len(data)

    def tell(self):
        return self.position

    def flush(self):
        pass


def name_max(folder):
    """The longest file name, in bytes, the file system of ``folder`` takes (255 where unknown)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def temp_name(name, limit=255):
    """A fresh temporary name for ``name`` (``.<name>.<pid>-<host>-<random>.cumel-tmp``) of at
    most ``limit`` bytes: ``<name>`` is cut where it would not fit."""
    tail = f".{os.getpid()}-{_HOST}-{''.join(secrets.choice(_ALPHABET) for _ in range(6))}{TEMP_SUFFIX}"
    stem = name
    while stem and len(os.fsencode(f".{stem}{tail}")) > limit:
        stem = stem[:-1]
    return f".{stem}{tail}"


def _create_temporary(folder, name):
    """Create a new empty temporary file for ``name`` in ``folder``: ``(fd, path)``. The mode
    is what ``open`` would give (0666 less the umask)."""
    limit = name_max(folder)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(folder, temp_name(name, limit))
        with _LOCK:                       # registered before an abandoning watcher can miss it
            if _abandoned:
                raise OSError(errno.ECANCELED, "the run was abandoned (its parent process died)")
            try:
                fd = os.open(tmp, flags, 0o666)
            except FileExistsError:
                continue
            _TEMPS.add(tmp)
            return fd, tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {name} in {folder}")


def _describe(exc, path):
    """An ``OSError`` that names its errno symbol and the output path."""
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"cannot write {path}: " + (f"{code} ({reason})" if code else reason))


def write_atomic(path, write):
    """Create ``path`` atomically: ``write(fileobj)`` into a temporary file of the same folder,
    fsync it, then ``os.replace`` it onto ``path``. On any error or interrupt the temporary
    file is removed and ``path`` is untouched.

    Raises
    ------
    OSError
        Whose message names the errno (ENOSPC, EACCES, EIO, ...) and ``path``.
    """
    path = Path(path)
    _refuse_special(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path.parent, path.name)
    except OSError as exc:
        raise _describe(exc, path) from None
    try:
        try:
            write(_Writer(fd))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            raise _describe(exc, path) from None
        raise
    finally:
        with _LOCK:
            _TEMPS.discard(tmp)


def _refuse_special(path, what="the output path"):
    """A FIFO, device, socket or folder at ``path`` (or a symlink to one) is never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        return
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EEXIST,
                  f"{what} {path} is {kind}, not a regular file; not replaced")


def check_writable(path, what):
    """Raise now, naming ``what``, if :func:`write_atomic` could not create ``path`` later:
    a path that exists and is not a regular file, a folder that cannot be created or written.
    Creates the missing folders (as the write would) and removes the probe it makes."""
    path = Path(path)
    _refuse_special(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path.parent, path.name)
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {path}: cannot be written: "
                                 f"{exc.strerror or exc}") from None
    os.close(fd)
    _remove(tmp)
    with _LOCK:
        _TEMPS.discard(tmp)


def save_npy(path, array):
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), atomically."""
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_wav(path, y, sample_rate, normalize=False):
    """:func:`cumel.griffin_lim.write_wav` to exactly ``path``, atomically (a clipping warning
    names ``path``)."""
    from ..griffin_lim import write_wav
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_atomic(path, lambda f: write_wav(f, y, sample_rate, normalize))
    for w in caught:
        warnings.warn(f"{path}: {w.message}" if issubclass(w.category, UserWarning) else w.message,
                      w.category, stacklevel=2)


def _remove(tmp):
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def remove_temporaries():
    """Remove this process's temporary files that are still there (after an interrupt)."""
    with _LOCK:
        temps = list(_TEMPS)
        _TEMPS.clear()
    for tmp in temps:
        _remove(tmp)


def abandon():
    """No temporary file may be created from now on, and this process's are removed: the
    last act of a worker whose parent died (another thread may be writing one)."""
    global _abandoned
    with _LOCK:
        _abandoned = True
    remove_temporaries()


def _process_exists(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                         # exists, owned by someone else
    return True


def remove_stale_temporaries(folders):
    """Remove the temporary files in ``folders`` left by processes of this host that no
    longer run (killed outright while writing). Returns the paths removed."""
    removed = []
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it if e.name.endswith(TEMP_SUFFIX)]
        except OSError:
            continue
        for name in names:
            m = _TEMP_NAME.fullmatch(name)
            if m is None or m["host"] != _HOST or _process_exists(int(m["pid"])):
                continue
            path = os.path.join(folder, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                pass
    return removed
