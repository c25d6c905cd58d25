"""This machine as the files of ``python -m bench gpu`` may name it, and the run's progress log:
the repository's root, tracebacks with repository-relative paths, the CuPy and CUDA versions, the
environment of a child process."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from .. import environment

REPOSITORY = Path(__file__).resolve().parents[2]


def log(line):
    print(line, file=sys.stderr, flush=True)


def portable_traceback(text):
    """A traceback as the results record it: each ``File "..."`` made portable
    (:func:`bench.environment.portable_path`), never an absolute path of this machine."""
    return re.sub(r'File "([^"]+)"', lambda m: f'File "{environment.portable_path(m.group(1))}"',
                  text)


def cupy_version():
    """CuPy's version, or what stands in for it (the emulator has no ``__version__``)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and hasattr(cupy, "cudasim"):
        return "cudasim stand-in (tests/cudasim/fakecupy.py)"
    return environment.library_versions().get("cupy")


def cuda_version(number):
    return f"{number // 1000}.{number % 1000 // 10}" if number else None


def child_environment():
    """The environment of a ``python -m ...`` child: this one, the repository first on
    ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env
