"""The timings stage of ``python -m bench gpu``: every series of every workload measured at
sizes doubling round by round, until the device's memory or the time left ends each one; each
row held against the device's bound (methods of :class:`bench.gpu.Run`)."""
from __future__ import annotations

import contextlib
import time

from cumel.workloads import WORKLOADS

from .. import gpu_report
from ..implementations import first_line
from .limits import FINISH_RESERVE, GROWTH, BudgetSpent, Skip, is_out_of_memory
from .machine import log
from .series import Inputs, cost_models, make_series

START_FRAMES = 1024
MAX_FRAMES = 2 ** 24


class TimingsStage:
    """The timings stage (``self``: the :class:`Run`)."""

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
            if is_out_of_memory(exc):
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
