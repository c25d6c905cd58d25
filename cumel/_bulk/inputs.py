"""Collecting the inputs of a run (files named and found in folders) and reading one mel."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .report import Result

SUFFIXES = (".npy", ".npz")


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


def collect_inputs(paths, outdir):
    """Jobs for every ``.npy``/``.npz`` file named or found (recursively, sorted) in ``paths``.

    Parameters
    ----------
    paths : list of str or Path
        Files and folders. A file named directly goes to ``outdir/<name>.npy``; a file found in
        a folder to the same path relative to that folder under ``outdir`` (files already under
        ``outdir`` are not inputs).
    outdir : str or Path

    Returns
    -------
    jobs : list of Job
    problems : list of Result
        Status "failed", with the reason: missing paths, wrong suffixes, two inputs with one
        output, an output that would replace its input.
    """
    outdir = Path(outdir)
    out_resolved = outdir.resolve()
    jobs, problems, owners = [], [], {}

    def add(src, rel):
        dst = outdir / Path(rel).with_suffix(".npy")
        if dst.resolve() == src.resolve():
            problems.append(Result(str(src), str(dst), "failed",
                                   error=f"{src}: the output would replace the input; choose another -o"))
        elif str(dst) in owners:
            problems.append(Result(str(src), str(dst), "failed",
                                   error=f"{src}: output {dst} is also the output of {owners[str(dst)]}"))
        else:
            owners[str(dst)] = str(src)
            jobs.append(Job(str(src), str(dst)))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                           and out_resolved not in p.resolve().parents)
            for p in found:
                add(p, p.relative_to(path))
        elif path.is_file() and path.suffix.lower() in SUFFIXES:
            add(path, path.name)
        elif path.exists():
            problems.append(Result(str(path), None, "failed",
                                   error=f"{path}: not a .npy or .npz file"))
        else:
            problems.append(Result(str(path), None, "failed", error=f"{path}: no such file or folder"))
    return jobs, problems


def load_mel(path, key=None, n_mels=None):
    """The mel array of a ``.npy`` or ``.npz`` file, checked for shape (..., n_mels, time).

    Parameters
    ----------
    path : str or Path
    key : str or None
        Array of a ``.npz`` to read; None: the one named "mel", else the only one.
    n_mels : int or None
        Required size of axis -2; None accepts any.

    Returns
    -------
    ndarray
        As stored (the transform converts the dtype).

    Raises
    ------
    FileProblem
        Naming the path and what was expected: unreadable or not a NumPy file, no such key (the
        keys are listed), fewer than 2 dims or the wrong n_mels, not real numbers, NaN or Inf.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
            raise FileProblem(f"{path}: not a NumPy .npy or .npz file (no NumPy or zip header)")
        data = np.load(path, allow_pickle=False)
    except FileProblem:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileProblem(f"{path}: cannot read it as {path.suffix.lower() or 'a NumPy file'}: "
                          f"{exc}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = list(data.files)
            if key is not None:
                if key not in names:
                    raise FileProblem(f"{path}: no array named {key!r} (--key); it has {names}")
                name = key
            elif "mel" in names:
                name = "mel"
            elif len(names) == 1:
                name = names[0]
            else:
                raise FileProblem(f"{path}: holds arrays {names} and none is named 'mel'; pick "
                                  "one with --key NAME")
            try:
                mel = data[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise FileProblem(f"{path}: cannot read array {name!r}: {exc}") from None
    else:
        mel = data
    want = "n_mels" if n_mels is None else f"n_mels={n_mels}"
    if mel.ndim < 2 or (n_mels is not None and mel.shape[-2] != n_mels):
        raise FileProblem(f"{path}: expected an array of shape (..., {want}, time), got shape "
                          f"{tuple(mel.shape)}")
    if mel.dtype.kind not in "fiu" or mel.dtype == np.bool_:
        raise FileProblem(f"{path}: expected real numbers, got dtype {mel.dtype}")
    if mel.dtype.kind == "f" and not np.isfinite(mel).all():
        raise FileProblem(f"{path}: contains NaN or Inf values")
    return mel


def frames_of(shape):
    """Frames in an array of shape (..., n, time): every frame of every channel."""
    return int(np.prod(shape[:-2], dtype=np.int64)) * int(shape[-1])
