"""Public API: ``InverseMelScale``, ``MelScale`` and the functional ``inverse_mel_scale``.

The transform validates its arguments once, builds (or fetches from a cache) the per-filterbank
:class:`Plan`, and on each call packs the input to ``(B, n_mels, T)``, picks the backend
(``cumel._backend.select``), runs the solver and unpacks.
"""
from __future__ import annotations

import functools
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

    def cached(self, name, build):
        """``build()`` once per ``name`` (a hashable key), then the stored value."""
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
    converged : ndarray of bool, shape (..., T)
        Per frame: "nnls", its relative KKT residual meets ``tolerance_loss``; the SGD solvers,
        their stopping rule fired before ``max_iter`` (for the batch, or the channel); "lstsq",
        always (a direct method).
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
    converged: np.ndarray
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

    Call with ``mel`` of shape (..., n_mels, time): returns (..., n_stft, time) of the same array
    type (for "mindspore", a 2-D input gives (1, n_stft, time), as MindSpore does).
    """

    def __init__(self, n_stft, n_mels=128, sample_rate=16000, f_min=0.0, f_max=None,
                 max_iter=100000, tolerance_loss=1e-5, tolerance_change=1e-8, sgdargs=None,
                 norm=None, mel_type="htk", *, solver="nnls", seed=None, device=None):
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
        self.plan = get_plan(self.key)

    @property
    def fb(self):
        """The filterbank, (n_stft, n_mels) float32, torchaudio layout."""
        return self.plan.fb(np.float32)

    def __repr__(self):
        n_stft, f_min, f_max, n_mels, sr, norm, scale = self.key
        return (f"InverseMelScale(n_stft={n_stft}, n_mels={n_mels}, sample_rate={sr}, f_min={f_min}, "
                f"f_max={f_max}, norm={norm!r}, mel_type={scale!r}, solver={self.solver!r})")

    # -- pickling: the constructor's arguments travel, the plan is rebuilt from its key ----------

    def __getstate__(self):
        # drop the plan (pseudo-inverses, factors, device copies) and the cached SGD start
        return {k: v for k, v in self.__dict__.items() if k not in ("plan", "_starts")}

    def __getattr__(self, name):
        # after unpickling, the plan comes from this process's cache (get_plan) on first use
        if name == "plan" and "key" in self.__dict__:
            self.plan = get_plan(self.key)
            return self.plan
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, mel, *, out=None, return_info=False):
        """Invert ``mel`` (..., n_mels, time).

        Parameters
        ----------
        mel : array, shape (..., n_mels, time)
            NumPy or CuPy; never modified.
        out : array, shape (..., n_stft, time), optional
            Where to write the result (same array type as the result, dtype float32 for float32
            or integer input, float64 for float64, any strides, not overlapping ``mel``); it is
            returned. On the CPU the default solver writes it chunk by chunk, so the output is
            the only allocation that grows with the batch.
        return_info : bool
            Also return a :class:`SolveInfo`.

        Returns
        -------
        S : array, shape (..., n_stft, time), or ``(S, SolveInfo)``
            A ``dask.array.Array`` gives a lazy ``dask.array.Array`` (see ``cumel._dask.invert``).
        """
        if type(mel).__module__.startswith("dask."):   # dask is never imported for other input
            from . import _dask
            if out is not None:
                raise ValueError("out= does not apply to a dask.array input (the result is lazy)")
            return _dask.invert(self, mel, return_info=return_info)
        xp, mel_x, to_caller = _backend.select(mel, self.device)
        _validate.check_mel_input(mel_x, self.n_mels, xp)
        dtype = np.dtype(np.float64) if mel_x.dtype == np.float64 else np.dtype(np.float32)
        lead, T = tuple(mel_x.shape[:-2]), mel_x.shape[-1]
        B = int(np.prod(lead, dtype=np.int64))
        packed = mel_x.reshape((B, self.n_mels, T))    # a view where strides allow; read only
        out_lead = lead if (lead or self.solver != "mindspore") else (1,)
        out_shape = out_lead + (self.n_stft, T)
        if out is None:
            target = None
            S = xp.empty((B, self.n_stft, T), dtype)
        else:
            target = _backend.out_view(out, xp)
            _validate.check_out(target, out_shape, dtype, mel_x, xp)
            S = target.reshape((B, self.n_stft, T))
            if not xp.may_share_memory(S, target):   # strides that reshape had to copy
                S = xp.empty((B, self.n_stft, T), dtype)
        t0 = time.perf_counter()
        if B == 0 or T == 0:
            S[...] = 0
            iterations = xp.zeros((B, T), np.int64)
            converged = xp.ones((B, T), bool)
        else:
            iterations, converged = self._solve(xp, packed, S)
            if not _all_finite(xp, S):
                raise FloatingPointError(self._non_finite_message(xp, packed, dtype))
            self._warn_ran_out(xp, iterations, converged)
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()
        seconds = time.perf_counter() - t0
        if target is not None:
            if not xp.may_share_memory(S, target):
                target[...] = S.reshape(out_shape)
            result = out
        else:
            result = to_caller(S.reshape(out_shape))
        if not return_info:
            return result
        return result, self._info(xp, packed, S, iterations, converged, lead, T, seconds)

    # -- dispatch -------------------------------------------------------------------------------

    def _solve(self, xp, packed, S):
        """Solve (B, n_mels, T) ``packed`` on ``xp`` into ``S`` (B, n_stft, T).

        Returns ``iterations`` (B, T) int64 and ``converged`` (B, T) bool, on ``xp``.
        """
        B, _, T = packed.shape
        if xp is not np:
            from . import cuda
            _, iterations, kkt = cuda.solve(self, packed, out=S)
            if self.solver == "nnls":
                return iterations, kkt <= self.tolerance_loss
            return iterations, self._sgd_converged(iterations)
        # overflow (a diverged SGD run, an answer beyond the dtype) is detected and reported by
        # the caller, with its cause: NumPy's warnings on the way would only be noise
        with np.errstate(over="ignore", invalid="ignore"):
            return self._solve_cpu(packed, S)

    def _solve_cpu(self, packed, S):
        B, _, T = packed.shape
        if self.solver == "lstsq":
            _lstsq.solve(packed.astype(S.dtype, copy=False), self.plan.pinv(S.dtype), out=S)
            return np.zeros((B, T), np.int64), np.ones((B, T), bool)
        if self.solver == "nnls":
            iterations, kkt = _nnls.solve_into(
                self.plan.nnls(), packed, S, max_iter=self.max_iter,
                tolerance_loss=self.tolerance_loss, tolerance_change=self.tolerance_change)
            return iterations, kkt <= self.tolerance_loss
        packed = packed.astype(S.dtype, copy=False)
        fb = self.plan.fb(S.dtype)
        if self.solver == "torchaudio":
            s0 = self.start((B, T, self.n_stft), S.dtype)
            S[...], n = _torchaudio.solve(packed, fb, s0, max_iter=self.max_iter,
                                          tolerance_loss=self.tolerance_loss,
                                          tolerance_change=self.tolerance_change, sgd=self.sgdargs)
            iterations = np.full((B, T), n, np.int64)
        else:
            x0 = self.start((B, self.n_stft, T), S.dtype)
            S[...], n = _mindspore.solve(packed, fb, x0, max_iter=self.max_iter,
                                         tolerance_loss=self.tolerance_loss,
                                         tolerance_change=self.tolerance_change,
                                         lr=self.sgdargs["lr"])
            iterations = np.repeat(n[:, None], T, axis=1)
        return iterations, self._sgd_converged(iterations)

    def _sgd_converged(self, iterations):
        # the rule fired before max_iter (a rule firing at exactly max_iter counts as not)
        return iterations < self.max_iter

    def _warn_ran_out(self, xp, iterations, converged):
        """One warning per call when nnls frames stopped on the step cap, not on a rule."""
        if self.solver != "nnls":
            return
        cap = min(self.max_iter, _nnls.step_bound(self.n_mels))
        n_out = int((~converged & (iterations >= cap)).sum())
        if n_out:
            which = (f"max_iter={self.max_iter}" if cap == self.max_iter else
                     f"the step bound 4 * n_mels + 32 = {cap}")
            warnings.warn(f"solver='nnls': {n_out} of {converged.size} frames stopped after "
                          f"{which} Newton steps without meeting tolerance_loss="
                          f"{self.tolerance_loss:g} (SolveInfo.converged marks them); raise "
                          f"max_iter or loosen tolerance_loss", RuntimeWarning, stacklevel=3)

    def _non_finite_message(self, xp, packed, dtype):
        peak = float(xp.abs(packed).max())
        where = f"solver={self.solver!r} produced non-finite values"
        if self.solver in ("torchaudio", "mindspore"):
            # the loss is squared in float64, but the iterate, residual and gradient live in the
            # input dtype: within a few decades of its maximum they overflow
            top = float(np.finfo(dtype).max)
            if peak > 1e-3 * top:
                return (f"{where}: mel values up to {peak:.3g} overflow {dtype} arithmetic (it "
                        f"holds at most {top:.3g}); pass float64 input or rescale the mel")
            return f"{where} (diverged: lower sgdargs['lr']={self.sgdargs['lr']})"
        return (f"{where}: the spectrogram exceeds the {dtype} range (mel values up to "
                f"{peak:.3g}); pass float64 input or rescale the mel")

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
        if key not in cache:
            cache.clear()  # keep one: a batch's start can be large
            cache[key] = xp.asarray(draw(self.seed, shape, dtype))
        return cache[key].copy()

    def _info(self, xp, packed, S, iterations, converged, lead, T, seconds):
        """Per-frame mel residuals in float64, a few batch items at a time (bounded memory).

        Each frame is rescaled by a power of two (its largest |m| in [0.5, 1)) before squaring,
        so no norm under- or overflows at any scale; the total weighs the frames back.
        """
        A = self.plan.forward(np.float64, xp)
        B = packed.shape[0]
        step = max(1, (1 << 22) // max(1, self.n_stft * T))
        ratio, r_norms, m_norms, exponents = [], [], [], []
        for b in range(0, B, step):
            M = packed[b:b + step].astype(np.float64)
            _, e = xp.frexp(xp.abs(M).max(axis=1))               # (b, T)
            shift = -e[:, None, :]          # ldexp, not a factor 2^-e: that can overflow itself
            M = xp.ldexp(M, shift)
            R = xp.matmul(A, xp.ldexp(S[b:b + step].astype(np.float64), shift)) - M
            r = xp.sqrt((R * R).sum(axis=1))
            m = xp.sqrt((M * M).sum(axis=1))
            ratio.append(_backend.to_numpy(xp.where(m > 0, r / xp.where(m > 0, m, 1), 0)))
            r_norms.append(_backend.to_numpy(r))
            m_norms.append(_backend.to_numpy(m))
            exponents.append(_backend.to_numpy(e))
        if B:
            e = np.concatenate(exponents)
            weight = np.ldexp(1.0, e - e.max())                    # frames back to one scale
            r_all = np.concatenate(r_norms) * weight
            m_all = np.concatenate(m_norms) * weight
            total = float(np.sqrt((r_all * r_all).sum()) /
                          max(np.sqrt((m_all * m_all).sum()), np.finfo(float).tiny))
            per_frame = np.concatenate(ratio)
        else:
            total, per_frame = 0.0, np.zeros((0, T))
        return SolveInfo(self.solver, "cpu" if xp is np else "cuda",
                         np.asarray(_backend.to_numpy(iterations)).reshape(lead + (T,)),
                         np.asarray(_backend.to_numpy(converged)).reshape(lead + (T,)),
                         per_frame.reshape(lead + (T,)), total, seconds)


def _all_finite(xp, S):
    """``xp.isfinite(S).all()`` a few million elements at a time (no output-sized mask)."""
    step = max(1, (1 << 22) // max(1, S[0].size)) if S.shape[0] else 1
    return all(bool(xp.isfinite(S[b:b + step]).all()) for b in range(0, S.shape[0], step))


def inverse_mel_scale(mel, n_stft, n_mels=None, sample_rate=16000, f_min=0.0, f_max=None,
                      max_iter=100000, tolerance_loss=1e-5, tolerance_change=1e-8, sgdargs=None,
                      norm=None, mel_type="htk", *, solver="nnls", seed=None, device=None,
                      out=None, return_info=False):
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
                                solver=solver, seed=seed, device=device)
    return transform(mel, out=out, return_info=return_info)
