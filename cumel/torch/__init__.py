"""torch without torchaudio: torchaudio's transforms as ``nn.Module`` s, and a gradient through
cumel's converged inverse.

::

    import cumel.torch as T                     # instead of torchaudio.transforms
    inv = T.InverseMelScale(n_stft=201, n_mels=128)      # cumel's nnls, differentiable
    S = inv(mel)                                # (..., 128, time) -> (..., 201, time)
    y = T.GriffinLim(n_fft=400)(S)              # torch operations: a gradient too

``InverseMelScale``, ``MelScale``, ``Spectrogram``, ``MelSpectrogram`` and ``GriffinLim`` take
``torchaudio.transforms``' constructor arguments and hold its buffers (``fb``, ``window``), so
``state_dict()`` and ``.to(device, dtype)`` behave as torchaudio's. ``InverseMelScale`` adds
cumel's keywords (``solver=``, ``tolerance_loss``, ``workers=``, ``frontend=``). :mod:`functional`
has the functional forms.

The inverse is a custom operator (``torch.ops.cumel.inverse_mel_scale``, with a fake
implementation and an autograd formula), so models holding it compile with
``torch.compile(fullgraph=True)`` and trace with ``torch.export``. CUDA tensors run cumel's
kernels on torch's current stream, forward and backward, through DLPack (no copy).

Needs torch (``pip install 'cumel[torch]'``); ``import cumel`` alone never imports it.
"""
try:
    import torch as _torch  # noqa: F401
except ImportError as exc:                       # pragma: no cover - exercised without torch
    raise ImportError("cumel.torch needs PyTorch: pip install 'cumel[torch]' (or any torch "
                      "build for your platform)") from exc

from . import functional
from .functional import inverse_mel_scale, melscale_fbanks
from .transforms import GriffinLim, InverseMelScale, MelScale, MelSpectrogram, Spectrogram

__all__ = ["GriffinLim", "InverseMelScale", "MelScale", "MelSpectrogram", "Spectrogram",
           "functional", "inverse_mel_scale", "melscale_fbanks"]
