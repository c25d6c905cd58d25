"""bench.measure: the accuracy figures and speed-ups every results table is made of, on answers
whose figures are known exactly."""
from types import SimpleNamespace

import numpy as np
import pytest

from bench.batches import workload_filterbank
from bench.measure import accuracy, add_speedups
from cumel.workloads import WORKLOADS


def _batch(seed=0):
    workload = WORKLOADS["speech-201x128"]
    spec = np.random.default_rng(seed).random((2, workload.n_stft, 7)) ** 2
    mel = np.matmul(workload_filterbank(workload, np.float64).T, spec)
    return SimpleNamespace(workload=workload, spec=spec, mel=mel)


@pytest.mark.parametrize("factor", [0.5, 2.0, 3.0])
def test_accuracy_of_a_scaled_answer_is_the_scale_less_one(factor):
    # S = f S_true: ||A S - M|| / ||M|| and ||S - S_true|| / ||S_true|| are both |f - 1|,
    # relative to the truth, not to the answer
    batch = _batch()
    residual, error = accuracy(batch, factor * batch.spec)
    assert residual == pytest.approx(abs(factor - 1), rel=1e-12)
    assert error == pytest.approx(abs(factor - 1), rel=1e-12)
    assert accuracy(batch, batch.spec) == pytest.approx((0.0, 0.0), abs=1e-14)


def _row(impl, workload, seconds_per_frame, status="ok"):
    return dict(workload=workload, implementation=impl, backend="cpu", status=status,
                seconds_per_frame=seconds_per_frame, speedup=None)


def test_speedup_is_baseline_time_over_row_time():
    rows = [_row("numpy-lstsq", "a", 0.010), _row("cumel-nnls", "a", 0.002),
            _row("slow", "a", 0.040), _row("numpy-lstsq", "b", 0.003), _row("cumel-nnls", "b", 0.006),
            _row("failed", "a", None, status="error")]
    add_speedups(rows, "numpy-lstsq")
    speedups = [row["speedup"] for row in rows]
    assert speedups[:5] == pytest.approx([1.0, 5.0, 0.25, 1.0, 0.5])      # faster than the baseline: > 1
    assert speedups[5] is None
    assert all(row["baseline"] == "numpy-lstsq" for row in rows)


def test_time_solve_runs_one_warm_up_then_every_timed_run():
    """time_solve: the warm-up reports the iterations, then exactly ``repeats`` timed runs
    (each followed by a synchronisation), and the last run's result comes back."""
    from bench.measure import time_solve
    from bench.implementations import Solve
    calls = []

    def run(report):
        calls.append(report)
        return np.full((1, 2, 3), float(len(calls))), (7 if report else None)

    synced = []
    solve = Solve(run=run, device="cpu", synchronize=lambda: synced.append(1),
                  to_numpy=np.asarray)
    for repeats in (1, 3, 5):
        calls.clear()
        synced.clear()
        timing = time_solve(solve, repeats)
        assert calls == [True] + [False] * repeats
        assert len(timing.seconds) == repeats and len(synced) == repeats + 1
        assert timing.iterations == 7 and np.all(timing.result == repeats + 1)


def test_time_ratio_is_numerator_over_denominator():
    from bench.report import _time_ratio
    rows = [dict(implementation="cumel-nnls", status="ok", backend="cpu", seconds_per_frame=3e-6),
            dict(implementation="numpy-lstsq", status="ok", backend="cpu", seconds_per_frame=1e-6),
            dict(implementation="numpy-lstsq", status="ok", backend="cuda", seconds_per_frame=1e-9)]
    assert _time_ratio(rows, "cumel-nnls", "numpy-lstsq") == pytest.approx(3.0)
    assert _time_ratio(rows, "numpy-lstsq", "cumel-nnls") == pytest.approx(1 / 3)
    assert _time_ratio(rows[:1], "cumel-nnls", "numpy-lstsq") is None


def test_the_smallest_matching_frames_cap_applies():
    """--frames-for caps an implementation by its id, its peer name or a module it needs; where
    several keys match, the smallest cap (the tightest limit asked for) applies."""
    from bench.measure import frames_cap
    impl = SimpleNamespace(matches=lambda key: key in ("torch-sgd", "torch"))
    settings = SimpleNamespace(frames_for={"torch": 300, "torch-sgd": 100, "mindspore": 50})
    assert frames_cap(impl, settings) == 100
    settings.frames_for = {"torch": 30, "torch-sgd": 100}
    assert frames_cap(impl, settings) == 30
    settings.frames_for = {"mindspore": 50}
    assert frames_cap(impl, settings) is None


def test_every_figure_of_a_row_is_derived_from_its_batch_and_times():
    """build_row on a batch of 3 rows of 7 frames and three known times: the frames count every
    row, the time is the median, and per-frame time, frames/s and accuracy follow from them."""
    from bench.batches import Batch
    from bench.measure import ROW_FIELDS, Timing, build_row
    base = _batch()
    spec = np.concatenate([base.spec, base.spec[:1]])                  # (3, n_stft, 7)
    batch = Batch(base.workload, np.matmul(workload_filterbank(base.workload, np.float64).T, spec),
                  spec, ["a", "b", "c"])
    timing = Timing(seconds=[0.7, 0.2, 0.4], result=1.5 * spec, iterations=np.int64(5))
    impl = SimpleNamespace(id="cumel-x", label="X", peer=None, iteration_cap=True)
    row = build_row(impl, "cpu", batch, SimpleNamespace(max_iter=40), timing=timing)
    assert set(row) == set(ROW_FIELDS)
    assert row["batch"] == [3, 7] and row["frames"] == 21
    assert row["seconds"] == 0.4 and row["seconds_all"] == [0.7, 0.2, 0.4]
    assert row["seconds_per_frame"] == pytest.approx(0.4 / 21, rel=1e-12)
    assert row["frames_per_second"] == pytest.approx(21 / 0.4, rel=1e-12)
    assert row["iterations"] == 5 and type(row["iterations"]) is int and row["max_iter"] == 40
    assert row["mel_residual"] == pytest.approx(0.5, rel=1e-12)
    assert row["spectrogram_error"] == pytest.approx(0.5, rel=1e-12)
    assert row["peer"] == "cumel" and row["status"] == "ok" and row["speedup"] is None
