"""cumel: invert mel spectrograms, on NumPy or on NVIDIA GPUs through CuPy.

>>> import numpy as np, cumel
>>> inv = cumel.InverseMelScale(n_stft=201, n_mels=128)          # default solver: "nnls"
>>> S = inv(mel)                                                 # (..., 128, T) -> (..., 201, T)

>>> y = cumel.mel_to_audio(mel, n_fft=400, hop_length=160)      # (..., 128, T) -> (..., 160 (T-1))
>>> y = cumel.mel_to_audio(features, frontend="whisper", length=n)  # a model's log-mel features

``cumel.frontends()`` lists the front ends (Whisper, HiFi-GAN, Tacotron 2, librosa, torchaudio);
``cumel.frontend(name)`` gives one (``features``, ``spectrogram``, ``audio``).

torch users: ``cumel.torch`` has torchaudio's transforms as ``nn.Module`` s (``InverseMelScale``
with a gradient through the converged answer, ``GriffinLim``, ``MelScale``, ``Spectrogram``,
``MelSpectrogram``), for torch without torchaudio.

See ``cumel.InverseMelScale`` for the solvers (``nnls``, ``lstsq``, ``torchaudio``,
``mindspore``) and how they relate to torchaudio and MindSpore.
"""
from .filterbank import SparseMel, hz_to_mel, mel_to_hz, melscale_fbanks
from .transforms import InverseMelScale, MelScale, SolveInfo, inverse_mel_scale
from .griffin_lim import GriffinLim, griffinlim, mel_to_audio, spectral_convergence
from .mel_frontends import Frontend, frontend, frontends
from ._backend import NoGradientError
from .stream import MelStream, mel_to_audio_stream

def _installed_version() -> str:
    """The version of the installed distribution (pyproject.toml is the one place it is
    written); "0+unknown" for a source tree that was never installed."""
    from importlib import metadata
    try:
        return metadata.version("cumel")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__: str = _installed_version()

__all__ = [
    "Frontend",
    "GriffinLim",
    "InverseMelScale",
    "MelScale",
    "MelStream",
    "NoGradientError",
    "SolveInfo",
    "SparseMel",
    "frontend",
    "frontends",
    "hz_to_mel",
    "griffinlim",
    "inverse_mel_scale",
    "mel_to_audio",
    "mel_to_audio_stream",
    "mel_to_hz",
    "melscale_fbanks",
    "spectral_convergence",
]
