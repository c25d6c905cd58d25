"""Rows measured in another interpreter: ``python -m bench.worker REQUEST.json RESULT.json``.

A peer that lives in its own virtual environment (MindSpore, PyTorch) is timed there: the main
process writes the batch as ``.npz`` and a request (rows to measure, settings) as JSON into a
temporary folder, starts the worker with the repository root on ``PYTHONPATH`` (cumel and bench
need not be installed there), and reads back ``{"rows": [...], "environment": {...}}``. The
worker measures each row with the same :func:`bench.measure.measure_row` as the main process.
Progress goes to stderr; without RESULT.json the answer is printed on stdout.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STDERR_LINES_KEPT = 20


def run_rows_in(python, batch, pairs, settings, folder, log):
    """Measure ``pairs`` (``[(implementation, backend)]``) on ``batch`` with interpreter ``python``.

    Parameters
    ----------
    python : str
        Path of the interpreter.
    batch : bench.batches.Batch
    pairs : list of (Implementation, str)
    settings : bench.implementations.Settings
    folder : path
        Scratch folder; the ``.npz``, the request and the result go in a new folder inside.
    log : callable
        Receives each line the worker writes on stderr.

    Returns
    -------
    rows : list of dict
        One per pair, in order; an error row for each when the worker fails.
    environment : dict or None
        The worker's interpreter and library versions.
    """
    from .measure import build_row

    folder = Path(tempfile.mkdtemp(prefix=f"{batch.workload.name}-", dir=folder))
    batch_path, request_path = folder / "batch.npz", folder / "request.json"
    result_path = folder / "result.json"
    batch.save(batch_path)
    request_path.write_text(json.dumps({
        "batch": str(batch_path), "settings": settings.to_json(),
        "rows": [[impl.id, backend] for impl, backend in pairs]}))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    tail = collections.deque(maxlen=STDERR_LINES_KEPT)
    try:
        process = subprocess.Popen([python, "-m", "bench.worker", str(request_path),
                                    str(result_path)], cwd=REPO_ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        reason = f"interpreter {python} cannot run: {exc}"
        return [build_row(impl, backend, batch, settings, status="skipped", error=reason)
                for impl, backend in pairs], None
    for line in process.stderr:
        line = line.rstrip("\n")
        tail.append(line)
        log(f"  [worker] {line}")
    code = process.wait()
    if code != 0 or not result_path.exists():
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        reason = f"worker {python} exited with code {code}: {last.strip()}"
        return [build_row(impl, backend, batch, settings, status="error", error=reason)
                for impl, backend in pairs], None
    answer = json.loads(result_path.read_text())
    return answer["rows"], answer["environment"]


def main(argv=None):
    """Measure the rows of a request file; write the answer to RESULT (or stdout)."""
    from . import environment
    from .batches import Batch, quiet_empty_filters
    from .implementations import BY_ID, Settings
    from .measure import measure_row

    parser = argparse.ArgumentParser(prog="python -m bench.worker",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("request", help="request JSON written by the main process")
    parser.add_argument("result", nargs="?", help="where to write the rows (default: stdout)")
    args = parser.parse_args(argv)
    quiet_empty_filters()
    request = json.loads(Path(args.request).read_text())
    batch = Batch.load(request["batch"])
    settings = Settings.from_json(request["settings"])

    def log(line):
        print(line, file=sys.stderr, flush=True)

    rows = [measure_row(BY_ID[impl_id], backend, batch, settings, log)
            for impl_id, backend in request["rows"]]
    answer = json.dumps({"rows": rows, "environment": environment.interpreter()})
    if args.result:
        Path(args.result).write_text(answer)
    else:
        print(answer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
