"""Smoke tests of the benchmark harness (``python -m bench``): quick mode on the synthetic signal.

They check the report's shape and the numbers that do not depend on the machine (residuals),
never a timing. Peers missing from this interpreter must appear as "not installed" rows.
"""
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import cli
from bench.environment import REPOSITORY, portable_command, portable_path
from bench.batches import build_batch
from bench.implementations import CUMEL_SOLVERS, IMPLEMENTATIONS, PEERS
from cumel.workloads import WORKLOADS


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run over every workload, solver and peer, CPU and CUDA: (report, out folder)."""
    out = tmp_path_factory.mktemp("bench")
    status = cli.main(["--quick", "--peers", "all", "--backend", "cpu,cuda", "--out", str(out)])
    assert status == 0
    return json.loads((out / "results.json").read_text()), out


def _rows(report, **match):
    return [row for row in report["rows"] if all(row[k] == v for k, v in match.items())]


def test_report_has_environment_settings_and_every_workload(quick):
    report, out = quick
    env = report["environment"]
    for key in ("cpu", "cores", "python", "executable", "versions", "command", "timestamp", "gpu"):
        assert key in env
    assert env["versions"]["numpy"] == np.__version__ and "cumel" in env["versions"]
    assert env["command"].startswith("python -m bench --quick")
    assert report["settings"]["max_iter"] == 10 and report["settings"]["repeats"] == 1
    assert set(report["workloads"]) == set(WORKLOADS)
    markdown = (out / "results.md").read_text()
    for name in WORKLOADS:
        assert f"## {name}" in markdown


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("solver", CUMEL_SOLVERS)
def test_every_cumel_solver_is_measured_on_the_cpu(quick, workload, solver):
    report, _ = quick
    (row,) = _rows(report, workload=workload, implementation=f"cumel-{solver}", backend="cpu")
    assert row["status"] == "ok", row["error"]
    assert _finite(row["seconds"]) and row["seconds"] > 0
    assert _finite(row["frames_per_second"]) and row["frames_per_second"] > 0
    assert _finite(row["mel_residual"]) and _finite(row["spectrogram_error"])
    assert row["dtype"] == "float32" and row["frames"] == report["workloads"][workload]["frames"]
    assert isinstance(row["iterations"], int)
    assert row["max_iter"] == (10 if solver in ("torchaudio", "mindspore") else None)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_nnls_converges_below_numpy_lstsq(quick, workload):
    report, _ = quick
    (nnls,) = _rows(report, workload=workload, implementation="cumel-nnls", backend="cpu")
    (lstsq,) = _rows(report, workload=workload, implementation="numpy-lstsq", backend="cpu")
    assert lstsq["status"] == "ok", lstsq["error"]
    assert nnls["mel_residual"] <= 1e-5
    assert nnls["mel_residual"] < lstsq["mel_residual"]
    assert lstsq["speedup"] == pytest.approx(1.0)
    assert _finite(nnls["speedup"]) and nnls["speedup"] > 0


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("peer", PEERS)
def test_every_peer_has_a_row_measured_or_explained(quick, workload, peer):
    report, _ = quick
    rows = _rows(report, workload=workload, peer=peer, backend="cpu")
    expected = {impl.id for impl in IMPLEMENTATIONS if impl.peer == peer}
    assert {row["implementation"] for row in rows} == expected
    for row in rows:
        if row["status"] == "ok":
            assert _finite(row["seconds"]) and row["seconds"] > 0
            assert _finite(row["mel_residual"]) and _finite(row["spectrogram_error"])
        elif row["status"] == "skipped":
            assert row["error"].startswith("not installed")
        else:  # a peer that raised, e.g. torchaudio's gels on a rank-deficient filterbank
            assert row["status"] == "error" and row["error"]


def test_cuda_rows_are_measured_or_skipped_with_a_reason(quick):
    report, _ = quick
    rows = _rows(report, backend="cuda")
    assert {row["implementation"] for row in rows} >= {f"cumel-{s}" for s in CUMEL_SOLVERS}
    for row in rows:
        assert row["status"] in ("ok", "skipped", "error")
        if row["status"] != "ok":
            assert row["error"]


def test_plot_is_written_or_skipped(quick):
    _, out = quick
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "results.png").exists()
    else:
        assert (out / "results.png").stat().st_size > 0


def test_worker_subprocess_measures_a_peer(tmp_path):
    # --python-for with this interpreter: the numpy row travels through bench.worker
    status = cli.main(["--quick", "--workload", "speech-201x128", "--solvers", "none",
                       "--peers", "none", "--python-for", f"numpy={sys.executable}",
                       "--out", str(tmp_path)])
    assert status == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert portable_path(sys.executable) in report["environment"]["workers"]
    (row,) = report["rows"]
    assert row["implementation"] == "numpy-lstsq" and row["status"] == "ok", row["error"]
    assert _finite(row["mel_residual"])


def test_frames_for_crops_one_implementation(tmp_path):
    status = cli.main(["--quick", "--workload", "tts-513x80", "--solvers", "lstsq",
                       "--peers", "none", "--frames-for", "numpy=10", "--out", str(tmp_path)])
    assert status == 0
    report = json.loads((tmp_path / "results.json").read_text())
    rows = {row["implementation"]: row for row in report["rows"]}
    assert rows["cumel-lstsq"]["frames"] == 48
    assert rows["numpy-lstsq"]["frames"] == 10 and rows["numpy-lstsq"]["batch"] == [2, 5]


def test_batch_is_cropped_or_tiled_to_about_the_requested_frames():
    workload = WORKLOADS["speech-201x128"]
    whole = build_batch(workload, clips=2)
    assert whole.shape == (2, 501) and whole.clips == ["synthetic-0", "synthetic-1"]
    cropped = build_batch(workload, clips=2, frames=101)
    assert cropped.shape == (2, 51)
    tiled = build_batch(workload, clips=2, frames=2000)
    assert tiled.shape == (4, 501) and tiled.clips == ["synthetic-0", "synthetic-1"] * 2
    np.testing.assert_array_equal(tiled.mel[2], tiled.mel[0])
    assert tiled.mel.dtype == tiled.spec.dtype == np.float32


def test_bad_options_are_refused():
    with pytest.raises(SystemExit):
        cli.parse_args(["--peers", "tensorflow"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--python-for", "nothing=/usr/bin/python3"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--baseline", "no-such-row"])


def test_scaling_mode(tmp_path):
    pytest.importorskip("distributed", reason="the scaling table's Dask rows need distributed")
    out = tmp_path / "scaling"
    status = cli.main(["--scaling", "--quick", "--workload", "speech-201x128", "--workers", "1",
                       "--pieces", "3", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "results.json").read_text())
    modes = [(row["mode"], row["workers"]) for row in report["rows"]]
    assert modes == [("in memory (1 process)", 1),
                     ("dask LocalCluster, MALLOC_TRIM_THRESHOLD_ unset", 1),
                     ("dask LocalCluster, Dask's default MALLOC_TRIM_THRESHOLD_=65536", 1),
                     ("cumel invert FOLDER (folder CLI)", 1)]
    assert all(row["same_bits"] and row["frames"] == report["settings"]["frames"]
               for row in report["rows"])
    assert "| dask LocalCluster, MALLOC_TRIM_THRESHOLD_ unset | 1 |" in (out / "results.md").read_text()


def test_scaling_rejects_bad_workers():
    with pytest.raises(SystemExit):
        cli.parse_args(["--scaling", "--workers", "0,2"])


# An absolute path: "/name/name" not preceded by what makes it part of a URL, a relative path or a
# placeholder ("https://a/b", "../shared/audio", "<peers-venv>/bin/python", "frames/s").
ABSOLUTE_PATH = re.compile(r"(?<![\w.<>~:/\-)\]*])/[A-Za-z][\w.-]*/[\w.-]+")


def test_committed_results_and_readmes_name_no_path_of_the_machine_that_made_them():
    root = Path(REPOSITORY)
    files = [root / "README.md", *sorted((root / "bench" / "results").rglob("*.md")),
             *sorted((root / "bench" / "results").rglob("*.json"))]
    found = [f"{path.relative_to(root)}:{number}: {match.group(0)}"
             for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1)
             for match in ABSOLUTE_PATH.finditer(line)]
    assert not found, "absolute paths (use ../shared/..., <name-venv>/...):\n" + "\n".join(found)


def test_paths_are_recorded_relative_to_the_repository_or_as_placeholders(tmp_path):
    assert portable_path(os.path.join(REPOSITORY, "bench", "out")) == "bench/out"
    parent = os.path.dirname(REPOSITORY)
    if parent != os.path.dirname(parent):
        assert portable_path(os.path.join(parent, "shared", "audio")) == "../shared/audio"
    venv = tmp_path / "peers"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert portable_path(venv / "bin" / "python") == "<peers-venv>/bin/python"
    elsewhere = tmp_path / "data" / "audio"
    if not str(elsewhere).startswith(parent + os.sep):
        assert portable_path(elsewhere) == "<outside>/audio"
    command = portable_command(["python", "-m", "bench", "--audio", str(venv / "x"),
                                f"mindspore={venv}/bin/python", "--quick"])
    assert command == ("python -m bench --audio '<peers-venv>/x' "
                       "'mindspore=<peers-venv>/bin/python' --quick")
    assert portable_path(None) is None


def test_report_records_no_absolute_path(quick):
    report, out = quick
    for name in ("results.json", "results.md"):
        text = (out / name).read_text()
        assert REPOSITORY not in text and os.path.abspath(sys.executable) not in text
        assert not ABSOLUTE_PATH.search(text.replace(str(out), "")), name


def test_clips_cycle_when_a_folder_has_fewer_than_asked():
    from bench.batches import load_clips
    from cumel.workloads import WORKLOADS
    audio = Path(REPOSITORY) / "tests" / "data" / "audio"
    clips = load_clips(WORKLOADS["music-1025x128"], audio, count=5)     # two music clips there
    assert [name for name, _ in clips] == ["music_00", "music_01", "music_00", "music_01", "music_00"]
    assert clips[2][1] is clips[0][1]


def test_scaling_rows_frames_per_second_and_speedup_over_one_worker_of_the_same_mode():
    from bench import scaling
    rows = [scaling.row("a", 1, 600, 3, 2.0, True), scaling.row("a", 4, 600, 3, 0.5, True),
            scaling.row("b", 2, 300, 3, 1.0, True), scaling.row("b", 1, 300, 3, 3.0, False),
            scaling.row("c", 2, 300, 3, 1.5, True)]
    scaling.add_speedups(rows)
    assert [r["frames_per_second"] for r in rows] == pytest.approx([300, 1200, 300, 100, 200])
    assert [r["speedup_vs_1_worker"] for r in rows[:4]] == pytest.approx([1.0, 4.0, 3.0, 1.0])
    assert rows[4]["speedup_vs_1_worker"] is None          # no one-worker row of that mode


def test_scaling_folder_run_cuts_the_frames_into_pieces_and_joins_them_back(tmp_path):
    """cli_run: ``pieces`` files that tile the frames (a prime count not dividing them), and the
    outputs side by side are the inverse of the whole."""
    import cumel
    from bench import scaling
    workload = WORKLOADS["speech-201x128"]
    kwargs = workload.inverse_kwargs()
    mel = np.random.default_rng(1).random((workload.n_mels, 23)).astype(np.float32)
    S = scaling.cli_run(mel, kwargs, 1, 3, tmp_path)()
    pieces = sorted((tmp_path / "mels").glob("*.npy"))
    assert [p.name for p in pieces] == ["piece_000.npy", "piece_001.npy", "piece_002.npy"]
    assert np.array_equal(np.concatenate([np.load(p) for p in pieces], axis=1), mel)
    assert S.shape == (workload.n_stft, 23)
    np.testing.assert_allclose(S, cumel.InverseMelScale(**kwargs)(mel), rtol=1e-5, atol=1e-7)
