"""torchaudio's transforms as ``torch.nn.Module`` s: the constructor signatures and buffers of
``torchaudio.transforms`` 2.x, plus cumel's keywords.

``InverseMelScale`` solves with cumel (the converged non-negative answer by default, with a
gradient); ``MelScale``, ``Spectrogram``, ``MelSpectrogram`` and ``GriffinLim`` are torch
operations (differentiable, on any device), with the filterbank from :mod:`cumel.filterbank`.
"""
from __future__ import annotations

import math
import warnings

import torch

from .. import _validate
from ..transforms import InverseMelScale as _InverseMelScale
from ..transforms import MelScale as _MelScale
from . import _ops

DRIVERS = ("gels", "gelsy", "gelsd", "gelss")


def _filterbank_args(frontend, n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale):
    """The filterbank arguments, or a front end's (a name of :func:`cumel.frontends` or a
    :class:`cumel.Frontend`): ``(n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale,
    fb)``."""
    if frontend is None:
        return n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale, None
    from ..mel_frontends import Frontend
    from ..mel_frontends import frontend as _frontend
    fe = _frontend(frontend) if isinstance(frontend, str) else frontend
    if not isinstance(fe, Frontend):
        raise ValueError(f"frontend must be a front end's name ({', '.join(_names())}) or a "
                         f"cumel.Frontend, got {frontend!r}")
    if n_stft is not None and n_stft != fe.n_stft:
        raise ValueError(f"n_stft={n_stft} disagrees with frontend {fe.name!r} (n_stft={fe.n_stft})")
    return (fe.n_stft, fe.n_mels, fe.sample_rate, fe.f_min, fe.f_max, fe.norm, fe.mel_type,
            None if fe.fb is None else fe.fb)


def _names():
    from ..mel_frontends import frontends
    return frontends()


class InverseMelScale(torch.nn.Module):
    """Mel spectrogram to linear spectrogram: ``torchaudio.transforms.InverseMelScale`` solved
    by cumel, with a gradient.

    Parameters
    ----------
    n_stft : int
        Linear frequency bins (``n_fft // 2 + 1``); optional with ``frontend``.
    n_mels : int, default 128
    sample_rate : int, default 16000
    f_min : float, default 0.0
    f_max : float or None, default None
        Hz; None means ``sample_rate // 2``.
    norm : {None, "slaney"}
    mel_scale : {"htk", "slaney"}, default "htk"
    driver : {"gels", "gelsy", "gelsd", "gelss"}, default "gels"
        torchaudio's LAPACK driver, accepted for compatibility: cumel's ``solver="lstsq"``
        gives the minimum-norm least-squares answer (gelsd's), where torchaudio's default
        ``gels`` raises on rank-deficient filterbanks (201 bins x 128 mels).
    solver : {"nnls", "lstsq", "torchaudio", "mindspore"}, keyword only
        See :class:`cumel.InverseMelScale`. "nnls" (default) and "lstsq" have a gradient; the
        other two raise :class:`cumel.NoGradientError` when one is asked for.
    max_iter, tolerance_loss, tolerance_change, sgdargs, seed, workers : keyword only
        As :class:`cumel.InverseMelScale`.
    frontend : str or cumel.Frontend, optional, keyword only
        Take the filterbank of a model's front end (``"whisper"``, ``"hifigan"``, ...):
        ``n_stft``, ``n_mels``, ``sample_rate``, ``f_min``, ``f_max``, ``norm`` and
        ``mel_scale`` are then its.

    Attributes
    ----------
    fb : torch.Tensor, shape (n_stft, n_mels), float32
        The filterbank buffer, as torchaudio's (it moves with ``.to()`` and is in
        ``state_dict()``). A filterbank loaded into it is used as loaded.

    Notes
    -----
    The gradient of the "nnls" answer ``s = max(A.T mu, 0)``, ``A s + eps mu = m``, is, with
    ``D = diag(s > 0)``, ``dL/dm = (A D A.T + eps I)^-1 A D dL/ds``: one tridiagonal solve a frame
    (:mod:`cumel.solvers.gradient`). It is not defined where a bin sits exactly at 0 on its kink.
    The forward equals :class:`cumel.InverseMelScale`'s on the same input, bit for bit; CUDA
    tensors are solved by cumel's kernels on torch's current stream.

    Examples
    --------
    >>> import torch, cumel.torch
    >>> inv = cumel.torch.InverseMelScale(n_stft=201, n_mels=64)
    >>> spec = torch.rand(201, 10) ** 4
    >>> mel = cumel.torch.MelScale(n_mels=64, n_stft=201)(spec).requires_grad_()
    >>> S = inv(mel)
    >>> S.shape
    torch.Size([201, 10])
    >>> S.sum().backward()
    >>> mel.grad.shape
    torch.Size([64, 10])
    """

    def __init__(self, n_stft=None, n_mels=128, sample_rate=16000, f_min=0.0, f_max=None,
                 norm=None, mel_scale="htk", driver="gels", *, solver="nnls", max_iter=100000,
                 tolerance_loss=1e-5, tolerance_change=1e-8, sgdargs=None, seed=None,
                 workers=None, frontend=None):
        super().__init__()
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale, fb = _filterbank_args(
            frontend, n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale)
        if n_stft is None:
            raise ValueError("n_stft is required (n_fft // 2 + 1), unless frontend= gives it")
        self.inverse = _InverseMelScale(n_stft, n_mels, sample_rate, f_min, f_max, max_iter,
                                        tolerance_loss, tolerance_change, sgdargs, norm, mel_scale,
                                        solver=solver, seed=seed, workers=workers, fb=fb)
        self.n_mels, self.n_stft = self.inverse.n_mels, self.inverse.n_stft
        self.sample_rate, self.f_min = sample_rate, float(f_min)
        self.f_max = None if fb is not None else _validate.resolve_f_max(f_max, sample_rate)
        self.driver, self.solver = driver, self.inverse.solver
        self.config = _ops.config_of(self.inverse)
        self.register_buffer("fb", _ops.reference_fb(self.inverse, "cpu").clone())

    def extra_repr(self):
        return f"n_stft={self.n_stft}, n_mels={self.n_mels}, solver={self.solver!r}"

    def forward(self, melspec):
        """``melspec`` (..., n_mels, time) -> (..., n_stft, time), non-negative."""
        return _ops.apply(melspec, self.fb, self.config, self.n_mels, self.solver)


class MelScale(torch.nn.Module):
    """Linear to mel spectrogram: ``torchaudio.transforms.MelScale`` (torch operations).

    Parameters
    ----------
    n_mels : int, default 128
    sample_rate : int, default 16000
    f_min : float, default 0.0
    f_max : float or None, default None
    n_stft : int, default 201
    norm : {None, "slaney"}
    mel_scale : {"htk", "slaney"}, default "htk"
    frontend : str or cumel.Frontend, optional, keyword only
        Take a model's filterbank instead (see :class:`InverseMelScale`).

    Attributes
    ----------
    fb : torch.Tensor, shape (n_stft, n_mels), float32
        The buffer (:func:`cumel.melscale_fbanks`, torchaudio's filterbank).

    Examples
    --------
    >>> import torch, cumel.torch
    >>> cumel.torch.MelScale(n_mels=64, n_stft=201)(torch.ones(2, 201, 5)).shape
    torch.Size([2, 64, 5])
    """

    def __init__(self, n_mels=128, sample_rate=16000, f_min=0.0, f_max=None, n_stft=201,
                 norm=None, mel_scale="htk", *, frontend=None):
        super().__init__()
        n_stft, n_mels, sample_rate, f_min, f_max, norm, mel_scale, fb = _filterbank_args(
            frontend, None if frontend is not None else n_stft, n_mels, sample_rate, f_min, f_max,
            norm, mel_scale)
        forward = _MelScale(n_mels, sample_rate, f_min, f_max, n_stft, norm, mel_scale, fb=fb)
        self.n_mels, self.n_stft = forward.n_mels, forward.n_stft
        self.sample_rate, self.f_min = sample_rate, float(f_min)
        self.f_max = None if fb is not None else _validate.resolve_f_max(f_max, sample_rate)
        self.norm, self.mel_scale = norm, mel_scale
        self.register_buffer("fb", torch.from_numpy(forward.fb.copy()))

    def forward(self, specgram):
        """``specgram`` (..., n_stft, time) -> (..., n_mels, time)."""
        if specgram.dim() < 2 or specgram.shape[-2] != self.fb.shape[0]:
            raise ValueError(f"specgram must have shape (..., n_stft={self.fb.shape[0]}, time), "
                             f"got {tuple(specgram.shape)}")
        fb = self.fb if self.fb.dtype == specgram.dtype else self.fb.to(specgram.dtype)
        return torch.matmul(specgram.transpose(-1, -2), fb).transpose(-1, -2)


def _window(window_fn, win_length, wkwargs):
    return window_fn(win_length) if wkwargs is None else window_fn(win_length, **wkwargs)


def _check_length(value, name, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class Spectrogram(torch.nn.Module):
    """Waveform to spectrogram: ``torchaudio.transforms.Spectrogram`` (``torch.stft``).

    Parameters
    ----------
    n_fft : int, default 400
    win_length : int, optional
        Default ``n_fft``.
    hop_length : int, optional
        Default ``win_length // 2``.
    pad : int, default 0
        Zeros on both sides of the waveform first.
    window_fn : callable, default torch.hann_window
    power : float or None, default 2.0
        ``|X| ** power``; None: the complex STFT.
    normalized : bool or {"window", "frame_length"}, default False
        True means "window" (divide by the window's L2 norm).
    wkwargs : dict, optional
        Keyword arguments of ``window_fn``.
    center : bool, default True
    pad_mode : str, default "reflect"
    onesided : bool, default True
    return_complex : bool, optional
        Deprecated in torchaudio; with ``power=None`` False gives ``torch.view_as_real``.

    Attributes
    ----------
    window : torch.Tensor
        The buffer.

    Examples
    --------
    >>> import torch, cumel.torch
    >>> cumel.torch.Spectrogram(n_fft=400, hop_length=160)(torch.zeros(1600)).shape
    torch.Size([201, 11])
    """

    def __init__(self, n_fft=400, win_length=None, hop_length=None, pad=0,
                 window_fn=torch.hann_window, power=2.0, normalized=False, wkwargs=None,
                 center=True, pad_mode="reflect", onesided=True, return_complex=None):
        super().__init__()
        self.n_fft = _check_length(n_fft, "n_fft", allow_none=False)
        self.win_length = _check_length(win_length, "win_length") or self.n_fft
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length must be <= n_fft={self.n_fft}, got {win_length!r}")
        self.hop_length = _check_length(hop_length, "hop_length") or max(1, self.win_length // 2)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
        self.pad = pad
        if power is not None and (not isinstance(power, (int, float)) or not power > 0):
            raise ValueError(f"power must be None or a number > 0, got {power!r}")
        self.power = power
        if normalized is True:
            normalized = "window"
        if normalized not in (False, "window", "frame_length"):
            raise ValueError(f"normalized must be a bool, 'window' or 'frame_length', got "
                             f"{normalized!r}")
        self.normalized = normalized
        self.center, self.pad_mode = bool(center), pad_mode
        self.onesided = True if onesided is None else bool(onesided)
        if return_complex is not None:
            warnings.warn("return_complex is deprecated (as in torchaudio): use power=None for "
                          "the complex STFT", DeprecationWarning, stacklevel=2)
        self.return_complex = return_complex
        self.register_buffer("window", _window(window_fn, self.win_length, wkwargs))

    def forward(self, waveform):
        """``waveform`` (..., time) -> (..., freq, frames)."""
        if waveform.dim() < 1 or waveform.is_complex() or not waveform.is_floating_point():
            raise TypeError(f"waveform must be a real floating-point tensor (..., time), got "
                            f"{waveform.dtype} of shape {tuple(waveform.shape)}")
        if self.pad > 0:
            waveform = torch.nn.functional.pad(waveform, (self.pad, self.pad), "constant")
        lead = waveform.shape[:-1]
        spec = torch.stft(waveform.reshape(-1, waveform.shape[-1]), self.n_fft, self.hop_length,
                          self.win_length, self.window, self.center, self.pad_mode,
                          self.normalized == "frame_length", self.onesided, return_complex=True)
        spec = spec.reshape(lead + spec.shape[-2:])
        if self.normalized == "window":
            spec = spec / self.window.pow(2.0).sum().sqrt()
        if self.power is None:
            return torch.view_as_real(spec) if self.return_complex is False else spec
        magnitude = spec.abs()
        return magnitude if self.power == 1.0 else magnitude.pow(self.power)


class MelSpectrogram(torch.nn.Module):
    """Waveform to mel spectrogram: ``torchaudio.transforms.MelSpectrogram`` (a
    :class:`Spectrogram` then a :class:`MelScale`, as its submodules ``spectrogram`` and
    ``mel_scale``).

    Parameters
    ----------
    sample_rate, n_fft, win_length, hop_length, f_min, f_max, pad, n_mels, window_fn, power,
    normalized, wkwargs, center, pad_mode, onesided, norm, mel_scale
        torchaudio's, with its defaults (16000, 400, None, None, 0.0, None, 0, 128,
        torch.hann_window, 2.0, False, None, True, "reflect", None, None, "htk").

    Examples
    --------
    >>> import torch, cumel.torch
    >>> cumel.torch.MelSpectrogram(n_mels=64)(torch.zeros(2, 4000)).shape
    torch.Size([2, 64, 21])
    """

    def __init__(self, sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0,
                 f_max=None, pad=0, n_mels=128, window_fn=torch.hann_window, power=2.0,
                 normalized=False, wkwargs=None, center=True, pad_mode="reflect", onesided=None,
                 norm=None, mel_scale="htk"):
        super().__init__()
        self.sample_rate, self.n_fft, self.n_mels = sample_rate, n_fft, n_mels
        self.spectrogram = Spectrogram(n_fft, win_length, hop_length, pad, window_fn, power,
                                       normalized, wkwargs, center, pad_mode, onesided)
        self.win_length, self.hop_length = self.spectrogram.win_length, self.spectrogram.hop_length
        self.pad, self.power, self.normalized = pad, power, normalized
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1, norm,
                                  mel_scale)
        self.f_min, self.f_max = self.mel_scale.f_min, self.mel_scale.f_max

    def forward(self, waveform):
        """``waveform`` (..., time) -> (..., n_mels, frames)."""
        return self.mel_scale(self.spectrogram(waveform))


class GriffinLim(torch.nn.Module):
    """Spectrogram to waveform by fast Griffin-Lim: ``torchaudio.transforms.GriffinLim``,
    written in torch operations (so it has a gradient, runs on any device and compiles).

    Parameters
    ----------
    n_fft : int, default 400
    n_iter : int, default 32
    win_length : int, optional
        Default ``n_fft``.
    hop_length : int, optional
        Default ``win_length // 2``.
    window_fn : callable, default torch.hann_window
    power : float, default 2.0
        The input is ``|X| ** power``.
    wkwargs : dict, optional
    momentum : float in [0, 1), default 0.99
        Fast Griffin-Lim (0: the original algorithm).
    length : int, optional
        Samples of the output.
    rand_init : bool, default True
        A random complex start from torch's generator (``torch.manual_seed`` fixes it), else
        ones.

    Attributes
    ----------
    window : torch.Tensor
        The buffer.

    Notes
    -----
    Each iteration is ``x = istft(|S| e^{i phi})``, ``X = stft(x)``,
    ``phi <- angle(X - m / (1 + m) X_prev)``: the same update as :class:`cumel.GriffinLim` (which
    runs fused CUDA kernels and NumPy threads, but has no gradient).

    Examples
    --------
    >>> import torch, cumel.torch
    >>> gl = cumel.torch.GriffinLim(n_fft=400, n_iter=2, hop_length=100)
    >>> gl(torch.rand(201, 9)).shape
    torch.Size([800])
    """

    def __init__(self, n_fft=400, n_iter=32, win_length=None, hop_length=None,
                 window_fn=torch.hann_window, power=2.0, wkwargs=None, momentum=0.99,
                 length=None, rand_init=True):
        super().__init__()
        self.n_fft = _check_length(n_fft, "n_fft", allow_none=False)
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
            raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
        self.n_iter = n_iter
        self.win_length = _check_length(win_length, "win_length") or self.n_fft
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length must be <= n_fft={self.n_fft}, got {win_length!r}")
        self.hop_length = _check_length(hop_length, "hop_length") or max(1, self.win_length // 2)
        if not isinstance(power, (int, float)) or isinstance(power, bool) or not power > 0:
            raise ValueError(f"power must be a number > 0, got {power!r}")
        self.power = float(power)
        if not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0 \
                or not math.isfinite(momentum):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.length = _check_length(length, "length")
        self.rand_init = bool(rand_init)
        self.register_buffer("window", _window(window_fn, self.win_length, wkwargs))

    def forward(self, specgram):
        """``specgram`` (..., n_fft // 2 + 1, frames) -> waveform (..., length)."""
        n_freqs = self.n_fft // 2 + 1
        if specgram.dim() < 2 or specgram.shape[-2] != n_freqs or specgram.is_complex() \
                or not specgram.is_floating_point():
            raise ValueError(f"specgram must be a real floating-point tensor of shape "
                             f"(..., n_fft // 2 + 1 = {n_freqs}, frames), got {specgram.dtype} "
                             f"of shape {tuple(specgram.shape)}")
        lead = specgram.shape[:-2]
        magnitude = specgram.reshape((-1,) + specgram.shape[-2:]).pow(1.0 / self.power)
        complex_dtype = torch.complex128 if magnitude.dtype == torch.float64 else torch.complex64
        if self.rand_init:
            phase = torch.rand(magnitude.shape, dtype=complex_dtype, device=magnitude.device)
        else:
            phase = torch.ones(magnitude.shape, dtype=complex_dtype, device=magnitude.device)
        previous = torch.zeros_like(phase)
        keep = self.momentum / (1.0 + self.momentum)
        stft = dict(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                    window=self.window)
        for _ in range(self.n_iter):
            audio = torch.istft(magnitude * phase, length=self.length, **stft)
            rebuilt = torch.stft(audio, center=True, pad_mode="reflect", normalized=False,
                                 onesided=True, return_complex=True, **stft)
            phase = rebuilt - previous * keep if keep else rebuilt
            phase = phase / (phase.abs() + 1e-16)
            previous = rebuilt
        audio = torch.istft(magnitude * phase, length=self.length, **stft)
        return audio.reshape(lead + audio.shape[-1:])
