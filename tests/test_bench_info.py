"""Smoke test of ``python -m bench info`` (return_info's memory and time on a large batch) on a
small synthetic batch: the table's shape and the memory figure (never a timing)."""
import json

from bench import info
from cumel.transforms import INFO_CHUNK_ELEMENTS


def test_info_table(tmp_path):
    assert info.main(["--frames", "6000", "--batch", "2", "--repeats", "1",
                      "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    plain, with_info = report["rows"]
    assert report["environment"]["command"].startswith("python -m bench info")
    assert plain["shape"] == [2, 128, 3000] and plain["output bytes"] == 2 * 201 * 3000 * 4
    # the output is counted; the diagnostics, chunk by chunk, add at most a quarter of the
    # output beyond one chunk's float64 work (a chunk of s and its product with A, the product
    # smaller: a fixed cost, measured 0.6 MB above the quarter here; the NumPy loop's own work
    # arrays used to hide it, the compiled loop's are much smaller)
    assert plain["peak / output"] >= 1 and with_info["peak / output"] >= 1
    info_chunk = 2 * 8 * INFO_CHUNK_ELEMENTS
    assert with_info["peak bytes"] <= plain["peak bytes"] + 0.25 * plain["output bytes"] + info_chunk
    assert with_info["time / without info"] > 0
    assert "return_info=True" in (tmp_path / "results.md").read_text()
