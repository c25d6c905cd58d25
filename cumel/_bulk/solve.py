"""Solving: one file at a time (:func:`solve_file`, what each worker runs) or the frames of
many files in one solve (:func:`solve_batch`, the GPU's way), and writing what comes out."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..transforms import InverseMelScale
from .atomic import save_npy, save_wav
from .inputs import FileProblem, frames_of, load_mel
from .report import Result

PER_FRAME_SOLVERS = ("nnls", "lstsq")    # frames independent: files can share one solve


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


def audio_of(S, sample_rate, hop_length=None, seed=None, device=None):
    """Fast Griffin-Lim (32 iterations) of a power spectrogram ``S`` (..., n_stft, T), with
    ``n_fft = 2 (n_stft - 1)``: the waveform (..., samples) and the :class:`GriffinLim` used."""
    from ..griffin_lim import GriffinLim
    gl = GriffinLim(2 * (S.shape[-2] - 1), hop_length=hop_length, seed=seed, device=device)
    return gl(S), gl


def save_outputs(output, S, settings):
    """The spectrogram to ``output``; with ``settings.audio`` also its sound, beside it (.wav)."""
    if settings.audio is not None:
        y, _ = audio_of(S, settings.transform.get("sample_rate", 16000),
                        device=settings.transform.get("device"), **settings.audio)
        save_wav(Path(output).with_suffix(".wav"), y, settings.transform.get("sample_rate", 16000))
    save_npy(output, S)              # last: an existing .npy means every output is complete


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
