"""Progress on stderr: a tqdm bar, or one plain line per file."""
from __future__ import annotations

import sys
import threading
import time


class Progress:
    """Files done, files/s and frames/s on stderr: a tqdm bar, or one plain line per file when
    tqdm is not installed (or ``plain=True``), naming the file written and its input.
    ``enabled=False`` shows nothing."""

    def __init__(self, total, enabled=True, stream=None, plain=False):
        self.total, self.enabled = total, enabled
        self.stream = sys.stderr if stream is None else stream
        self.done = self.frames = 0
        self.t0 = time.perf_counter()
        self.bar = None
        self.lock = threading.Lock()
        self.moved = 0.0            # the bar's advance within the files in hand
        self.partial_frames = 0     # their frames solved so far
        self.in_hand = {}           # input -> (advance, frames) of a file another process solves
        if enabled and not plain:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="file", file=self.stream, dynamic_ncols=True,
                                desc="cumel invert", mininterval=0.2,
                                bar_format="{l_bar}{bar}| {n:g}/{total_fmt} "
                                           "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")

    def within(self, frames, files=1):
        """A callback ``advance(n)`` for the solve of ``files`` files holding ``frames`` frames:
        the bar moves as their frames are solved (None without a bar). :meth:`update` then adds
        what is left of each file."""
        if self.bar is None or frames <= 0:
            return None

        def advance(n):
            with self.lock:
                step = files * n / frames
                self.moved += step
                self.partial_frames += n
                self.bar.set_postfix_str(f"{self.frames_per_second():,.0f} frames/s", refresh=False)
                self.bar.update(step)

        return advance

    def solved(self, key, frames, total):
        """``frames`` of the ``total`` frames of file ``key`` are solved (reported by the worker
        process solving it): the bar moves to that share of the file. Never moves back;
        :meth:`update` with that file's result adds the rest."""
        if self.bar is None or total <= 0:
            return
        with self.lock:
            moved, counted = self.in_hand.get(key, (0.0, 0))
            frames = min(max(int(frames), counted), int(total))
            share = frames / total
            if frames == counted:
                return
            self.in_hand[key] = (share, frames)
            self.partial_frames += frames - counted
            self.bar.set_postfix_str(f"{self.frames_per_second():,.0f} frames/s", refresh=False)
            self.bar.update(share - moved)

    def frames_per_second(self):
        frames = self.frames + self.partial_frames
        return frames / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, result):
        self.done += 1
        with self.lock:
            shown = self.in_hand.pop(result.input, None)
            if shown is not None:                  # reported by a worker process: its own share
                self.partial_frames -= shown[1]
            if result.status == "written":
                self.frames += result.frames or 0
                if shown is None:
                    self.partial_frames = max(0, self.partial_frames - (result.frames or 0))
        if self.bar is not None:
            with self.lock:
                if shown is not None:
                    step = max(0.0, 1.0 - shown[0])
                else:
                    step = max(0.0, 1.0 - self.moved) if self.moved else 1.0
                    self.moved = max(0.0, self.moved - 1.0)
                self.bar.set_postfix_str(f"{self.frames_per_second():,.0f} frames/s",
                                         refresh=False)
                # shares of files add up to the total up to rounding: never past it (tqdm warns)
                self.bar.update(min(step, max(0.0, self.total - self.bar.n)))
        elif self.enabled:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            # the file written (or already there) is named, and the input it came from
            named = (f"{result.output} (from {result.input})"
                     if result.status in ("written", "skipped") and result.output else result.input)
            print(f"cumel: [{self.done}/{self.total}] {result.status} {named} "
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
