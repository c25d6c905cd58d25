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
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

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
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def portable_path(path):
    """``path`` as a results file records it: never an absolute path of the machine that ran.

    In or beside the checkout: relative to the repository root (``bench/out``,
    ``../shared/audio``); inside a virtual environment elsewhere: ``<NAME-venv>/...`` (the
    folder holding ``pyvenv.cfg`` named NAME); anywhere else ``<outside>/`` and the file name.
    Relative paths are taken from the current directory. Symbolic links are not followed
    (a venv's ``bin/python`` stays itself).
    """
    if path is None:
        return None
    absolute = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(REPOSITORY)
    if _inside(absolute, REPOSITORY):
        return Path(os.path.relpath(absolute, REPOSITORY)).as_posix()
    folder = absolute
    while os.path.dirname(folder) != folder:
        if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
            rest = Path(os.path.relpath(absolute, folder)).as_posix()
            return f"<{os.path.basename(folder)}-venv>/{rest}"
        folder = os.path.dirname(folder)
    if _inside(absolute, parent) and parent != os.path.dirname(parent):
        return Path(os.path.relpath(absolute, REPOSITORY)).as_posix()
    return f"<outside>/{os.path.basename(absolute)}"


def _inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def portable_command(argv):
    """A command line (list of words) with every absolute path in it made portable
    (:func:`portable_path`), as one shell-quoted string."""
    words = []
    for word in argv:
        key, sep, value = word.partition("=")
        if word.startswith(os.sep):
            word = portable_path(word)
        elif sep and value.startswith(os.sep):
            word = f"{key}={portable_path(value)}"
        words.append(word)
    return shlex.join(words)


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
    return {"executable": portable_path(sys.executable), "python": platform.python_version(),
            "versions": library_versions()}


def _importable(name):
    """Whether ``name`` is imported or importable (a stand-in module without a spec counts)."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def gpu():
    """The first CUDA device as ``{name, driver, cuda, via}``, or None when there is none usable."""
    if _importable("cupy"):
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
    if _importable("torch"):
        try:
            import torch
            if torch.cuda.is_available():
                return {"name": torch.cuda.get_device_name(0), "driver": None,
                        "cuda": torch.version.cuda, "driver_version": _nvidia_smi_driver(),
                        "via": "torch"}
        except Exception:
            pass
    return None


def collect(command):
    """The report's ``environment`` block; ``command`` is the command line as a list of words
    (its paths recorded portably) or a string."""
    if not isinstance(command, str):
        command = portable_command(command)
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
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
