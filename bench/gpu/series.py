"""What the timings stage of ``python -m bench gpu`` measures: a workload's inputs
(:class:`Inputs`) and its series (:class:`Series`: a solver on a backend, at growing sizes), their
memory estimates and their bound against the device."""
from __future__ import annotations

import contextlib
import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cumel.workloads import read_wav, synthetic_audio

from .. import bound as bounds
from .. import environment
from .limits import DEVICE_FRACTION, HOST_FRACTION, host_available
from .prepare import PREPARE
from .timers import time_runs

CHANNEL_FRAMES = 256             # frames per channel of every batch (a clip of a few seconds)
BASE_CHANNELS = 16               # distinct channels, tiled to the batch size
CUMEL_SOLVERS = ("nnls", "lstsq", "torchaudio", "mindspore")
CUMEL_BACKENDS = ("cuda", "cuda-host", "cuda-torch")
PEERS = ("torchaudio.InverseMelScale", "torch-sgd", "torchaudio.GriffinLim", "torch-lstsq-grad")
# which cost model bounds which row (peers: the cumel kernel computing the same thing)
COST_MODEL = {"nnls": "nnls_solve", "lstsq": "lstsq_apply", "torchaudio": "torchaudio_sgd",
              "mindspore": "mindspore_gd", "griffinlim": "griffinlim_iteration",
              "torchaudio.InverseMelScale": "lstsq_apply", "torch-sgd": "torchaudio_sgd",
              "torchaudio.GriffinLim": "griffinlim_iteration", "torch-lstsq-grad": "lstsq_apply"}


class Inputs:
    """A workload's base batch (:data:`BASE_CHANNELS` channels of :data:`CHANNEL_FRAMES` frames,
    float32), tiled to any size on the host or the device."""

    def __init__(self, workload, audio_dir=None):
        self.workload = workload
        need = BASE_CHANNELS * CHANNEL_FRAMES
        seconds = (need + 2) * workload.hop / workload.sample_rate
        if audio_dir:
            clips = sorted(Path(audio_dir).glob(workload.clips + "*.wav"))
            if not clips:
                raise FileNotFoundError(f"no {workload.clips}*.wav in {audio_dir}")
            signal_ = np.concatenate([read_wav(p)[0] for p in clips])
            repeats = -(-int(seconds * workload.sample_rate) // signal_.size)
            signal_ = np.tile(signal_, repeats)
            self.source = f"{len(clips)} clip(s) of {environment.portable_path(audio_dir)}"
        else:
            signal_ = synthetic_audio(seconds, workload.sample_rate)
            self.source = "synthetic signal (cumel.workloads.synthetic_audio)"
        spec, mel = workload.pair(signal_)
        spec, mel = spec[:, :need], mel[:, :need]
        self.spec = np.ascontiguousarray(
            spec.reshape(workload.n_stft, BASE_CHANNELS, CHANNEL_FRAMES).transpose(1, 0, 2))
        self.mel = np.ascontiguousarray(
            mel.reshape(workload.n_mels, BASE_CHANNELS, CHANNEL_FRAMES).transpose(1, 0, 2))

    @staticmethod
    def shape(frames):
        """``(B, T)`` of a batch of ``frames`` frames."""
        T = min(CHANNEL_FRAMES, frames)
        return frames // T, T

    def host(self, kind, frames):
        base = self.mel if kind == "mel" else self.spec
        B, T = self.shape(frames)
        reps = -(-B // base.shape[0])
        return np.ascontiguousarray(np.tile(base[:, :, :T], (reps, 1, 1))[:B])

    def cupy(self, cupy, kind, frames):
        base = cupy.asarray(self.mel if kind == "mel" else self.spec)
        B, T = self.shape(frames)
        reps = -(-B // base.shape[0])
        return cupy.ascontiguousarray(cupy.tile(base[:, :, :T], (reps, 1, 1))[:B])

    def torch(self, torch, kind, frames):
        base = torch.from_numpy(self.mel if kind == "mel" else self.spec).to("cuda")
        B, T = self.shape(frames)
        reps = -(-B // base.shape[0])
        return base[:, :, :T].repeat(reps, 1, 1)[:B].contiguous()


# -- series ----------------------------------------------------------------------------------------

@dataclass
class Series:
    """One line of the plot: a solver on a backend and workload, measured at growing sizes."""
    inputs: Inputs
    solver: str
    backend: str
    label: str
    stopped: str | None = None
    last_cost: float = 0.0
    sizes: list = field(default_factory=list)
    # iterations per frame and mel residual, from the first size's warm-up (return_info=True);
    # the batches of every size tile the same frames, so later sizes reuse them
    steps: float | None = None
    mel_residual: float | None = None
    measured_at: int | None = None

    @property
    def workload(self):
        return self.inputs.workload

    def describe(self):
        return {"workload": self.workload.name, "solver": self.solver, "backend": self.backend,
                "label": self.label, "sizes": list(self.sizes), "stopped": self.stopped}

    def new_row(self, frames):
        B, T = self.inputs.shape(frames)
        self.sizes.append(frames)
        return {"workload": self.workload.name, "solver": self.solver, "backend": self.backend,
                "label": self.label, "n_frames": B * T, "batch": [B, T], "status": None,
                "error": None, "frames_per_s": None, "bound_frames_per_s": None,
                "measured_over_bound": None, "seconds": None}

    # memory: bytes a frame takes on the device and on the host (estimates, see fits)
    def bytes_per_frame(self):
        w = self.workload
        M, F, item = w.n_mels, w.n_stft, 4
        griffinlim = (24 * F + 6 * w.hop) * item
        device = {"nnls": (M + F) * item + 16, "lstsq": (M + F) * item + 16,
                  "torchaudio": M * item + 4 * F * item + 16, "mindspore": M * item + 5 * F * item,
                  "griffinlim": griffinlim, "mel_to_audio": griffinlim + (M + 2 * F) * item,
                  "torchaudio.InverseMelScale": 3 * (M + F) * item,
                  "torch-sgd": M * item + 8 * F * item,
                  "torchaudio.GriffinLim": griffinlim,
                  # the mel, its gradient, the answer (kept for the backward) and its gradient
                  "nnls-grad": 2 * (M + F) * item + 16, "torch-lstsq-grad": 4 * (M + F) * item,
                  }[self.solver]
        if self.backend == "cuda-host" and self.solver in ("nnls", "lstsq"):
            device = 0                                   # streamed in chunks of bounded size
        host = 2 * (M + F) * item if self.backend == "cuda-host" else 0
        return device, host

    def fits(self, frames, cupy):
        """True, or why a batch of ``frames`` would not fit."""
        device, host = self.bytes_per_frame()
        free, _ = cupy.cuda.runtime.memGetInfo()
        free += cupy.get_default_memory_pool().free_bytes()
        if device * frames > DEVICE_FRACTION * free:
            return f"largest that fits the device: {frames // 2} frames"
        if host * frames > HOST_FRACTION * host_available():
            return f"largest that fits host memory: {frames // 2} frames"
        return True

    def release(self, cupy):
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
        if self.backend in ("cuda-torch", "torch-cuda") and "torch" in sys.modules:
            with contextlib.suppress(Exception):
                sys.modules["torch"].cuda.empty_cache()

    # timing
    def measure(self, frames, cupy, args):
        prepare = PREPARE[self.solver]
        run, info, timer = prepare(self, frames, cupy, args)
        if self.measured_at is None:
            warm_up = info
        else:
            def warm_up():
                return run(), self.steps, self.mel_residual
        row = time_runs(run, warm_up, timer, args.repeats, frames)
        if self.measured_at is None:
            self.steps, self.mel_residual, self.measured_at = (row["steps"], row["mel_residual"],
                                                               frames)
        row["steps_measured_at"] = self.measured_at
        return row

    def bound(self, device, row, rows):
        w = self.workload
        shape = {"n_mels": w.n_mels, "n_freqs": w.n_stft, "n_fft": w.n_fft, "hop": w.hop}
        models = cost_models()
        if self.solver == "mel_to_audio":
            steps = nnls_steps(rows, w.name, row["n_frames"])
            nnls = bounds.bound(models["nnls_solve"], device, steps, 4, **shape)
            gl = bounds.bound(models["griffinlim_iteration"], device, row["steps"], 4, **shape)
            return {"frames_per_s": bounds.combined(nnls["frames_per_s"], gl["frames_per_s"]),
                    "limit": f"nnls {nnls['limit']}, Griffin-Lim {gl['limit']}",
                    "nnls_steps": steps, "models": ["nnls_solve", "griffinlim_iteration"]}
        if self.solver == "nnls-grad":
            forward = bounds.bound(models["nnls_solve"], device, row["steps"] or 0, 4, **shape)
            backward = bounds.bound(models["nnls_backward"], device, 0, 4, **shape)
            return {"frames_per_s": bounds.combined(forward["frames_per_s"],
                                                    backward["frames_per_s"]),
                    "limit": f"forward {forward['limit']}, backward {backward['limit']}",
                    "models": ["nnls_solve", "nnls_backward"]}
        model = models[COST_MODEL[self.solver]]
        result = bounds.bound(model, device, row["steps"] or 0, 4, **shape)
        return {**result, "model": model.name}


@functools.lru_cache(maxsize=1)
def cost_models():
    """The kernels' stated cost models (read once per process)."""
    return bounds.kernel_cost_models()


def make_series(inputs, args, skip_peers=False):
    """Every series of a workload, in measuring order (nnls first: mel_to_audio's bound reads
    its step count)."""
    labels = {"nnls": "cumel nnls", "lstsq": "cumel lstsq",
              "torchaudio": f"cumel torchaudio (max_iter {args.max_iter}, tolerances 0)",
              "mindspore": f"cumel mindspore (max_iter {args.max_iter}, tolerances 0)"}
    out = [Series(inputs, solver, backend, labels[solver])
           for solver in CUMEL_SOLVERS for backend in CUMEL_BACKENDS]
    out += [Series(inputs, "griffinlim", backend, f"cumel GriffinLim (n_iter {args.n_iter})")
            for backend in CUMEL_BACKENDS]
    out += [Series(inputs, "mel_to_audio", backend,
                   f"cumel mel_to_audio (nnls + {args.n_iter} Griffin-Lim iterations)")
            for backend in CUMEL_BACKENDS]
    out.append(Series(inputs, "nnls-grad", "cuda-torch",
                      "cumel.torch.InverseMelScale forward + backward (nnls)"))
    if not skip_peers:
        out += [Series(inputs, "torchaudio.InverseMelScale", "torch-cuda",
                       "torchaudio InverseMelScale (lstsq, driver gels)"),
                Series(inputs, "torch-sgd", "torch-cuda",
                       f"torchaudio 0.8 SGD loop in PyTorch (max_iter {args.max_iter}, "
                       "tolerances 0)"),
                Series(inputs, "torchaudio.GriffinLim", "torch-cuda",
                       f"torchaudio GriffinLim (n_iter {args.n_iter})"),
                Series(inputs, "torch-lstsq-grad", "torch-cuda",
                       "lstsq + relu forward + backward in torch (driver gels)")]
    return out


def nnls_steps(rows, workload, frames):
    """Mean Newton steps of the nnls rows of this workload (the same frames at the closest
    size), for mel_to_audio's bound; 3 (typical) when none was measured."""
    found = [r for r in rows if r["workload"] == workload and r["solver"] == "nnls"
             and r["status"] == "ok" and r.get("steps") is not None]
    if not found:
        return 3.0
    return min(found, key=lambda r: abs(math.log2(r["n_frames"] / frames)))["steps"]
