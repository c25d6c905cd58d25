"""``python -m bench gpu --quick`` end to end on the CUDA emulator (tests/cudasim): the rows, the
bound, the four files. The timings are meaningless here and the results say so."""
import json
import os
import re

import pytest

from cudasim import fakecupy, fixtures
from cumel.workloads import WORKLOADS

pytestmark = pytest.mark.emulated
FILES = {"results.json", "results.md", "results.png", "pytest.log"}
KERNEL_SOLVERS = ("nnls", "lstsq", "torchaudio", "mindspore", "griffinlim")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ``bench gpu --quick`` run on the emulator (installed for the module's run only)."""
    reason = fixtures.unavailable_reason()
    if reason:
        pytest.skip(reason)
    from bench import gpu
    out = tmp_path_factory.mktemp("bench-gpu") / "out"
    saved = fakecupy.install()
    fixtures.clear_cumel_caches()
    try:
        status = gpu.main(["--quick", "--out", str(out), "--budget", "300"])
    finally:
        fakecupy.uninstall(saved)
        fixtures.clear_cumel_caches()
    return status, out, json.loads((out / "results.json").read_text())


def test_exits_0_and_writes_the_four_files(run):
    status, out, _ = run
    assert status == 0
    entries = list(out.iterdir())
    assert {p.name for p in entries} == FILES                   # nothing else, no folders
    assert all(p.is_file() and p.stat().st_size < 16 * 2 ** 20 for p in entries)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pytest" in (out / "pytest.log").read_text()
    assert "EMULATED" in (out / "results.md").read_text()


def test_results_say_emulated_and_name_the_environment(run):
    _, _, results = run
    assert results["emulated"] is True
    env = results["environment"]
    assert env["gpu"]["name"] == results["device"]["name"] == fakecupy.DEVICE_NAME
    assert env["gpu"]["driver"] == env["gpu"]["cuda"] == "13.0"
    assert {"cupy", "numpy", "cumel", "torch", "torchaudio"} <= set(env["versions"])
    assert "cudasim" in env["versions"]["cupy"]
    assert results["device"]["memory_bandwidth"] == pytest.approx(
        2 * fakecupy.MEMORY_CLOCK_RATE_KHZ * 1e3 * fakecupy.MEMORY_BUS_WIDTH / 8)
    # pytest -m gpu ran (exit 0) and selected the GPU tests: here, with no CUDA device, each of
    # them skips (exit 5 would say none was collected)
    assert results["pytest"]["returncode"] == 0, results["pytest"]
    assert re.search(r"\b\d+ skipped\b", results["pytest"]["summary"]), results["pytest"]
    stages = {s["name"]: s["status"] for s in results["stages"]}
    assert stages["timings"] == "ok" and stages["environment"] == "ok"


def test_a_cuda_row_with_a_rate_and_a_bound_for_every_kernel_solver(run):
    _, _, results = run
    rows = results["rows"]
    for row in rows:
        assert {"solver", "backend", "workload", "n_frames", "frames_per_s",
                "bound_frames_per_s", "seconds"} <= set(row)
    for solver in KERNEL_SOLVERS + ("mel_to_audio",):
        ok = [r for r in rows if r["solver"] == solver and r["backend"] == "cuda"
              and r["status"] == "ok"]
        assert ok, f"no cuda row for {solver}"
        for r in ok:
            assert r["frames_per_s"] > 0 and r["bound_frames_per_s"] > 0 and r["seconds"] > 0
            assert r["workload"] == "speech-201x128" and r["n_frames"] == 1024
    assert {r["backend"] for r in rows} >= {"cuda", "cuda-host", "cuda-torch", "torch-cuda"}
    for r in rows:                        # the torch rows: the emulator takes no torch tensors
        assert (r["status"] == "ok") == (r["backend"] in ("cuda", "cuda-host")), r
        if r["status"] != "ok":
            assert r["status"] == "skipped" and "emulator" in r["error"]


def test_bound_is_the_cost_model_on_the_reported_device(run):
    from bench import bound, gpu
    _, _, results = run
    device = bound.DeviceModel(**{k: results["device"][k] for k in (
        "name", "sm_count", "clock_hz", "memory_bandwidth", "fp32_flops_per_clock",
        "fp64_flops_per_clock", "compute_capability")})
    w = WORKLOADS["speech-201x128"]
    models = bound.kernel_cost_models()
    assert set(gpu.COST_MODEL.values()) <= set(models)
    for r in results["rows"]:
        if r["status"] != "ok" or r["solver"] == "mel_to_audio":
            continue
        model = models[r["bound"]["model"]]
        expected = bound.bound(model, device, r["steps"], 4, n_mels=w.n_mels, n_freqs=w.n_stft,
                               n_fft=w.n_fft, hop=w.hop)["frames_per_s"]
        assert r["bound_frames_per_s"] == pytest.approx(expected)
        assert r["measured_over_bound"] == pytest.approx(r["frames_per_s"] / expected)


def test_files_hold_no_absolute_path_of_this_machine(run):
    _, out, _ = run
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("results.json", "results.md"):
        text = (out / name).read_text()
        assert repository not in text and os.path.expanduser("~") + "/" not in text
        assert str(out) not in text


def test_stream_rows_on_the_device_and_the_cpu(run):
    """The streams-at-once rows (``--quick``: 2 streams of 3 frames at n_iter 1): the device row
    and the CPU reference measured, each real-time factor the audio of the stated frames over
    the stated seconds, the samples and the latency those of MelStream's guarantees."""
    _, out, results = run
    assert {s["name"]: s["status"] for s in results["stages"]}["stream"] == "ok"
    settings, rows = results["stream"]["settings"], results["stream"]["rows"]
    assert (settings["front_end"], settings["sample_rate"], settings["n_fft"], settings["hop"],
            settings["n_mels"], settings["lookahead"]) == ("tacotron2", 22050, 1024, 256, 80, 3)
    assert sorted(r["backend"] for r in rows) == ["cpu", "cuda"]
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None, r
        assert (r["streams"], r["n_iter"], r["frames"]) == (2, 1, 3) == (
            settings["streams"][0], settings["n_iters"][0], settings["frames"])
        assert r["iterations_per_frame"] == (settings["lookahead"] + 1) * r["n_iter"]
        assert r["wall_seconds"] > 0 and r["cpu_seconds"] >= 0 and r["warmup_seconds"] > 0
        audio = r["streams"] * r["frames"] * settings["hop"] / settings["sample_rate"]
        assert r["seconds_audio"] == pytest.approx(audio)
        assert r["realtime"] == pytest.approx(audio / r["wall_seconds"])
        # the pushes and the flush: hop (T - 1) samples a stream (centred frames), the length of
        # mel_to_audio; the output trails by n_fft - right + (K - 1) hop = 1024 samples
        assert r["samples"] == settings["hop"] * (r["frames"] - 1)
        assert r["latency_samples"] == 1024
        assert r["latency_ms"] == pytest.approx(1000 * 1024 / 22050)
    md = (out / "results.md").read_text()
    assert "## Streams at once: cumel.MelStream" in md
    for r in rows:
        assert f"| {r['backend']} | 2 | 1 | 4 | 3 |" in md
