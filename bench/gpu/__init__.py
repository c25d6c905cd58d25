"""``python -m bench gpu``: every GPU number in one call, within a time budget.

Run from the repository root on a machine with a GPU (``PYTHONPATH=. python -m bench gpu``). One
process, by default at most :data:`DEFAULT_BUDGET` seconds (under 8 minutes with the start and
the last writes), in stages; a stage that fails is recorded in ``results.json`` (``stages``)
and the others still run:

1. ``environment``: the device, its properties and the figures the bound needs; versions.
2. ``pytest``: ``pytest -m gpu`` in a subprocess (log ``DIR/pytest.log``, summary line in the
   results), with a timeout; while it runs,
3. ``kernels``: the ptxas table of :mod:`bench.kernels` (NVRTC on the CPU).
4. ``timings``: every GPU path on the standard workloads, timed with CUDA events after a warm-up,
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
5. Each row is held against the device (:mod:`bench.bound`): ``bound_frames_per_s`` from the
   kernel's stated cost model and the device's bandwidth and FLOP rate.

``DIR`` (``--out``, default ``bench/results/gpu-<device name>``) receives ``results.json``,
``results.md`` and ``pytest.log``, rewritten after every row, and ``results.png`` after every
round: a run killed midway still leaves its files. ``--quick`` times the smallest size of one
workload with few iterations (after ``pytest -m gpu``, as always), and it runs on the CPU
emulator of
``tests/cudasim`` in CI, where the timings mean nothing and ``results.json`` says
``"emulated": true``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cumel.workloads import WORKLOADS, read_wav, synthetic_audio

from .. import bound as bounds
from .. import environment, gpu_report
from ..batches import quiet_empty_filters, workload_filterbank
from ..implementations import first_line

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_BUDGET = 420.0           # seconds; 8 minutes leave a minute for start-up and the last writes
FINISH_RESERVE = 15.0            # seconds kept for the last files
HARD_GRACE = 40.0                # past the budget by this much, a hung process writes and exits
CHANNEL_FRAMES = 256             # frames per channel of every batch (a clip of a few seconds)
BASE_CHANNELS = 16               # distinct channels, tiled to the batch size
START_FRAMES = 1024
MAX_FRAMES = 2 ** 24
DEVICE_FRACTION = 0.6            # of the free device memory a batch's estimate may take
HOST_FRACTION = 0.3              # of the available host memory
PLOT_EVERY = 20.0                # seconds between redrawn results.png during the timings
KERNELS_TIMEOUT = 120.0          # seconds for python -m bench kernels (about 15 s on 2 cores)
GROWTH = 2.2                     # predicted cost of the next size / cost of this one
CUMEL_SOLVERS = ("nnls", "lstsq", "torchaudio", "mindspore")
CUMEL_BACKENDS = ("cuda", "cuda-host", "cuda-torch")
PEERS = ("torchaudio.InverseMelScale", "torch-sgd", "torchaudio.GriffinLim", "torch-lstsq-grad")
# which cost model bounds which row (peers: the cumel kernel computing the same thing)
COST_MODEL = {"nnls": "nnls_solve", "lstsq": "lstsq_apply", "torchaudio": "torchaudio_sgd",
              "mindspore": "mindspore_gd", "griffinlim": "griffinlim_iteration",
              "torchaudio.InverseMelScale": "lstsq_apply", "torch-sgd": "torchaudio_sgd",
              "torchaudio.GriffinLim": "griffinlim_iteration", "torch-lstsq-grad": "lstsq_apply"}
FULL = {"workloads": tuple(WORKLOADS), "max_iter": 100, "n_iter": 32, "repeats": 3,
        "sizes": None, "pytest_timeout": 150.0}
QUICK = {"workloads": ("speech-201x128",), "max_iter": 5, "n_iter": 2, "repeats": 1,
         "sizes": 1, "pytest_timeout": 60.0}


class BudgetSpent(BaseException):
    """Raised in the main thread when the time budget runs out (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""


class Skip(Exception):
    """A series that cannot run here (library missing, no torch GPU): a skipped row."""


# -- the one command --------------------------------------------------------------------------------

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
                   help="comma list of stages not to run: pytest, kernels, peers")
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
    if args.skip - {"pytest", "kernels", "peers"}:
        parser.error("--skip: choose from pytest, kernels, peers")
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


# -- a run ---------------------------------------------------------------------------------------

def log(line):
    print(line, file=sys.stderr, flush=True)


class Run:
    """State of one ``bench gpu`` run: its results dictionary, files and clock."""

    def __init__(self, args, argv, started):
        self.args, self.argv, self.started = args, argv, started
        self.children = []           # subprocesses to end if the run stops early
        self.last_save = self.last_plot = -math.inf
        self.deadline = started + args.budget
        self.cupy = None
        self.device = None
        self.out = None
        self.lock = threading.Lock()
        self.results = {
            "emulated": False, "command": environment.portable_command(
                ["python", "-m", "bench", "gpu", *argv]),
            "environment": None, "device": None,
            "settings": {"workloads": list(args.workloads), "max_iter": args.max_iter,
                         "n_iter": args.n_iter, "repeats": args.repeats,
                         "start_frames": START_FRAMES, "sizes": args.sizes,
                         "channel_frames": CHANNEL_FRAMES, "budget_s": args.budget,
                         "audio": environment.portable_path(args.audio) if args.audio else None,
                         "dtype": "float32", "quick": args.quick},
            "stages": [], "pytest": None, "kernels": None, "cost_models": None,
            "series": [], "rows": [], "budget": {"seconds": args.budget, "spent": None,
                                                 "stopped": None}}

    def left(self):
        return self.deadline - time.monotonic()

    # -- files
    def save(self, plot=False, throttle=0.0):
        """Write results.json and results.md (and results.png) atomically; with ``throttle``,
        only if the last write is older than that many seconds (rows come fast at small
        sizes; a killed run loses at most those seconds of rows)."""
        if self.out is None:
            return
        now = time.monotonic()
        if throttle and now - self.last_save < throttle:
            return
        if plot and throttle and now - self.last_plot < PLOT_EVERY:
            plot = False
        with self.lock:
            self.last_save = now
            if plot:
                self.last_plot = now
            self.results["budget"]["spent"] = round(time.monotonic() - self.started, 1)
            gpu_report.write_json(self.results, self.out)
            gpu_report.write_markdown(self.results, self.out)
            if plot:
                try:
                    self.results["plot"] = gpu_report.write_plot(self.results, self.out)
                except Exception as exc:  # noqa: BLE001 - a plot that fails leaves the numbers
                    self.results["plot"] = f"not drawn: {type(exc).__name__}: {first_line(exc)}"
                    gpu_report.write_json(self.results, self.out)

    # -- stages
    @contextlib.contextmanager
    def stage(self, name):
        """Run a stage: its time and outcome go to ``stages``; an exception is recorded, not
        raised (BudgetSpent is recorded and raised)."""
        entry = {"name": name, "status": "running", "seconds": None, "note": None, "error": None}
        self.results["stages"].append(entry)
        t0 = time.monotonic()
        log(f"[bench gpu] {name} ...")
        try:
            yield entry
            if entry["status"] == "running":
                entry["status"] = "ok"
        except BudgetSpent:
            entry["status"], entry["error"] = "stopped", "time budget spent"
            raise
        except Skip as exc:
            entry["status"], entry["note"] = "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001 - a failing stage is a result; the rest runs
            entry["status"] = "error"
            entry["error"] = f"{type(exc).__name__}: {first_line(exc)}"
            entry["traceback"] = portable_traceback(traceback.format_exc(limit=8))
            log(f"[bench gpu] {name} failed: {entry['error']}")
        finally:
            entry["seconds"] = round(time.monotonic() - t0, 2)
            log(f"[bench gpu] {name}: {entry['status']} ({entry['seconds']} s)"
                + (f": {entry['note']}" if entry["note"] else ""))
            self.save()

    @contextlib.contextmanager
    def guard(self, hard_exit):
        """SIGALRM at the deadline raises :class:`BudgetSpent` in the main thread; with
        ``hard_exit`` a watchdog thread ends a process still running ``HARD_GRACE`` later."""
        previous = None
        armed = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

        def alarm(signum, frame):
            raise BudgetSpent()

        if armed:
            previous = signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, max(0.01, self.left() - FINISH_RESERVE))
        watchdog = None
        if hard_exit:
            watchdog = threading.Timer(max(1.0, self.left() + HARD_GRACE), self._hard_exit)
            watchdog.daemon = True
            watchdog.start()
        try:
            yield
        except BudgetSpent:
            self.results["budget"]["stopped"] = "time budget spent"
            log("[bench gpu] time budget spent: stopping and writing the results")
        finally:
            if armed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            self.stop_children()
            self.finish()
            if watchdog is not None:
                watchdog.cancel()

    def _hard_exit(self):
        self.results["budget"]["stopped"] = (f"the process hung past the budget by "
                                             f"{HARD_GRACE:.0f} s and was ended")
        with contextlib.suppress(Exception):
            self.save()
        log("[bench gpu] hung past the budget: files written, exiting")
        os._exit(3)

    def exit_status(self):
        if self.results.get("no_gpu"):
            return 1
        return 0

    def everything(self):
        with self.stage("environment") as entry:
            self.environment(entry)
        if self.out is None:
            self.open_out(self.device.name if self.device else "none")
        # pytest and the kernel table run side by side, each in a subprocess of its own (both
        # are CPU work or short GPU tests; the timings wait for both)
        started = {}
        for name, start in (("pytest", self.start_pytest), ("kernels", self.start_kernels)):
            with self.stage(name) as entry:
                if name in self.args.skip:
                    raise Skip(f"--skip {name}")
                started[name] = start(entry)
        if "pytest" in started:
            with self.stage("pytest-wait") as entry:
                self.wait_pytest(started["pytest"], entry)
        if "kernels" in started:
            with self.stage("kernels-wait") as entry:
                self.wait_kernels(started["kernels"], entry)
        with self.stage("timings") as entry:
            self.timings(entry)

    def finish(self):
        self.save(plot=True)
        if self.out is not None:
            log(f"[bench gpu] wrote {environment.portable_path(self.out)}: "
                + ", ".join(sorted(p.name for p in self.out.iterdir() if p.is_file())))

    # -- 1. environment
    def environment(self, entry):
        try:
            env = environment.collect(["python", "-m", "bench", "gpu", *self.argv])
            env["versions"]["cupy"] = _cupy_version()
            for library in ("torch", "torchaudio"):
                env["versions"].setdefault(library, "not installed")
        except Exception as exc:  # noqa: BLE001 - versions missing is no reason to stop
            env = {"error": f"{type(exc).__name__}: {first_line(exc)}", "versions": {}}
        self.results["environment"] = env
        try:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - no CuPy or no driver: recorded, rest still runs
            count, cupy = 0, None
            entry["note"] = f"no usable GPU through CuPy: {type(exc).__name__}: {first_line(exc)}"
        self.results["emulated"] = bool(cupy is not None and hasattr(cupy, "cudasim"))
        if cupy is None or count == 0:
            self.results["no_gpu"] = True
            entry["note"] = entry["note"] or "CuPy sees no CUDA device"
            self.open_out("none")
            return
        self.cupy = cupy
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        attributes = {}
        for name in ("ClockRate", "MemoryClockRate", "GlobalMemoryBusWidth", "MultiProcessorCount"):
            with contextlib.suppress(Exception):
                attributes[name] = cupy.cuda.runtime.deviceGetAttribute(
                    getattr(cupy.cuda.runtime, f"cudaDevAttr{name}"), dev.id)
        self.device = bounds.device_model(props, attributes)
        free, total = cupy.cuda.runtime.memGetInfo()
        self.results["device"] = {
            **self.device.to_json(), "memory_total": int(total), "memory_free": int(free),
            "properties": {k: v for k, v in props.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)},
            "attributes": attributes}
        gpu = env.get("gpu") or {}
        env["gpu"] = {**gpu, "name": self.device.name,
                      "driver": _cuda_version(cupy.cuda.runtime.driverGetVersion()),
                      "cuda": _cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
                      "emulated": self.results["emulated"]}
        self.open_out(self.device.name)
        entry["note"] = (f"{self.device.name}: {self.device.sm_count} SMs, "
                         f"{self.device.clock_hz / 1e9:.2f} GHz, "
                         f"{self.device.memory_bandwidth / 1e12:.2f} TB/s"
                         + (" (emulated)" if self.results["emulated"] else ""))

    def open_out(self, device_name):
        if self.args.out is not None:
            out = Path(self.args.out)
        else:
            slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "none"
            out = REPOSITORY / "bench" / "results" / f"gpu-{slug}"
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.results["out"] = environment.portable_path(out)

    # -- 2. pytest
    def start_pytest(self, entry):
        timeout = min(self.args.pytest_timeout, max(10.0, 0.35 * self.left()))
        entry["note"] = f"started (timeout {timeout:.0f} s)"
        # the child writes it; closed in wait_pytest or stop_children
        log_file = open(self.out / "pytest.log", "w")  # noqa: SIM115
        command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                   "-rs", "tests"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY),
                                                          env.get("PYTHONPATH")]))
        log_file.write(f"$ {environment.portable_command(command)}\n")
        log_file.flush()
        proc = subprocess.Popen(command, cwd=REPOSITORY, stdout=log_file,
                                stderr=subprocess.STDOUT, env=env)
        self.children.append(proc)
        return proc, log_file, time.monotonic() + timeout, timeout

    def stop_children(self):
        """End the subprocesses still running (the budget ran out while they ran)."""
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                if proc.args[-1] == "tests":
                    self.results["pytest"] = {"returncode": None, "log": "pytest.log",
                                              "summary": "ended unfinished: the time budget "
                                                         "ran out"}
        self.children.clear()

    def wait_pytest(self, started, entry):
        proc, log_file, until, timeout = started
        try:
            proc.wait(timeout=max(0.1, until - time.monotonic()))
            status = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = None
        finally:
            log_file.close()
        text = (self.out / "pytest.log").read_text(errors="replace")
        summary = _pytest_summary(text)
        if status is None:
            summary = f"timed out after {timeout:.0f} s" + (f" ({summary})" if summary else "")
        self.results["pytest"] = {"returncode": status, "summary": summary,
                                  "log": "pytest.log"}
        entry["note"] = summary
        if status != 0:                   # 5 too: no gpu test was collected, none ran
            entry["status"] = "failed"

    # -- 3. kernels
    def start_kernels(self, entry):
        """``python -m bench kernels`` in a subprocess (NVRTC in a process of its own: a crash
        there cannot take the run down, and it never sees a stand-in ``cupy``)."""
        folder = Path(tempfile.mkdtemp(prefix="cumel-bench-kernels-"))
        command = [sys.executable, "-m", "bench", "kernels", "--out", str(folder)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY),
                                                          env.get("PYTHONPATH")]))
        proc = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        self.children.append(proc)
        entry["note"] = "started"
        timeout = min(KERNELS_TIMEOUT, max(10.0, 0.3 * self.left()))
        return proc, folder, time.monotonic() + timeout, timeout

    def wait_kernels(self, started, entry):
        from .. import kernels
        proc, folder, until, timeout = started
        try:
            try:
                _, stderr = proc.communicate(timeout=max(0.1, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise RuntimeError(f"python -m bench kernels timed out after {timeout:.0f} s") \
                    from None
            if proc.returncode == 2:
                raise Skip(stderr.strip().splitlines()[-1] if stderr.strip() else "unavailable")
            if proc.returncode != 0:
                raise RuntimeError(f"python -m bench kernels exited with {proc.returncode}: "
                                   + (stderr.strip().splitlines() or ["?"])[-1])
            result = json.loads((folder / "kernels.json").read_text())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.results["kernels"] = result
        bad = [f"{r['kernel']} {r['arch']}" for r in result["rows"]
               if not r["error"] and kernels.has_spills_or_stack(r)]
        entry["note"] = (f"{len(result['rows'])} kernel x arch rows, NVRTC {result['nvrtc']}; "
                         + (f"SPILLS OR STACK: {', '.join(bad)}" if bad else "no spills, no stack"))

    # -- 4. timings
    def timings(self, entry):
        self.results["cost_models"] = {name: vars(model) for name, model in
                                       cost_models().items()}
        if self.cupy is None:
            raise Skip("no usable GPU")
        series, failed = [], []
        for name in self.args.workloads:
            try:
                inputs = Inputs(WORKLOADS[name], self.args.audio)
            except Exception as exc:  # noqa: BLE001 - one workload's inputs; the others run
                failed.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
                continue
            series += make_series(inputs, self.args, skip_peers="peers" in self.args.skip)
        if failed:
            self.results["input_errors"] = failed
        self.results["series"] = [s.describe() for s in series]
        level = 0
        while True:
            alive = [s for s in series if s.stopped is None]
            if not alive:
                break
            frames = START_FRAMES * 2 ** level
            for s in alive:
                self.measure_next(s, frames, level)
                self.results["series"] = [x.describe() for x in series]
            self.save(plot=True, throttle=1.0)
            level += 1
        spent = [s for s in series if s.stopped == "time budget spent"]
        entry["note"] = (f"{sum(r['status'] == 'ok' for r in self.results['rows'])} rows measured"
                         + (f"; {len(spent)} series stopped growing when the time was spent"
                            if spent else "")
                         + (f"; no inputs for {'; '.join(failed)}" if failed else ""))

    def measure_next(self, s, frames, level):
        if self.args.sizes is not None and level >= self.args.sizes:
            s.stopped = f"--sizes {self.args.sizes}"
            return
        if frames > MAX_FRAMES:
            s.stopped = f"reached {MAX_FRAMES} frames"
            return
        predicted = GROWTH * s.last_cost if s.last_cost else 0.0
        if time.monotonic() + predicted > self.deadline - FINISH_RESERVE:
            s.stopped = "time budget spent"
            return
        try:
            fits = s.fits(frames, self.cupy)
        except Exception as exc:  # noqa: BLE001 - the device cannot even say its free memory
            fits = f"device memory unknown: {type(exc).__name__}: {first_line(exc)}"
        if fits is not True:
            s.stopped = fits
            return
        t0 = time.monotonic()
        row = s.new_row(frames)
        try:
            timing = s.measure(frames, self.cupy, self.args)
            row.update(timing)
            row["status"] = "ok"
        except BudgetSpent:
            row.update(status="stopped", error="time budget spent")
            s.stopped = "time budget spent"
            self.add_row(row)
            raise
        except Skip as exc:
            row.update(status="skipped", error=str(exc))
            s.stopped = "skipped"
        except Exception as exc:  # noqa: BLE001 - a failing series is a result
            row.update(status="error", error=f"{type(exc).__name__}: {first_line(exc)}")
            s.stopped = "error"
            if _is_out_of_memory(exc):
                row["error"] += " (out of device memory: the largest size that fits is below)"
                s.stopped = "out of device memory"
        finally:
            with contextlib.suppress(Exception):
                s.release(self.cupy)
        s.last_cost = time.monotonic() - t0
        if row["status"] == "ok":
            self.hold_against_device(s, row)
        self.add_row(row)

    def add_row(self, row):
        self.results["rows"].append(row)
        log(gpu_report.describe(row))
        self.save(throttle=2.0)

    def hold_against_device(self, s, row):
        if self.device is None:
            return
        try:
            rate = s.bound(self.device, row, self.results["rows"])
        except Exception as exc:  # noqa: BLE001 - the rate stands without its bound
            row["bound"] = {"error": f"{type(exc).__name__}: {first_line(exc)}"}
            return
        row["bound_frames_per_s"] = rate.get("frames_per_s")
        row["bound"] = rate
        if row["bound_frames_per_s"]:
            row["measured_over_bound"] = row["frames_per_s"] / row["bound_frames_per_s"]


# -- inputs ----------------------------------------------------------------------------------------

class Inputs:
    """A workload's base batch (:data:`BASE_CHANNELS` channels of :data:`CHANNEL_FRAMES` frames,
    float32), tiled to any size on the host or the device."""

    def __init__(self, workload, audio_dir=None):
        self.workload = workload
        need = BASE_CHANNELS * CHANNEL_FRAMES
        seconds = (need + 2) * workload.hop / workload.sample_rate
        if audio_dir:
            clips = sorted(Path(audio_dir).glob(workload.clips + "*.wav"))
            if not clips:
                raise FileNotFoundError(f"no {workload.clips}*.wav in {audio_dir}")
            signal_ = np.concatenate([read_wav(p)[0] for p in clips])
            repeats = -(-int(seconds * workload.sample_rate) // signal_.size)
            signal_ = np.tile(signal_, repeats)
            self.source = f"{len(clips)} clip(s) of {environment.portable_path(audio_dir)}"
        else:
            signal_ = synthetic_audio(seconds, workload.sample_rate)
            self.source = "synthetic signal (cumel.workloads.synthetic_audio)"
        spec, mel = workload.pair(signal_)
        spec, mel = spec[:, :need], mel[:, :need]
        self.spec = np.ascontiguousarray(
            spec.reshape(workload.n_stft, BASE_CHANNELS, CHANNEL_FRAMES).transpose(1, 0, 2))
        self.mel = np.ascontiguousarray(
            mel.reshape(workload.n_mels, BASE_CHANNELS, CHANNEL_FRAMES).transpose(1, 0, 2))

    @staticmethod
    def shape(frames):
        """``(B, T)`` of a batch of ``frames`` frames."""
        T = min(CHANNEL_FRAMES, frames)
        return frames // T, T

    def host(self, kind, frames):
        base = self.mel if kind == "mel" else self.spec
        B, T = self.shape(frames)
        reps = -(-B // base.shape[0])
        return np.ascontiguousarray(np.tile(base[:, :, :T], (reps, 1, 1))[:B])

    def cupy(self, cupy, kind, frames):
        base = cupy.asarray(self.mel if kind == "mel" else self.spec)
        B, T = self.shape(frames)
        reps = -(-B // base.shape[0])
        return cupy.ascontiguousarray(cupy.tile(base[:, :, :T], (reps, 1, 1))[:B])

    def torch(self, torch, kind, frames):
        base = torch.from_numpy(self.mel if kind == "mel" else self.spec).to("cuda")
        B, T = self.shape(frames)
        reps = -(-B // base.shape[0])
        return base[:, :, :T].repeat(reps, 1, 1)[:B].contiguous()


# -- series ----------------------------------------------------------------------------------------

@dataclass
class Series:
    """One line of the plot: a solver on a backend and workload, measured at growing sizes."""
    inputs: Inputs
    solver: str
    backend: str
    label: str
    stopped: str | None = None
    last_cost: float = 0.0
    sizes: list = field(default_factory=list)
    # iterations per frame and mel residual, from the first size's warm-up (return_info=True);
    # the batches of every size tile the same frames, so later sizes reuse them
    steps: float | None = None
    mel_residual: float | None = None
    measured_at: int | None = None

    @property
    def workload(self):
        return self.inputs.workload

    def describe(self):
        return {"workload": self.workload.name, "solver": self.solver, "backend": self.backend,
                "label": self.label, "sizes": list(self.sizes), "stopped": self.stopped}

    def new_row(self, frames):
        B, T = self.inputs.shape(frames)
        self.sizes.append(frames)
        return {"workload": self.workload.name, "solver": self.solver, "backend": self.backend,
                "label": self.label, "n_frames": B * T, "batch": [B, T], "status": None,
                "error": None, "frames_per_s": None, "bound_frames_per_s": None,
                "measured_over_bound": None, "seconds": None}

    # memory: bytes a frame takes on the device and on the host (estimates, see fits)
    def bytes_per_frame(self):
        w = self.workload
        M, F, item = w.n_mels, w.n_stft, 4
        griffinlim = (24 * F + 6 * w.hop) * item
        device = {"nnls": (M + F) * item + 16, "lstsq": (M + F) * item + 16,
                  "torchaudio": M * item + 4 * F * item + 16, "mindspore": M * item + 5 * F * item,
                  "griffinlim": griffinlim, "mel_to_audio": griffinlim + (M + 2 * F) * item,
                  "torchaudio.InverseMelScale": 3 * (M + F) * item,
                  "torch-sgd": M * item + 8 * F * item,
                  "torchaudio.GriffinLim": griffinlim,
                  # the mel, its gradient, the answer (kept for the backward) and its gradient
                  "nnls-grad": 2 * (M + F) * item + 16, "torch-lstsq-grad": 4 * (M + F) * item,
                  }[self.solver]
        if self.backend == "cuda-host" and self.solver in ("nnls", "lstsq"):
            device = 0                                   # streamed in chunks of bounded size
        host = 2 * (M + F) * item if self.backend == "cuda-host" else 0
        return device, host

    def fits(self, frames, cupy):
        """True, or why a batch of ``frames`` would not fit."""
        device, host = self.bytes_per_frame()
        free, _ = cupy.cuda.runtime.memGetInfo()
        free += cupy.get_default_memory_pool().free_bytes()
        if device * frames > DEVICE_FRACTION * free:
            return f"largest that fits the device: {frames // 2} frames"
        if host * frames > HOST_FRACTION * _host_available():
            return f"largest that fits host memory: {frames // 2} frames"
        return True

    def release(self, cupy):
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
        if self.backend in ("cuda-torch", "torch-cuda") and "torch" in sys.modules:
            with contextlib.suppress(Exception):
                sys.modules["torch"].cuda.empty_cache()

    # timing
    def measure(self, frames, cupy, args):
        prepare = PREPARE[self.solver]
        run, info, timer = prepare(self, frames, cupy, args)
        if self.measured_at is None:
            warm_up = info
        else:
            def warm_up():
                return run(), self.steps, self.mel_residual
        row = time_runs(run, warm_up, timer, args.repeats, frames)
        if self.measured_at is None:
            self.steps, self.mel_residual, self.measured_at = (row["steps"], row["mel_residual"],
                                                               frames)
        row["steps_measured_at"] = self.measured_at
        return row

    def bound(self, device, row, rows):
        w = self.workload
        shape = {"n_mels": w.n_mels, "n_freqs": w.n_stft, "n_fft": w.n_fft, "hop": w.hop}
        models = cost_models()
        if self.solver == "mel_to_audio":
            steps = _nnls_steps(rows, w.name, row["n_frames"])
            nnls = bounds.bound(models["nnls_solve"], device, steps, 4, **shape)
            gl = bounds.bound(models["griffinlim_iteration"], device, row["steps"], 4, **shape)
            return {"frames_per_s": bounds.combined(nnls["frames_per_s"], gl["frames_per_s"]),
                    "limit": f"nnls {nnls['limit']}, Griffin-Lim {gl['limit']}",
                    "nnls_steps": steps, "models": ["nnls_solve", "griffinlim_iteration"]}
        if self.solver == "nnls-grad":
            forward = bounds.bound(models["nnls_solve"], device, row["steps"] or 0, 4, **shape)
            backward = bounds.bound(models["nnls_backward"], device, 0, 4, **shape)
            return {"frames_per_s": bounds.combined(forward["frames_per_s"],
                                                    backward["frames_per_s"]),
                    "limit": f"forward {forward['limit']}, backward {backward['limit']}",
                    "models": ["nnls_solve", "nnls_backward"]}
        model = models[COST_MODEL[self.solver]]
        result = bounds.bound(model, device, row["steps"] or 0, 4, **shape)
        return {**result, "model": model.name}


@functools.lru_cache(maxsize=1)
def cost_models():
    """The kernels' stated cost models (read once per process)."""
    return bounds.kernel_cost_models()


def make_series(inputs, args, skip_peers=False):
    """Every series of a workload, in measuring order (nnls first: mel_to_audio's bound reads
    its step count)."""
    labels = {"nnls": "cumel nnls", "lstsq": "cumel lstsq",
              "torchaudio": f"cumel torchaudio (max_iter {args.max_iter}, tolerances 0)",
              "mindspore": f"cumel mindspore (max_iter {args.max_iter}, tolerances 0)"}
    out = [Series(inputs, solver, backend, labels[solver])
           for solver in CUMEL_SOLVERS for backend in CUMEL_BACKENDS]
    out += [Series(inputs, "griffinlim", backend, f"cumel GriffinLim (n_iter {args.n_iter})")
            for backend in CUMEL_BACKENDS]
    out += [Series(inputs, "mel_to_audio", backend,
                   f"cumel mel_to_audio (nnls + {args.n_iter} Griffin-Lim iterations)")
            for backend in CUMEL_BACKENDS]
    out.append(Series(inputs, "nnls-grad", "cuda-torch",
                      "cumel.torch.InverseMelScale forward + backward (nnls)"))
    if not skip_peers:
        out += [Series(inputs, "torchaudio.InverseMelScale", "torch-cuda",
                       "torchaudio InverseMelScale (lstsq, driver gels)"),
                Series(inputs, "torch-sgd", "torch-cuda",
                       f"torchaudio 0.8 SGD loop in PyTorch (max_iter {args.max_iter}, "
                       "tolerances 0)"),
                Series(inputs, "torchaudio.GriffinLim", "torch-cuda",
                       f"torchaudio GriffinLim (n_iter {args.n_iter})"),
                Series(inputs, "torch-lstsq-grad", "torch-cuda",
                       "lstsq + relu forward + backward in torch (driver gels)")]
    return out


def _nnls_steps(rows, workload, frames):
    """Mean Newton steps of the nnls rows of this workload (the same frames at the closest
    size), for mel_to_audio's bound; 3 (typical) when none was measured."""
    found = [r for r in rows if r["workload"] == workload and r["solver"] == "nnls"
             and r["status"] == "ok" and r.get("steps") is not None]
    if not found:
        return 3.0
    return min(found, key=lambda r: abs(math.log2(r["n_frames"] / frames)))["steps"]


# -- preparing one measurement: (run, info, timer) ---------------------------------------------------
# run(): one timed call; info(): the warm-up call, returning (result, steps per frame, residual);
# timer: CupyTimer or TorchTimer.

def _torch_cuda(cupy):
    """torch, if it can give CUDA tensors that this CuPy can take; else :class:`Skip`."""
    if hasattr(cupy, "cudasim"):
        raise Skip("the CUDA emulator stands in for CuPy only: no torch CUDA tensors")
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - not installed or broken: the row says so
        raise Skip(f"torch is not importable ({type(exc).__name__}: {first_line(exc)})") from None
    if not torch.cuda.is_available():
        raise Skip("torch.cuda.is_available() is False")
    return torch


def _cumel_solver(s, frames, cupy, args):
    import cumel
    w = s.workload
    fixed = {}
    if s.solver in ("torchaudio", "mindspore"):
        fixed = {"max_iter": args.max_iter, "tolerance_loss": 0.0, "tolerance_change": 0.0}
    inv = cumel.InverseMelScale(**w.inverse_kwargs(), solver=s.solver, seed=0, device="cuda",
                                **fixed)
    mel, timer = _batch(s, "mel", frames, cupy)

    def info():
        S, solve_info = inv(mel, return_info=True)
        steps = float(np.mean(np.asarray(solve_info.iterations)))
        return S, (steps if s.solver != "lstsq" else 0.0), float(solve_info.total_mel_residual)

    return (lambda: inv(mel)), info, timer


def _batch(s, kind, frames, cupy):
    """The batch of a series' backend and its timer: CuPy (``cuda``), NumPy (``cuda-host``) or
    torch CUDA tensors (``cuda-torch``)."""
    if s.backend == "cuda":
        return s.inputs.cupy(cupy, kind, frames), CupyTimer(cupy)
    if s.backend == "cuda-host":
        return s.inputs.host(kind, frames), CupyTimer(cupy)
    torch = _torch_cuda(cupy)
    return s.inputs.torch(torch, kind, frames), TorchTimer(torch)


def _griffinlim(s, frames, cupy, args):
    import cumel
    w = s.workload
    gl = cumel.GriffinLim(w.n_fft, n_iter=args.n_iter, hop_length=w.hop, seed=0, device="cuda")
    spec, timer = _batch(s, "spec", frames, cupy)

    def info():
        return gl(spec), float(args.n_iter), None

    return (lambda: gl(spec)), info, timer


def _mel_to_audio(s, frames, cupy, args):
    import cumel
    w = s.workload
    mel, timer = _batch(s, "mel", frames, cupy)

    def run():
        return cumel.mel_to_audio(mel, w.n_fft, sample_rate=w.sample_rate, hop_length=w.hop,
                                  n_iter=args.n_iter, f_min=w.f_min, f_max=w.f_max, norm=w.norm,
                                  mel_type=w.mel_scale, seed=0, device="cuda")

    return run, (lambda: (run(), float(args.n_iter), None)), timer


def _torchaudio_inverse(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    try:
        import torchaudio
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"torchaudio is not importable ({type(exc).__name__}: {first_line(exc)})") from None
    w = s.workload
    transform = torchaudio.transforms.InverseMelScale(
        n_stft=w.n_stft, n_mels=w.n_mels, sample_rate=w.sample_rate, f_min=w.f_min,
        f_max=w.f_max, norm=w.norm, mel_scale=w.mel_scale, driver="gels").to("cuda")
    mel = s.inputs.torch(torch, "mel", frames)

    def run():
        with torch.no_grad():
            return transform(mel)

    return run, (lambda: (run(), 0.0, None)), TorchTimer(torch)


def _torch_sgd(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    from ..torch_sgd import inverse_mel_scale_sgd
    mel = s.inputs.torch(torch, "mel", frames)
    fb = torch.from_numpy(workload_filterbank(s.workload, np.float32)).to("cuda")

    def run():
        torch.manual_seed(0)
        return inverse_mel_scale_sgd(mel, fb, max_iter=args.max_iter, tolerance_loss=0.0,
                                     tolerance_change=0.0)

    def info():
        S, iterations = run()
        return S, float(iterations), None

    return run, info, TorchTimer(torch)


def _torchaudio_griffinlim(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    try:
        import torchaudio
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"torchaudio is not importable ({type(exc).__name__}: {first_line(exc)})") from None
    w = s.workload
    transform = torchaudio.transforms.GriffinLim(n_fft=w.n_fft, n_iter=args.n_iter,
                                                 hop_length=w.hop, power=2.0).to("cuda")
    spec = s.inputs.torch(torch, "spec", frames)

    def run():
        with torch.no_grad():
            return transform(spec)

    return run, (lambda: (run(), float(args.n_iter), None)), TorchTimer(torch)


def _gradient_run(torch, solve, mel):
    """``run()``: forward and backward of ``solve`` from ``mel`` (a fixed upstream gradient)."""
    with torch.no_grad():
        upstream = torch.ones_like(solve(mel))

    def run():
        leaf = mel.detach().requires_grad_()
        S = solve(leaf)
        (grad,) = torch.autograd.grad(S, leaf, upstream)
        return grad
    return run


def _cumel_torch_grad(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    import cumel.torch
    w = s.workload
    inv = cumel.torch.InverseMelScale(w.n_stft, w.n_mels, w.sample_rate, w.f_min, w.f_max,
                                      w.norm, w.mel_scale).to("cuda")
    mel = s.inputs.torch(torch, "mel", frames)
    run = _gradient_run(torch, inv, mel)

    def info():
        import cumel
        with torch.no_grad():
            _, solve_info = cumel.InverseMelScale(**w.inverse_kwargs())(mel, return_info=True)
        return (run(), float(np.mean(np.asarray(solve_info.iterations))),
                float(solve_info.total_mel_residual))

    return run, info, TorchTimer(torch)


def _torch_lstsq_grad(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    A = torch.from_numpy(workload_filterbank(s.workload, np.float32).T.copy()).to("cuda")[None]
    mel = s.inputs.torch(torch, "mel", frames)
    run = _gradient_run(torch, lambda m: torch.relu(torch.linalg.lstsq(A, m).solution), mel)
    return run, (lambda: (run(), 0.0, None)), TorchTimer(torch)


PREPARE = {"nnls": _cumel_solver, "lstsq": _cumel_solver, "torchaudio": _cumel_solver,
           "mindspore": _cumel_solver, "griffinlim": _griffinlim, "mel_to_audio": _mel_to_audio,
           "torchaudio.InverseMelScale": _torchaudio_inverse, "torch-sgd": _torch_sgd,
           "torchaudio.GriffinLim": _torchaudio_griffinlim, "nnls-grad": _cumel_torch_grad,
           "torch-lstsq-grad": _torch_lstsq_grad}


class CupyTimer:
    """CUDA events on CuPy's current stream around a call."""

    def __init__(self, cupy):
        self.cupy = cupy

    def __call__(self, run):
        cupy = self.cupy
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        wall = time.perf_counter()
        start.record()
        result = run()
        end.record()
        end.synchronize()
        wall = time.perf_counter() - wall
        return cupy.cuda.get_elapsed_time(start, end) / 1e3, wall, result

    def synchronize(self):
        self.cupy.cuda.get_current_stream().synchronize()


class TorchTimer:
    """CUDA events on torch's current stream around a call."""

    def __init__(self, torch):
        self.torch = torch

    def __call__(self, run):
        cuda = self.torch.cuda
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        wall = time.perf_counter()
        start.record()
        result = run()
        end.record()
        end.synchronize()
        wall = time.perf_counter() - wall
        return start.elapsed_time(end) / 1e3, wall, result

    def synchronize(self):
        self.torch.cuda.synchronize()


def time_runs(run, warm_up, timer, repeats, frames):
    """The warm-up (``warm_up()``: it also compiles, and returns the result, the iterations per
    frame and the mel residual), then ``repeats`` runs timed by CUDA events; the row's fields."""
    warm = time.perf_counter()
    result, steps, residual = warm_up()
    del result
    timer.synchronize()
    warm = time.perf_counter() - warm
    seconds, walls = [], []
    for _ in range(repeats):
        event_s, wall_s, result = timer(run)
        del result
        seconds.append(event_s)
        walls.append(wall_s)
    median = statistics.median(seconds)
    return {"seconds": median, "seconds_all": seconds, "wall_seconds": statistics.median(walls),
            "warmup_seconds": warm, "frames_per_s": frames / median if median > 0 else None,
            "steps": steps, "mel_residual": residual, "timing": "cuda events"}


# -- helpers ---------------------------------------------------------------------------------------

def _cupy_version():
    """CuPy's version, or what stands in for it (the emulator has no ``__version__``)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and hasattr(cupy, "cudasim"):
        return "cudasim stand-in (tests/cudasim/fakecupy.py)"
    return environment.library_versions().get("cupy")


def _cuda_version(number):
    return f"{number // 1000}.{number % 1000 // 10}" if number else None


def portable_traceback(text):
    """A traceback as the results record it: each ``File "..."`` made portable
    (:func:`bench.environment.portable_path`), never an absolute path of this machine."""
    return re.sub(r'File "([^"]+)"', lambda m: f'File "{environment.portable_path(m.group(1))}"',
                  text)


def _pytest_summary(text):
    """pytest's last summary line ("12 passed, 3 skipped in 4.10s"), or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip().strip("=").strip()
        if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b", line) \
                and re.search(r"\bin [\d.]+s", line):
            return line
    return None


def _host_available():
    """Bytes of host memory available (MemAvailable), or a large number where unknown."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 2 ** 40


def _is_out_of_memory(exc):
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def load(path):
    """A results.json written by this command (for tests and later reading)."""
    return json.loads(Path(path).read_text())
