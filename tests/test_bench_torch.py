"""``python -m bench torch`` end to end on one small synthetic workload (needs torch)."""
import json

import pytest

pytest.importorskip("torch", reason="torch not installed (CI: pip install torch==2.13.0)")

from bench import torch_grad  # noqa: E402


def test_bench_torch_writes_its_table(tmp_path):
    assert torch_grad.main(["--workload", "tts-513x80", "--clips", "1", "--repeats", "1",
                            "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    (row,) = result["rows"]
    assert row["workload"] == "tts-513x80" and row["frames"] > 0 and row["gradient_finite"]
    assert row["ratio"] == pytest.approx(row["cumel_seconds"] / row["lstsq_seconds"])
    assert row["mel_residual_cumel"] <= 1e-4               # the converged answer
    assert row["mel_residual_lstsq"] < 0.5                 # the peer answers (gelsy gave zeros)
    table = (tmp_path / "results.md").read_text()
    assert "| tts-513x80 |" in table and "gelss" in table
    assert "/work/" not in table and "/tmp/" not in json.dumps(result["environment"]["command"])
