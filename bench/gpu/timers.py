"""Timing on the device for ``python -m bench gpu``: CUDA events on CuPy's or torch's current
stream around a call, and the warm-up and repeated runs of a row (:func:`time_runs`)."""
from __future__ import annotations

import statistics
import time


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
