"""The gradient of the nnls and lstsq answers (cumel/solvers/gradient.py), without torch.

``dL/dM`` against central finite differences of the solver itself, the NumPy backward against the
CUDA kernel ``nnls_backward`` on the emulator, and the lstsq adjoint against its closed form.
"""
import numpy as np
import pytest

import cumel
from cumel.solvers import gradient

from conftest import audio_pair


def _consistent(n_stft=129, n_mels=24, T=6, seed=0, density=0.3):
    """Mels of sparse non-negative spectra (many bins clamped at the answer), float64, with every
    mel positive: the peak bin of each filter is on (a mel at exactly 0 is a kink of the answer,
    where no derivative exists)."""
    rng = np.random.default_rng(seed)
    S = (rng.random((2, n_stft, T)) ** 4) * (rng.random((2, n_stft, T)) < density)
    mel = cumel.MelScale(n_mels, n_stft=n_stft)
    S[:, np.argmax(mel.fb, axis=0), :] += 10.0 ** rng.uniform(-4, 0, (2, n_mels, T))
    M = mel(S)
    assert M.min() > 0
    return M


def _finite_differences(inv, M, G, h=1e-6):
    """d/dM of sum(G * inv(M)) by central differences, one element at a time."""
    fd = np.zeros_like(M)
    for index in np.ndindex(M.shape):
        step = h * max(abs(M[index]), 1e-3)
        E = np.zeros_like(M)
        E[index] = step
        fd[index] = ((G * inv(M + E)).sum() - (G * inv(M - E)).sum()) / (2 * step)
    return fd


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_nnls_gradient_equals_finite_differences(noise):
    rng = np.random.default_rng(1)
    M = _consistent(T=4)
    M = M + noise * rng.random(M.shape)            # inconsistent frames too (mu large)
    inv = cumel.InverseMelScale(129, 24, tolerance_loss=1e-14, tolerance_change=0.0)
    S = inv(M)
    assert (S == 0).mean() > 0.15                  # the clamp is active on many bins
    G = rng.standard_normal(S.shape)
    grad = gradient.nnls_backward(inv.plan, S, G)
    fd = _finite_differences(inv, M, G)
    assert grad.shape == M.shape and grad.dtype == np.float64
    assert np.abs(grad - fd).max() <= 1e-5 * np.abs(fd).max()


def test_nnls_gradient_on_real_frames():
    _, M = audio_pair("speech-201x128", "speech_00")
    M = np.ascontiguousarray(M[:, 300:303], np.float64)[None]
    inv = cumel.InverseMelScale(201, 128, tolerance_loss=1e-13, tolerance_change=0.0)
    S = inv(M)
    G = np.random.default_rng(2).standard_normal(S.shape)
    grad = gradient.nnls_backward(inv.plan, S, G)
    rows = slice(0, 128, 9)                        # a sample of mels: each costs two solves
    fd = np.zeros_like(M[:, rows])
    for i, k in enumerate(range(128)[rows]):
        for t in range(M.shape[2]):
            step = 1e-6 * max(abs(M[0, k, t]), 1e-6 * np.abs(M).max())
            E = np.zeros_like(M)
            E[0, k, t] = step
            fd[0, i, t] = ((G * inv(M + E)).sum() - (G * inv(M - E)).sum()) / (2 * step)
    assert np.abs(grad[:, rows] - fd).max() <= 1e-3 * np.abs(fd).max()


def test_nnls_gradient_is_the_transpose_of_the_jacobian_product():
    """<G, dS> = <dL/dM, dM> for a small dM that keeps the active set (a directional check)."""
    rng = np.random.default_rng(3)
    M = _consistent(T=5, seed=3)
    inv = cumel.InverseMelScale(129, 24, tolerance_loss=1e-14, tolerance_change=0.0)
    S = inv(M)
    G = rng.standard_normal(S.shape)
    dM = 1e-7 * rng.standard_normal(M.shape) * np.abs(M).max()
    lhs = (G * (inv(M + dM) - inv(M - dM)) / 2).sum()
    rhs = (gradient.nnls_backward(inv.plan, S, G) * dM).sum()
    assert abs(lhs - rhs) <= 1e-6 * abs(rhs)


def test_nnls_gradient_frames_independent_of_chunks_and_workers(monkeypatch, cpu_loop):
    M = _consistent(T=37, seed=4)                   # 74 frames: odd chunks below
    inv = cumel.InverseMelScale(129, 24)
    S = inv(M).astype(np.float32)
    G = np.random.default_rng(5).standard_normal(S.shape).astype(np.float32)
    whole = gradient.nnls_backward(inv.plan, S, G)
    assert whole.dtype == np.float32
    monkeypatch.setattr(gradient, "CHUNK_ELEMENTS", 129 * 7)     # chunks of 7 frames
    for workers in (1, 2, 3):
        np.testing.assert_array_equal(gradient.nnls_backward(inv.plan, S, G, workers=workers), whole)
    # strided, read-only inputs
    S_view, G_view = np.asfortranarray(S), G[:, :, ::1]
    S_view.flags.writeable = False
    np.testing.assert_array_equal(gradient.nnls_backward(inv.plan, S_view, G_view), whole)


def test_compiled_backward_equals_the_numpy_backward(monkeypatch):
    """The compiled loop's backward (the kernel's loop, frame by frame) against NumPy's: Thomas on
    both, the run sums associated differently (rounding apart only)."""
    pytest.importorskip("numba", reason="the compiled CPU loop needs numba (the cpu extra)")
    _, M = audio_pair("tts-513x80", "speech_02")
    M = np.ascontiguousarray(M[:, :53]).astype(np.float64)[None]          # 53 frames: a prime
    inv = cumel.InverseMelScale(513, 80, 16000, 0.0, 8000.0, norm="slaney", mel_type="slaney")
    S = inv(M)
    G = np.random.default_rng(8).standard_normal(S.shape)
    grads = {}
    for loop in ("numpy", "numba"):
        monkeypatch.setenv("CUMEL_CPU", loop)
        grads[loop] = gradient.nnls_backward(inv.plan, S, G)
    scale = np.abs(grads["numpy"]).max()
    assert scale > 0 and np.abs(grads["numba"] - grads["numpy"]).max() <= 1e-9 * scale


def test_lstsq_gradient_is_the_adjoint():
    rng = np.random.default_rng(6)
    M = _consistent(T=3, seed=6)
    inv = cumel.InverseMelScale(129, 24, solver="lstsq")
    S = inv(M)
    G = rng.standard_normal(S.shape)
    P = inv.plan.pinv(np.float64)
    expected = np.matmul(P.T, np.where(S > 0, G, 0.0))
    np.testing.assert_allclose(gradient.lstsq_backward(inv.plan, S, G), expected, rtol=1e-12,
                               atol=1e-12 * np.abs(expected).max())


@pytest.mark.emulated
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_kernel_matches_numpy(emulated_cupy_order, dtype):
    cp = emulated_cupy_order
    _, M = audio_pair("tts-513x80", "speech_01")
    M = np.ascontiguousarray(M[:, :21]).astype(dtype).reshape(3, 80, 7)
    inv = cumel.InverseMelScale(513, 80)
    S = inv(M)
    G = np.random.default_rng(7).standard_normal(S.shape).astype(dtype)
    cpu = gradient.nnls_backward(inv.plan, S, G)
    # strided device inputs: a transposed view of S, and G with a batch stride of its own
    S_dev = cp.asarray(np.ascontiguousarray(S.transpose(0, 2, 1))).transpose(0, 2, 1)
    G_dev = cp.asarray(G)
    gpu = gradient.nnls_backward(inv.plan, S_dev, G_dev)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == dtype and gpu.shape == (3, 80, 7)
    gpu = cp.asnumpy(gpu)
    scale = np.abs(cpu).max()
    # Thomas on both; the sums over a mel's runs are associated differently (NumPy: each run's
    # sum, then the two added; the kernel: one running sum): rounding apart only
    tol = 1e-5 if dtype == np.float32 else 1e-9
    assert np.abs(gpu - cpu.astype(np.float64)).max() <= tol * scale
