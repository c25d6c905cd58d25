"""Where the benchmark ran: CPU, GPU, interpreter and library versions.

Versions come from package metadata where possible, so collecting them does not import (slow,
chatty) libraries such as MindSpore. The GPU is asked for through CuPy, else PyTorch, and only
when one of them is installed.
"""
from __future__ import annotations

import datetime
import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys

# distribution names per library, first installed one wins
LIBRARIES = {
    "numpy": ("numpy",),
    "scipy": ("scipy",),
    "torch": ("torch",),
    "torchaudio": ("torchaudio",),
    "librosa": ("librosa",),
    "mindspore": ("mindspore",),
    "matplotlib": ("matplotlib",),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"),
}

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@functools.lru_cache(maxsize=1)
def cpu_model():
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions():
    """``{library: version}`` of the libraries in :data:`LIBRARIES` installed here, plus cumel."""
    versions = {}
    for library, distributions in LIBRARIES.items():
        for dist in distributions:
            try:
                versions[library] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    try:
        import cumel
        versions["cumel"] = cumel.__version__
    except Exception as exc:  # the harness is useless without it, but say why in the report
        versions["cumel"] = f"not importable: {exc}"
    return versions


def interpreter():
    """This interpreter: executable, Python version, library versions."""
    return {"executable": sys.executable, "python": platform.python_version(),
            "versions": library_versions()}


def gpu():
    """The first CUDA device as ``{name, driver, cuda, via}``, or None when there is none usable."""
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy
            if cupy.cuda.runtime.getDeviceCount() > 0:
                props = cupy.cuda.runtime.getDeviceProperties(0)
                return {"name": _decode(props["name"]), "driver": _cuda_version(
                            cupy.cuda.runtime.driverGetVersion()),
                        "cuda": _cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
                        "driver_version": _nvidia_smi_driver(), "via": "cupy"}
        except Exception:
            pass
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch
            if torch.cuda.is_available():
                return {"name": torch.cuda.get_device_name(0), "driver": None,
                        "cuda": torch.version.cuda, "driver_version": _nvidia_smi_driver(),
                        "via": "torch"}
        except Exception:
            pass
    return None


def collect(command_line):
    """The report's ``environment`` block."""
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "load_average": load_average(),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "gpu": gpu(),
        "cumel_source": source_revision(),
        **interpreter(),
        "workers": {},
    }


def source_revision():
    """The checkout cumel ran from: ``{commit, modified}``, ``modified`` listing uncommitted
    changes under cumel/ and kernels/ (None outside a git checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = shutil.which("git")
    if git is None:
        return None
    try:
        commit = subprocess.run([git, "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run([git, "-C", root, "status", "--porcelain", "--", "cumel",
                                 "kernels"], capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except Exception:
        return None
    return {"commit": commit, "modified": [line[3:] for line in status.splitlines()]}


def load_average():
    """1, 5 and 15-minute load averages (another busy process makes timings noisy), or None."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def _decode(name):
    return name.decode() if isinstance(name, bytes) else str(name)


def _cuda_version(number):
    """CUDA's integer version (12040) as "12.4"."""
    return f"{number // 1000}.{number % 1000 // 10}" if number else None


def _nvidia_smi_driver():
    """The NVIDIA driver version from ``nvidia-smi``, or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0]
    except Exception:
        return None
