"""The benchmark's GPU rows (streamed host batch, torch CUDA tensors) and the n_mels sweep are
present, and measured or skipped with the reason (on a machine without a GPU: skipped)."""
import json

import pytest

from bench import cli
from cumel import _backend


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-gpu-rows")
    status = cli.main(["--quick", "--peers", "none", "--solvers", "nnls,lstsq",
                       "--workload", "speech-201x128", "--backend", "cpu,cuda,cuda-host,cuda-torch",
                       "--mel-sweep", "--frames", "16", "--out", str(out)])
    assert status == 0
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_gpu_rows_next_to_the_resident_row(report):
    results, md = report
    for solver in ("nnls", "lstsq"):
        rows = {r["backend"]: r for r in results["rows"]
                if r["implementation"] == f"cumel-{solver}"}
        assert set(rows) == {"cpu", "cuda", "cuda-host", "cuda-torch"}
        for backend in ("cuda", "cuda-host", "cuda-torch"):
            row = rows[backend]
            assert row["status"] in ("ok", "skipped", "error")
            if row["status"] != "ok":
                assert row["error"]
            if not _backend.gpu_available():
                assert row["status"] == "skipped"
    assert "cuda-host" in md and "cuda-torch" in md


def test_mel_sweep_rows(report):
    results, md = report
    sweep = results["mel_sweep"]
    assert sorted({r["n_mels"] for r in sweep}) == [64, 128, 256, 512]
    for r in sweep:
        if r["backend"] == "cpu":
            assert r["status"] == "ok" and r["frames_per_second"] > 0
        elif not _backend.gpu_available():
            assert r["status"] == "skipped" and "no GPU" in r["error"]
    assert "nnls frames/s against n_mels" in md


def test_a_stage_traceback_names_no_path_of_this_machine():
    """A stage that fails records its traceback; the files it names are repository-relative
    (a slow machine made ``bench kernels`` time out, and the results named the checkout)."""
    import os
    import traceback

    from bench import gpu
    try:
        gpu.Run.wait_kernels(None, (None,) * 4, {})      # fails inside bench/gpu/subprocesses.py
    except Exception:  # noqa: BLE001 - any failure of the stage will do
        text = gpu.portable_traceback(traceback.format_exc())
    assert 'File "bench/gpu/subprocesses.py"' in text
    assert os.path.dirname(gpu.__file__) not in text and str(gpu.REPOSITORY) not in text


def test_a_stream_series_stops_growing_when_its_time_is_spent():
    """The stream stage measures a series' first size, then stops growing once the next size is
    predicted past the stage's time (here already spent): the row says why, nothing raises."""
    import time

    from bench.gpu import streams

    class RunStandIn:
        cupy = None

        def save(self, throttle=0.0):
            pass

    section = {"rows": []}
    features, _ = streams.stream_features(None, 3)
    assert features.shape == (80, 3) and features.dtype == "float32"
    streams.StreamsStage.stream_series(RunStandIn(), section, "cpu", 1, (1, 2, 4), features,
                                       until=time.monotonic())
    first, *rest = section["rows"]
    assert first["status"] == "ok" and first["realtime"] > 0 and first["streams"] == 1
    assert [r["streams"] for r in rest] == [2, 4]
    for r in rest:
        assert r["status"] == "stopped" and r["error"].startswith("not measured")
        assert r["wall_seconds"] is None


def test_the_table_shows_each_series_at_its_fastest_size():
    """The frames/s table: per series, every figure from the row of the most frames/s among the
    series' measured rows (not the first, the last or the slowest); a series with none says the
    last row's failure."""
    from bench import gpu_report

    def row(solver, n, fps, status="ok", **more):
        return dict(workload="tts-513x80", solver=solver, backend="cuda", status=status, n_frames=n,
                    frames_per_s=fps, bound_frames_per_s=None if fps is None else 8 * fps,
                    measured_over_bound=None if fps is None else 0.125 + n / 1e6,
                    bound={"limit": f"memory-{n}"}, steps=n / 100, mel_residual=n / 1e9, **more)

    rows = [row("nnls", 1000, 150.0), row("nnls", 2000, 420.0), row("nnls", 4000, 260.0),
            row("nnls", 8000, None, status="error", error="out of memory"),
            row("sgd", 1000, None, status="error", error="first"),
            row("sgd", 2000, None, status="skipped", error="second")]
    md = gpu_report.markdown({"budget": {"seconds": 60}, "rows": rows,
                              "series": [dict(workload="tts-513x80", solver="nnls", backend="cuda",
                                              stopped="time")]})
    assert ("| tts-513x80 | nnls | cuda | 420 | 2000 | 3.36e+03 | 12.70% | memory-2000 | 20 | 2e-06 "
            "| time |") in md
    assert "| tts-513x80 | sgd | cuda | skipped: second | | | | | | | - |" in md
