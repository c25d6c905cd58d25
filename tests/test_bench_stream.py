"""Smoke test of ``python -m bench stream`` on the synthetic signal: the tables' shape and the
spectral convergence ratio (never a timing)."""
import json

from bench import stream


def test_stream_tables(tmp_path):
    status = stream.main(["--audio", str(tmp_path / "none"), "--workloads", "tts-513x80",
                          "--lookaheads", "0,3", "--total", "9", "--streams", "1,2",
                          "--speed-iters", "1", "--frames", "12", "--cores", "0",
                          "--out", str(tmp_path)])
    assert status == 0
    results = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "results.md").read_text()
    q, s = results["quality"], results["speed"]
    # n_iter = ceil(total / (K + 1)): a total not divisible by K + 1 rounds up, never down
    assert [(r["lookahead"], r["n_iter"], r["iterations_per_frame"]) for r in q] == [
        (0, 9, 9), (3, 3, 12)]
    for r in q:
        assert r["clip"] == "synthetic" and r["ratio"] == r["sc_stream"] / r["sc_offline"]
        # the same iterations a frame: the stream is no worse than 2x offline (measured 1.0-1.3)
        assert 0 < r["sc_stream"] < 2 * r["sc_offline"]
    assert [r["streams"] for r in s] == [1, 2] and all(r["realtime"] > 0 for r in s)
    assert all(r["samples"] == 256 * 11 for r in s)
    # every figure of a speed row from its own fields: 12 frames of hop 256 at 22050 Hz per
    # stream, the real-time factors count every stream
    for r in s:
        assert r["frames"] == 12 and r["seconds_audio"] == 256 * 12 / 22050
        assert r["realtime"] == r["streams"] * r["seconds_audio"] / r["wall"]
        assert r["realtime_cpu"] == r["streams"] * r["seconds_audio"] / r["cpu"]
    assert ("shared by other work" in md) == (results["environment"]["load_average"][0] >= 1.0)
    assert "| tts-513x80 | 3 | 3 | 12 |" in md
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_tables_mean_and_worst_clip():
    """The look-ahead table: the mean over the clips, and the worst (largest) clip ratio."""
    rows = [dict(workload="tts-513x80", clip=c, frames=10, lookahead=3, n_iter=2,
                 iterations_per_frame=8, sc_stream=s, sc_offline=0.2, ratio=s / 0.2)
            for c, s in (("a", 0.18), ("b", 0.26), ("c", 0.2))]
    results = {"environment": {"command": "x", "timestamp": "t", "cpu": "c", "cores": 2,
                               "load_average": [0.1, 0.1, 0.1]},
               "pinned": "1 core(s)", "load_end": [0.2, 0.1, 0.1], "quality": rows, "speed": []}
    md = stream.markdown(results)
    assert "| tts-513x80 | 3 | 2 | 8 | 0.2133 | 0.2000 | 1.067 | 1.300 |" in md
    assert "shared by other work" not in md
    results["environment"]["load_average"] = [2.5, 2.0, 1.0]
    assert "shared by other work" in stream.markdown(results)
