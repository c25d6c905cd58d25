"""GPU against NumPy: the CUDA kernels compute the same iterations as the NumPy solvers.

Marked ``gpu``; skipped, with the reason, where CuPy or a CUDA device is missing.
"""
import numpy as np
import pytest

import cumel
from cumel import _backend

from conftest import audio_pair, fixture_index, load_fixture, mel_residual

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _backend.gpu_available(), reason="needs CuPy and a CUDA device"),
]

SOLVERS = ["nnls", "lstsq", "torchaudio", "mindspore"]


def _cupy():
    import cupy
    return cupy


def _kwargs(entry):
    kwargs = dict(entry["kwargs"])
    if "mel_scale" in kwargs:
        kwargs["mel_type"] = kwargs.pop("mel_scale")
    return kwargs


def _close(gpu, cpu, rtol=1e-4):
    gpu = _cupy().asnumpy(gpu) if not isinstance(gpu, np.ndarray) else gpu
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    assert np.isfinite(gpu).all()
    assert np.abs(gpu - cpu).max() <= rtol * max(float(np.abs(cpu).max()), 1e-30)


def _all_fixtures():
    try:
        entries = fixture_index("mindspore_index.json") + fixture_index("torchaudio_index.json")
    except BaseException:
        return [pytest.param(None, id="fixtures")]
    return [pytest.param(e, id=e["file"]) for e in entries]


@pytest.mark.parametrize("entry", _all_fixtures())
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_fixture_gpu_equals_numpy(entry, solver):
    if entry is None:
        fixture_index("mindspore_index.json")
    data = load_fixture(entry["file"])
    kwargs = _kwargs(entry)
    if solver in ("nnls", "lstsq"):
        kwargs.pop("sgdargs", None)
    if solver == "torchaudio" and "sgdargs" in kwargs and "sgd_lr" in kwargs["sgdargs"]:
        kwargs["sgdargs"] = {"lr": kwargs["sgdargs"]["sgd_lr"], "momentum": kwargs["sgdargs"]["sgd_momentum"]}
    if solver == "mindspore" and "sgdargs" in kwargs and "lr" in kwargs["sgdargs"]:
        kwargs["sgdargs"] = {"sgd_lr": kwargs["sgdargs"]["lr"], "sgd_momentum": kwargs["sgdargs"]["momentum"]}
    seed = entry.get("seed", 0)
    mel = data["melspec"]
    cpu, cpu_info = cumel.InverseMelScale(**kwargs, solver=solver, seed=seed)(mel, return_info=True)
    gpu, gpu_info = cumel.InverseMelScale(**kwargs, solver=solver, seed=seed, device="cuda")(
        mel, return_info=True)
    assert isinstance(gpu, np.ndarray)        # NumPy in, NumPy out
    assert gpu_info.device == "cuda"
    _close(gpu, cpu)
    if solver in ("torchaudio", "mindspore"):
        # compat solvers may stop one iteration apart on exact ties of the loss
        assert np.abs(gpu_info.iterations - cpu_info.iterations).max() <= 1
    if solver == "nnls":   # Thomas on the GPU, cyclic reduction in NumPy: same answer, own rounding
        assert gpu_info.mel_residual.max() <= max(2e-5, 2 * cpu_info.mel_residual.max())
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
    _close(gpu, cpu)
    if solver == "nnls":
        fb = cumel.InverseMelScale(201, 128).fb
        assert mel_residual(fb, cp.asnumpy(gpu), M) <= 1e-5
        assert abs(gpu_info.total_mel_residual - cpu_info.total_mel_residual) <= 1e-4


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
