"""Functional forms of the transforms of cumel.torch (the spelling of torchaudio's functional module)."""
from __future__ import annotations

import torch

from .. import filterbank as _filterbank
from ..transforms import InverseMelScale as _InverseMelScale
from . import _ops


def melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm=None, mel_scale="htk"):
    """The filterbank (n_freqs, n_mels) as a float32 tensor, as torchaudio's function of this name.

    Computed by :func:`cumel.melscale_fbanks` (float64, cast once).

    Examples
    --------
    >>> import cumel.torch
    >>> cumel.torch.functional.melscale_fbanks(201, 0.0, 8000.0, 64, 16000).shape
    torch.Size([201, 64])
    """
    return torch.from_numpy(_filterbank.melscale_fbanks(n_freqs, f_min, f_max, n_mels,
                                                        sample_rate, norm, mel_scale))


def inverse_mel_scale(melspec, n_stft, n_mels=None, sample_rate=16000, f_min=0.0, f_max=None,
                      norm=None, mel_scale="htk", *, fb=None, solver="nnls", max_iter=100000,
                      tolerance_loss=1e-5, tolerance_change=1e-8, sgdargs=None, seed=None,
                      workers=None):
    """Differentiable inverse of a mel spectrogram tensor (see :class:`InverseMelScale`).

    Parameters
    ----------
    melspec : torch.Tensor, shape (..., n_mels, time)
        Real floating point, on the CPU or a CUDA device.
    n_stft : int
    n_mels : int, optional
        Default ``melspec.shape[-2]``.
    sample_rate, f_min, f_max, norm, mel_scale
        The filterbank (ignored with ``fb``).
    fb : torch.Tensor, shape (n_stft, n_mels), optional, keyword only
        A filterbank of your own (a triangular mel filterbank; see :class:`cumel.InverseMelScale`).
    solver, max_iter, tolerance_loss, tolerance_change, sgdargs, seed, workers : keyword only
        As :class:`cumel.InverseMelScale`.

    Returns
    -------
    torch.Tensor, shape (..., n_stft, time)
        With a gradient for "nnls" and "lstsq".

    Raises
    ------
    TypeError
        ``melspec`` complex or integer.
    ValueError
        A wrong number of mel bins, ``fb`` on another device.
    cumel.NoGradientError
        A gradient asked of a solver without one, or of ``fb``.

    Examples
    --------
    >>> import torch, cumel.torch
    >>> mel = torch.rand(2, 40, 7, dtype=torch.float64, requires_grad=True)
    >>> S = cumel.torch.functional.inverse_mel_scale(mel, n_stft=129)
    >>> S.shape, S.dtype
    (torch.Size([2, 129, 7]), torch.float64)
    """
    if n_mels is None:
        _ops.check_mel(melspec, melspec.shape[-2] if melspec.dim() >= 2 else -1)
        n_mels = melspec.shape[-2] if fb is None else fb.shape[-1]
    transform = _InverseMelScale(n_stft, n_mels, sample_rate, f_min, f_max, max_iter,
                                 tolerance_loss, tolerance_change, sgdargs, norm, mel_scale,
                                 solver=solver, seed=seed, workers=workers, fb=fb)
    fb_tensor = fb if isinstance(fb, torch.Tensor) else _ops.reference_fb(transform, melspec.device)
    if isinstance(fb, torch.Tensor) and fb.shape != (transform.n_stft, transform.n_mels):
        fb_tensor = fb.transpose(0, 1)               # librosa's layout, as the transform read it
    return _ops.apply(melspec, fb_tensor, _ops.config_of(transform), transform.n_mels,
                      transform.solver)
