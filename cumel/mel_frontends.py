"""Front ends: the mel features people hold, computed and undone exactly as their models do.

A :class:`Frontend` is everything between a waveform and a model's mel features::

    audio (..., n)          zero-padded on the right to ``pad_to`` samples (Whisper: 30 s)
    frames                  padded by ``n_fft // 2`` (``center=True``) or ``pad`` (left, right),
                            reflect or zeros (``pad_mode``); frame t starts at t * hop_length
    X = STFT                periodic Hann of ``win_length`` centred in ``n_fft``
    S = (|X|^2 + magnitude_eps) ** (power / 2)
                            power 2: a power spectrogram; 1: magnitudes (HiFi-GAN adds 1e-9)
    S = S[..., :-1]         only with ``drop_last_frame`` (Whisper: n // hop frames)
    M = fb.T @ S            the mel filterbank (or a matrix of your own, ``fb``)
    c = multiplier * log(max(M, floor)) - multiplier * log(max(floor, ref))
                            ``log`` "ln" or "log10" (None: no compression); dB is log10 with
                            multiplier 10; ``ref="max"`` is ``ref=np.max`` (per item)
    c = max(c, max(c) - dynamic_range)
                            per item: Whisper's ``max - 8``, librosa's ``top_db``
    features = (c + offset) * scale
                            Whisper: (c + 4) / 4

Undoing it (:meth:`Frontend.mel`) is exact except where the compression threw information away,
and that is said, not hidden:

* values at the floor (the clamp ``floor``, or ``max - dynamic_range``) only say "this low or
  lower": they are taken as 0, so a frame of pure floor is silence (:meth:`Frontend.floor_mask`
  marks them);
* ``ref="max"`` divides by each item's peak: the absolute level is gone, and
  :meth:`Frontend.audio` returns audio scaled to a peak of 1.

Then :meth:`Frontend.spectrogram` inverts the mel scale (:class:`cumel.InverseMelScale`, nnls),
and :meth:`Frontend.audio` runs Griffin-Lim on the front end's own frame grid and padding, so
the output lines up sample for sample with the audio the features came from.

Presets (``cumel.frontends()``), each read from the project's own code:

* ``"whisper"`` (``"whisper-128"`` for large-v3): openai-whisper ``log_mel_spectrogram``,
  transformers ``WhisperFeatureExtractor``;
* ``"hifigan"``: HiFi-GAN ``meldataset.mel_spectrogram`` (VITS, BigVGAN and many TTS repos);
* ``"tacotron2"``: NVIDIA Tacotron 2 / WaveGlow ``layers.TacotronSTFT``;
* ``"librosa"``: ``librosa.feature.melspectrogram`` defaults + ``librosa.power_to_db``;
* ``"torchaudio"``: ``torchaudio.transforms.MelSpectrogram`` defaults + ``AmplitudeToDB()``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend, _validate
from . import stft as _stft
from ._typing import Array, ArrayModule, Progress
from .filterbank import UserFilterbank

__all__ = ["Frontend", "frontend", "frontends", "PRESETS"]

LOGS = (None, "ln", "log10")


@dataclass(frozen=True)
class Frontend:
    """A mel front end: audio to features (:meth:`features`) and back (:meth:`audio`).

    Build one with :func:`cumel.frontend` (a preset, with overrides) or directly; the defaults
    are ``torchaudio.transforms.MelSpectrogram``'s with no compression.

    Parameters
    ----------
    name : str, default "custom"
    sample_rate : int, default 16000
        Hz.
    n_fft : int, default 400
    hop_length : int, optional
        Samples between frames; default ``win_length // 4``.
    win_length : int, optional
        Periodic Hann window length, ``<= n_fft``; default ``n_fft``.
    window : "hann"
    center : bool, default True
        Pad ``n_fft // 2`` on each side (frame t centred on sample ``t * hop_length``); False:
        pad by ``pad``.
    pad : int or (int, int), optional
        With ``center=False``: samples of padding (both sides, or ``(left, right)``); HiFi-GAN
        pads ``(n_fft - hop_length) // 2`` = 384.
    pad_mode : {"reflect", "constant"}, default "reflect"
    pad_to : int, optional
        Zero-pad shorter audio on the right to this many samples first (transformers pads
        Whisper input to 30 s = 480000; longer audio is kept whole, not cut).
    power : float, default 2.0
        2: power spectrogram, 1: magnitudes.
    magnitude_eps : float, default 0.0
        Added to ``|X|^2`` before the root (HiFi-GAN: 1e-9).
    drop_last_frame : bool, default False
        Whisper drops the STFT's last frame.
    n_mels : int, optional
        Default 128, or the number of filters of ``fb``.
    f_min : float, default 0.0
    f_max : float, optional
        Hz; default ``sample_rate // 2``.
    norm : {None, "slaney"}
    mel_type : {"htk", "slaney"}, default "htk"
    fb : array_like, optional
        A filterbank matrix of your own (see :class:`cumel.InverseMelScale`), instead of the
        one ``n_mels``, ``f_min``, ``f_max``, ``norm`` and ``mel_type`` describe.
    log : {None, "ln", "log10"}, default None
        The compression's logarithm; None: the features are the (affinely mapped) linear mel.
    multiplier : float, default 1.0
        10 for dB of a power mel (``power_to_db``, ``AmplitudeToDB("power")``), 20 for dB of a
        magnitude mel.
    floor : float, default 1e-10
        The clamp before the logarithm (``amin``, HiFi-GAN's ``clip_val`` 1e-5).
    ref : float or "max", default 1.0
        Reference level (``power_to_db``'s ``ref``); ``np.max`` or "max": each item's peak.
    dynamic_range : float, optional
        Values below ``max - dynamic_range`` (in units of ``c``) are raised to it: Whisper 8
        (decades), librosa ``top_db`` 80 (dB).
    offset, scale : float, default 0.0, 1.0
        ``features = (c + offset) * scale``; ``scale > 0``.

    Attributes
    ----------
    n_stft : int
        ``n_fft // 2 + 1``.

    Raises
    ------
    ValueError
        A field out of range or of the wrong type (the message names it and its value), or an
        ``fb`` whose number of filters disagrees with ``n_mels``.

    See Also
    --------
    frontend : a preset, with overrides.
    mel_to_audio : ``mel_to_audio(features, frontend=fe)`` is ``fe.audio(features)``.

    Examples
    --------
    A front end of your own: 64 HTK mels of a 400-point STFT, in dB (``10 log10``):

    >>> import numpy as np
    >>> import cumel
    >>> fe = cumel.Frontend(n_fft=400, hop_length=160, n_mels=64, log="log10", multiplier=10.0)
    >>> audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    >>> features = fe.features(audio)             # (n_mels, 1 + n // hop_length)
    >>> features.shape
    (64, 101)
    >>> y = fe.audio(features, length=audio.size, seed=0)
    >>> y.shape
    (16000,)
    """

    name: str = "custom"
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int | None = None
    win_length: int | None = None
    window: str = "hann"
    center: bool = True
    pad: tuple | None = None
    pad_mode: str = "reflect"
    pad_to: int | None = None
    power: float = 2.0
    magnitude_eps: float = 0.0
    drop_last_frame: bool = False
    n_mels: int | None = None
    f_min: float = 0.0
    f_max: float | None = None
    norm: str | None = None
    mel_type: str = "htk"
    fb: UserFilterbank | None = None
    log: str | None = None
    multiplier: float = 1.0
    floor: float = 1e-10
    ref: float | str = 1.0
    dynamic_range: float | None = None
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        put("sample_rate", _validate.check_positive_int(self.sample_rate, "sample_rate"))
        n_fft, hop, win = _stft.check_stft_args(self.n_fft, self.hop_length, self.win_length)
        put("n_fft", n_fft), put("hop_length", hop), put("win_length", win)
        if not isinstance(self.window, str) or self.window.lower() != "hann":
            raise ValueError(f"window must be 'hann' (periodic Hann), got {self.window!r}")
        put("window", "hann")
        framing = _stft.padding(n_fft, self.center, self.pad, self.pad_mode)
        put("center", framing.center), put("pad_mode", framing.mode)
        put("pad", None if framing.center else (framing.left, framing.right))
        if self.pad_to is not None:
            put("pad_to", _validate.check_positive_int(self.pad_to, "pad_to"))
        put("power", _positive(self.power, "power"))
        put("magnitude_eps", _non_negative(self.magnitude_eps, "magnitude_eps"))
        put("drop_last_frame", _flag(self.drop_last_frame, "drop_last_frame"))
        if self.fb is not None:
            fb = UserFilterbank.from_matrix(self.fb, self.n_stft)
            if self.n_mels is None:
                put("n_mels", fb.shape[1])
            if self.n_mels != fb.shape[1]:
                raise ValueError(f"fb has {fb.shape[1]} mel filters (shape {fb.shape}), but "
                                 f"n_mels={self.n_mels}")
            put("fb", fb)
            from .transforms import get_plan
            get_plan((fb,))                     # its structure, checked now with a clear error
        else:
            from .transforms import _filterbank_key
            with warnings.catch_warnings():     # empty filters: said once, by describe()
                warnings.simplefilter("ignore", UserWarning)
                key = _filterbank_key(self.n_stft, self.n_mels, self.sample_rate, self.f_min,
                                      self.f_max, self.norm, self.mel_type, "mel_type")
            put("n_mels", key[3]), put("f_min", key[1]), put("f_max", key[2])
            put("norm", key[5]), put("mel_type", key[6])
        log = self.log.lower() if isinstance(self.log, str) else self.log
        if log not in LOGS:
            raise ValueError(f"log must be one of {LOGS}, got {self.log!r}")
        put("log", log)
        put("multiplier", _positive(self.multiplier, "multiplier"))
        put("floor", _positive(self.floor, "floor"))
        ref = self.ref
        if ref is np.max or ref is np.amax or (isinstance(ref, str) and ref.lower() == "max"):
            ref = "max"
        else:
            ref = _positive(ref, "ref (a level > 0, or 'max' / np.max)")
        put("ref", ref)
        if self.dynamic_range is not None:
            put("dynamic_range", _positive(self.dynamic_range, "dynamic_range"))
        put("offset", _finite(self.offset, "offset"))
        put("scale", _positive(self.scale, "scale"))

    # -- the frame grid --------------------------------------------------------------------------

    @property
    def n_stft(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def framing(self) -> _stft.Padding:
        """The :class:`cumel.stft.Padding` of the frame grid."""
        return _stft.padding(self.n_fft, self.center, self.pad, self.pad_mode)

    def frames(self, n_samples: int) -> int:
        """Feature frames of ``n_samples`` samples of audio (after ``pad_to``)."""
        n = max(n_samples, self.pad_to or 0)
        return _stft.frame_count(n, self.n_fft, self.hop_length, self.framing) - int(
            self.drop_last_frame)

    def longest(self, n_frames: int) -> int:
        """The most samples of audio that ``n_frames`` feature frames can describe: the
        longest ``length`` :meth:`audio` accepts."""
        return _stft.longest_signal(n_frames + int(self.drop_last_frame), self.n_fft,
                                    self.hop_length, self.framing)

    def filterbank_key(self) -> tuple[Any, ...]:
        """The :func:`cumel.transforms.get_plan` key of the front end's filterbank."""
        if self.fb is not None:
            return (self.fb,)
        return (self.n_stft, self.f_min, self.f_max, self.n_mels, self.sample_rate, self.norm,
                self.mel_type)

    # -- forward ---------------------------------------------------------------------------------

    def features(self, audio: Array) -> Array:
        """The front end's features of ``audio``, as the model's own code computes them.

        Parameters
        ----------
        audio : array, shape (..., n_samples)
            NumPy, CuPy or a torch tensor (the same kind back); float64 is computed in float64,
            anything else in float32.

        Returns
        -------
        array, shape (..., n_mels, frames)
            ``frames = self.frames(n_samples)``.
        """
        with _backend.foreign_scope(audio, "audio", "Frontend.features",
                                    "cumel.torch.MelSpectrogram (torch operations)") as (audio, back):
            xp = _backend.get_array_module(audio)
            y = xp.asarray(audio)
            if y.ndim < 1 or y.shape[-1] < 1:
                raise ValueError(f"audio must have shape (..., n_samples) with samples, got "
                                 f"shape {tuple(y.shape)}")
            if y.dtype.kind not in "fiu" or y.dtype == np.bool_:
                raise TypeError(f"audio must hold real numbers, got dtype {y.dtype}")
            if y.dtype.kind == "f" and not bool(xp.isfinite(y).all()):
                raise ValueError("audio contains NaN or Inf values")
            dtype = np.float64 if y.dtype == np.float64 else np.float32
            lead, n = tuple(y.shape[:-1]), y.shape[-1]
            flat = y.reshape((-1, n)).astype(dtype)
            if self.pad_to is not None and n < self.pad_to:
                flat = xp.concatenate([flat, xp.zeros((flat.shape[0], self.pad_to - n), dtype)],
                                      axis=1)
            X = _stft.frames_stft(flat, self.n_fft, self.hop_length, self.win_length, xp,
                                  self.framing)                       # (B, T, n_stft)
            if self.drop_last_frame:
                X = X[:, :-1]
            re, im = xp.real(X), xp.imag(X)
            S = re * re + im * im
            if self.magnitude_eps:
                S += self.magnitude_eps
            if self.power == 1.0:
                S = xp.sqrt(S)
            elif self.power != 2.0:
                S **= self.power / 2.0
            from .transforms import get_plan
            A = get_plan(self.filterbank_key()).forward(dtype, xp)        # (n_mels, n_stft)
            mel = xp.matmul(A, xp.swapaxes(S, 1, 2))                      # (B, n_mels, T)
            out = self.compress(mel, xp)
            return back(out.reshape(lead + out.shape[1:]))

    def compress(self, mel: Array, xp: ArrayModule = np) -> Array:
        """Linear mel (B, n_mels, T) to features: the logarithm, reference, dynamic range and
        affine map (per item ``b``)."""
        c = mel
        if self.log is not None:
            log = xp.log if self.log == "ln" else xp.log10
            c = self.multiplier * log(xp.maximum(mel, self.floor))
            if self.ref == "max":
                peak = xp.maximum(mel.max(axis=(1, 2), keepdims=True), self.floor)
                c = c - self.multiplier * log(peak)
            elif self.ref != 1.0:
                c = c - self.multiplier * (math.log if self.log == "ln" else math.log10)(
                    max(self.floor, float(self.ref)))
            if self.dynamic_range is not None:
                c = xp.maximum(c, c.max(axis=(1, 2), keepdims=True) - self.dynamic_range)
        if self.offset != 0.0 or self.scale != 1.0:
            c = (c + self.offset) * self.scale
        return c.astype(mel.dtype, copy=False)

    # -- backward ----------------------------------------------------------------------------------

    def _check_features(self, features, xp):
        if features.ndim < 2:
            raise ValueError(f"features must have shape (..., n_mels, frames), got shape "
                             f"{tuple(features.shape)}")
        if features.dtype.kind not in "fiu" or features.dtype == np.bool_:
            raise TypeError(f"features must hold real numbers, got dtype {features.dtype}")
        if features.shape[-2] != self.n_mels:
            hint = ""
            if self.name.startswith("whisper") and features.shape[-2] in (80, 128):
                hint = (f"; Whisper features with {features.shape[-2]} mels: frontend("
                        f"{'whisper-128' if features.shape[-2] == 128 else 'whisper'!r})")
            raise ValueError(f"features have {features.shape[-2]} mel bands (shape "
                             f"{tuple(features.shape)}), but the {self.name!r} front end has "
                             f"n_mels={self.n_mels}{hint}")
        if features.shape[-1] < 1:
            raise ValueError(f"features must have at least one frame, got shape "
                             f"{tuple(features.shape)}")
        if features.dtype.kind == "f" and not bool(xp.isfinite(features).all()):
            raise ValueError("features contain NaN or Inf values")

    def _floor_level(self, c, xp):
        """Per item (B, 1, 1), the value of ``c`` at or below which a feature is at the floor
        (the clamp or ``max - dynamic_range``), with a tolerance; None without a floor."""
        levels = []
        if self.log is not None and self.ref != "max":
            log = math.log if self.log == "ln" else math.log10
            levels.append(self.multiplier * (log(self.floor) - log(max(self.floor, self.ref))))
        if self.log is not None and self.dynamic_range is not None:
            levels.append(c.max(axis=(1, 2), keepdims=True) - self.dynamic_range)
        if not levels:
            return None
        level = xp.full((c.shape[0], 1, 1), -np.inf, c.dtype)
        for other in levels:
            level = xp.maximum(level, other)
        # the features went through float32 (or less): a value within a relative 1e-4 of the
        # level counts as at it (1e-4 of 80 dB is 0.2 % in power; of 8 decades, 0.2 %)
        return level + 1e-4 * xp.maximum(xp.abs(level), 1.0)

    def _uncompressed(self, features, xp):
        """(B, n_mels, T) float features -> (c, at_floor): the values before the affine map,
        and the mask of those at the floor (None where there is no floor)."""
        c = features
        if self.offset != 0.0 or self.scale != 1.0:
            c = c / self.scale - self.offset
        level = self._floor_level(c, xp)
        return c, (None if level is None else c <= level)

    def _packed(self, features):
        xp = _backend.get_array_module(features)
        f = xp.asarray(features)
        self._check_features(f, xp)
        dtype = np.float64 if f.dtype == np.float64 else np.float32
        return xp, f.reshape((-1,) + f.shape[-2:]).astype(dtype, copy=False)

    def floor_mask(self, features: Array) -> Array:
        """True where a feature sits at the compression's floor (the clamp ``floor``, or
        ``max - dynamic_range``): its true value is anywhere below, and :meth:`mel` takes it as
        0. Shape and array kind of ``features`` (a NumPy/CuPy bool array; NumPy for a torch
        CPU tensor)."""
        with _backend.foreign_scope(features, "features", "Frontend.floor_mask") as (features, _):
            xp, f = self._packed(features)
            _, at_floor = self._uncompressed(f, xp)
            if at_floor is None:
                at_floor = xp.zeros(f.shape, bool)
            return at_floor.reshape(tuple(features.shape))

    def mel(self, features: Array, *, length: int | None = None) -> Array:
        """Undo the compression: features (..., n_mels, T) -> the linear mel (power or
        magnitude, as ``power``), non-negative, with values at the floor set to 0.

        With ``ref="max"`` the result is relative to each item's peak (which is 1): the absolute
        level is not in the features. ``length`` (samples) keeps only the frames that cover
        that many samples of audio (see :meth:`audio`).
        """
        with _backend.foreign_scope(features, "features", "Frontend.mel") as (features, back):
            xp, f = self._packed(features)
            mel = self._mel_packed(f, xp, length)
            return back(mel.reshape(tuple(features.shape[:-1]) + mel.shape[-1:]))

    def _mel_packed(self, f, xp, length=None):
        """(B, n_mels, T) features -> (B, n_mels, T') linear mel, T' the frames ``length``
        samples need (all T without ``length``); the floor is judged on all T frames."""
        needed = self._frames_for(length, f.shape[-1])
        c, at_floor = self._uncompressed(f, xp)
        if self.log is None:
            mel = xp.array(c, copy=True) if c is f else c
            return mel[..., :needed]
        c = c[..., :needed]
        unit = c / self.multiplier
        mel = xp.exp(unit) if self.log == "ln" else 10.0 ** unit
        if self.ref != "max" and self.ref != 1.0:
            mel *= max(self.floor, self.ref)
        if at_floor is not None:
            mel[at_floor[..., :needed]] = 0
        return mel.astype(f.dtype, copy=False)

    def _frames_for(self, length, n_frames):
        """Frames of ``n_frames`` that cover ``length`` samples (all without ``length``), or a
        clear error when the features describe fewer samples."""
        if length is None:
            return n_frames
        length = _validate.check_positive_int(length, "length")
        longest = self.longest(n_frames)
        if length > longest:
            raise ValueError(f"length={length} is longer than the features allow: {n_frames} "
                             f"frames of the {self.name!r} front end (hop_length="
                             f"{self.hop_length}) describe at most {longest} samples")
        return min(n_frames, _stft.frame_count(length, self.n_fft, self.hop_length, self.framing))

    def spectrogram(self, features: Array, *, length: int | None = None, solver: str = "nnls",
                    device: str | None = None, workers: int | None = None) -> Array:
        """The linear spectrogram the features came from: :meth:`mel`, then
        :class:`cumel.InverseMelScale` (nnls by default) on the front end's filterbank.

        Parameters
        ----------
        features : array, shape (..., n_mels, T)
        length : int, optional
            Only the frames covering ``length`` samples (see :meth:`audio`).
        solver, device, workers :
            As for :class:`cumel.InverseMelScale`.

        Returns
        -------
        array, shape (..., n_stft, T)
            The front end's ``|X|^2`` (power 2) or ``sqrt(|X|^2 + magnitude_eps)`` (power 1);
            same array kind as ``features``.
        """
        with _backend.foreign_scope(features, "features", "Frontend.spectrogram",
                                    "cumel.torch.InverseMelScale") as (features, back):
            lead = tuple(getattr(features, "shape", ())[:-2])
            xp, f, to_caller = _backend.select(features, device)
            xp, f = self._packed(f)
            S = self._spectrogram_packed(f, xp, length, solver, workers)
            return back(to_caller(S.reshape(lead + S.shape[-2:])))

    def _spectrogram_packed(self, f, xp, length, solver, workers, progress=False):
        inverse = self._inverse(solver, "cpu" if xp is np else None, workers)
        if progress:
            inverse = copy.copy(inverse)            # the cached transform is shared
            inverse.progress = progress
        return inverse(
            self._mel_packed(f, xp, length))

    def _inverse(self, solver, device, workers):
        return _inverse_mel_scale(self, solver, device, workers)

    def griffin_lim(self, spectrogram: Array, *, length: int | None = None, n_iter: int = 32,
                    seed: int | None = None, device: str | None = None, momentum: float = 0.99,
                    workers: int | None = None) -> Array:
        """Sound from the front end's spectrogram (:meth:`spectrogram`): fast Griffin-Lim on its
        frame grid and padding, magnitudes ``sqrt(|X|^2)`` (``magnitude_eps`` taken off), peak
        scaled to 1 with ``ref="max"``.

        Parameters
        ----------
        spectrogram : array, shape (..., n_stft, T)
        length, n_iter, seed, device, momentum, workers :
            As for :meth:`audio` (``length`` is not checked against the frames here: a longer
            one is padded with zeros, as :class:`cumel.GriffinLim` does).

        Returns
        -------
        array, shape (..., length)
        """
        with _backend.foreign_scope(spectrogram, "spectrogram", "Frontend.griffin_lim",
                                    "cumel.torch.GriffinLim") as (spectrogram, back):
            xp, S, to_caller = _backend.select(spectrogram, device)
            return back(to_caller(self._griffin_lim_xp(S, xp, length, n_iter, seed, momentum,
                                                       workers)))

    def _griffin_lim_xp(self, S, xp, length, n_iter, seed, momentum, workers=None,
                        progress=False):
        power = self.power
        if self.magnitude_eps:               # the magnitude under the front end's + eps
            S = S ** (2.0 / power) if power != 2.0 else S.copy()
            S -= self.magnitude_eps
            xp.maximum(S, 0, out=S)
            power = 2.0
        y = _griffin_lim(self, n_iter, power, momentum, length, seed, workers, progress)(S)
        if self.ref == "max":
            peak = xp.abs(y).max(axis=-1, keepdims=True)
            y = y / xp.where(peak > 0, peak, 1)
        return y

    def audio(self, features: Array, *, length: int | None = None, n_iter: int = 32,
              seed: int | None = None, device: str | None = None, workers: int | None = None,
              momentum: float = 0.99, solver: str = "nnls", progress: Progress = False,
              method: str = "griffinlim", rho: float | None = None, sigma: float | None = None,
              inner_steps: int | None = None, start_iter: int | None = None) -> Array:
        """Sound from features: :meth:`spectrogram`, then :meth:`griffin_lim`: fast Griffin-Lim
        on the front end's own frame grid and padding, so sample ``i`` of the result lines up
        with sample ``i`` of the audio the features came from. ``method="admm"``: from there,
        magnitude and phase together (:mod:`cumel.admm`) on the same grid.

        Parameters
        ----------
        features : array, shape (..., n_mels, T)
            NumPy, CuPy or a torch tensor; never modified. A tensor that requires grad raises
            ``cumel.NoGradientError`` (this path has no gradient: :mod:`cumel.torch` has one).
        length : int, optional
            Samples wanted (the clip's length): only the frames that cover them are inverted
            (Whisper's padding to 30 s is dropped). At most :meth:`longest` ``(T)``. Default:
            what the ``T`` frames cover (``hop_length * (T - 1)`` on a centred grid).
        n_iter : int, default 32
            Griffin-Lim iterations.
        seed : int, optional
            Griffin-Lim's random start.
        device : {None, "cpu", "cuda", "auto"}
            Where a NumPy input is computed.
        workers : int, optional
            Threads of the CPU stages (None: all usable cores; 1: the calling thread).
        momentum : float, default 0.99
        solver : str, default "nnls"
            Of :class:`cumel.InverseMelScale`.
        progress : bool, "auto" or callable
            Progress bars on stderr (see :class:`cumel.InverseMelScale`).
        method, rho, sigma, inner_steps, start_iter :
            As for :func:`cumel.mel_to_audio` (``n_iter``: the ADMM's outer iterations). The
            ADMM's mel step takes the mel as the mel of ``|X|**power``: a ``magnitude_eps``
            inside the front end's magnitude (HiFi-GAN's 1e-9) is left out of it.

        Returns
        -------
        array, shape (..., length)
            float64 for float64 features, else float32; the array kind of ``features``. With
            ``ref="max"`` each item is scaled to a peak of 1 (the features hold no absolute
            level).
        """
        from .griffin_lim import check_method
        admm_given = {"rho": rho, "sigma": sigma, "inner_steps": inner_steps,
                      "start_iter": start_iter}
        method = check_method(method, admm_given)
        with _backend.foreign_scope(features, "features", "Frontend.audio",
                                    "cumel.torch.InverseMelScale and cumel.torch.GriffinLim"
                                    ) as (features, back):
            lead = tuple(getattr(features, "shape", ())[:-2])
            xp, f, to_caller = _backend.select(features, device)
            xp, f = self._packed(f)
            if method == "admm":
                y = self._admm_xp(f, xp, length, n_iter, seed, momentum, solver, workers,
                                  progress, admm_given)
            else:
                S = self._spectrogram_packed(f, xp, length, solver, workers, progress)
                y = self._griffin_lim_xp(S, xp, length, n_iter, seed, momentum, workers,
                                         progress)
            return back(to_caller(y.reshape(lead + (y.shape[-1],))))

    def _admm_xp(self, f, xp, length, n_iter, seed, momentum, solver, workers, progress,
                 admm_given):
        from . import admm
        inverse = self._inverse(solver, "cpu" if xp is np else None, workers)
        if progress:
            inverse = copy.copy(inverse)            # the cached transform is shared
            inverse.progress = progress
        gl = _griffin_lim(self, n_iter, self.power, momentum, length, seed, workers)
        settings = admm.check_settings(n_iter, n_mels=inverse.n_mels, n_freqs=gl.n_freqs,
                                       **admm_given)
        mel = self._mel_packed(f, xp, length)
        y = admm.run(gl, inverse, mel, inverse(mel), settings, xp)
        if self.ref == "max":
            peak = xp.abs(y).max(axis=-1, keepdims=True)
            y = y / xp.where(peak > 0, peak, 1)
        return y

    # -- description -----------------------------------------------------------------------------

    def describe(self) -> list[str]:
        """Lines of text: the parameters, grouped, and what the compression loses."""
        grid = ("center=True (frame t centred on sample t * hop)" if self.center else
                f"center=False, pad={self.pad} (frame t centred on sample t * hop + "
                f"{self.n_fft // 2 - self.framing.left})")
        lines = [f"{self.name}: {self.sample_rate} Hz, n_fft={self.n_fft}, hop_length="
                 f"{self.hop_length}, win_length={self.win_length} (periodic Hann), {grid}, "
                 f"pad_mode={self.pad_mode!r}"
                 + (f", audio zero-padded to {self.pad_to} samples" if self.pad_to else "")
                 + (", last frame dropped" if self.drop_last_frame else "")]
        what = {2.0: "power |X|^2", 1.0: "magnitude |X|"}.get(self.power, f"|X|^{self.power:g}")
        if self.magnitude_eps:
            what = f"magnitude sqrt(|X|^2 + {self.magnitude_eps:g})"
        if self.fb is not None:
            bank = f"the given filterbank {self.fb!r}"
        else:
            bank = (f"{self.n_mels} mels {self.f_min:g}-{self.f_max:g} Hz, {self.mel_type} scale, "
                    f"norm={self.norm}")
        from .transforms import get_plan
        empty = int((get_plan(self.filterbank_key()).fb64.max(axis=0) == 0).sum())
        if empty:
            bank += f" ({empty} filters empty at this resolution, as torchaudio warns)"
        lines.append(f"  {what}, {bank}")
        if self.log is None:
            comp = "no compression (a linear mel)"
        else:
            unit = "ln" if self.log == "ln" else "log10"
            comp = f"{'' if self.multiplier == 1 else f'{self.multiplier:g} * '}{unit}(max(mel, " \
                   f"{self.floor:g}))"
            if self.ref == "max":
                comp += " relative to the peak (ref=max: the absolute level is lost; audio " \
                        "comes back with peak 1)"
            elif self.ref != 1.0:
                comp += f" relative to ref={self.ref:g}"
            if self.dynamic_range is not None:
                comp += f", clamped at max - {self.dynamic_range:g}"
        if self.offset != 0.0 or self.scale != 1.0:
            comp += f", then (x + {self.offset:g}) * {self.scale:g}"
        lines.append(f"  {comp}")
        if self.log is not None:
            lines.append("  values at the floor carry no level and are inverted as silence")
        return lines


def _positive(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _finite(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@functools.lru_cache(maxsize=64)
def _inverse_mel_scale(fe, solver, device, workers):
    """The front end's :class:`cumel.InverseMelScale`, built once (its empty-filter warning,
    where the filterbank has empty filters, is the front end's to give)."""
    from .transforms import InverseMelScale
    extra = {} if workers is None else {"workers": workers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if fe.fb is not None:
            return InverseMelScale(fe.n_stft, fe.n_mels, solver=solver, device=device, fb=fe.fb,
                                   **extra)
        return InverseMelScale(fe.n_stft, fe.n_mels, fe.sample_rate, fe.f_min, fe.f_max,
                               norm=fe.norm, mel_type=fe.mel_type, solver=solver, device=device,
                               **extra)


def _griffin_lim(fe, n_iter, power, momentum, length, seed, workers=None, progress=False):
    from .griffin_lim import GriffinLim
    return GriffinLim(fe.n_fft, n_iter, fe.win_length, fe.hop_length, power=power,
                      momentum=momentum, length=length, center=fe.center, pad=fe.pad,
                      pad_mode=fe.pad_mode, seed=seed, workers=workers, progress=progress)


# -- presets ---------------------------------------------------------------------------------------

_WHISPER = dict(sample_rate=16000, n_fft=400, hop_length=160, win_length=None, center=True,
                pad_mode="reflect", pad_to=480000, power=2.0, drop_last_frame=True, n_mels=80,
                f_min=0.0, f_max=8000.0, norm="slaney", mel_type="slaney", log="log10",
                floor=1e-10, dynamic_range=8.0, offset=4.0, scale=0.25)
_HIFIGAN = dict(sample_rate=22050, n_fft=1024, hop_length=256, win_length=None, center=False,
                pad="(n_fft - hop_length) // 2", pad_mode="reflect", power=1.0,
                magnitude_eps=1e-9, n_mels=80, f_min=0.0, f_max=8000.0, norm="slaney",
                mel_type="slaney", log="ln", floor=1e-5)

# Each preset as its project writes it (win_length None: n_fft; f_max None: sample_rate // 2).
PRESETS = {
    # openai-whisper audio.log_mel_spectrogram / transformers WhisperFeatureExtractor
    "whisper": _WHISPER,
    "whisper-128": dict(_WHISPER, n_mels=128),
    # HiFi-GAN meldataset.mel_spectrogram (config v1), copied by VITS, BigVGAN, ...
    "hifigan": _HIFIGAN,
    # NVIDIA Tacotron 2 / WaveGlow stft.STFT + layers.TacotronSTFT
    "tacotron2": dict(_HIFIGAN, center=True, pad=None, magnitude_eps=0.0),
    # librosa.feature.melspectrogram defaults + librosa.power_to_db defaults
    "librosa": dict(sample_rate=22050, n_fft=2048, hop_length=None, win_length=None, center=True,
                    pad_mode="constant", power=2.0, n_mels=128, f_min=0.0, f_max=None,
                    norm="slaney", mel_type="slaney", log="log10", multiplier=10.0, floor=1e-10,
                    ref=1.0, dynamic_range=80.0),
    # torchaudio.transforms.MelSpectrogram defaults + AmplitudeToDB("power", top_db=None)
    "torchaudio": dict(sample_rate=16000, n_fft=400, hop_length=200, win_length=None, center=True,
                       pad_mode="reflect", power=2.0, n_mels=128, f_min=0.0, f_max=None,
                       norm=None, mel_type="htk", log="log10", multiplier=10.0, floor=1e-10,
                       ref=1.0, dynamic_range=None),
}


def frontend(name: str | Frontend, **overrides: Any) -> Frontend:
    """A preset :class:`Frontend`, with any of its fields overridden.

    ::

        fe = cumel.frontend("whisper")                     # 80 mels; "whisper-128" for large-v3
        y = fe.audio(features, length=n_samples)
        fe = cumel.frontend("librosa", sample_rate=16000, n_fft=400, hop_length=160, ref=np.max)
        fe = cumel.frontend("hifigan", sample_rate=44100, n_fft=2048, hop_length=512, f_max=None)

    Overrides apply to the preset as its project writes it: ``win_length`` follows ``n_fft``
    unless given, ``f_max`` None follows ``sample_rate``, HiFi-GAN's padding stays
    ``(n_fft - hop_length) // 2``, ``center=True`` drops a preset's ``pad``, and ``fb`` (a
    matrix) sets ``n_mels`` to its number of filters.

    Parameters
    ----------
    name : str or Frontend
        One of :func:`frontends` (any case), or a Frontend (then its resolved fields are
        overridden).
    **overrides
        Fields of :class:`Frontend`.

    Returns
    -------
    Frontend
        A frozen dataclass: ``features``, ``spectrogram``, ``audio`` and the rest.

    Raises
    ------
    ValueError
        An unknown preset (the message lists them), an unknown field, or a field out of range.

    Examples
    --------
    >>> import cumel
    >>> fe = cumel.frontend("hifigan")
    >>> fe.sample_rate, fe.n_fft, fe.hop_length, fe.n_mels, fe.center, fe.pad, fe.log
    (22050, 1024, 256, 80, False, (384, 384), 'ln')
    >>> fe = cumel.frontend("hifigan", sample_rate=44100, n_fft=2048, hop_length=512, f_max=None)
    >>> fe.pad, fe.win_length, fe.f_max          # HiFi-GAN's padding rule, win_length follows
    ((768, 768), 2048, 22050.0)
    """
    known = {f.name for f in dataclasses.fields(Frontend)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown front end field(s) {unknown}; the fields are {sorted(known)}")
    if isinstance(name, Frontend):
        return dataclasses.replace(name, **overrides) if overrides else name
    key = name.lower() if isinstance(name, str) else name
    if key not in PRESETS:
        raise ValueError(f"unknown front end {name!r}; the presets are "
                         f"{', '.join(repr(k) for k in PRESETS)} (or build a cumel.Frontend)")
    if not overrides:
        return _preset(key)
    params = dict(PRESETS[key], **overrides)
    if "fb" in overrides and overrides["fb"] is not None and "n_mels" not in overrides:
        fb = UserFilterbank.from_matrix(overrides["fb"], _stft.check_stft_args(
            params["n_fft"], None, None)[0] // 2 + 1)
        params.update(fb=fb, n_mels=fb.shape[1])
    if overrides.get("center") is True and "pad" not in overrides:
        params["pad"] = None
    return Frontend(name=key, **_resolved(params))


def _resolved(params):
    if params.get("pad") == "(n_fft - hop_length) // 2":        # HiFi-GAN's rule
        n_fft, hop, _ = _stft.check_stft_args(params["n_fft"], params.get("hop_length"),
                                              params.get("win_length"))
        params = dict(params, pad=(n_fft - hop) // 2)
    return params


@functools.lru_cache(maxsize=None)
def _preset(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # torchaudio's 128 mels x 201 bins
        return Frontend(name=name, **_resolved(PRESETS[name]))


def frontends() -> dict[str, Frontend]:
    """The presets, ``{name: Frontend}`` (see :func:`frontend`).

    Returns
    -------
    dict of str to Frontend
        Whisper (80 and 128 mels), HiFi-GAN, Tacotron 2, librosa and torchaudio front ends, as
        their projects compute them; ``cumel frontends`` prints them with their parameters.

    Examples
    --------
    >>> import cumel
    >>> list(cumel.frontends())
    ['whisper', 'whisper-128', 'hifigan', 'tacotron2', 'librosa', 'torchaudio']
    >>> cumel.frontends()["whisper-128"].n_mels
    128
    """
    return {name: _preset(name) for name in PRESETS}
