"""Solving: one file at a time (:func:`solve_file`, what each worker runs) or the frames of
many files in one solve (:func:`solve_batch`, the GPU's way), and writing what comes out."""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validate import COMPRESSED_SHARE, negative_share, percent
from ..transforms import InverseMelScale, residual_norms, total_residual
from .atomic import committing, save_npy, save_wav
from .inputs import FileProblem, frames_of, load_mel
from .report import Result

PER_FRAME_SOLVERS = ("nnls", "lstsq")    # frames independent: files can share one solve


@dataclass
class Settings:
    """The transform's arguments (without n_mels) and how to read inputs; small and picklable,
    so each worker process builds its transforms from it once.

    With ``frontend`` (a :class:`cumel.Frontend`) the inputs are that front end's features: they
    are undone (:meth:`linear`) and inverted on its filterbank, and their sound is made on its
    frame grid. ``audio`` (``--wav``): Griffin-Lim keywords (hop_length, win_length, power,
    n_iter, length, seed); ``wav_only``: the sound is the output, no spectrogram is written;
    ``normalize``: the sound is scaled to a peak of 0.99 (otherwise written at its level).
    """
    n_stft: int
    n_mels: int | None = None
    key: str | None = None
    transform: dict = field(default_factory=dict)
    audio: dict | None = None
    frontend: object = None
    wav_only: bool = False
    length: int | None = None        # --length: with a front end, only the frames it needs
    normalize: bool = False          # --normalize: the sound's peak at 0.99 of full scale

    def cache_key(self, n_mels):
        return (self.n_stft, n_mels, repr(sorted(self.transform.items())), self.frontend)

    def build(self, n_mels):
        fe = self.frontend
        if fe is None:
            return InverseMelScale(self.n_stft, n_mels, **self.transform)
        solve = {k: v for k, v in self.transform.items()
                 if k not in ("sample_rate", "f_min", "f_max", "norm", "mel_type")}
        if fe.fb is not None:
            return InverseMelScale(fe.n_stft, fe.n_mels, fb=fe.fb, **solve)
        return InverseMelScale(fe.n_stft, fe.n_mels, fe.sample_rate, fe.f_min, fe.f_max,
                               norm=fe.norm, mel_type=fe.mel_type, **solve)

    @property
    def sample_rate(self):
        if self.frontend is not None:
            return self.frontend.sample_rate
        return self.transform.get("sample_rate", 16000)

    def linear(self, mel):
        """What the transform inverts: the mel itself, or the front end's features undone (and
        cut to the frames ``--length`` needs)."""
        if self.frontend is None:
            return mel
        return self.frontend.mel(mel, length=self.length)


_TRANSFORMS: dict = {}     # per process: (settings, n_mels) -> InverseMelScale, built once


def transform_for(settings, n_mels):
    """The process's transform for ``n_mels`` (built on first use, then reused)."""
    key = settings.cache_key(n_mels)
    if key not in _TRANSFORMS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # empty filters: said once by the CLI
            _TRANSFORMS[key] = settings.build(n_mels)
    return _TRANSFORMS[key]


def mel_residual(transform, mel, S):
    """``||A S - M|| / ||M||`` in float64 (0 for an all-zero mel), at any scale (no square
    overflows, even for float64 mels near 1e300): the transform's own diagnostics
    (:func:`cumel.transforms.residual_norms`), chunk by chunk."""
    S = np.asarray(S)
    M = np.asarray(mel).reshape(S.shape[:-2] + mel.shape[-2:])        # mindspore: (1, ...)
    r, m, e = residual_norms(transform.plan, np, M.reshape((-1,) + M.shape[-2:]),
                             S.reshape((-1,) + S.shape[-2:]))
    return total_residual(r, m, e)


def failure(job, exc):
    """The :class:`Result` of a file that raised ``exc``: the message starts with its path and
    names what went wrong, also for exceptions that carry no text (``MemoryError()``)."""
    text = str(exc)
    if isinstance(exc, MemoryError):
        text = f"out of memory{': ' + text if text else ''} (MemoryError)"
    elif not text:
        text = type(exc).__name__
    elif not isinstance(exc, (FileProblem, OSError, ValueError, TypeError, FloatingPointError,
                              RuntimeError)):
        text = f"{type(exc).__name__}: {text}"
    return Result(job.input, job.output, "failed",
                  error=text if text.startswith(job.input) else f"{job.input}: {text}")


def audio_of(S, sample_rate, hop_length=None, seed=None, device=None, *, n_iter=32,
             win_length=None, power=None, length=None, workers=None):
    """Fast Griffin-Lim of a spectrogram ``S`` (..., n_stft, T) of ``|STFT|**power`` (power 2
    unless given), with ``n_fft = 2 (n_stft - 1)``: the waveform (..., samples) and the
    :class:`GriffinLim` used."""
    from ..griffin_lim import GriffinLim
    gl = GriffinLim(2 * (S.shape[-2] - 1), n_iter, win_length, hop_length,
                    power=2.0 if power is None else power, length=length, seed=seed,
                    device=device, workers=workers)
    return gl(S), gl


def admm_sound(S, mel, transform, audio, frontend=None, device=None, workers=None):
    """``--method admm``: magnitude and phase together (:mod:`cumel.admm`) from the inverted
    spectrogram ``S`` of ``mel`` (the linear mel ``transform`` inverted), on ``device``; on the
    front end's grid with ``frontend``. ``audio``: the Griffin-Lim keywords of ``--wav``
    (``n_iter``: the ADMM's iterations). The waveform (..., samples), NumPy."""
    from .. import _backend, admm
    from ..griffin_lim import GriffinLim
    n_iter, length, seed = audio.get("n_iter", 32), audio.get("length"), audio.get("seed")
    if frontend is not None:
        from ..mel_frontends import _griffin_lim
        gl = _griffin_lim(frontend, n_iter, frontend.power, 0.99, length, seed, workers)
    else:
        power = audio.get("power")
        gl = GriffinLim(2 * (S.shape[-2] - 1), n_iter, audio.get("win_length"),
                        audio.get("hop_length"), power=2.0 if power is None else power,
                        length=length, seed=seed, workers=workers)
    settings = admm.check_settings(n_iter, None, None, None, None, n_mels=int(mel.shape[-2]),
                                   n_freqs=gl.n_freqs)
    xp, mel_x, to_caller = _backend.select(np.asarray(mel), device)
    y = admm.run(gl, transform, mel_x, xp.asarray(S), settings, xp)
    if frontend is not None and frontend.ref == "max":     # no level kept: peak 1, as audio()
        peak = xp.abs(y).max(axis=-1, keepdims=True)
        y = y / xp.where(peak > 0, peak, 1)
    return np.asarray(to_caller(y))


def sound(S, settings, mel=None, transform=None):
    """The waveform of the spectrogram ``S`` under ``settings`` (``--wav``): Griffin-Lim on the
    front end's grid with ``frontend``, else :func:`audio_of`; with ``method="admm"`` in
    ``settings.audio``, :func:`admm_sound` from the linear ``mel`` and its ``transform``."""
    audio = dict(settings.audio or {})
    method = audio.pop("method", "griffinlim")
    device, workers = settings.transform.get("device"), settings.transform.get("workers")
    if method == "admm":
        if mel is None or transform is None:
            raise ValueError("--method admm needs the mel and its transform")
        return admm_sound(S, mel, transform, audio, settings.frontend, device, workers)
    if settings.frontend is not None:
        return settings.frontend.griffin_lim(S, length=audio.get("length"),
                                             n_iter=audio.get("n_iter", 32),
                                             seed=audio.get("seed"), device=device,
                                             workers=workers)
    return audio_of(S, settings.sample_rate, device=device, workers=workers, **audio)[0]


def save_outputs(output, S, settings, mel=None, transform=None):
    """The spectrogram to ``output``; with ``settings.audio`` also its sound, beside it (.wav),
    or, with ``settings.wav_only``, the sound alone to ``output`` (``mel`` and ``transform``:
    what ``S`` was inverted from, for ``--method admm``)."""
    if settings.audio is not None:
        y = sound(S, settings, mel, transform)
        save_wav(output if settings.wav_only else Path(output).with_suffix(".wav"), y,
                 settings.sample_rate, settings.normalize)
    if not settings.wav_only:
        save_npy(output, S)          # last: an existing .npy means every output is complete


COMPRESSED = "looks like a log or dB mel"     # the words of cumel's warning (_validate)


def compressed_warning(share):
    """The command line's words for a mel with ``share`` of its values negative."""
    return (f"mel: {percent(share)} of its values are negative, but it is taken as a linear (power "
            f"or magnitude) mel: this {COMPRESSED}; pass --frontend NAME (cumel frontends lists "
            "them) or undo the compression")


def solve_quietly(transform, mel):
    """``transform(mel)``, and the text of cumel's "looks like a log or dB mel" warning if it
    gave one (None otherwise): the run reports it per file. Other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        S = transform(mel)
    said = None
    for w in caught:
        if issubclass(w.category, UserWarning) and COMPRESSED in str(w.message):
            said = compressed_warning(negative_share(np.asarray(mel), np))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return S, said


def with_progress(transform, progress, frames, files=1):
    """``transform`` reporting its solved frames to ``progress(frames, files)`` (the folder
    CLI's :meth:`Progress.within`), or itself when there is no bar."""
    advance = progress(frames, files) if progress is not None else None
    if advance is None:
        return transform
    transform = copy.copy(transform)          # the plan is shared, not copied
    transform.progress = advance
    return transform


def solve_file(job, settings, progress=None, record=None):
    """Read, invert and write one file; returns its :class:`Result` (status "written" or
    "failed"). Any exception (a bad file, a reader's, a solver's, MemoryError, a failed write)
    fails this file alone; interrupts propagate; nothing partial is left behind.
    ``progress(frames, files)``, when given, makes the callback the solve reports to.
    ``record(result)``, when given, is called with the result, in the same
    :func:`.atomic.committing` step as the write: an interrupt never falls between an output
    in place and its record."""
    t0 = time.perf_counter()
    try:
        mel = settings.linear(load_mel(job.input, settings.key, settings.n_mels, settings.n_stft))
        transform = transform_for(settings, int(mel.shape[-2]))
        transform = with_progress(transform, progress, frames_of(mel.shape))
        S, said = solve_quietly(transform, mel)
        residual = mel_residual(transform, mel, S)
    except Exception as exc:  # noqa: BLE001 - one file's failure, whatever it is, is that file's
        return _recorded(failure(job, exc), record)
    with committing():
        try:
            save_outputs(job.output, S, settings, mel, transform)
        except Exception as exc:  # noqa: BLE001 - a failed write is this file's
            return _recorded(failure(job, exc), record)
        return _recorded(Result(job.input, job.output, "written", frames_of(mel.shape),
                                time.perf_counter() - t0, residual,
                                warning=None if said is None else f"{job.input}: {said}"), record)


def _recorded(result, record):
    if record is not None:
        record(result)
    return result


def solve_batch(jobs, settings, frame_budget, record, progress=None):
    """Frames of many files in one solve (per-frame solvers, the GPU's way): calls
    ``record(result)`` for each job, a written file's in the same :func:`.atomic.committing`
    step as its write. Files are read in order and concatenated along time (as columns of
    one (n_mels, frames) array) until ``frame_budget`` frames; each file's part is split back
    and written. Files whose n_mels or dtype differ start a new batch. A batch whose solve
    fails is solved again file by file, so that a bad file fails alone."""
    pending = []                      # (job, mel as (n_mels, frames) columns, shape)

    def write(job, cols, shape, part, transform, seconds):
        lead, T = shape[:-2], shape[-1]
        back = tuple(range(1, len(lead) + 1)) + (0, len(lead) + 1)    # columns to (..., n, T)
        spec = np.ascontiguousarray(part.reshape((part.shape[0],) + lead + (T,)).transpose(back))
        try:
            residual = mel_residual(transform, cols, part)
        except Exception as exc:  # noqa: BLE001 - this file's failure
            record(failure(job, exc))
            return
        share = negative_share(cols, np)
        said = f"{job.input}: {compressed_warning(share)}" if share >= COMPRESSED_SHARE else None
        with committing():
            try:
                mel = cols.reshape((cols.shape[0],) + lead + (T,)).transpose(back)
                save_outputs(job.output, spec, settings, mel, transform)
            except Exception as exc:  # noqa: BLE001 - this file's failure
                record(failure(job, exc))
                return
            record(Result(job.input, job.output, "written", cols.shape[1], seconds, residual,
                          warning=said))

    def flush():
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        try:
            transform = transform_for(settings, batch[0][1].shape[0])
            columns = np.concatenate([cols for _, cols, _ in batch], axis=1)
            transform = with_progress(transform, progress, columns.shape[1], len(batch))
            t0 = time.perf_counter()
            S, _ = solve_quietly(transform, columns)     # said per file, in write()
        except Exception:  # noqa: BLE001 - retried file by file below, each failing on its own
            for job, cols, shape in batch:
                one(job, cols, shape)
            return
        per_frame = (time.perf_counter() - t0) / max(S.shape[-1], 1)
        start = 0
        for job, cols, shape in batch:
            n = cols.shape[1]
            write(job, cols, shape, S[:, start:start + n], transform, per_frame * n)
            start += n

    def one(job, cols, shape):
        try:
            transform = transform_for(settings, cols.shape[0])
            t0 = time.perf_counter()
            S, _ = solve_quietly(transform, cols)
        except Exception as exc:  # noqa: BLE001 - this file's failure
            record(failure(job, exc))
            return
        write(job, cols, shape, S, transform, time.perf_counter() - t0)

    for job in jobs:
        try:
            mel = settings.linear(load_mel(job.input, settings.key, settings.n_mels,
                                           settings.n_stft))
            dtype = np.float64 if mel.dtype == np.float64 else np.float32
            n_mels = mel.shape[-2]
            cols = np.moveaxis(mel.astype(dtype, copy=False), -2, 0).reshape(n_mels, -1)
        except Exception as exc:  # noqa: BLE001 - this file's failure
            record(failure(job, exc))
            continue
        if pending and (pending[0][1].shape[0] != n_mels or pending[0][1].dtype != cols.dtype):
            flush()
        pending.append((job, cols, mel.shape))
        if sum(c.shape[1] for _, c, _ in pending) >= frame_budget:
            flush()
    flush()
