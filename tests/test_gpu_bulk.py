"""GPU paths of the bulk features: the folder CLI with --device cuda (frames of many files in one
solve) and Dask arrays with CuPy-backed chunks. Marked ``gpu``; skipped without CuPy and a CUDA
device."""
import numpy as np
import pytest

import cumel
from cumel import _backend, cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _backend.gpu_available(), reason="needs CuPy and a CUDA device"),
]

N_STFT, N_MELS = 65, 16


def _close(a, b, rtol=1e-4):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.abs(a - b).max() <= rtol * max(float(np.abs(b).max()), 1e-30)


def test_folder_cli_on_the_gpu_batches_files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    mels = {f"m{i}.npy": rng.random((16, 5 + 7 * i)).astype(np.float32) for i in range(6)}
    mels["b.npy"] = rng.random((2, 16, 9)).astype(np.float32)
    for name, mel in mels.items():
        np.save(tmp_path / "in" / name, mel)
    assert cli.main(["invert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--n-stft",
                     str(N_STFT), "--device", "cuda", "--batch-frames", "40", "--no-progress"]) == 0
    inv = cumel.InverseMelScale(N_STFT, N_MELS)
    for name, mel in mels.items():
        _close(np.load(tmp_path / "out" / name), inv(mel))


def test_dask_with_cupy_chunks():
    da = pytest.importorskip("dask.array")
    import cupy
    mel = np.random.default_rng(1).random((3, N_MELS, 40)).astype(np.float32)
    inv = cumel.InverseMelScale(N_STFT, N_MELS)
    x = da.from_array(mel, chunks=(1, N_MELS, 16)).map_blocks(cupy.asarray)
    out = inv(x)
    assert isinstance(out._meta, cupy.ndarray)
    _close(cupy.asnumpy(out.compute(scheduler="sync")), inv(mel))
