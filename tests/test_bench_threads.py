"""``python -m bench --threads``: the thread sweep and the nnls/lstsq rows, on synthetic audio."""
import importlib.util
import json

import pytest

from bench import cli as bench_cli


def test_threads_table_runs_and_checks_bits(tmp_path, capsys):
    out = tmp_path / "threads"
    status = bench_cli.main(["--threads", "1,2", "--workload", "tts-513x80", "--frames", "300",
                             "--repeats", "1", "--out", str(out)])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["threads"]
    loops = ["NumPy", "compiled"] if importlib.util.find_spec("numba") else ["NumPy"]
    assert [(r["loop"], r["workers"]) for r in rows] == [(loop, w) for loop in loops for w in (1, 2)]
    assert all(r["same_bits"] and r["frames"] >= 300 for r in rows)
    assert all(r["frames_per_second"] == pytest.approx(r["frames"] / r["seconds"]) for r in rows)
    assert all(r["speedup_vs_1"] == pytest.approx(rows[2 * (i // 2)]["seconds"] / r["seconds"])
               for i, r in enumerate(rows))
    assert rows[0]["speedup_vs_1"] == 1.0 and rows[1]["machine_ceiling"] > 0
    assert rows[0]["compute_ceiling"] == 1.0
    if importlib.util.find_spec("numba"):
        assert rows[1]["compute_ceiling"] > 0
    else:
        assert rows[1]["compute_ceiling"] is None
    clips = results["clips"]
    assert clips and all(c["converged"] and c["max_mel_residual"] <= 1e-5 and c["ratio"] > 0
                         for c in clips)
    assert [c["loop"] for c in clips[:len(loops)]] == loops
    assert clips[-1]["clip"] == "all clips, one batch"
    assert clips[-1]["frames"] == sum(c["frames"] for c in clips[:-len(loops)] if c["loop"] == "NumPy")
    assert "machine's ceiling" in (out / "results.md").read_text()
    assert "compute ceiling" in (out / "results.md").read_text()
    assert "nnls / lstsq" in capsys.readouterr().out


def test_bad_thread_counts_are_refused(capsys):
    for bad in ("0,2", "x"):
        try:
            bench_cli.parse_args(["--threads", bad])
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"--threads {bad} accepted")
    assert "--threads" in capsys.readouterr().err
