"""cumel.torch: the drop-in modules, the gradient through the inverse, torch.compile and export.

torch is optional: these tests skip, saying so, where it is not installed (CI's peers step
installs ``torch==2.13.0``, a CPU build, and runs them). CUDA tensors: tests/test_gpu.py.
"""
import numpy as np
import pytest

import cumel

from conftest import audio_pair

torch = pytest.importorskip("torch", reason="torch not installed (CI: pip install torch==2.13.0)")
import cumel.torch as T  # noqa: E402


def _sparse_mels(n_stft=65, n_mels=12, batch=(2,), T_=3, seed=0, dtype=torch.float64):
    """Consistent mels of sparse spectra, every mel positive (a mel at exactly 0 is a kink)."""
    rng = np.random.default_rng(seed)
    shape = batch + (n_stft, T_)
    S = (rng.random(shape) ** 4) * (rng.random(shape) < 0.3)
    fb = cumel.MelScale(n_mels, n_stft=n_stft).fb
    S[..., np.argmax(fb, axis=0), :] += 10.0 ** rng.uniform(-4, 0, batch + (n_mels, T_))
    return torch.from_numpy(cumel.MelScale(n_mels, n_stft=n_stft)(S)).to(dtype)


# -- the gradient ----------------------------------------------------------------------------------

def test_gradcheck_nnls_float64():
    inv = T.InverseMelScale(65, 12, tolerance_loss=1e-14, tolerance_change=0.0)
    mel = _sparse_mels().requires_grad_()
    assert (inv(mel) == 0).double().mean() > 0.1          # the clamp is active
    assert torch.autograd.gradcheck(inv, (mel,), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_gradcheck_lstsq_float64():
    inv = T.InverseMelScale(65, 12, solver="lstsq")
    mel = _sparse_mels(seed=1).requires_grad_()
    assert torch.autograd.gradcheck(inv, (mel,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_equals_finite_differences_on_a_real_clip():
    _, M = audio_pair("tts-513x80", "speech_03")
    mel = torch.from_numpy(np.ascontiguousarray(M[:, 200:202], np.float64))
    inv = T.InverseMelScale(513, 80, 22050, 0.0, 8000.0, norm="slaney", mel_scale="slaney",
                            tolerance_loss=1e-13, tolerance_change=0.0)
    weights = torch.from_numpy(np.random.default_rng(0).standard_normal((513, 2)))
    mel.requires_grad_()
    (inv(mel) * weights).sum().backward()
    with torch.no_grad():
        for k in range(0, 80, 7):
            for t in range(2):
                step = 1e-6 * max(abs(mel[k, t].item()), 1e-6 * mel.abs().max().item())
                E = torch.zeros_like(mel)
                E[k, t] = step
                fd = ((inv(mel + E) * weights).sum() - (inv(mel - E) * weights).sum()) / (2 * step)
                assert abs(mel.grad[k, t] - fd) <= 1e-3 * mel.grad.abs().max()


def test_gradient_reaches_an_upstream_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 24).double()
    inv = T.InverseMelScale(129, 24, tolerance_loss=1e-13, tolerance_change=0.0)
    x = torch.randn(5, 8, dtype=torch.float64)

    def loss():
        mel = torch.nn.functional.softplus(layer(x)).T          # (24, 5), every mel > 0
        return inv(mel).square().sum()

    loss().backward()
    grad = layer.weight.grad.clone()
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    direction = torch.randn_like(layer.weight)
    with torch.no_grad():
        h = 1e-6
        layer.weight += h * direction
        up = loss()
        layer.weight -= 2 * h * direction
        down = loss()
        layer.weight += h * direction
    assert abs((up - down) / (2 * h) - (grad * direction).sum()) <= 1e-4 * abs((grad * direction).sum())


def test_float32_gradient_and_half_precision_input():
    inv = T.InverseMelScale(65, 12)
    mel = _sparse_mels(dtype=torch.float32).requires_grad_()
    S = inv(mel)
    assert S.dtype == torch.float32
    S.sum().backward()
    assert mel.grad.dtype == torch.float32 and mel.grad.shape == mel.shape
    half = _sparse_mels(dtype=torch.float16).requires_grad_()
    S16 = inv(half)
    assert S16.dtype == torch.float16
    S16.sum().backward()
    assert half.grad.dtype == torch.float16 and torch.isfinite(half.grad).all()


def test_strided_input_gets_the_gradient_of_its_contiguous_copy():
    inv = T.InverseMelScale(65, 12)
    base = _sparse_mels(batch=(3,), T_=4).transpose(-1, -2).contiguous().requires_grad_()
    mel = base.transpose(-1, -2)                            # (3, 12, 4), time-major storage
    inv(mel).sum().backward()
    copy = mel.detach().contiguous().requires_grad_()
    inv(copy).sum().backward()
    assert torch.equal(base.grad.transpose(-1, -2), copy.grad)


# -- forward: the same bits as cumel.InverseMelScale --------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
def test_forward_equals_cumel_bit_for_bit(solver, dtype):
    _, M = audio_pair("speech-201x128", "speech_01")
    mel = torch.from_numpy(np.ascontiguousarray(M[:, :24].reshape(128, 2, 12).transpose(1, 0, 2)))
    mel = mel.to(dtype)
    kw = dict(solver=solver, seed=3, max_iter=30 if solver in ("torchaudio", "mindspore") else 100000)
    ours = T.InverseMelScale(201, 128, **kw)(mel)
    plain = cumel.InverseMelScale(201, 128, **kw)(mel.numpy())
    assert ours.dtype == dtype
    np.testing.assert_array_equal(ours.numpy(), plain)
    if solver in ("nnls", "lstsq"):                          # with a gradient: the same bits
        np.testing.assert_array_equal(
            T.InverseMelScale(201, 128, **kw)(mel.clone().requires_grad_()).detach().numpy(), plain)


@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
@pytest.mark.parametrize("shape", [(128, 12), (2, 128, 12), (2, 1, 128, 5)])
def test_the_fake_implementation_gives_the_real_shapes(solver, shape):
    """torch.library.opcheck: the operator's fake implementation (what torch.compile and
    torch.export trace with) gives the real result's shape, dtype and strides, for unbatched
    and batched mels (MindSpore's solver adds a leading axis to an unbatched answer)."""
    module = T.InverseMelScale(201, 128, solver=solver, max_iter=3)
    mel = torch.from_numpy(np.random.default_rng(0).random(shape) ** 2)
    torch.library.opcheck(torch.ops.cumel.inverse_mel_scale.default, (mel, module.fb.double(), module.config),
                          test_utils=("test_faketensor",))
    expected = cumel.InverseMelScale(201, 128, solver=solver, max_iter=3)(mel.numpy()).shape
    assert tuple(module(mel).shape) == expected


def test_functional_form_and_cumel_inverse_with_grad():
    mel = _sparse_mels(seed=2).requires_grad_()
    S = T.functional.inverse_mel_scale(mel, n_stft=65)
    S2 = cumel.InverseMelScale(65, 12)(mel)                  # the plain transform routes too
    assert S.grad_fn is not None and S2.grad_fn is not None
    assert torch.equal(S, S2)
    np.testing.assert_array_equal(S.detach().numpy(), cumel.InverseMelScale(65, 12)(mel.detach().numpy()))
    (g1,) = torch.autograd.grad(S.sum(), mel)
    (g2,) = torch.autograd.grad(S2.sum(), mel)
    assert torch.equal(g1, g2)
    fb = torch.from_numpy(cumel.MelScale(12, n_stft=65).fb)
    S3 = T.functional.inverse_mel_scale(mel, n_stft=65, fb=fb)
    np.testing.assert_allclose(S3.detach().numpy(), S.detach().numpy(), rtol=1e-5,
                               atol=1e-6 * S.abs().max().item())


# -- torch.compile and torch.export ---------------------------------------------------------------

class _Model(torch.nn.Module):
    """A layer that produces the mel, then the inverse."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(16, 40)
        self.inverse = T.InverseMelScale(129, 40)

    def forward(self, x):
        mel = torch.nn.functional.softplus(self.layer(x)).transpose(-1, -2)
        return self.inverse(mel)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    model = _Model()
    x = torch.randn(2, 9, 16)
    eager = model(x)
    eager.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out = compiled(x)
    out.square().sum().backward()
    assert torch.equal(out, eager)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6 * g.abs().max().item())


def test_torch_export_traces_the_operator():
    model = _Model()
    x = torch.randn(2, 9, 16)
    program = torch.export.export(model, (x,))
    assert "cumel.inverse_mel_scale" in str(program.graph)
    assert torch.equal(program.module()(x), model(x))


# -- torchaudio's behaviour: buffers, state_dict, .to, its documentation's examples ---------------

def test_buffers_state_dict_and_to():
    inv = T.InverseMelScale(201, 64)
    assert list(inv.state_dict()) == ["fb"] and inv.fb.shape == (201, 64)
    assert inv.fb.dtype == torch.float32
    np.testing.assert_array_equal(inv.fb.numpy(), cumel.InverseMelScale(201, 64).fb)
    mel = torch.from_numpy(cumel.MelScale(64, n_stft=201)(np.random.default_rng(0).random((201, 6))))
    inv64 = T.InverseMelScale(201, 64).to(torch.float64)
    assert inv64.fb.dtype == torch.float64
    np.testing.assert_array_equal(inv64(mel).numpy(), cumel.InverseMelScale(201, 64)(mel.numpy()))
    # a filterbank loaded from elsewhere is the one used
    other = T.InverseMelScale(201, 64, f_max=7000.0)
    inv.load_state_dict(other.state_dict())
    mel32 = mel.float()
    np.testing.assert_array_equal(inv(mel32).numpy(),
                                  cumel.InverseMelScale(201, fb=other.fb.numpy())(mel32.numpy()))
    assert not np.array_equal(inv(mel32).numpy(), T.InverseMelScale(201, 64)(mel32).numpy())
    assert set(T.MelSpectrogram().state_dict()) == {"spectrogram.window", "mel_scale.fb"}
    assert list(T.GriffinLim().state_dict()) == ["window"]


@pytest.mark.parametrize("solver", ["nnls", "torchaudio", "mindspore"])
def test_a_loaded_filterbank_keeps_the_modules_other_arguments(solver):
    """A state_dict from elsewhere changes the filterbank and nothing else: max_iter, the
    tolerances, the SGD arguments and the seed stay the module's."""
    kw = dict(solver=solver, seed=2, max_iter=7, tolerance_loss=0.0, tolerance_change=0.0)
    if solver == "torchaudio":
        kw["sgdargs"] = {"lr": 0.05, "momentum": 0.5}
    mel = _sparse_mels(T_=4)
    other = T.InverseMelScale(65, 12, f_max=7000.0)
    inv = T.InverseMelScale(65, 12, **kw).to(torch.float64)
    inv.load_state_dict(other.state_dict())
    expected, info = cumel.InverseMelScale(65, fb=other.fb.numpy(), **kw)(mel.numpy(), return_info=True)
    if solver != "nnls":
        assert (info.iterations == 7).all()
    np.testing.assert_array_equal(inv(mel).numpy(), expected)


@pytest.mark.parametrize("how", ["load_state_dict", "in place"])
def test_a_changed_filterbank_keeps_each_tolerance_in_its_own_place(how):
    """The transform rebuilt for a changed filterbank gets each of the module's arguments in its
    own place: here the two tolerances are seven decades apart, each decides some frames, and
    either one in both places, or the two swapped, changes the answer (the test above has both
    at 0, where that cannot show)."""
    kw = dict(max_iter=50, tolerance_loss=1e-9, tolerance_change=1e-2)
    mel = _sparse_mels(T_=8)
    other = T.InverseMelScale(65, 12, f_max=7000.0)
    inv = T.InverseMelScale(65, 12, **kw).to(torch.float64)
    if how == "load_state_dict":
        inv.load_state_dict(other.state_dict())
    else:
        with torch.no_grad():
            inv.fb.copy_(other.fb)
    fb = other.fb.numpy()

    def solve(tolerance_loss, tolerance_change):
        return cumel.InverseMelScale(65, fb=fb, max_iter=50, tolerance_loss=tolerance_loss,
                                     tolerance_change=tolerance_change)(mel.numpy())

    expected = solve(1e-9, 1e-2)
    for wrong in [(1e-9, 1e-9), (1e-2, 1e-2), (1e-2, 1e-9)]:
        assert not np.array_equal(solve(*wrong), expected), wrong
    np.testing.assert_array_equal(inv(mel).numpy(), expected)


def test_torchaudio_documentation_examples_run():
    """torchaudio.transforms' docstring examples with ``transforms`` swapped for cumel.torch."""
    transforms = T
    sample_rate = 16000
    t = torch.arange(2 * sample_rate) / sample_rate
    waveform = (0.3 * torch.sin(2 * np.pi * 440 * t * (1 + t)))[None]        # (channel, time)

    transform = transforms.Spectrogram(n_fft=800)
    spectrogram = transform(waveform)
    assert spectrogram.shape == (1, 401, 81)

    batch, freq, time = 2, 257, 100
    spectrogram = torch.randn(batch, freq, time)
    transform = transforms.GriffinLim(n_fft=512)
    waveform_gl = transform(spectrogram)
    assert waveform_gl.shape == (2, 256 * 99)

    spectrogram_transform = transforms.Spectrogram(n_fft=1024)
    spectrogram = spectrogram_transform(waveform)
    melscale_transform = transforms.MelScale(sample_rate=sample_rate, n_stft=1024 // 2 + 1)
    melscale_spectrogram = melscale_transform(spectrogram)
    assert melscale_spectrogram.shape == (1, 128, spectrogram.shape[-1])

    mel_spectrogram_transform = transforms.MelSpectrogram(sample_rate, n_fft=1024)
    mel_spectrogram = mel_spectrogram_transform(waveform)
    inverse_melscale_transform = transforms.InverseMelScale(n_stft=1024 // 2 + 1)
    spectrogram = inverse_melscale_transform(mel_spectrogram)
    assert spectrogram.shape == (1, 513, mel_spectrogram.shape[-1]) and (spectrogram >= 0).all()

    transform = transforms.MelSpectrogram(sample_rate)
    mel_specgram = transform(waveform)
    assert mel_specgram.shape == (1, 128, 161)


def test_spectrogram_and_mel_agree_with_cumel():
    from cumel import stft as cumel_stft
    x = np.random.default_rng(0).standard_normal(4000)
    spec = T.Spectrogram(n_fft=400, hop_length=160)(torch.from_numpy(x)).numpy()
    X = cumel_stft.stft(x, 400, 160, 400)
    # torch.hann_window is float32 (torchaudio's buffer too): float32 rounding of the window
    np.testing.assert_allclose(spec, np.abs(X) ** 2, rtol=0, atol=1e-5 * spec.max())
    # normalized=True: the frames divided by the window's L2 norm (torchaudio's "window")
    module = T.Spectrogram(n_fft=400, hop_length=160, normalized=True)
    norm_sq = float(module.window.double().square().sum())
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy() * norm_sq, spec, rtol=1e-6,
                               atol=1e-6 * spec.max())
    magnitude = T.Spectrogram(n_fft=400, hop_length=160, normalized=True, power=1.0)
    np.testing.assert_allclose(magnitude(torch.from_numpy(x)).numpy() ** 2 * norm_sq, spec,
                               rtol=1e-6, atol=1e-6 * spec.max())
    mel = T.MelSpectrogram(n_fft=400, hop_length=160, n_mels=64)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mel, cumel.MelScale(64, n_stft=201)(spec), rtol=1e-5,
                               atol=1e-6 * mel.max())


def test_griffinlim_has_a_gradient_and_follows_cumel():
    S = np.random.default_rng(0).random((201, 20)) ** 2
    ours = T.GriffinLim(400, 4, hop_length=100, rand_init=False)(torch.from_numpy(S)).numpy()
    plain = cumel.GriffinLim(400, 4, hop_length=100, rand_init=False)(S)
    np.testing.assert_allclose(ours, plain, atol=1e-5 * np.abs(plain).max())
    spec = torch.from_numpy(S).requires_grad_()
    T.GriffinLim(400, 2, hop_length=100)(spec).square().sum().backward()
    assert torch.isfinite(spec.grad).all() and spec.grad.abs().max() > 0


def test_frontend_keyword_takes_the_model_filterbank():
    inv = T.InverseMelScale(frontend="whisper")
    fe = cumel.frontend("whisper")
    assert (inv.n_stft, inv.n_mels) == (fe.n_stft, fe.n_mels)
    np.testing.assert_array_equal(inv.fb.numpy(), cumel.InverseMelScale(
        fe.n_stft, fe.n_mels, fe.sample_rate, fe.f_min, fe.f_max, norm=fe.norm,
        mel_type=fe.mel_type).fb)
    assert T.MelScale(frontend="hifigan").fb.shape == (513, 80)


# -- what has no gradient says so; bad input --------------------------------------------------------

@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_compatibility_solvers_raise_when_a_gradient_is_asked(solver):
    mel = _sparse_mels().requires_grad_()
    with pytest.raises(cumel.NoGradientError, match=f"melspec requires grad.*solver='{solver}'"):
        T.InverseMelScale(65, 12, solver=solver, max_iter=5)(mel)
    with pytest.raises(cumel.NoGradientError, match=f"mel requires grad.*solver='{solver}'"):
        cumel.InverseMelScale(65, 12, solver=solver, max_iter=5)(mel)
    with torch.no_grad():                                   # values only: fine
        assert T.InverseMelScale(65, 12, solver=solver, max_iter=5, seed=0)(mel).shape == (2, 65, 3)
    assert T.InverseMelScale(65, 12, solver=solver, max_iter=5, seed=0)(mel.detach()).grad_fn is None


def test_numpy_paths_raise_instead_of_detaching():
    mel = _sparse_mels(n_stft=129, n_mels=24, T_=12, dtype=torch.float32).requires_grad_()
    with pytest.raises(cumel.NoGradientError, match="mel requires grad.*cumel.torch.GriffinLim"):
        cumel.mel_to_audio(mel, 256, hop_length=64, n_iter=2)
    spec = torch.rand(2, 129, 12, requires_grad=True)
    with pytest.raises(cumel.NoGradientError, match="specgram requires grad.*cumel.torch.GriffinLim"):
        cumel.GriffinLim(256, 2, hop_length=64)(spec)
    with pytest.raises(cumel.NoGradientError, match="audio requires grad"):
        cumel.frontend("hifigan").features(torch.rand(4096, requires_grad=True))
    with pytest.raises(ValueError, match="out= cannot take the result when mel requires grad"):
        cumel.InverseMelScale(129, 24)(mel, out=torch.empty(2, 129, 12))
    with pytest.raises(ValueError, match="return_info=True is not available"):
        cumel.InverseMelScale(129, 24)(mel, return_info=True)


def test_bad_input_names_the_parameter():
    inv = T.InverseMelScale(65, 12)
    with pytest.raises(TypeError, match="melspec must be a real floating-point tensor.*complex64"):
        inv(torch.zeros(12, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="melspec must be a real floating-point tensor.*int64"):
        inv(torch.zeros(12, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="Expected an input with 12 mel bins. Found: 13"):
        inv(torch.zeros(13, 3))
    with pytest.raises(ValueError, match="melspec is on cpu but fb is on meta"):
        inv.to("meta")(torch.zeros(12, 3))
    inv = T.InverseMelScale(65, 12)
    inv.fb.requires_grad_(True)
    with pytest.raises(cumel.NoGradientError, match="fb requires grad"):
        inv(torch.rand(12, 3))
    with pytest.raises(ValueError, match="driver must be one of"):
        T.InverseMelScale(65, 12, driver="qr")
    with pytest.raises(ValueError, match="n_stft is required"):
        T.InverseMelScale()
    with pytest.raises(ValueError, match="momentum must be in"):
        T.GriffinLim(momentum=1.0)
    with pytest.raises(ValueError, match="specgram must have shape"):
        T.MelScale(12, n_stft=65)(torch.zeros(64, 3))
    with pytest.raises(ValueError, match="solver must be one of"):
        T.InverseMelScale(65, 12, solver="adam")
