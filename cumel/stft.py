"""Short-time Fourier transform and its inverse, on NumPy or CuPy (``xp``).

Conventions (those of ``torch.stft``/``torch.istft`` and of librosa's defaults, so that the same
mel spectrogram gives audio of the same length and alignment):

* window: periodic Hann of ``win_length`` samples (``torch.hann_window(win_length)``,
  ``scipy.signal.get_window("hann", win_length)``), zero-padded on both sides to ``n_fft``
  (left pad ``(n_fft - win_length) // 2``);
* ``center=True``: the signal is padded by ``n_fft // 2`` on both sides by reflection (no edge
  repeat, ``np.pad(mode="reflect")``) and frame ``t`` covers padded samples
  ``[t * hop, t * hop + n_fft)``, i.e. it is centred on sample ``t * hop`` of the signal;
  a signal of ``n`` samples gives ``1 + n // hop`` frames (even ``n_fft``; for odd ``n_fft``
  ``1 + (n - 1) // hop``, as torch);
* ``center=False``: padded by ``pad = (left, right)`` samples instead (default none:
  ``torch.stft(center=False)``), so frame ``t`` starts at sample ``t * hop - left``; a signal
  of ``n`` samples gives ``1 + (n + left + right - n_fft) // hop`` frames. HiFi-GAN's
  ``mel_spectrogram`` is ``center=False, pad=(n_fft - hop) // 2``: its frame ``t`` is centred on
  sample ``t * hop + hop / 2``, half a hop later than ``center=True``'s;
* ``pad_mode``: ``"reflect"`` (torch's default) or ``"constant"`` (zeros: librosa's default
  since 0.10);
* no normalisation of the forward transform (``normalized=False``), one-sided
  (``n_fft // 2 + 1`` bins);
* inverse: windowed overlap-add of ``irfft`` frames divided by the overlap-added squared window
  (``torch.istft``, librosa's ``istft``), then the padding is dropped (``left`` samples at
  the start). The default length is ``n_fft + hop * (T - 1) - left - right`` samples, i.e.
  ``hop * (T - 1)`` with ``center=True`` (both libraries' default for even ``n_fft``); a
  longer ``length`` is padded with zeros. Where the squared-window envelope is below 1e-11
  (only possible when ``hop_length > win_length``) the output is 0 (librosa's rule; torch
  raises).

Internally frames are kept frames-major, ``(B, T, n_fft // 2 + 1)``, the layout the FFTs want;
the public :func:`stft`/:func:`istft` take and give the usual ``(..., freq, time)``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from . import _backend, _validate

__all__ = ["stft", "istft", "hann_window", "frame_count", "Padding", "padding"]

ENVELOPE_FLOOR = 1e-11     # torch.istft's NOLA threshold
PAD_MODES = ("reflect", "constant")


class Padding(NamedTuple):
    """How a signal is padded before framing (:func:`padding` builds it from the keywords)."""
    left: int       # samples before the signal
    right: int      # samples after it
    mode: str       # one of PAD_MODES
    center: bool    # True: center=True's n_fft // 2 on each side


def check_pad(pad, name="pad"):
    """``pad`` as ``(left, right)`` samples: an integer for both sides or a pair."""
    if _validate._is_int(pad):
        pad = (pad, pad)
    if (not isinstance(pad, (tuple, list)) or len(pad) != 2
            or not all(_validate._is_int(p) and p >= 0 for p in pad)):
        raise ValueError(f"{name} must be an integer >= 0 or a pair (left, right) of them, "
                         f"got {pad!r}")
    return int(pad[0]), int(pad[1])


def padding(n_fft, center=True, pad=None, pad_mode="reflect"):
    """The :class:`Padding` of ``center``/``pad``/``pad_mode``, validated.

    ``center=True`` pads ``n_fft // 2`` on both sides and takes no ``pad``; ``center=False``
    pads ``pad`` (an integer for both sides, or ``(left, right)``; default 0).
    """
    if not isinstance(center, (bool, np.bool_)):
        raise ValueError(f"center must be True or False, got {center!r}")
    mode = pad_mode.lower() if isinstance(pad_mode, str) else pad_mode
    if mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if center:
        if pad is not None:
            raise ValueError(f"pad={pad!r} applies with center=False (center=True pads "
                             f"n_fft // 2 = {n_fft // 2} samples on each side)")
        return Padding(n_fft // 2, n_fft // 2, mode, True)
    left, right = check_pad(0 if pad is None else pad)
    return Padding(left, right, mode, False)


def _centred(n_fft):
    return Padding(n_fft // 2, n_fft // 2, "reflect", True)


@functools.lru_cache(maxsize=64)
def hann_window(win_length, n_fft):
    """Periodic Hann window of ``win_length`` samples, centred in ``n_fft``.

    Returns
    -------
    ndarray, shape (n_fft,), float64 (read-only: cached)
    """
    n = np.arange(win_length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    out = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    out[left:left + win_length] = w
    out.flags.writeable = False
    return out


def frame_count(n_samples, n_fft, hop_length, pad=None):
    """Frames of an STFT of ``n_samples`` samples padded by ``pad`` (a :class:`Padding`;
    default ``center=True``'s): ``1 + (n_samples + left + right - n_fft) // hop_length``, i.e.
    ``1 + n_samples // hop`` for a centred STFT and even ``n_fft`` (torch.stft, librosa.stft);
    0 when the padded signal is shorter than one frame."""
    pad = _centred(n_fft) if pad is None else pad
    return max(0, 1 + (n_samples + pad.left + pad.right - n_fft) // hop_length)


def default_length(n_frames, n_fft, hop_length, pad=None):
    """Samples of the inverse of ``n_frames`` frames when no length is given: the overlap-add
    length ``n_fft + hop * (T - 1)`` less the padding on each side."""
    pad = _centred(n_fft) if pad is None else pad
    return n_fft + hop_length * (n_frames - 1) - pad.left - pad.right


def longest_signal(n_frames, n_fft, hop_length, pad=None):
    """The most samples a signal giving ``n_frames`` frames can have (:func:`frame_count`):
    ``hop - 1`` more than the shortest one."""
    pad = _centred(n_fft) if pad is None else pad
    return n_fft + hop_length * (n_frames - 1) - pad.left - pad.right + hop_length - 1


def check_stft_args(n_fft, hop_length, win_length):
    """Validated ``(n_fft, hop_length, win_length)`` with torch's defaults
    (``win_length = n_fft``, ``hop_length = win_length // 4``)."""
    n_fft = _validate.check_positive_int(n_fft, "n_fft")
    if n_fft < 2:
        raise ValueError(f"n_fft must be at least 2, got {n_fft!r}")
    win_length = n_fft if win_length is None else _validate.check_positive_int(win_length, "win_length")
    if win_length > n_fft:
        raise ValueError(f"win_length must be <= n_fft={n_fft}, got {win_length!r}")
    hop_length = (max(1, win_length // 4) if hop_length is None
                  else _validate.check_positive_int(hop_length, "hop_length"))
    return n_fft, hop_length, win_length


# -- device-side constants, cached per parameters, array module, device and dtype -------------------

_DEVICE_CACHE: dict = {}


def cached(xp, key, build):
    """``build()`` (a host array) on ``xp``'s current device, once per ``key`` and device."""
    full = (_backend.device_id(xp), xp.__name__) + tuple(key)
    value = _DEVICE_CACHE.get(full)
    if value is None:
        if len(_DEVICE_CACHE) > 256:
            _DEVICE_CACHE.clear()
        value = _DEVICE_CACHE[full] = xp.asarray(build())
    return value


def _window(xp, n_fft, win_length, dtype):
    return cached(xp, ("window", n_fft, win_length, np.dtype(dtype).str),
                  lambda: hann_window(win_length, n_fft).astype(dtype))


@functools.lru_cache(maxsize=64)
def _inverse_envelope(n_fft, hop_length, win_length, n_frames, length, start):
    """1 / (overlap-added squared window) over the ``length`` output samples from padded sample
    ``start`` on (0 where the envelope is below :data:`ENVELOPE_FLOOR` or past the frames),
    float64."""
    w2 = hann_window(win_length, n_fft) ** 2
    total = max(n_fft + hop_length * (n_frames - 1), start + length)
    env = np.zeros(total)
    for t in range(n_frames):   # host, once per (parameters, T): cached
        env[t * hop_length:t * hop_length + n_fft] += w2
    env = env[start:start + length]
    inv = np.zeros_like(env)
    ok = env > ENVELOPE_FLOOR
    inv[ok] = 1.0 / env[ok]
    inv.flags.writeable = False
    return inv


# -- frames-major kernels of the transforms ---------------------------------------------------------

def pad_signal(x, pad, xp):
    """``np.pad(x, ((0, 0), (left, right)), mode)`` with slices only (any ``xp``), for a
    :class:`Padding` ``pad``."""
    n = x.shape[-1]
    left, right = pad.left, pad.right
    if pad.mode == "constant":
        zeros = xp.zeros
        return xp.concatenate([zeros((x.shape[0], left), x.dtype), x,
                               zeros((x.shape[0], right), x.dtype)], axis=1)
    if n <= max(left, right):
        what = "n_fft // 2" if pad.center else "the padding"
        raise ValueError(f"the signal must be longer than {what} = {max(left, right)} samples "
                         f"for reflect padding, got {n} samples")
    head = x[:, 1:left + 1][:, ::-1]
    tail = x[:, n - right - 1:n - 1][:, ::-1]
    return xp.concatenate([head, x, tail], axis=1)


def frames_stft(y, n_fft, hop_length, win_length, xp, pad=None, run=None):
    """STFT of a batch of signals, frames-major.

    Parameters
    ----------
    y : array, shape (B, n), float32 or float64
    n_fft, hop_length, win_length : int
        Validated (:func:`check_stft_args`).
    xp : module
        numpy or cupy.
    pad : Padding, optional
        Default ``center=True``'s (reflect, ``n_fft // 2`` each side).
    run : cumel._threads.Runner, optional
        Shares the frames' FFTs between threads (NumPy; each frame's transform is the same
        arithmetic wherever it runs).

    Returns
    -------
    array, shape (B, T, n_fft // 2 + 1), complex (complex64 for float32)
        ``T = frame_count(n, n_fft, hop_length, pad)``: ``1 + n // hop_length`` when centred.
    """
    pad = _centred(n_fft) if pad is None else pad
    n_frames = frame_count(y.shape[-1], n_fft, hop_length, pad)
    if n_frames < 1:
        raise ValueError(f"the signal ({y.shape[-1]} samples, padded by {pad.left} + "
                         f"{pad.right}) is shorter than one frame of n_fft={n_fft} samples")
    x = pad_signal(y, pad, xp)
    window = _window(xp, n_fft, win_length, y.dtype)
    if xp is np:
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::hop_length]
    else:
        idx = cached(xp, ("frames", n_fft, hop_length, n_frames),
                     lambda: (np.arange(n_fft)[None, :]
                              + hop_length * np.arange(n_frames)[:, None]).astype(np.int64))
        frames = x[:, idx]
    if run is None or xp is not np:
        return xp.fft.rfft(frames * window, n=n_fft, axis=-1)
    out = np.empty((y.shape[0], n_frames, n_fft // 2 + 1),
                   np.complex64 if y.dtype == np.float32 else np.complex128)

    def transform(a, b):
        _into(np.fft.rfft, frames[:, a:b] * window, n_fft, out[:, a:b])

    run(transform, n_frames)
    return out


def frames_istft(X, n_fft, hop_length, win_length, length, xp, pad=None, run=None):
    """Inverse of :func:`frames_stft`: windowed overlap-add over the squared-window envelope.

    Parameters
    ----------
    X : array, shape (B, T, n_fft // 2 + 1), complex
    length : int or None
        Output samples; None for :func:`default_length`.
    pad : Padding, optional
        The padding of the forward transform (its ``left`` samples are dropped).
    run : cumel._threads.Runner, optional
        Shares the frames' inverse FFTs between threads (NumPy).

    Returns
    -------
    array, shape (B, length), float32 for complex64 input, else float64
    """
    pad = _centred(n_fft) if pad is None else pad
    B, T, _ = X.shape
    if length is None:
        length = default_length(T, n_fft, hop_length, pad)
        if length < 1:
            raise ValueError(f"{T} frames padded by {pad.left} + {pad.right} samples leave no "
                             "signal: pass length")
    real = np.float32 if X.dtype == np.complex64 else np.float64
    window = _window(xp, n_fft, win_length, real)
    if run is None or xp is not np:
        frames = xp.fft.irfft(X, n=n_fft, axis=-1)
        if frames.dtype != real:
            frames = frames.astype(real)
        frames *= window
    else:
        frames = np.empty((B, T, n_fft), real)

        def transform(a, b):
            part = frames[:, a:b]
            _into(np.fft.irfft, X[:, a:b], n_fft, part)
            part *= window

        run(transform, T)
    # overlap-add: chunk r of every frame lands on hop-sized slot t + r
    R = -(-n_fft // hop_length)
    start = pad.left
    slots = max(T + R - 1, -(-(start + length) // hop_length))
    out = xp.zeros((B, slots, hop_length), real)
    for r in range(R):
        w = min(hop_length, n_fft - r * hop_length)
        out[:, r:r + T, :w] += frames[:, :, r * hop_length:r * hop_length + w]
    y = out.reshape(B, slots * hop_length)[:, start:start + length]
    inv = cached(xp, ("inv-envelope", n_fft, hop_length, win_length, T, length, start,
                      np.dtype(real).str),
                 lambda: _inverse_envelope(n_fft, hop_length, win_length, T, length,
                                           start).astype(real))
    return y * inv


_FFT_OUT = int(np.__version__.split(".")[0]) >= 2       # numpy.fft takes out= since NumPy 2.0


def _into(fft, x, n, out):
    """``out[...] = fft(x, n=n, axis=-1)``, written in place where NumPy allows it (the
    transforms keep single precision since NumPy 2.0, so the dtypes match)."""
    if _FFT_OUT:
        fft(x, n=n, axis=-1, out=out)
    else:
        out[...] = fft(x, n=n, axis=-1)


# -- public wrappers ----------------------------------------------------------------------------

def stft(y, n_fft, hop_length=None, win_length=None, *, center=True, pad=None,
         pad_mode="reflect"):
    """One-sided STFT with a periodic Hann window (``torch.stft(..., return_complex=True)``,
    ``librosa.stft``); by default centred with reflect padding.

    Parameters
    ----------
    y : ndarray or cupy.ndarray, shape (..., n_samples)
        Signal; float64 stays float64, anything else is computed in float32.
    n_fft : int
    hop_length : int, optional
        Samples between frames; default ``win_length // 4``.
    win_length : int, optional
        Window length in samples, ``<= n_fft``; default ``n_fft``.
    center : bool, default True
        Pad ``n_fft // 2`` samples on each side, so frame ``t`` is centred on sample
        ``t * hop_length``. False: pad by ``pad`` instead.
    pad : int or (int, int), optional
        With ``center=False``: samples of padding on both sides, or ``(left, right)``;
        default 0 (``torch.stft(center=False)``). HiFi-GAN: ``(n_fft - hop_length) // 2``.
    pad_mode : {"reflect", "constant"}, default "reflect"
        Reflection (torch) or zeros (librosa >= 0.10).

    Returns
    -------
    complex array, shape (..., n_fft // 2 + 1, T)
        ``T = 1 + (n_samples + left + right - n_fft) // hop_length`` (:func:`frame_count`),
        ``1 + n_samples // hop_length`` when centred with an even ``n_fft``. Same array type as
        ``y``.
    """
    n_fft, hop_length, win_length = check_stft_args(n_fft, hop_length, win_length)
    framing = padding(n_fft, center, pad, pad_mode)
    xp = _backend.get_array_module(y)
    y = xp.asarray(y)
    if y.ndim < 1:
        raise ValueError(f"y must have at least 1 dim (..., n_samples), got shape {tuple(y.shape)}")
    dtype = np.float64 if y.dtype == np.float64 else np.float32
    lead = tuple(y.shape[:-1])
    flat = y.reshape((-1, y.shape[-1])).astype(dtype)
    X = frames_stft(flat, n_fft, hop_length, win_length, xp, framing)
    return xp.swapaxes(X, -1, -2).reshape(lead + (X.shape[-1], X.shape[-2]))


def istft(X, n_fft, hop_length=None, win_length=None, length=None, *, center=True, pad=None):
    """Inverse of :func:`stft` (``torch.istft``, ``librosa.istft``).

    Parameters
    ----------
    X : complex array, shape (..., n_fft // 2 + 1, T)
    n_fft, hop_length, win_length, center, pad :
        As for :func:`stft` (the padding mode does not matter to the inverse).
    length : int, optional
        Output samples; default ``n_fft + hop_length * (T - 1) - left - right``, i.e.
        ``hop_length * (T - 1)`` when centred with an even ``n_fft``.

    Returns
    -------
    real array, shape (..., length)
        float32 for complex64 input, else float64.
    """
    n_fft, hop_length, win_length = check_stft_args(n_fft, hop_length, win_length)
    framing = padding(n_fft, center, pad)
    xp = _backend.get_array_module(X)
    X = xp.asarray(X)
    if X.ndim < 2 or X.shape[-2] != n_fft // 2 + 1:
        raise ValueError(f"X must have shape (..., n_fft // 2 + 1 = {n_fft // 2 + 1}, time), "
                         f"got {tuple(X.shape)}")
    if length is not None:
        length = _validate.check_positive_int(length, "length")
    lead = tuple(X.shape[:-2])
    dtype = np.complex64 if X.dtype in (np.complex64, np.float32) else np.complex128
    flat = xp.ascontiguousarray(xp.swapaxes(X.reshape((-1,) + X.shape[-2:]), -1, -2)).astype(dtype)
    y = frames_istft(flat, n_fft, hop_length, win_length, length, xp, framing)
    return y.reshape(lead + (y.shape[-1],))
