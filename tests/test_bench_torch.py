"""``python -m bench torch`` end to end on one small synthetic workload (needs torch)."""
import json

import pytest

pytest.importorskip("torch", reason="torch not installed (CI: pip install torch==2.13.0)")

from bench import torch_grad  # noqa: E402


def test_bench_torch_writes_its_table(tmp_path):
    assert torch_grad.main(["--workload", "tts-513x80", "--clips", "2", "--repeats", "1",
                            "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    (row,) = result["rows"]
    assert row["workload"] == "tts-513x80" and row["frames"] > 0 and row["gradient_finite"]
    assert row["ratio"] == pytest.approx(row["cumel_seconds"] / row["lstsq_seconds"])
    # the frames of every clip; the backward's share of the forward-and-backward time
    from cumel.workloads import WORKLOADS
    mels = torch_grad._batch(WORKLOADS["tts-513x80"], None, 2)
    assert row["clips"] == 2 and row["frames"] == mels.shape[0] * mels.shape[2]
    assert row["cumel_backward_share"] == pytest.approx(
        max(0.0, 1.0 - row["cumel_forward_seconds"] / row["cumel_seconds"]))
    assert row["mel_residual_cumel"] <= 1e-4               # the converged answer
    assert row["mel_residual_lstsq"] < 0.5                 # the peer answers (gelsy gave zeros)
    table = (tmp_path / "results.md").read_text()
    assert "| tts-513x80 |" in table and "gelss" in table
    assert "/work/" not in table and "/tmp/" not in json.dumps(result["environment"]["command"])


def test_mel_residual_is_relative_to_the_mel():
    """``||A S - M|| / ||M||`` of an answer f S_true is |f - 1|, for a batch of clips of
    different levels (relative to the mel given, not to the answer)."""
    import numpy as np

    from bench.batches import workload_filterbank
    from cumel.workloads import WORKLOADS
    workload = WORKLOADS["tts-513x80"]
    fb = workload_filterbank(workload, np.float64)
    S = np.random.default_rng(0).random((2, workload.n_stft, 5)) * np.array([1.0, 30.0])[:, None, None]
    M = np.einsum("fm,bft->bmt", fb, S)
    for factor in (0.5, 2.0, 3.0):
        assert torch_grad._residual(fb, factor * S, M) == pytest.approx(abs(factor - 1), rel=1e-12)


def test_clips_of_different_lengths_are_cut_to_the_shortest(tmp_path):
    import numpy as np

    from cumel.griffin_lim import write_wav
    from cumel.workloads import WORKLOADS
    workload = WORKLOADS["tts-513x80"]
    rng = np.random.default_rng(0)
    for name, seconds in (("a", 0.31), ("b", 0.17)):
        write_wav(tmp_path / f"{workload.clips}{name}.wav",
                  0.1 * rng.standard_normal(int(seconds * workload.sample_rate)), workload.sample_rate)
    mels = torch_grad._batch(workload, tmp_path, 2)
    short = workload.pair(rng.standard_normal(int(0.17 * workload.sample_rate)))[1]
    assert mels.shape == (2, workload.n_mels, short.shape[1]) and mels.dtype == np.float32
