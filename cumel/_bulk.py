"""``cumel invert`` over many files: collecting inputs, reading one mel, solving, writing
atomically, worker processes, GPU batches, progress and the summary. One function per job;
``cumel.cli`` only wires them to the command line.

Every output is written under a temporary name in its own folder, flushed to disk (fsync) and
renamed over the final name (``os.replace``), so an output that exists is complete: a re-run
skips it (unless ``overwrite``), and an interrupted run leaves no partial or temporary file.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import warnings
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .transforms import InverseMelScale

SUFFIXES = (".npy", ".npz")
TEMP_SUFFIX = ".cumel-tmp"
PER_FRAME_SOLVERS = ("nnls", "lstsq")    # frames independent: files can share one solve
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class FileProblem(ValueError):
    """A bad input file: the message starts with its path and says what is wrong."""


@dataclass
class Job:
    """One input file and where its spectrogram goes."""
    input: str
    output: str


@dataclass
class Result:
    """What happened to one file (a row of ``--report``)."""
    input: str
    output: str | None
    status: str                      # "written", "skipped", "failed" or "not run"
    frames: int | None = None
    seconds: float | None = None
    mel_residual: float | None = None
    error: str | None = None


@dataclass
class Settings:
    """The transform's arguments (without n_mels) and how to read inputs; small and picklable,
    so each worker process builds its transforms from it once."""
    n_stft: int
    n_mels: int | None = None
    key: str | None = None
    transform: dict = field(default_factory=dict)
    audio: dict | None = None        # --wav over folders: GriffinLim keywords (hop_length, seed)

    def cache_key(self, n_mels):
        return (self.n_stft, n_mels, repr(sorted(self.transform.items())))

    def build(self, n_mels):
        return InverseMelScale(self.n_stft, n_mels, **self.transform)


# -- collecting inputs ---------------------------------------------------------------------------

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


# -- reading one mel -----------------------------------------------------------------------------

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


# -- writing atomically --------------------------------------------------------------------------

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


def audio_of(S, sample_rate, hop_length=None, seed=None, device=None):
    """Fast Griffin-Lim (32 iterations) of a power spectrogram ``S`` (..., n_stft, T), with
    ``n_fft = 2 (n_stft - 1)``: the waveform (..., samples) and the :class:`GriffinLim` used."""
    from .griffin_lim import GriffinLim
    gl = GriffinLim(2 * (S.shape[-2] - 1), hop_length=hop_length, seed=seed, device=device)
    return gl(S), gl


def save_wav(path, y, sample_rate):
    """:func:`cumel.griffin_lim.write_wav` to exactly ``path``, atomically."""
    from .griffin_lim import write_wav
    write_atomic(path, lambda f: write_wav(f, y, sample_rate))


def save_outputs(output, S, settings):
    """The spectrogram to ``output``; with ``settings.audio`` also its sound, beside it (.wav)."""
    if settings.audio is not None:
        y, _ = audio_of(S, settings.transform.get("sample_rate", 16000),
                        device=settings.transform.get("device"), **settings.audio)
        save_wav(Path(output).with_suffix(".wav"), y, settings.transform.get("sample_rate", 16000))
    save_npy(output, S)              # last: an existing .npy means every output is complete


def remove_temporaries():
    """Remove this process's temporary files that are still there (after an interrupt)."""
    for tmp in list(_TEMPS):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        _TEMPS.discard(tmp)


# -- solving -------------------------------------------------------------------------------------

_TRANSFORMS = {}     # per process: (settings, n_mels) -> InverseMelScale, built once


def transform_for(settings, n_mels):
    """The process's transform for ``n_mels`` (built on first use, then reused)."""
    key = settings.cache_key(n_mels)
    if key not in _TRANSFORMS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # empty filters: said once by the CLI
            _TRANSFORMS[key] = settings.build(n_mels)
    return _TRANSFORMS[key]


def mel_residual(transform, mel, S):
    """``||A S - M|| / ||M||`` in float64 (0 for an all-zero mel); ``A S`` by the sparse
    filterbank (two weights per bin), no BLAS."""
    S = np.asarray(S, np.float64)
    M = np.asarray(mel, np.float64).reshape(S.shape[:-2] + mel.shape[-2:])  # mindspore: (1, ...)
    M, S = np.moveaxis(M, -2, 0), np.moveaxis(S, -2, 0)
    R = transform.plan.sparse.matvec(S, np) - M
    m = float(np.sqrt(np.sum(M * M)))
    return float(np.sqrt(np.sum(R * R)) / m) if m > 0 else 0.0


def solve_file(job, settings):
    """Read, invert and write one file; returns its :class:`Result` (status "written" or
    "failed"). Interrupts propagate; nothing partial is left behind."""
    t0 = time.perf_counter()
    try:
        mel = load_mel(job.input, settings.key, settings.n_mels)
        transform = transform_for(settings, int(mel.shape[-2]))
        S = transform(mel)
        residual = mel_residual(transform, mel, S)
        save_outputs(job.output, S, settings)
    except (FileProblem, ValueError, TypeError, FloatingPointError, RuntimeError, OSError) as exc:
        message = str(exc) if str(exc).startswith(job.input) else f"{job.input}: {exc}"
        return Result(job.input, job.output, "failed", error=message)
    return Result(job.input, job.output, "written", frames_of(mel.shape),
                  time.perf_counter() - t0, residual)


def solve_batch(jobs, settings, frame_budget):
    """Frames of many files in one solve (per-frame solvers, the GPU's way): yields a
    :class:`Result` per job. Files are read in order and concatenated along time (as columns of
    one (n_mels, frames) array) until ``frame_budget`` frames; each file's part is split back
    and written. Files whose n_mels or dtype differ start a new batch."""
    pending = []                      # (job, mel as (n_mels, frames) columns, shape)

    def flush():
        if not pending:
            return []
        mel0 = pending[0][1]
        transform = transform_for(settings, mel0.shape[0])
        t0 = time.perf_counter()
        try:
            S = transform(np.concatenate([cols for _, cols, _ in pending], axis=1))
        except (ValueError, TypeError, FloatingPointError, RuntimeError) as exc:
            out = [Result(j.input, j.output, "failed", error=f"{j.input}: {exc}") for j, _, _ in pending]
            pending.clear()
            return out
        per_frame = (time.perf_counter() - t0) / max(S.shape[-1], 1)
        out, start = [], 0
        for job, cols, shape in pending:
            n = cols.shape[1]
            part = S[:, start:start + n]
            start += n
            lead, T = shape[:-2], shape[-1]
            spec = np.ascontiguousarray(part.reshape((S.shape[0],) + lead + (T,)).transpose(
                tuple(range(1, len(lead) + 1)) + (0, len(lead) + 1)))
            try:
                save_outputs(job.output, spec, settings)
            except OSError as exc:
                out.append(Result(job.input, job.output, "failed", error=f"{job.input}: {exc}"))
                continue
            out.append(Result(job.input, job.output, "written", n, per_frame * n,
                              mel_residual(transform, cols, part)))
        pending.clear()
        return out

    for job in jobs:
        try:
            mel = load_mel(job.input, settings.key, settings.n_mels)
        except FileProblem as exc:
            yield Result(job.input, job.output, "failed", error=str(exc))
            continue
        dtype = np.float64 if mel.dtype == np.float64 else np.float32
        n_mels = mel.shape[-2]
        cols = np.moveaxis(mel.astype(dtype, copy=False), -2, 0).reshape(n_mels, -1)
        if pending and (pending[0][1].shape[0] != n_mels or pending[0][1].dtype != cols.dtype):
            yield from flush()
        pending.append((job, cols, mel.shape))
        if sum(c.shape[1] for _, c, _ in pending) >= frame_budget:
            yield from flush()
    yield from flush()


def _ignore_sigint():
    # workers finish the file in hand; the parent decides what stops (Ctrl-C reaches them too)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _mp_context():
    """"forkserver" where there is one: workers fork from a clean single-threaded server that
    has imported cumel once (no fork of a process holding threads, such as a progress bar's or
    a Dask client's; fast start); the platform's default elsewhere."""
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cumel._bulk"])
    return ctx


def run_parallel(jobs, settings, n_workers, record):
    """Solve each job in one of ``n_workers`` processes (each builds its transforms once),
    calling ``record(result)`` as files finish. On an interrupt, pending files are cancelled, the
    ones in hand finish (each output is complete or absent) and are recorded, and the interrupt
    is re-raised."""
    executor = ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context(),
                                   initializer=_ignore_sigint)
    futures, reported = [], set()
    try:
        futures = [executor.submit(solve_file, job, settings) for job in jobs]
        todo = set(futures)
        while todo:
            done, todo = wait(todo, return_when=FIRST_COMPLETED)
            for fut in done:
                reported.add(fut)
                record(fut.result())
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # a second Ctrl-C must not cut the clean-up
        executor.shutdown(wait=True, cancel_futures=True)
        for fut in futures:
            if fut not in reported and fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut.result())
        raise
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


# -- progress and summary ------------------------------------------------------------------------

class Progress:
    """Files done, files/s and frames/s on stderr: a tqdm bar, or one plain line per file when
    tqdm is not installed (or ``plain=True``). ``enabled=False`` shows nothing."""

    def __init__(self, total, enabled=True, stream=None, plain=False):
        self.total, self.enabled = total, enabled
        self.stream = sys.stderr if stream is None else stream
        self.done = self.frames = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and not plain:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="file", file=self.stream, dynamic_ncols=True,
                                desc="cumel invert", mininterval=0.2)

    def frames_per_second(self):
        return self.frames / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, result):
        self.done += 1
        if result.status == "written":
            self.frames += result.frames or 0
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.frames_per_second():,.0f} frames/s", refresh=False)
            self.bar.update(1)
        elif self.enabled:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            print(f"cumel: [{self.done}/{self.total}] {result.status} {result.input} "
                  f"({self.done / elapsed:.1f} files/s, {self.frames_per_second():,.0f} frames/s)",
                  file=self.stream, flush=True)

    def message(self, text):
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def summary_line(results, seconds, interrupted):
    """One line: counts by status, frames and frames/s."""
    count = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed", "not run")}
    frames = sum(r.frames or 0 for r in results if r.status == "written")
    head = "cumel: interrupted: " if interrupted else "cumel: "
    return (f"{head}{count['written']} written, {count['skipped']} skipped (already there), "
            f"{count['failed']} failed, {count['not run']} not run; {frames:,} frames in "
            f"{seconds:.2f} s ({frames / max(seconds, 1e-9):,.0f} frames/s)")


def write_report(path, results, seconds, interrupted, command):
    """``--report``: JSON with the command, totals and one row per file (written atomically)."""
    doc = {"command": command, "interrupted": interrupted, "seconds": seconds,
           "counts": {s: sum(r.status == s for r in results)
                      for s in ("written", "skipped", "failed", "not run")},
           "files": [asdict(r) for r in sorted(results, key=lambda r: r.input)]}
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


# -- the whole run -------------------------------------------------------------------------------

def run(jobs, problems, settings, *, overwrite=False, n_workers=1, batch_frames=None,
        progress=True, report=None, command=None, out=None):
    """Invert every job, with progress, a summary line and an optional report.

    Parameters
    ----------
    jobs : list of Job
    problems : list of Result
        Inputs already known to be bad (from :func:`collect_inputs`): reported, counted.
    settings : Settings
    overwrite : bool
        Redo outputs that exist (otherwise they are skipped: an existing output is complete).
    n_workers : int
        Worker processes, each solving whole files.
    batch_frames : int or None
        Solve the frames of many files together, up to this many per solve, in this process
        (the GPU's way; per-frame solvers only). Takes precedence over ``n_workers``.
    progress : bool
        Progress bar (or plain lines) on stderr.
    report : path or None
        Where to write the JSON report (:func:`write_report`).
    command : str or None
        Recorded in the report.
    out : file or None
        Where the summary goes (stdout).

    Returns
    -------
    int
        Exit status: 0, 1 when a file failed, 130 when interrupted (Ctrl-C).
    """
    out = sys.stdout if out is None else out
    t0 = time.perf_counter()
    results = list(problems)
    bar = Progress(len(jobs) + len(problems), enabled=progress)
    for r in problems:
        bar.message(f"cumel: error: {r.error}")
        bar.update(r)
    todo = []
    for job in jobs:
        if not overwrite and os.path.exists(job.output):
            try:
                frames = frames_of(np.load(job.output, mmap_mode="r").shape)
            except Exception:
                frames = None
            r = Result(job.input, job.output, "skipped", frames)
            results.append(r)
            bar.update(r)
        else:
            todo.append(job)
    finished = set()
    interrupted = False

    def record(r):
        results.append(r)
        finished.add(r.input)
        if r.status == "failed":
            bar.message(f"cumel: error: {r.error}")
        bar.update(r)

    try:
        if batch_frames is not None:
            for r in solve_batch(todo, settings, batch_frames):
                record(r)
        elif n_workers > 1 and len(todo) > 1:
            run_parallel(todo, settings, min(n_workers, len(todo)), record)
        else:
            for job in todo:
                record(solve_file(job, settings))
    except KeyboardInterrupt:
        interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # a second Ctrl-C must not cut the clean-up
        remove_temporaries()
    finally:
        bar.close()
    try:
        results += [Result(j.input, j.output, "not run") for j in todo if j.input not in finished]
        seconds = time.perf_counter() - t0
        print(summary_line(results, seconds, interrupted), file=out, flush=True)
        for r in sorted(results, key=lambda r: r.input):
            if r.status == "failed":
                print(f"  failed: {r.error}", file=out)
        if report is not None:
            write_report(report, results, seconds, interrupted, command)
    finally:
        if interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK
