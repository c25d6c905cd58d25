"""Timing and rows: the one timing function, the one row builder, and the speed-ups.

Every row, cumel's or a peer's, in this interpreter or in a worker, goes through
:func:`measure_row`: prepare, :func:`time_solve`, :func:`build_row`.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from .batches import workload_filterbank
from .environment import portable_path
from .implementations import Unavailable, first_line

ROW_FIELDS = ("workload", "implementation", "label", "peer", "version", "backend", "device",
              "python", "status", "error", "batch", "frames", "dtype", "max_iter", "iterations",
              "seconds", "seconds_all", "seconds_per_frame", "frames_per_second", "mel_residual",
              "spectrogram_error", "speedup", "baseline")


@dataclass
class Timing:
    """What :func:`time_solve` measured.

    Attributes
    ----------
    seconds : list of float
        Wall time of each timed run (device-synchronised).
    result : ndarray, shape (B, n_stft, T)
        The last run's answer, on the host.
    iterations : int or None
        As reported by the warm-up run.
    """
    seconds: list
    result: np.ndarray
    iterations: object

    @property
    def median(self):
        return statistics.median(self.seconds)


def time_solve(solve, repeats):
    """One warm-up run (it also reports the iterations), then ``repeats`` timed runs.

    Each timed run is ``solve.run(False)`` followed by ``solve.synchronize()``, so a GPU
    implementation is timed to the end of its work; the result is copied to the host after the
    clock stops.
    """
    result, iterations = solve.run(True)
    solve.synchronize()
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result, _ = solve.run(False)
        solve.synchronize()
        seconds.append(time.perf_counter() - start)
    return Timing(seconds, np.asarray(solve.to_numpy(result)), iterations)


def accuracy(batch, S):
    """``(mel residual, spectrogram error)`` of an answer ``S`` (B, n_stft, T), in float64.

    mel residual ``||A S - M|| / ||M||`` with ``A = fb.T`` (cumel's filterbank in float64);
    spectrogram error ``||S - S_true|| / ||S_true||`` against the true power spectrogram.
    """
    S = np.asarray(S, dtype=np.float64)
    if S.shape != batch.spec.shape:
        raise ValueError(f"answer has shape {S.shape}, expected {batch.spec.shape}")
    A = workload_filterbank(batch.workload, np.float64).T
    M = batch.mel.astype(np.float64)
    S_true = batch.spec.astype(np.float64)
    mel_residual = np.linalg.norm(np.matmul(A, S) - M) / np.linalg.norm(M)
    spectrogram_error = np.linalg.norm(S - S_true) / np.linalg.norm(S_true)
    return float(mel_residual), float(spectrogram_error)


def build_row(impl, backend, batch, settings, *, version=None, device=None, timing=None,
              status="ok", error=None):
    """A result row (every key of :data:`ROW_FIELDS`); metrics are None where not measured."""
    row = dict.fromkeys(ROW_FIELDS)
    B, T = batch.shape
    row.update(workload=batch.workload.name, implementation=impl.id, label=impl.label,
               peer=impl.peer or "cumel", version=version, backend=backend, device=device,
               python=portable_path(sys.executable), status=status, error=error, batch=[B, T],
               frames=batch.frames, dtype="float32",
               max_iter=settings.max_iter if impl.iteration_cap else None)
    if timing is not None:
        seconds = timing.median
        row.update(iterations=None if timing.iterations is None else int(timing.iterations),
                   seconds=seconds, seconds_all=list(timing.seconds),
                   seconds_per_frame=seconds / batch.frames,
                   frames_per_second=batch.frames / seconds if seconds > 0 else math.inf)
        row["mel_residual"], row["spectrogram_error"] = accuracy(batch, timing.result)
    return row


def frames_cap(impl, settings):
    """The ``--frames-for`` value that applies to ``impl``, or None."""
    caps = [frames for key, frames in settings.frames_for.items() if impl.matches(key)]
    return min(caps) if caps else None


def measure_row(impl, backend, batch, settings, log=None):
    """Prepare, time and describe one implementation on one backend: always returns a row.

    A missing library or GPU gives a "skipped" row, an exception an "error" row with the
    exception's type and first line (torchaudio's ``gels`` on a rank-deficient filterbank).
    """
    cap = frames_cap(impl, settings)
    if cap is not None:
        batch = batch.crop(cap)
    known = {}
    try:
        impl.check_installed()
        known["version"] = impl.version()
        solve = impl.prepare(batch, settings, backend)
        known["device"] = solve.device
        timing = time_solve(solve, settings.repeats)
        row = build_row(impl, backend, batch, settings, timing=timing, **known)
    except Unavailable as exc:
        row = build_row(impl, backend, batch, settings, status="skipped", error=str(exc), **known)
    except Exception as exc:  # a peer that raises is a result, not a crash of the harness
        row = build_row(impl, backend, batch, settings, status="error",
                        error=f"{type(exc).__name__}: {first_line(exc)}", **known)
    if log is not None:
        log(describe(row))
    return row


def describe(row):
    """One progress line for a row."""
    head = f"[{row['workload']}] {row['implementation']} ({row['backend']}, {row['frames']} frames)"
    if row["status"] != "ok":
        return f"{head}: {row['status']}: {row['error']}"
    return (f"{head}: {row['seconds']:.4g} s, mel residual {row['mel_residual']:.3g}, "
            f"iterations {row['iterations']}")


def parse_row_name(name):
    """``"impl"`` or ``"impl@backend"`` -> ``(impl, backend)`` (backend "cpu" by default)."""
    impl, _, backend = name.partition("@")
    return impl, backend or "cpu"


def add_speedups(rows, baseline):
    """Fill ``speedup`` (baseline time per frame / row time per frame) of every measured row.

    The baseline is the row named ``baseline`` (``impl`` or ``impl@backend``) of the same
    workload; per-frame times make rows on a cropped batch (``--frames-for``) comparable, and
    equal ``baseline_time / row_time`` when the frames are the same.
    """
    impl, backend = parse_row_name(baseline)
    reference = {row["workload"]: row for row in rows
                 if row["implementation"] == impl and row["backend"] == backend
                 and row["status"] == "ok"}
    for row in rows:
        row["baseline"] = baseline
        base = reference.get(row["workload"])
        if row["status"] == "ok" and base is not None and row["seconds_per_frame"] > 0:
            row["speedup"] = base["seconds_per_frame"] / row["seconds_per_frame"]
    return rows
