"""The benchmark's outputs: ``results.json``, ``results.md`` (also printed) and ``results.png``.

The plot needs matplotlib; without it :func:`write_plot` says so and the rest goes on.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .implementations import IMPLEMENTATIONS

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "results.json", "results.md", "results.png"
NOT_SHOWN_NAMED = 2           # rows without a point a panel names; more are counted
COLUMNS = ("implementation", "version", "backend", "device", "frames", "iterations", "time (s)",
           "frames/s", "mel residual", "spectrogram error", "speed-up", "note")


def finite_or_none(value):
    """``value`` (nested dicts and lists) with NaN and infinities replaced by None: JSON has no
    spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json(report, folder):
    path = Path(folder) / JSON_NAME
    path.write_text(json.dumps(finite_or_none(report), indent=2, allow_nan=False) + "\n")
    return path


def _number(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _iterations(row):
    if row["iterations"] is not None:
        return str(row["iterations"])
    return f"<= {row['max_iter']}" if row["max_iter"] else "n/a"


def _cells(row):
    ok = row["status"] == "ok"
    speedup = "-" if row["speedup"] is None else f"{row['speedup']:.3g}x"
    return [row["implementation"], row["version"] or "-", row["backend"], row["device"] or "-",
            str(row["frames"]), _iterations(row) if ok else "-",
            _number(row["seconds"], ".4g"), _number(row["frames_per_second"], ",.0f"),
            _number(row["mel_residual"], ".2e"), _number(row["spectrogram_error"], ".3g"),
            speedup, "" if ok else f"{row['status']}: {row['error']}"]


def _table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in _cells(row)) + " |")
    return lines


def _time_ratio(rows, numerator, denominator):
    """``numerator / denominator`` time per frame, when both rows were measured on the CPU."""
    found = {row["implementation"]: row for row in rows
             if row["status"] == "ok" and row["backend"] == "cpu"}
    if numerator in found and denominator in found:
        return found[numerator]["seconds_per_frame"] / found[denominator]["seconds_per_frame"]
    return None


def environment_lines(env):
    """The Markdown bullet lines of a run's environment block: command, when, CPU and
    versions, the cumel source, the load average at start and end."""
    return [f"- command: `{env['command']}`", f"- when: {env['timestamp']}",
            f"- CPU: {env['cpu']} ({env['cores']} cores, {env.get('cores_usable')} usable); "
            f"Python {env['python']}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(env["versions"].items())),
            f"- cumel source: {_revision(env.get('cumel_source'))}",
            f"- load average (1, 5, 15 min) at start {_loads(env['load_average'])}, at end "
            f"{_loads(env.get('load_average_after'))}"]


def _revision(source):
    if not source:
        return "unknown"
    modified = source["modified"]
    modified = f", uncommitted changes in {', '.join(modified)}" if modified else ""
    return f"commit {source['commit'][:10]}{modified}"


def _gpu(gpu):
    if not gpu:
        return "none"
    return f"{gpu['name']} (CUDA {gpu['cuda']}, driver {gpu['driver_version'] or gpu['driver']})"


def _loads(values):
    return "n/a" if values is None else ", ".join(f"{v:.2f}" for v in values)


def _environment_lines(report):
    env, settings = report["environment"], report["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env["versions"].items()))
    lines = [f"- command: `{env['command']}`",
             f"- when: {env['timestamp']}",
             f"- CPU: {env['cpu']} ({env['cores']} cores); GPU: {_gpu(env['gpu'])}",
             f"- Python {env['python']} (`{env['executable']}`): {versions}",
             f"- cumel source: {_revision(env.get('cumel_source'))}",
             f"- load average (1, 5, 15 min) at start {_loads(env['load_average'])}, at end "
             f"{_loads(env.get('load_average_after'))}"]
    for python, worker in env["workers"].items():
        worker_versions = ", ".join(f"{k} {v}" for k, v in sorted(worker["versions"].items()))
        lines.append(f"- worker Python {worker['python']} (`{python}`): {worker_versions}")
    tolerances = "0 (every iteration runs)" if settings["tolerance_zero"] else \
        "defaults (loss 1e-5, change 1e-8)"
    lines.append(f"- float32; fixed-iteration solvers: max_iter {settings['max_iter']}, tolerances "
                 f"{tolerances}; time: median of {settings['repeats']} runs after one warm-up; "
                 f"speed-up: {settings['baseline']} time per frame / row time per frame")
    if settings["frames_for"]:
        lines.append(f"- cropped batches (--frames-for): {settings['frames_for']}")
    return lines


def markdown(report):
    """The report as Markdown: environment, then one table per workload."""
    lines = ["# cumel benchmark", ""] + _environment_lines(report)
    lines += ["", "mel residual: ||A S - M|| / ||M|| in float64 (A = fb.T); spectrogram error: "
              "||S - S_true|| / ||S_true|| against the true power spectrogram; iterations: the "
              "largest per-frame count or the global count, 0 for direct solvers, "
              "'<= cap' where the library does not report it."]
    for name, batch in report["workloads"].items():
        rows = [row for row in report["rows"] if row["workload"] == name]
        clips = sorted(set(batch["clips"]))
        lines += ["", f"## {name}", "",
                  f"batch {batch['batch'][0]} x {batch['batch'][1]} = {batch['frames']} frames "
                  f"from {', '.join(clips)}", ""]
        lines += _table(rows)
        ratio = _time_ratio(rows, "cumel-nnls", "numpy-lstsq")
        if ratio is not None:
            lines += ["", f"Time ratio cumel-nnls / numpy-lstsq (per frame): {ratio:.3g}"]
    from .mel_sweep import markdown_lines
    lines += markdown_lines(report.get("mel_sweep", []))
    return "\n".join(lines) + "\n"


def write_markdown(report, folder):
    path = Path(folder) / MARKDOWN_NAME
    path.write_text(markdown(report))
    return path


def _not_shown(rows):
    """A panel's note on its rows without a point (errors, skipped)."""
    if not rows:
        return "all rows shown"
    if len(rows) <= NOT_SHOWN_NAMED:
        return "not shown: " + ", ".join(f"{r['implementation']} ({r['backend']}, {r['status']})"
                                         for r in rows)
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return "not shown: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) \
        + " (see results.md)"


def _styles():
    """A colour and marker per implementation, the same in every panel and every run."""
    markers = "osD^vP*Xph"
    return {impl.id: (f"C{k % 10}", markers[k % len(markers)])
            for k, impl in enumerate(IMPLEMENTATIONS)}


def write_plot(report, folder):
    """Log-log scatter, one panel per workload: time per frame against mel residual.

    Returns the path, or None (with the reason in the second element) when matplotlib is not
    importable or nothing was measured.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return None, f"matplotlib is not importable ({exc})"
    names = [name for name in report["workloads"]
             if any(r["workload"] == name and r["status"] == "ok" for r in report["rows"])]
    if not names:
        return None, "no measured rows"
    styles = _styles()
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names) + 0.6, 5.2), squeeze=False)
    handles = {}
    for ax, name in zip(axes[0], names):
        for row in report["rows"]:
            if row["workload"] != name or row["status"] != "ok":
                continue
            color, marker = styles[row["implementation"]]
            label = f"{row['implementation']} ({row['backend']})"
            filled = row["backend"] == "cpu"
            handles[label] = ax.scatter(
                row["seconds_per_frame"] * 1e3, max(row["mel_residual"], 1e-12), s=70,
                marker=marker, color=color if filled else "none", edgecolors=color,
                linewidths=1.5, label=label, zorder=3)
        missing = [row for row in report["rows"]
                   if row["workload"] == name and row["status"] != "ok"]
        batch = report["workloads"][name]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{name}, {batch['frames']} frames\n{_not_shown(missing)}", fontsize=10)
        ax.set_xlabel("time per frame (ms, log)")
        ax.set_ylabel("mel residual ||A S - M|| / ||M|| (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.annotate("better: lower left", xy=(0.03, 0.04), xycoords="axes fraction",
                    fontsize=9, color="0.4")
    env, settings = report["environment"], report["settings"]
    fig.suptitle(f"cumel vs peers, float32, max_iter {settings['max_iter']} "
                 f"(CPU: {env['cpu']}, {env['cores']} cores; filled: CPU, hollow: CUDA)")
    order = {impl.id: k for k, impl in enumerate(IMPLEMENTATIONS)}
    labels = sorted(handles, key=lambda label: (order[label.split(" ")[0]], label))
    columns = min(4, len(labels))
    fig.legend([handles[label] for label in labels], labels, loc="lower center", ncol=columns,
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / columns) + 0.01, 1, 1))
    path = Path(folder) / PLOT_NAME
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, None
