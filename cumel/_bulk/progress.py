"""Progress on stderr: a tqdm bar, or one plain line per file."""
from __future__ import annotations

import sys
import time


class Progress:
    """Files done, files/s and frames/s on stderr: a tqdm bar, or one plain line per file when
    tqdm is not installed (or ``plain=True``). ``enabled=False`` shows nothing."""

    def __init__(self, total, enabled=True, stream=None, plain=False):
        self.total, self.enabled = total, enabled
        self.stream = sys.stderr if stream is None else stream
        self.done = self.frames = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and not plain:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="file", file=self.stream, dynamic_ncols=True,
                                desc="cumel invert", mininterval=0.2)

    def frames_per_second(self):
        return self.frames / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, result):
        self.done += 1
        if result.status == "written":
            self.frames += result.frames or 0
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.frames_per_second():,.0f} frames/s", refresh=False)
            self.bar.update(1)
        elif self.enabled:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            print(f"cumel: [{self.done}/{self.total}] {result.status} {result.input} "
                  f"({self.done / elapsed:.1f} files/s, {self.frames_per_second():,.0f} frames/s)",
                  file=self.stream, flush=True)

    def message(self, text):
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
