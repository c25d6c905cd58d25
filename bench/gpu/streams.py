"""The streams stage of ``python -m bench gpu``: :class:`cumel.MelStream` on the device, many
streams advanced by each push, against the same streams on one CPU core.

Tacotron 2 features (22.05 kHz, n_fft 1024, hop 256, 80 mels) of the first speech clip of
``--audio`` (resampled to 22.05 kHz by linear interpolation) or of a synthetic signal, the same
frames tiled to every stream; ``lookahead=3``. For each ``n_iter`` (8: 32 iterations a frame,
the default; 2: 8 a frame) and each number of streams, a stream pushed one frame a push (an
``(n_streams, 80, 1)`` array, made before the clock starts), then flushed: on the device CuPy
arrays (the overlap-add of ``kernels/stream.cu`` over every stream at once), on the CPU NumPy
arrays with ``workers=1`` (the reference). A warm-up stream of a few frames first (compiles,
FFT plans). Wall seconds of the pushes and the flush, with the device synchronised before the
clock starts and before it stops; x real time = audio seconds of every stream together
(``streams * frames * hop / 22050``) over those seconds.

The stage takes at most :data:`STREAM_SHARE` of the time left when it starts (the timings after
it take the rest); a series (a backend at one ``n_iter``) stops growing when its next size is
predicted not to fit the stage's time (from the last size's timed seconds, without the
compilation of its warm-up), and the rows not measured say so.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cumel.workloads import read_wav, synthetic_audio

from .. import environment, gpu_report
from ..implementations import first_line
from .limits import FINISH_RESERVE, GROWTH, BudgetSpent, Skip
from .machine import log

FRONT_END = "tacotron2"
LOOKAHEAD = 3
STREAM_SHARE = 0.2               # of the time left when the stage starts
WARM_FRAMES = 4                  # frames of the warm-up stream
# the next number of streams costs (its ratio to the last) ** CPU_EXPONENT times the last on the
# CPU (python -m bench stream, one core: 16 streams took 2.5-3x one, 64 took 2-4x 16), and at
# most GROWTH times on the device (each push runs over every stream at once)
CPU_EXPONENT = 0.75
FULL = {"streams": (1, 16, 64, 256), "cpu_streams": (1, 16), "n_iters": (8, 2), "frames": 200}
QUICK = {"streams": (2,), "cpu_streams": (2,), "n_iters": (1,), "frames": 3}
BACKENDS = ("cuda", "cpu")


def stream_features(audio_dir, frames):
    """``(80, frames)`` float32 Tacotron 2 features and where they came from."""
    import cumel
    fe = cumel.frontend(FRONT_END)
    seconds = (frames + 2) * fe.hop_length / fe.sample_rate
    clips = sorted(Path(audio_dir).glob("speech_*.wav")) if audio_dir else []
    if clips:
        audio, rate = read_wav(clips[0])
        n = int(round(len(audio) * fe.sample_rate / rate))
        audio = np.interp(np.arange(n) * (rate / fe.sample_rate), np.arange(len(audio)), audio)
        audio = np.tile(audio, -(-int(seconds * fe.sample_rate) // max(1, audio.size)))
        source = f"{clips[0].name} of {environment.portable_path(audio_dir)}"
    else:
        audio = synthetic_audio(seconds, fe.sample_rate)
        source = "synthetic signal (cumel.workloads.synthetic_audio)"
    features = np.asarray(fe.features(audio.astype(np.float32)), dtype=np.float32)[:, :frames]
    if features.shape[-1] < frames:
        raise ValueError(f"{features.shape[-1]} frames of features, {frames} wanted")
    return np.ascontiguousarray(features), source


def push_every_frame(stream, frames):
    """Each frame one push, then the flush; the samples each stream got."""
    samples = 0
    for frame in frames:
        samples += stream.push(frame).shape[-1]
    return samples + stream.flush().shape[-1]


def measure_streams(backend, n_streams, n_iter, features, cupy):
    """One row's numbers: ``n_streams`` streams of ``features`` (tiled), one frame a push."""
    import cumel
    tiled = np.ascontiguousarray(np.broadcast_to(features, (n_streams,) + features.shape))
    if backend == "cuda":
        frames = [cupy.ascontiguousarray(cupy.asarray(tiled[..., t:t + 1]))
                  for t in range(tiled.shape[-1])]

        def synchronize():
            cupy.cuda.get_current_stream().synchronize()
        device, workers = "cuda", 1
    else:
        frames = [np.ascontiguousarray(tiled[..., t:t + 1]) for t in range(tiled.shape[-1])]

        def synchronize():
            pass
        device, workers = "cpu", 1

    def make():
        return cumel.MelStream(frontend=FRONT_END, lookahead=LOOKAHEAD, n_iter=n_iter,
                               device=device, workers=workers)

    warm = time.perf_counter()
    push_every_frame(make(), frames[:WARM_FRAMES])
    synchronize()
    warm = time.perf_counter() - warm
    stream = make()
    synchronize()
    c0, t0 = time.process_time(), time.perf_counter()
    samples = push_every_frame(stream, frames)
    synchronize()
    wall, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    seconds_audio = n_streams * len(frames) * stream.hop_length / stream.sample_rate
    return {"wall_seconds": wall, "cpu_seconds": cpu_seconds, "warmup_seconds": warm,
            "samples": int(samples), "seconds_audio": seconds_audio,
            "realtime": seconds_audio / wall if wall > 0 else None,
            "latency_ms": float(stream.latency_ms), "latency_samples": int(stream.latency)}


class StreamsStage:
    """The streams stage (``self``: the :class:`Run`)."""

    def streams(self, entry):
        settings = QUICK if self.args.quick else FULL
        if self.cupy is None:
            raise Skip("no usable GPU")
        import cumel
        fe = cumel.frontend(FRONT_END)
        features, source = stream_features(self.args.audio, settings["frames"])
        section = self.results["stream"] = {
            "settings": {"front_end": FRONT_END, "sample_rate": fe.sample_rate,
                         "n_fft": fe.n_fft, "hop": fe.hop_length, "n_mels": fe.n_mels,
                         "lookahead": LOOKAHEAD, "frames": settings["frames"],
                         "frames_per_push": 1, "dtype": "float32", "source": source,
                         "cpu_workers": 1, "streams": list(settings["streams"]),
                         "cpu_streams": list(settings["cpu_streams"]),
                         "n_iters": list(settings["n_iters"])},
            "rows": []}
        until = time.monotonic() + STREAM_SHARE * max(0.0, self.left() - FINISH_RESERVE)
        for n_iter in settings["n_iters"]:
            for backend in BACKENDS:
                counts = settings["streams" if backend == "cuda" else "cpu_streams"]
                self.stream_series(section, backend, n_iter, counts, features, until)
        ok = [r for r in section["rows"] if r["status"] == "ok"]
        entry["note"] = (f"{len(ok)} of {len(section['rows'])} rows measured"
                         + (f"; best {max(r['realtime'] for r in ok):.3g}x real time"
                            if ok else ""))

    def stream_series(self, section, backend, n_iter, counts, features, until):
        """One backend at one ``n_iter``, growing streams while the stage's time allows."""
        last = None                       # (streams, seconds of a measurement) of the last row
        stopped = None
        for n_streams in counts:
            row = {"backend": backend, "streams": n_streams, "n_iter": n_iter,
                   "lookahead": LOOKAHEAD, "iterations_per_frame": (LOOKAHEAD + 1) * n_iter,
                   "frames": int(features.shape[-1]), "status": None, "error": None,
                   "wall_seconds": None, "realtime": None, "latency_ms": None,
                   "timing": "wall clock, device synchronised" if backend == "cuda" else
                   "wall clock, one worker"}
            section["rows"].append(row)
            if stopped is None and last is not None:
                ratio = n_streams / last[0]
                predicted = last[1] * (min(ratio, GROWTH) if backend == "cuda"
                                       else ratio ** CPU_EXPONENT)
                if time.monotonic() + predicted > until:
                    row.update(status="stopped", error=(
                        f"not measured: {predicted:.1f} s predicted, "
                        f"{max(0.0, until - time.monotonic()):.1f} s left to the stage"))
                    stopped = f"not measured: the series stopped growing at {n_streams} streams"
                    continue
            if stopped is not None:
                row.update(status="stopped", error=stopped)
                continue
            try:
                row.update(measure_streams(backend, n_streams, n_iter, features, self.cupy))
                row["status"] = "ok"
            except BudgetSpent:
                row.update(status="stopped", error="time budget spent")
                raise
            except Exception as exc:  # noqa: BLE001 - a failing row is a result
                row.update(status="error", error=f"{type(exc).__name__}: {first_line(exc)}")
                stopped = f"not measured: the series failed at {n_streams} streams"
            finally:
                if backend == "cuda":
                    self.cupy.get_default_memory_pool().free_all_blocks()
            if row["status"] == "ok":     # the warm-up's frames at the timed rate
                frames = row["frames"]
                last = (n_streams, row["wall_seconds"] * (frames + min(WARM_FRAMES, frames)) / frames)
            log(gpu_report.describe_stream(row))
            self.save(throttle=2.0)

