"""``python -m bench audio`` (= ``python -m bench.audio``): mel spectrogram -> audio, cumel
against librosa and torchaudio.

For each standard workload and clip: the clip's power mel spectrogram (the workload's STFT and
filterbank, float32) is turned back into audio of the clip's length by

* cumel ``mel_to_audio`` (nnls inverse mel scale, then fast Griffin-Lim; CPU, and CUDA with
  ``--backend cpu,cuda`` where CuPy sees a GPU);
* librosa ``feature.inverse.mel_to_audio`` (its NNLS, then its Griffin-Lim; reflect padding
  asked for, as cumel and torchaudio use);
* torchaudio ``InverseMelScale`` + ``GriffinLim`` (CPU, and CUDA where torch sees a GPU);

all at ``--n-iter`` iterations (default 32) and momentum 0.99. Each row reports the spectral
convergence ``|| |STFT(y)| - |STFT(x)| ||_F / || |STFT(x)| ||_F`` against the original clip
(cumel's STFT at the workload's n_fft and hop) and the median wall time of ``--repeats`` runs
after one warm-up. Libraries that do not import give a "not installed" row. Writes
``results.json`` and ``results.md`` into ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import cumel
from cumel.workloads import WORKLOADS

from . import environment, report
from .batches import load_clips, quiet_empty_filters
from .implementations import Unavailable, first_line

DEFAULT_OUT = Path(__file__).resolve().parent / "out_audio"
PEERS = ("librosa", "torchaudio")
FIELDS = ("workload", "clip", "implementation", "version", "backend", "status", "error",
          "seconds_audio", "frames", "n_iter", "seconds", "seconds_all", "spectral_convergence",
          "time_vs_librosa")


def _librosa(w, mel, n_samples, n_iter, seed):
    if importlib.util.find_spec("librosa") is None:
        raise Unavailable(f"not installed: librosa (in {environment.portable_path(sys.executable)})")
    import librosa

    def run(seed=seed):
        # librosa.feature.inverse.mel_to_audio, spelt out so that its Griffin-Lim start can be
        # seeded (mel_to_audio itself draws from a fresh default_rng every call)
        S = librosa.feature.inverse.mel_to_stft(
            mel, sr=w.sample_rate, n_fft=w.n_fft, power=2.0, htk=w.mel_scale == "htk",
            norm=w.norm, fmin=w.f_min, fmax=w.f_max)
        return librosa.griffinlim(S, n_iter=n_iter, hop_length=w.hop, n_fft=w.n_fft,
                                  length=n_samples, pad_mode="reflect", momentum=0.99,
                                  init="random", random_state=seed)
    return run, librosa.__version__


def _torchaudio(w, mel, n_samples, n_iter, seed, backend):
    missing = [m for m in ("torch", "torchaudio") if importlib.util.find_spec(m) is None]
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)} "
                          f"(in {environment.portable_path(sys.executable)})")
    import torch
    import torchaudio
    device = torch.device(backend)
    if backend == "cuda" and not torch.cuda.is_available():
        raise Unavailable("no usable GPU: torch.cuda.is_available() is False")
    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=w.n_stft, n_mels=w.n_mels, sample_rate=w.sample_rate, f_min=w.f_min,
        f_max=w.f_max, norm=w.norm, mel_scale=w.mel_scale, driver="gelsd" if backend == "cpu"
        else "gels").to(device)
    gl = torchaudio.transforms.GriffinLim(n_fft=w.n_fft, hop_length=w.hop, n_iter=n_iter,
                                          power=2.0, momentum=0.99, length=n_samples).to(device)
    m = torch.from_numpy(mel).to(device)

    def run(seed=seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            y = gl(inverse(m))
        if backend == "cuda":
            torch.cuda.synchronize()
        return y.cpu().numpy()
    return run, torchaudio.__version__


def _cumel(w, mel, n_samples, n_iter, seed, backend):
    if backend == "cuda":
        try:
            import cupy
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise Unavailable("no usable GPU: CuPy sees no CUDA device")
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"no usable GPU: {first_line(exc)}") from None
        m = cupy.asarray(mel)
    else:
        m = mel

    def run(seed=seed):
        y = cumel.mel_to_audio(m, w.n_fft, sample_rate=w.sample_rate, hop_length=w.hop,
                               n_iter=n_iter, length=n_samples, f_min=w.f_min, f_max=w.f_max,
                               norm=w.norm, mel_type=w.mel_scale, seed=seed)
        return cumel._backend.to_numpy(y)   # includes the device sync and copy
    return run, cumel.__version__


def implementations(backends, peers):
    """``[(id, backend, prepare)]`` in table order."""
    rows = [("cumel mel_to_audio (nnls + fast Griffin-Lim)", b,
             lambda w, m, n, k, s, b=b: _cumel(w, m, n, k, s, b)) for b in backends]
    if "librosa" in peers:
        rows.append(("librosa mel_to_audio (nnls + Griffin-Lim)", "cpu",
                     lambda w, m, n, k, s: _librosa(w, m, n, k, s)))
    if "torchaudio" in peers:
        rows += [("torchaudio InverseMelScale + GriffinLim", b,
                  lambda w, m, n, k, s, b=b: _torchaudio(w, m, n, k, s, b)) for b in backends]
    return rows


def measure(name, backend, prepare, w, clip, audio, mel, n_iter, repeats, seed, log, seeds=1):
    row = {"workload": w.name, "clip": clip, "implementation": name, "backend": backend,
           "seconds_audio": len(audio) / w.sample_rate, "frames": int(mel.shape[-1]),
           "n_iter": n_iter, "version": None, "status": "ok", "error": None, "seconds": None,
           "seconds_all": [], "spectral_convergence": None, "time_vs_librosa": None,
           "spectral_convergence_seeds": []}
    try:
        run, row["version"] = prepare(w, mel, len(audio), n_iter, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = run()                                   # warm-up (JIT, plans, kernels)
            for _ in range(repeats):
                t0 = time.perf_counter()
                y = run()
                row["seconds_all"].append(time.perf_counter() - t0)
    except Unavailable as exc:
        row.update(status="skipped", error=str(exc))
        log(f"[{w.name}/{clip}] {name} @{backend}: skipped ({exc})")
        return row
    except Exception as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {first_line(exc)}")
        log(f"[{w.name}/{clip}] {name} @{backend}: error {row['error']}")
        return row
    row["seconds"] = statistics.median(row["seconds_all"])
    outputs = [y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs += [run(seed + k) for k in range(1, seeds)]
    row["spectral_convergence_seeds"] = [
        cumel.spectral_convergence(np.asarray(o).reshape(-1), audio, w.n_fft, w.hop)
        for o in outputs]
    row["spectral_convergence"] = statistics.mean(row["spectral_convergence_seeds"])
    log(f"[{w.name}/{clip}] {name} @{backend}: {row['seconds']:.3f} s, "
        f"SC {row['spectral_convergence']:.4f} {np.round(row['spectral_convergence_seeds'], 4)}")
    return row


def add_ratios(rows):
    """``time_vs_librosa``: row time / librosa's time on the same workload and clip."""
    ref = {(r["workload"], r["clip"]): r["seconds"] for r in rows
           if r["implementation"].startswith("librosa") and r["seconds"]}
    for r in rows:
        base = ref.get((r["workload"], r["clip"]))
        if base and r["seconds"]:
            r["time_vs_librosa"] = r["seconds"] / base


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _loads(values):
    return "n/a" if not values else ", ".join(f"{v:.2f}" for v in values)


def _spread(row):
    values = row.get("spectral_convergence_seeds") or []
    return f" [{min(values):.4f}-{max(values):.4f}]" if len(values) > 1 else ""


def markdown(results):
    env = results["environment"]
    lines = [f"# Mel spectrogram to audio ({results['settings']['n_iter']} Griffin-Lim "
             "iterations, momentum 0.99)", "",
             f"- command: `{env['command']}`", f"- when: {env['timestamp']}",
             f"- CPU: {env['cpu']} ({env['cores']} cores); GPU: "
             f"{env['gpu']['name'] if env['gpu'] else 'none'}",
             f"- Python {env['python']} (`{env['executable']}`): "
             + ", ".join(f"{k} {v}" for k, v in sorted(env["versions"].items())),
             f"- cumel source: commit {(env.get('cumel_source') or {}).get('commit', '?')[:10]}",
             f"- load average (1, 5, 15 min) at start {_loads(env.get('load_average'))}, at end "
             f"{_loads(env.get('load_average_after'))} (other work on the machine slows every "
             "row; compare rows of one run)",
             f"- time: median of {results['settings']['repeats']} runs after one warm-up, "
             "whole pipeline (inverse mel scale + Griffin-Lim); spectral convergence "
             "|| |STFT(y)| - |STFT(x)| ||_F / || |STFT(x)| ||_F against the original clip, "
             f"mean over {results['settings']['seeds']} Griffin-Lim start seed(s) "
             f"(from {results['settings']['seed']}; min-max in brackets)", "",
             "| workload | clip | implementation | backend | time (s) | spectral convergence "
             "| time / librosa |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['workload']} | {r['clip']} | {r['implementation']} | "
                         f"{r['backend']} | {r['status']}: {r['error']} | - | - |")
            continue
        version = f" {r['version']}" if r["version"] else ""
        lines.append(f"| {r['workload']} | {r['clip']} ({r['seconds_audio']:.1f} s, "
                     f"{r['frames']} frames) | {r['implementation']}{version} | {r['backend']} | "
                     f"{_fmt(r['seconds'], '.3f')} | {_fmt(r['spectral_convergence'], '.4f')}{_spread(r)} | "
                     f"{_fmt(r['time_vs_librosa'], '.2f')} |")
    return "\n".join(lines) + "\n"


def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench audio", description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="all",
                   help=f"{', '.join(WORKLOADS)} or all (default; comma list accepted)")
    p.add_argument("--audio", metavar="DIR", default=None,
                   help="folder with speech_*.wav / music_*.wav (default: a synthetic signal)")
    p.add_argument("--clips", type=int, default=1, metavar="K",
                   help="first K clips of each workload's kind, one row set each (default 1)")
    p.add_argument("--backend", default="cpu", help="cpu, cuda or cpu,cuda (default cpu)")
    p.add_argument("--peers", default="all", help="librosa,torchaudio, all (default) or none")
    p.add_argument("--n-iter", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="start of the Griffin-Lim phases")
    p.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="spectral convergence averaged over seeds seed..seed+K-1 (the "
                        "Griffin-Lim start; default 1); times use the first")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR")
    return p


def _names(text, allowed, option, parser):
    text = text.strip().lower()
    if text == "all":
        return tuple(allowed)
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if bad:
        parser.error(f"{option}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return names


def rewrite_markdown(folder):
    """Regenerate ``results.md`` from ``results.json`` in ``folder`` (after a format change)."""
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())
    (folder / "results.md").write_text(markdown(results))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    workloads = _names(args.workload, tuple(WORKLOADS), "--workload", parser)
    backends = _names(args.backend, ("cpu", "cuda"), "--backend", parser)
    peers = _names(args.peers, PEERS, "--peers", parser)
    if args.n_iter < 0 or min(args.repeats, args.clips, args.seeds) < 1:
        parser.error("--n-iter must be >= 0, --repeats, --clips and --seeds >= 1")
    quiet_empty_filters()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    env = environment.collect(["python", "-m", "bench", "audio", *argv])
    results = {"environment": env,
               "settings": {"n_iter": args.n_iter, "repeats": args.repeats, "seed": args.seed,
                            "seeds": args.seeds,
                            "workloads": list(workloads), "backends": list(backends),
                            "peers": list(peers), "audio": environment.portable_path(args.audio),
                            "clips": args.clips},
               "rows": []}
    for name in workloads:
        w = WORKLOADS[name]
        for clip, audio in load_clips(w, args.audio, args.clips):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                _, mel = w.pair(audio)
            for impl, backend, prepare in implementations(backends, peers):
                results["rows"].append(measure(impl, backend, prepare, w, clip, audio, mel,
                                               args.n_iter, args.repeats, args.seed, log,
                                               args.seeds))
    env["load_average_after"] = environment.load_average()
    add_ratios(results["rows"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, out)
    text = markdown(results)
    (out / "results.md").write_text(text)
    print(text)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
