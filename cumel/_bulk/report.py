"""What a run says at the end: the summary line and the ``--report`` JSON, one row per file."""
from __future__ import annotations

import json
import math
import signal
from dataclasses import asdict, dataclass

from .atomic import write_atomic

# "written"; "skipped" (the output was already there); "failed"; "not run" (interrupted);
# "not searched": a folder that could not be searched (unreadable, a symlink loop)
STATUSES = ("written", "skipped", "failed", "not run", "not searched")


@dataclass
class Result:
    """What happened to one file, or to a folder not searched (a row of ``--report``)."""
    input: str
    output: str | None
    status: str                      # one of STATUSES
    frames: int | None = None
    seconds: float | None = None
    mel_residual: float | None = None
    error: str | None = None
    warning: str | None = None       # written, but the mel looked like a log or dB mel


def _counts(results):
    return {s: sum(r.status == s for r in results) for s in STATUSES}


def summary_line(results, seconds, signum=None):
    """One line: counts by status, frames and frames/s; ``signum``: the signal that stopped
    the run (None: not interrupted)."""
    count = _counts(results)
    frames = sum(r.frames or 0 for r in results if r.status == "written")
    head = "cumel: " if signum is None else f"cumel: interrupted ({signal.Signals(signum).name}): "
    folders = f", {count['not searched']} folder(s) not searched" if count["not searched"] else ""
    warned = sum(r.warning is not None for r in results)
    compressed = (f"; {warned} looked like log or dB mels (pass --frontend, or undo the "
                  "compression)" if warned else "")
    return (f"{head}{count['written']} written, {count['skipped']} skipped (already there), "
            f"{count['failed']} failed, {count['not run']} not run{folders}; {frames:,} frames in "
            f"{seconds:.2f} s ({frames / max(seconds, 1e-9):,.0f} frames/s){compressed}")


def _row(result):
    """A report row, valid JSON whatever its values: a non-finite number becomes null, and the
    row's ``non_finite`` names each such field and what it was ("nan", "inf", "-inf")."""
    row, non_finite = asdict(result), {}
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            non_finite[name] = repr(value)
            row[name] = None
    if non_finite:
        row["non_finite"] = non_finite
    return row


def write_report(path, results, seconds, signum, command):
    """``--report``: JSON with the command, totals and one row per file (written atomically).
    Strict JSON (no NaN or Infinity): non-finite numbers are null, and said so per row."""
    rows = [_row(r) for r in sorted(results, key=lambda r: r.input)]
    doc = {"command": command, "interrupted": signum is not None,
           "signal": None if signum is None else signal.Signals(signum).name,
           "seconds": seconds if math.isfinite(seconds) else None,
           "counts": _counts(results),
           "non_finite": ("non-finite numbers are written as null; each such row lists them "
                          "under 'non_finite'") if any("non_finite" in r for r in rows) else None,
           "files": rows}
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
