"""One run of ``python -m bench gpu``: :class:`Run`, its results, files and clock, the stages in
order (each recorded, a failing one not stopping the others) and the environment stage (the
device and its figures, the versions)."""
from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import threading
import time
import traceback
from pathlib import Path

from .. import bound as bounds
from .. import environment, gpu_report
from ..implementations import first_line
from .limits import FINISH_RESERVE, HARD_GRACE, BudgetSpent, Skip
from .machine import REPOSITORY, cuda_version, cupy_version, log, portable_traceback
from .series import CHANNEL_FRAMES
from .streams import StreamsStage
from .subprocesses import SubprocessStages
from .timings import START_FRAMES, TimingsStage

PLOT_EVERY = 20.0                # seconds between redrawn results.png during the timings


class Run(SubprocessStages, StreamsStage, TimingsStage):
    """State of one ``bench gpu`` run: its results dictionary, files and clock; the stages'
    methods come from one class per stage (:mod:`bench.gpu.subprocesses`,
    :mod:`bench.gpu.streams`, :mod:`bench.gpu.timings`)."""

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
            "stages": [], "pytest": None, "kernels": None, "stream": None, "cost_models": None,
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
        # MelStream's streams at once: a bounded share of the time, before the timings (which
        # grow until the budget is spent)
        with self.stage("stream") as entry:
            if "stream" in self.args.skip:
                raise Skip("--skip stream")
            self.streams(entry)
        with self.stage("timings") as entry:
            self.timings(entry)

    def finish(self):
        self.save(plot=True)
        if self.out is not None:
            log(f"[bench gpu] wrote {environment.portable_path(self.out)}: "
                + ", ".join(sorted(p.name for p in self.out.iterdir() if p.is_file())))

    # -- the environment
    def environment(self, entry):
        try:
            env = environment.collect(["python", "-m", "bench", "gpu", *self.argv])
            env["versions"]["cupy"] = cupy_version()
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
                      "driver": cuda_version(cupy.cuda.runtime.driverGetVersion()),
                      "cuda": cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
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
