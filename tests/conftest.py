"""Test helpers: the one way tests reach their data (tests/data), and common data builders."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def data_path(*parts):
    """Path inside ``tests/data`` (the clips and golden fixtures, tests/data/README.md). A missing
    file is an error, not a skip: the data ships with the repository."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: tests/data ships with the repository "
                                "(tests/data/README.md lists its files)")
    return path


def fixture_index(name):
    return json.loads(data_path("fixtures", name).read_text())


def load_fixture(name):
    with np.load(data_path("fixtures", name)) as data:
        return {k: data[k] for k in data.files}


def fixture_params():
    """Every golden fixture of tests/data/fixtures as pytest params."""
    entries = fixture_index("mindspore_index.json") + fixture_index("torchaudio_index.json")
    return [pytest.param(e, id=e["file"]) for e in entries]


def fixture_kwargs(entry, solver):
    """A fixture's transform arguments for ``solver``: ``mel_scale`` spelt ``mel_type``, the SGD
    arguments translated between the torchaudio and MindSpore spellings, dropped for the others."""
    kwargs = dict(entry["kwargs"])
    if "mel_scale" in kwargs:
        kwargs["mel_type"] = kwargs.pop("mel_scale")
    sgd = kwargs.pop("sgdargs", None)
    if solver == "torchaudio" and sgd:
        kwargs["sgdargs"] = {"lr": sgd.get("lr", sgd.get("sgd_lr")),
                             "momentum": sgd.get("momentum", sgd.get("sgd_momentum"))}
    if solver == "mindspore" and sgd:
        kwargs["sgdargs"] = {"sgd_lr": sgd.get("sgd_lr", sgd.get("lr")),
                             "sgd_momentum": sgd.get("sgd_momentum", sgd.get("momentum"))}
    return kwargs


def audio_pair(workload_name, clip):
    """(S_true, M) float32 for a clip of tests/data/audio under a standard workload."""
    from cumel.workloads import WORKLOADS, read_wav
    audio, rate = read_wav(data_path("audio", clip + ".wav"))
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


def pytest_configure(config):
    # $CUMEL_ALLOWED_SKIPS (set by .ci/run): a skip of any other kind fails the run
    import skip_policy
    skip_policy.register(config)


# The CPU loops of nnls (cumel.solvers.nnls): the NumPy loop and the compiled one (numba, the
# `cpu` extra; the test extra installs it, so CI runs both).
CPU_LOOPS = ["numpy", "numba"]


def use_cpu_loop(monkeypatch, loop):
    """Select nnls's CPU loop for this test (``CUMEL_CPU``); the compiled one needs numba."""
    if loop == "numba":
        pytest.importorskip("numba", reason="the compiled CPU loop needs numba (the cpu extra)")
    monkeypatch.setenv("CUMEL_CPU", loop)


@pytest.fixture(params=CPU_LOOPS)
def cpu_loop(request, monkeypatch):
    """Each test that takes it runs once on each CPU loop of nnls."""
    use_cpu_loop(monkeypatch, request.param)
    return request.param


@pytest.fixture
def numpy_loop(monkeypatch):
    """The NumPy loop of nnls (tests of its own tuning constants)."""
    use_cpu_loop(monkeypatch, "numpy")


def signed_nnls_frames(n_frames=40, seed=3):
    """(fb (201, 80) float64, M (80, n_frames)): sparse gamma spectra through the filterbank with
    one mel in twenty negated, so that no non-negative spectrum fits them exactly and a solve
    with ``tolerance_loss=0`` runs its KKT residual down to the rounding floor."""
    import cumel
    rng = np.random.default_rng(seed)
    fb = cumel.InverseMelScale(n_stft=201, n_mels=80).plan.fb64
    S = rng.gamma(0.5, 1.0, size=(201, n_frames)) * (rng.random((201, n_frames)) < 0.6)
    M = fb.T @ S
    M[rng.random(M.shape) < 0.05] *= -1.0
    return fb, M


def floor_rule_stops(solve, n_frames, max_steps=40):
    """Check nnls's rounding-floor rule (``FLOOR_KKT``, ``FLOOR_RATIO``, ``FLOOR_WINDOW`` of
    ``cumel.solvers.nnls.iteration``) on ``solve(max_iter) -> (iterations, kkt)`` per frame,
    run with ``tolerance_loss = tolerance_change = 0``.

    ``max_iter = k`` returns the k-th iterate's KKT residual on every frame still running, so
    the runs for k = 0, 1, ... give each frame's sequence.  A frame stops at the first iterate
    whose residual is at most FLOOR_KKT and more than FLOOR_RATIO times the smallest of the
    FLOOR_WINDOW before it (or earlier, by another rule): the rule must hold at no iterate
    before the stop.  Returns how many frames stopped where the rule holds."""
    from cumel.solvers.nnls import iteration
    stops = np.asarray(solve(max_steps)[0])
    assert (stops < max_steps).all(), "a frame ran to the cap: the rule is not exercised"
    sequence = np.full((int(stops.max()) + 1, n_frames), np.nan)
    for k in range(sequence.shape[0]):
        iterations, kkt = (np.asarray(a) for a in solve(k))
        reached = iterations == k
        sequence[k, reached] = kkt[reached]
    at_floor_stop = 0
    for f in range(n_frames):
        for k in range(int(stops[f]) + 1):
            window = sequence[max(0, k - iteration.FLOOR_WINDOW):k, f]
            best = window.min() if window.size else np.inf
            rule = (sequence[k, f] <= iteration.FLOOR_KKT
                    and sequence[k, f] > iteration.FLOOR_RATIO * best)
            assert not (rule and k < stops[f]), (
                f"frame {f}: the floor rule holds at iterate {k} (kkt {sequence[k, f]:.3g}, "
                f"the last {window.size} {window}) but the frame ran to {stops[f]}")
            at_floor_stop += bool(rule and k == stops[f])
    return at_floor_stop
