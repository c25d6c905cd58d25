"""The mel filterbank: the single source of the matrix every solver inverts.

Layout follows torchaudio: ``fb`` has shape ``(n_freqs, n_mels)`` and a mel spectrogram is
``M = fb.T @ S``.  We write ``A = fb.T`` (``(n_mels, n_freqs)``) for the forward operator.

Construction (torchaudio ``melscale_fbanks`` / MindSpore ``CreateFbanks``)::

    all_freqs = linspace(0, sample_rate // 2, n_freqs)            # Hz
    m_pts     = linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts     = mel_to_hz(m_pts)                                    # corner frequencies, Hz
    fb[j, k]  = max(0, min((f_j - f_k) / (f_{k+1} - f_k), (f_{k+2} - f_j) / (f_{k+2} - f_{k+1})))
    norm="slaney": fb[:, k] *= 2 / (f_{k+2} - f_k)

It is evaluated in float64 and cast once: that is more accurate than torchaudio's float32
arithmetic and agrees with its output to within 5e-5 of the largest weight (REFERENCE.md).

Sparsity.  Triangle ``k`` is non-zero only strictly inside ``(f_k, f_{k+2})``, so a frequency bin
lies in at most two triangles, and they are adjacent.  :class:`SparseMel` stores, for every bin
``j``, the lower of its triangles ``lo[j]`` and the two weights ``w_lo[j] = A[lo[j], j]`` and
``w_hi[j] = A[lo[j] + 1, j]``.  ``lo`` never decreases with ``j``, so the bins of each mel
row form contiguous runs.  With it::

    (A.T @ mu)[j]   = w_lo[j] * mu[lo[j]] + w_hi[j] * mu[lo[j] + 1]
    (A @ s)[k]      = sum_{lo[j] = k} w_lo[j] s[j] + sum_{lo[j] = k - 1} w_hi[j] s[j]
    A diag(d) A.T   is tridiagonal (adjacent triangles are the only ones sharing bins)

about ``2 * n_freqs`` multiply-adds where a dense product costs ``n_mels * n_freqs``.
"""
from __future__ import annotations

import functools
import hashlib
import math
import warnings

import numpy as np
from numpy.typing import DTypeLike

from ._backend import device_id
from ._typing import Array, ArrayModule

__all__ = [
    "hz_to_mel",
    "mel_to_hz",
    "melscale_fbanks",
    "SparseMel",
    "UserFilterbank",
    "sparse_mel",
    "sparse_of_key",
]

# Slaney's (Auditory Toolbox) scale: linear below 1 kHz, logarithmic above.
_SLANEY_F_SP = 200.0 / 3.0            # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP   # = 15
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: Array, mel_scale: str = "htk", xp: ArrayModule = np) -> Array:
    """Convert frequencies in Hz to mels.

    Parameters
    ----------
    freq : array_like
        Frequencies in Hz.
    mel_scale : {"htk", "slaney"}
        HTK's ``2595 log10(1 + f / 700)``, or Slaney's (Auditory Toolbox): linear below 1 kHz,
        logarithmic above.
    xp : module
        Array module (``numpy`` or ``cupy``).

    Returns
    -------
    array of float64
        Mels, the shape of ``freq``.

    See Also
    --------
    mel_to_hz : the inverse.

    Examples
    --------
    >>> import cumel
    >>> round(float(cumel.hz_to_mel(1000.0)), 3)
    999.986
    >>> round(float(cumel.hz_to_mel(1000.0, mel_scale="slaney")), 12)
    15.0
    """
    freq = xp.asarray(freq, dtype=xp.float64)
    if mel_scale == "htk":
        return 2595.0 * xp.log10(1.0 + freq / 700.0)
    mels = freq / _SLANEY_F_SP
    log_part = (_SLANEY_MIN_LOG_MEL
                + xp.log(xp.maximum(freq, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP)
    return xp.where(freq >= _SLANEY_MIN_LOG_HZ, log_part, mels)


def mel_to_hz(mels: Array, mel_scale: str = "htk", xp: ArrayModule = np) -> Array:
    """Convert mels to frequencies in Hz (inverse of :func:`hz_to_mel`).

    Parameters
    ----------
    mels : array_like
        Mels.
    mel_scale : {"htk", "slaney"}
    xp : module
        Array module (``numpy`` or ``cupy``).

    Returns
    -------
    array of float64
        Hz, the shape of ``mels``.

    Examples
    --------
    >>> import cumel
    >>> round(float(cumel.mel_to_hz(cumel.hz_to_mel(440.0))), 9)
    440.0
    >>> cumel.mel_to_hz([0.0, 15.0], mel_scale="slaney").round(9).tolist()
    [0.0, 1000.0]
    """
    mels = xp.asarray(mels, dtype=xp.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    freqs = _SLANEY_F_SP * mels
    log_part = _SLANEY_MIN_LOG_HZ * xp.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL))
    return xp.where(mels >= _SLANEY_MIN_LOG_MEL, log_part, freqs)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: float,
                    norm: str | None = None, mel_scale: str = "htk", *,
                    dtype: DTypeLike = np.float32, xp: ArrayModule = np) -> Array:
    """Triangular mel filterbank, equal to ``torchaudio.functional.melscale_fbanks``.

    Parameters
    ----------
    n_freqs : int
        Number of linear frequency bins (``n_fft // 2 + 1``).
    f_min, f_max : float
        Frequency range in Hz covered by the filters.
    n_mels : int
        Number of mel filters.
    sample_rate : int
        Sample rate in Hz; the bin grid runs from 0 to ``sample_rate // 2``.
    norm : {None, "slaney"}
        ``"slaney"`` divides each triangle by its width in Hz (constant energy per filter).
    mel_scale : {"htk", "slaney"}
    dtype : dtype
        Output dtype; the weights are computed in float64 and cast once.
    xp : module
        Array module of the result (``numpy`` or ``cupy``).

    Returns
    -------
    fb : array, shape (n_freqs, n_mels)
        Read-only where NumPy (the array is cached and shared).

    Raises
    ------
    ValueError
        A parameter out of range (the message names it and its value): counts that are not
        positive integers, ``f_min >= f_max``, ``f_max`` above ``sample_rate / 2``, an unknown
        ``norm`` or ``mel_scale``.

    Warns
    -----
    UserWarning
        A filter with all zero weights (``n_mels`` too high for ``n_freqs``), as torchaudio warns.

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> fb = cumel.melscale_fbanks(201, 0.0, 8000.0, 64, 16000)
    >>> fb.shape, fb.dtype
    ((201, 64), dtype('float32'))
    >>> int((fb > 0).sum(axis=1).max())           # every bin in at most two triangles
    2
    """
    from ._validate import check_filterbank_args, canonical_norm, canonical_mel_scale

    norm = canonical_norm(norm)
    mel_scale = canonical_mel_scale(mel_scale, "mel_scale")
    check_filterbank_args(n_freqs, n_mels, sample_rate, f_min, f_max)
    fb = _fbanks_float64(int(n_freqs), float(f_min), float(f_max), int(n_mels), int(sample_rate),
                         norm, mel_scale)
    if (fb.max(axis=0) == 0.0).any():
        warnings.warn(
            f"At least one mel filterbank has all zero values: n_mels={n_mels} is too high "
            f"for n_freqs={n_freqs}.", UserWarning, stacklevel=2)
    return xp.asarray(fb.astype(dtype, copy=False))


@functools.lru_cache(maxsize=64)
def _fbanks_float64(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale):
    # Computed once per configuration with NumPy in float64 (a few hundred KB at most), then moved
    # to the requested device and dtype by the caller: the NumPy and CuPy paths share these bits.
    all_freqs = np.linspace(0.0, float(sample_rate // 2), n_freqs)
    m_min = hz_to_mel(f_min, mel_scale)
    m_max = hz_to_mel(f_max, mel_scale)
    f_pts = mel_to_hz(np.linspace(m_min, m_max, n_mels + 2), mel_scale)
    # The outer corners are f_min and f_max by definition; the mel round trip would move them by
    # an ulp and give a bin sitting exactly at f_max a spurious 1e-16 weight.
    f_pts[0], f_pts[-1] = f_min, f_max
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up)) + 0.0   # + 0.0 turns -0.0 into 0.0
    if norm == "slaney":
        fb *= 2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])
    fb.setflags(write=False)
    return fb


class SparseMel:
    """Compact form of ``A = fb.T``: two weights per frequency bin.

    Attributes
    ----------
    n_freqs, n_mels : int
    lo : ndarray of int32, shape (n_freqs,)
        Lower triangle containing each bin (non-decreasing in the bin index).
    w_lo, w_hi : ndarray, shape (n_freqs,)
        ``A[lo, j]`` and ``A[lo + 1, j]`` (zero where the bin is outside that triangle or
        ``lo + 1 == n_mels``).
    row_start : ndarray of int64, shape (n_mels + 1,)
        Bins with ``lo[j] == k`` are ``row_start[k] <= j < row_start[k + 1]``.
    fb : ndarray, shape (n_freqs, n_mels)
        The dense filterbank it was built from (float64).

    All arrays are NumPy; backends copy them once to their device (see ``cumel._backend``).

    Parameters
    ----------
    fb : array_like, shape (n_freqs, n_mels)
        A mel filterbank in torchaudio's layout.

    Raises
    ------
    ValueError
        ``fb`` lacks the structure of a mel filterbank: a bin in more than two triangles, or in
        two that are not neighbours, or triangles not ordered by frequency (the message names
        the bin).

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> fb = cumel.melscale_fbanks(201, 0.0, 8000.0, 64, 16000)
    >>> A = cumel.SparseMel(fb)
    >>> A.n_freqs, A.n_mels
    (201, 64)
    >>> s = np.random.default_rng(0).random(201)
    >>> bool(np.allclose(A.matvec(s, np), fb.T @ s))      # A @ s from two weights a bin
    True
    """

    def __init__(self, fb: Array) -> None:
        fb = np.asarray(fb, dtype=np.float64)
        n_freqs, n_mels = fb.shape
        nz = fb != 0.0
        lo = np.zeros(n_freqs, dtype=np.int32)
        w_lo = np.zeros(n_freqs)
        w_hi = np.zeros(n_freqs)
        prev = 0
        for j in range(n_freqs):
            ks = np.flatnonzero(nz[j])
            if ks.size > 2 or (ks.size == 2 and ks[1] != ks[0] + 1):
                which = (str(ks.tolist()) if ks.size <= 6 else
                         f"[{', '.join(map(str, ks[:3]))}, ...] ({ks.size} of them)")
                raise ValueError(f"fb: bin {j} lies in triangles {which}; a mel filterbank "
                                 "has each bin in at most two adjacent triangles")
            k = int(ks[0]) if ks.size else prev
            if k < prev:
                raise ValueError(f"fb: triangles are not ordered by frequency at bin {j}")
            lo[j] = k
            w_lo[j] = fb[j, k]
            if k + 1 < n_mels:
                w_hi[j] = fb[j, k + 1]
            prev = k
        self.n_freqs, self.n_mels = n_freqs, n_mels
        self.fb = fb
        self.lo, self.w_lo, self.w_hi = lo, w_lo, w_hi
        self.row_start = np.searchsorted(lo, np.arange(n_mels + 1), side="left").astype(np.int64)
        # Segment sums on NumPy walk the runs position by position (``segment_sum``): the mels
        # ordered by run length, longest first, so those whose run reaches position r are a prefix.
        lengths = np.diff(self.row_start)
        self.run_order = np.argsort(-lengths, kind="stable").astype(np.intp)
        self.run_inverse = np.argsort(self.run_order, kind="stable").astype(np.intp)
        starts = self.row_start[:-1][self.run_order]
        self.run_rows = tuple((starts[:int((lengths > r).sum())] + r).astype(np.intp)
                              for r in range(int(lengths.max(initial=0))))
        for a in (fb, lo, w_lo, w_hi, self.row_start):
            a.setflags(write=False)

    # -- the products the solvers are built from -------------------------------------------------
    # Vectors run along axis 0, frames along the trailing axes (the (..., n_mels, T) layout of a
    # mel spectrogram, one column per frame): each product then works on whole contiguous rows of
    # frames, and a column's arithmetic never depends on the other columns.

    def rmatvec(self, mu: Array, xp: ArrayModule, w: tuple[Array, ...] | None = None) -> Array:
        """``A.T @ mu``: (n_mels, ...) -> (n_freqs, ...).

        Parameters
        ----------
        mu : array, shape (n_mels, ...)
        w : tuple, optional
            ``(lo, hi, w_lo, w_hi)`` already on ``xp``'s device in ``mu``'s dtype (see
            :meth:`arrays`).
        """
        lo, hi, w_lo, w_hi = w if w is not None else self.arrays(xp, mu.dtype)
        shape = (-1,) + (1,) * (mu.ndim - 1)
        t = mu[lo]
        t *= w_lo.reshape(shape)
        t += w_hi.reshape(shape) * mu[hi]
        return t

    def matvec(self, s: Array, xp: ArrayModule, w: tuple[Array, ...] | None = None) -> Array:
        """``A @ s``: (n_freqs, ...) -> (n_mels, ...)."""
        _, _, w_lo, w_hi = w if w is not None else self.arrays(xp, s.dtype)
        shape = (-1,) + (1,) * (s.ndim - 1)
        return (self.segment_sum(w_lo.reshape(shape) * s, xp)
                + self.shift_up(self.segment_sum(w_hi.reshape(shape) * s, xp), xp))

    def tridiag(self, d: Array, xp: ArrayModule,
                w: tuple[Array, ...] | None = None) -> tuple[Array, Array]:
        """Diagonal and super-diagonal of ``A diag(d) A.T``.

        Parameters
        ----------
        d : array, shape (n_freqs, ...)
            Non-negative bin weights (1 for free bins, 0 for clamped ones), or booleans.

        Returns
        -------
        diag : array, shape (n_mels, ...)
        upper : array, shape (n_mels, ...)
            ``upper[k] = (A D A.T)[k, k + 1]``; the last entry is 0.
        """
        if w is None:  # weights in d's float type (a boolean d means float64)
            w = self.arrays(xp, d.dtype if d.dtype.kind == "f" else np.float64)
        _, _, w_lo, w_hi = w
        shape = (-1,) + (1,) * (d.ndim - 1)
        w_lo, w_hi = w_lo.reshape(shape), w_hi.reshape(shape)
        diag = (self.segment_sum(w_lo * w_lo * d, xp)
                + self.shift_up(self.segment_sum(w_hi * w_hi * d, xp), xp))
        upper = self.segment_sum(w_lo * w_hi * d, xp)
        return diag, upper

    def segment_sum(self, x: Array, xp: ArrayModule, out: Array | None = None,
                    scratch: Array | None = None) -> Array:
        """Sum ``x[j]`` over the bins of each row run: (n_freqs, ...) -> (n_mels, ...).

        On NumPy, ``out`` (n_mels, ...) and ``scratch`` (at least ``n_mels`` rows of the same
        trailing shape, flat or not) may be given so that nothing is allocated (the nnls loop).
        """
        if xp is np:
            return self._segment_sum_numpy(np.asarray(x), out, scratch)
        # array modules without ufunc.reduceat: differences of a running sum (float64 callers)
        c = xp.cumsum(x, axis=0)
        c = xp.concatenate([xp.zeros((1,) + x.shape[1:], x.dtype), c], axis=0)
        idx = xp.asarray(self.row_start)
        return c[idx[1:]] - c[idx[:-1]]

    def _segment_sum_numpy(self, x, out, scratch):
        # Position by position along the runs: out[k] = x[start_k], then += x[start_k + 1], ...,
        # whole rows of frames at a time, in the run-length order, then put back in mel order.
        # Each mel's sum is its bins added in bin order (the kernels' order too), whatever the
        # batch; the work is a gather and an add per bin row (np.add.reduceat along axis 0 loops
        # over the frames inside each short run and is several times slower).
        if x.dtype == bool:
            x = x.astype(np.float64)
        trailing, dtype = x.shape[1:], x.dtype
        size = self.n_mels * int(np.prod(trailing, dtype=np.int64))
        if scratch is None:
            scratch = np.empty(2 * size, dtype)
        flat = scratch.reshape(-1)
        by_run = flat[:size].reshape((self.n_mels,) + trailing)
        gathered = flat[size:2 * size].reshape((self.n_mels,) + trailing)
        if out is None:
            out = np.empty((self.n_mels,) + trailing, dtype)
        rows = self.run_rows
        n_first = rows[0].size if rows else 0
        by_run[n_first:] = 0
        if rows:
            np.take(x, rows[0], axis=0, out=by_run[:n_first], mode="clip")
        for r in rows[1:]:
            part = gathered[:r.size]
            np.take(x, r, axis=0, out=part, mode="clip")
            by_run[:r.size] += part
        return np.take(by_run, self.run_inverse, axis=0, out=out, mode="clip")

    @staticmethod
    def shift_up(x: Array, xp: ArrayModule) -> Array:
        """``y[k] = x[k - 1]`` with ``y[0] = 0``: the ``w_hi`` part lands one mel higher."""
        return xp.concatenate([xp.zeros((1,) + x.shape[1:], x.dtype), x[:-1]], axis=0)

    def arrays(self, xp: ArrayModule, dtype: DTypeLike) -> tuple[Array, Array, Array, Array]:
        """``(lo, hi, w_lo, w_hi)`` on ``xp``'s current device in ``dtype``, cached.

        ``hi = min(lo + 1, n_mels - 1)``: where ``lo + 1 == n_mels``, ``w_hi`` is 0 anyway, so the
        upper neighbour can be read without padding the mel vector.
        """
        key = (xp.__name__, np.dtype(dtype).str, device_id(xp))
        cache = self.__dict__.setdefault("_arrays", {})
        if key not in cache:
            lo = self.lo.astype(np.intp)
            cache[key] = (xp.asarray(lo), xp.asarray(np.minimum(lo + 1, self.n_mels - 1)),
                          xp.asarray(self.w_lo.astype(dtype)),
                          xp.asarray(self.w_hi.astype(dtype)))
        return cache[key]


@functools.lru_cache(maxsize=32)
def sparse_mel(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale):
    """Cached :class:`SparseMel` of :func:`melscale_fbanks` (arguments already canonical)."""
    return SparseMel(_fbanks_float64(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale))


class UserFilterbank:
    """A filterbank matrix the caller supplies (``fb=``), as a key of the per-filterbank cache.

    Two of them are equal when their float64 matrices are equal bit for bit: the key is the
    SHA-256 of the shape and bytes, computed once here, so equal matrices share one
    :class:`cumel.transforms.Plan` (and its :class:`SparseMel`, built once per matrix). It pickles
    with its matrix (a worker process rebuilds the plan from it) and tokenizes for Dask by its
    digest.

    Attributes
    ----------
    fb : ndarray, shape (n_freqs, n_mels), float64, read-only
        torchaudio layout.
    digest : str
    """

    __slots__ = ("fb", "digest")

    def __init__(self, fb):
        fb = np.array(fb, dtype=np.float64, order="C")      # a private copy
        fb.setflags(write=False)
        h = hashlib.sha256(repr(fb.shape).encode())
        h.update(fb.tobytes())
        self.fb, self.digest = fb, h.hexdigest()

    @property
    def shape(self):
        return self.fb.shape

    def __hash__(self):
        return hash(self.digest)

    def __eq__(self, other):
        return isinstance(other, UserFilterbank) and other.digest == self.digest

    def __repr__(self):
        return f"<filterbank {self.fb.shape[0]} x {self.fb.shape[1]} sha256:{self.digest[:12]}>"

    def __getstate__(self):
        return {"fb": self.fb, "digest": self.digest}

    def __setstate__(self, state):
        self.fb, self.digest = state["fb"], state["digest"]

    def __dask_tokenize__(self):
        return ("cumel.UserFilterbank", self.digest)

    @classmethod
    def from_matrix(cls, fb, n_stft=None, n_mels=None, name="fb"):
        """Check a caller's matrix and wrap it.

        Parameters
        ----------
        fb : array_like or torch tensor, shape (n_stft, n_mels) or (n_mels, n_stft)
            torchaudio's layout (``melscale_fbanks``, ``WhisperFeatureExtractor.mel_filters``) or
            librosa's (``librosa.filters.mel``), told apart by ``n_stft`` (the torchaudio layout
            when both sides equal it, or when ``n_stft`` is not given).
        n_stft, n_mels : int, optional
            What the matrix must match.

        Raises
        ------
        ValueError
            Naming ``name``: not a finite non-negative 2-D matrix, or of the wrong size. (Its
            structure is checked where the plan is built: :func:`sparse_of_key`.)
        """
        if isinstance(fb, cls):               # already checked and hashed: only its size
            if (n_stft is not None and fb.shape[0] != n_stft) or (
                    n_mels is not None and fb.shape[1] != n_mels):
                raise ValueError(f"{name} has shape {fb.shape}, but n_stft={n_stft} and "
                                 f"n_mels={n_mels}")
            return fb
        else:
            from ._backend import is_torch_tensor, to_numpy
            if is_torch_tensor(fb):
                fb = fb.detach().cpu().numpy()
            matrix = np.asarray(to_numpy(fb))
            if matrix.dtype.kind not in "fiu" or matrix.dtype == np.bool_:
                raise ValueError(f"{name} must hold real numbers, got dtype {matrix.dtype}")
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise ValueError(f"{name} must be a 2-D matrix (n_stft, n_mels) or (n_mels, n_stft), "
                             f"got shape {matrix.shape}")
        if n_stft is not None:
            if matrix.shape[0] != n_stft and matrix.shape[1] == n_stft:
                matrix = matrix.T                                    # librosa's layout
            elif matrix.shape[0] != n_stft:
                raise ValueError(f"{name} must have n_stft={n_stft} rows (or columns, librosa's "
                                 f"layout), got shape {matrix.shape}")
        if n_mels is not None and matrix.shape[1] != n_mels:
            raise ValueError(f"{name} has {matrix.shape[1]} mel filters (shape {matrix.shape}), "
                             f"but n_mels={n_mels}")
        matrix = matrix.astype(np.float64)
        if not np.isfinite(matrix).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        if (matrix < 0).any():
            raise ValueError(f"{name} has negative weights (min {matrix.min():.3g}); a mel "
                             "filterbank's triangles are non-negative")
        return cls(matrix)


def sparse_of_key(key):
    """The :class:`SparseMel` of a plan key: the filterbank arguments of :func:`sparse_mel`, or
    ``(UserFilterbank,)``, whose structure is checked here with a clear error."""
    if len(key) == 1 and isinstance(key[0], UserFilterbank):
        try:
            return SparseMel(key[0].fb)
        except ValueError as exc:
            raise ValueError(f"{exc}. cumel's solvers rely on this structure (every frequency "
                             "bin in at most two filters, and those neighbours; the filters "
                             "ordered by frequency), which every triangular mel filterbank has; "
                             "this matrix does not") from None
    return sparse_mel(*key)
