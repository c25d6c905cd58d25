"""``cumel invert`` over many files; ``cumel.cli`` only wires it to the command line.

The parts, one module each:

- :mod:`.inputs`: collecting the input files (named, and found in folders) and reading one mel.
- :mod:`.atomic`: atomic files. Every output is written under a temporary name in its own
  folder, flushed to disk (fsync) and renamed over the final name (``os.replace``), so an output
  that exists is complete: a re-run skips it (unless ``overwrite``), and an interrupted run
  leaves no partial or temporary file.
- :mod:`.solve`: solving one file, or the frames of many files together (GPU batches).
- :mod:`.workers`: worker processes and the signals that stop a run.
- :mod:`.progress`: the progress bar (or plain lines) on stderr.
- :mod:`.report`: the summary line and the ``--report`` JSON.

:func:`run` puts them together: the whole run, its summary and its exit status.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from .atomic import TEMP_SUFFIX, remove_temporaries, save_npy, save_wav, write_atomic
from .inputs import (
    SUFFIXES,
    FileProblem,
    Job,
    collect_inputs,
    frames_of,
    is_single_file,
    load_mel,
)
from .progress import Progress
from .report import Result, summary_line, write_report
from .solve import (
    PER_FRAME_SOLVERS,
    Settings,
    audio_of,
    mel_residual,
    save_outputs,
    solve_batch,
    solve_file,
    transform_for,
)
from .workers import run_parallel

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PER_FRAME_SOLVERS",
    "SUFFIXES",
    "TEMP_SUFFIX",
    "FileProblem",
    "Job",
    "Progress",
    "Result",
    "Settings",
    "audio_of",
    "collect_inputs",
    "frames_of",
    "is_single_file",
    "load_mel",
    "mel_residual",
    "remove_temporaries",
    "run",
    "run_parallel",
    "save_npy",
    "save_outputs",
    "save_wav",
    "solve_batch",
    "solve_file",
    "summary_line",
    "transform_for",
    "write_atomic",
    "write_report",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
