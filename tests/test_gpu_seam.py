"""Host-side pieces of the GPU path that need neither a GPU nor the emulator: the kernel code
handed to NVRTC, the chunking of a batch, out_view on NumPy, the launch budget, the knobs, and
the thread safety of the per-filterbank caches."""
import shutil
import threading

import numpy as np
import pytest

import cumel
from cumel import _backend, cuda
from cumel.transforms import Plan


def test_module_code_inlines_every_local_include(tmp_path, monkeypatch):
    with_header = [name for name, _ in cuda.KERNELS
                   if '#include "common.cuh"' in cuda.kernel_source(name)]
    assert {"nnls.cu", "sgd.cu", "lstsq.cu"} <= set(with_header)
    for name, _ in cuda.KERNELS:
        code = cuda.module_code(name)
        assert '#include "' not in code
        assert "#pragma once" not in code
        if name in with_header:
            assert "namespace cumel" in code and "warp_sum" in code     # common.cuh's text
    # CuPy keys its cache on this string: a change to the header alone changes every key
    for f in cuda.kernel_dir().iterdir():
        if f.name.endswith((".cu", ".cuh")):
            shutil.copy(f, tmp_path / f.name)
    before = {name: cuda.module_code(name) for name, _ in cuda.KERNELS}
    monkeypatch.setattr(cuda.compile, "kernel_dir", lambda: tmp_path)
    assert {name: cuda.module_code(name) for name, _ in cuda.KERNELS} == before
    header = tmp_path / "common.cuh"
    header.write_text(header.read_text() + "\n// a header-only change\n")
    after = {name: cuda.module_code(name) for name, _ in cuda.KERNELS}
    assert all(after[name] != before[name] for name in with_header)


@pytest.mark.parametrize("B, T", [(1, 1), (3, 11), (5, 2), (1, 40)])
@pytest.mark.parametrize("chunk", [1, 2, 7, 11, 12, 23, 1000])
def test_chunk_slabs_cover_every_frame_once_in_order(B, T, chunk):
    for start in (0, min(3, B * T - 1)):
        seen = []
        for b0, b1, t0, t1 in cuda.chunk_slabs(B, T, start, chunk):
            assert 0 < (b1 - b0) * (t1 - t0) <= chunk
            assert t0 == 0 and t1 == T or b1 == b0 + 1
            seen += [b * T + t for b in range(b0, b1) for t in range(t0, t1)]
        assert seen == list(range(start, B * T))


def test_out_view_on_the_host():
    out = np.zeros((2, 3))
    assert _backend.out_view(out, np) is out
    with pytest.raises(ValueError, match="out must be a numpy.ndarray"):
        _backend.out_view([[0.0]], np)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _backend.out_view(out, np)


def test_launch_budget_is_bounded_by_the_work(monkeypatch):
    inv = cumel.InverseMelScale(201, 128, solver="torchaudio")
    small = cuda.iterations_per_launch(inv, 10, 4)
    large = cuda.iterations_per_launch(inv, 10_000_000, 4)
    assert small > large >= 1
    seconds = cuda.sgd.LAUNCH_OVERHEAD + 4.0 * 10_000 * 201 * 4 / cuda.sgd.BANDWIDTH_FLOOR
    assert cuda.iterations_per_launch(inv, 10_000, 4) * seconds <= cuda.sgd.LAUNCH_SECONDS
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 3)
    assert cuda.iterations_per_launch(inv, 10, 4) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1GB", True])
def test_max_device_bytes_is_validated(bad):
    with pytest.raises(ValueError, match="max_device_bytes must be a positive integer"):
        cumel.InverseMelScale(201, 128, max_device_bytes=bad)
    assert cumel.InverseMelScale(201, 128, max_device_bytes=2 ** 33).max_device_bytes == 2 ** 33


def test_plan_cache_builds_once_under_threads():
    plan = Plan(cumel.InverseMelScale(33, 10).key)
    calls = []
    barrier = threading.Barrier(8)

    def build():
        calls.append(1)
        return object()

    results = []

    def worker():
        barrier.wait()
        results.append(plan.cached("x", build))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


class _ClearedAfterEveryLookup(dict):
    """A start cache that another thread empties right after each lookup: the interleaving
    that made ``start()`` raise KeyError (check, clear elsewhere, read)."""

    def __contains__(self, key):
        found = dict.__contains__(self, key)
        self.clear()
        return found

    def get(self, key, default=None):
        value = dict.get(self, key, default)
        self.clear()
        return value


def test_start_survives_a_cache_clear_between_lookup_and_use():
    inv = cumel.InverseMelScale(33, 10, solver="torchaudio", seed=3)
    first = inv.start((2, 33), np.float32)
    inv._starts = _ClearedAfterEveryLookup(inv._starts)
    for _ in range(3):
        np.testing.assert_array_equal(inv.start((2, 33), np.float32), first)


@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
def test_out_receives_the_result(solver):
    mel = np.random.default_rng(0).random((2, 10, 4)).astype(np.float32)
    inv = cumel.InverseMelScale(33, 10, solver=solver, seed=0, max_iter=20)
    out = np.full((2, 33, 4), np.nan, np.float32)
    S, info = inv(mel, out=out, return_info=True)
    assert S is out and info.iterations.shape == (2, 4)
    np.testing.assert_array_equal(out, inv(mel))
    out2 = np.empty((33, 4), np.float32) if solver != "mindspore" else np.empty((1, 33, 4), np.float32)
    assert cumel.inverse_mel_scale(mel[0], n_stft=33, solver=solver, seed=0, max_iter=20,
                                   out=out2) is out2


def test_bad_out_raises_naming_out():
    mel = np.ones((10, 4), np.float32)
    inv = cumel.InverseMelScale(33, 10)
    with pytest.raises(ValueError, match=r"out must have shape \(33, 4\) and dtype float32"):
        inv(mel, out=np.empty((33, 5), np.float32))
    with pytest.raises(ValueError, match=r"out must have shape .* got shape \(33, 4\) and dtype float64"):
        inv(mel, out=np.empty((33, 4), np.float64))
    with pytest.raises(ValueError, match="out must be a numpy.ndarray"):
        inv(mel, out=[[0.0] * 4] * 33)


def test_host_chunks_stay_small_enough_to_overlap():
    inv = cumel.InverseMelScale(201, 128)
    per_frame = (201 + 128) * 4
    huge = cuda.frames_per_chunk(inv, np.float32, 80 * 2 ** 30, host=True)
    assert huge == cuda.CHUNK_TARGET_BYTES // per_frame        # not all of an 80 GB budget
    assert cuda.frames_per_chunk(inv, np.float32, 10_000, host=True) == 10_000 // ((16 + per_frame) * 2)
    assert cuda.frames_per_chunk(inv, np.float32, 10, host=True) == 1
    assert cuda.frames_per_chunk(inv, np.float32, 1600, host=False) == 100   # device: scratch only
