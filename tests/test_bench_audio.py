"""Smoke test of ``python -m bench audio`` on the synthetic signal: the table's shape and the
spectral convergence (never a timing); missing peers appear as "not installed" rows."""
import importlib.util
import json
import math

from bench import audio


def test_audio_table(tmp_path):
    status = audio.main(["--workload", "speech-201x128", "--n-iter", "4", "--repeats", "1",
                         "--seeds", "2", "--backend", "cpu,cuda", "--out", str(tmp_path)])
    assert status == 0
    report = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "results.md").read_text()
    rows = report["rows"]
    assert report["environment"]["command"].startswith("python -m bench audio")
    cumel_cpu = [r for r in rows if r["implementation"].startswith("cumel") and r["backend"] == "cpu"]
    assert len(cumel_cpu) == 1 and cumel_cpu[0]["status"] == "ok"
    row = cumel_cpu[0]
    assert len(row["spectral_convergence_seeds"]) == 2
    # measured 0.24 at 4 iterations on the synthetic clip; bound 1.2 (5x)
    assert math.isfinite(row["spectral_convergence"]) and 0 < row["spectral_convergence"] < 1.2
    for r in rows:
        assert r["status"] in ("ok", "skipped"), r
        if r["implementation"].startswith("librosa") and importlib.util.find_spec("librosa") is None:
            assert r["status"] == "skipped" and "not installed: librosa" in r["error"]
        if r["implementation"].startswith("torchaudio") and importlib.util.find_spec("torchaudio") is None:
            assert r["status"] == "skipped" and "not installed" in r["error"]
    assert "| speech-201x128 |" in md and "spectral convergence" in md
