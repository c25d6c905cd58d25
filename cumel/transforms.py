"""Public API: ``InverseMelScale``, ``MelScale`` and the functional ``inverse_mel_scale``.

The transform validates its arguments once, builds (or fetches from a cache) the per-filterbank
:class:`Plan`, and on each call packs the input to ``(B, n_mels, T)``, picks the backend
(``cumel._backend.select``), runs the solver and unpacks.
"""
from __future__ import annotations

import functools
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import _backend, _random, _validate
from .filterbank import melscale_fbanks, sparse_mel
from .solvers import lstsq as _lstsq
from .solvers import mindspore_gd as _mindspore
from .solvers import nnls as _nnls
from .solvers import torchaudio_sgd as _torchaudio

__all__ = ["InverseMelScale", "MelScale", "inverse_mel_scale", "SolveInfo", "Plan"]


class Plan:
    """Everything computed once per filterbank: sparse layout, pseudo-inverses, nnls factors.

    Device copies and compiled kernels hang off the same object (``cumel.cuda``), so a plan is
    the unit of caching; :func:`get_plan` shares plans between transforms with equal filterbanks.
    """

    def __init__(self, key):
        self.key = key
        self.sparse = sparse_mel(*key)
        self.fb64 = self.sparse.fb
        self._cache = {}
        self._lock = threading.RLock()   # re-entrant: a build may fetch another cached value

    def cached(self, name, build):
        """``build()`` once per ``name`` (a hashable key), then the stored value (thread-safe:
        concurrent callers get the one value built)."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        with self._lock:
            if name not in self._cache:
                self._cache[name] = build()
            return self._cache[name]

    def fb(self, dtype):
        """Dense filterbank (n_freqs, n_mels) in ``dtype`` on the host."""
        dtype = np.dtype(dtype)
        return self.cached(("fb", dtype.str), lambda: self.fb64.astype(dtype))

    def forward(self, dtype, xp):
        """``A = fb.T`` (n_mels, n_freqs) in ``dtype`` on ``xp``'s current device, cached."""
        dtype = np.dtype(dtype)
        return self.cached(("A", dtype.str, _backend.device_id(xp)),
                           lambda: xp.ascontiguousarray(xp.asarray(self.fb(dtype).T)))

    def pinv(self, dtype):
        dtype = np.dtype(dtype)
        return self.cached(("pinv", dtype.str), lambda: _lstsq.pseudo_inverse(self.fb64, dtype))

    def nnls(self):
        return self.cached("nnls", lambda: _nnls.NnlsPlan(self.sparse))


@functools.lru_cache(maxsize=32)
def get_plan(key):
    return Plan(key)


@dataclass
class SolveInfo:
    """Diagnostics of one call (``return_info=True``).

    Attributes
    ----------
    solver : str
    device : str
        "cpu" or "cuda".
    iterations : ndarray of int, shape (..., T)
        Iterations per frame (the global count for "torchaudio", the channel's for "mindspore",
        0 for "lstsq").
    mel_residual : ndarray, shape (..., T)
        ``||A s_t - m_t|| / ||m_t||`` per frame (0 where the frame is all zero).
    total_mel_residual : float
        ``||A S - M|| / ||M||`` over the whole input (the figure the benchmark reports).
    seconds : float
        Wall time of the solve, device-synchronised.
    """
    solver: str
    device: str
    iterations: np.ndarray
    mel_residual: np.ndarray
    total_mel_residual: float
    seconds: float


class MelScale:
    """Forward transform: linear spectrogram (..., n_stft, time) -> mel (..., n_mels, time).

    Parameters follow ``torchaudio.transforms.MelScale`` (``mel_scale`` may also be spelt
    ``mel_type`` as in MindSpore).
    """

    def __init__(self, n_mels=128, sample_rate=16000, f_min=0.0, f_max=None, n_stft=201,
                 norm=None, mel_scale="htk"):
        self.key = _filterbank_key(n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale,
                                   "mel_scale")
        self.n_stft, self.n_mels = int(n_stft), int(n_mels)
        self.plan = get_plan(self.key)

    @property
    def fb(self):
        return self.plan.fb(np.float32)

    def __call__(self, specgram):
        xp = _backend.get_array_module(specgram)
        if specgram.ndim < 2 or specgram.shape[-2] != self.n_stft:
            raise ValueError(f"specgram must have shape (..., n_stft={self.n_stft}, time), "
                             f"got {tuple(specgram.shape)}")
        dtype = specgram.dtype if specgram.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        return xp.matmul(self.plan.forward(dtype, xp), specgram.astype(dtype, copy=False))


def _filterbank_key(n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_type, mel_param):
    _validate.check_positive_int(sample_rate, "sample_rate")   # before sample_rate // 2
    f_max = _validate.resolve_f_max(f_max, sample_rate)
    norm = _validate.canonical_norm(norm)
    mel_scale = _validate.canonical_mel_scale(mel_type, mel_param)
    # validates the remaining arguments, and warns once here on empty filters, like torchaudio
    melscale_fbanks(n_stft, f_min, f_max, n_mels, sample_rate,
                    norm, mel_scale)
    return (int(n_stft), float(f_min), float(f_max), int(n_mels), int(sample_rate), norm, mel_scale)


class InverseMelScale:
    """Recover a non-negative linear spectrogram from a mel spectrogram.

    Parameters
    ----------
    n_stft : int
        Number of linear frequency bins (``n_fft // 2 + 1``).
    n_mels : int, default 128
    sample_rate : int, default 16000
        Hz.
    f_min : float, default 0.0
    f_max : float or None, default None
        Hz; None means ``sample_rate // 2``.
    max_iter : int, default 100000
        Iteration cap: per frame for "nnls" (Newton steps), per batch for "torchaudio", per
        channel for "mindspore". Ignored by "lstsq".
    tolerance_loss, tolerance_change : float, default 1e-5, 1e-8
        Stopping rule. SGD solvers: the anchor's rule on the loss. "nnls": a frame stops when its
        relative KKT residual is below ``tolerance_loss`` or its Newton step moves the spectrum
        by less than ``tolerance_change`` relative to the answer (see ``cumel.solvers.nnls``).
    sgdargs : dict or None
        SGD settings of the "torchaudio" solver (lr, momentum, dampening, nesterov, weight_decay)
        or the "mindspore" solver (sgd_lr, sgd_momentum); an error with the other solvers.
    norm : {None, "slaney"} (also "none", NormType.NONE/SLANEY)
    mel_type : {"htk", "slaney"} (also MelType.HTK/SLANEY, any case)
    solver : {"nnls", "lstsq", "torchaudio", "mindspore"}, keyword only
        "nnls" (default): the converged non-negative least-squares answer per frame.
        "lstsq": torchaudio 2.x (minimum-norm least squares + relu).
        "torchaudio": torchaudio 0.8's SGD, exactly. "mindspore": MindSpore's algorithm, exactly.
    seed : int or None, keyword only
        Start of the SGD solvers: ``torch.manual_seed(seed)`` / MindSpore ``set_seed(seed)``
        streams, reproduced bit for bit. None draws a fresh seed.
    device : {None, "cpu", "cuda", "auto"}, keyword only
        Where a NumPy input is solved (CuPy input always runs on its own device).
    max_device_bytes : int or None, keyword only
        Cap on the device memory one call may take (None: a fraction of what is free). nnls and
        lstsq stream larger batches through in chunks; the SGD solvers raise when above it.

    Call with ``mel`` of shape (..., n_mels, time): returns (..., n_stft, time) of the same array
    type (for "mindspore", a 2-D input gives (1, n_stft, time), as MindSpore does).
    """

    def __init__(self, n_stft, n_mels=128, sample_rate=16000, f_min=0.0, f_max=None,
                 max_iter=100000, tolerance_loss=1e-5, tolerance_change=1e-8, sgdargs=None,
                 norm=None, mel_type="htk", *, solver="nnls", seed=None, device=None,
                 max_device_bytes=None):
        self.solver = _validate.canonical_solver(solver)
        self.key = _filterbank_key(n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_type,
                                   "mel_type")
        self.n_stft, self.n_mels = int(n_stft), int(n_mels)
        self.max_iter = _validate.check_positive_int(max_iter, "max_iter")
        self.tolerance_loss = _validate.check_tolerance(tolerance_loss, "tolerance_loss")
        self.tolerance_change = _validate.check_tolerance(tolerance_change, "tolerance_change")
        self.sgdargs = _validate.canonical_sgdargs(sgdargs, self.solver)
        self.seed = _validate.check_seed(seed)
        self.device = _backend.check_device(device)
        self.max_device_bytes = (None if max_device_bytes is None else
                                 _validate.check_positive_int(max_device_bytes, "max_device_bytes"))
        self.plan = get_plan(self.key)

    @property
    def fb(self):
        """The filterbank, (n_stft, n_mels) float32, torchaudio layout."""
        return self.plan.fb(np.float32)

    def __repr__(self):
        n_stft, f_min, f_max, n_mels, sr, norm, scale = self.key
        return (f"InverseMelScale(n_stft={n_stft}, n_mels={n_mels}, sample_rate={sr}, f_min={f_min}, "
                f"f_max={f_max}, norm={norm!r}, mel_type={scale!r}, solver={self.solver!r})")

    def __call__(self, mel, *, out=None, return_info=False):
        """Invert ``mel`` (..., n_mels, time). With ``return_info=True`` returns ``(S, SolveInfo)``.

        NumPy, CuPy (solved on its own device), torch tensors (a tensor of the same device back,
        no copy either way) and CPU DLPack producers are accepted. ``out``: an array of the
        result's kind (NumPy or torch CPU tensor for a host result, CuPy or torch CUDA tensor for
        a device result), shape (..., n_stft, time) and dtype; the result is written into it and
        ``out`` is returned.
        """
        with _backend.foreign_scope(mel) as (mel, back):
            S, info = self._call(mel, out=out, return_info=return_info)
            S = out if out is not None else back(S)
            return (S, info) if return_info else S

    def _out_target(self, out, mel, lead, T, dtype):
        """``out`` as an array of the result's module, checked against the result's shape and
        dtype (before any work is done)."""
        result_xp = _backend.get_array_module(mel)       # CuPy input: CuPy result, else NumPy
        target = _backend.out_view(out, result_xp)
        shape = (lead if (lead or self.solver != "mindspore") else (1,)) + (self.n_stft, T)
        if tuple(target.shape) != shape or target.dtype != dtype:
            raise ValueError(f"out must have shape {shape} and dtype {dtype}, got "
                             f"{tuple(target.shape)} and {target.dtype}")
        return target

    def _call(self, mel, *, out=None, return_info=False):
        streamed = _backend.wants_gpu(mel, self.device)  # host in, GPU solve, chunk by chunk
        xp, mel_x, to_caller = _backend.select(mel, "cpu" if streamed else self.device)
        _validate.check_mel_input(mel_x, self.n_mels, xp)
        dtype = np.dtype(np.float64) if mel_x.dtype == np.float64 else np.dtype(np.float32)
        lead, T = tuple(mel_x.shape[:-2]), mel_x.shape[-1]
        target = None if out is None else self._out_target(out, mel, lead, T, dtype)
        B = int(np.prod(lead, dtype=np.int64))
        packed = mel_x.reshape((B, self.n_mels, T)).astype(dtype, copy=True)  # never alias the caller
        t0 = time.perf_counter()
        if packed.shape[0] == 0 or T == 0:
            S = xp.zeros(packed.shape[:1] + (self.n_stft, T), dtype)
            iterations = np.zeros(packed.shape[:1] + (T,), np.int64)
        else:
            S, iterations, streamed = (self._solve_streamed(packed) if streamed
                                       else self._solve(xp, packed) + (False,))
            if not bool(xp.isfinite(S).all()):
                hint = (f" (diverged: lower sgdargs['lr']={self.sgdargs['lr']})"
                        if self.solver in ("torchaudio", "mindspore") else "")
                raise FloatingPointError(f"solver={self.solver!r} produced non-finite values{hint}")
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()
        seconds = time.perf_counter() - t0
        out_lead = lead if (lead or self.solver != "mindspore") else (1,)
        out = S.reshape(out_lead + (self.n_stft, T))
        result = to_caller(out)
        if target is not None:
            target[...] = result       # same module and device (checked by _out_target)
        if not return_info:
            return result, None
        info = self._info(xp, packed, S, iterations, lead, T, seconds)
        if streamed:
            info.device = "cuda"
        return result, info

    # -- dispatch -------------------------------------------------------------------------------

    def _solve_streamed(self, packed):
        """A host batch solved on the GPU (``cumel.cuda.solve_host``): ``(S, iterations, True)``;
        under ``device="auto"`` a shape or batch the device cannot take falls back to the CPU
        with a warning: ``(S, iterations, False)``."""
        from . import cuda
        try:
            return cuda.solve_host(self, packed) + (True,)
        except (cuda.DeviceLimitError, cuda.DeviceMemoryError) as exc:
            if self.device != "auto":
                raise
            warnings.warn(f"cumel: solving on the CPU instead: {exc}", RuntimeWarning, stacklevel=4)
            return self._solve(np, packed) + (False,)

    def _solve(self, xp, packed):
        """(B, n_mels, T) in float32/64 on ``xp`` -> (S (B, n_stft, T), iterations (B, T))."""
        B, _, T = packed.shape
        if xp is not np:
            from . import cuda
            return cuda.solve(self, packed)
        if self.solver == "lstsq":
            S = _lstsq.solve(packed, self.plan.pinv(packed.dtype))
            return S, np.zeros((B, T), np.int64)
        if self.solver == "nnls":
            frames = packed.transpose(1, 0, 2).reshape(self.n_mels, B * T)   # one column a frame
            s, iters, _ = _nnls.solve(self.plan.nnls(), frames, max_iter=self.max_iter,
                                      tolerance_loss=self.tolerance_loss,
                                      tolerance_change=self.tolerance_change)
            S = s.astype(packed.dtype).reshape(self.n_stft, B, T).transpose(1, 0, 2)
            return np.ascontiguousarray(S), iters.reshape(B, T)
        fb = self.plan.fb(packed.dtype)
        if self.solver == "torchaudio":
            s0 = self.start((B, T, self.n_stft), packed.dtype)
            S, n = _torchaudio.solve(packed, fb, s0, max_iter=self.max_iter,
                                     tolerance_loss=self.tolerance_loss,
                                     tolerance_change=self.tolerance_change, sgd=self.sgdargs)
            return S, np.full((B, T), n, np.int64)
        x0 = self.start((B, self.n_stft, T), packed.dtype)
        S, n = _mindspore.solve(packed, fb, x0, max_iter=self.max_iter,
                                tolerance_loss=self.tolerance_loss,
                                tolerance_change=self.tolerance_change, lr=self.sgdargs["lr"])
        return S, np.repeat(n[:, None], T, axis=1)

    def start(self, shape, dtype, xp=np):
        """The SGD solver's start point of ``shape`` (C order of torch's or MindSpore's draws).

        With a fixed ``seed`` it is the same every call, so the last one is kept (per array
        module and device) and a copy handed out; ``seed=None`` draws a fresh seed each call.
        """
        draw = _random.torch_rand if self.solver == "torchaudio" else _random.mindspore_uniform
        if self.seed is None:
            return xp.asarray(draw(int(np.random.SeedSequence().generate_state(1)[0]), shape, dtype))
        key = (tuple(shape), np.dtype(dtype).str, _backend.device_id(xp))
        cache = self.__dict__.setdefault("_starts", {})
        start = cache.get(key)   # one lookup: another thread may clear the cache meanwhile
        if start is None:
            start = xp.asarray(draw(self.seed, shape, dtype))
            cache.clear()  # keep one: a batch's start can be large
            cache[key] = start
        return start.copy()

    def _info(self, xp, packed, S, iterations, lead, T, seconds):
        M = packed.astype(np.float64)
        R = xp.matmul(self.plan.forward(np.float64, xp), S.astype(np.float64)) - M
        r_norm = xp.sqrt((R * R).sum(axis=1))
        m_norm = xp.sqrt((M * M).sum(axis=1))
        per_frame = _backend.to_numpy(xp.where(m_norm > 0, r_norm / xp.where(m_norm > 0, m_norm, 1), 0))
        total = float(xp.sqrt((R * R).sum()) / max(float(xp.sqrt((M * M).sum())), np.finfo(float).tiny))
        return SolveInfo(self.solver, "cpu" if xp is np else "cuda",
                         np.asarray(_backend.to_numpy(iterations)).reshape(lead + (T,)),
                         per_frame.reshape(lead + (T,)), total, seconds)


def inverse_mel_scale(mel, n_stft, n_mels=None, sample_rate=16000, f_min=0.0, f_max=None,
                      max_iter=100000, tolerance_loss=1e-5, tolerance_change=1e-8, sgdargs=None,
                      norm=None, mel_type="htk", *, solver="nnls", seed=None, device=None,
                      return_info=False, out=None, max_device_bytes=None):
    """Functional form of :class:`InverseMelScale`; ``n_mels`` defaults to ``mel.shape[-2]``.

    The per-filterbank work is cached across calls with the same filterbank arguments.
    """
    if n_mels is None:
        if getattr(mel, "ndim", 0) < 2:
            raise ValueError(f"mel must have at least 2 dims (..., n_mels, time), got shape "
                             f"{tuple(getattr(mel, 'shape', ()))}")
        n_mels = mel.shape[-2]
    transform = InverseMelScale(n_stft, n_mels, sample_rate, f_min, f_max, max_iter,
                                tolerance_loss, tolerance_change, sgdargs, norm, mel_type,
                                solver=solver, seed=seed, device=device,
                                max_device_bytes=max_device_bytes)
    return transform(mel, out=out, return_info=return_info)
