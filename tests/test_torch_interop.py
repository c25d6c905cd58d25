"""torch tensors in, torch tensors out (CPU builds of torch in CI).

torch is optional: these tests skip, saying so, where it is not installed (.ci/run installs
``torch==2.13.0``, a CPU build). CUDA tensors are covered by tests/test_gpu.py, DLPack producers
that are not torch by tests/test_api.py (no torch needed, so it runs in every test run).
"""
import subprocess
import sys

import numpy as np
import pytest

import cumel
from cumel import _backend

torch = pytest.importorskip("torch", reason="torch not installed (CI: pip install torch==2.13.0)")

SOLVERS = ["nnls", "lstsq", "torchaudio", "mindspore"]


def _mel(shape=(2, 24, 7), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", SOLVERS)
def test_cpu_tensor_in_tensor_out_equal_to_numpy(solver, dtype):
    mel = _mel(dtype=dtype)
    inv = cumel.InverseMelScale(65, 24, solver=solver, seed=0, max_iter=20)
    tensor = torch.from_numpy(mel.copy())
    S = inv(tensor)
    assert isinstance(S, torch.Tensor)
    assert S.device.type == "cpu" and S.dtype == tensor.dtype
    np.testing.assert_array_equal(S.numpy(), inv(mel))
    np.testing.assert_array_equal(tensor.numpy(), mel)           # the caller's tensor untouched


def test_tensor_with_grad_non_contiguous_and_info():
    mel = _mel((24, 10))
    tensor = torch.from_numpy(mel).requires_grad_(True)
    view = tensor[:, ::2]                                        # strided, with autograd history
    S = cumel.InverseMelScale(65, 24)(view)                      # an answer with a gradient
    assert isinstance(S, torch.Tensor) and S.shape == (65, 5) and S.requires_grad
    np.testing.assert_array_equal(S.detach().numpy(), cumel.InverseMelScale(65, 24)(mel[:, ::2]))
    with torch.no_grad():                                        # values and diagnostics only
        S, info = cumel.InverseMelScale(65, 24)(view, return_info=True)
    assert not S.requires_grad and info.iterations.shape == (5,)
    assert torch.equal(tensor.detach(), torch.from_numpy(mel))


def test_functional_form_takes_tensors():
    mel = _mel((24, 4))
    S = cumel.inverse_mel_scale(torch.from_numpy(mel), n_stft=65)
    assert isinstance(S, torch.Tensor)
    np.testing.assert_array_equal(S.numpy(), cumel.inverse_mel_scale(mel, n_stft=65))


def test_unsupported_tensors_raise_naming_mel():
    inv = cumel.InverseMelScale(65, 24)
    with pytest.raises(TypeError, match="mel must hold real numbers.*bfloat16"):
        inv(torch.zeros((24, 3), dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="mel must hold real numbers"):
        inv(torch.zeros((24, 3), dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"mel\.shape\[-2\] must equal n_mels=24"):
        inv(torch.zeros((23, 3)))


def test_out_view_of_a_cpu_tensor_shares_memory():
    out = torch.zeros((2, 65, 3))
    view = _backend.out_view(out, np)
    view[0, 0, 0] = 5.0
    assert out[0, 0, 0].item() == 5.0
    with pytest.raises(ValueError, match="out must not require grad"):
        _backend.out_view(torch.zeros(3, requires_grad=True), np)


def test_torch_is_not_imported_for_numpy_work():
    code = ("import sys, numpy as np, cumel; cumel.InverseMelScale(65, 24)(np.ones((24, 2)));"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_out_torch_cpu_tensor_receives_the_result():
    mel = _mel((24, 5))
    out = torch.full((65, 5), float("nan"))
    S = cumel.InverseMelScale(65, 24)(torch.from_numpy(mel), out=out)
    assert S is out
    np.testing.assert_array_equal(out.numpy(), cumel.InverseMelScale(65, 24)(mel))
    out64 = torch.empty((65, 5), dtype=torch.float64)
    with pytest.raises(ValueError, match="out must have shape .* dtype float32"):
        cumel.InverseMelScale(65, 24)(mel, out=out64)


# -- GriffinLim, mel_to_audio and the front ends: torch in, torch out --------------------------------

def _spec(shape=(2, 129, 12), seed=0):
    return (np.random.default_rng(seed).random(shape) ** 4).astype(np.float32)


def test_griffinlim_tensor_in_tensor_out():
    S = _spec()
    gl = cumel.GriffinLim(256, 3, hop_length=64, seed=0)
    y = gl(torch.from_numpy(S))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (2, 64 * 11)
    np.testing.assert_array_equal(y.numpy(), gl(S))
    y64 = cumel.griffinlim(torch.from_numpy(S.astype(np.float64)), 256, 2, hop_length=64, seed=0)
    assert isinstance(y64, torch.Tensor) and y64.dtype == torch.float64 and not y64.requires_grad
    with pytest.raises(cumel.NoGradientError, match="specgram requires grad"):
        cumel.griffinlim(torch.from_numpy(S).requires_grad_(True), 256, 2, hop_length=64)


def test_mel_to_audio_tensor_with_grad_raises_and_runs_without_grad():
    mel = cumel.MelScale(24, n_stft=129)(_spec((129, 12)))
    tensor = torch.from_numpy(mel).requires_grad_(True)         # failed before: np.asarray(tensor)
    with pytest.raises(cumel.NoGradientError, match="mel requires grad.*mel_to_audio"):
        cumel.mel_to_audio(tensor, 256, hop_length=64, n_iter=2, seed=0)
    with torch.no_grad():
        y = cumel.mel_to_audio(tensor, 256, hop_length=64, n_iter=2, seed=0)
    assert isinstance(y, torch.Tensor) and y.shape == (64 * 11,) and not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), cumel.mel_to_audio(mel, 256, hop_length=64, n_iter=2,
                                                                seed=0))
    assert torch.equal(tensor.detach(), torch.from_numpy(mel))


def test_front_end_tensors_in_and_out():
    fe = cumel.frontend("hifigan")
    x = np.sin(np.arange(8192) * 0.05).astype(np.float32)
    F = fe.features(torch.from_numpy(x))
    assert isinstance(F, torch.Tensor) and F.shape == (80, 32)
    np.testing.assert_array_equal(F.numpy(), fe.features(x))
    y = cumel.mel_to_audio(F, frontend="hifigan", length=8192, n_iter=2, seed=0)
    assert isinstance(y, torch.Tensor) and y.shape == (8192,)
    np.testing.assert_array_equal(y.numpy(), fe.audio(F.detach().numpy(), length=8192, n_iter=2,
                                                      seed=0))
    S = fe.spectrogram(F)
    assert isinstance(S, torch.Tensor) and S.shape == (513, 32)
    mel = fe.mel(F)
    assert isinstance(mel, torch.Tensor) and (mel >= 0).all()


def test_fb_as_a_tensor():
    fb = torch.from_numpy(cumel.InverseMelScale(129, 24).plan.fb64.astype(np.float32))
    own = cumel.InverseMelScale(129, fb=fb)
    mel = cumel.MelScale(24, n_stft=129)(_spec((129, 5)))
    np.testing.assert_allclose(own(mel), cumel.InverseMelScale(129, 24)(mel), rtol=1e-4, atol=1e-6)
