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
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import _backend, _progress, _random, _threads, _validate
from ._typing import Array, ArrayModule, Progress
from .filterbank import UserFilterbank, melscale_fbanks, sparse_of_key
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
        self.sparse = sparse_of_key(key)
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
    """The shared :class:`Plan` of a filterbank key: the canonical filterbank arguments, or
    ``(UserFilterbank,)`` for a caller's matrix (keyed by its bytes' hash)."""
    return Plan(key)


def describe_key(key):
    """The filterbank part of a transform's repr."""
    if len(key) == 1:
        return f"fb={key[0]!r}"
    _, f_min, f_max, _, sr, norm, scale = key
    return f"sample_rate={sr}, f_min={f_min}, f_max={f_max}, norm={norm!r}, mel_type={scale!r}"


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

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> mel = cumel.MelScale(n_mels=64, n_stft=201)(np.random.default_rng(0).random((201, 50)))
    >>> S, info = cumel.InverseMelScale(n_stft=201, n_mels=64)(mel, return_info=True)
    >>> info.solver, info.device, info.iterations.shape
    ('nnls', 'cpu', (50,))
    >>> bool(info.converged.all()), bool(info.mel_residual.max() < 1e-5)
    (True, True)
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

    Parameters
    ----------
    n_mels : int, default 128
        Number of mel filters (ignored with ``fb``).
    sample_rate : int, default 16000
        Hz.
    f_min : float, default 0.0
        Lowest frequency of the filterbank, Hz.
    f_max : float or None, default None
        Highest frequency, Hz; None means ``sample_rate // 2``.
    n_stft : int, default 201
        Number of linear frequency bins (``n_fft // 2 + 1``).
    norm : {None, "slaney"}
        Slaney's area normalisation of the triangles, or none.
    mel_scale : {"htk", "slaney"}, default "htk"
        The mel scale (MindSpore's ``mel_type``).
    fb : array_like, optional, keyword only
        A filterbank matrix of your own, as for :class:`InverseMelScale`.

    Returns
    -------
    callable
        Called with ``specgram`` of shape (..., n_stft, time) (NumPy, CuPy or torch), it returns
        ``fb.T @ specgram`` of shape (..., n_mels, time), float64 for float64 input and float32
        otherwise, of the same array type.

    Raises
    ------
    ValueError
        A parameter out of range (the message names it and its value), or a ``specgram`` whose
        shape is not (..., n_stft, time).

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> mel_scale = cumel.MelScale(n_mels=64, sample_rate=16000, n_stft=201)
    >>> mel_scale.fb.shape                        # (n_stft, n_mels), torchaudio's layout
    (201, 64)
    >>> S = np.ones((2, 201, 10), np.float32)     # a batch of two spectrograms, 10 frames each
    >>> mel_scale(S).shape
    (2, 64, 10)
    """

    def __init__(self, n_mels: int = 128, sample_rate: float = 16000, f_min: float = 0.0,
                 f_max: float | None = None, n_stft: int = 201, norm: str | None = None,
                 mel_scale: str = "htk", *, fb: Array | None = None) -> None:
        self.key = _filterbank_key(n_stft, None if fb is not None else n_mels, sample_rate,
                                   f_min, f_max, norm, mel_scale, "mel_scale", fb)
        self.plan = get_plan(self.key)
        self.n_stft, self.n_mels = self.plan.sparse.n_freqs, self.plan.sparse.n_mels

    @property
    def fb(self) -> np.ndarray:
        return self.plan.fb(np.float32)

    def __call__(self, specgram: Array) -> Array:
        xp = _backend.get_array_module(specgram)
        if specgram.ndim < 2 or specgram.shape[-2] != self.n_stft:
            raise ValueError(f"specgram must have shape (..., n_stft={self.n_stft}, time), "
                             f"got {tuple(specgram.shape)}")
        dtype = specgram.dtype if specgram.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        return xp.matmul(self.plan.forward(dtype, xp), specgram.astype(dtype, copy=False))


def _filterbank_key(n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_type, mel_param,
                    fb=None):
    if fb is not None:     # the caller's matrix: its own key, its structure checked by the plan
        user = UserFilterbank.from_matrix(fb, _validate.check_positive_int(n_stft, "n_stft"),
                                          None if n_mels is None else
                                          _validate.check_positive_int(n_mels, "n_mels"))
        key = (user,)
        get_plan(key)
        return key
    n_mels = 128 if n_mels is None else n_mels
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
    n_mels : int, optional
        Default 128, or the number of filters of ``fb``.
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
    workers : int or None, keyword only
        Threads of the CPU "nnls" solver (``scipy.fft``'s spelling): None (default) uses every
        core this process may run on, 1 the calling thread only. The frames are independent,
        so the result's bits do not depend on it. ("lstsq" is one matrix product, threaded by
        NumPy's BLAS; the SGD solvers run in the calling thread.) Inside a Dask graph each
        block uses one thread unless ``workers`` is given.
    progress : bool, "auto" or callable, keyword only
        A progress bar on stderr in frames per second (tqdm, ``pip install 'cumel[progress]'``)
        for CPU "nnls" calls: True always, "auto" once a call has run for 2 s, False (default)
        never; a callable is called with the number of frames of each chunk solved.
    fb : array_like, optional, keyword only
        A filterbank of your own instead of the one ``sample_rate``, ``f_min``, ``f_max``,
        ``norm`` and ``mel_type`` describe (which are then ignored): shape ``(n_stft, n_mels)``
        (torchaudio's layout, ``WhisperFeatureExtractor.mel_filters``) or ``(n_mels, n_stft)``
        (``librosa.filters.mel``); NumPy, CuPy or a torch tensor. It must have the structure of
        a triangular mel filterbank (every bin in at most two filters, and those neighbours,
        ordered by frequency: what nnls's tridiagonal steps rely on), otherwise a ValueError
        says which bin breaks it. Transforms with bit-equal matrices share one plan.

    Returns
    -------
    callable
        Call with ``mel`` of shape (..., n_mels, time) (:meth:`__call__`): returns
        (..., n_stft, time) of the same array type (for "mindspore", a 2-D input gives
        (1, n_stft, time), as MindSpore does).

    Raises
    ------
    ValueError
        A parameter out of range or of the wrong type (the message names the parameter and the
        value), ``sgdargs`` given to a solver without SGD settings, or an ``fb`` without the
        structure of a mel filterbank.

    Warns
    -----
    UserWarning
        The filterbank has an empty filter (too many mels for the bins, as torchaudio warns).

    See Also
    --------
    inverse_mel_scale : the same as a function.
    mel_to_audio : a mel spectrogram to sound.

    Notes
    -----
    A mel given here is taken as linear (a power or magnitude mel). When 10 % or more of its
    values are negative, a ``UserWarning`` says it looks like a log or dB mel: undo the
    compression first, or use :func:`cumel.frontend`. The solvers and their math are in the
    user guide ("Solvers and the math of the iteration").

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> rng = np.random.default_rng(0)
    >>> S_true = rng.random((201, 50)).astype(np.float32)    # a power spectrogram, 50 frames
    >>> mel = cumel.MelScale(n_mels=64, n_stft=201)(S_true)  # its mel spectrogram (64, 50)
    >>> inverse = cumel.InverseMelScale(n_stft=201, n_mels=64)
    >>> S, info = inverse(mel, return_info=True)
    >>> S.shape, S.dtype, bool((S >= 0).all())
    ((201, 50), dtype('float32'), True)
    >>> bool(info.converged.all()), info.total_mel_residual < 1e-5
    (True, True)

    Leading dimensions are a batch; the torchaudio 2.x answer (least squares, negatives set to
    zero) leaves far more of the mel unexplained:

    >>> inverse(np.stack([mel, mel])).shape
    (2, 201, 50)
    >>> lstsq = cumel.InverseMelScale(n_stft=201, n_mels=64, solver="lstsq")
    >>> lstsq(mel, return_info=True)[1].total_mel_residual > 1e-3
    True
    """

    def __init__(self, n_stft: int, n_mels: int | None = None, sample_rate: float = 16000,
                 f_min: float = 0.0, f_max: float | None = None, max_iter: int = 100000,
                 tolerance_loss: float = 1e-5, tolerance_change: float = 1e-8,
                 sgdargs: dict[str, Any] | None = None, norm: str | None = None,
                 mel_type: str = "htk", *, solver: str = "nnls", seed: int | None = None,
                 device: str | None = None, max_device_bytes: int | None = None,
                 workers: int | None = None, progress: Progress = False,
                 fb: Array | None = None) -> None:
        self.solver = _validate.canonical_solver(solver)
        self.key = _filterbank_key(n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_type,
                                   "mel_type", fb)
        sparse = get_plan(self.key).sparse
        self.n_stft, self.n_mels = sparse.n_freqs, sparse.n_mels
        self.max_iter = _validate.check_positive_int(max_iter, "max_iter")
        self.tolerance_loss = _validate.check_tolerance(tolerance_loss, "tolerance_loss")
        self.tolerance_change = _validate.check_tolerance(tolerance_change, "tolerance_change")
        self.sgdargs = _validate.canonical_sgdargs(sgdargs, self.solver)
        self.seed = _validate.check_seed(seed)
        self.device = _backend.check_device(device)
        self.max_device_bytes = (None if max_device_bytes is None else
                                 _validate.check_positive_int(max_device_bytes, "max_device_bytes"))
        self.workers = _threads.check_workers(workers)
        self.progress = _progress.check_progress(progress)
        self.plan = get_plan(self.key)

    @property
    def fb(self) -> np.ndarray:
        """The filterbank, (n_stft, n_mels) float32, torchaudio layout."""
        return self.plan.fb(np.float32)

    def __repr__(self):
        return (f"InverseMelScale(n_stft={self.n_stft}, n_mels={self.n_mels}, "
                f"{describe_key(self.key)}, solver={self.solver!r})")

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

    def __call__(self, mel: Array, *, out: Array | None = None,
                 return_info: bool = False) -> Array | tuple[Array, SolveInfo]:
        """Invert ``mel`` (..., n_mels, time).

        Parameters
        ----------
        mel : array, shape (..., n_mels, time)
            NumPy, CuPy (solved on its own device), a torch tensor (a tensor of the same device
            back, no copy either way), a CPU DLPack producer, or a ``dask.array.Array`` (a lazy
            ``dask.array.Array`` back, see ``cumel._dask.invert``); never modified. A tensor
            that requires grad gets an answer with a gradient ("nnls": implicit differentiation,
            "lstsq": its adjoint; see :mod:`cumel.solvers.gradient` and :mod:`cumel.torch`), or
            a ``cumel.NoGradientError`` from the solvers that have none.
        out : array, shape (..., n_stft, time), optional
            Where to write the result: an array of the result's kind (NumPy or torch CPU tensor
            for a host result, CuPy or torch CUDA tensor for a device result), dtype float32 for
            float32 or integer input, float64 for float64, any strides, not overlapping ``mel``;
            it is returned. On the CPU the default solver writes it chunk by chunk, so the
            output is the only allocation that grows with the batch.
        return_info : bool
            Also return a :class:`SolveInfo`.

        Returns
        -------
        S : array, shape (..., n_stft, time), or ``(S, SolveInfo)``

        Raises
        ------
        ValueError
            ``mel`` of the wrong shape (fewer than 2 dimensions, or ``shape[-2] != n_mels``),
            holding NaN or Inf, or an ``out`` of the wrong shape, dtype or kind, read-only, or
            overlapping ``mel``.
        TypeError
            ``mel`` does not hold real numbers.
        MemoryError
            The SGD solvers on a device where the batch does not fit (the message says how much
            they need and how much is free).

        Warns
        -----
        RuntimeWarning
            "nnls" frames that stopped on the step cap without converging (marked in
            ``SolveInfo.converged``), or a ``device="auto"`` solve that fell back to the CPU.
        UserWarning
            A mel that looks like a log or dB mel (10 % or more negative values).
        """
        if type(mel).__module__.startswith("dask."):   # dask is never imported for other input
            from . import _dask
            if out is not None:
                raise ValueError("out= does not apply to a dask.array input (the result is lazy)")
            return _dask.invert(self, mel, return_info=return_info)
        if _backend.requires_grad(mel):     # a torch tensor recording gradients: give one
            from .torch import _ops
            return _ops.call_transform(self, mel, out=out, return_info=return_info)
        return self._values(mel, out=out, return_info=return_info)

    def _values(self, mel, *, out=None, return_info=False):
        """:meth:`__call__` for everything but Dask arrays and tensors recording gradients (the
        custom torch operator's implementation calls it too)."""
        with _backend.foreign_scope(mel) as (mel, back):
            S, info = self._call(mel, out=out, return_info=return_info)
            S = out if out is not None else back(S)
            return (S, info) if return_info else S

    def _call(self, mel, *, out, return_info):
        streamed = _backend.wants_gpu(mel, self.device)  # host in, GPU solve, chunk by chunk
        xp, mel_x, to_caller = _backend.select(mel, "cpu" if streamed else self.device)
        _validate.check_mel_input(mel_x, self.n_mels, xp)
        _validate.warn_if_compressed(mel_x, xp, stacklevel=4)
        dtype = np.dtype(np.float64) if mel_x.dtype == np.float64 else np.dtype(np.float32)
        lead, T = tuple(mel_x.shape[:-2]), mel_x.shape[-1]
        B = int(np.prod(lead, dtype=np.int64))
        packed = mel_x.reshape((B, self.n_mels, T))    # a view where strides allow; read only
        out_lead = lead if (lead or self.solver != "mindspore") else (1,)
        out_shape = out_lead + (self.n_stft, T)
        target = S = None
        if out is not None:            # checked before any work; CuPy input: a CuPy result
            result_xp = _backend.get_array_module(mel)
            target = _backend.out_view(out, result_xp)
            _validate.check_out(target, out_shape, dtype, mel, result_xp)
            if result_xp is xp:
                S = target.reshape((B, self.n_stft, T))
                if not xp.may_share_memory(S, target):   # strides that reshape had to copy
                    S = None
        if S is None:
            S = xp.empty((B, self.n_stft, T), dtype)
        t0 = time.perf_counter()
        if B == 0 or T == 0:
            S[...] = 0
            iterations = xp.zeros((B, T), np.int64)
            converged = xp.ones((B, T), bool)
        else:
            iterations, converged, streamed = self._solve(xp, packed, S, streamed)
            if not _all_finite(xp, S):
                raise FloatingPointError(self._non_finite_message(xp, packed, dtype))
            self._warn_ran_out(xp, iterations, converged)
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()
        seconds = time.perf_counter() - t0
        result = to_caller(S.reshape(out_shape))
        if target is not None and not xp.may_share_memory(S, target):
            target[...] = result       # same module and device (checked above)
        if not return_info:
            return result, None
        device = "cuda" if (streamed or xp is not np) else "cpu"
        return result, self._info(xp, packed, S, iterations, converged, lead, T, seconds, device)

    def _solve_checked(self, xp, packed):
        """``S`` (B, n_stft, T) float64 of (B, n_mels, T) frames already checked by the caller
        (finite, real, ``n_mels`` bands, on ``xp``): what :meth:`__call__` computes, in
        float64, without its checks, ``out=`` and report (:class:`cumel.MelStream` solves a
        frame or a few per push, where those cost more than the solve)."""
        B, _, T = packed.shape
        S = xp.empty((B, self.n_stft, T), np.float64)
        if B == 0 or T == 0:
            S[...] = 0
            return S
        iterations, converged, _ = self._solve(xp, packed, S, False)
        if not _all_finite(xp, S):
            raise FloatingPointError(self._non_finite_message(xp, packed, np.dtype(np.float64)))
        self._warn_ran_out(xp, iterations, converged)
        return S

    # -- dispatch -------------------------------------------------------------------------------

    def _solve(self, xp, packed, S, streamed):
        """Solve (B, n_mels, T) ``packed`` into ``S`` (B, n_stft, T): on the CPU, on the GPU
        (CuPy), or streamed from the host through the GPU (``streamed``).

        Returns ``iterations`` (B, T) int64, ``converged`` (B, T) bool, and whether the solve
        was streamed (under ``device="auto"`` a shape or batch the device cannot take falls
        back to the CPU with a warning).
        """
        if streamed:
            from . import cuda
            try:
                _, iterations, kkt = cuda.solve_host(self, packed.astype(S.dtype, copy=False), out=S)
                return iterations, self._converged(iterations, kkt), True
            except (cuda.DeviceLimitError, cuda.DeviceMemoryError) as exc:
                if self.device != "auto":
                    raise
                warnings.warn(f"cumel: solving on the CPU instead: {exc}", RuntimeWarning,
                              stacklevel=5)
        if xp is not np:
            from . import cuda
            _, iterations, kkt = cuda.solve(self, packed.astype(S.dtype, copy=False), out=S)
            return iterations, self._converged(iterations, kkt), False
        # overflow (a diverged SGD run, an answer beyond the dtype) is detected and reported by
        # the caller, with its cause: NumPy's warnings on the way would only be noise
        with np.errstate(over="ignore", invalid="ignore"):
            iterations, kkt = self._solve_cpu(packed, S)
        return iterations, self._converged(iterations, kkt), False

    def _converged(self, iterations, kkt):
        """Per frame: nnls, ``kkt <= tolerance_loss``; lstsq, always; the SGD solvers, their
        rule fired before ``max_iter`` (a rule firing at exactly ``max_iter`` counts as not)."""
        if self.solver == "nnls":
            return kkt <= self.tolerance_loss
        if self.solver == "lstsq":
            return iterations == iterations      # all True, on iterations' device
        return iterations < self.max_iter

    def _solve_cpu(self, packed, S):
        """The NumPy solvers: ``iterations`` (B, T) and nnls's ``kkt`` (B, T) or None."""
        B, _, T = packed.shape
        if self.solver == "lstsq":
            _lstsq.solve(packed.astype(S.dtype, copy=False), self.plan.pinv(S.dtype), out=S)
            return np.zeros((B, T), np.int64), None
        if self.solver == "nnls":
            with _progress.bar(self.progress, B * T, "frame", "cumel nnls") as update:
                return _nnls.solve_into(
                    self.plan.nnls(), packed, S, max_iter=self.max_iter,
                    tolerance_loss=self.tolerance_loss, tolerance_change=self.tolerance_change,
                    workers=_threads.resolve_workers(self.workers), progress=update)
        packed = packed.astype(S.dtype, copy=False)
        fb = self.plan.fb(S.dtype)
        if self.solver == "torchaudio":
            s0 = self.start((B, T, self.n_stft), S.dtype)
            S[...], n = _torchaudio.solve(packed, fb, s0, max_iter=self.max_iter,
                                          tolerance_loss=self.tolerance_loss,
                                          tolerance_change=self.tolerance_change, sgd=self.sgdargs)
            return np.full((B, T), n, np.int64), None
        x0 = self.start((B, self.n_stft, T), S.dtype)
        S[...], n = _mindspore.solve(packed, fb, x0, max_iter=self.max_iter,
                                     tolerance_loss=self.tolerance_loss,
                                     tolerance_change=self.tolerance_change,
                                     lr=self.sgdargs["lr"])
        return np.repeat(n[:, None], T, axis=1), None

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

    def start(self, shape: tuple[int, ...], dtype: DTypeLike, xp: ArrayModule = np) -> Array:
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
            cache.clear()  # keep one: a batch's start can be large
            start = xp.asarray(draw(self.seed, shape, dtype))
            cache[key] = start
        return start.copy()

    def _info(self, xp, packed, S, iterations, converged, lead, T, seconds, device):
        """The :class:`SolveInfo` of a call: per-frame mel residuals and the total, computed
        chunk by chunk by :func:`residual_norms` (memory: the (B, T) results and one chunk)."""
        r, m, e = residual_norms(self.plan, xp, packed, S)
        per_frame = np.where(m > 0, r / np.where(m > 0, m, 1), 0.0)
        return SolveInfo(self.solver, device,
                         np.asarray(_backend.to_numpy(iterations)).reshape(lead + (T,)),
                         np.asarray(_backend.to_numpy(converged)).reshape(lead + (T,)),
                         per_frame.reshape(lead + (T,)), total_residual(r, m, e), seconds)


INFO_CHUNK_ELEMENTS = 1 << 18      # n_stft x frames per chunk of the diagnostics: 2 MB of float64


def residual_norms(plan, xp, mel, S):
    """Per-frame ``||A s_t - m_t||`` and ``||m_t||``, a chunk of frames at a time.

    Parameters
    ----------
    plan : Plan
    xp : module
        NumPy or CuPy: ``A s`` is one float64 matrix product per chunk (BLAS, or cuBLAS).
    mel : array, shape (B, n_mels, T)
    S : array, shape (B, n_stft, T)
        float32 or float64; ``mel`` of any real dtype.

    Returns
    -------
    r, m : ndarray of float64, shape (B, T)
        The norms of frame t scaled by ``2^-e_t``, in float64.
    e : ndarray of int, shape (B, T)
        For float64 ``S``, each frame is rescaled by the power of two that puts its largest
        ``|m|`` in [0.5, 1) before squaring, so no norm under- or overflows at any scale. A
        float32 frame needs no rescaling (its squares and their sums are far inside the float64
        range): ``e = 0``.

    Chunks of about ``INFO_CHUNK_ELEMENTS // n_stft`` frames (whole batch items where ``T`` is
    short, slices of time where it is long), so the float64 work never grows with the batch.
    """
    B, _, T = mel.shape
    n_stft = S.shape[1]
    rescale = S.dtype == np.float64
    r, m = np.empty((B, T)), np.empty((B, T))
    e = np.zeros((B, T), np.int32)
    frames = max(1, INFO_CHUNK_ELEMENTS // max(n_stft, 1))
    step_t = min(T, frames) if T else 1
    step_b = max(1, frames // max(step_t, 1))
    A = plan.forward(np.float64, xp)
    for b in range(0, B, step_b):
        for t in range(0, T, step_t):
            M = mel[b:b + step_b, :, t:t + step_t].astype(np.float64)
            s = S[b:b + step_b, :, t:t + step_t]
            if rescale:
                _, ec = xp.frexp(xp.abs(M).max(axis=1))                # (b, t)
                shift = -ec[:, None, :]     # ldexp, not a factor 2^-e: that can overflow itself
                M = xp.ldexp(M, shift)
                s = xp.ldexp(s, shift)
                e[b:b + step_b, t:t + step_t] = _backend.to_numpy(ec)
            R = xp.matmul(A, s.astype(np.float64, copy=False))
            R -= M
            r[b:b + step_b, t:t + step_t] = _backend.to_numpy(xp.sqrt(_sum_squares(xp, R)))
            m[b:b + step_b, t:t + step_t] = _backend.to_numpy(xp.sqrt(_sum_squares(xp, M)))
    return r, m, e


def _sum_squares(xp, X):
    """``(X * X).sum(axis=1)`` of (b, n, t) without a second (b, n, t) array."""
    return xp.einsum("bnt,bnt->bt", X, X)


def total_residual(r, m, e):
    """``||A S - M|| / ||M||`` over all frames from :func:`residual_norms`' scaled norms: each
    frame weighed back by ``2^(e_t - max e)`` (0 for an all-zero mel)."""
    if r.size == 0:
        return 0.0
    weight = np.ldexp(1.0, e - e.max())                       # frames back to one scale
    r_all, m_all = r * weight, m * weight
    return float(np.sqrt((r_all * r_all).sum()) /
                 max(np.sqrt((m_all * m_all).sum()), np.finfo(float).tiny))


def _all_finite(xp, S):
    """``xp.isfinite(S).all()`` of (B, n, T) a few million elements at a time, in slices of
    time where one batch item is larger than that (no output-sized mask)."""
    B, n, T = S.shape
    step_t = max(1, min(T, (1 << 22) // max(1, n)))
    step_b = max(1, (1 << 22) // max(1, n * T)) if step_t == T else 1
    return all(bool(xp.isfinite(S[b:b + step_b, :, t:t + step_t]).all())
               for b in range(0, B, step_b) for t in range(0, T, step_t))


def inverse_mel_scale(mel: Array, n_stft: int, n_mels: int | None = None,
                      sample_rate: float = 16000, f_min: float = 0.0, f_max: float | None = None,
                      max_iter: int = 100000, tolerance_loss: float = 1e-5,
                      tolerance_change: float = 1e-8, sgdargs: dict[str, Any] | None = None,
                      norm: str | None = None, mel_type: str = "htk", *, solver: str = "nnls",
                      seed: int | None = None, device: str | None = None, out: Array | None = None,
                      return_info: bool = False, max_device_bytes: int | None = None,
                      workers: int | None = None, progress: Progress = False,
                      fb: Array | None = None) -> Array | tuple[Array, SolveInfo]:
    """Functional form of :class:`InverseMelScale`; ``n_mels`` defaults to ``mel.shape[-2]``
    (or to ``fb``'s number of filters).

    The per-filterbank work is cached across calls with the same filterbank arguments (or the
    same ``fb`` matrix).

    Parameters
    ----------
    mel : array, shape (..., n_mels, time)
        NumPy, CuPy, a torch tensor or a ``dask.array.Array``; never modified.
    n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_type, fb
        The filterbank, as for :class:`InverseMelScale`.
    max_iter, tolerance_loss, tolerance_change, sgdargs, solver, seed
        The solver, as for :class:`InverseMelScale`.
    device, max_device_bytes, workers, progress
        Where and how it runs, as for :class:`InverseMelScale`.
    out : array, shape (..., n_stft, time), optional
        Where to write the result (see :meth:`InverseMelScale.__call__`).
    return_info : bool, default False
        Also return a :class:`SolveInfo`.

    Returns
    -------
    S : array, shape (..., n_stft, time), or ``(S, SolveInfo)``
        The same array type as ``mel``.

    Raises
    ------
    ValueError
        A parameter out of range (the message names it and its value), or ``mel`` of the wrong
        shape or with NaN or Inf values; see :class:`InverseMelScale`.

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> mel = cumel.MelScale(n_mels=80, n_stft=513, norm="slaney", mel_scale="slaney")(
    ...     np.random.default_rng(1).random((513, 20)))
    >>> S = cumel.inverse_mel_scale(mel, n_stft=513, norm="slaney", mel_type="slaney")
    >>> S.shape, S.dtype                          # float64 in, float64 out
    ((513, 20), dtype('float64'))
    """
    if n_mels is None and fb is None:
        if getattr(mel, "ndim", 0) < 2:
            raise ValueError(f"mel must have at least 2 dims (..., n_mels, time), got shape "
                             f"{tuple(getattr(mel, 'shape', ()))}")
        n_mels = mel.shape[-2]
    transform = InverseMelScale(n_stft, n_mels, sample_rate, f_min, f_max, max_iter,
                                tolerance_loss, tolerance_change, sgdargs, norm, mel_type,
                                solver=solver, seed=seed, device=device,
                                max_device_bytes=max_device_bytes, workers=workers,
                                progress=progress, fb=fb)
    return transform(mel, out=out, return_info=return_info)
