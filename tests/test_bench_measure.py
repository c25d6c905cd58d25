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
