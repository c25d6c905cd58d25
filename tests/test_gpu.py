"""GPU against NumPy: the CUDA kernels compute the same iterations as the NumPy solvers.

Marked ``gpu``; skipped, with the reason, where CuPy or a CUDA device is missing.
"""
import numpy as np
import pytest

import cumel
from cumel import _backend

from conftest import audio_pair, fixture_kwargs, fixture_params, load_fixture, mel_residual

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _backend.gpu_available(), reason="needs CuPy and a CUDA device"),
]

SOLVERS = ["nnls", "lstsq", "torchaudio", "mindspore"]


def _cupy():
    import cupy
    return cupy


def _close(gpu, cpu, rtol=1e-4):
    gpu = _cupy().asnumpy(gpu) if not isinstance(gpu, np.ndarray) else gpu
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    assert np.isfinite(gpu).all()
    assert np.abs(gpu - cpu).max() <= rtol * max(float(np.abs(cpu).max()), 1e-30)


def _assert_nnls_agrees(gpu, gpu_info, cpu, cpu_info):
    """nnls on the GPU against NumPy. On the emulator (tests/test_emulated.py) they agree to 1e-9
    with equal Newton step counts; the hardware contracts multiply-adds into FMAs (nvcc's
    default), so a rare frame may sit on another side of a rounding-level decision: allow one
    step on at most 1% of the frames, and 1e-5 of the answer."""
    gpu = _cupy().asnumpy(gpu) if not isinstance(gpu, np.ndarray) else gpu
    _close(gpu, cpu, rtol=1e-5)
    steps = np.abs(np.asarray(gpu_info.iterations) - np.asarray(cpu_info.iterations))
    assert steps.max() <= 1 and (steps > 0).mean() <= 0.01
    np.testing.assert_array_equal(gpu_info.converged, cpu_info.converged)


@pytest.mark.parametrize("entry", fixture_params())
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_fixture_gpu_equals_numpy(entry, solver):
    data = load_fixture(entry["file"])
    kwargs = fixture_kwargs(entry, solver)
    seed = entry.get("seed", 0)
    mel = data["melspec"]
    cpu, cpu_info = cumel.InverseMelScale(**kwargs, solver=solver, seed=seed)(mel, return_info=True)
    gpu, gpu_info = cumel.InverseMelScale(**kwargs, solver=solver, seed=seed, device="cuda")(
        mel, return_info=True)
    assert isinstance(gpu, np.ndarray)        # NumPy in, NumPy out
    assert gpu_info.device == "cuda"
    if solver == "nnls":
        _assert_nnls_agrees(gpu, gpu_info, cpu, cpu_info)
    else:
        _close(gpu, cpu)
    if solver in ("torchaudio", "mindspore"):
        # compat solvers may stop one iteration apart on exact ties of the loss
        assert np.abs(gpu_info.iterations - cpu_info.iterations).max() <= 1
    if solver == "torchaudio" and entry["file"].startswith("ta08_"):
        _close(gpu, data["output"])
    if solver == "mindspore" and entry["file"].startswith("ms_"):
        _close(gpu, data["output"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", SOLVERS)
def test_speech_201x128_real_audio(solver, dtype):
    S_true, M = audio_pair("speech-201x128", "speech_00")
    M = M[:, :300].astype(dtype)
    kw = dict(n_stft=201, n_mels=128, solver=solver, seed=4)
    if solver in ("torchaudio", "mindspore"):
        kw["max_iter"] = 300
    cp = _cupy()
    cpu, cpu_info = cumel.InverseMelScale(**kw)(M, return_info=True)
    gpu, gpu_info = cumel.InverseMelScale(**kw)(cp.asarray(M), return_info=True)
    assert isinstance(gpu, cp.ndarray)        # CuPy in, CuPy out
    if solver == "nnls":
        _assert_nnls_agrees(gpu, gpu_info, cpu, cpu_info)
        fb = cumel.InverseMelScale(201, 128).fb
        assert mel_residual(fb, cp.asnumpy(gpu), M) <= 2e-5      # tolerance_loss + the eps bias
        assert abs(gpu_info.total_mel_residual - cpu_info.total_mel_residual) <= 1e-6
    else:
        _close(gpu, cpu)


@pytest.mark.parametrize("n_frames", [1, 2, 33, 1000, 100_000])
def test_nnls_batches_from_one_frame_to_100k(n_frames):
    cp = _cupy()
    _, M = audio_pair("speech-201x128", "speech_00")
    reps = -(-n_frames // M.shape[1])
    batch = np.tile(M, (1, reps))[:, :n_frames]
    inv = cumel.InverseMelScale(201, 128)
    gpu = cp.asnumpy(inv(cp.asarray(batch)))
    unique = min(n_frames, M.shape[1])
    _close(gpu[:, :unique], inv(batch[:, :unique]))
    # frame independence on the GPU: the tiled copies are bit-identical to their originals
    for start in range(M.shape[1], n_frames, M.shape[1]):
        stop = min(start + M.shape[1], n_frames)
        np.testing.assert_array_equal(gpu[:, start:stop], gpu[:, :stop - start])


@pytest.mark.parametrize("solver", SOLVERS)
def test_non_contiguous_input(solver):
    cp = _cupy()
    _, M = audio_pair("tts-513x80", "speech_01")
    mel = cp.asarray(np.stack([M[:, :64], M[:, 64:128]]))        # (2, 80, 64)
    view = mel[:, :, ::2]                                       # strided time axis
    before = view.copy()
    kw = dict(n_stft=513, n_mels=80, norm="slaney", mel_type="slaney", solver=solver, seed=1,
              max_iter=100 if solver in ("torchaudio", "mindspore") else 100000)
    gpu = cumel.InverseMelScale(**kw)(view)
    cp.testing.assert_array_equal(view, before)                 # caller's array untouched
    _close(gpu, cumel.InverseMelScale(**kw)(cp.asnumpy(view)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", SOLVERS)
def test_poisoned_output_is_fully_written(solver, dtype):
    cp = _cupy()
    from cumel import cuda
    _, M = audio_pair("music-1025x128", "music_01")
    mel = cp.asarray(np.stack([M[:, :37], M[:, 37:74]]).astype(dtype))
    inv = cumel.InverseMelScale(1025, 128, 22050, norm="slaney", mel_type="slaney", solver=solver,
                                seed=2, max_iter=50 if solver in ("torchaudio", "mindspore") else 100000)
    out = cp.full((2, 1025, 37), cp.nan, dtype)
    cuda.solve(inv, mel, out=out)
    assert bool(cp.isfinite(out).all())
    _close(out, inv(cp.asnumpy(mel)))


def test_seeded_starts_agree_between_cpu_and_gpu():
    mel = load_fixture("ta08_seed_example.npz")["melspec"]
    for solver, seed in (("torchaudio", 1), ("mindspore", 3)):
        cpu = cumel.InverseMelScale(2, 4, solver=solver, seed=seed)(mel)
        gpu = cumel.InverseMelScale(2, 4, solver=solver, seed=seed, device="cuda")(mel)
        np.testing.assert_array_equal(cpu, gpu)


def test_work_runs_on_the_current_stream():
    cp = _cupy()
    _, M = audio_pair("speech-201x128", "speech_03")
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        gpu = cumel.InverseMelScale(201, 128)(cp.asarray(M[:, :100]))
    stream.synchronize()
    _close(gpu, cumel.InverseMelScale(201, 128)(M[:, :100]))


# -- issue 11: any batch, any device, any shape, torch -------------------------------------------

def _synthetic(n_stft, n_mels, shape, sample_rate=16000, dtype=np.float32, seed=0):
    fb = cumel.InverseMelScale(n_stft, n_mels, sample_rate).plan.fb64
    rng = np.random.default_rng(seed)
    S = rng.random(shape[:-1] + (n_stft, shape[-1])) * (rng.random((n_stft, 1)) < 0.5)
    return np.matmul(fb.T, S).astype(dtype)


@pytest.mark.parametrize("solver", ["nnls", "lstsq"])
def test_streamed_host_batch_is_bit_identical_across_chunk_sizes(solver):
    _, M = audio_pair("speech-201x128", "speech_00")
    batch = np.stack([M[:, :500], M[:, 500:1000], M[:, 100:600]])          # (3, 128, 500)
    ref = cumel.InverseMelScale(201, 128, solver=solver, device="cuda")(batch)
    for cap in (50_000, 700_000, 3_000_000):                 # chunks of 18, 262, 1126 frames
        S = cumel.InverseMelScale(201, 128, solver=solver, device="cuda",
                                  max_device_bytes=cap)(batch)
        np.testing.assert_array_equal(S, ref)
    cp = _cupy()
    dev = cumel.InverseMelScale(201, 128, solver=solver, max_device_bytes=20_000)(cp.asarray(batch))
    np.testing.assert_array_equal(cp.asnumpy(dev), ref)
    _close(ref, cumel.InverseMelScale(201, 128, solver=solver)(batch))


def test_streams_a_host_batch_larger_than_the_cap():
    _, M = audio_pair("speech-201x128", "speech_00")
    batch = np.tile(M[:, :1000], (64, 1, 1))                 # 64000 frames, 51 MB of output
    inv = cumel.InverseMelScale(201, 128, device="cuda", max_device_bytes=8 * 2 ** 20)
    S = inv(batch)
    np.testing.assert_array_equal(S[37], S[0])                # frame independence across chunks
    _close(S[0], cumel.InverseMelScale(201, 128)(M[:, :1000]))


def test_real_out_of_memory_from_a_pool_limit_is_survived():
    cp = _cupy()
    _, M = audio_pair("speech-201x128", "speech_00")
    batch = np.tile(M[:, :1000], (16, 1, 1))
    inv = cumel.InverseMelScale(201, 128, device="cuda")
    ref = inv(batch)
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    pool.set_limit(size=pool.used_bytes() + 4 * 2 ** 20)    # memGetInfo still says lots free
    try:
        with pytest.warns(RuntimeWarning, match="out of memory"):
            S = inv(batch)
    finally:
        pool.set_limit(size=0)
    np.testing.assert_array_equal(S, ref)


@pytest.mark.skipif(_backend.gpu_available() and _cupy().cuda.runtime.getDeviceCount() < 2,
                    reason="needs two CUDA devices")
@pytest.mark.parametrize("solver", SOLVERS)
def test_input_on_device_1_is_solved_and_returned_there(solver):
    cp = _cupy()
    _, M = audio_pair("speech-201x128", "speech_00")
    kw = dict(solver=solver, seed=0, max_iter=50 if solver in ("torchaudio", "mindspore") else 100000)
    with cp.cuda.Device(1):
        x = cp.asarray(M[:, :200])
    S = cumel.InverseMelScale(201, 128, **kw)(x)
    assert S.device.id == 1 and cp.cuda.Device().id == 0
    _close(S, cumel.InverseMelScale(201, 128, **kw)(M[:, :200]))


@pytest.mark.parametrize("n_mels, n_stft, sample_rate", [
    (256, 1025, 48000), (512, 2049, 96000), (1024, 4097, 192000), (2048, 4097, 192000)])
def test_large_shapes_opt_in_to_the_shared_memory_maximum(n_mels, n_stft, sample_rate):
    mel = _synthetic(n_stft, n_mels, (2, 50), sample_rate, np.float64)
    gpu = cumel.InverseMelScale(n_stft, n_mels, sample_rate, device="cuda")(mel)
    _close(gpu, cumel.InverseMelScale(n_stft, n_mels, sample_rate)(mel))


def test_shape_past_the_shared_memory_maximum_raises_or_falls_back():
    from cumel import cuda
    n_mels = 8192                          # 7 x 8193 doubles a warp: 459 KB, past every device
    mel = _synthetic(8193, n_mels, (1, 1), 384000)
    with pytest.raises(cuda.DeviceLimitError, match="MaxSharedMemoryPerBlockOptin"):
        cumel.InverseMelScale(8193, n_mels, 384000, device="cuda")(mel)
    with pytest.warns(RuntimeWarning, match="solving on the CPU instead"):
        cumel.InverseMelScale(8193, n_mels, 384000, device="auto")(mel)


@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_long_sgd_run_in_bounded_launches_equals_one_launch(solver, monkeypatch):
    from cumel import cuda
    _, M = audio_pair("speech-201x128", "speech_00")
    batch = np.stack([M[:, :300], M[:, 300:600]])
    kw = dict(solver=solver, seed=5, max_iter=3000, tolerance_change=0, device="cuda")
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 10 ** 9)
    one, one_info = cumel.InverseMelScale(201, 128, **kw)(batch, return_info=True)
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", None)       # the watchdog-safe budget
    many, many_info = cumel.InverseMelScale(201, 128, **kw)(batch, return_info=True)
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(many_info.iterations, one_info.iterations)
    monkeypatch.setattr(cuda.sgd, "ITERATIONS_PER_LAUNCH", 7)
    np.testing.assert_array_equal(cumel.InverseMelScale(201, 128, **kw)(batch), one)


def test_torchaudio_launch_per_iteration_fallback_equals_cooperative(monkeypatch):
    from cumel import cuda
    _, M = audio_pair("speech-201x128", "speech_00")
    kw = dict(solver="torchaudio", seed=6, max_iter=200, device="cuda")
    coop = cumel.InverseMelScale(201, 128, **kw)(M[:, :400])
    monkeypatch.setattr(cuda.launch, "cooperative_ok", lambda: False)
    np.testing.assert_array_equal(cumel.InverseMelScale(201, 128, **kw)(M[:, :400]), coop)


def test_sgd_batch_past_the_free_memory_raises_clearly():
    cp = _cupy()
    cp.get_default_memory_pool().free_all_blocks()
    free, _ = cp.cuda.runtime.memGetInfo()
    hog = cp.empty(max(0, free - 256 * 2 ** 20), np.uint8)   # leave ~256 MB truly free
    try:
        mel = np.ones((1, 128, 200_000), np.float32)          # needs 3 x 160 MB of state
        with pytest.raises(MemoryError, match="device='cpu' or smaller batches"):
            cumel.InverseMelScale(201, 128, solver="torchaudio", device="cuda")(mel)
    finally:
        del hog
        cp.get_default_memory_pool().free_all_blocks()


def _torch_cuda():
    torch = pytest.importorskip("torch", reason="torch not installed (pip install torch)")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch")
    return torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_torch_cuda_tensor_in_tensor_out_on_torch_stream(solver, dtype):
    torch = _torch_cuda()
    _, M = audio_pair("speech-201x128", "speech_00")
    kw = dict(solver=solver, seed=0, max_iter=50 if solver in ("torchaudio", "mindspore") else 100000)
    mel = M[:, :300].astype(dtype)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.from_numpy(mel).cuda()
        S = cumel.InverseMelScale(201, 128, **kw)(x)
        assert isinstance(S, torch.Tensor) and S.is_cuda and S.dtype == x.dtype
        total = S.sum()                                      # ordered on the same stream
    side.synchronize()
    _close(S.cpu().numpy(), cumel.InverseMelScale(201, 128, **kw)(mel))
    assert np.isfinite(total.item())


def test_torch_cuda_out_view_shares_memory():
    torch = _torch_cuda()
    cp = _cupy()
    out = torch.zeros((2, 201, 5), device="cuda")
    view = _backend.out_view(out, cp)
    view[0, 0, 0] = 7.0
    assert out[0, 0, 0].item() == 7.0


# -- cumel.torch on CUDA tensors: forward and backward on the device -----------------------------

@pytest.mark.parametrize("solver", ["nnls", "lstsq"])
def test_torch_cuda_tensors_forward_and_backward_on_the_device(solver):
    torch = _torch_cuda()
    import cumel.torch as T
    _, M = audio_pair("tts-513x80", "speech_00")
    mel_cpu = torch.from_numpy(np.ascontiguousarray(M[:, :300]).reshape(80, 3, 100)
                               .transpose(1, 0, 2).copy())
    inv = T.InverseMelScale(513, 80, 16000, 0.0, 8000.0, "slaney", "slaney", solver=solver)
    weights = torch.rand(3, 513, 100, generator=torch.Generator().manual_seed(0))
    grads = {}
    for device in ("cpu", "cuda"):
        mel = mel_cpu.to(device).requires_grad_()
        module = inv.to(device)
        S = module(mel)
        assert S.device == mel.device
        (S * weights.to(device)).sum().backward()
        assert mel.grad.device == mel.device
        grads[device] = (S.detach().cpu().numpy(), mel.grad.cpu().numpy())
    _close(grads["cuda"][0], grads["cpu"][0], rtol=1e-5)
    # the same active set on both (a bin at a rounding-level kink may differ): most frames equal
    _close(grads["cuda"][1], grads["cpu"][1], rtol=1e-3)
