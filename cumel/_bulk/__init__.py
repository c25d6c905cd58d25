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
import sys
import time

from .atomic import (
    TEMP_SUFFIX,
    check_writable,
    remove_stale_temporaries,
    remove_temporaries,
    save_npy,
    save_wav,
    write_atomic,
)
from .inputs import (
    SUFFIXES,
    FileProblem,
    Job,
    collect_inputs,
    frames_of,
    is_single_file,
    load_mel,
    output_frames,
)
from .progress import Progress
from .report import STATUSES, Result, summary_line, write_report
from .solve import (
    COMPRESSED,
    PER_FRAME_SOLVERS,
    Settings,
    admm_sound,
    audio_of,
    failure,
    mel_residual,
    save_outputs,
    solve_batch,
    solve_file,
    solve_quietly,
    sound,
    transform_for,
)
from .workers import Interrupted, exit_status, run_parallel, signal_of, stop_signals

__all__ = [
    "COMPRESSED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PER_FRAME_SOLVERS",
    "STATUSES",
    "SUFFIXES",
    "TEMP_SUFFIX",
    "FileProblem",
    "Interrupted",
    "Job",
    "Progress",
    "Result",
    "Settings",
    "admm_sound",
    "audio_of",
    "check_writable",
    "collect_inputs",
    "exit_status",
    "frames_of",
    "is_single_file",
    "load_mel",
    "mel_residual",
    "remove_stale_temporaries",
    "remove_temporaries",
    "run",
    "run_parallel",
    "save_npy",
    "save_outputs",
    "save_wav",
    "signal_of",
    "solve_batch",
    "solve_file",
    "solve_quietly",
    "sound",
    "stop_signals",
    "summary_line",
    "transform_for",
    "write_atomic",
    "write_report",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def run(jobs, problems, settings, *, overwrite=False, n_workers=1, batch_frames=None,
        progress=True, report=None, command=None, out=None):
    """Invert every job, with progress, a summary line and an optional report.

    Parameters
    ----------
    jobs : list of Job
    problems : list of Result
        Inputs already known to be bad, and folders not searched (from
        :func:`collect_inputs`): reported, counted.
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
        Where to write the JSON report (:func:`write_report`); checked for writability first.
    command : str or None
        Recorded in the report.
    out : file or None
        Where the summary goes (stdout).

    Returns
    -------
    int
        Exit status: 0; 1 when a file failed or a folder was not searched; 130 (SIGINT) or 143
        (SIGTERM) when interrupted.

    Every failure of one file (a bad or hostile file, MemoryError, a solver's error, a failed
    write) is that file's: the run goes on. Stale temporary files of processes that no longer
    run are removed from the output folders first, and again at the end.
    """
    out = sys.stdout if out is None else out
    if report is not None:
        check_writable(report, "--report")
    with stop_signals():
        return _run(jobs, problems, settings, overwrite, n_workers, batch_frames, progress,
                    report, command, out)


def _run(jobs, problems, settings, overwrite, n_workers, batch_frames, progress, report,
         command, out):
    t0 = time.perf_counter()
    results = list(problems)
    folders = sorted({os.path.dirname(job.output) or "." for job in jobs})
    stale = remove_stale_temporaries(folders)
    bar = Progress(len(jobs) + len(problems), enabled=progress)
    finished = set()
    todo = []
    signum = None

    def record(r):
        results.append(r)
        finished.add(r.input)
        if r.status in ("failed", "not searched"):
            bar.message(f"cumel: error: {r.error}")
        bar.update(r)

    try:
        if stale:
            bar.message(f"cumel: removed {len(stale)} temporary file(s) left by an earlier run "
                        "that was killed")
        for r in problems:
            bar.message(f"cumel: error: {r.error}")
            bar.update(r)
        for job in jobs:
            try:
                frames = output_frames(job.output)     # a special file raises, never opened
            except FileProblem as exc:
                record(failure(job, exc))
                continue
            if not overwrite and os.path.exists(job.output):
                record(Result(job.input, job.output, "skipped", frames))
            else:
                todo.append(job)
        if batch_frames is not None:
            solve_batch(todo, settings, batch_frames, record, bar.within)
        elif n_workers > 1 and len(todo) > 1:
            run_parallel(todo, settings, min(n_workers, len(todo)), record,
                         progress=bar if bar.bar is not None else None)
        else:
            for job in todo:
                solve_file(job, settings, bar.within, record=record)
    except KeyboardInterrupt as exc:
        signum = signal_of(exc)
        remove_temporaries()
    finally:
        bar.close()
    results += [Result(j.input, j.output, "not run") for j in jobs
                if j.input not in finished]
    remove_stale_temporaries(folders)              # of workers that died (killed outright)
    seconds = time.perf_counter() - t0
    print(summary_line(results, seconds, signum), file=out, flush=True)
    for r in sorted(results, key=lambda r: r.input):
        if r.status in ("failed", "not searched"):
            print(f"  {r.status}: {r.error}", file=out)
        elif r.warning is not None:
            print(f"  warning: {r.warning}", file=out)
    if report is not None:
        write_report(report, results, seconds, signum, command)
    if signum is not None:
        return 128 + signum
    return EXIT_FAILED if any(r.status in ("failed", "not searched") for r in results) else EXIT_OK
