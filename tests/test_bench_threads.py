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


def test_clip_rows_figures_are_each_clips_own(monkeypatch):
    """The nnls/lstsq rows of two clips of different lengths and of both together: frames, the
    time ratio, and the Newton steps' mean and max and the worst mel residual of that clip's own
    solve (the batch row is not one clip's, and max is not min)."""
    import numpy as np

    import cumel
    from bench import threads
    from bench.batches import load_clips
    from cumel.workloads import WORKLOADS
    monkeypatch.setattr(threads, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(threads, "SHORT_RUN_REPEATS", 1)
    workload = WORKLOADS["tts-513x80"]
    clips = [(name, audio[:256 * n]) for (name, audio), n in zip(load_clips(workload, None, 2), (37, 53))]
    rows = threads.clip_rows(workload, clips, 1, lambda line: None)
    mels = [np.ascontiguousarray(workload.pair(audio)[1], np.float32) for _, audio in clips]
    mels.append(np.ascontiguousarray(np.concatenate(mels, axis=1)))
    loops = threads.cpu_loops()
    assert [(r["clip"], r["loop"]) for r in rows] == [
        (name, threads.LOOP_NAMES[loop]) for name in ("synthetic-0", "synthetic-1", threads.ALL_CLIPS)
        for loop in loops]
    inv = cumel.InverseMelScale(**workload.inverse_kwargs())
    for k, r in enumerate(rows):
        M = mels[k // len(loops)]
        _, info = threads.on_loop(loops[k % len(loops)], lambda: inv(M, return_info=True))()
        assert r["frames"] == M.shape[1] and r["workload"] == "tts-513x80"
        assert r["ratio"] == r["nnls_seconds"] / r["lstsq_seconds"]
        assert r["steps_mean"] == pytest.approx(float(info.iterations.mean()), rel=1e-12)
        assert r["steps_max"] == int(info.iterations.max()) > r["steps_mean"]
        assert r["max_mel_residual"] == pytest.approx(float(info.mel_residual.max()), rel=1e-6)
        assert r["converged"] == bool(info.converged.all())
