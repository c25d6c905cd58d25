"""The GPU path on the CPU emulator (tests/cudasim): streaming in chunks, out-of-memory recovery,
shared-memory opt-in at large shapes, the SGD memory check, bounded SGD launches, the launch
fallback without CooperativeLaunch, and the input's device.

Marked ``emulated``: the unmodified ``cumel.cuda`` runs against the fake ``cupy`` whose kernels
execute on the CPU. Shapes are small (the emulator runs every CUDA thread as a fiber); the
hardware-only versions of these cases are in tests/test_gpu.py.
"""
import warnings

import numpy as np
import pytest

import cumel
from cumel import cuda
from cudasim import fakecupy

pytestmark = pytest.mark.emulated


def _pair(n_stft, n_mels, shape, seed=0, sample_rate=16000, dtype=np.float32):
    """A mel batch of ``shape`` (..., T) made from a random sparse non-negative spectrum."""
    fb = cumel.InverseMelScale(n_stft, n_mels, sample_rate).plan.fb64
    rng = np.random.default_rng(seed)
    S = rng.random(shape[:-1] + (n_stft, shape[-1])) * (rng.random((n_stft, 1)) < 0.5)
    return np.matmul(fb.T, S).astype(dtype)




@pytest.mark.parametrize("solver", ["nnls", "lstsq"])
def test_chunked_results_are_bit_identical(emulated_cupy, solver):
    cp = emulated_cupy
    mel = _pair(65, 24, (3, 11), seed=1)                       # 33 frames
    whole = cumel.InverseMelScale(65, 24, solver=solver, device="cuda")
    ref, info = whole(mel, return_info=True)
    assert info.device == "cuda"
    for cap in (2000, 9000, 17000):          # chunks of 2, 12, 22 frames: runs inside a channel,
        inv = cumel.InverseMelScale(65, 24, solver=solver, device="cuda", max_device_bytes=cap)
        chunk = cuda.frames_per_chunk(inv, np.float32, cap, host=True)
        assert chunk < 33                    # ... whole channels, and both
        S, info_c = inv(mel, return_info=True)
        assert isinstance(S, np.ndarray)
        np.testing.assert_array_equal(S, ref)
        np.testing.assert_array_equal(info_c.iterations, info.iterations)
    # a CuPy input chunked on the device: same bits, result on the device
    dev = cumel.InverseMelScale(65, 24, solver=solver, max_device_bytes=80)(cp.asarray(mel))
    assert isinstance(dev, cp.ndarray)
    np.testing.assert_array_equal(dev.get(), ref)
    np.testing.assert_allclose(ref, cumel.InverseMelScale(65, 24, solver=solver)(mel),
                               rtol=0, atol=1e-4 * float(np.abs(ref).max()))


def test_out_of_memory_on_the_first_chunk_is_survived_with_one_warning(emulated_cupy):
    cp = emulated_cupy
    mel = _pair(65, 24, (2, 9), seed=2)
    ref = cumel.InverseMelScale(65, 24, device="cuda")(mel)
    failures = []

    def hook(nbytes, device):       # the first chunk's device buffers do not fit, twice
        if nbytes >= 18 * 24 * 4 // 4 and len(failures) < 2:
            failures.append(nbytes)
            raise cp.cuda.memory.OutOfMemoryError(f"out of memory allocating {nbytes} bytes")

    cp.cudasim.alloc_hook = hook
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        S = cumel.InverseMelScale(65, 24, device="cuda")(mel)
    oom = [w for w in caught if "out of memory" in str(w.message)]
    assert len(failures) == 2 and len(oom) == 1             # halved twice, said once
    assert "chunks of" in str(oom[0].message)
    assert cp.cudasim.freed_blocks >= 2                      # the pool's cached blocks freed
    np.testing.assert_array_equal(S, ref)


def test_out_of_memory_down_to_one_frame_raises_clearly(emulated_cupy):
    cp = emulated_cupy

    def hook(nbytes, device):
        raise cp.cuda.memory.OutOfMemoryError("out of memory")

    mel = _pair(65, 24, (1, 4))
    cumel.InverseMelScale(65, 24, device="cuda")(mel)          # plan constants built first
    cp.cudasim.alloc_hook = hook
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(MemoryError, match="chunk of one frame.*device='cpu'"):
            cumel.InverseMelScale(65, 24, device="cuda")(mel)


@pytest.mark.parametrize("n_mels, n_stft, sample_rate", [
    (256, 1025, 48000), (512, 2049, 96000), (1024, 4097, 192000)])
def test_large_shapes_match_numpy(emulated_cupy, n_mels, n_stft, sample_rate):
    mel = _pair(n_stft, n_mels, (1, 2), seed=3, sample_rate=sample_rate, dtype=np.float64)
    inv = cumel.InverseMelScale(n_stft, n_mels, sample_rate, device="cuda")
    S, info = inv(mel, return_info=True)
    cpu, cpu_info = cumel.InverseMelScale(n_stft, n_mels, sample_rate)(mel, return_info=True)
    assert info.device == "cuda"
    assert np.abs(S - cpu).max() <= 1e-4 * np.abs(cpu).max()
    assert info.mel_residual.max() <= max(2e-5, 2 * cpu_info.mel_residual.max())
    per_warp = cuda.nnls_shared_bytes(n_mels, n_stft, 1)
    kernel = cuda._kernel("nnls.cu", False, "nnls_solve<double>")
    if cuda.WARPS_PER_BLOCK * per_warp + cuda.STATIC_SHARED > cuda.SHARED_LIMIT:   # opted in
        assert kernel.max_dynamic_shared_size_bytes > cuda.SHARED_LIMIT


def test_shape_past_the_device_maximum(emulated_cupy, monkeypatch):
    monkeypatch.setattr(fakecupy, "MAX_SHARED_PER_BLOCK_OPTIN", 49152)   # a 48 KB-only device
    mel = _pair(4097, 1024, (1, 1), sample_rate=192000)
    with pytest.raises(cuda.DeviceLimitError, match="n_mels=1024.*MaxSharedMemoryPerBlockOptin"):
        cumel.InverseMelScale(4097, 1024, 192000, device="cuda")(mel)
    with pytest.warns(RuntimeWarning, match="solving on the CPU instead"):
        S = cumel.InverseMelScale(4097, 1024, 192000, device="auto")(mel)
    np.testing.assert_array_equal(S, cumel.InverseMelScale(4097, 1024, 192000)(mel))


@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_sgd_batch_too_large_for_the_free_memory_raises_clearly(emulated_cupy, solver):
    cp = emulated_cupy
    mel = _pair(65, 24, (4, 50))
    cp.cudasim.mem_free = 100_000                # a mocked free-memory figure
    inv = cumel.InverseMelScale(65, 24, solver=solver, seed=0, max_iter=5, device="cuda")
    with pytest.raises(MemoryError) as err:
        inv(mel)
    message = str(err.value)
    need = (3 if solver == "torchaudio" else 4) * 200 * 65 * 4 + mel.nbytes
    assert f"needs {need} bytes" in message and "100000 bytes are free" in message
    assert "device='cpu' or smaller batches" in message
    cp.cudasim.mem_free = None
    capped = cumel.InverseMelScale(65, 24, solver=solver, seed=0, max_iter=5, device="cuda",
                                   max_device_bytes=50_000)
    with pytest.raises(MemoryError, match="max_device_bytes=50000"):
        capped(cp.asarray(mel))
    S = cumel.InverseMelScale(65, 24, solver=solver, seed=0, max_iter=5, device="cuda")(mel)
    np.testing.assert_allclose(S, cumel.InverseMelScale(65, 24, solver=solver, seed=0,
                                                        max_iter=5)(mel), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_sgd_in_bounded_launches_equals_one_launch(emulated_cupy, monkeypatch, solver):
    cp = emulated_cupy
    mel = _pair(33, 12, (2, 5), seed=4)
    kw = dict(solver=solver, seed=1, max_iter=40, tolerance_change=0, device="cuda")
    inv = cumel.InverseMelScale(33, 12, **kw)
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 10 ** 6)
    launches = cp.cudasim.launches
    one, one_info = inv(mel, return_info=True)
    assert cp.cudasim.launches - launches == 1
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 7)
    launches = cp.cudasim.launches
    many, many_info = inv(mel, return_info=True)
    assert cp.cudasim.launches - launches == 6              # ceil(40 / 7)
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(many_info.iterations, one_info.iterations)
    assert one_info.iterations.max() == 40
    cpu = cumel.InverseMelScale(33, 12, **{**kw, "device": "cpu"})(mel)
    np.testing.assert_allclose(one, cpu, rtol=1e-5, atol=1e-6)


def test_sgd_stops_early_across_launches(emulated_cupy, monkeypatch):
    mel = _pair(33, 12, (1, 6), seed=5)
    kw = dict(solver="torchaudio", seed=2, max_iter=200, tolerance_change=1e-3)
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 4)
    S, info = cumel.InverseMelScale(33, 12, device="cuda", **kw)(mel, return_info=True)
    cpu, cpu_info = cumel.InverseMelScale(33, 12, **kw)(mel, return_info=True)
    assert 1 < info.iterations.max() < 200
    assert abs(int(info.iterations.max()) - int(cpu_info.iterations.max())) <= 1
    np.testing.assert_allclose(S, cpu, rtol=1e-4, atol=1e-6)


def test_torchaudio_without_cooperative_launch_runs_a_launch_per_iteration(emulated_cupy):
    cp = emulated_cupy
    mel = _pair(33, 12, (2, 5), seed=6)
    inv = cumel.InverseMelScale(33, 12, solver="torchaudio", seed=3, max_iter=12,
                                tolerance_change=0, device="cuda")
    coop, coop_info = inv(mel, return_info=True)
    cuda._kernel_on.cache_clear()
    cp.cudasim.cooperative_launch = 0
    launches = cp.cudasim.launches
    plain, plain_info = inv(mel, return_info=True)
    assert cp.cudasim.launches - launches == 13              # 12 steps + the last stop test
    np.testing.assert_array_equal(plain, coop)
    np.testing.assert_array_equal(plain_info.iterations, coop_info.iterations)


def test_cupy_input_on_device_1_is_solved_there(emulated_cupy):
    cp = emulated_cupy
    cp.cudasim.device_count = 2
    mel = _pair(65, 24, (2, 3), seed=7)
    ref = cumel.InverseMelScale(65, 24)(mel)
    for solver in ("nnls", "lstsq", "torchaudio"):
        kw = dict(solver=solver, seed=0, max_iter=10)
        with cp.cuda.Device(1):
            x = cp.asarray(mel)
        S = cumel.InverseMelScale(65, 24, **kw)(x)
        assert S.device.id == 1 and cp.cuda.Device().id == 0     # result there, caller's device kept
        cpu = cumel.InverseMelScale(65, 24, **kw)(mel)
        np.testing.assert_allclose(S.get(), cpu, rtol=1e-4, atol=1e-4 * float(np.abs(cpu).max()))
    assert S.device.id == 1 and np.isfinite(ref).all()


def test_out_views_of_device_arrays(emulated_cupy):
    cp = emulated_cupy
    from cumel import _backend
    out = cp.zeros((2, 65, 3), np.float32)
    assert _backend.out_view(out, cp) is out
    with pytest.raises(ValueError, match="out must be a cupy.ndarray"):
        _backend.out_view(np.zeros(3), cp)
    with pytest.raises(ValueError, match="out must be a numpy.ndarray"):
        _backend.out_view(out, np)
    mel = _pair(65, 24, (2, 3))
    inv = cumel.InverseMelScale(65, 24, device="cuda")
    host_out = np.full((2, 65, 3), np.nan, np.float32)
    S, *_ = cuda.solve_host(inv, mel, out=host_out)
    assert S is host_out
    np.testing.assert_array_equal(host_out, inv(mel))


def test_out_on_the_device_and_for_a_streamed_batch(emulated_cupy):
    cp = emulated_cupy
    mel = _pair(65, 24, (2, 3), seed=8)
    ref = cumel.InverseMelScale(65, 24)(mel)
    out = cp.full((2, 65, 3), np.nan, np.float32)
    assert cumel.InverseMelScale(65, 24)(cp.asarray(mel), out=out) is out
    np.testing.assert_allclose(out.get(), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    host = np.full((2, 65, 3), np.nan, np.float32)
    S = cumel.InverseMelScale(65, 24, device="cuda", max_device_bytes=2000)(mel, out=host)
    assert S is host
    np.testing.assert_array_equal(host, out.get())
    with pytest.raises(ValueError, match="out must be a cupy.ndarray"):
        cumel.InverseMelScale(65, 24)(cp.asarray(mel), out=np.empty((2, 65, 3), np.float32))
    with pytest.raises(ValueError, match="out must be a numpy.ndarray"):
        cumel.InverseMelScale(65, 24, device="cuda")(mel, out=out)


def test_new_kernels_under_every_fiber_order(emulated_cupy_order, monkeypatch):
    """Launch-parity state, the per-launch stop test and the lstsq kernel: no order dependence
    (the emulator's barrier checks fire on a race; results must not move by a bit)."""
    cp = emulated_cupy_order
    mel = _pair(33, 12, (2, 5), seed=9)
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 4)
    results = {}
    for solver in ("torchaudio", "mindspore", "lstsq"):
        kw = dict(solver=solver, seed=1, max_iter=10, tolerance_change=0)
        results[solver] = cumel.InverseMelScale(33, 12, device="cuda", **kw)(mel)
    cp.cudasim.cooperative_launch = 0
    cuda._kernel_on.cache_clear()
    plain = cumel.InverseMelScale(33, 12, device="cuda", solver="torchaudio", seed=1, max_iter=10,
                                  tolerance_change=0)(mel)
    np.testing.assert_array_equal(plain, results["torchaudio"])
    with fakecupy.order("forward"):
        cp.cudasim.cooperative_launch = 1
        cuda._kernel_on.cache_clear()
        for solver, S in results.items():
            kw = dict(solver=solver, seed=1, max_iter=10, tolerance_change=0)
            np.testing.assert_array_equal(
                cumel.InverseMelScale(33, 12, device="cuda", **kw)(mel), S)


def test_sgd_out_of_memory_is_retried_then_explained(emulated_cupy):
    cp = emulated_cupy
    mel = _pair(33, 12, (2, 5), seed=10)
    kw = dict(solver="torchaudio", seed=1, max_iter=5, device="cuda")
    ref = cumel.InverseMelScale(33, 12, **kw)(mel)
    calls = []

    def once(nbytes, device):
        if nbytes == 10 * 33 * 4 and not calls:      # the first (10 frames, 33 bins) state array
            calls.append(nbytes)
            raise cp.cuda.memory.OutOfMemoryError("out of memory")

    cp.cudasim.alloc_hook = once
    np.testing.assert_array_equal(cumel.InverseMelScale(33, 12, **kw)(mel), ref)
    assert calls and cp.cudasim.freed_blocks >= 1

    def always(nbytes, device):
        if nbytes == 10 * 33 * 4:
            raise cp.cuda.memory.OutOfMemoryError("out of memory")

    cp.cudasim.alloc_hook = always
    with pytest.raises(MemoryError, match="ran out of device memory.*device='cpu'"):
        cumel.InverseMelScale(33, 12, **kw)(mel)
