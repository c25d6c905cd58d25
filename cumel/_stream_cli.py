"""``cumel stream``: mel frames from a file to a WAV, as a stream (:class:`cumel.MelStream`).

The frames are read a chunk at a time (``--chunk`` frames, as a model would emit them) from a
memory-mapped ``.npy``, pushed, and what each push makes final is appended to the WAV at once:
the file grows while the frames are read. A WAV written this way cannot be scaled to its peak
(the peak is not known until the end): samples are written at full scale 1.0, values beyond
±1 clipped (and counted).
"""
from __future__ import annotations

import time
import wave

import numpy as np

from .mel_frontends import PRESETS


def add_parser(sub):
    p = sub.add_parser(
        "stream", help="mel frames (.npy) to a WAV as a stream, a few frames at a time",
        description="Turn mel frames into sound as a stream (cumel.MelStream): IN.npy holds "
                    "(n_mels, T) frames, or (channels, n_mels, T) for several streams at once "
                    "(one WAV channel each); they are read --chunk frames at a time and the "
                    "samples each chunk makes final are appended to the WAV at once. The samples "
                    "of frame t are final once frame t + K (--lookahead) has been read. Written "
                    "as 16-bit PCM at full scale 1.0 (values beyond it clipped, and counted).")
    p.add_argument("input", metavar="IN.npy", help="mel frames, (n_mels, T) or "
                                                   "(channels, n_mels, T)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    p.add_argument("--frontend", default=None, choices=list(PRESETS), metavar="NAME",
                   help="the frames are this front end's features (one of "
                        + ", ".join(PRESETS) + "); without it, a linear mel of --n-fft")
    p.add_argument("--lookahead", "-K", type=int, default=3, metavar="K",
                   help="frames of look-ahead (default 3)")
    p.add_argument("--n-iter", type=int, default=8,
                   help="fast Griffin-Lim iterations per arriving frame (default 8: each frame "
                        "gets (K + 1) * 8)")
    p.add_argument("--chunk", type=int, default=1, metavar="N",
                   help="frames read and pushed at a time (default 1; the output is the same "
                        "for any N)")
    p.add_argument("--seed", type=int, default=0, help="start phases (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="threads of the magnitude solve (default 1)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))
    p.add_argument("--realtime", action="store_true",
                   help="report the real-time factor (audio seconds / wall seconds of the "
                        "stream's work) and the latency")
    p.add_argument("--n-fft", type=int, default=None, help="without --frontend: FFT size")
    p.add_argument("--hop-length", type=int, default=None)
    p.add_argument("--win-length", type=int, default=None)
    p.add_argument("--sample-rate", type=int, default=None, help="Hz (default 16000)")
    p.add_argument("--power", type=float, default=None, help="2 (default) or 1")
    p.add_argument("--f-min", type=float, default=None)
    p.add_argument("--f-max", type=float, default=None)
    p.add_argument("--norm", default=None, help="none or slaney")
    p.add_argument("--mel-type", default=None, help="htk or slaney")
    return p


def _settings(args):
    given = {k: getattr(args, k) for k in ("hop_length", "win_length", "sample_rate", "power",
                                           "f_min", "f_max", "mel_type")
             if getattr(args, k) is not None}
    if args.norm is not None:
        given["norm"] = None if args.norm.lower() == "none" else args.norm
    if args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    return dict(given, frontend=args.frontend, lookahead=args.lookahead, n_iter=args.n_iter,
                seed=args.seed, workers=args.workers, device=args.device)


def cmd_stream(args):
    from .stream import MelStream
    settings = _settings(args)
    mel = np.load(args.input, mmap_mode="r")
    if mel.ndim not in (2, 3):
        raise ValueError(f"{args.input}: the frames must have shape (n_mels, T) or "
                         f"(channels, n_mels, T), got {mel.shape}")
    stream = MelStream(args.n_fft, **settings)
    channels, T = (1 if mel.ndim == 2 else mel.shape[0]), mel.shape[-1]
    clipped = written = 0
    busy = 0.0
    with open(args.output, "wb") as file, wave.open(file, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(stream.sample_rate)

        def write(y):
            nonlocal clipped, written
            y = np.asarray(y, np.float64).reshape(channels, -1)
            clipped += int((np.abs(y) > 1.0).sum())
            pcm = np.round(np.clip(y, -1.0, 1.0) * 32767).astype("<i2")
            out.writeframes(pcm.T.tobytes())
            file.flush()                    # readers of the growing file see every push's samples
            written += y.shape[1]

        for t in range(0, T, args.chunk):
            frames = np.array(mel[..., t:t + args.chunk])      # read now, as a model emits it
            t0 = time.perf_counter()
            y = stream.push(frames)
            busy += time.perf_counter() - t0
            write(y)
        t0 = time.perf_counter()
        y = stream.flush()
        busy += time.perf_counter() - t0
        write(y)
    seconds = written / stream.sample_rate
    print(f"cumel stream: {T} frames x {channels} channel(s) -> {args.output}: {written} samples "
          f"({seconds:.2f} s at {stream.sample_rate} Hz), lookahead {stream.lookahead}"
          + (f"; {clipped} samples clipped at full scale" if clipped else ""))
    if args.realtime:
        factor = channels * seconds / busy if busy > 0 else float("inf")
        print(f"  real time: {busy:.3f} s of work for {seconds:.2f} s of audio x {channels} "
              f"channel(s): {factor:.1f}x real time; latency {stream.latency} samples "
              f"({stream.latency_ms:.1f} ms) after each frame")
    return 0
