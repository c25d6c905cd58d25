"""The public API: parameters, spellings, shapes, dtypes, bad input, and the CLI."""
import enum

import numpy as np
import pytest

import cumel
from cumel import cli


class NormType(enum.Enum):       # MindSpore's enums, as far as spelling goes
    NONE = "none"
    SLANEY = "slaney"


class MelType(enum.Enum):
    HTK = "htk"
    SLANEY = "slaney"


def _mel(shape=(128, 5), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_shapes_and_types(solver, lead):
    mel = _mel(lead + (10, 4))
    out = cumel.InverseMelScale(n_stft=33, n_mels=10, solver=solver, seed=0, max_iter=30)(mel)
    expected_lead = (1,) if (solver == "mindspore" and not lead) else lead
    assert out.shape == expected_lead + (33, 4)
    assert out.dtype == np.float32 and isinstance(out, np.ndarray)
    assert (out >= 0).all()


@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
def test_float64_stays_float64_and_ints_become_float32(solver):
    inv = cumel.InverseMelScale(n_stft=33, n_mels=10, solver=solver, seed=0, max_iter=10)
    assert inv(_mel((10, 3), dtype=np.float64)).dtype == np.float64
    assert inv(np.ones((10, 3), dtype=np.int32)).dtype == np.float32


@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
def test_caller_array_is_not_modified(solver):
    mel = _mel((2, 10, 6))
    view = mel[:, :, ::2]                  # non-contiguous input too
    before = view.copy()
    cumel.InverseMelScale(n_stft=33, n_mels=10, solver=solver, seed=0, max_iter=20)(view)
    np.testing.assert_array_equal(view, before)


@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
def test_empty_time_axis(solver):
    out = cumel.InverseMelScale(n_stft=33, n_mels=10, solver=solver, seed=0)(np.zeros((2, 10, 0), np.float32))
    assert out.shape == (2, 33, 0)


def test_functional_form_equals_transform():
    mel = _mel((10, 6))
    a = cumel.inverse_mel_scale(mel, n_stft=33)
    b = cumel.InverseMelScale(n_stft=33, n_mels=10)(mel)
    np.testing.assert_array_equal(a, b)


def test_seed_parameters_default_like_the_seed_document():
    inv = cumel.InverseMelScale(201)
    assert (inv.n_mels, inv.max_iter, inv.tolerance_loss, inv.tolerance_change) == (128, 100000, 1e-5, 1e-8)
    assert inv.key == (201, 0.0, 8000.0, 128, 16000, None, "htk")
    assert inv.solver == "nnls"


@pytest.mark.parametrize("norm, mel_type", [
    ("slaney", "slaney"), ("SLANEY", "Slaney"), (NormType.SLANEY, MelType.SLANEY),
    ("NormType.SLANEY", "MelType.SLANEY"),
])
def test_norm_and_mel_type_spellings(norm, mel_type):
    inv = cumel.InverseMelScale(65, 16, 8000, norm=norm, mel_type=mel_type)
    assert inv.key[-2:] == ("slaney", "slaney")


@pytest.mark.parametrize("norm", [None, "none", "None", NormType.NONE])
def test_norm_none_spellings(norm):
    assert cumel.InverseMelScale(65, 16, 8000, norm=norm).key[-2] is None


def test_sgdargs_spellings():
    ta = cumel.InverseMelScale(17, 6, solver="torchaudio", sgdargs={"lr": 0.05, "momentum": 0.5})
    ms = cumel.InverseMelScale(17, 6, solver="mindspore", sgdargs={"sgd_lr": 0.05})
    assert ta.sgdargs["lr"] == 0.05 and ta.sgdargs["momentum"] == 0.5
    assert ms.sgdargs["lr"] == 0.05 and ms.sgdargs["momentum"] == 0.9
    # torch.optim.SGD semantics: a dict replaces the defaults, missing momentum is 0
    assert cumel.InverseMelScale(17, 6, solver="torchaudio", sgdargs={"lr": 0.2}).sgdargs["momentum"] == 0.0


def test_torchaudio_sgd_options_change_the_result():
    mel = _mel((6, 5))
    base = dict(n_stft=17, n_mels=6, solver="torchaudio", seed=1, max_iter=15)
    plain = cumel.InverseMelScale(**base, sgdargs={"lr": 0.1, "momentum": 0.9})(mel)
    for extra in ({"nesterov": True}, {"weight_decay": 0.1}, {"dampening": 0.5}):
        other = cumel.InverseMelScale(**base, sgdargs={"lr": 0.1, "momentum": 0.9, **extra})(mel)
        assert not np.allclose(plain, other), extra


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_stft=0), ValueError, "n_stft"),
    (dict(n_stft=2.5), ValueError, "n_stft"),
    (dict(n_mels=0), ValueError, "n_mels"),
    (dict(f_min=8000.0), ValueError, "f_min"),
    (dict(f_min=-1.0), ValueError, "f_min"),
    (dict(f_max=9000.0), ValueError, "f_max"),
    (dict(tolerance_loss=-1.0), ValueError, "tolerance_loss"),
    (dict(tolerance_change=float("nan")), ValueError, "tolerance_change"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(solver="adam"), ValueError, "solver"),
    (dict(norm="l1"), ValueError, "norm"),
    (dict(mel_type="bark"), ValueError, "mel_type"),
    (dict(seed=-3), ValueError, "seed"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(solver="torchaudio", sgdargs={"lr": 0.1, "betas": 1}), ValueError, "betas"),
    (dict(solver="torchaudio", sgdargs={"lr": -0.1}), ValueError, "lr"),
    (dict(solver="torchaudio", sgdargs={"lr": 0.1, "sgd_lr": 0.1}), ValueError, "mixes"),
    (dict(solver="nnls", sgdargs={"lr": 0.1}), ValueError, "SGD solvers"),
    (dict(solver="lstsq", sgdargs={"lr": 0.1}), ValueError, "SGD solvers"),
])
def test_bad_parameters_raise_naming_them(kwargs, exc, match):
    args = dict(n_stft=201, n_mels=128)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        cumel.InverseMelScale(**args)


def test_bounds_are_exactly_where_the_messages_put_them():
    """Each documented bound: the value at it is accepted, the next one refused (a ``<`` for a
    ``<=`` moves a bound by one)."""
    mel = _mel((10, 3), dtype=np.float64)
    for seed in (0, 2 ** 32 - 1):
        cumel.InverseMelScale(33, 10, solver="torchaudio", seed=seed, max_iter=2)(mel)
    for seed in (-1, 2 ** 32):
        with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*32\), "
                                             rf"got {seed}"):
            cumel.InverseMelScale(33, 10, seed=seed)
    cumel.InverseMelScale(33, 10, max_iter=1, f_min=0.0, f_max=8000.0, tolerance_loss=0.0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer, got 0"):
        cumel.InverseMelScale(33, 10, max_iter=0)
    with pytest.raises(ValueError, match="f_max must not exceed sample_rate / 2"):
        cumel.InverseMelScale(33, 10, f_max=8000.5)
    cumel.GriffinLim(n_fft=64, n_iter=0)
    with pytest.raises(ValueError, match="n_iter must be an integer >= 0, got -1"):
        cumel.GriffinLim(n_fft=64, n_iter=-1)


def test_printed_percentages_never_round_to_a_bound_not_reached():
    """A share is printed with one decimal, and never as 0.0 % or 100.0 % unless it is."""
    from cumel._validate import percent
    cases = {0.0: "0.0%", 1.0: "100.0%", 0.5: "50.0%", 0.996: "99.6%", 0.1234: "12.3%",
             0.00004: "0.1%", 0.0004: "0.1%", 0.0016: "0.2%", 0.99996: "99.9%", 0.9996: "99.9%"}
    for share, text in cases.items():
        assert percent(share) == text, share
    # the figure of the log-mel warning is the share of negative values of the mel given
    mel = np.ones((10, 20), np.float32)
    mel.reshape(-1)[:30] = -1.0                              # 30 of 200: 15.0 %
    with pytest.warns(UserWarning, match=r"mel: 15\.0% of its values are negative"):
        cumel.InverseMelScale(33, 10, max_iter=2)(mel)


@pytest.mark.filterwarnings("ignore:solver='nnls'.*max_iter:RuntimeWarning")
def test_total_mel_residual_weighs_every_frame_at_its_own_scale():
    """``total_mel_residual`` is ||A S - M|| / ||M|| over all frames, and ``mel_residual`` the
    same frame by frame, recomputed here in float64 for frames at levels 1e-3 to 1e3."""
    rng = np.random.default_rng(3)
    mel = rng.random((2, 10, 6)) * np.array([1.0, 1e3, 1e-3, 7.0, 1e2, 0.5])
    S, info = cumel.InverseMelScale(33, 10, max_iter=3)(mel, return_info=True)
    fb = cumel.melscale_fbanks(33, 0.0, 8000.0, 10, 16000, dtype=np.float64)
    R = np.einsum("fm,bft->bmt", fb, S) - mel
    assert info.total_mel_residual > 1e-6                     # a residual left to weigh
    np.testing.assert_allclose(info.total_mel_residual, np.linalg.norm(R) / np.linalg.norm(mel),
                               rtol=1e-9)
    # per frame: converged frames sit near 1e-9, where the difference A S - M keeps ~8 digits
    np.testing.assert_allclose(info.mel_residual, np.linalg.norm(R, axis=1) /
                               np.linalg.norm(mel, axis=1), rtol=1e-9, atol=1e-12)


def test_value_named_in_message():
    with pytest.raises(ValueError, match=r"f_max.*9000\.0"):
        cumel.InverseMelScale(201, f_max=9000.0)


@pytest.mark.parametrize("mel, exc, match", [
    (np.zeros((64, 5), np.float32), ValueError, r"n_mels=128.*\(64, 5\)"),
    (np.zeros(128, np.float32), ValueError, "at least 2 dims"),
    (np.zeros((128, 5), np.complex64), TypeError, "real"),
    (np.zeros((128, 5), np.bool_), TypeError, "real"),
    (np.full((128, 5), np.nan, np.float32), ValueError, "NaN or Inf"),
    (np.full((128, 5), np.inf), ValueError, "NaN or Inf"),
])
@pytest.mark.parametrize("solver", ["nnls", "lstsq", "torchaudio", "mindspore"])
def test_bad_input_raises(mel, exc, match, solver):
    with pytest.raises(exc, match=match):
        cumel.InverseMelScale(201, 128, solver=solver)(mel)


def test_device_cuda_without_gpu_raises_clearly():
    from cumel import _backend
    if _backend.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cuda"):
        cumel.InverseMelScale(33, 10, device="cuda")(_mel((10, 2)))
    # "auto" falls back to the CPU and returns NumPy
    assert isinstance(cumel.InverseMelScale(33, 10, device="auto")(_mel((10, 2))), np.ndarray)


def test_mel_scale_forward_round_trip():
    fwd = cumel.MelScale(n_mels=80, sample_rate=16000, n_stft=513, norm="slaney", mel_scale="slaney")
    S = np.random.default_rng(1).random((2, 513, 7)).astype(np.float32)
    M = fwd(S)
    assert M.shape == (2, 80, 7)
    np.testing.assert_allclose(M, np.einsum("fm,bft->bmt", fwd.fb.astype(np.float64), S), rtol=1e-5)
    S_hat = cumel.InverseMelScale(513, 80, 16000, norm="slaney", mel_type="slaney")(M)
    assert np.linalg.norm(fwd(S_hat) - M) <= 1e-5 * np.linalg.norm(M)


def test_import_prints_nothing():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import cumel"], capture_output=True, text=True,
                         cwd=str(__import__("conftest").REPO))
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""


def test_cli_invert_round_trip(tmp_path, capsys):
    mel = _mel((2, 40, 9))
    np.save(tmp_path / "mel.npy", mel)
    rc = cli.main(["invert", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "S.npy"),
                   "--n-stft", "129", "--sample-rate", "8000"])
    assert rc == 0
    S = np.load(tmp_path / "S.npy")
    np.testing.assert_array_equal(S, cumel.InverseMelScale(129, 40, 8000)(mel))
    assert "mel residual" in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    np.save(tmp_path / "mel.npy", _mel((40, 9)))
    rc = cli.main(["invert", str(tmp_path / "mel.npy"), "-o", str(tmp_path / "S.npy"),
                   "--n-stft", "129", "--n-mels", "64"])
    assert rc == 2
    assert "n_mels=64" in capsys.readouterr().err


def test_cli_demo(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # the demo writes demo_reconstruction.wav here
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "(128, 400)" in out and "(201, 400)" in out and "solver=nnls" in out
    residual = float(out.split("mel residual ||A S - M|| / ||M|| = ")[1].split()[0])
    assert residual <= 1e-5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises_instead_of_returning_nan():
    # MindSpore's loop has no clamp inside: a too large step grows without bound
    mel = _mel((10, 4))
    with pytest.raises(FloatingPointError, match="lr"):
        cumel.InverseMelScale(33, 10, solver="mindspore", seed=0, max_iter=5000,
                              sgdargs={"sgd_lr": 1e3})(mel)


def test_numpy_input_does_not_import_dask():
    import subprocess
    import sys
    code = ("import sys, numpy, cumel; cumel.InverseMelScale(33, 10)(numpy.ones((10, 3))); "
            "print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("conftest").REPO))
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


class _Producer:
    """A CPU DLPack producer that is not a NumPy array (what a third library would hand over)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_cpu_dlpack_producer_in_numpy_out():
    # no torch needed: runs under the README's test command (torch tensors: test_torch_interop.py)
    mel = _mel((24, 5))
    producer = _Producer(mel)
    S = cumel.InverseMelScale(65, 24)(producer)
    assert type(S) is np.ndarray
    np.testing.assert_array_equal(S, cumel.InverseMelScale(65, 24)(mel))
    S, info = cumel.InverseMelScale(65, 24)(producer, return_info=True)
    assert type(S) is np.ndarray and info.mel_residual.shape == (5,)
