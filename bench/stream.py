"""``python -m bench stream``: mel to sound as a stream (:class:`cumel.MelStream`), its quality
against look-ahead and its speed against the number of streams.

Quality. For each workload (default speech-201x128 and tts-513x80) and speech clip, the clip's
power mel (the workload's STFT and filterbank, float32) goes through ``cumel.MelStream`` at each
look-ahead ``K`` of ``--lookaheads`` (default 0..8) with ``n_iter = ceil(--total / (K + 1))``
iterations per arriving frame, and through the offline ``cumel.mel_to_audio`` (fast Griffin-Lim)
with the same total ``n_iter * (K + 1)`` iterations a frame, both seeded 0. Reported: the spectral
convergence ``|| |STFT(y)| - |STFT(x)| ||_F / || |STFT(x)| ||_F`` against the clip (the
workload's n_fft and hop), and the ratio stream / offline; the mean over the clips per ``K``.
The frames are pushed 8 at a time (the stream's output is the same bits for any chunking).

Speed. The Tacotron 2 front end (22.05 kHz, n_fft 1024, hop 256, 80 mels) on features of a
speech clip (resampled to 22.05 kHz by linear interpolation; ``--frames`` frames), ``K = 3``,
``workers=1``, the process pinned to one core (``os.sched_setaffinity``) unless ``--cores 0``:
1, 16 and 64 streams (``--streams``) pushed together, one frame a push (``--chunk``), at each
``n_iter`` of ``--speed-iters`` (default 8: 32 iterations a frame, and 2: 8 a frame). Reported:
wall and CPU seconds of all the pushes and the flush, and the real-time factor, audio seconds of
every stream together over wall seconds. ``--solvers nnls,lstsq`` adds rows with the magnitudes by
lstsq + relu (one matrix product), which shows what the nnls solve of each push costs.

Writes ``results.json``, ``results.md`` and ``results.png`` (spectral convergence against
``K + 1`` and real-time factor against streams, both log-scaled; matplotlib where importable,
else the plain plot of ``bench.png``) into ``--out``, and prints the table.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import cumel
from cumel.workloads import WORKLOADS, read_wav

from . import environment, report

DEFAULT_OUT = Path(__file__).resolve().parent / "out_stream"
DEFAULT_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
QUALITY_CHUNK = 8


def _pushed(stream, mel, chunk):
    parts = [stream.push(mel[..., t:t + chunk]) for t in range(0, mel.shape[-1], chunk)]
    parts.append(stream.flush())
    return np.concatenate(parts, axis=-1)


def quality_rows(workloads, clips, lookaheads, total, log):
    rows = []
    for name in workloads:
        w = WORKLOADS[name]
        kw = dict(sample_rate=w.sample_rate, f_min=w.f_min, f_max=w.f_max, norm=w.norm,
                  mel_type=w.mel_scale, hop_length=w.hop)
        for clip, audio in clips:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                _, M = w.pair(audio)
            offline = {}
            for K in lookaheads:
                n_iter = math.ceil(total / (K + 1))
                every = n_iter * (K + 1)
                if every not in offline:
                    y = cumel.mel_to_audio(M, w.n_fft, n_iter=every, seed=0, workers=1, **kw)
                    offline[every] = cumel.spectral_convergence(y, audio, w.n_fft, w.hop)
                t0 = time.perf_counter()
                y = _pushed(cumel.MelStream(w.n_fft, lookahead=K, n_iter=n_iter, seed=0, **kw),
                            M, QUALITY_CHUNK)
                seconds = time.perf_counter() - t0
                sc = cumel.spectral_convergence(y, audio, w.n_fft, w.hop)
                row = dict(workload=name, clip=clip, frames=int(M.shape[-1]), lookahead=K,
                           n_iter=n_iter, iterations_per_frame=every, sc_stream=sc,
                           sc_offline=offline[every], ratio=sc / offline[every],
                           seconds=seconds)
                rows.append(row)
                log(f"{name} {clip} K={K} n_iter={n_iter}: SC {sc:.4f} offline "
                    f"{offline[every]:.4f} ratio {row['ratio']:.3f}")
    return rows


def _resampled(audio, rate, to=22050):
    n = int(round(len(audio) * to / rate))
    return np.interp(np.arange(n) * (rate / to), np.arange(len(audio)), audio).astype(np.float32)


def speed_rows(audio, rate, streams, n_iters, solvers, n_frames, chunk, log):
    fe = cumel.frontend("tacotron2")
    feats = fe.features(_resampled(audio, rate, fe.sample_rate))[:, :n_frames]
    seconds_audio = fe.hop_length * feats.shape[-1] / fe.sample_rate
    rows = []
    for solver in solvers:
        for n_iter in n_iters:
            for S in streams:
                F = np.ascontiguousarray(np.broadcast_to(feats, (S,) + feats.shape))
                warm = cumel.MelStream(frontend=fe, lookahead=3, n_iter=n_iter, workers=1,
                                       solver=solver)
                _pushed(warm, F[..., :8], chunk)                  # caches, plans
                stream = cumel.MelStream(frontend=fe, lookahead=3, n_iter=n_iter, workers=1,
                                         solver=solver)
                c0, t0 = time.process_time(), time.perf_counter()
                y = _pushed(stream, F, chunk)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                row = dict(front_end="tacotron2", streams=S, lookahead=3, n_iter=n_iter,
                           iterations_per_frame=4 * n_iter, solver=solver, chunk=chunk,
                           frames=int(feats.shape[-1]), seconds_audio=seconds_audio,
                           samples=int(y.shape[-1]), wall=wall, cpu=cpu,
                           realtime=S * seconds_audio / wall,
                           realtime_cpu=S * seconds_audio / cpu)
                rows.append(row)
                log(f"speed {solver} n_iter={n_iter} streams={S}: {wall:.2f} s wall, "
                    f"{row['realtime']:.1f}x real time ({row['realtime_cpu']:.1f}x by CPU time)")
    return rows


def _shared(load):
    """Whether other work ran when this run started: a one-minute load average of 1 or more
    (the run itself had not started)."""
    return bool(load) and load[0] >= 1.0


def markdown(results):
    env = results["environment"]
    load = env.get("load_average")
    lines = ["# Mel to sound as a stream (cumel.MelStream)", "",
             f"- command: `{env['command']}`", f"- when: {env['timestamp']}",
             f"- CPU: {env['cpu']} ({env['cores']} cores), pinned to {results['pinned']}",
             f"- numpy {np.__version__}, cumel {cumel.__version__}, source "
             f"{(env.get('cumel_source') or {}).get('commit')}",
             f"- load average at start {load} and at end {results.get('load_end')}"
             + (": the machine was shared by other work while this ran (timings are slower "
                "than on an idle core; the spectral convergence is not affected)"
                if _shared(load) else ""), ""]
    q = results["quality"]
    if q:
        lines += ["## Spectral convergence against look-ahead", "",
                  "Stream: K frames of look-ahead, n_iter iterations per arriving frame; offline: "
                  "`cumel.mel_to_audio` with the same iterations a frame. Mean over the clips "
                  f"({len({r['clip'] for r in q})} speech clips).", "",
                  "| workload | K | n_iter | iterations a frame | SC stream | SC offline | "
                  "stream / offline | worst clip ratio |", "|---|---|---|---|---|---|---|---|"]
        for (wl, K), group in _groups(q, ("workload", "lookahead")):
            first = group[0]
            lines.append(f"| {wl} | {K} | {first['n_iter']} | {first['iterations_per_frame']} | "
                         f"{statistics.fmean(r['sc_stream'] for r in group):.4f} | "
                         f"{statistics.fmean(r['sc_offline'] for r in group):.4f} | "
                         f"{statistics.fmean(r['ratio'] for r in group):.3f} | "
                         f"{max(r['ratio'] for r in group):.3f} |")
        lines += ["", "Per clip:", "", "| workload | clip | frames | K | SC stream | SC offline | "
                  "ratio |", "|---|---|---|---|---|---|---|"]
        for r in q:
            lines.append(f"| {r['workload']} | {r['clip']} | {r['frames']} | {r['lookahead']} | "
                         f"{r['sc_stream']:.4f} | {r['sc_offline']:.4f} | {r['ratio']:.3f} |")
        lines.append("")
    s = results["speed"]
    if s:
        lines += ["## Real-time factor against streams", "",
                  f"Tacotron 2 front end (22.05 kHz, n_fft 1024, hop 256, 80 mels), K = 3, "
                  f"workers=1, {s[0]['frames']} frames ({s[0]['seconds_audio']:.2f} s) per "
                  f"stream pushed {s[0]['chunk']} frame(s) a push, all streams in each push. "
                  "Real-time factor: audio seconds of all streams / wall seconds (and / CPU "
                  "seconds).", "",
                  "| solver | n_iter | iterations a frame | streams | wall (s) | CPU (s) | "
                  "x real time | x real time (CPU) |", "|---|---|---|---|---|---|---|---|"]
        for r in s:
            lines.append(f"| {r['solver']} | {r['n_iter']} | {r['iterations_per_frame']} | "
                         f"{r['streams']} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                         f"{r['realtime']:.1f} | {r['realtime_cpu']:.1f} |")
        lines.append("")
    lines += [results.get("plot_note", ""), ""]
    return "\n".join(lines)


def _groups(rows, keys):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return list(out.items())


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def write_plot(results, folder):
    """results.png: SC against K + 1 (a line per workload, stream solid, offline dashed) and
    x real time against streams (a line per solver and n_iter); a sentence for results.md."""
    sc, rt = {}, {}
    for (wl, K), group in _groups(results["quality"], ("workload", "lookahead")):
        sc.setdefault(wl, []).append((K + 1, statistics.fmean(r["sc_stream"] for r in group),
                                      statistics.fmean(r["sc_offline"] for r in group)))
    for r in results["speed"]:
        rt.setdefault(f"{r['solver']} n_iter={r['n_iter']}", []).append((r["streams"],
                                                                         r["realtime"]))
    path = Path(folder) / "results.png"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - any import failure: the fallback draws it
        from . import png
        panels = {"sc": [], "rt": []}
        legend = []
        for i, (wl, pts) in enumerate(sc.items()):
            colour = COLOURS[i % len(COLOURS)]
            panels["sc"].append((wl, colour, [(x, a) for x, a, _ in pts],
                                 [(x, b) for x, _, b in pts]))
            legend.append(f"{wl}: {colour}")
        for i, (name, pts) in enumerate(rt.items()):
            colour = COLOURS[(i + len(sc)) % len(COLOURS)]
            panels["rt"].append((name, colour, pts, []))
            legend.append(f"{name}: {colour}")
        path.write_bytes(png.plot(panels))
        return (f"Figure drawn without matplotlib ({type(exc).__name__}): left, spectral "
                "convergence (y, log10) against K + 1 (x, log2), the stream solid with squares, "
                "offline at the same iterations dashed; right, x real time (y, log10) against "
                f"streams (x, log2). Colours: {'; '.join(legend)}.")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for wl, pts in sc.items():
        line, = a.plot([x - 1 for x, _, _ in pts], [v for _, v, _ in pts], "s-", label=wl)
        a.plot([x - 1 for x, _, _ in pts], [v for _, _, v in pts], "--", color=line.get_color(),
               label=f"{wl} offline")
    a.set(xlabel="look-ahead K (frames)", ylabel="spectral convergence")
    a.legend(fontsize=7)
    for name, pts in rt.items():
        b.plot([x for x, _ in pts], [v for _, v in pts], "s-", label=name)
    b.set(xscale="log", yscale="log", xlabel="streams", ylabel="x real time (all streams)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Figure: spectral convergence against K (offline dashed); x real time against streams."


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench stream", description=__doc__.split("\n")[0])
    p.add_argument("--audio", default=str(DEFAULT_AUDIO), help="folder of the clips")
    p.add_argument("--clips", type=int, default=8, help="speech clips (speech_00 on)")
    p.add_argument("--seconds", type=float, default=None, help="cut each clip to this length")
    p.add_argument("--workloads", default="speech-201x128,tts-513x80")
    p.add_argument("--lookaheads", default="0,1,2,3,4,5,6,7,8")
    p.add_argument("--total", type=int, default=32, help="iterations a frame (quality)")
    p.add_argument("--streams", default="1,16,64")
    p.add_argument("--speed-iters", default="8,2")
    p.add_argument("--solvers", default="nnls")
    p.add_argument("--frames", type=int, default=200, help="frames per stream (speed)")
    p.add_argument("--chunk", type=int, default=1, help="frames a push (speed)")
    p.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: no pinning)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment.collect(["python", "-m", "bench", "stream"] + list(
        sys.argv[2:] if argv is None else argv))
    pinned = "no pinning"
    if args.cores and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:args.cores]
        os.sched_setaffinity(0, cpus)
        pinned = f"{len(cpus)} core(s)"

    def log(line):
        print(line, file=sys.stderr, flush=True)

    folder = Path(args.audio)
    clips = []
    for i in range(args.clips):
        path = folder / f"speech_{i:02d}.wav"
        if path.exists():
            audio, rate = read_wav(path)
            if args.seconds:
                audio = audio[:int(args.seconds * rate)]
            clips.append((path.stem, rate, audio))
    if not clips:
        from cumel.workloads import synthetic_audio
        clips = [("synthetic", 16000, synthetic_audio(2.0, 16000))]
    results = {"environment": env, "pinned": pinned, "quality": [], "speed": []}
    if not args.skip_quality:
        results["quality"] = quality_rows(
            [w for w in args.workloads.split(",") if w], [(c, a) for c, _, a in clips],
            _ints(args.lookaheads), args.total, log)
    if not args.skip_speed:
        _, rate, audio = clips[0]
        results["speed"] = speed_rows(audio, rate, _ints(args.streams), _ints(args.speed_iters),
                                      [s for s in args.solvers.split(",") if s], args.frames,
                                      args.chunk, log)
    results["load_end"] = environment.load_average()
    results["plot_note"] = write_plot(results, out)
    report.write_json(results, out)
    md = markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
