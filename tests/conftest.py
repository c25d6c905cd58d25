"""Test helpers: the one way tests reach ../shared, and common data builders."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_path(*parts):
    """Path inside the project's shared folder (``$CUMEL_SHARED`` or ``../shared`` beside the
    checkout); skips the calling test, with the reason, when it is absent."""
    root = Path(os.environ.get("CUMEL_SHARED", REPO.parent / "shared"))
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared ground-truth folder: {path} is absent "
                    "(set CUMEL_SHARED to its location)")
    return path


def fixture_index(name):
    return json.loads(shared_path("fixtures", name).read_text())


def load_fixture(name):
    with np.load(shared_path("fixtures", name)) as data:
        return {k: data[k] for k in data.files}


def audio_pair(workload_name, clip):
    """(S_true, M) float32 for a clip of ../shared/audio under a standard workload."""
    from cumel.workloads import WORKLOADS, read_wav
    audio, rate = read_wav(shared_path("audio", clip + ".wav"))
    workload = WORKLOADS[workload_name]
    assert rate == workload.sample_rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return workload.pair(audio)


def mel_residual(fb, S, M):
    """||fb.T S - M|| / ||M|| in float64."""
    fb = np.asarray(fb, np.float64)
    R = np.matmul(fb.T, np.asarray(S, np.float64)) - np.asarray(M, np.float64)
    return float(np.linalg.norm(R) / np.linalg.norm(M))


@pytest.fixture(autouse=True)
def _quiet_empty_filter_warning():
    # 201 bins x 128 mels has empty filters; torchaudio warns about it and so do we. The warning
    # is pinned by its own test; elsewhere it is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        yield


# The CPU emulator of the CUDA kernels (tests/cudasim): fixtures for the `emulated` tests.
from cudasim.fixtures import emulated_cupy, emulated_cupy_order  # noqa: E402,F401
