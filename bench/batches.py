"""The benchmark's inputs: a standard workload applied to audio, stacked into one batch.

A :class:`Batch` holds the true power spectrograms ``spec`` (B, n_stft, T) and their mel
spectrograms ``mel`` (B, n_mels, T), both float32, ``mel = fb.T @ spec`` with the workload's
float32 filterbank (``cumel.workloads.Workload.pair``). Every implementation inverts ``mel``; the
rows compare its answer with ``spec``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cumel import melscale_fbanks
from cumel.workloads import WORKLOADS, read_wav, synthetic_audio

SYNTHETIC_SECONDS = 5.0
EMPTY_FILTER_WARNING = "At least one mel filterbank has all zero values"


def quiet_empty_filters():
    """Silence the expected empty-filter warning (201 bins x 128 mels leaves filters empty;
    cumel and torchaudio both warn) for the rest of this process."""
    warnings.filterwarnings("ignore", message=EMPTY_FILTER_WARNING)


def workload_filterbank(workload, dtype):
    """The workload's filterbank ``fb`` (n_stft, n_mels), cumel's, in ``dtype``.

    float64 is the exact matrix every mel residual is measured with; float32 is the matrix the
    mel spectrograms were made with (and the one handed to peers that take a matrix).
    """
    return melscale_fbanks(workload.n_stft, workload.f_min, workload.f_max, workload.n_mels,
                           workload.sample_rate, workload.norm, workload.mel_scale, dtype=dtype)


@dataclass
class Batch:
    """One workload's input batch.

    Attributes
    ----------
    workload : cumel.workloads.Workload
    mel : ndarray, shape (B, n_mels, T), float32
    spec : ndarray, shape (B, n_stft, T), float32
        The true power spectrograms.
    clips : list of str
        Source of each of the B rows (file stem or ``synthetic-<seed>``).
    """
    workload: object
    mel: np.ndarray
    spec: np.ndarray
    clips: list

    @property
    def shape(self):
        """``(B, T)``."""
        return self.mel.shape[0], self.mel.shape[2]

    @property
    def frames(self):
        return self.mel.shape[0] * self.mel.shape[2]

    def describe(self):
        """JSON-ready summary: workload, clips, batch shape, frames."""
        return {"workload": self.workload.name, "clips": list(self.clips),
                "batch": list(self.shape), "frames": self.frames}

    def crop(self, frames):
        """The first ``about frames`` frames: at most ``frames`` rows, each cut to a common length.

        Used for a slow implementation (``--frames-for``); the batch itself if already smaller.
        """
        if frames >= self.frames:
            return self
        rows = min(self.mel.shape[0], frames)
        length = max(1, frames // rows)
        return Batch(self.workload, np.ascontiguousarray(self.mel[:rows, :, :length]),
                     np.ascontiguousarray(self.spec[:rows, :, :length]), self.clips[:rows])

    def save(self, path):
        """Write to ``path`` (.npz) for a worker process; :meth:`load` reads it back."""
        np.savez(path, mel=self.mel, spec=self.spec, workload=self.workload.name,
                 clips=np.array(self.clips))

    @classmethod
    def load(cls, path):
        with np.load(path) as data:
            return cls(WORKLOADS[str(data["workload"])], data["mel"], data["spec"],
                       [str(c) for c in data["clips"]])


def load_clips(workload, audio_dir=None, count=1):
    """``count`` clips for a workload as ``[(name, samples)]``.

    With ``audio_dir``, its ``<workload.clips>*.wav`` files in name order, cycling when there are
    fewer than ``count`` (their sample rate must be the workload's); without, synthetic signals
    (:func:`cumel.workloads.synthetic_audio`, seed ``k`` for clip ``k``), so the benchmark runs on
    a fresh clone.
    """
    if audio_dir is None:
        return [(f"synthetic-{k}", synthetic_audio(SYNTHETIC_SECONDS, workload.sample_rate, seed=k))
                for k in range(count)]
    paths = sorted(Path(audio_dir).glob(workload.clips + "*.wav"))
    if not paths:
        raise FileNotFoundError(f"no {workload.clips}*.wav in {audio_dir} for workload "
                                f"{workload.name}")
    clips = []
    for path in paths[:count]:
        audio, rate = read_wav(path)
        if rate != workload.sample_rate:
            raise ValueError(f"{path} is sampled at {rate} Hz; workload {workload.name} "
                             f"needs {workload.sample_rate} Hz")
        clips.append((path.stem, audio))
    return [clips[k % len(clips)] for k in range(count)]


def build_batch(workload, audio_dir=None, clips=1, frames=None):
    """Stack ``clips`` clips into one batch, then scale it to about ``frames`` frames.

    Parameters
    ----------
    workload : cumel.workloads.Workload
    audio_dir : path or None
        Folder with the workload's WAV files; None: synthetic signals (see :func:`load_clips`).
    clips : int
        Rows of the batch before tiling.
    frames : int or None
        None: every clip cropped to the shortest one. Otherwise about ``frames`` frames: fewer
        than the stacked clips hold crops every row to ``ceil(frames / clips)``; more tiles the
        stacked clips along the batch axis until the batch holds at least ``frames``.

    Returns
    -------
    Batch
    """
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    sources = load_clips(workload, audio_dir, clips)
    pairs = [workload.pair(audio) for _, audio in sources]
    length = min(spec.shape[1] for spec, _ in pairs)
    rows = clips
    if frames is not None:
        if frames <= clips * length:
            length = math.ceil(frames / clips)
        else:
            rows = math.ceil(frames / length)
    order = [k % clips for k in range(rows)]
    spec = np.stack([pairs[k][0][:, :length] for k in order])
    mel = np.stack([pairs[k][1][:, :length] for k in order])
    return Batch(workload, np.ascontiguousarray(mel, np.float32),
                 np.ascontiguousarray(spec, np.float32), [sources[k][0] for k in order])
