"""``python -m bench audio`` (= ``python -m bench.audio``): mel spectrogram -> audio, cumel
against librosa and torchaudio.

For each standard workload and clip: the clip's power mel spectrogram (the workload's STFT and
filterbank, float32) is turned back into audio of the clip's length by

* cumel ``mel_to_audio`` (nnls inverse mel scale, then fast Griffin-Lim: the cascade; CPU, and
  CUDA with ``--backend cpu,cuda`` where CuPy sees a GPU), at ``--n-iter`` and at each of
  ``--gl-iters``;
* cumel ``mel_to_audio(method="admm")`` (joint magnitude and phase from the cascade's answer,
  ``cumel.admm``) at each of ``--admm-iters`` outer iterations (default 32, 100, 300);
* librosa ``feature.inverse.mel_to_audio`` (its NNLS, then its Griffin-Lim; reflect padding
  asked for, as cumel and torchaudio use);
* torchaudio ``InverseMelScale`` + ``GriffinLim`` (CPU, and CUDA where torch sees a GPU);

the peers at ``--n-iter`` iterations (default 32), momentum 0.99 throughout. Each row reports the
spectral convergence ``|| |STFT(y)| - |STFT(x)| ||_F / || |STFT(x)| ||_F`` against the original
clip (cumel's STFT at the workload's n_fft and hop), the median wall time of ``--repeats`` runs
after one warm-up, and both as ratios to the cascade's row at ``--n-iter`` (same clip and
backend). Libraries that do not import give a "not installed" row. Writes ``results.json``,
``results.md`` and ``results.png`` (spectral convergence against time, one panel per workload,
the mean over the clips; matplotlib where importable, else the plain plot of ``bench.png``) into
``--out`` and prints the table.
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
          "time_vs_librosa", "time_vs_cascade", "sc_vs_cascade")
CASCADE = "cumel mel_to_audio (nnls + fast Griffin-Lim)"
ADMM = "cumel mel_to_audio admm (joint magnitude and phase)"
PLOT_NAME = "results.png"


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


def _cumel(w, mel, n_samples, n_iter, seed, backend, method="griffinlim"):
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
                               norm=w.norm, mel_type=w.mel_scale, seed=seed, method=method)
        return cumel._backend.to_numpy(y)   # includes the device sync and copy
    return run, cumel.__version__


def implementations(backends, peers, n_iter=32, admm_iters=(), gl_iters=()):
    """``[(id, backend, prepare, n_iter)]`` in table order."""
    rows = []
    for b in backends:
        rows += [(CASCADE, b, lambda w, m, n, k, s, b=b: _cumel(w, m, n, k, s, b), k)
                 for k in sorted({n_iter, *gl_iters})]
        rows += [(ADMM, b, lambda w, m, n, k, s, b=b: _cumel(w, m, n, k, s, b, "admm"), k)
                 for k in admm_iters]
    if "librosa" in peers:
        rows.append(("librosa mel_to_audio (nnls + Griffin-Lim)", "cpu",
                     lambda w, m, n, k, s: _librosa(w, m, n, k, s), n_iter))
    if "torchaudio" in peers:
        rows += [("torchaudio InverseMelScale + GriffinLim", b,
                  lambda w, m, n, k, s, b=b: _torchaudio(w, m, n, k, s, b), n_iter)
                 for b in backends]
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


def add_ratios(rows, n_iter=32):
    """``time_vs_librosa``: row time / librosa's time on the same workload and clip;
    ``time_vs_cascade`` and ``sc_vs_cascade``: row time and spectral convergence / those of
    cumel's cascade at ``n_iter`` iterations on the same workload, clip and backend."""
    ref = {(r["workload"], r["clip"]): r["seconds"] for r in rows
           if r["implementation"].startswith("librosa") and r["seconds"]}
    cascade = {(r["workload"], r["clip"], r["backend"]): r for r in rows
               if r["implementation"] == CASCADE and r["n_iter"] == n_iter and r["seconds"]}
    for r in rows:
        base = ref.get((r["workload"], r["clip"]))
        if base and r["seconds"]:
            r["time_vs_librosa"] = r["seconds"] / base
        c = cascade.get((r["workload"], r["clip"], r["backend"]))
        if c and r["seconds"]:
            r["time_vs_cascade"] = r["seconds"] / c["seconds"]
            r["sc_vs_cascade"] = r["spectral_convergence"] / c["spectral_convergence"]


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _loads(values):
    return "n/a" if not values else ", ".join(f"{v:.2f}" for v in values)


def _spread(row):
    values = row.get("spectral_convergence_seeds") or []
    return f" [{min(values):.4f}-{max(values):.4f}]" if len(values) > 1 else ""


def markdown(results):
    env = results["environment"]
    settings = results["settings"]
    lines = [f"# Mel spectrogram to audio ({settings['n_iter']} Griffin-Lim iterations, momentum "
             f"0.99; ADMM at {', '.join(map(str, settings.get('admm_iters', []))) or 'none'})",
             "",
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
             f"(from {results['settings']['seed']}; min-max in brackets); / cascade: the ratio to "
             f"the cumel cascade's row at {settings['n_iter']} iterations, same clip and backend",
             "", "| workload | clip | implementation | backend | iterations | time (s) | "
             "spectral convergence | time / cascade | SC / cascade | time / librosa |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['workload']} | {r['clip']} | {r['implementation']} | "
                         f"{r['backend']} | {r['n_iter']} | {r['status']}: {r['error']} | - | - | "
                         "- | - |")
            continue
        version = f" {r['version']}" if r["version"] else ""
        lines.append(f"| {r['workload']} | {r['clip']} ({r['seconds_audio']:.1f} s, "
                     f"{r['frames']} frames) | {r['implementation']}{version} | {r['backend']} | "
                     f"{r['n_iter']} | {_fmt(r['seconds'], '.3f')} | "
                     f"{_fmt(r['spectral_convergence'], '.4f')}{_spread(r)} | "
                     f"{_fmt(r.get('time_vs_cascade'), '.2f')} | "
                     f"{_fmt(r.get('sc_vs_cascade'), '.3f')} | "
                     f"{_fmt(r['time_vs_librosa'], '.2f')} |")
    summary = summary_rows(results["rows"])
    if summary:
        lines += ["", "Mean over the clips of each workload (the plot's points):", "",
                  "| workload | implementation | backend | iterations | clips | time (s) | "
                  "spectral convergence | time / cascade | SC / cascade |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in summary:
            lines.append(f"| {s['workload']} | {s['implementation']} | {s['backend']} | "
                         f"{s['n_iter']} | {s['clips']} | {s['seconds']:.3f} | "
                         f"{s['spectral_convergence']:.4f} | "
                         f"{_fmt(s['time_vs_cascade'], '.2f')} | "
                         f"{_fmt(s['sc_vs_cascade'], '.3f')} |")
    return "\n".join(lines) + "\n"


def summary_rows(rows):
    """Per (workload, implementation, backend, iterations): the mean over clips of the time, the
    spectral convergence and their ratios to the cascade (rows that ran on every clip)."""
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            key = (r["workload"], r["implementation"], r["backend"], r["n_iter"])
            groups.setdefault(key, []).append(r)
    out = []
    for (workload, impl, backend, n_iter), group in groups.items():
        def mean(field):
            values = [g.get(field) for g in group]
            return None if any(v is None for v in values) else statistics.mean(values)
        out.append({"workload": workload, "implementation": impl, "backend": backend,
                    "n_iter": n_iter, "clips": len(group), "seconds": mean("seconds"),
                    "spectral_convergence": mean("spectral_convergence"),
                    "time_vs_cascade": mean("time_vs_cascade"),
                    "sc_vs_cascade": mean("sc_vs_cascade")})
    return out


_COLOURS = {CASCADE: "#1f77b4", ADMM: "#d62728", "librosa": "#2ca02c", "torchaudio": "#9467bd"}


def _colour(implementation):
    for key, colour in _COLOURS.items():
        if implementation.startswith(key):
            return colour
    return "#7f7f7f"


def write_plot(results, folder):
    """``results.png``: per workload, the mean spectral convergence over the clips against the
    mean time, one line per implementation and backend through its iteration counts.

    matplotlib where importable; otherwise :func:`bench.png.plot` (the same lines, no text: the
    colours are listed in ``results.md``). Returns ``(path, note)``."""
    panels = {}
    for s in summary_rows(results["rows"]):
        if s["seconds"] and s["spectral_convergence"]:
            key = (s["implementation"], s["backend"])
            panels.setdefault(s["workload"], {}).setdefault(key, []).append(
                (s["seconds"], s["spectral_convergence"], s["n_iter"]))
    if not panels:
        return None, "no measured rows"
    path = Path(folder) / PLOT_NAME
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except Exception as exc:
        from . import png
        path.write_bytes(png.plot({name: [(f"{impl} ({backend})", _colour(impl),
                                           sorted((t, sc) for t, sc, _ in points), [])
                                          for (impl, backend), points in lines.items()]
                                   for name, lines in panels.items()}))
        return path, (f"matplotlib is not importable ({exc}): plain plot, log2 time across, "
                      "log10 spectral convergence up; colours: " + ", ".join(
                          f"{k} {v}" for k, v in _COLOURS.items()))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels) + 0.6, 5.0),
                             squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items()):
        for (impl, backend), points in lines.items():
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    color=_colour(impl), linestyle="-" if backend == "cpu" else "--",
                    label=f"{impl} ({backend})")
            for t, sc, k in points:
                ax.annotate(str(k), (t, sc), textcoords="offset points", xytext=(4, 4),
                            fontsize=8, color=_colour(impl))
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("time (s, log; mean over clips)")
        ax.set_ylabel("spectral convergence (mean over clips)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("mel -> audio: spectral convergence against time (numbers: iterations)")
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, None


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
    p.add_argument("--n-iter", type=int, default=32,
                   help="Griffin-Lim iterations of the cascade and the peers (default 32)")
    p.add_argument("--admm-iters", default="32,100,300", metavar="K,K",
                   help="outer iterations of the cumel ADMM rows, comma list, or none "
                        "(default 32,100,300)")
    p.add_argument("--gl-iters", default="none", metavar="K,K",
                   help="further Griffin-Lim iteration counts for cumel's cascade (a curve of "
                        "the cascade against time), comma list or none (default)")
    p.add_argument("--clip-names", default=None, metavar="NAME,NAME",
                   help="with --audio: only these clips (file stems, e.g. speech_04,music_01), "
                        "each workload taking those of its kind; --clips is then ignored")
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


def _counts(text, option, parser):
    """Iteration counts of a comma list ("none": no rows)."""
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    try:
        counts = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        parser.error(f"{option}: a comma list of integers or none, got {text!r}")
    if any(k < 0 for k in counts):
        parser.error(f"{option}: iteration counts must be >= 0, got {text!r}")
    return counts


def _clips(w, args, clip_names):
    """The clips of workload ``w``: ``--clip-names`` of its kind, or the first ``--clips``."""
    if clip_names is None:
        return load_clips(w, args.audio, args.clips)
    mine = [n for n in clip_names if n.startswith(w.clips)]
    count = len(list(Path(args.audio).glob(w.clips + "*.wav")))
    found = dict(load_clips(w, args.audio, max(count, 1)))
    missing = [n for n in mine if n not in found]
    if missing:
        raise FileNotFoundError(f"--clip-names: {', '.join(missing)} not in {args.audio}")
    return [(n, found[n]) for n in mine]


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
    admm_iters = _counts(args.admm_iters, "--admm-iters", parser)
    gl_iters = _counts(args.gl_iters, "--gl-iters", parser)
    clip_names = None
    if args.clip_names is not None:
        if args.audio is None:
            parser.error("--clip-names needs --audio")
        clip_names = [n.strip() for n in args.clip_names.split(",") if n.strip()]
    quiet_empty_filters()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    env = environment.collect(["python", "-m", "bench", "audio", *argv])
    results = {"environment": env,
               "settings": {"n_iter": args.n_iter, "repeats": args.repeats, "seed": args.seed,
                            "seeds": args.seeds, "admm_iters": list(admm_iters),
                            "gl_iters": list(gl_iters), "clip_names": clip_names,
                            "workloads": list(workloads), "backends": list(backends),
                            "peers": list(peers), "audio": environment.portable_path(args.audio),
                            "clips": args.clips},
               "rows": []}
    for name in workloads:
        w = WORKLOADS[name]
        for clip, audio in _clips(w, args, clip_names):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                _, mel = w.pair(audio)
            for impl, backend, prepare, n_iter in implementations(backends, peers, args.n_iter,
                                                                  admm_iters, gl_iters):
                results["rows"].append(measure(impl, backend, prepare, w, clip, audio, mel,
                                               n_iter, args.repeats, args.seed, log,
                                               args.seeds))
    env["load_average_after"] = environment.load_average()
    add_ratios(results["rows"], args.n_iter)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, out)
    plot, note = write_plot(results, out)
    text = markdown(results)
    if note:
        text += f"\nPlot: {note}\n"
    (out / "results.md").write_text(text)
    print(text)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}"
        + (f", {plot}" if plot is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
