"""Collecting the inputs of a run (files named, and found in folders) and reading one mel.

Nothing here opens anything but a regular file, and no array is read before its header has
been checked: shape and dtype, its size against the bytes the file holds, and the memory the
inversion will need against the memory available. Folders that cannot be searched (unreadable,
a symlink loop) are reported, never skipped in silence.
"""
from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .report import Result

SUFFIXES = (".npy", ".npz")
MAX_HEADER_BYTES = 10000          # NumPy's own limit on a .npy header it parses safely


class FileProblem(ValueError):
    """A bad input file: the message starts with its path and says what is wrong."""


@dataclass
class Job:
    """One input file and where its spectrogram goes."""
    input: str
    output: str


def is_single_file(paths, output):
    """One input file and ``-o`` not a folder: ``output`` is the exact output file name."""
    return (len(paths) == 1 and not Path(paths[0]).is_dir() and not Path(output).is_dir()
            and not str(output).endswith(("/", os.sep)))


# -- collecting inputs ---------------------------------------------------------------------------

def collect_inputs(paths, outdir):
    """Jobs for every ``.npy``/``.npz`` file named or found (recursively, sorted) in ``paths``.

    Parameters
    ----------
    paths : list of str or Path
        Files and folders. A file named directly goes to ``outdir/<name>.npy``; a file found in
        a folder to the same path relative to that folder under ``outdir``. Symlinked folders
        are followed; a folder is searched once. ``outdir`` itself is never searched: outputs
        are never inputs.
    outdir : str or Path

    Returns
    -------
    jobs : list of Job
    problems : list of Result
        Status "failed", with the reason: missing paths, wrong suffixes, files that are not
        regular files, two inputs with one output, an output that would replace an input.
        Status "not searched": folders that could not be searched (unreadable, a symlink loop,
        a folder already searched under another path), with the reason.

    Raises
    ------
    ValueError
        ``outdir`` is an input folder (or a symlink to one), or exists and is not a folder.
    """
    outdir = Path(outdir)
    out_real = os.path.realpath(outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise ValueError(f"-o {outdir} exists and is not a folder (many inputs need an output "
                         "folder)")
    for raw in paths:
        if os.path.isdir(raw) and os.path.realpath(raw) == out_real:
            same = "" if os.path.abspath(raw) == os.path.abspath(outdir) else f" ({out_real})"
            raise ValueError(f"-o {outdir} is the input folder {raw}{same}: the outputs would be "
                             "written among the inputs; choose an output folder outside it")
    found, problems = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += _search(path, out_real, problems)
        elif path.suffix.lower() in SUFFIXES and _is_regular(path):
            found.append((path, Path(path.name)))
        elif path.exists():
            what = ("not a .npy or .npz file" if path.suffix.lower() not in SUFFIXES
                    else f"not a regular file ({_kind(path)}); not read")
            problems.append(Result(str(path), None, "failed", error=f"{path}: {what}"))
        elif path.is_symlink():
            problems.append(Result(str(path), None, "failed",
                                   error=f"{path}: a symlink to nothing ({os.readlink(path)})"))
        else:
            problems.append(Result(str(path), None, "failed", error=f"{path}: no such file or folder"))
    inputs = {os.path.realpath(src) for src, _ in found}
    jobs, owners = [], {}
    for src, rel in found:
        dst = outdir / rel.with_suffix(".npy")
        if os.path.realpath(dst) in inputs:
            problems.append(Result(str(src), str(dst), "failed",
                                   error=f"{src}: its output {dst} would replace an input; "
                                         "choose another -o"))
        elif str(dst) in owners:
            problems.append(Result(str(src), str(dst), "failed",
                                   error=f"{src}: output {dst} is also the output of {owners[str(dst)]}"))
        else:
            owners[str(dst)] = str(src)
            jobs.append(Job(str(src), str(dst)))
    return jobs, problems


def _search(root, out_real, problems):
    """``(path, path relative to root)`` of the input files under ``root``, in sorted order.

    Depth first over sorted names with an explicit stack (no recursion limit). A folder is
    searched once, identified by (device, inode): a path back to a folder being searched is a
    symlink loop, another path to a folder already searched is a duplicate; both are reported
    as "not searched". The output folder is left out. Entries that vanish meanwhile are ignored.
    """
    found, searched = [], {}
    try:
        st = os.stat(root)
        searched[(st.st_dev, st.st_ino)] = root
    except OSError:
        pass                                 # reported below, when it is listed
    stack = [(root, Path(), {})]             # folder, its relative path, its ancestors' ids
    while stack:
        folder, rel, ancestors = stack.pop()
        try:
            st = os.stat(folder)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(Result(str(folder), None, "not searched",
                                   error=f"{folder}: folder not searched: {exc.strerror or exc}"))
            continue
        here = dict(ancestors)
        here[(st.st_dev, st.st_ino)] = folder
        subfolders = []
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()
                if is_dir:
                    sub = os.stat(path)
                elif _is_input_name(entry.name):
                    regular = entry.is_file()
            except OSError:
                continue                    # gone since it was listed, or a dangling symlink
            if is_dir:
                key = (sub.st_dev, sub.st_ino)
                if os.path.realpath(path) == out_real:
                    continue                # the outputs of this or an earlier run
                if key in here:
                    problems.append(Result(str(path), None, "not searched",
                                           error=f"{path}: folder not searched: a symlink loop "
                                                 f"(it is {here[key]})"))
                elif key in searched:
                    problems.append(Result(str(path), None, "not searched",
                                           error=f"{path}: folder not searched: the same folder "
                                                 f"as {searched[key]}, searched there"))
                else:
                    searched[key] = path
                    subfolders.append((path, rel / entry.name, here))
            elif _is_input_name(entry.name):
                if regular:
                    found.append((path, rel / entry.name))
                else:
                    problems.append(Result(str(path), None, "failed",
                                           error=f"{path}: not a regular file ({_kind(path)}); "
                                                 "not read"))
        stack += reversed(subfolders)        # popped in sorted order
    return found


def _is_input_name(name):
    return Path(name).suffix.lower() in SUFFIXES


def _is_regular(path):
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _kind(path=None, mode=None):
    """What a path that is not a regular file is, in words."""
    if mode is None:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return exc.strerror or str(exc)
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


# -- opening and checking before reading ---------------------------------------------------------

def open_regular(path, what="input"):
    """A binary file object for ``path`` that is certainly a regular file.

    Opened without blocking (a FIFO or device would otherwise hang ``open``) and checked on the
    open descriptor (no race between the check and the read).

    Raises
    ------
    FileProblem
        Not a regular file, or it cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileProblem(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileProblem(f"{path}: not a regular file ({_kind(mode=mode)}); not read")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_npy_header(f, where):
    """``(shape, dtype, header_bytes)`` of the .npy stream ``f`` at its start.

    Raises
    ------
    FileProblem
        No .npy magic, an unknown version, or a header NumPy would not parse.
    """
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_HEADER_BYTES)
        else:
            raise ValueError(f"unknown .npy format version {version}")
        return tuple(int(n) for n in shape), dtype, f.tell()
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise FileProblem(f"{where}: not a readable .npy header: {exc}") from None


def available_memory():
    """Bytes the system says this process can still allocate, or None where it does not say.

    Linux: ``MemAvailable`` of /proc/meminfo, lowered to what the process's cgroup (v2)
    ``memory.max`` leaves. Elsewhere: free physical pages (``sysconf``), where known.
    """
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/proc/self/cgroup") as f:
            rel = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit != "max":
            used = int((base / "memory.current").read_text())
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError, StopIteration, IndexError):
        pass
    return avail


def _check_header(where, shape, dtype, data_bytes, n_mels, n_stft):
    """Everything that can be said of an array from its header, before it is read."""
    want = "n_mels" if n_mels is None else f"n_mels={n_mels}"
    if dtype.hasobject:
        raise FileProblem(f"{where}: holds Python objects (dtype {dtype}), which would need "
                          "unpickling; not read")
    if len(shape) < 2 or (n_mels is not None and shape[-2] != n_mels):
        raise FileProblem(f"{where}: expected an array of shape (..., {want}, time), got shape "
                          f"{shape}")
    if dtype.kind not in "fiu" or dtype == np.bool_:
        raise FileProblem(f"{where}: expected real numbers, got dtype {dtype}")
    n = 1
    for size in shape:
        n *= size
    need_read = n * dtype.itemsize
    if data_bytes is not None and need_read > data_bytes:
        raise FileProblem(f"{where}: truncated: its header promises {need_read:,} bytes of data "
                          f"(shape {shape}, dtype {dtype}), the file holds {data_bytes:,}")
    # what an inversion holds at once: the array read, its float32 copy where it is not float,
    # and the spectrogram (float64 for float64 input, float32 otherwise)
    out_size = 8 if dtype == np.float64 else 4
    need_copy = 0 if dtype in (np.float32, np.float64) else n * 4
    need_out = 0 if n_stft is None else n // max(shape[-2], 1) * n_stft * out_size
    need = need_read + need_copy + need_out
    avail = available_memory()
    if avail is not None and need > avail:
        raise FileProblem(f"{where}: needs about {need:,} bytes of memory to invert ({need_read:,} "
                          f"to read shape {shape} {dtype}"
                          + (f", {need_copy:,} for its float32 copy" if need_copy else "")
                          + (f", {need_out:,} for the spectrogram" if need_out else "")
                          + f") but {avail:,} bytes are available")


# -- reading one mel -----------------------------------------------------------------------------

def load_mel(path, key=None, n_mels=None, n_stft=None):
    """The mel array of a ``.npy`` or ``.npz`` file, checked for shape (..., n_mels, time).

    The header is read and checked first (:func:`_check_header`); only then is the array read.

    Parameters
    ----------
    path : str or Path
    key : str or None
        Array of a ``.npz`` to read; None: the one named "mel", else the only one.
    n_mels : int or None
        Required size of axis -2; None accepts any.
    n_stft : int or None
        Linear bins of the inversion to come: counted in the memory it will need.

    Returns
    -------
    ndarray
        As stored (the transform converts the dtype).

    Raises
    ------
    FileProblem
        Naming the path and what was expected: not a regular file, unreadable or not a NumPy
        file, no such key (the keys are listed), a member that is not a .npy array, fewer than
        2 dims or the wrong n_mels, not real numbers, truncated, more memory than is available
        (the bytes it needs and the bytes available), NaN or Inf.
    """
    path = Path(path)
    with open_regular(path) as f:
        magic = f.read(6)
        f.seek(0)
        try:
            if magic == b"\x93NUMPY":
                mel = _read_npy(f, path, n_mels, n_stft)
            elif magic[:4] == b"PK\x03\x04":
                mel = _read_npz(f, path, key, n_mels, n_stft)
            else:
                raise FileProblem(f"{path}: not a NumPy .npy or .npz file (no NumPy or zip header)")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            if isinstance(exc, FileProblem):
                raise
            raise FileProblem(f"{path}: cannot read it as {path.suffix.lower() or 'a NumPy file'}: "
                              f"{exc}") from None
    if not isinstance(mel, np.ndarray):
        raise FileProblem(f"{path}: not a NumPy array")
    if mel.dtype.kind == "f" and not _all_finite(mel):
        raise FileProblem(f"{path}: contains NaN or Inf values")
    return mel


def _read_npy(f, path, n_mels, n_stft):
    shape, dtype, offset = read_npy_header(f, path)
    size = os.fstat(f.fileno()).st_size
    _check_header(path, shape, dtype, size - offset, n_mels, n_stft)
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _read_npz(f, path, key, n_mels, n_stft):
    with zipfile.ZipFile(f) as zf:
        members = {}
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            members.setdefault(name, info)
        names = list(members)
        if key is not None:
            if key not in members:
                raise FileProblem(f"{path}: no array named {key!r} (--key); it has {names}")
            name = key
        elif "mel" in members:
            name = "mel"
        elif len(names) == 1:
            name = names[0]
        else:
            raise FileProblem(f"{path}: holds arrays {names} and none is named 'mel'; pick "
                              "one with --key NAME")
        info = members[name]
        where = f"{path}: array {name!r}"
        with zf.open(info) as member:
            if member.read(6) != b"\x93NUMPY":
                raise FileProblem(f"{where} is not a NumPy array (the zip member {info.filename!r} "
                                  "has no .npy header)")
        with zf.open(info) as member:
            shape, dtype, offset = read_npy_header(member, where)
        _check_header(where, shape, dtype, info.file_size - offset, n_mels, n_stft)
        with zf.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)


def _all_finite(mel):
    """``np.isfinite(mel).all()`` a few million values at a time (no input-sized mask)."""
    flat = mel.reshape(-1)
    step = 1 << 22
    return all(bool(np.isfinite(flat[i:i + step]).all()) for i in range(0, flat.size, step))


def frames_of(shape):
    """Frames in an array of shape (..., n, time): every frame of every channel."""
    return int(np.prod(shape[:-2], dtype=np.int64)) * int(shape[-1])


def output_frames(path):
    """Frames of an existing output (from its .npy header alone), or None where unreadable.

    Raises
    ------
    FileProblem
        ``path`` exists and is not a regular file (a FIFO, a device, a folder): it is never
        opened for reading, nor replaced.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        raise FileProblem(f"{path}: the output path is {_kind(mode=mode)}, not a regular file; "
                          "not opened, not replaced")
    try:
        with open_regular(path, "output") as f:
            shape, _, _ = read_npy_header(f, path)
    except FileProblem:
        return None
    return frames_of(shape) if len(shape) >= 2 else None
