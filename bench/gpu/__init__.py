"""``python -m bench gpu``: every GPU number in one call, within a time budget.

Run from the repository root on a machine with a GPU (``PYTHONPATH=. python -m bench gpu``). One
process, by default at most :data:`DEFAULT_BUDGET` seconds (under 8 minutes with the start and
the last writes), in stages; a stage that fails is recorded in ``results.json`` (``stages``)
and the others still run:

1. ``environment``: the device, its properties and the figures the bound needs; versions.
2. ``pytest``: ``pytest -m gpu`` in a subprocess (log ``DIR/pytest.log``, summary line in the
   results), with a timeout; while it runs,
3. ``kernels``: the ptxas table of :mod:`bench.kernels` (NVRTC on the CPU).
4. ``stream``: streams at once (:mod:`.streams`): the real-time factor of
   ``cumel.MelStream(frontend="tacotron2", lookahead=3, n_iter=N)`` at N = 8 (32 iterations a
   frame, the default) and 2, for 1, 16, 64 and 256 streams pushed one frame a push (an
   ``(n_streams, 80, 1)`` CuPy array: each push's overlap-add runs over every stream at once),
   beside the same on the CPU (NumPy, ``workers=1``, 1 and 16 streams); wall seconds of the
   pushes and the flush, the device synchronised, x real time = ``streams * frames * 256 /
   22050`` over them, and the latency in ms (``results.json`` ``stream``, a table in
   ``results.md``, a panel of ``results.png``). At most a share of the time left; a series stops
   growing when its next size would not fit it.
5. ``timings``: every GPU path on the standard workloads, timed with CUDA events after a warm-up,
   at batch sizes from 1024 frames doubling up to the largest that fits: cumel's nnls, lstsq,
   torchaudio and mindspore solvers (the SGD ones at a fixed ``max_iter`` with tolerances zero,
   so every iteration runs) on resident CuPy (``cuda``), streamed NumPy (``cuda-host``) and torch
   CUDA tensors (``cuda-torch``); Griffin-Lim and ``mel_to_audio``; forward + backward of
   ``cumel.torch.InverseMelScale`` on torch CUDA tensors (``nnls-grad``: the solve and the
   ``nnls_backward`` kernel); and the peers on the same GPU where importable (``torch-cuda``):
   torchaudio's ``InverseMelScale``, the torchaudio 0.8 SGD loop (:mod:`bench.torch_sgd`),
   torchaudio's ``GriffinLim``, and lstsq + relu forward + backward through torch's autograd
   (``torch-lstsq-grad``, torchaudio 2.x's method). Sizes go up round by round
   over every series, and a series stops growing when its next size would not fit the device or
   the time left (the results say which).
6. Each row of the timings is held against the device (:mod:`bench.bound`): ``bound_frames_per_s`` from the
   kernel's stated cost model and the device's bandwidth and FLOP rate.

``DIR`` (``--out``, default ``bench/results/gpu-<device name>``) receives ``results.json``,
``results.md`` and ``pytest.log``, rewritten after every row, and ``results.png`` after every
round: a run killed midway still leaves its files. ``--quick`` times the smallest size of one
workload with few iterations and 2 streams of 3 frames at ``n_iter=1`` (after ``pytest -m gpu``,
as always), and it runs on the CPU emulator of ``tests/cudasim`` in CI, where the timings mean
nothing and ``results.json`` says ``"emulated": true``.

The package: this module (the command: its arguments and :func:`main`), :mod:`.run` (a
:class:`Run`: results, files, clock, the stages in order, the environment stage),
:mod:`.subprocesses` (``pytest -m gpu`` and the kernel table), :mod:`.streams` (the stream
stage), :mod:`.timings` (the timings stage), :mod:`.series` (a workload's inputs and series),
:mod:`.prepare` (each series' timed call), :mod:`.timers` (CUDA-event timers,
:func:`time_runs`), :mod:`.limits` (the time budget, memory, :class:`Skip`) and :mod:`.machine`
(portable paths and tracebacks, versions, the log).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cumel.workloads import WORKLOADS

from ..batches import quiet_empty_filters
from .limits import DEFAULT_BUDGET, FINISH_RESERVE, GROWTH, HARD_GRACE, BudgetSpent, Skip
from .machine import REPOSITORY, log, portable_traceback
from .prepare import PREPARE
from .run import Run
from .series import (BASE_CHANNELS, CHANNEL_FRAMES, COST_MODEL, CUMEL_BACKENDS, CUMEL_SOLVERS,
                     PEERS, Inputs, Series, cost_models, make_series)
from .subprocesses import KERNELS_TIMEOUT
from .timers import CupyTimer, TorchTimer, time_runs
from .timings import MAX_FRAMES, START_FRAMES

__all__ = ["BASE_CHANNELS", "CHANNEL_FRAMES", "COST_MODEL", "CUMEL_BACKENDS", "CUMEL_SOLVERS",
           "DEFAULT_BUDGET", "FINISH_RESERVE", "FULL", "GROWTH", "HARD_GRACE", "KERNELS_TIMEOUT",
           "MAX_FRAMES", "PEERS", "PREPARE", "QUICK", "REPOSITORY", "START_FRAMES",
           "BudgetSpent", "CupyTimer", "Inputs", "Run", "Series", "Skip", "TorchTimer",
           "build_parser", "cost_models", "load", "log", "main", "make_series", "parse_args",
           "portable_traceback", "time_runs"]

FULL = {"workloads": tuple(WORKLOADS), "max_iter": 100, "n_iter": 32, "repeats": 3,
        "sizes": None, "pytest_timeout": 150.0}
QUICK = {"workloads": ("speech-201x128",), "max_iter": 5, "n_iter": 2, "repeats": 1,
         "sizes": 1, "pytest_timeout": 60.0}


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m bench gpu",
        description="Every GPU number in one call: pytest -m gpu, the kernel table, every GPU "
                    "path and peer timed against the device's bound, within a time budget.")
    p.add_argument("--quick", action="store_true",
                   help="the smallest size of one workload, few iterations (seconds; runs on "
                        "the CPU emulator in CI)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the four files (default bench/results/gpu-<device name>)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"time for the whole run (default {DEFAULT_BUDGET:.0f})")
    p.add_argument("--workload", default=None,
                   help=f"comma list of {', '.join(WORKLOADS)} (default all; --quick: the first)")
    p.add_argument("--audio", default=None, metavar="DIR",
                   help="speech_*.wav / music_*.wav to build the batches from (default: a "
                        "synthetic signal)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="iterations of the SGD solvers and torch-sgd (default 100; --quick 5)")
    p.add_argument("--n-iter", type=int, default=None,
                   help="Griffin-Lim iterations (default 32; --quick 2)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs after the warm-up, median reported (default 3; --quick 1)")
    p.add_argument("--sizes", type=int, default=None, metavar="K",
                   help="at most K batch sizes per series (default: until memory or time ends)")
    p.add_argument("--pytest-timeout", type=float, default=None, metavar="SECONDS",
                   help="time for pytest -m gpu (default 150; --quick 60)")
    p.add_argument("--skip", default="", metavar="STAGES",
                   help="comma list of stages not to run: pytest, kernels, stream, peers")
    return p


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name in ("max_iter", "n_iter", "repeats", "sizes", "pytest_timeout"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    if args.workload is None:
        args.workloads = preset["workloads"]
    else:
        args.workloads = tuple(w.strip() for w in args.workload.split(",") if w.strip())
        unknown = [w for w in args.workloads if w not in WORKLOADS]
        if unknown or not args.workloads:
            parser.error(f"--workload: choose from {', '.join(WORKLOADS)}")
    for name in ("max_iter", "n_iter", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.sizes is not None and args.sizes < 1:
        parser.error("--sizes must be >= 1")
    if args.budget <= 0:
        parser.error("--budget must be positive")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - {"pytest", "kernels", "stream", "peers"}:
        parser.error("--skip: choose from pytest, kernels, stream, peers")
    return args


def main(argv=None, *, hard_exit=False):
    """Run everything; returns 0 when the run reached its end (failures are recorded in the
    results), 1 when no GPU could be used, 2 on bad arguments. ``hard_exit`` (the command line)
    arms a watchdog that writes the files and ends the process if it hangs past the budget."""
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    quiet_empty_filters()
    run = Run(args, argv, started)
    with run.guard(hard_exit):
        run.everything()
    return run.exit_status()


def load(path):
    """A results.json written by this command (for tests and later reading)."""
    return json.loads(Path(path).read_text())
