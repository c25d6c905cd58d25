"""``python -m bench torch``: forward + backward of ``cumel.torch.InverseMelScale`` against
torchaudio 2.x's method written in torch (``relu(torch.linalg.lstsq(fb.T, mel).solution)``,
autograd through ``torch.linalg.lstsq``), on the CPU.

For every workload the clips (``--audio DIR``; synthetic signals without it) are one batch
``(clips, n_mels, T)`` in float32; each row times ``loss = (S * W).sum(); loss.backward()`` from
the mel (a fixed random ``W``), and the forward alone, median of ``--repeats`` interleaved runs
after a warm-up. torchaudio's default driver ``gels`` raises on these rank-deficient filterbanks
(REFERENCE.md), and ``gelsy`` (torch's own CPU default) returns zeros for these underdetermined
systems (mel residual 1.0, measured), so the lstsq row uses ``gelss``, the faster of the two
drivers that answer them (measured on 4 x 700 frames of speech-201x128, forward + backward, an
idle machine: gelss 0.052 s, gelsd 0.062 s; both the minimum-norm answer).
Also reported: the mel residual of each answer (the gradients differ by design: lstsq's is the
pseudo-inverse's transpose, nnls's the converged inverse's).
Writes ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cumel.workloads import WORKLOADS

from . import environment, report
from .batches import load_clips, quiet_empty_filters
from .scaling import interleaved

COLUMNS = ("workload", "frames", "cumel nnls fwd+bwd (s)", "lstsq+relu fwd+bwd (s)",
           "ratio", "cumel fwd (s)", "lstsq fwd (s)", "cumel bwd share", "mel residual cumel",
           "mel residual lstsq")
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "torch"


def _batch(workload, audio_dir, clips):
    """``(clips, n_mels, T)`` float32 mels of the workload's clips, cut to the shortest."""
    mels = [workload.pair(audio)[1] for _, audio in load_clips(workload, audio_dir, clips)]
    T = min(m.shape[1] for m in mels)
    return np.stack([m[:, :T] for m in mels]).astype(np.float32)


def _residual(fb, S, M):
    R = np.einsum("fm,bft->bmt", fb.astype(np.float64), S.astype(np.float64)) - M
    return float(np.linalg.norm(R) / np.linalg.norm(M))


def run_workload(workload, audio_dir, clips, repeats, log):
    import torch

    import cumel.torch as T
    mel_np = _batch(workload, audio_dir, clips)
    inverse = T.InverseMelScale(workload.n_stft, workload.n_mels, workload.sample_rate,
                                workload.f_min, workload.f_max, workload.norm, workload.mel_scale)
    fb = inverse.fb
    A = fb.T.contiguous()[None]
    weights = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (mel_np.shape[0], workload.n_stft, mel_np.shape[2])).astype(np.float32))

    def lstsq(mel):
        return torch.relu(torch.linalg.lstsq(A, mel, driver="gelss").solution)

    def both(solve):
        def run():
            mel = torch.from_numpy(mel_np).requires_grad_()
            S = solve(mel)
            (S * weights).sum().backward()
            return S.detach(), mel.grad
        return run

    def forward(solve):
        def run():
            with torch.no_grad():
                return solve(torch.from_numpy(mel_np))
        return run

    times = interleaved([("cumel", both(inverse)), ("lstsq", both(lstsq)),
                         ("cumel fwd", forward(inverse)), ("lstsq fwd", forward(lstsq))],
                        repeats, log=log)
    (t_c, (S_c, g_c)), (t_l, (S_l, _)) = times["cumel"], times["lstsq"]
    frames = mel_np.shape[0] * mel_np.shape[2]
    fb64 = fb.numpy()
    return {"workload": workload.name, "clips": mel_np.shape[0], "frames": frames,
            "cumel_seconds": t_c, "lstsq_seconds": t_l, "ratio": t_c / t_l,
            "cumel_forward_seconds": times["cumel fwd"][0],
            "lstsq_forward_seconds": times["lstsq fwd"][0],
            "cumel_backward_share": max(0.0, 1.0 - times["cumel fwd"][0] / t_c),
            "mel_residual_cumel": _residual(fb64, S_c.numpy(), mel_np),
            "mel_residual_lstsq": _residual(fb64, S_l.numpy(), mel_np),
            "gradient_finite": bool(torch.isfinite(g_c).all())}


def markdown(result):
    env = result["environment"]
    lines = ["# cumel.torch.InverseMelScale: forward + backward against lstsq + relu in torch",
             "", *report.environment_lines(env),
             f"- audio: {result['audio'] or 'synthetic signals'}, {result['clips']} clips a "
             "workload side by side",
             "- time: median of the interleaved runs after one warm-up; a row is "
             "`loss = (S * W).sum(); loss.backward()` from a float32 mel of the clips side by side",
             "- lstsq: `relu(torch.linalg.lstsq(fb.T, mel, driver='gelss').solution)` "
             "(torchaudio 2.x's method; its default driver `gels` raises on these filterbanks and "
             "`gelsy` returns zeros for them, gelss is the faster of the two that answer)", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in result["rows"]:
        lines.append(f"| {r['workload']} | {r['frames']} | {r['cumel_seconds']:.4f} | "
                     f"{r['lstsq_seconds']:.4f} | {r['ratio']:.2f} | "
                     f"{r['cumel_forward_seconds']:.4f} | {r['lstsq_forward_seconds']:.4f} | "
                     f"{r['cumel_backward_share']:.0%} | {r['mel_residual_cumel']:.1e} | "
                     f"{r['mel_residual_lstsq']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench torch", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="all",
                   help=f"{', '.join(WORKLOADS)} or all (comma list accepted)")
    p.add_argument("--audio", metavar="DIR", default=None,
                   help="folder of speech_*.wav / music_*.wav (default: synthetic signals)")
    p.add_argument("--clips", type=int, default=4, help="clips side by side (default 4)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    names = list(WORKLOADS) if args.workload == "all" else args.workload.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        p.error(f"--workload: unknown {', '.join(unknown)}")
    quiet_empty_filters()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("python -m bench torch needs torch (pip install torch)", file=sys.stderr)
        return 2

    def log(text):
        print(text, file=sys.stderr)

    env = environment.collect(["python", "-m", "bench", "torch",
                               *(sys.argv[2:] if argv is None else argv)])
    rows = [run_workload(WORKLOADS[name], args.audio, args.clips, args.repeats, log)
            for name in names]
    env["load_average_after"] = environment.load_average()
    result = {"environment": env, "audio": environment.portable_path(args.audio),
              "clips": args.clips, "repeats": args.repeats, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(result, args.out)
    text = markdown(result)
    (args.out / report.MARKDOWN_NAME).write_text(text)
    print(text)
    return 0
