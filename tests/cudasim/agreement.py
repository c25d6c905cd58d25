"""Print how closely the emulated kernels agree with the NumPy path (a Markdown table).

Run from the repository root::

    python tests/cudasim/agreement.py

Columns: kernel, dtype, case, max |gpu - cpu| / max |cpu|, and the largest per-frame difference
of iteration counts. Use it to tighten the thresholds at the top of tests/test_emulated.py.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from conftest import audio_pair, fixture_index, load_fixture  # noqa: E402
from cudasim import fakecupy  # noqa: E402
from cudasim.fixtures import clear_cumel_caches  # noqa: E402


def _cases():
    from test_emulated import WORKLOADS, _kwargs
    seed = load_fixture("ta08_seed_example.npz")["melspec"]
    yield "torchaudio", "seed example", seed, dict(n_stft=2, n_mels=4, seed=1)
    yield "mindspore", "seed example", seed, dict(n_stft=2, n_mels=4, seed=3)
    entries = fixture_index("mindspore_index.json") + fixture_index("torchaudio_index.json")
    for solver in ("nnls", "torchaudio", "mindspore"):
        for e in entries:
            mel = load_fixture(e["file"])["melspec"]
            yield solver, e["file"], mel, dict(_kwargs(e, solver), seed=e.get("seed") or 0)
    for workload, clip, kw in WORKLOADS:
        _, M = audio_pair(workload, clip)
        for solver in ("nnls", "torchaudio", "mindspore"):
            extra = {} if solver == "nnls" else dict(max_iter=50, seed=1)
            yield solver, f"{workload} 64 frames", np.ascontiguousarray(M[:, 100:164]), dict(kw, **extra)
    _, M = audio_pair("speech-201x128", "speech_00")
    for solver in ("nnls", "torchaudio", "mindspore"):
        for it in (1, 2):
            yield solver, f"max_iter={it}", np.ascontiguousarray(M[:, :40]), dict(
                n_stft=201, n_mels=128, max_iter=it, seed=1)


def main():
    import cumel
    saved = fakecupy.install()
    clear_cumel_caches()
    warnings.simplefilter("ignore")
    print("| kernel | dtype | case | max rel diff | max iteration diff |")
    print("| --- | --- | --- | --- | --- |")
    try:
        for solver, case, mel, kw in _cases():
            for dtype in (np.float32, np.float64):
                m = mel.astype(dtype)
                gpu, gi = cumel.InverseMelScale(**kw, solver=solver, device="cuda")(m, return_info=True)
                cpu, ci = cumel.InverseMelScale(**kw, solver=solver)(m, return_info=True)
                rel = float(np.abs(gpu.astype(np.float64) - cpu).max() / max(np.abs(cpu).max(), 1e-30))
                di = int(np.abs(gi.iterations - ci.iterations).max())
                print(f"| {solver} | {np.dtype(dtype).name} | {case} | {rel:.2g} | {di} |")
    finally:
        fakecupy.uninstall(saved)
        clear_cumel_caches()


if __name__ == "__main__":
    main()
