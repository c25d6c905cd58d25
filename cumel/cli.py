"""Command line: ``cumel invert`` (a .npy mel file to a .npy spectrogram) and ``cumel demo``."""
from __future__ import annotations

import argparse
import sys
import warnings
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
    p.add_argument("--seed", type=int, default=None, help="start of the SGD solvers")
    p.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))


def _build_parser():
    parser = argparse.ArgumentParser(prog="cumel", description="Invert mel spectrograms.")
    parser.add_argument("--version", action="version", version=f"cumel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    inv = sub.add_parser("invert", help="invert a mel spectrogram stored as .npy (..., n_mels, time)")
    inv.add_argument("input", help="mel spectrogram, .npy")
    inv.add_argument("-o", "--output", required=True, help="where to write the spectrogram, .npy")
    inv.add_argument("--n-stft", type=int, required=True, help="linear bins, n_fft // 2 + 1")
    inv.add_argument("--n-mels", type=int, default=None, help="default: the input's size at -2")
    inv.add_argument("--sample-rate", type=int, default=16000)
    inv.add_argument("--f-min", type=float, default=0.0)
    inv.add_argument("--f-max", type=float, default=None)
    inv.add_argument("--norm", default=None, help="none or slaney")
    inv.add_argument("--mel-type", default="htk", help="htk or slaney")
    _solver_args(inv)

    demo = sub.add_parser("demo", help="invert the bundled example (4 s of speech, 201 x 128)")
    _solver_args(demo)
    return parser


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
    S, info = transform(mel, return_info=True)
    np.save(args.output, S)
    _report(args.input, mel, S, info, transform)
    print(f"  wrote {args.output}")


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
