"""From mel to sound: ``GriffinLim`` and ``mel_to_audio``.

Fast Griffin-Lim (Perraudin, Balazs and Sondergaard, 2013), in exactly the update order of
``torchaudio.functional.griffinlim``::

    mag   = S ** (1 / power)                             magnitudes, (..., F, T)
    c     = start (random complex, or 1)                 X_0 = mag * c
    alpha = momentum / (1 + momentum);  tprev = 0
    repeat n_iter times:
        rebuilt = STFT(ISTFT(X))
        a       = rebuilt - alpha * tprev
        X       = mag * a / (|a| + 1e-16)                the phase update and the projection
        tprev   = rebuilt
    y = ISTFT(X, length)

The update line is elementwise over every complex bin: on CuPy it is one raw CUDA kernel
(``kernels/griffinlim.cu``, launched by :func:`cumel.cuda.griffinlim_update`); the FFTs are
``numpy.fft``/``cupy.fft``. STFT conventions: :mod:`cumel.stft`.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
import wave
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

import numpy as np

from . import _backend, _progress, _threads, _validate
from . import stft as _stft
from ._typing import Array, ArrayModule, Progress
from .transforms import InverseMelScale

if TYPE_CHECKING:
    from .mel_frontends import Frontend

__all__ = ["GriffinLim", "griffinlim", "mel_to_audio", "spectral_convergence", "write_wav"]

EPS = 1e-16   # torchaudio's guard in angles / (|angles| + 1e-16)
MIN_FRAMES_ELEMENTS = 1 << 15   # samples of frames (B x frames x n_fft) a thread takes at least


def _check_real(value, name, low, high, high_open=True):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (value >= high if high_open else value > high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


class GriffinLim:
    """Waveform from a magnitude (or power) spectrogram by fast Griffin-Lim.

    Parameters follow ``torchaudio.transforms.GriffinLim``.

    Parameters
    ----------
    n_fft : int, default 400
        FFT size in samples; the spectrogram has ``n_fft // 2 + 1`` bins.
    n_iter : int, default 32
        Griffin-Lim iterations (each one ISTFT + STFT).
    win_length : int, optional
        Window length in samples, ``<= n_fft``; default ``n_fft``.
    hop_length : int, optional
        Samples between frames; default ``win_length // 4``.
    window : "hann", default "hann"
        The periodic Hann window of ``win_length`` samples (``torch.hann_window``), zero-padded
        to ``n_fft`` and centred; the only window for now.
    power : float, default 2.0
        Exponent of the input: 2 for a power spectrogram, 1 for magnitudes (``S ** (1/power)``
        is what Griffin-Lim fits).
    momentum : float in [0, 1), default 0.99
        Fast Griffin-Lim momentum (0: the original Griffin-Lim).
    length : int, optional
        Samples of the output; default ``hop_length * (T - 1)`` (centred; in general
        ``n_fft + hop_length * (T - 1) - left - right``).
    rand_init : bool, default True
        Random complex start (real and imaginary parts uniform in [0, 1), as ``torch.rand``
        with a complex dtype) or all ones.
    center : bool, default True, keyword only
        The frame grid of the spectrogram (:func:`cumel.stft.stft`): frame ``t`` centred on
        sample ``t * hop_length``. False: the signal was padded by ``pad`` instead.
    pad : int or (int, int), optional, keyword only
        With ``center=False``, the padding (both sides, or ``(left, right)``) the spectrogram's
        STFT had; default 0. HiFi-GAN: ``(n_fft - hop_length) // 2`` = 384.
    pad_mode : {"reflect", "constant"}, default "reflect", keyword only
        How the STFT inside the iteration pads: as the spectrogram's own STFT did (librosa
        >= 0.10 pads with zeros).
    seed : int, optional, keyword only
        Seed of the start, drawn on the host for the NumPy and the CuPy path alike, so both start
        from the same phases: item ``b`` of a batch from ``numpy.random.default_rng([seed, b])``
        (:meth:`start`), so an item sounds the same whatever else is in its batch. None: fresh
        each call.
    device : {None, "cpu", "cuda", "auto"}, keyword only
        Where a NumPy input is computed (a CuPy input always runs on its own device).
    workers : int or None, keyword only
        Threads of the NumPy path (the frames' FFTs and the update are shared between them):
        None (default) every usable core, 1 the calling thread. The result's bits do not
        depend on it.
    progress : bool, "auto" or callable, keyword only
        A bar of the iterations on stderr (tqdm): True, "auto" (once the call has run 2 s) or
        False (default); a callable is told each iteration done.

    Returns
    -------
    callable
        Call with ``specgram`` of shape (..., n_fft // 2 + 1, T), non-negative: returns audio of
        shape (..., length), float64 for float64 input and float32 otherwise, same array type as
        the input (NumPy in, NumPy out; CuPy in, CuPy out; a torch tensor in, a torch tensor of
        its device out). The input is never modified.

    Raises
    ------
    ValueError
        A parameter out of range (the message names it and its value); on a call, a
        ``specgram`` of the wrong shape, with too few frames for the padding, negative, or with
        NaN or Inf values.
    TypeError
        On a call, a ``specgram`` that does not hold real numbers.
    cumel.NoGradientError
        On a call, a torch tensor that requires grad: this Griffin-Lim has no gradient (use
        :class:`cumel.torch.GriffinLim`, written in torch operations).

    See Also
    --------
    mel_to_audio : from a mel spectrogram, through :class:`InverseMelScale`.

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> from cumel.stft import stft
    >>> x = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * np.hanning(8000)
    >>> power = np.abs(stft(x, 400, 160)) ** 2               # (201, 51) power spectrogram
    >>> griffin_lim = cumel.GriffinLim(n_fft=400, hop_length=160, length=x.size, seed=0)
    >>> y = griffin_lim(power)
    >>> y.shape, y.dtype
    ((8000,), dtype('float64'))
    >>> cumel.spectral_convergence(y, x, 400, 160) < 0.3
    True
    """

    def __init__(self, n_fft: int = 400, n_iter: int = 32, win_length: int | None = None,
                 hop_length: int | None = None, window: str = "hann", power: float = 2.0,
                 momentum: float = 0.99, length: int | None = None, rand_init: bool = True, *,
                 center: bool = True, pad: int | tuple[int, int] | None = None,
                 pad_mode: str = "reflect", seed: int | None = None, device: str | None = None,
                 workers: int | None = None, progress: Progress = False) -> None:
        self.n_fft, self.hop_length, self.win_length = _stft.check_stft_args(n_fft, hop_length,
                                                                            win_length)
        self.framing = _stft.padding(self.n_fft, center, pad, pad_mode)
        if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool) or n_iter < 0:
            raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
        self.n_iter = int(n_iter)
        self.window = self._check_window(window)
        if not isinstance(power, numbers.Real) or isinstance(power, bool) or not power > 0 \
                or not math.isfinite(power):
            raise ValueError(f"power must be a finite number > 0, got {power!r}")
        self.power: float = float(power)
        self.momentum: float = _check_real(momentum, "momentum", 0.0, 1.0)
        self.length = None if length is None else _validate.check_positive_int(length, "length")
        if not isinstance(rand_init, (bool, np.bool_)):
            raise ValueError(f"rand_init must be True or False, got {rand_init!r}")
        self.rand_init: bool = bool(rand_init)
        self.seed: int | None = _validate.check_seed(seed)
        self.device = _backend.check_device(device)
        self.workers: int | None = _threads.check_workers(workers)
        self.progress: Progress = _progress.check_progress(progress)

    @staticmethod
    def _check_window(window):
        if not isinstance(window, str) or window.lower() != "hann":
            raise ValueError(f"window must be 'hann' (periodic Hann), got {window!r}")
        return "hann"

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def center(self) -> bool:
        return self.framing.center

    @property
    def pad(self) -> tuple[int, int]:
        """``(left, right)`` samples of padding (``n_fft // 2`` each with ``center=True``)."""
        return self.framing.left, self.framing.right

    @property
    def pad_mode(self) -> str:
        return self.framing.mode

    def __repr__(self):
        framing = ("" if self.framing == _stft.padding(self.n_fft) else
                   f", center={self.center}" + ("" if self.center else f", pad={self.pad}")
                   + f", pad_mode={self.pad_mode!r}")
        return (f"GriffinLim(n_fft={self.n_fft}, n_iter={self.n_iter}, win_length={self.win_length}, "
                f"hop_length={self.hop_length}, power={self.power}, momentum={self.momentum}, "
                f"length={self.length}, rand_init={self.rand_init}{framing})")

    def start(self, shape: tuple[int, ...]) -> np.ndarray:
        """Start phases of a frames-major batch ``shape = (B, T, F)``, complex128 on the host.

        Item ``b`` (its flat index over the leading dimensions) draws its own start:
        ``numpy.random.default_rng([seed, b]).random((2, T, F))`` as real and imaginary parts (or
        ones). An item's start, and so its sound, depends on the seed and its index alone, not
        on how many items share the call or what they hold. Without a seed each item draws from
        fresh entropy. With a fixed seed the last start is kept on the instance (read-only).
        """
        shape = tuple(int(n) for n in shape)
        if not self.rand_init:
            return np.ones(shape, np.complex128)
        if self.seed is not None:     # the same every call: keep the last one (read-only)
            cached = self.__dict__.get("_start")
            if cached is not None and cached.shape == shape:
                return cached
        B, rest = shape[0], shape[1:]
        seeds = (np.random.SeedSequence().spawn(B) if self.seed is None else
                 [np.random.SeedSequence([self.seed, b]) for b in range(B)])
        start = np.empty(shape, np.complex128)
        for b in range(B):
            rng = np.random.default_rng(seeds[b])
            re_im = rng.random((2,) + rest)
            start[b].real = re_im[0]
            start[b].imag = re_im[1]
        if self.seed is not None:
            start.flags.writeable = False
            self._start = start
        return start

    def __call__(self, specgram: Array) -> Array:
        """Waveform (..., length) of ``specgram`` (..., n_fft // 2 + 1, T); see the class."""
        with _backend.foreign_scope(specgram, "specgram", "cumel.GriffinLim",
                                    "cumel.torch.GriffinLim (torch operations)") as (specgram, back):
            return back(self._call(specgram))

    def _call(self, specgram):
        xp, S, to_caller = _backend.select(specgram, self.device)
        prepared = self.magnitudes(xp, S)
        if prepared is None:        # an empty batch
            return to_caller(xp.zeros(self._lead(S) + (self._n_out(S.shape[-1]),),
                                      self._real(S)))
        mag, lead, n_out = prepared
        y = self._iterate(xp, mag, n_out)
        return to_caller(y.reshape(lead + (n_out,)))

    @staticmethod
    def _lead(S):
        return tuple(S.shape[:-2])

    @staticmethod
    def _real(S):
        return np.dtype(np.float64) if S.dtype == np.float64 else np.dtype(np.float32)

    def _n_out(self, T):
        return self.length if self.length is not None else _stft.default_length(
            T, self.n_fft, self.hop_length, self.framing)

    def magnitudes(self, xp: ArrayModule, S: Array) -> tuple[Array, tuple[int, ...], int] | None:
        """Validated magnitudes of a spectrogram already on ``xp``: ``(mag, lead, n_out)`` with
        ``mag`` (B, T, n_freqs) frames-major, a fresh array (float64 for float64 input, float32
        otherwise), or None for an empty batch."""
        if S.ndim < 2 or S.shape[-2] != self.n_freqs:
            raise ValueError(f"specgram must have shape (..., n_fft // 2 + 1 = {self.n_freqs}, "
                             f"time), got {tuple(S.shape)}")
        if S.dtype.kind not in "fiu" or S.dtype == np.bool_:
            raise TypeError(f"specgram must hold real numbers, got dtype {S.dtype}")
        if S.shape[-1] < 1:
            raise ValueError(f"specgram must have at least one frame, got shape {tuple(S.shape)}")
        if S.size and not bool(xp.isfinite(S).all()):
            raise ValueError("specgram contains NaN or Inf values")
        if S.size and bool((S < 0).any()):
            raise ValueError("specgram must be non-negative (a magnitude or power spectrogram)")
        dtype = self._real(S)
        lead, T = self._lead(S), S.shape[-1]
        B = int(np.prod(lead, dtype=np.int64))
        n_out = self._n_out(T)
        if n_out < 1:
            raise ValueError(f"specgram has too few frames (T={T}) for the padding {self.pad}: "
                             "they cover no sample of the signal; pass length")
        if B == 0:
            return None
        # magnitudes, frames-major (B, T, F), a fresh array: the caller's is never touched
        mag = xp.ascontiguousarray(xp.swapaxes(S.reshape((B, self.n_freqs, T)), 1, 2)).astype(
            dtype, copy=True)
        if self.power == 2.0:
            xp.sqrt(mag, out=mag)
        elif self.power != 1.0:
            mag **= 1.0 / self.power
        return mag, lead, n_out

    # -- the iteration -----------------------------------------------------------------------

    def inner_length(self, T: int, n_out: int, n_iter: int) -> int | None:
        """Length of the inner ISTFTs of ``T`` frames: ``n_out`` when it gives ``T`` frames back
        (torchaudio's loop), else None (the natural ``n_fft + hop * (T - 1) - left - right``,
        ``hop * (T - 1)`` centred; ``n_out`` is then only the output's). Raises when ``T``
        frames make no signal longer than the padding and ``n_iter`` iterations would need one."""
        n_fft, hop, pad = self.n_fft, self.hop_length, self.framing
        shortest = max(pad.left, pad.right) + 1 if pad.mode == "reflect" else 1
        inner = n_out if _stft.frame_count(n_out, n_fft, hop, pad) == T else None
        if inner is not None and inner < shortest:
            inner = None
        if _stft.default_length(T, n_fft, hop, pad) < shortest and n_iter > 0:
            what = "n_fft // 2" if pad.center else "the padding"
            raise ValueError(f"specgram has too few frames (T={T}) for n_fft={n_fft} and "
                             f"hop_length={hop}: the signal would not be longer than {what}")
        return inner

    def istft(self, X: Array, length: int | None, xp: ArrayModule,
              run: _threads.Runner | None = None) -> Array:
        """Frames-major ISTFT (:func:`cumel.stft.frames_istft`) with this transform's STFT and
        frame grid (``run``: the NumPy threads of :meth:`runner`)."""
        return _stft.frames_istft(X, self.n_fft, self.hop_length, self.win_length, length, xp,
                                  self.framing, run)

    def stft(self, y: Array, xp: ArrayModule, run: _threads.Runner | None = None) -> Array:
        """Frames-major STFT (:func:`cumel.stft.frames_stft`) with this transform's STFT and
        frame grid (``run``: the NumPy threads of :meth:`runner`)."""
        return _stft.frames_stft(y, self.n_fft, self.hop_length, self.win_length, xp,
                                 self.framing, run)

    def runner(self, xp: ArrayModule, shape: tuple[int, int, int]) -> _threads.Runner:
        """The threads of the NumPy path for a (B, T, F) batch: a :class:`cumel._threads.Runner`
        to enter (``with``); pass it as ``run`` where its ``workers > 1``. The frames' FFTs and
        the update are shared between them, a few frames a thread at least (fewer would not pay
        for the hand-over)."""
        workers = _threads.resolve_workers(self.workers) if xp is np else 1
        return _threads.Runner(workers,
                               minimum=max(1, MIN_FRAMES_ELEMENTS // (shape[0] * self.n_fft)))

    def phases(self, xp: ArrayModule, mag: Array, n_iter: int, inner: int | None,
               run: _threads.Runner | None = None,
               tell: Callable[[int], Any] | None = None) -> Array:
        """``n_iter`` fast Griffin-Lim iterations on ``mag`` (B, T, F) from :meth:`start`: the
        last ``X`` (B, T, F), complex (the loop of the module docstring); ``tell(1)`` after
        each iteration when given."""
        B, T, F = mag.shape
        cplx = np.complex64 if mag.dtype == np.float32 else np.complex128
        X = mag * xp.asarray(self.start((B, T, F)).astype(cplx))
        alpha = self.momentum / (1.0 + self.momentum)
        tprev = None
        for _ in range(n_iter):
            rebuilt = self.stft(self.istft(X, inner, xp, run), xp, run)
            X = update(rebuilt, tprev, mag, alpha, xp, run)
            tprev = rebuilt
            if tell is not None:
                tell(1)
        return X

    def _iterate(self, xp, mag, n_out):
        inner = self.inner_length(mag.shape[1], n_out, self.n_iter)
        with self.runner(xp, mag.shape) as runner, \
                _progress.bar(self.progress, self.n_iter, "it", "cumel griffin-lim") as tell:
            run = runner if runner.workers > 1 else None
            X = self.phases(xp, mag, self.n_iter, inner, run, tell)
            return self.istft(X, n_out, xp, run)


def update(rebuilt, tprev, mag, alpha, xp, run=None):
    """One fused Griffin-Lim step: ``a = rebuilt - alpha * tprev``, ``mag * a / (|a| + 1e-16)``.

    Parameters
    ----------
    rebuilt : complex array, shape (B, T, F)
        STFT of the current signal; not modified (it is the next step's ``tprev``).
    tprev : complex array of the same shape, or None (the first step: ``tprev = 0``)
        Previous ``rebuilt``; on NumPy its buffer becomes the result (overwritten).
    mag : real array, shape (B, T, F)
    alpha : float
        ``momentum / (1 + momentum)``.
    run : cumel._threads.Runner, optional
        Shares the frames (axis 1) between threads (NumPy): elementwise, the same bits.

    Returns
    -------
    complex array, shape (B, T, F): the next ``X``.
    """
    if xp is not np:
        from . import cuda
        return cuda.griffinlim_update(rebuilt, tprev, mag, alpha)
    a = rebuilt.copy() if tprev is None else tprev

    def step(lo, hi):
        part = a[:, lo:hi]
        if tprev is not None:
            part *= alpha
            np.subtract(rebuilt[:, lo:hi], part, out=part)
        scale = np.abs(part)
        scale += EPS
        np.divide(mag[:, lo:hi], scale, out=scale)
        part *= scale

    if run is None:
        step(0, a.shape[1])
    else:
        run(step, a.shape[1])
    return a


def griffinlim(specgram: Array, n_fft: int = 400, n_iter: int = 32, win_length: int | None = None,
               hop_length: int | None = None, window: str = "hann", power: float = 2.0,
               momentum: float = 0.99, length: int | None = None, rand_init: bool = True, *,
               center: bool = True, pad: int | tuple[int, int] | None = None,
               pad_mode: str = "reflect", seed: int | None = None, device: str | None = None,
               workers: int | None = None, progress: Progress = False) -> Array:
    """Functional form of :class:`GriffinLim`.

    Parameters
    ----------
    specgram : array, shape (..., n_fft // 2 + 1, T)
        A non-negative power (``power=2``) or magnitude (``power=1``) spectrogram; NumPy, CuPy
        or a torch tensor; never modified.
    n_fft, n_iter, win_length, hop_length, window, power, momentum, length, rand_init
        As for :class:`GriffinLim`.
    center, pad, pad_mode, seed, device, workers, progress
        As for :class:`GriffinLim` (keyword only).

    Returns
    -------
    array, shape (..., length)
        float64 for float64 input, else float32; same array type as ``specgram``.

    Raises
    ------
    ValueError
        A parameter out of range or a bad ``specgram``, as for :class:`GriffinLim`.

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> power = np.ones((201, 11))                 # 11 frames of white noise's spectrum
    >>> cumel.griffinlim(power, n_fft=400, hop_length=160, seed=0).shape   # 160 * (11 - 1)
    (1600,)
    """
    return GriffinLim(n_fft, n_iter, win_length, hop_length, window, power, momentum, length,
                      rand_init, center=center, pad=pad, pad_mode=pad_mode, seed=seed,
                      device=device, workers=workers, progress=progress)(specgram)


METHODS = ("griffinlim", "admm")


def check_method(method, admm_given):
    """``method`` in lower case; a ValueError lists the valid ones, or names the ADMM settings
    (``admm_given``, None where not given) passed to another method."""
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, "
                         f"got {method!r}")
    method = method.lower()
    named = [k for k, v in admm_given.items() if v is not None]
    if method != "admm" and named:
        raise ValueError(f"{', '.join(named)} apply to method='admm' only (method={method!r})")
    return method


class _Default:
    """The default of a :func:`mel_to_audio` keyword: its documented value without ``frontend``,
    the front end's own with it (a value given explicitly overrides the front end's)."""

    def __repr__(self):
        return "<default>"


_DEFAULT = _Default()
_PLAIN = {"sample_rate": 16000, "hop_length": None, "win_length": None, "power": 2.0,
          "f_min": 0.0, "f_max": None, "norm": None, "mel_type": "htk", "center": True,
          "pad": None, "pad_mode": "reflect"}


def mel_to_audio(mel: Array, n_fft: int | None = None, *, frontend: str | Frontend | None = None,
                 sample_rate: float | _Default = _DEFAULT,
                 hop_length: int | None | _Default = _DEFAULT,
                 win_length: int | None | _Default = _DEFAULT, power: float | _Default = _DEFAULT,
                 n_iter: int = 32, momentum: float = 0.99, length: int | None = None,
                 f_min: float | _Default = _DEFAULT, f_max: float | None | _Default = _DEFAULT,
                 norm: str | None | _Default = _DEFAULT, mel_type: str | _Default = _DEFAULT,
                 center: bool | _Default = _DEFAULT,
                 pad: int | tuple[int, int] | None | _Default = _DEFAULT,
                 pad_mode: str | _Default = _DEFAULT, fb: Array | None = None,
                 solver: str = "nnls", seed: int | None = None, device: str | None = None,
                 workers: int | None = None, progress: Progress = False,
                 method: str = "griffinlim", rho: float | None = None, sigma: float | None = None,
                 inner_steps: int | None = None, start_iter: int | None = None) -> Array:
    """Waveform from a mel spectrogram: :class:`cumel.InverseMelScale`, then :class:`GriffinLim`
    (``method="griffinlim"``, the cascade), or magnitude and phase jointly by ADMM from the
    cascade's answer (``method="admm"``, :mod:`cumel.admm`).

    Without ``frontend`` the mel is linear, of ``|STFT|**power`` (power 2: a power spectrogram,
    as ``torchaudio.transforms.MelSpectrogram`` and ``librosa.feature.melspectrogram`` make by
    default). The inverse mel scale recovers that spectrogram (n_fft // 2 + 1 bins); Griffin-Lim
    takes its ``1/power`` root as magnitudes, like torchaudio's ``GriffinLim(power=...)`` and
    librosa's ``mel_to_audio``. A mel with 10 % or more negative values gets a warning: it looks
    like a log or dB mel.

    With ``frontend`` (a preset name of :func:`cumel.frontends` or a :class:`cumel.Frontend`),
    ``mel`` holds that front end's features (Whisper's log-mel, HiFi-GAN's log magnitude mel,
    dB mels, ...): the compression is undone and the audio comes back on the front end's frame
    grid (:meth:`cumel.Frontend.audio`); ``n_fft`` is then optional, and every STFT or
    filterbank keyword given overrides the front end's (``cumel.frontend(name, **overrides)``).

    ::

        y = cumel.mel_to_audio(features, frontend="whisper", length=n_samples)
        y = cumel.mel_to_audio(log_mel, frontend="hifigan")

    Parameters
    ----------
    mel : ndarray, cupy.ndarray or torch tensor, shape (..., n_mels, T)
        n_mels is ``mel.shape[-2]``; never modified. A torch tensor gives a torch tensor of its
        device; one that requires grad raises ``cumel.NoGradientError`` (Griffin-Lim here has no
        gradient: :mod:`cumel.torch` has one).
    n_fft : int
        FFT size of the STFT the mel came from (samples); optional with ``frontend``.
    frontend : str or Frontend, optional
    sample_rate : int, default 16000
        Hz.
    hop_length, win_length : int, optional
        Samples; defaults ``win_length = n_fft``, ``hop_length = win_length // 4``.
    power : float, default 2.0
    n_iter : int, default 32
        Griffin-Lim iterations, or ADMM outer iterations (``method="admm"``).
    momentum : float, default 0.99
        Fast Griffin-Lim momentum (of the ADMM start, too).
    length : int, optional
        Output samples; default what the frames cover (``hop_length * (T - 1)`` centred). With
        ``frontend`` only the frames covering ``length`` are inverted, and a ``length`` longer
        than the features describe is an error.
    f_min, f_max, norm, mel_type, solver :
        The filterbank and solver, as for :class:`cumel.InverseMelScale` (defaults 0.0,
        ``sample_rate // 2``, None, "htk", "nnls").
    center, pad, pad_mode :
        The frame grid, as for :class:`GriffinLim` (defaults True, None, "reflect").
    fb : array_like, optional
        A filterbank matrix of your own (``(n_fft // 2 + 1, n_mels)`` or librosa's
        ``(n_mels, n_fft // 2 + 1)``), instead of the one the filterbank keywords describe.
    seed : int, optional
        Seeds the Griffin-Lim start (and the SGD solvers' start).
    device : {None, "cpu", "cuda", "auto"}
        Where a NumPy input is computed; both stages run there, the result comes back as NumPy.
    workers : int, optional
        Threads of the CPU stages (None: all usable cores; 1: the calling thread); the result's
        bits do not depend on it.
    progress : bool, "auto" or callable
        Progress bars on stderr (tqdm): the inverse mel scale's frames, then Griffin-Lim's
        iterations; see :class:`cumel.InverseMelScale`.
    method : {"griffinlim", "admm"}, default "griffinlim"
        "griffinlim": nnls magnitude, then fast Griffin-Lim. "admm": the same start, then
        ``n_iter`` iterations of the joint magnitude-and-phase ADMM (:mod:`cumel.admm`).
    rho, sigma : float > 0, optional
        ADMM penalties of the consistency split (``Z = X``) and the mel split (``W = Y``);
        default ``rho = 0.75 (n_mels / n_freqs)^2`` and ``sigma = 10 rho``
        (``cumel.admm.default_penalties``). ``method="admm"`` only.
    inner_steps : int >= 0, optional
        ADMM: Newton steps of each mel step after its weighted projection (0: the projection
        alone). ``method="admm"`` only.
    start_iter : int >= 0, optional
        ADMM: fast Griffin-Lim iterations of the start. ``method="admm"`` only.

    Returns
    -------
    array, shape (..., length)
        float64 for float64 input, else float32; same array type as ``mel``.

    Raises
    ------
    ValueError
        A parameter out of range (the message names it and its value); ``n_fft`` missing
        without ``frontend``; an unknown ``method``, or ADMM settings with another method;
        ``mel`` of the wrong shape, or with NaN or Inf values; with ``frontend``, features with
        the wrong number of mels or a ``length`` longer than they describe.

    Warns
    -----
    UserWarning
        Without ``frontend``, a mel with 10 % or more negative values (it looks like a log or
        dB mel).

    Examples
    --------
    A tone's power mel spectrogram back to sound:

    >>> import numpy as np
    >>> import cumel
    >>> from cumel.stft import stft
    >>> x = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * np.hanning(8000)
    >>> mel = cumel.MelScale(n_mels=80, n_stft=201)(np.abs(stft(x, 400, 160)) ** 2)
    >>> y = cumel.mel_to_audio(mel, n_fft=400, hop_length=160, length=x.size, seed=0)
    >>> y.shape
    (8000,)
    >>> cumel.spectral_convergence(y, x, 400, 160) < 0.3
    True

    A model's features: Whisper's log-mel of one second of audio (3000 frames, padded to 30 s),
    back to that second:

    >>> audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    >>> features = cumel.frontend("whisper").features(audio)
    >>> features.shape
    (80, 3000)
    >>> cumel.mel_to_audio(features, frontend="whisper", length=audio.size, seed=0).shape
    (16000,)
    """
    admm_given: dict[str, Any] = {"rho": rho, "sigma": sigma, "inner_steps": inner_steps,
                                  "start_iter": start_iter}
    method = check_method(method, admm_given)
    joint: dict[str, Any] = {} if method == "griffinlim" else dict(method=method, **admm_given)
    given = {k: v for k, v in dict(sample_rate=sample_rate, hop_length=hop_length,
                                   win_length=win_length, power=power, f_min=f_min, f_max=f_max,
                                   norm=norm, mel_type=mel_type, center=center, pad=pad,
                                   pad_mode=pad_mode).items() if v is not _DEFAULT}
    if frontend is not None:
        from .mel_frontends import frontend as _frontend
        if n_fft is not None:
            given["n_fft"] = n_fft
        if fb is not None:
            given["fb"] = fb
        fe = _frontend(frontend, **given)
        return fe.audio(mel, length=length, n_iter=n_iter, seed=seed, device=device,
                        workers=workers, momentum=momentum, solver=solver, progress=progress,
                        **joint)
    if n_fft is None:
        raise ValueError("n_fft is required without frontend= (the FFT size of the mel's STFT; "
                         "or pass frontend='whisper', 'hifigan', ... for a model's features)")
    opts: dict[str, Any] = dict(_PLAIN, **given)
    with _backend.foreign_scope(mel, "mel", "cumel.mel_to_audio (its Griffin-Lim)",
                                "cumel.torch.InverseMelScale followed by cumel.torch.GriffinLim"
                                ) as (mel, back):
        if getattr(mel, "ndim", 0) < 2:
            raise ValueError(f"mel must have at least 2 dims (..., n_mels, time), got shape "
                             f"{tuple(getattr(mel, 'shape', ()))}")
        gl = GriffinLim(n_fft, n_iter, opts["win_length"], opts["hop_length"],
                        power=opts["power"], momentum=momentum, length=length,
                        center=opts["center"], pad=opts["pad"], pad_mode=opts["pad_mode"],
                        seed=seed, workers=workers, progress=progress)
        inverse = InverseMelScale(gl.n_freqs, None if fb is not None else mel.shape[-2],
                                  opts["sample_rate"], opts["f_min"], opts["f_max"],
                                  norm=opts["norm"], mel_type=opts["mel_type"], solver=solver,
                                  seed=seed, fb=fb, workers=workers, progress=progress)
        if method == "admm":
            from . import admm
            settings = admm.check_settings(n_iter, n_mels=inverse.n_mels, n_freqs=gl.n_freqs,
                                           **admm_given)
        xp, mel_x, to_caller = _backend.select(mel, device)
        S = inverse(mel_x)
        if method == "admm":
            return back(to_caller(admm.run(gl, inverse, mel_x, S, settings, xp)))
        return back(to_caller(gl(S)))


def spectral_convergence(y: Array, x: Array, n_fft: int, hop_length: int | None = None,
                         win_length: int | None = None) -> float:
    """``|| |STFT(y)| - |STFT(x)| ||_F / || |STFT(x)| ||_F`` (NumPy, float64).

    Parameters
    ----------
    y, x : array_like, shape (..., n_samples)
        Reconstruction and reference; ``y`` is cut or zero-padded to ``x``'s length.
    n_fft, hop_length, win_length : int
        The STFT of the comparison (:func:`cumel.stft.stft` conventions).

    Returns
    -------
    float
        0 for a perfect reconstruction; about 1 for noise of the same level.

    Raises
    ------
    ValueError
        ``n_fft``, ``hop_length`` or ``win_length`` out of range (the message names it).

    Examples
    --------
    >>> import numpy as np
    >>> import cumel
    >>> x = np.random.default_rng(0).standard_normal(4000)
    >>> cumel.spectral_convergence(x, x, 400, 160)
    0.0
    >>> cumel.spectral_convergence(0.5 * x, x, 400, 160)     # half the level: half the norm
    0.5
    """
    y = np.asarray(_backend.to_numpy(y), np.float64)
    x = np.asarray(_backend.to_numpy(x), np.float64)
    n = x.shape[-1]
    if y.shape[-1] >= n:
        y = y[..., :n]
    else:
        y = np.concatenate([y, np.zeros(y.shape[:-1] + (n - y.shape[-1],))], axis=-1)
    Y = np.abs(_stft.stft(y, n_fft, hop_length, win_length))
    X = np.abs(_stft.stft(x, n_fft, hop_length, win_length))
    return float(np.linalg.norm(Y - X) / np.linalg.norm(X))


def write_wav(file: str | os.PathLike[str] | BinaryIO, y: Array, sample_rate: int,
              normalize: bool = False) -> tuple[int, int]:
    """Write audio as 16-bit PCM WAV (standard library ``wave``) at the level it has.

    Full scale is 1.0: a sample ``y`` is written as ``round(y * 32767)``. Samples beyond full
    scale (``|y| > 1``) are clipped to it, with a warning that says how many there were and how
    loud the peak was; ``normalize=True`` scales instead.

    Parameters
    ----------
    file : str, path or binary file object
    y : array_like, shape (n_samples,) or (..., n_samples)
        Leading dimensions become channels.
    sample_rate : int
        Hz.
    normalize : bool, default False
        Scale so that the largest magnitude is at 0.99 of full scale (no clipping; silence stays
        silent). Without it the level is the one computed.

    Returns
    -------
    (n_channels, n_samples)

    Warns
    -----
    UserWarning
        Without ``normalize``, when samples exceed full scale and are clipped.

    Examples
    --------
    >>> import io, numpy as np
    >>> from cumel.griffin_lim import write_wav
    >>> write_wav(io.BytesIO(), 0.5 * np.sin(np.linspace(0, 100, 1600)), 16000)
    (1, 1600)
    """
    flat = np.asarray(_backend.to_numpy(y), np.float64)
    flat = flat.reshape(-1, flat.shape[-1])
    peak = float(np.abs(flat).max()) if flat.size else 0.0
    if normalize:
        scale = 0.99 / peak if peak > 0 else 0.0
    else:
        scale = 1.0
        over = int(np.count_nonzero(np.abs(flat) > 1.0))
        if over:
            name = f"{file}: " if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__") else ""
            warnings.warn(f"{name}{over} of {flat.size} samples ({over / flat.size:.2%}) exceed full "
                          f"scale (peak {peak:.3g}, {20 * math.log10(peak):+.1f} dBFS) and are "
                          "clipped; normalise (--normalize, normalize=True) or lower the level",
                          UserWarning, stacklevel=2)
    pcm = np.round(np.clip(flat * (scale * 32767), -32767, 32767)).astype("<i2")
    target = file if not isinstance(file, (str, bytes, os.PathLike)) else os.fspath(file)
    with wave.open(target if not isinstance(target, bytes) else target.decode(), "wb") as f:
        f.setnchannels(pcm.shape[0])
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.T.tobytes())
    return pcm.shape
