"""torchaudio 0.8 ``InverseMelScale.forward``, written in PyTorch as torchaudio had it.

torchaudio replaced this SGD loop with least squares in 2.1; the benchmark keeps the original
as the peer of cumel's ``solver="torchaudio"`` (REFERENCE.md, "torchaudio 0.8 InverseMelScale").
The loop is torchaudio's, statement for statement: random start, ``torch.optim.SGD``, one loss over
the whole batch, clamp after every step, ``loss.item()`` on every iteration (a device
synchronisation on CUDA, as in the original).
"""
from __future__ import annotations

import torch

DEFAULT_SGDARGS = {"lr": 0.1, "momentum": 0.9}


def inverse_mel_scale_sgd(melspec, fb, *, max_iter, tolerance_loss, tolerance_change,
                          sgdargs=None):
    """Invert ``melspec`` by torchaudio 0.8's SGD.

    Parameters
    ----------
    melspec : torch.Tensor, shape (..., n_mels, time)
    fb : torch.Tensor, shape (n_freqs, n_mels)
        Filterbank in torchaudio's layout, same dtype and device as ``melspec``.
    max_iter : int
    tolerance_loss, tolerance_change : float
        Stop after the step where ``loss < tolerance_loss`` or the loss changed by less than
        ``tolerance_change``.
    sgdargs : dict or None
        ``torch.optim.SGD`` arguments; None means ``{"lr": 0.1, "momentum": 0.9}``.

    Returns
    -------
    specgram : torch.Tensor, shape (..., n_freqs, time)
        Non-negative.
    iterations : int
        Iterations run (one count for the batch: the loss is global).

    Notes
    -----
    The start is ``torch.rand`` from the default generator of ``melspec``'s device: call
    ``torch.manual_seed`` first for a reproducible run.
    """
    sgdargs = DEFAULT_SGDARGS if sgdargs is None else sgdargs
    shape = melspec.size()
    melspec = melspec.view(-1, shape[-2], shape[-1])
    n_mels, time = shape[-2], shape[-1]
    freq, _ = fb.size()
    assert n_mels == fb.size(1), f"fb has {fb.size(1)} mels, melspec has {n_mels}"
    melspec = melspec.transpose(-1, -2)

    specgram = torch.rand(melspec.size()[0], time, freq, requires_grad=True,
                          dtype=melspec.dtype, device=melspec.device)
    optim = torch.optim.SGD([specgram], **sgdargs)

    loss = float("inf")
    iterations = 0
    for iterations in range(1, max_iter + 1):
        optim.zero_grad()
        diff = melspec - specgram.matmul(fb)
        new_loss = diff.pow(2).sum(axis=-1).mean()
        # take sum over mel-frequency then average over other dimensions
        # so that loss threshold is applied par unit timeframe
        new_loss.backward()
        optim.step()
        specgram.data = specgram.data.clamp(min=0)

        new_loss = new_loss.item()
        if new_loss < tolerance_loss or abs(loss - new_loss) < tolerance_change:
            break
        loss = new_loss

    specgram.requires_grad_(False)
    specgram = specgram.clamp(min=0).transpose(-1, -2)
    return specgram.reshape(shape[:-2] + (freq, time)), iterations
