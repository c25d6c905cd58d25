"""The stages of ``python -m bench gpu`` that run in subprocesses, side by side, before the
timings: ``pytest -m gpu`` and ``python -m bench kernels`` (methods of :class:`bench.gpu.Run`)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import environment
from .limits import Skip
from .machine import REPOSITORY, child_environment

KERNELS_TIMEOUT = 120.0          # seconds for python -m bench kernels (about 15 s on 2 cores)


class SubprocessStages:
    """Start, wait for and stop the subprocesses of a run (``self``: the :class:`Run`)."""

    # -- pytest -m gpu
    def start_pytest(self, entry):
        timeout = min(self.args.pytest_timeout, max(10.0, 0.35 * self.left()))
        entry["note"] = f"started (timeout {timeout:.0f} s)"
        # the child writes it; closed in wait_pytest or stop_children
        log_file = open(self.out / "pytest.log", "w")  # noqa: SIM115
        command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                   "-rs", "tests"]
        log_file.write(f"$ {environment.portable_command(command)}\n")
        log_file.flush()
        proc = subprocess.Popen(command, cwd=REPOSITORY, stdout=log_file,
                                stderr=subprocess.STDOUT, env=child_environment())
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
        summary = pytest_summary(text)
        if status is None:
            summary = f"timed out after {timeout:.0f} s" + (f" ({summary})" if summary else "")
        self.results["pytest"] = {"returncode": status, "summary": summary,
                                  "log": "pytest.log"}
        entry["note"] = summary
        if status != 0:                   # 5 too: no gpu test was collected, none ran
            entry["status"] = "failed"

    # -- python -m bench kernels
    def start_kernels(self, entry):
        """``python -m bench kernels`` in a subprocess (NVRTC in a process of its own: a crash
        there cannot take the run down, and it never sees a stand-in ``cupy``)."""
        folder = Path(tempfile.mkdtemp(prefix="cumel-bench-kernels-"))
        command = [sys.executable, "-m", "bench", "kernels", "--out", str(folder)]
        proc = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True,
                                env=child_environment())
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


def pytest_summary(text):
    """pytest's last summary line ("12 passed, 3 skipped in 4.10s"), or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip().strip("=").strip()
        if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b", line) \
                and re.search(r"\bin [\d.]+s", line):
            return line
    return None
