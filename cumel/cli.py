"""Command line: ``cumel invert`` (a .npy mel file to a .npy spectrogram and/or a .wav) and
``cumel demo``."""
from __future__ import annotations

import argparse
import sys
import warnings
import wave
from importlib import resources

import numpy as np

from . import __version__
from .transforms import InverseMelScale
from ._validate import SOLVERS


def _solver_args(p):
    p.add_argument("--solver", default="nnls", choices=SOLVERS, help="default: nnls")
    p.add_argument("--max-iter", type=int, default=100000)
    p.add_argument("--tolerance-loss", type=float, default=1e-5)
    p.add_argument("--tolerance-change", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=None,
                   help="start of the SGD solvers and of Griffin-Lim (--wav)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))


def _build_parser():
    parser = argparse.ArgumentParser(prog="cumel", description="Invert mel spectrograms.")
    parser.add_argument("--version", action="version", version=f"cumel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    inv = sub.add_parser("invert", help="invert a mel spectrogram stored as .npy (..., n_mels, time)")
    inv.add_argument("input", help="mel spectrogram, .npy")
    inv.add_argument("-o", "--output", default=None,
                     help="where to write the spectrogram, .npy (required unless --wav)")
    inv.add_argument("--n-stft", type=int, required=True, help="linear bins, n_fft // 2 + 1")
    inv.add_argument("--n-mels", type=int, default=None, help="default: the input's size at -2")
    inv.add_argument("--sample-rate", type=int, default=16000)
    inv.add_argument("--f-min", type=float, default=0.0)
    inv.add_argument("--f-max", type=float, default=None)
    inv.add_argument("--norm", default=None, help="none or slaney")
    inv.add_argument("--mel-type", default="htk", help="htk or slaney")
    _solver_args(inv)
    _wav_args(inv, None)

    demo = sub.add_parser("demo", help="invert the bundled example (4 s of speech, 201 x 128)")
    _solver_args(demo)
    _wav_args(demo, "demo_reconstruction.wav")
    return parser


def _wav_args(p, default):
    p.add_argument("--wav", default=default, metavar="OUT.wav",
                   help="also turn the spectrogram into sound (fast Griffin-Lim, 32 iterations, "
                        "n_fft = 2 (n_stft - 1), the mel taken as of a power spectrogram) and "
                        "write it as 16-bit PCM mono WAV, scaled so that its peak is at 0.99 "
                        "of full scale (no clipping; silence stays silent)"
                        + (f"; default {default}" if default else ""))
    p.add_argument("--hop-length", type=int, default=None,
                   help="STFT hop in samples for --wav (default n_fft // 4 like torchaudio; "
                        "the demo uses 160)")


def _to_wav(args, S, sample_rate, hop_default=None):
    """Griffin-Lim of the power spectrogram ``S`` (n_stft, T) to ``args.wav``; prints what it did.

    Returns the spectral convergence ``|| |STFT(y)| - sqrt(S) || / || sqrt(S) ||`` (against the
    spectrogram it was given: the original audio is not known here).
    """
    from .griffin_lim import GriffinLim
    from .stft import stft
    S = np.asarray(S)
    n_fft = 2 * (S.shape[-2] - 1)
    hop = args.hop_length if args.hop_length is not None else hop_default
    gl = GriffinLim(n_fft, hop_length=hop, seed=args.seed, device=args.device)
    y = gl(S)
    target = np.sqrt(np.asarray(S, np.float64))
    rebuilt = np.abs(stft(np.asarray(y, np.float64), n_fft, gl.hop_length))
    sc = float(np.linalg.norm(rebuilt - target) / max(np.linalg.norm(target), 1e-300))
    flat = np.asarray(y, np.float64).reshape(-1, y.shape[-1])
    peak = float(np.abs(flat).max()) if flat.size else 0.0
    pcm = np.round(flat * (0.99 * 32767 / peak if peak > 0 else 0.0)).astype("<i2")
    with wave.open(str(args.wav), "wb") as f:
        f.setnchannels(pcm.shape[0])
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.T.tobytes())
    print(f"  audio: Griffin-Lim {gl.n_iter} iterations, n_fft={n_fft}, hop={gl.hop_length}: "
          f"{y.shape[-1]} samples ({y.shape[-1] / sample_rate:.2f} s at {sample_rate} Hz), "
          f"spectral convergence against the inverted spectrogram {sc:.4f}")
    print(f"  wrote {args.wav} (16-bit PCM, {pcm.shape[0]} channel(s), peak scaled to 0.99)")
    return sc


def _transform(args, n_stft, n_mels, **fb):
    return InverseMelScale(n_stft, n_mels, max_iter=args.max_iter,
                           tolerance_loss=args.tolerance_loss,
                           tolerance_change=args.tolerance_change, solver=args.solver,
                           seed=args.seed, device=args.device, **fb)


def _report(name, mel, S, info, transform):
    print(f"{name}: mel {tuple(mel.shape)} {mel.dtype} -> spectrogram {tuple(S.shape)} {S.dtype}")
    print(f"  solver={transform.solver} device={info.device} time={info.seconds * 1e3:.1f} ms "
          f"iterations/frame: mean {info.iterations.mean():.1f}, max {info.iterations.max()}")
    print(f"  mel residual ||A S - M|| / ||M|| = {info.total_mel_residual:.3e}")


def cmd_invert(args):
    mel = np.load(args.input, allow_pickle=False)
    n_mels = args.n_mels if args.n_mels is not None else (mel.shape[-2] if mel.ndim >= 2 else 0)
    transform = _transform(args, args.n_stft, n_mels, sample_rate=args.sample_rate,
                           f_min=args.f_min, f_max=args.f_max, norm=args.norm,
                           mel_type=args.mel_type)
    if args.output is None and args.wav is None:
        raise ValueError("give -o/--output (spectrogram .npy), --wav (audio) or both")
    S, info = transform(mel, return_info=True)
    _report(args.input, mel, S, info, transform)
    if args.output is not None:
        np.save(args.output, S)
        print(f"  wrote {args.output}")
    if args.wav is not None:
        if S.ndim != 2:
            raise ValueError(f"--wav needs one mel spectrogram (n_mels, time), got shape {mel.shape}")
        _to_wav(args, S, args.sample_rate)


def cmd_demo(args):
    with resources.files("cumel.data").joinpath("demo_speech_mel.npz").open("rb") as f:
        data = np.load(f)
        mel, source = data["mel"], str(data["source"])
    print(f"cumel {__version__} demo: {source}")
    with warnings.catch_warnings():
        # 201 bins x 128 mels leaves the lowest filters empty (torchaudio warns too); say it once
        warnings.simplefilter("ignore", UserWarning)
        transform = _transform(args, 201, 128, sample_rate=16000, f_min=0.0, f_max=8000.0)
        ref = InverseMelScale(201, 128, solver="lstsq")
    empty = int((transform.fb.max(axis=0) == 0).sum())
    print(f"  filterbank 201 bins x 128 HTK mels ({empty} filters empty at this resolution)")
    S, info = transform(mel, return_info=True)
    _report("demo_speech_mel.npz", mel, S, info, transform)
    if transform.solver != "lstsq":
        ref(mel[:, :1])  # builds the cached pseudo-inverse, so the time below is the solve
        _, ref_info = ref(mel, return_info=True)
        print(f"  for comparison, lstsq + relu (torchaudio 2.x): time={ref_info.seconds * 1e3:.1f} ms "
              f"mel residual = {ref_info.total_mel_residual:.3e}")
    if args.wav:
        _to_wav(args, S, 16000, hop_default=160)


def main(argv=None):
    args = _build_parser().parse_args(argv)
    try:
        {"invert": cmd_invert, "demo": cmd_demo}[args.command](args)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"cumel: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
