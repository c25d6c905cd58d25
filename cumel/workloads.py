"""The standard workloads (speech-201x128, tts-513x80, music-1025x128) and how to build them.

A workload fixes the STFT and the filterbank; applied to audio it gives the true power
spectrogram ``S_true`` (n_stft, T) and its mel spectrogram ``M = fb.T @ S_true``, the pair the
tests and the benchmark invert.  The STFT matches ``torchaudio.transforms.Spectrogram`` (periodic
Hann window, ``center=True`` with reflect padding, ``power=2``).
"""
from __future__ import annotations

import wave
from dataclasses import dataclass

import numpy as np

from .transforms import MelScale

__all__ = ["Workload", "WORKLOADS", "read_wav", "power_spectrogram", "synthetic_audio"]


@dataclass(frozen=True)
class Workload:
    """One standard inversion problem.

    Attributes
    ----------
    name : str
    clips : str
        Prefix of the audio files it uses ("speech_" or "music_").
    sample_rate, n_fft, hop : int
    n_mels : int
    f_min, f_max : float
        Hz.
    norm : str or None
    mel_scale : str
    """
    name: str
    clips: str
    sample_rate: int
    n_fft: int
    hop: int
    n_mels: int
    f_min: float
    f_max: float
    norm: str | None
    mel_scale: str

    @property
    def n_stft(self):
        return self.n_fft // 2 + 1

    def inverse_kwargs(self):
        """Keyword arguments of :class:`cumel.InverseMelScale` for this workload."""
        return dict(n_stft=self.n_stft, n_mels=self.n_mels, sample_rate=self.sample_rate,
                    f_min=self.f_min, f_max=self.f_max, norm=self.norm, mel_type=self.mel_scale)

    def mel_scale_transform(self):
        return MelScale(n_mels=self.n_mels, sample_rate=self.sample_rate, f_min=self.f_min,
                        f_max=self.f_max, n_stft=self.n_stft, norm=self.norm,
                        mel_scale=self.mel_scale)

    def spectrogram(self, audio):
        """Power spectrogram (n_stft, T) of a mono signal at ``sample_rate``, float32."""
        return power_spectrogram(audio, self.n_fft, self.hop).astype(np.float32)

    def pair(self, audio):
        """``(S_true, M)``: power spectrogram (n_stft, T) and mel (n_mels, T), float32."""
        S = self.spectrogram(audio)
        return S, self.mel_scale_transform()(S)


WORKLOADS = {
    w.name: w for w in (
        Workload("speech-201x128", "speech_", 16000, 400, 160, 128, 0.0, 8000.0, None, "htk"),
        Workload("tts-513x80", "speech_", 16000, 1024, 256, 80, 0.0, 8000.0, "slaney", "slaney"),
        Workload("music-1025x128", "music_", 22050, 2048, 512, 128, 0.0, 11025.0, "slaney", "slaney"),
    )
}


def read_wav(path):
    """Mono 16-bit PCM WAV -> (float32 samples in [-1, 1), sample rate in Hz)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"path: only 16-bit PCM WAV is supported, got {f.getsampwidth() * 8}-bit "
                             f"in {path}")
        rate, channels = f.getframerate(), f.getnchannels()
        data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data, rate


def power_spectrogram(audio, n_fft, hop):
    """``|STFT|**2`` with a periodic Hann window, centred frames (reflect padding).

    Parameters
    ----------
    audio : ndarray, shape (n_samples,)
    n_fft, hop : int
        Frame length and hop in samples.

    Returns
    -------
    ndarray, shape (n_fft // 2 + 1, 1 + n_samples // hop), float64
    """
    audio = np.asarray(audio, dtype=np.float64)
    pad = n_fft // 2
    x = np.pad(audio, pad, mode="reflect")
    n_frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.fft.rfft(x[idx] * window, axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).T


def synthetic_audio(seconds, sample_rate, seed=0):
    """A speech-like test signal: voiced harmonics with a moving pitch, noise bursts and pauses.

    Used where no real audio is at hand (the benchmark's default on a fresh clone).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t) + 20 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None) ** 0.5
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 0.45 * t) > 0.6)
    x = 0.3 * voiced * envelope + 0.05 * noise + 1e-4 * rng.standard_normal(n)
    return (x / np.abs(x).max() * 0.8).astype(np.float32)
