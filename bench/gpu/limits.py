"""What stops a stage or a series of ``python -m bench gpu`` short of its numbers: the time
budget, the device's and the host's memory, a library or device that is not there."""
from __future__ import annotations

import contextlib

DEFAULT_BUDGET = 420.0           # seconds; 8 minutes leave a minute for start-up and the last writes
FINISH_RESERVE = 15.0            # seconds kept for the last files
HARD_GRACE = 40.0                # past the budget by this much, a hung process writes and exits
GROWTH = 2.2                     # predicted cost of the next size / cost of this one
DEVICE_FRACTION = 0.6            # of the free device memory a batch's estimate may take
HOST_FRACTION = 0.3              # of the available host memory


class BudgetSpent(BaseException):
    """Raised in the main thread when the time budget runs out (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""


class Skip(Exception):
    """A series that cannot run here (library missing, no torch GPU): a skipped row."""


def host_available():
    """Bytes of host memory available (MemAvailable), or a large number where unknown."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 2 ** 40


def is_out_of_memory(exc):
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
