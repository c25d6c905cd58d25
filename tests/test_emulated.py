"""The CUDA kernels, unmodified, on the CPU emulator (tests/cudasim) against the NumPy path.

Mirrors tests/test_gpu.py through the public API (``device="cuda"`` on NumPy input, and fake
CuPy arrays in and out) for every kernel instantiation: nnls_solve, torchaudio_sgd and
mindspore_gd in float32 and float64. The emulator runs each launch with a selectable fiber
resume order; a kernel whose bits depend on that order has a race (a missing __syncwarp,
__syncthreads or grid.sync), so several tests run every order and demand identical bits.
"""
import contextlib
import importlib.util
import os

import numpy as np
import pytest

import cudasim
import cumel
from cumel import cuda as cumel_cuda

from conftest import (audio_pair, fixture_kwargs, fixture_params, floor_rule_stops, load_fixture,
                      signed_nnls_frames)

pytestmark = pytest.mark.emulated

# nnls: Thomas on the device, cyclic reduction in NumPy; the same iteration otherwise, with the
# line-search tie (a rounding-level phi'(1)) taken as a full step in both, and the same exact line
# search (the root of phi'). Measured with tests/cudasim/agreement.py: at most 7.2e-14 relative
# (ta2 128-mel rank-deficient fixture), float32 results bit-equal, and identical Newton step
# counts on every frame (with the earlier inexact search: up to 1e-9; before the tie fix: up to
# 6.3e-5 and one step apart on some frames).
NNLS_RTOL = 1e-7              # max |gpu - cpu| <= NNLS_RTOL * max |cpu|
NNLS_ITERATION_SLACK = 0      # per-frame Newton step counts must agree
# SGD solvers: same operations in the same order up to float rounding of the sparse products
# (measured: bit-equal on the seed example; at most 5.1e-7 relative in float32 and 4.3e-16 in
# float64 otherwise, iteration counts identical).
SGD_RTOL = {np.dtype(np.float32): 5e-6, np.dtype(np.float64): 1e-14}
SGD_ITERATION_SLACK = 0

SGD_MAX_ITER = 50
KERNEL_SOLVERS = ["nnls", "torchaudio", "mindspore"]
DTYPES = [np.float32, np.float64]


def _max_rel(gpu, cpu):
    return float(np.abs(gpu.astype(np.float64) - cpu).max() / max(float(np.abs(cpu).max()), 1e-30))


def assert_matches_numpy(solver, gpu, cpu, gpu_iterations=None, cpu_iterations=None):
    """The emulated result against the NumPy one, with the solver's tolerances."""
    assert isinstance(gpu, np.ndarray) and isinstance(cpu, np.ndarray)
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    assert np.isfinite(gpu).all()
    if solver == "nnls":
        rtol, slack = NNLS_RTOL, NNLS_ITERATION_SLACK
    else:
        rtol, slack = SGD_RTOL[gpu.dtype], SGD_ITERATION_SLACK
    if solver == "lstsq":
        rtol, slack = 1e-5, 0
    assert _max_rel(gpu, cpu) <= rtol, f"{solver}: max relative difference {_max_rel(gpu, cpu):.3g}"
    if gpu_iterations is not None:
        assert np.abs(np.asarray(gpu_iterations) - np.asarray(cpu_iterations)).max() <= slack


@contextlib.contextmanager
def cpu_loop(loop):
    """nnls's CPU loop for the calls inside (``CUMEL_CPU``)."""
    before = os.environ.get("CUMEL_CPU")
    os.environ["CUMEL_CPU"] = loop
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUMEL_CPU"]
        else:
            os.environ["CUMEL_CPU"] = before


def both(mel, **kwargs):
    """(gpu, gpu_info, cpu, cpu_info) of one transform on the emulator and on NumPy.

    For nnls, all three implementations: the CPU result is the NumPy loop's, and the compiled
    loop's (numba, the cpu extra the test extra installs) must match both it and the kernel."""
    gpu, gpu_info = cumel.InverseMelScale(**kwargs, device="cuda")(mel, return_info=True)
    with cpu_loop("numpy"):
        cpu, cpu_info = cumel.InverseMelScale(**kwargs, device="cpu")(mel, return_info=True)
    assert gpu_info.device == "cuda" and cpu_info.device == "cpu"
    solver = kwargs.get("solver", "nnls")
    if solver == "nnls" and cpu.size and importlib.util.find_spec("numba") is not None:
        with cpu_loop("numba"):
            compiled, compiled_info = cumel.InverseMelScale(**kwargs, device="cpu")(mel, return_info=True)
        assert_matches_numpy(solver, compiled, cpu, compiled_info.iterations, cpu_info.iterations)
        assert_matches_numpy(solver, gpu, compiled, gpu_info.iterations, compiled_info.iterations)
    return gpu, gpu_info, cpu, cpu_info


def _speech(n_frames=64, dtype=np.float32, clip="speech_00"):
    _, M = audio_pair("speech-201x128", clip)
    return np.ascontiguousarray(M[:, :n_frames]).astype(dtype)


def _solver_kwargs(solver, **extra):
    kw = dict(solver=solver, seed=1)
    if solver != "nnls":
        kw["max_iter"] = SGD_MAX_ITER
    kw.update(extra)
    return kw


# ---- anchors and fixtures ------------------------------------------------------------------------

def test_seed_example_is_bit_equal(emulated_cupy_order):
    mel = load_fixture("ta08_seed_example.npz")["melspec"]
    for solver, seed in (("torchaudio", 1), ("mindspore", 3)):
        cpu = cumel.InverseMelScale(2, 4, solver=solver, seed=seed)(mel)
        gpu = cumel.InverseMelScale(2, 4, solver=solver, seed=seed, device="cuda")(mel)
        np.testing.assert_array_equal(gpu, cpu)


def _kwargs(entry, solver):
    kwargs = fixture_kwargs(entry, solver)
    if solver in ("torchaudio", "mindspore"):
        kwargs["max_iter"] = min(kwargs.get("max_iter", SGD_MAX_ITER), SGD_MAX_ITER)
    return kwargs


@pytest.mark.parametrize("entry", fixture_params())
@pytest.mark.parametrize("solver", KERNEL_SOLVERS + ["lstsq"])
def test_every_fixture_matches_numpy(emulated_cupy, entry, solver):
    mel = load_fixture(entry["file"])["melspec"]
    gpu, gi, cpu, ci = both(mel, **_kwargs(entry, solver), solver=solver, seed=entry.get("seed") or 0)
    assert_matches_numpy(solver, gpu, cpu, gi.iterations, ci.iterations)


# ---- real clips, batches, layouts ------------------------------------------------------------------

WORKLOADS = [("speech-201x128", "speech_00", dict(n_stft=201, n_mels=128)),
             ("tts-513x80", "speech_01", dict(n_stft=513, n_mels=80, norm="slaney", mel_type="slaney")),
             ("music-1025x128", "music_01", dict(n_stft=1025, n_mels=128, sample_rate=22050,
                                                 norm="slaney", mel_type="slaney"))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("workload,clip,kw", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_nnls_on_real_clips(emulated_cupy_order, workload, clip, kw, dtype):
    # every order: nnls's lane-0 sections (Thomas sweep, start) are only safe behind __syncwarp
    _, M = audio_pair(workload, clip)
    mel = np.ascontiguousarray(M[:, 100:164]).astype(dtype)
    gpu, gi, cpu, ci = both(mel, **kw)
    assert_matches_numpy("nnls", gpu, cpu, gi.iterations, ci.iterations)
    assert gi.mel_residual.max() <= max(2e-5, 2 * ci.mel_residual.max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", KERNEL_SOLVERS)
def test_batches_and_fake_cupy_in_and_out(emulated_cupy, solver, dtype):
    cp = emulated_cupy
    mel = _speech(96, dtype).reshape(128, 3, 32).transpose(1, 0, 2).copy()     # (3, 128, 32)
    mel_gpu = cp.asarray(mel)
    before = mel_gpu.copy()
    kw = _solver_kwargs(solver, n_stft=201, n_mels=128)
    gpu, gi = cumel.InverseMelScale(**kw)(mel_gpu, return_info=True)
    assert isinstance(gpu, cp.ndarray) and gpu.shape == (3, 201, 32)
    cp.testing.assert_array_equal(mel_gpu, before)                            # caller untouched
    cpu, ci = cumel.InverseMelScale(**kw)(mel, return_info=True)
    assert_matches_numpy(solver, gpu.get(), cpu, gi.iterations, ci.iterations)


def _layouts(mel):
    """Views of the same (2, n_mels, T) values in other memory layouts."""
    yield "transposed", mel.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    yield "negative-stride", mel[:, :, ::-1].copy()[:, :, ::-1]
    yield "fortran", np.asfortranarray(mel)
    yield "strided-time", np.repeat(mel, 2, axis=2)[:, :, ::2]


@pytest.mark.parametrize("solver", KERNEL_SOLVERS)
def test_any_input_layout(emulated_cupy, solver):
    cp = emulated_cupy
    mel = _speech(48).reshape(128, 2, 24).transpose(1, 0, 2).copy()
    kw = _solver_kwargs(solver, n_stft=201, n_mels=128)
    cpu, ci = cumel.InverseMelScale(**kw)(mel, return_info=True)
    for name, view in _layouts(mel):
        np.testing.assert_array_equal(view, mel)
        fake = _fake_view(cp, view, name)
        assert fake.strides == view.strides
        for inp in (view, fake):
            before = inp.copy()
            gpu, gi = cumel.InverseMelScale(**kw, device="cuda")(inp, return_info=True)
            gpu = gpu.get() if isinstance(gpu, cp.ndarray) else gpu
            assert_matches_numpy(solver, gpu, cpu, gi.iterations, ci.iterations)
            cp.testing.assert_array_equal(inp, before)                 # caller's array untouched


def _fake_view(cp, view, name):
    """The same layout built on the device: the same view of a device copy of the base."""
    if name == "fortran":
        return cp.asarray(view)                                     # asarray keeps the layout
    base = cp.asarray(view.base)
    if name == "transposed":
        return base.transpose(0, 2, 1)
    if name == "negative-stride":
        return base[:, :, ::-1]
    return base[:, :, ::2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", KERNEL_SOLVERS + ["lstsq"])
def test_out_argument_is_fully_written(emulated_cupy, solver, dtype):
    cp = emulated_cupy
    _, M = audio_pair("music-1025x128", "music_01")
    mel = cp.asarray(np.stack([M[:, :37], M[:, 37:74]]).astype(dtype))
    inv = cumel.InverseMelScale(1025, 128, 22050, norm="slaney", mel_type="slaney", solver=solver,
                                seed=2,
                                max_iter=SGD_MAX_ITER if solver in ("torchaudio", "mindspore") else 100000)
    for out in (cp.full((2, 1025, 37), cp.nan, dtype),
                cp.full((2, 37, 1025), cp.nan, dtype).transpose(0, 2, 1)):     # strided out
        S, *_ = cumel_cuda.solve(inv, mel, out=out)
        assert S is out
        assert bool(cp.isfinite(out).all())
        assert_matches_numpy(solver, out.get(), inv(mel.get()))


def test_nnls_kernel_stall_rule_decides_as_numpy(emulated_cupy):
    # tolerance_change large enough that "the step moved t by at most tolerance_change ||s||"
    # (alpha ||u||, not the undamped ||u||) ends many frames, tolerance_loss above the rounding
    # floor: the kernel stops each frame at the NumPy loop's step (one step of slack for a
    # near-tie)
    cp = emulated_cupy
    _, M = signed_nnls_frames(seed=4)
    kw = dict(n_stft=201, n_mels=80, tolerance_loss=1e-5)
    inv = cumel.InverseMelScale(**kw, tolerance_change=0.1)
    _, gpu_steps, _ = cumel_cuda.solve(inv, cp.asarray(M[None]))
    with cpu_loop("numpy"):
        _, steps = inv(M, return_info=True)
        _, unstalled = cumel.InverseMelScale(**kw, tolerance_change=0.0)(M, return_info=True)
    assert (steps.iterations < unstalled.iterations).sum() >= 5    # measured: 21 of the 40 frames
    assert np.abs(gpu_steps.get()[0] - steps.iterations).max() <= 1, (gpu_steps, steps.iterations)


def test_nnls_kernel_rounding_floor_rule(emulated_cupy):
    # the kernel's stop rule below FLOOR_KKT, on every frame's own KKT residual sequence
    # (tests/test_nnls.py holds the CPU loops to the same rule)
    cp = emulated_cupy
    _, M = signed_nnls_frames(n_frames=24)
    mel = cp.asarray(M[None])

    def solve(max_iter):
        inv = cumel.InverseMelScale(n_stft=201, n_mels=80, tolerance_loss=0.0, tolerance_change=0.0)
        inv.max_iter = max_iter          # 0 too: the start's residual (the public check wants >= 1)
        _, iterations, kkt = cumel_cuda.solve(inv, mel)
        return iterations.get()[0], kkt.get()[0]

    assert floor_rule_stops(solve, M.shape[1]) >= 2


# ---- edge cases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", KERNEL_SOLVERS)
def test_zero_frames_and_empty_input(emulated_cupy, solver):
    mel = _speech(24)
    mel[:, 5] = 0.0
    mel[:, 17:20] = 0.0
    gpu, gi, cpu, ci = both(mel, **_solver_kwargs(solver, n_stft=201, n_mels=128))
    assert_matches_numpy(solver, gpu, cpu, gi.iterations, ci.iterations)
    if solver == "nnls":
        np.testing.assert_array_equal(gpu[:, [5, 17, 18, 19]], 0.0)
    empty = np.zeros((2, 128, 0), np.float32)
    gpu, _, cpu, _ = both(empty, **_solver_kwargs(solver, n_stft=201, n_mels=128))
    assert gpu.shape == cpu.shape == (2, 201, 0)


@pytest.mark.parametrize("max_iter", [1, 2])
@pytest.mark.parametrize("solver", KERNEL_SOLVERS)
def test_max_iter_one_and_two(emulated_cupy, solver, max_iter):
    gpu, gi, cpu, ci = both(_speech(40), **_solver_kwargs(solver, n_stft=201, n_mels=128,
                                                         max_iter=max_iter))
    assert_matches_numpy(solver, gpu, cpu, gi.iterations, ci.iterations)
    assert gi.iterations.max() <= max_iter


@pytest.mark.parametrize("solver", KERNEL_SOLVERS)
def test_grid_smaller_than_the_frame_count(emulated_cupy, solver):
    emulated_cupy.cudasim.multiprocessor_count = 1     # nnls: 64 blocks, torchaudio: 8 resident
    n_frames = 300 if solver == "nnls" else 64
    mel = _speech(n_frames).reshape(128, 2, n_frames // 2).transpose(1, 0, 2).copy()
    launches = emulated_cupy.cudasim.launches
    gpu, gi, cpu, ci = both(mel, **_solver_kwargs(solver, n_stft=201, n_mels=128))
    assert emulated_cupy.cudasim.launches == launches + 1
    _, grid, block, _ = emulated_cupy.cudasim.last_launch
    if solver == "mindspore":      # one block per channel: its warps stride over its frames
        assert block[0] // 32 < n_frames // 2
    else:                          # fewer warps in the grid than frames: grid-stride loops ran
        assert grid[0] * block[0] // 32 < n_frames
    assert_matches_numpy(solver, gpu, cpu, gi.iterations, ci.iterations)


# torchaudio clamps after each step, which keeps the iterate finite for any lr until the float
# type itself overflows (lr=1e6 stays finite on NumPy too): hence an lr near each type's maximum.
DIVERGING = {("torchaudio", np.float32): {"lr": 1e38}, ("torchaudio", np.float64): {"lr": 1e300},
             ("mindspore", np.float32): {"sgd_lr": 1e6}, ("mindspore", np.float64): {"sgd_lr": 1e6}}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_diverging_sgd_raises_on_both_paths(emulated_cupy, solver, dtype):
    mel = _speech(16, dtype)
    for device in ("cpu", "cuda"):
        inv = cumel.InverseMelScale(201, 128, solver=solver, seed=1, max_iter=200,
                                    sgdargs=DIVERGING[solver, dtype], device=device)
        with pytest.raises(FloatingPointError, match="diverged"), np.errstate(all="ignore"):
            inv(mel)


# Found by the emulator (NumPy squared the float32 residual in float32: overflow -> 'diverged',
# sgd.cu in float64: finite); fixed by 685cf83 (the loss squared in float64 in NumPy too).
def test_float32_torchaudio_overflow_agrees_between_paths(emulated_cupy):
    mel = _speech(16, np.float32)
    outcomes = []
    for device in ("cpu", "cuda"):
        inv = cumel.InverseMelScale(201, 128, solver="torchaudio", seed=1, max_iter=200,
                                    sgdargs={"lr": 1e20}, device=device)
        try:
            with np.errstate(all="ignore"):
                inv(mel)
            outcomes.append("finite")
        except FloatingPointError:
            outcomes.append("diverged")
    assert outcomes[0] == outcomes[1], outcomes


def _torchaudio_losses(mel, n):
    """loss_i of torchaudio's loop (i = 0 .. n - 1), from CPU runs stopped after i steps."""
    inv0 = cumel.InverseMelScale(201, 128, solver="torchaudio", seed=1)
    B, T = 1, mel.shape[1]
    fb = inv0.plan.fb(np.float64)
    losses = []
    for i in range(n):
        if i == 0:
            S = inv0.start((B, T, 201), np.float32)[0].T
        else:
            S = cumel.InverseMelScale(201, 128, solver="torchaudio", seed=1, max_iter=i)(mel)
        diff = mel.astype(np.float64) - fb.T @ S.astype(np.float64)
        losses.append(float((diff * diff).sum() / T))
    return losses


def test_torchaudio_stops_at_the_same_early_iteration(emulated_cupy):
    """The batch-wide loss decides when to stop: a grid barrier missing in any iteration feeds a
    stale block partial into it and changes the stop (or splits the blocks' decisions)."""
    mel = _speech(64)
    losses = _torchaudio_losses(mel, 7)
    checked = 0
    for k in range(1, 7):
        best_before = min(losses[:k])
        if losses[k] >= best_before * 0.999:
            continue
        tol = float(np.sqrt(losses[k] * best_before))      # stop exactly at iteration index k
        kw = dict(n_stft=201, n_mels=128, solver="torchaudio", seed=1, max_iter=SGD_MAX_ITER,
                  tolerance_loss=tol)
        for order in ("forward", "reverse"):
            with cudasim.order(order):
                gpu, gi, cpu, ci = both(mel, **kw)
            assert ci.iterations.max() == k + 1
            np.testing.assert_array_equal(gi.iterations, ci.iterations)
            assert_matches_numpy("torchaudio", gpu, cpu)
        checked += 1
    assert checked >= 3


def test_mindspore_stops_at_the_same_iteration(emulated_cupy):
    """Each channel stops when its own loss (the mean over its frames and mels) falls below
    tolerance_loss: tolerances at which the channels stop at different iterations before
    max_iter (measured on NumPy: 125, 176 and 46; the other channel at 1 or at max_iter), so
    a loss scaled differently on the device stops elsewhere."""
    mel = _speech(32).reshape(128, 2, 16).transpose(1, 0, 2).copy()
    for tol in (60.0, 40.0, 10.0):
        gpu, gi, cpu, ci = both(mel, **_solver_kwargs("mindspore", n_stft=201, n_mels=128,
                                                     max_iter=200, tolerance_loss=tol))
        assert 1 < ci.iterations.max() < 200 or 1 < ci.iterations.min() < 200
        np.testing.assert_array_equal(gi.iterations, ci.iterations)
        assert_matches_numpy("mindspore", gpu, cpu)


# ---- resume orders -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", KERNEL_SOLVERS)
def test_every_resume_order_gives_identical_bits(emulated_cupy, solver, dtype):
    mel = _speech(48, dtype).reshape(128, 2, 24).transpose(1, 0, 2).copy()
    inv = cumel.InverseMelScale(**_solver_kwargs(solver, n_stft=201, n_mels=128), device="cuda")
    results = {}
    for order in cudasim.fixtures.ALL_ORDERS:
        with cudasim.order(order):
            results[order] = inv(mel, return_info=True)
    reference, info = results["forward"]
    for order, (S, order_info) in results.items():
        np.testing.assert_array_equal(S, reference, err_msg=f"order {order} differs from forward")
        np.testing.assert_array_equal(order_info.iterations, info.iterations)
    cpu, ci = cumel.InverseMelScale(**_solver_kwargs(solver, n_stft=201, n_mels=128))(mel, return_info=True)
    assert_matches_numpy(solver, reference, cpu, info.iterations, ci.iterations)


# The stop rule is strict on both tolerances ("loss < tolerance_loss or |prev - loss| <
# tolerance_change"), in the kernels as in torchaudio and MindSpore. With lr=1e-30 no step moves
# an iterate (x - 1e-30 g rounds back to x), so the loss repeats exactly: with
# tolerance_change=0, |prev - loss| = 0 is never < 0 and every path runs to max_iter (with "<="
# it would stop at the second iteration).
TINY_STEP = {"torchaudio": {"lr": 1e-30, "momentum": 0.9}, "mindspore": {"sgd_lr": 1e-30}}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_a_repeating_loss_never_meets_a_zero_tolerance_change(emulated_cupy, solver, dtype):
    mel = _speech(13, dtype).reshape(128, 1, 13).transpose(1, 0, 2).copy()
    kw = dict(n_stft=201, n_mels=128, solver=solver, seed=1, max_iter=7, tolerance_loss=0.0,
              tolerance_change=0.0, sgdargs=TINY_STEP[solver])
    gpu, gi, cpu, ci = both(mel, **kw)
    assert (ci.iterations == 7).all() and (gi.iterations == 7).all(), (gi.iterations, ci.iterations)
    np.testing.assert_array_equal(gpu, cpu)
    # the iterate never moved: the output is the clamped start
    start = cumel.InverseMelScale(**kw).start((1, 13, 201) if solver == "torchaudio" else
                                              (1, 201, 13), dtype)
    if solver == "torchaudio":
        start = np.swapaxes(start, 1, 2)
    np.testing.assert_array_equal(cpu, np.maximum(start, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_torchaudio_zero_loss_never_meets_a_zero_tolerance_loss(emulated_cupy, dtype):
    """A zero mel and a huge step: the first step and its clamp zero every bin a filter sees, so
    from the second iteration on the loss is exactly 0, which is not < tolerance_loss=0 (and
    |0 - 0| is not < tolerance_change=0): the loop runs to max_iter on every path."""
    mel = np.zeros((1, 128, 11), dtype)
    kw = dict(n_stft=201, n_mels=128, solver="torchaudio", seed=1, max_iter=5, tolerance_loss=0.0,
              tolerance_change=0.0, sgdargs={"lr": 1e20 if dtype == np.float32 else 1e200})
    gpu, gi, cpu, ci = both(mel, **kw)
    assert (ci.iterations == 5).all() and (gi.iterations == 5).all(), (gi.iterations, ci.iterations)
    np.testing.assert_array_equal(gpu, cpu)
    seen = cumel.InverseMelScale(**kw).plan.fb64.max(axis=1) > 0          # bins a filter sees
    assert (cpu[0][seen] == 0).all()


@pytest.mark.parametrize("extra", [{"nesterov": True}, {"weight_decay": 0.1}, {"dampening": 0.5},
                                   {"momentum": 0.0}])
def test_torchaudio_sgd_options_match_numpy(emulated_cupy, extra):
    """Every torch.optim.SGD option through the kernel: weight decay reaches bins no filter sees
    (the last bin of a filterbank that ends at Nyquist), so every bin's update is exercised."""
    mel = _speech(13, np.float64).reshape(128, 1, 13).transpose(1, 0, 2).copy()
    kw = _solver_kwargs("torchaudio", n_stft=201, n_mels=128, max_iter=9, tolerance_loss=0.0,
                        tolerance_change=0.0, sgdargs={"lr": 0.1, "momentum": 0.9, **extra})
    gpu, gi, cpu, ci = both(mel, **kw)
    assert (gi.iterations == 9).all() and (ci.iterations == 9).all()
    assert_matches_numpy("torchaudio", gpu, cpu, gi.iterations, ci.iterations)
