"""``python -m bench``: time cumel's solvers and the peers on the standard workloads.

For each workload the harness builds one batch (:func:`bench.batches.build_batch`), measures
every selected implementation on every selected backend (:func:`bench.measure.measure_row`, in
this interpreter or in a ``--python-for`` worker), adds speed-ups against the baseline row, and
writes ``results.json``, ``results.md`` and, when matplotlib is importable, ``results.png``
into ``--out``. The Markdown tables are also printed; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cumel.workloads import WORKLOADS

from . import environment, mel_sweep, report
from .batches import build_batch, quiet_empty_filters
from .implementations import (BACKENDS, BASELINE, BY_ID, CUMEL_SOLVERS, IMPLEMENTATIONS, PEERS,
                              Settings, select)
from .measure import add_speedups, measure_row, parse_row_name
from .worker import run_rows_in

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
# (normal, --quick) defaults of the options --quick changes
SIZES = {"frames": (None, 48), "clips": (1, 2), "max_iter": (200, 10), "repeats": (3, 1)}


def _choices(text, allowed, option):
    """Comma list -> tuple in ``allowed`` order; "all" and "none" accepted."""
    text = text.strip().lower()
    if text == "all":
        return tuple(allowed)
    if text == "none":
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}, all, none")
    return tuple(name for name in allowed if name in names)


def _key_value(text, option, convert=str):
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{option} wants KEY=VALUE, got {text!r}")
    if not any(impl.matches(key) for impl in IMPLEMENTATIONS):
        raise argparse.ArgumentTypeError(
            f"{option}: {key!r} names no implementation (use an id such as {BASELINE}, a peer "
            f"name ({', '.join(PEERS)}) or a module such as torch)")
    try:
        return key, convert(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option}: bad value in {text!r}") from None


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark cumel's mel-spectrogram inversion against its peers.",
        epilog="Implementations (row names): " + ", ".join(BY_ID) + ". Peers: "
               + ", ".join(PEERS) + " (numpy, the default baseline, always runs).")
    p.add_argument("--workload", default="all",
                   type=lambda t: _choices(t, tuple(WORKLOADS), "--workload"),
                   help=f"{', '.join(WORKLOADS)} or all (default; comma list accepted)")
    p.add_argument("--audio", metavar="DIR", default=None,
                   help="folder with speech_*.wav / music_*.wav (default: a synthetic signal)")
    p.add_argument("--backend", default="cpu", type=lambda t: _choices(t, BACKENDS, "--backend"),
                   help="cpu, cuda (device-resident), cuda-host (NumPy in and out, streamed), "
                        "cuda-torch (torch CUDA tensors) or a comma list (default cpu); "
                        "without a GPU, cuda rows are "
                        "skipped with the reason")
    p.add_argument("--solvers", default="all",
                   type=lambda t: _choices(t, CUMEL_SOLVERS, "--solvers"),
                   help=f"cumel solvers: {','.join(CUMEL_SOLVERS)}, all (default) or none")
    p.add_argument("--peers", default="all", type=lambda t: _choices(t, PEERS, "--peers"),
                   help=f"{','.join(PEERS)}, all (default) or none")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="scale each batch to about N frames (default: the clips as they are)")
    p.add_argument("--clips", type=int, default=None, metavar="K",
                   help="clips stacked in the batch (default 1)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="iteration cap of cumel's torchaudio/mindspore solvers, torch-sgd and "
                        "MindSpore (default 200)")
    p.add_argument("--tolerance-zero", action="store_true",
                   help="tolerances 0 for those solvers, so that every iteration runs")
    p.add_argument("--repeats", type=int, default=None, metavar="R",
                   help="timed runs after one warm-up; rows report the median (default 3)")
    p.add_argument("--baseline", default=BASELINE, metavar="ROWNAME",
                   help=f"row the speed-ups refer to: an implementation, optionally @backend "
                        f"(default {BASELINE})")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                   help="folder for results.json, results.md, results.png (default bench/out)")
    p.add_argument("--quick", action="store_true",
                   help="tiny batch (48 frames of 2 clips), 1 repeat, max-iter 10: seconds")
    p.add_argument("--python-for", action="append", default=[], metavar="PEER=PYTHON",
                   type=lambda t: _key_value(t, "--python-for"),
                   help="measure PEER's rows with another interpreter, e.g. "
                        "mindspore=<ms-venv>/bin/python (repeatable)")
    p.add_argument("--frames-for", action="append", default=[], metavar="PEER=N",
                   type=lambda t: _key_value(t, "--frames-for", int),
                   help="measure PEER on only about N frames of the batch, for a slow peer "
                        "(repeatable; rows record their frames)")
    p.add_argument("--seed", type=int, default=0, help="start of the SGD solvers (default 0)")
    scaling = p.add_argument_group(
        "scaling", "--scaling: frames/s of nnls against the number of CPU worker processes "
                   "(Dask LocalCluster and the folder CLI) on the first --workload, instead of "
                   "the solver tables (see bench/scaling.py)")
    scaling.add_argument("--scaling", action="store_true", help="run the scaling table")
    scaling.add_argument("--workers", default="1,2", metavar="W,W",
                         help="worker-process counts (default 1,2)")
    scaling.add_argument("--pieces", type=int, default=50, metavar="N",
                         help="files the folder CLI inverts (default 50)")
    scaling.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                         help="Dask time chunk (default: 4 chunks per worker of the largest count)")
    threads = p.add_argument_group(
        "threads", "--threads: frames/s of the CPU nnls against worker threads, and nnls against "
                   "numpy.linalg.lstsq + relu on every clip, both at their defaults, instead of "
                   "the solver tables (see bench/threads.py)")
    threads.add_argument("--threads", nargs="?", const="", default=None, metavar="W,W",
                         help="thread counts of the sweep (default: 1 and every usable core); "
                              "--frames sets the sweep's batch (default 24000)")
    p.add_argument("--mel-sweep", action="store_true",
                   help="also time cumel nnls at n_mels 64, 128, 256, 512 (n_stft 1025) on the "
                        "cpu/cuda backends: the shared-memory cliff of the kernel")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, (normal, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    for name in ("max_iter", "repeats", "clips"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.scaling:
        try:
            workers = [int(w) for w in args.workers.split(",")]
        except ValueError:
            workers = [0]
        if not workers or min(workers) < 1:
            parser.error(f"--workers must be a comma list of positive integers, got {args.workers!r}")
        if args.pieces < 1:
            parser.error("--pieces must be >= 1")
    if args.threads is not None:
        from .threads import parse_threads
        try:
            parse_threads(args.threads or None)
        except ValueError as exc:
            parser.error(str(exc))
    if parse_row_name(args.baseline)[0] not in BY_ID:
        parser.error(f"--baseline: unknown row {args.baseline!r}; choose from {', '.join(BY_ID)}")
    return args


def interpreter_for(impl, python_for):
    """The ``--python-for`` interpreter that measures ``impl``, or None for this one."""
    for key, python in python_for.items():
        if impl.matches(key):
            return python
    return None


def measure_workload(batch, pairs, settings, python_for, scratch, env, log):
    """Rows of one batch, in the order of ``pairs``: local ones here, the rest per worker."""
    rows = {}
    by_python = {}
    for pair in pairs:
        python = interpreter_for(pair[0], python_for)
        if python is None:
            rows[pair] = measure_row(*pair, batch, settings, log)
        else:
            by_python.setdefault(python, []).append(pair)
    for python, group in by_python.items():
        log(f"[{batch.workload.name}] {len(group)} row(s) in {python}")
        worker_rows, worker_env = run_rows_in(python, batch, group, settings, scratch, log)
        rows.update(zip(group, worker_rows))
        if worker_env is not None:
            env["workers"][environment.portable_path(python)] = worker_env
    return [rows[pair] for pair in pairs]


def main(argv=None):
    """Run the benchmark; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    quiet_empty_filters()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    if args.scaling:
        from . import scaling
        return scaling.run(args, argv, log)
    if args.threads is not None:
        from . import threads
        args.threads = args.threads or None
        return threads.run(args, argv, log)

    settings = Settings(max_iter=args.max_iter, tolerance_zero=args.tolerance_zero,
                        repeats=args.repeats, seed=args.seed, frames_for=dict(args.frames_for))
    python_for = dict(args.python_for)
    pairs = select(args.solvers, args.peers, args.backend)
    env = environment.collect(["python", "-m", "bench", *argv])
    results = {"environment": env,
               "settings": {**settings.to_json(), "baseline": args.baseline,
                            "workloads": list(args.workload), "backends": list(args.backend),
                            "solvers": list(args.solvers), "peers": list(args.peers),
                            "audio": environment.portable_path(args.audio), "frames": args.frames,
                            "clips": args.clips,
                            "python_for": {k: environment.portable_path(v)
                                           for k, v in python_for.items()}},
               "workloads": {}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="cumel-bench-") as scratch:
        for name in args.workload:
            batch = build_batch(WORKLOADS[name], args.audio, args.clips, args.frames)
            results["workloads"][name] = batch.describe()
            log(f"[{name}] batch {batch.shape[0]} x {batch.shape[1]} = {batch.frames} frames")
            results["rows"] += measure_workload(batch, pairs, settings, python_for, scratch, env,
                                                log)
        if args.mel_sweep:
            results["mel_sweep"] = mel_sweep.sweep(args.backend, args.frames or 2048,
                                                   args.repeats, log)
    env["load_average_after"] = environment.load_average()
    add_speedups(results["rows"], args.baseline)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(results, out)
    md_path = report.write_markdown(results, out)
    print(report.markdown(results))
    plot_path, why_not = report.write_plot(results, out)
    log(f"wrote {json_path}, {md_path}" + (f", {plot_path}" if plot_path else ""))
    if plot_path is None:
        log(f"plot skipped: {why_not}")
    return 0
