"""The files of ``python -m bench gpu``: results.json, results.md and results.png.

Every file is written to a temporary name beside it and renamed over the old one, so a run
killed while writing leaves the previous complete version. The plot is drawn by matplotlib
when it is importable, else by :mod:`bench.png` (same panels and lines, no text: the Markdown
says which colour is which).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .report import finite_or_none

JSON_NAME, MD_NAME, PNG_NAME = "results.json", "results.md", "results.png"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
           "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363")


def _atomic_write(path, data):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(tmp, 0o644)                      # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(results, folder):
    path = Path(folder) / JSON_NAME
    _atomic_write(path, json.dumps(finite_or_none(results), indent=1, allow_nan=False) + "\n")
    return path


def _fmt(value, spec=".3g"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _rate(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 1e4 else f"{value:,.0f}"


def describe(row):
    """One progress line for a row."""
    head = (f"[{row['workload']}] {row['solver']} ({row['backend']}, {row['n_frames']} frames)")
    if row["status"] != "ok":
        return f"{head}: {row['status']}: {row['error']}"
    return (f"{head}: {_rate(row['frames_per_s'])} frames/s, bound "
            f"{_rate(row['bound_frames_per_s'])} ({_fmt(row.get('measured_over_bound'), '.2%')})")


def describe_stream(row):
    """One progress line for a row of the streams-at-once table."""
    head = (f"[stream] {row['backend']}, {row['streams']} streams, n_iter {row['n_iter']}, "
            f"{row['frames']} frames")
    if row["status"] != "ok":
        return f"{head}: {row['status']}: {row['error']}"
    return f"{head}: {_fmt(row['wall_seconds'])} s, {_fmt(row['realtime'])}x real time"


def stream_markdown(stream):
    """The streams-at-once table (``results["stream"]``)."""
    s = stream["settings"]
    lines = ["## Streams at once: cumel.MelStream", "",
             (f"`cumel.MelStream(frontend=\"{s['front_end']}\", lookahead={s['lookahead']}, "
              f"n_iter=...)`: {s['front_end']} features ({s['sample_rate']} Hz, n_fft "
              f"{s['n_fft']}, hop {s['hop']}, {s['n_mels']} mels, {s['dtype']}) of {s['source']}, "
              "the same frames tiled to every stream, pushed one frame a push (an `(n_streams, "
              f"{s['n_mels']}, 1)` array) and flushed. cuda: CuPy arrays, each push's passes over "
              "every stream at once (`kernels/stream.cu`); cpu: NumPy arrays, "
              f"`workers={s['cpu_workers']}` (the reference). Wall seconds of the pushes and the "
              "flush after a warm-up stream, the device synchronised when the clock starts and "
              f"stops; x real time = streams x frames x {s['hop']} / {s['sample_rate']} over those "
              "seconds. Latency: how far the final output trails the audio the pushed frames "
              "describe (`MelStream.latency_ms`)."), "",
             ("| backend | streams | n_iter | iterations a frame | frames per stream | wall (s) | "
              "CPU (s) | x real time | latency (ms) | note |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in stream["rows"]:
        note = "" if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        lines.append(f"| {r['backend']} | {r['streams']} | {r['n_iter']} | "
                     f"{r['iterations_per_frame']} | {r['frames']} | "
                     f"{_fmt(r.get('wall_seconds'))} | {_fmt(r.get('cpu_seconds'))} | "
                     f"{_fmt(r.get('realtime'))} | {_fmt(r.get('latency_ms'), '.1f')} | {note} |")
    return lines


def series_key(row):
    return row["workload"], row["solver"], row["backend"]


def markdown(results):
    """The report: what ran, the device, the stages, the best of every series, the kernels."""
    env = results.get("environment") or {}
    device = results.get("device") or {}
    versions = env.get("versions") or {}
    lines = ["# cumel on the GPU: `python -m bench gpu`", ""]
    if results.get("emulated"):
        lines += [("**EMULATED**: this run used the CPU emulator of `tests/cudasim` instead of a "
                   "GPU. The timings and the device figures mean nothing; the run proves the "
                   "command works end to end."), ""]
    lines += [f"- command: `{results.get('command')}`",
              (f"- when: {env.get('timestamp', '-')}; cumel source: commit "
               f"{((env.get('cumel_source') or {}).get('commit') or '?')[:10]}"),
              "- versions: " + ", ".join(f"{k} {versions[k]}" for k in sorted(versions)),
              f"- Python {env.get('python', '-')}; CPU {env.get('cpu', '-')}"]
    if device:
        gpu = env.get("gpu") or {}
        lines.append(
            f"- device: {device['name']}, compute capability {device['compute_capability']}, "
            f"{device['sm_count']} SMs at {device['clock_hz'] / 1e9:.2f} GHz, memory "
            f"{device['memory_bandwidth'] / 1e12:.2f} TB/s, {device['memory_total'] / 2**30:.0f} "
            f"GiB; peak FP32 {_fmt((device.get('peak_fp32_flops') or 0) / 1e12)} TFLOP/s, FP64 "
            f"{_fmt((device.get('peak_fp64_flops') or 0) / 1e12)} TFLOP/s; driver (CUDA) "
            f"{gpu.get('driver')} / runtime {gpu.get('cuda')}; NVIDIA driver "
            f"{gpu.get('driver_version') or '-'}")
    else:
        lines.append("- device: none usable")
    budget = results.get("budget") or {}
    lines.append(f"- time: {_fmt(budget.get('spent'), '.0f')} s of a {budget.get('seconds'):.0f} s "
                 f"budget" + (f"; {budget['stopped']}" if budget.get("stopped") else ""))
    settings = results.get("settings") or {}
    lines += [(f"- settings: float32, batches of channels of {settings.get('channel_frames')} "
               f"frames from {settings.get('audio') or 'a synthetic signal'}, sizes from "
               f"{settings.get('start_frames')} frames doubling, SGD solvers and torch-sgd "
               f"{settings.get('max_iter')} iterations with tolerances 0, Griffin-Lim "
               f"{settings.get('n_iter')} iterations, median of {settings.get('repeats')} runs "
               "timed by CUDA events after a warm-up"), ""]
    lines += ["## Stages", "", "| stage | status | seconds | note |", "| --- | --- | --- | --- |"]
    for stage in results.get("stages", []):
        note = stage.get("error") or stage.get("note") or ""
        lines.append(f"| {stage['name']} | {stage['status']} | {_fmt(stage.get('seconds'), '.1f')} "
                     f"| {note} |")
    pytest_result = results.get("pytest")
    if pytest_result:
        lines += ["", (f"`pytest -m gpu`: {pytest_result.get('summary') or '-'} (exit status "
                       f"{pytest_result.get('returncode')}, log in `pytest.log`)")]
    lines += ["", "## Frames per second against the device's bound", "",
              ("Bound: from each kernel's stated cost model (`// cost` lines of `kernels/*.cu`) "
               "and the device's bandwidth and peak FLOP rate, `min(bandwidth / bytes, peak / "
               "flops)` per frame, with the iterations per frame measured at each series' first "
               "size (every size tiles the same frames) (`bench/bound.py`). "
               "Peers are held against the cumel kernel that computes the same thing. Best size "
               "of each series; every size is in `results.json`."), "",
              ("| workload | solver | backend | best frames/s | at frames | bound frames/s | "
               "measured / bound | limit | steps | mel residual | sizes stopped |"),
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    stopped = {(s["workload"], s["solver"], s["backend"]): s["stopped"]
               for s in results.get("series", [])}
    seen = []
    for row in results.get("rows", []):
        if series_key(row) not in seen:
            seen.append(series_key(row))
    for key in seen:
        rows = [r for r in results["rows"] if series_key(r) == key]
        ok = [r for r in rows if r["status"] == "ok"]
        why = stopped.get(key) or "-"
        if not ok:
            failed = rows[-1]
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {failed['status']}: "
                         f"{failed['error']} | | | | | | | {why} |")
            continue
        best = max(ok, key=lambda r: r["frames_per_s"] or 0)
        limit = (best.get("bound") or {}).get("limit") or "-"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {_rate(best['frames_per_s'])} | "
                     f"{best['n_frames']} | {_rate(best['bound_frames_per_s'])} | "
                     f"{_fmt(best.get('measured_over_bound'), '.2%')} | {limit} | "
                     f"{_fmt(best.get('steps'), '.3g')} | {_fmt(best.get('mel_residual'), '.2g')} | "
                     f"{why} |")
    if (results.get("stream") or {}).get("rows"):
        lines += [""] + stream_markdown(results["stream"])
    kernels = results.get("kernels")
    if kernels:
        from .kernels import legend
        from .kernels import markdown as kernel_table
        lines += ["", "## Kernels: ptxas and occupancy (float32 instantiations)", "",
                  legend(kernels), "", kernel_table(kernels, only_float=True)]
    plot = results.get("plot")
    if plot:
        lines += ["", "## results.png", "", plot]
    return "\n".join(lines) + "\n"


def write_markdown(results, folder):
    path = Path(folder) / MD_NAME
    _atomic_write(path, markdown(results))
    return path


SOLVER_COLOURS = {"nnls": "#1f77b4", "lstsq": "#ff7f0e", "torchaudio": "#2ca02c",
                  "mindspore": "#d62728", "griffinlim": "#9467bd", "mel_to_audio": "#8c564b",
                  "torchaudio.InverseMelScale": "#e377c2", "torch-sgd": "#7f7f7f",
                  "torchaudio.GriffinLim": "#17becf"}
BACKEND_STYLES = {"cuda": "-o", "cuda-host": ":s", "cuda-torch": "-.^", "torch-cuda": "-D"}


def plot_series(results):
    """``{workload: [{solver, backend, name, measured, bound}]}`` of the ok rows: points
    ``(frames, frames/s)``; bounds for the resident ``cuda`` rows and the peers."""
    panels, keys = {}, []
    for row in results.get("rows", []):
        if row["status"] == "ok" and series_key(row) not in keys:
            keys.append(series_key(row))
    for workload, solver, backend in keys:
        rows = sorted((r for r in results["rows"]
                       if series_key(r) == (workload, solver, backend) and r["status"] == "ok"),
                      key=lambda r: r["n_frames"])
        panels.setdefault(workload, []).append({
            "solver": solver, "backend": backend, "name": f"{solver} ({backend})",
            "measured": [(r["n_frames"], r["frames_per_s"]) for r in rows if r["frames_per_s"]],
            "bound": [(r["n_frames"], r["bound_frames_per_s"]) for r in rows
                      if r["bound_frames_per_s"] and backend in ("cuda", "torch-cuda")]})
    return panels


STREAM_PANEL = "MelStream: x real time against streams"


def stream_lines(results):
    """``[{backend, n_iter, name, measured}]`` of the ok streams-at-once rows: points
    ``(streams, x real time)``, a line per backend and ``n_iter``."""
    lines = {}
    for r in (results.get("stream") or {}).get("rows", []):
        if r["status"] == "ok" and r.get("realtime"):
            line = lines.setdefault((r["backend"], r["n_iter"]), {
                "backend": r["backend"], "n_iter": r["n_iter"],
                "name": f"MelStream {r['backend']} n_iter {r['n_iter']}", "measured": []})
            line["measured"].append((r["streams"], r["realtime"]))
    return list(lines.values())


def write_plot(results, folder):
    """results.png: frames/s against batch size (log-log), one panel per workload: a colour per
    solver, a line style per backend, the bound of the solver's kernel dashed. Returns a
    sentence for results.md saying how it was drawn."""
    panels = plot_series(results)
    streams = stream_lines(results)
    path = Path(folder) / PNG_NAME
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - any import failure: the fallback draws it
        from . import png
        colours, simple = {}, {}
        for workload, lines in panels.items():
            simple[workload] = []
            for line in lines:
                colour = colours.setdefault(line["name"], COLOURS[len(colours) % len(COLOURS)])
                simple[workload].append((line["name"], colour, line["measured"], line["bound"]))
        if streams:
            simple[STREAM_PANEL] = []
            for line in streams:
                colour = colours.setdefault(line["name"], COLOURS[len(colours) % len(COLOURS)])
                simple[STREAM_PANEL].append((line["name"], colour, line["measured"], []))
        _atomic_write(path, png.plot(simple))
        legend = "; ".join(f"{name}: {colour}" for name, colour in colours.items())
        return (f"Drawn without matplotlib ({type(exc).__name__}): panels left to right "
                f"{', '.join(list(panels) + ([STREAM_PANEL] if streams else [])) or '(none)'}; "
                f"x frames per batch, y frames/s, both log, "
                f"grid lines at powers of 2 (x) and 10 (y); solid measured, dashed bound"
                + (f"; the last panel, {STREAM_PANEL} (x streams, y x real time, both log)"
                   if streams else "")
                + f". Colours: {legend or '-'}.")
    n = max(1, len(panels) + bool(streams))
    fig, axes = plt.subplots(1, n, figsize=(max(9.0, 6.0 * n), 6.0), squeeze=False)
    handles = {}
    for ax, (workload, lines) in zip(axes[0], panels.items()):
        for line in lines:
            colour = SOLVER_COLOURS.get(line["solver"], "black")
            if line["measured"]:
                x, y = zip(*line["measured"])
                handles[line["name"]] = ax.plot(x, y, BACKEND_STYLES.get(line["backend"], "-o"),
                                                color=colour, ms=3, lw=1.4, label=line["name"])[0]
            if line["bound"]:
                x, y = zip(*line["bound"])
                ax.plot(x, y, "--", color=colour, lw=0.9, alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(workload)
        ax.set_xlabel("frames per batch")
        ax.set_ylabel("frames / s (dashed: bound of the solver's kernel)")
        ax.grid(True, which="both", alpha=0.3)
    if streams:
        ax = axes[0][-1]
        for line in streams:
            x, y = zip(*line["measured"])
            handles[line["name"]] = ax.plot(x, y, "-s" if line["backend"] == "cuda" else ":o",
                                            ms=3, lw=1.4, label=line["name"])[0]
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title("cumel.MelStream, one frame a push")
        ax.set_xlabel("streams pushed together")
        ax.set_ylabel("x real time (audio seconds of every stream / wall seconds)")
        ax.grid(True, which="both", alpha=0.3)
    device = (results.get("device") or {}).get("name", "no device")
    fig.suptitle(f"cumel on {device}" + (" - EMULATED, timings meaningless"
                                         if results.get("emulated") else ""), fontsize=11)
    if handles:
        columns = min(4, len(handles))
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=columns,
                   fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.035 * math.ceil(len(handles) / columns) + 0.02, 1, 0.96))
    fd, tmp = tempfile.mkstemp(prefix=".results.png.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ("Drawn by matplotlib: one panel per workload, frames/s against frames per batch; a "
            "colour per solver, a line style per backend (solid cuda, dotted cuda-host, "
            "dash-dot cuda-torch), the bound of the solver's kernel dashed"
            + ("; the last panel, cumel.MelStream's x real time against streams (solid cuda, "
               "dotted cpu)" if streams else "") + ".")
