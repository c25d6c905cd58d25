"""What a run says at the end: the summary line and the ``--report`` JSON, one row per file."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .atomic import write_atomic


@dataclass
class Result:
    """What happened to one file (a row of ``--report``)."""
    input: str
    output: str | None
    status: str                      # "written", "skipped", "failed" or "not run"
    frames: int | None = None
    seconds: float | None = None
    mel_residual: float | None = None
    error: str | None = None


def summary_line(results, seconds, interrupted):
    """One line: counts by status, frames and frames/s."""
    count = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed", "not run")}
    frames = sum(r.frames or 0 for r in results if r.status == "written")
    head = "cumel: interrupted: " if interrupted else "cumel: "
    return (f"{head}{count['written']} written, {count['skipped']} skipped (already there), "
            f"{count['failed']} failed, {count['not run']} not run; {frames:,} frames in "
            f"{seconds:.2f} s ({frames / max(seconds, 1e-9):,.0f} frames/s)")


def write_report(path, results, seconds, interrupted, command):
    """``--report``: JSON with the command, totals and one row per file (written atomically)."""
    doc = {"command": command, "interrupted": interrupted, "seconds": seconds,
           "counts": {s: sum(r.status == s for r in results)
                      for s in ("written", "skipped", "failed", "not run")},
           "files": [asdict(r) for r in sorted(results, key=lambda r: r.input)]}
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
