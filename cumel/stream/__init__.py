"""Mel to sound as a stream: ``MelStream`` and ``mel_to_audio_stream``.

A TTS or voice-conversion model emits mel frames a few at a time. :class:`MelStream` turns them
into sound as they arrive, with a bounded delay, for one stream or many at once::

    stream = cumel.MelStream(frontend="hifigan", lookahead=3)
    for frames in model_output:                 # (n_mels, k) or (n_streams, n_mels, k)
        play(stream.push(frames))               # the samples that became final
    play(stream.flush())                        # the rest

The magnitude of each frame is the nnls answer of :class:`cumel.InverseMelScale` on that frame
(frames are independent; a front end's compression is undone first by its own
:meth:`cumel.Frontend.mel`). The phase is found online, by fast Griffin-Lim on a sliding window
(RTISI-LA, Zhu, Beauregard and Wyse 2007; online fast Griffin-Lim, Peer, Bouhafs and Gerkmann,
arXiv 2309.07043). With ``K = lookahead`` and ``R = ceil(n_fft / hop)`` frames overlapping each
sample, the frames are held in padded-signal coordinates (frame ``t`` covers padded samples
``[t hop, t hop + n_fft)``; slot ``s`` is the hop ``[s hop, (s + 1) hop)``)::

    when frame j arrives:
        X_j = 1e-3 |S_j| c_j        c_j: the stream's start phases (see "Start" below)
        tprev_j = 0
        in flight: frames a..j      a = the oldest frame not yet committed (a = max(0, j - K))
        repeat n_iter times:        fast Griffin-Lim on the window, the committed frames fixed
            y       = (committed overlap-add + sum_t w * irfft(X_t)) / envelope
                      over slots a .. j + R - 1, envelope = sum of w^2 of every frame over
                      the slot, including those still to come
            rebuilt = rfft(w * y[frame t])                  t = a..j
            b       = rebuilt - alpha * tprev               alpha = momentum / (1 + momentum)
            X       = |S| * b / (|b| + 1e-16);  tprev = rebuilt
        if j - a == K: commit frame a: its overlap-add joins the committed signal and slot a,
                       which no later frame covers, is final
    flush(): the frames still in flight get the same n_iter iterations per step, committed one
             a step (as if K more frames had come), then the last R - 1 slots are final.

Every frame thus goes through ``(K + 1) * n_iter`` iterations, like an offline fast
Griffin-Lim of ``(K + 1) * n_iter`` iterations (:func:`cumel.mel_to_audio`), which is what the
quality is compared with. The signal is normalised by the envelope its slots will have once
every frame over them has arrived (the frames yet to come count as silence): a partial envelope
would hand the newest frame's tail back to it unchanged (measured on 4 s of two speech clips at
n_fft 400, K = 3: spectral convergence 9 % lower on one, 0.5 % higher on the other). After the
flush, the true end's envelope, as the offline inverse. Unlike the offline STFT, the padding
region before the first sample is the overlap-add itself (no reflection): the stream cannot
know the signal it would reflect.

Quality: at ``lookahead=3`` and the defaults (32 iterations a frame), the spectral convergence
over the 8 speech clips of the project's test audio is 1.03x that of the offline
:func:`cumel.mel_to_audio` at 32 iterations (speech-201x128; worst clip 1.10x) and 0.98x
(tts-513x80; worst 1.00x); ``lookahead=0`` is 1.2-1.3x (``python -m bench stream``).

Cost: each arriving frame runs ``n_iter`` ISTFT + STFT passes over its ``K + 1`` frames in flight
(the same FFTs a frame as the offline inverse), vectorised over the streams; between the FFTs,
the overlap-add and the update are two compiled passes (:mod:`cumel.stream.compiled`, where
numba imports; a NumPy twin of ``2 R + 9`` calls otherwise). Each push solves its frames'
magnitudes in one nnls call. With the compiled passes one stream costs about twice its FFTs
(NumPy's FFT of a few frames costs more in the call than in the transform), and many streams
pushed together little more than their FFTs: at 32 iterations a frame, the FFTs alone of one
n_fft = 1024 frame take about 0.3 ms of one core here (``python -m bench stream``).

Guarantees
----------
* **Latency.** Slot ``t`` (padded samples ``[t hop, (t + 1) hop)``, the first hop of frame
  ``t``) is final once frame ``t + K`` has arrived: after frame ``j`` the output is final
  through signal sample ``(j - K + 1) hop - left`` (``left``: the padding before the signal,
  ``n_fft // 2`` when centred). The frames pushed so far describe audio up to sample
  ``n_fft + j hop - left - right``, so the final output trails what the frames describe by
  :attr:`MelStream.latency` ``= n_fft - right + (K - 1) hop`` samples. For the presets at
  ``lookahead=3``:

  ========== ======= ===== ====== ======= =========
  front end  rate    n_fft hop    samples ms
  ========== ======= ===== ====== ======= =========
  whisper    16000   400   160    520     32.5
  hifigan    22050   1024  256    1152    52.2
  tacotron2  22050   1024  256    1024    46.4
  librosa    22050   2048  512    2048    92.9
  torchaudio 16000   400   200    600     37.5
  ========== ======= ===== ====== ======= =========

  Each more frame of look-ahead adds one hop (11.6 ms at 22.05 kHz and hop 256).
* **Chunking.** The output does not depend on how the frames are chunked: one at a time, 7 at
  a time or all at once give the same bits. Every state update is made per arriving frame, in
  the same shapes whatever the chunk; the magnitudes of a chunk are solved together, and nnls
  solves every frame on its own.
* **Length.** The pushes and the flush together give ``n_fft + hop (T - 1) - left - right``
  samples for ``T`` frames (``hop (T - 1)`` centred): the length of :func:`cumel.mel_to_audio`
  of the same frames.

Start
-----
A new frame enters at a thousandth of its magnitude, so its first update takes the phase of
what the frames before it already put over its span (RTISI-LA's start: measured 4-6 % lower
spectral convergence than entering at full magnitude, on two speech clips at n_fft 400,
K = 3); the start phases ``c_j`` only decide where nothing overlaps yet (the first frame, after
silence). They are drawn per stream, frame after frame: stream ``i`` draws from
``numpy.random.default_rng(numpy.random.SeedSequence(seed, spawn_key=(i,)))``, two
``random(n_freqs)`` per frame (real and imaginary parts in [0, 1), as :class:`cumel.GriffinLim`
with ``rand_init``). The default ``seed=0`` makes every run the same; stream ``i`` of a batch
gets the same phases however many streams share the batch.

What cannot be streamed
-----------------------
A front end with ``ref="max"`` (levels relative to the item's peak, known only at its end) is
refused. A ``dynamic_range`` floor (Whisper's ``max - 8``, librosa's ``top_db``) is judged
against the item's maximum, unknown until the end: the stream takes every value as the level it
states (a value clamped at ``max - dynamic_range`` is inverted as that level, at most
``dynamic_range`` below the peak, instead of as silence).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator
import numbers
import warnings

import numpy as np

from .. import _backend, _threads, _validate
from .. import stft as _stft
from . import fft as _fft
from .._typing import Array
from ..mel_frontends import Frontend
from ..griffin_lim import _DEFAULT, _PLAIN, EPS, _check_real, _Default

__all__ = ["MelStream", "mel_to_audio_stream"]


def compiled_module():
    """:mod:`cumel.stream.compiled` where the CPU's compiled loops run (numba imports and
    ``CUMEL_CPU`` allows them: :func:`cumel.solvers.nnls.chunks.compiled_module` decides for
    both), else None: the NumPy twin."""
    from ..solvers.nnls.chunks import compiled_module as nnls_loop
    if nnls_loop() is None:
        return None
    from . import compiled
    return compiled

METHODS = ("fgla", "gla")
START_SCALE = 1e-3     # a new frame's share of its own magnitude before its first update


def _check_int(value, name, low):
    if not _validate._is_int(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class MelStream:
    """Sound from mel frames as they arrive: bounded latency, chunking-independent bits.

    See :mod:`cumel.stream` for the method and its guarantees.

    Parameters
    ----------
    n_fft : int, optional
        FFT size of the mel's STFT; optional with ``frontend``.
    frontend : str or Frontend, optional, keyword only
        The frames are that front end's features (:func:`cumel.frontend`); the STFT and
        filterbank keywords given override the front end's.
    n_mels : int, optional, keyword only
        Mel bands; default: those of the first push (or of ``fb``, or the front end's).
    sample_rate, hop_length, win_length, power, f_min, f_max, norm, mel_type, center, pad, fb :
        The filterbank and the frame grid, as for :func:`cumel.mel_to_audio` (defaults 16000,
        ``win_length // 4``, ``n_fft``, 2.0, 0.0, ``sample_rate // 2``, None, "htk", True,
        None, None). ``pad_mode`` does not apply: the stream never reflects.
    lookahead : int >= 0, default 3, keyword only
        ``K``: frames of look-ahead; the samples of frame ``t`` are final once frame ``t + K``
        has arrived (:attr:`latency`).
    n_iter : int >= 1, default 8, keyword only
        Fast Griffin-Lim iterations on the window per arriving frame; each frame gets
        ``(lookahead + 1) * n_iter`` in all (32 with the defaults, :func:`cumel.mel_to_audio`'s
        default).
    momentum : float in [0, 1), default 0.99, keyword only
    method : {"fgla", "gla"}, default "fgla", keyword only
        Online fast Griffin-Lim, or the plain one (``momentum`` 0).
    seed : int, default 0, keyword only
        Seed of the start phases (see "Start" in :mod:`cumel.stream`).
    solver : str, default "nnls", keyword only
        Of :class:`cumel.InverseMelScale`, for the magnitudes.
    device : {None, "cpu", "cuda", "auto"}, keyword only
        Where NumPy input is computed (CuPy input runs on its own device); NumPy in, NumPy out.
    workers : int or None, default 1, keyword only
        Threads of the magnitude solve (None: every usable core). The phase runs in the calling
        thread, vectorised over the streams and the frames in flight.

    Attributes
    ----------
    latency : int
        Samples by which the final output trails the audio the pushed frames describe.
    frames_in, samples_out : int
        Frames pushed, and samples returned (per stream), so far.

    Examples
    --------
    >>> import numpy as np, cumel
    >>> rng = np.random.default_rng(0)
    >>> mel = rng.random((2, 16, 20))                     # 2 streams, 16 mels, 20 frames
    >>> stream = cumel.MelStream(128, hop_length=32, lookahead=2, n_iter=4)
    >>> parts = [stream.push(mel[..., t:t + 3]) for t in range(0, 20, 3)]
    >>> y = np.concatenate(parts + [stream.flush()], axis=-1)
    >>> y.shape                                           # as cumel.mel_to_audio: 32 * 19
    (2, 608)
    >>> stream.latency                                    # 128 // 2 + (2 - 1) * 32 samples
    96
    >>> again = cumel.MelStream(128, hop_length=32, lookahead=2, n_iter=4)
    >>> bool(np.array_equal(np.concatenate([again.push(mel), again.flush()], axis=-1), y))
    True
    """

    def __init__(self, n_fft: int | None = None, *, frontend: str | Frontend | None = None,
                 n_mels: int | None = None, sample_rate: float | _Default = _DEFAULT,
                 hop_length: int | None | _Default = _DEFAULT,
                 win_length: int | None | _Default = _DEFAULT, power: float | _Default = _DEFAULT,
                 f_min: float | _Default = _DEFAULT, f_max: float | None | _Default = _DEFAULT,
                 norm: str | None | _Default = _DEFAULT, mel_type: str | _Default = _DEFAULT,
                 center: bool | _Default = _DEFAULT,
                 pad: int | tuple[int, int] | None | _Default = _DEFAULT, fb: Array | None = None,
                 lookahead: int = 3, n_iter: int = 8, momentum: float = 0.99,
                 method: str = "fgla", seed: int | None = 0, solver: str = "nnls",
                 device: str | None = None, workers: int | None = 1) -> None:
        self.lookahead = _check_int(lookahead, "lookahead", 0)
        self.n_iter = _check_int(n_iter, "n_iter", 1)
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                             f"got {method!r}")
        self.method = method.lower()
        self.momentum = 0.0 if self.method == "gla" else _check_real(momentum, "momentum",
                                                                     0.0, 1.0)
        if seed is None or not _validate._is_int(seed) or not 0 <= seed < 2 ** 32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        self.seed = int(seed)
        self.solver = _validate.canonical_solver(solver)
        self.device = _backend.check_device(device)
        self.workers = _threads.check_workers(workers)
        given = {k: v for k, v in dict(sample_rate=sample_rate, hop_length=hop_length,
                                       win_length=win_length, power=power, f_min=f_min,
                                       f_max=f_max, norm=norm, mel_type=mel_type, center=center,
                                       pad=pad).items() if v is not _DEFAULT}
        if frontend is not None:
            self.frontend = self._streamable_frontend(frontend, n_fft, n_mels, fb, given)
            fe = self.frontend
            self.n_fft, self.hop_length, self.win_length = fe.n_fft, fe.hop_length, fe.win_length
            self.framing = fe.framing
            self.sample_rate = fe.sample_rate
            self.power = fe.power
            self.n_mels = fe.n_mels
            self._filterbank = None
            self._levels = fe if fe.dynamic_range is None else _no_dynamic_range(fe)
        else:
            if n_fft is None:
                raise ValueError("n_fft is required without frontend= (the FFT size of the "
                                 "mel's STFT; or pass frontend='hifigan', 'tacotron2', ...)")
            self.frontend = None
            opts = dict(_PLAIN, **given)
            self.n_fft, self.hop_length, self.win_length = _stft.check_stft_args(
                n_fft, opts["hop_length"], opts["win_length"])
            self.framing = _stft.padding(self.n_fft, opts["center"], opts["pad"])
            self.sample_rate = _validate.check_positive_int(opts["sample_rate"], "sample_rate")
            p = opts["power"]
            if not isinstance(p, numbers.Real) or isinstance(p, bool) or not p > 0 \
                    or not math.isfinite(p):
                raise ValueError(f"power must be a finite number > 0, got {p!r}")
            self.power = float(p)
            self._filterbank = dict(sample_rate=self.sample_rate, f_min=opts["f_min"],
                                    f_max=opts["f_max"], norm=opts["norm"],
                                    mel_type=opts["mel_type"], fb=fb)
            self.n_mels = None if n_mels is None else _check_int(n_mels, "n_mels", 1)
            if fb is not None or self.n_mels is not None:
                self._build_inverse(self.n_mels)    # the filterbank checked now
        self.n_freqs = self.n_fft // 2 + 1
        self.hops = -(-self.n_fft // self.hop_length)       # R: frames covering a slot
        self.alpha = self.momentum / (1.0 + self.momentum)
        self._reset()

    # -- set-up ------------------------------------------------------------------------------

    @staticmethod
    def _streamable_frontend(frontend, n_fft, n_mels, fb, given):
        from ..mel_frontends import frontend as _frontend
        overrides = dict(given)
        if n_fft is not None:
            overrides["n_fft"] = n_fft
        if n_mels is not None:
            overrides["n_mels"] = n_mels
        if fb is not None:
            overrides["fb"] = fb
        fe = _frontend(frontend, **overrides)
        if fe.ref == "max":
            raise ValueError(f"frontend={fe.name!r} has ref='max': its levels are relative to "
                             "each item's peak, known only at the item's end, so it cannot be "
                             "streamed")
        return fe

    def _build_inverse(self, n_mels):
        from ..transforms import InverseMelScale
        f = self._filterbank
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)    # empty filters: the user's choice
            inverse = InverseMelScale(self.n_fft // 2 + 1, None if f["fb"] is not None else n_mels,
                                      f["sample_rate"], f["f_min"], f["f_max"], norm=f["norm"],
                                      mel_type=f["mel_type"], solver=self.solver, fb=f["fb"],
                                      device=self.device, workers=self.workers)
        self.n_mels = inverse.n_mels
        self._inverse = inverse
        return inverse

    def _reset(self):
        self.frames_in = 0          # frames pushed (per stream)
        self.samples_out = 0        # samples returned (per stream)
        self._committed = 0         # frames committed: a, the oldest one in flight
        self._flushed = False
        self._layout = None         # (n_streams, batched, dtype) fixed by the first push
        self._xp = None
        self._X = self._tprev = self._mag = None     # (S, frames in flight, F)
        self._tail = None           # (S, R - 1, hop): committed overlap-add of slots a..a+R-2
        self._final = []            # final slots (S, hop) not yet returned, from padded slot
        self._final_start = 0       # ... this index on
        self._rngs = None

    @property
    def latency(self) -> int:
        """Samples by which the final output trails the audio the pushed frames describe:
        ``n_fft - right + (lookahead - 1) * hop_length``."""
        return self.n_fft - self.framing.right + (self.lookahead - 1) * self.hop_length

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency / self.sample_rate

    def __repr__(self):
        where = (f"frontend={self.frontend.name!r}" if self.frontend is not None else
                 f"n_fft={self.n_fft}, hop_length={self.hop_length}")
        return (f"MelStream({where}, lookahead={self.lookahead}, n_iter={self.n_iter}, "
                f"method={self.method!r}, momentum={self.momentum}, seed={self.seed})")

    # -- input -------------------------------------------------------------------------------

    def _check_frames(self, mel):
        """Validated ``mel_frames`` as (S, n_mels, k) on the stream's array module, or a
        ValueError / TypeError naming it; the stream is not touched."""
        xp = _backend.get_array_module(mel)
        if not hasattr(mel, "ndim"):
            mel = np.asarray(mel)
            xp = np
        if mel.ndim not in (2, 3):
            raise ValueError(f"mel_frames must have shape (n_mels, k) or (n_streams, n_mels, k), "
                             f"got shape {tuple(mel.shape)}")
        if mel.dtype.kind not in "fiu" or mel.dtype == np.bool_:
            raise TypeError(f"mel_frames must hold real numbers, got dtype {mel.dtype}")
        batched = mel.ndim == 3
        packed = mel if batched else mel[None]
        n_streams, n_mels = packed.shape[0], packed.shape[1]
        if self.n_mels is not None and n_mels != self.n_mels:
            raise ValueError(f"mel_frames have {n_mels} mel bands (shape {tuple(mel.shape)}), "
                             f"but the stream has n_mels={self.n_mels}")
        if self._layout is not None:
            streams0, batched0, dtype0, cupy0 = self._layout
            if batched != batched0 or n_streams != streams0:
                was = f"({streams0}, n_mels, k)" if batched0 else "(n_mels, k)"
                raise ValueError(f"mel_frames has shape {tuple(mel.shape)}, but this stream "
                                 f"takes {was} (fixed by the first push)")
            if mel.dtype != dtype0:
                raise ValueError(f"mel_frames has dtype {mel.dtype}, but the stream's first "
                                 f"push was {dtype0}: keep one dtype per stream")
            if _backend.is_cupy_array(mel) != cupy0:
                raise ValueError(f"mel_frames is {'not ' if cupy0 else ''}a CuPy array, unlike "
                                 "the stream's first push: push one kind of array per stream")
        if n_streams < 1:
            raise ValueError(f"mel_frames must hold at least one stream, got shape "
                             f"{tuple(mel.shape)}")
        if packed.size and mel.dtype.kind == "f" and not bool(xp.isfinite(packed).all()):
            bad = np.argwhere(~_backend.to_numpy(xp.isfinite(packed)).all(axis=1))[0]
            raise ValueError(f"mel_frames contain NaN or Inf values (stream {bad[0]}, frame "
                             f"{bad[1]} of this push); nothing of this push was used")
        return packed, batched

    def push(self, mel_frames: Array) -> Array:
        """Take the next frames; return the samples that became final.

        Parameters
        ----------
        mel_frames : array, shape (n_mels, k) or (n_streams, n_mels, k)
            The next ``k >= 0`` frames of one stream or of every stream of a batch (the first
            push fixes which, and the dtype); NumPy, CuPy or a torch tensor; never modified.

        Returns
        -------
        array, shape (n,) or (n_streams, n)
            The next ``n`` samples (possibly 0) of each stream, final: float64 for float64
            frames, else float32, the array kind of ``mel_frames`` (a CuPy stream's samples
            are CuPy; NumPy under ``device="cuda"``).

        Raises
        ------
        RuntimeError
            After :meth:`flush`.
        ValueError, TypeError
            For frames of another shape, dtype or number of mels than the stream's, or holding
            NaN or Inf: nothing of that push is used and the stream stays usable.
        """
        if self._flushed:
            raise RuntimeError("push after flush: this MelStream has ended (make a new one, or "
                               "call reset())")
        with _backend.foreign_scope(mel_frames, "mel_frames", "cumel.MelStream") as (mel, back):
            packed, batched = self._check_frames(mel)
            xp, packed, to_caller = _backend.select(packed, self.device)
            if self._layout is None:
                if self.n_mels is None:
                    self._build_inverse(packed.shape[1])
                self._start(xp, packed.shape[0], batched, mel, lambda a: back(to_caller(a)))
            k = packed.shape[-1]
            if k:
                mag = self._magnitudes(xp, packed)           # (S, k, F) float64
                for i in range(k):
                    self._arrive(mag[:, i])
            return back(to_caller(self._emit(final=False)))

    def flush(self) -> Array:
        """End the stream: run the frames still in flight to the end and return the rest.

        Returns
        -------
        array, shape (n,) or (n_streams, n)
            The remaining samples; with those of every :meth:`push`, ``n_fft + hop (T - 1) -
            left - right`` samples for ``T`` frames (empty when nothing was pushed).
        """
        if self._flushed:
            raise RuntimeError("flush called twice: this MelStream has ended")
        self._flushed = True
        if self._layout is None:
            return np.zeros(0, np.float32)
        if self.frames_in == 0:
            return self._back(self._emit(final=True))
        while self._X.shape[1]:
            self._iterate()
            self._commit()
        # the last R - 1 slots: every frame covering them is committed
        inv = self._inverse_envelope(self._committed, 0)
        for r in range(self.hops - 1):
            self._final.append(self._tail[:, r] * inv[r])
        return self._back(self._emit(final=True))

    def reset(self) -> None:
        """Forget everything pushed: the stream starts again, as new (the same seed)."""
        self._reset()

    # -- the state ---------------------------------------------------------------------------

    def _start(self, xp, n_streams, batched, mel, back):
        dtype = mel.dtype
        self._layout = (n_streams, batched, np.dtype(dtype), _backend.is_cupy_array(mel))
        self._back = back
        self._xp = xp
        F, R, H = self.n_freqs, self.hops, self.hop_length
        self._X = xp.zeros((n_streams, 0, F), np.complex128)
        self._tprev = xp.zeros((n_streams, 0, F), np.complex128)
        self._mag = xp.zeros((n_streams, 0, F), np.float64)
        self._tail = xp.zeros((n_streams, R - 1, H), np.float64)
        self._window = xp.asarray(_stft.hann_window(self.win_length, self.n_fft))
        slots = np.zeros(R * H)
        slots[:self.n_fft] = _stft.hann_window(self.win_length, self.n_fft)
        self._window_slots = xp.asarray(slots.reshape(R, H))
        self._rngs = [np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(i,)))
                      for i in range(n_streams)]
        out_dtype = np.float64 if dtype == np.float64 else np.float32
        self._out_dtype = out_dtype

    def _magnitudes(self, xp, packed):
        """(S, n_mels, k) frames -> (S, k, F) float64 magnitudes (nnls per frame)."""
        if self.frontend is not None:
            fe = self.frontend
            inverse = self.__dict__.get("_frontend_inverse")
            if inverse is None:
                from ..mel_frontends import _inverse_mel_scale
                inverse = self._frontend_inverse = _inverse_mel_scale(
                    fe, self.solver, "cpu" if xp is np else None, self.workers)
            # the frames are checked (_check_frames): Frontend.mel without its checks
            levels = packed.astype(np.float64 if packed.dtype == np.float64 else np.float32,
                                   copy=False)
            S = inverse._solve_checked(xp, self._levels._mel_packed(levels, xp))
            if fe.magnitude_eps:
                S = S ** (2.0 / fe.power) if fe.power != 2.0 else S
                S -= fe.magnitude_eps
                xp.maximum(S, 0, out=S)
                power = 2.0
            else:
                power = fe.power
        else:
            S = self._inverse._solve_checked(xp, packed)
            power = self.power
        if power == 2.0:
            xp.sqrt(S, out=S)
        elif power != 1.0:
            S **= 1.0 / power
        return xp.ascontiguousarray(xp.swapaxes(S, 1, 2))

    def _start_phases(self, xp):
        F = self.n_freqs
        draws = np.stack([g.random((2, F)) for g in self._rngs])   # (S, 2, F)
        return xp.asarray(draws[:, 0] + 1j * draws[:, 1])

    def _arrive(self, mag_new):
        """Frame ``frames_in`` arrives with magnitudes ``mag_new`` (S, F)."""
        xp = self._xp
        X_new = mag_new * self._start_phases(xp)
        X_new *= START_SCALE
        self._mag = xp.concatenate([self._mag, mag_new[:, None]], axis=1)
        self._X = xp.concatenate([self._X, X_new[:, None]], axis=1)
        self._tprev = xp.concatenate([self._tprev, xp.zeros_like(X_new)[:, None]], axis=1)
        self.frames_in += 1
        self._iterate()
        if self._X.shape[1] == self.lookahead + 1:
            self._commit()

    def _inverse_envelope(self, a, k):
        """1 / envelope over slots ``a .. a + k + R - 2`` (shape (k + R - 1, hop)): of every
        frame from 0 on, or after the flush of the frames ``0 .. a + k - 1`` only; 0 where the
        envelope is below the floor."""
        key = (min(a, self.hops - 1), k, self._flushed)
        cache = self.__dict__.setdefault("_envelopes", {})
        inv = cache.get(key)
        if inv is None:
            R, H, N = self.hops, self.hop_length, self.n_fft
            w2 = np.zeros(R * H)
            w2[:N] = _stft.hann_window(self.win_length, N) ** 2
            w2 = w2.reshape(R, H)
            a0 = key[0]
            # before the end, the slots' envelope counts the frames still to come (silent until
            # they arrive), so the newest frame's tail is not blown up by a partial envelope;
            # at the flush, the true end's
            newest = a0 + k - 1 if self._flushed else a0 + k + R
            env = np.zeros((k + R - 1, H))
            for i in range(k + R - 1):
                s = a0 + i
                for t in range(max(0, s - R + 1), min(s, newest) + 1):
                    env[i] += w2[s - t]
            inv = np.zeros_like(env)
            ok = env > _stft.ENVELOPE_FLOOR
            inv[ok] = 1.0 / env[ok]
            inv = cache[key] = self._xp.asarray(inv)
        return inv

    def _time_frames(self, X):
        """(S, k, F) or (S, F) -> windowed frames (..., R, hop), zero past n_fft."""
        xp, N, R, H = self._xp, self.n_fft, self.hops, self.hop_length
        frames = _fft.irfft(X, N) if xp is np else xp.fft.irfft(X, n=N, axis=-1)
        frames *= self._window
        if R * H != N:
            frames = xp.concatenate([frames, xp.zeros(frames.shape[:-1] + (R * H - N,))], -1)
        return frames.reshape(frames.shape[:-1] + (R, H))

    def _iterate(self):
        """``n_iter`` fast Griffin-Lim iterations on the frames in flight, every stream at once
        (measured: splitting the streams into cache-sized blocks does not pay on NumPy)."""
        self._X, self._tprev = self._iterate_block(self._X, self._tprev, self._mag, self._tail,
                                                   self._X.shape[1])

    def _iterate_block(self, X, tprev, mag, tail, k):
        xp = self._xp
        S = X.shape[0]
        R, H, N = self.hops, self.hop_length, self.n_fft
        inv = self._inverse_envelope(self._committed, k)
        if xp is not np:                    # one fused pass between the FFTs (kernels/stream.cu)
            from .. import cuda
            window = self._window_slots.reshape(R * H)
            for _ in range(self.n_iter):
                frames = xp.fft.irfft(X, n=N, axis=-1)
                seg = cuda.stream_overlap(frames, tail, inv, window, H)
                rebuilt = xp.fft.rfft(seg, n=N, axis=-1)
                X = _update(rebuilt, tprev, mag, self.alpha, xp)
                tprev = rebuilt
            return X, tprev
        loop = compiled_module()
        if loop is not None:                # the same two passes compiled (stream/compiled.py)
            # every array of the loop allocated once (a fresh megabyte-sized one a step costs its
            # page faults): the rebuilt spectra alternate between two, tprev being the other
            window = self._window_slots.reshape(R * H)
            frames, seg = np.empty((S, k, N)), np.empty((S, k, N))
            rebuilt_pair = [np.empty((S, k, N // 2 + 1), np.complex128) for _ in range(2)]
            X_next = np.empty((S, k, N // 2 + 1), np.complex128)
            for i in range(self.n_iter):
                _fft.irfft(X, N, out=frames)
                loop.overlap(frames, tail, inv, window, H, seg)
                rebuilt = _fft.rfft(seg, N, out=rebuilt_pair[i % 2])
                X = loop.update(rebuilt, tprev, mag, self.alpha, EPS, out=X_next)
                tprev = rebuilt
            return X, tprev
        window = self._window_slots                             # (R, H)
        ola = xp.empty((S, k + R - 1, H))
        seg = xp.empty((S, k, R, H))
        for _ in range(self.n_iter):
            frames = self._time_frames(X)                       # (S, k, R, H)
            ola[:, :R - 1] = tail
            ola[:, R - 1:] = 0.0
            for r in range(R):
                ola[:, r:r + k] += frames[:, :, r]
            ola *= inv
            for r in range(R):                                  # frame i = slots i .. i+R-1
                xp.multiply(ola[:, r:r + k], window[r], out=seg[:, :, r])
            rebuilt = _fft.rfft(seg.reshape(S, k, R * H)[..., :N], N)
            X = _update(rebuilt, tprev, mag, self.alpha, xp)
            tprev = rebuilt
        return X, tprev

    def _commit(self):
        """Commit the oldest frame in flight: its overlap-add joins the committed signal and
        its first slot is final."""
        xp = self._xp
        a, k = self._committed, self._X.shape[1]
        inv = self._inverse_envelope(a, k)
        frame = self._time_frames(self._X[:, 0])                   # (S, R, H)
        R = self.hops
        tail = self._tail
        if R > 1:
            self._final.append((tail[:, 0] + frame[:, 0]) * inv[0])
            new_tail = xp.empty_like(tail)
            new_tail[:, :R - 2] = tail[:, 1:] + frame[:, 1:R - 1]
            new_tail[:, R - 2] = frame[:, R - 1]
            self._tail = new_tail
        else:
            self._final.append(frame[:, 0] * inv[0])
        # contiguous: the next frames' passes read them as flat vectors
        self._X, self._tprev, self._mag = (xp.ascontiguousarray(a[:, 1:])
                                           for a in (self._X, self._tprev, self._mag))
        self._committed += 1

    def _emit(self, final):
        """The final samples not yet returned, inside the signal: padded samples from
        ``left`` to ``n_fft + hop (T - 1) - right`` (T: frames so far; before the flush, what
        lies past that end waits, since a later frame moves the end)."""
        xp = self._xp
        S, batched, _, _ = self._layout
        end = self.n_fft + self.hop_length * (self.frames_in - 1) - self.framing.right
        block = (xp.concatenate(self._final, axis=1) if len(self._final) > 1 else
                 self._final[0] if self._final else xp.zeros((S, 0)))
        p0, n = self._final_start, block.shape[1]
        lo = min(n, max(0, self.framing.left + self.samples_out - p0))
        hi = max(lo, min(n, end - p0))
        out = block[:, lo:hi]
        self._final = [] if final or hi == n else [block[:, hi:]]
        self._final_start = p0 + hi
        self.samples_out += out.shape[1]
        out = out.astype(self._out_dtype)
        return out if batched else out[0]


def _no_dynamic_range(fe):
    import dataclasses
    return dataclasses.replace(fe, dynamic_range=None)


def _update(rebuilt, tprev, mag, alpha, xp):
    """``b = rebuilt - alpha * tprev``, ``mag * b / (|b| + 1e-16)`` (a new array): the update
    of :func:`cumel.griffin_lim.update`, in its order."""
    if xp is not np:
        from .. import cuda
        return cuda.griffinlim_update(rebuilt, tprev, mag, alpha)
    b = tprev * alpha
    np.subtract(rebuilt, b, out=b)
    scale = np.abs(b)
    scale += EPS
    np.divide(mag, scale, out=scale)
    b *= scale
    return b


def mel_to_audio_stream(chunks: Iterable[Array], n_fft: int | None = None,
                        **kwargs: Any) -> Iterator[Array]:
    """Generator form of :class:`MelStream`: the samples of each chunk as it comes, then the
    rest.

    Parameters
    ----------
    chunks : iterable of arrays, each (n_mels, k) or (n_streams, n_mels, k)
        The frames, in order, as a model emits them.
    n_fft, **kwargs :
        As for :class:`MelStream`.

    Yields
    ------
    array, shape (n,) or (n_streams, n)
        What each push made final, then what :meth:`MelStream.flush` returns.

    Examples
    --------
    >>> import numpy as np, cumel
    >>> mel = np.random.default_rng(1).random((16, 12))
    >>> parts = list(cumel.mel_to_audio_stream(np.array_split(mel, 4, axis=-1), 128,
    ...                                        hop_length=32, lookahead=1, n_iter=2))
    >>> len(parts), sum(p.shape[-1] for p in parts)      # 4 chunks + the flush; 32 * 11
    (5, 352)
    """
    stream = MelStream(n_fft, **kwargs)
    for chunk in chunks:
        yield stream.push(chunk)
    yield stream.flush()
