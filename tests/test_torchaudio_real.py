"""cumel against the real torchaudio: ``cumel.torch``'s transforms, the ``torchaudio`` front end and
``solver="torchaudio"``, on clips of tests/data.

torchaudio has no build for the torch of CI's peers step, so this module skips there (and
wherever torchaudio does not import). ``.ci/peers-torchaudio`` runs it in a venv of its own,
pinned to torch 2.9.1 and torchaudio 2.9.1 (the last torchaudio release; CPU), where no skip is
allowed. What is compared:

* ``Spectrogram``, ``GriffinLim`` and ``MelScale`` / ``MelSpectrogram`` holding torchaudio's
  filterbank: the same torch operations in the same order, so equal bit for bit;
* the filterbanks themselves (torchaudio computes them in float32, cumel in float64 rounded once:
  REFERENCE.md's bound) and what they do to a mel spectrogram;
* the ``torchaudio`` preset against ``MelSpectrogram()`` + ``AmplitudeToDB("power")``, its
  inverse against ``DB_to_amplitude``, and a round trip against torchaudio's own way back
  (``InverseMelScale`` + ``GriffinLim``);
* ``solver="lstsq"`` against torchaudio 2.x's ``InverseMelScale`` (least squares + relu), and
  cumel's default nnls against its mel residual;
* ``solver="torchaudio"`` against torchaudio 0.8's ``InverseMelScale`` loop. torchaudio removed
  that loop in 2.1, and torchaudio 0.8 has no build for a current Python, so the peer is its
  ``forward`` statement for statement (bench/torch_sgd.py) run on the real ``torch.optim.SGD``,
  ``torch.manual_seed`` + ``torch.rand`` start and torchaudio 2.9.1's filterbank.

The figures in comments were measured with torch 2.9.1 and torchaudio 2.9.1 on the CPU; each
bound leaves at least 5x head-room.
"""
import warnings

import numpy as np
import pytest

torchaudio = pytest.importorskip(
    "torchaudio", reason="torchaudio not installed (no build for CI's torch; .ci/peers-torchaudio "
                         "runs these tests with torch and torchaudio 2.9.1)")
import torch  # noqa: E402  (torchaudio imports it: present wherever this module runs)

import cumel  # noqa: E402
import cumel.torch as T  # noqa: E402

from bench.torch_sgd import inverse_mel_scale_sgd  # noqa: E402
from test_frontends import PER_NEPER, clip  # noqa: E402
from test_frontends_peers import MEASURED_NEPERS  # noqa: E402

CLIPS = ("speech_07", "speech_00", "speech_03")


@pytest.fixture(autouse=True)
def _quiet():
    # torchaudio's own warnings, the empty filters of 128 mels on 201 bins among them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def speech(name="speech_07", seconds=2.0):
    return torch.from_numpy(clip(name, seconds)[0])


def real_mel(x, **kw):
    with torch.no_grad():
        return torchaudio.transforms.MelSpectrogram(**kw)(x)


# -- forward transforms ------------------------------------------------------------------------------

FILTERBANKS = [
    dict(n_mels=128, sample_rate=16000, n_stft=201),                                  # defaults
    dict(n_mels=80, sample_rate=16000, n_stft=201, norm="slaney", mel_scale="slaney", f_max=8000.0),
    dict(n_mels=80, sample_rate=22050, n_stft=513, norm="slaney", mel_scale="slaney", f_max=8000.0),
    dict(n_mels=64, sample_rate=16000, n_stft=257, f_min=50.0, f_max=7600.0),
    dict(n_mels=40, sample_rate=8001, n_stft=129, f_min=30.0),                        # odd rate
]


@pytest.mark.parametrize("kw", FILTERBANKS, ids=lambda kw: f"{kw['n_stft']}x{kw['n_mels']}")
def test_filterbanks_are_torchaudios(kw):
    real = torchaudio.transforms.MelScale(**kw).fb
    for ours in (T.MelScale(**kw).fb, T.InverseMelScale(**kw).fb):
        assert ours.shape == real.shape and ours.dtype == real.dtype == torch.float32
        # REFERENCE.md: torchaudio's float32 rounding moves narrow filters by up to 3.1e-5 of the
        # largest weight (fbank_09), so filterbanks are compared within 5e-5 of it; measured here
        # 1.2e-5 at most (the defaults)
        scale = real.abs().max().item()
        assert (ours - real).abs().max().item() <= 5e-5 * scale
        assert torch.equal(ours > 1e-6 * scale, real > 1e-6 * scale)       # the same triangles
    f_max = kw.get("f_max", float(kw["sample_rate"] // 2))
    ours = cumel.melscale_fbanks(kw["n_stft"], kw.get("f_min", 0.0), f_max, kw["n_mels"],
                                 kw["sample_rate"], kw.get("norm"), kw.get("mel_scale", "htk"))
    np.testing.assert_array_equal(ours, T.MelScale(**kw).fb.numpy())


SPECTROGRAMS = [dict(), dict(normalized=True), dict(power=1.0, pad=7), dict(power=None),
                dict(n_fft=512, win_length=400, hop_length=128, center=False),
                dict(normalized="frame_length", pad_mode="constant")]


@pytest.mark.parametrize("kw", SPECTROGRAMS, ids=lambda kw: ",".join(kw) or "defaults")
def test_spectrogram_is_torchaudios_bit_for_bit(kw):
    x = torch.stack([speech(), 0.5 * speech("speech_00")])                # (2, n)
    real = torchaudio.transforms.Spectrogram(**kw)(x)
    ours = T.Spectrogram(**kw)(x)
    assert ours.dtype == real.dtype and torch.equal(ours, real)
    assert set(T.Spectrogram(**kw).state_dict()) == set(torchaudio.transforms.Spectrogram(**kw).state_dict())


@pytest.mark.parametrize("name", CLIPS)
def test_mel_spectrogram_with_torchaudios_filterbank_is_torchaudios_bit_for_bit(name):
    x = speech(name)
    real = torchaudio.transforms.MelSpectrogram()
    ours = T.MelSpectrogram()
    assert set(ours.state_dict()) == set(real.state_dict())
    own_fb = ours(x)
    ours.load_state_dict(real.state_dict())
    np.testing.assert_array_equal(ours(x).numpy(), real(x).numpy())
    spec = torchaudio.transforms.Spectrogram()(x)
    scale = T.MelScale()
    scale.load_state_dict(torchaudio.transforms.MelScale().state_dict())
    np.testing.assert_array_equal(scale(spec).numpy(), torchaudio.transforms.MelScale()(spec).numpy())
    # with cumel's own filterbank: measured at most 1.8e-6 of the largest value (the three clips)
    reference = real(x)
    assert (own_fb - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()


@pytest.mark.parametrize("rand_init", [False, True])
def test_griffinlim_is_torchaudios_bit_for_bit(rand_init):
    spec = torchaudio.transforms.Spectrogram()(speech())
    kw = dict(n_fft=400, n_iter=8, momentum=0.99, length=32000, rand_init=rand_init)
    torch.manual_seed(3)
    real = torchaudio.transforms.GriffinLim(**kw)(spec)
    torch.manual_seed(3)
    ours = T.GriffinLim(**kw)(spec)
    np.testing.assert_array_equal(ours.numpy(), real.numpy())


# -- the torchaudio front end ------------------------------------------------------------------------

def real_db(x):
    return torchaudio.transforms.AmplitudeToDB("power")(real_mel(x))


@pytest.mark.parametrize("name", CLIPS)
def test_frontend_preset_is_torchaudios(name):
    x = speech(name, 3.0)
    real = real_db(x).numpy()
    fe = cumel.frontend("torchaudio")
    ours = fe.features(x.numpy())
    assert ours.shape == real.shape and ours.dtype == np.float32
    # test_frontends_peers.py's bounds (the same figures: 3.4e-3 nepers at worst, at the quietest
    # bins, 4.5e-4 within 80 dB of the peak)
    nepers = np.abs(ours - real) / PER_NEPER["torchaudio"]
    assert nepers.max() <= 5 * MEASURED_NEPERS["torchaudio"]
    assert nepers[real >= real.max() - 80.0].max() <= 5 * 4.5e-4
    # and back: the linear mel of the features is torchaudio's DB_to_amplitude(x, 1, 1), but for
    # the values at the floor (1e-10, -100 dB), which cumel sets to 0. Measured 2.3e-6 relative.
    linear = torchaudio.functional.DB_to_amplitude(torch.from_numpy(real), 1.0, 1.0).numpy()
    mel = fe.mel(real)
    floor = mel == 0
    np.testing.assert_array_equal(floor, fe.floor_mask(real))
    assert (linear[floor] <= 1e-10 * (1 + 1e-5)).all()
    assert (np.abs(mel - linear)[~floor] / linear[~floor]).max() <= 1.2e-5


def test_round_trip_at_or_below_torchaudios_own():
    """Real features of the whole of speech_07 back to audio: cumel.mel_to_audio against what
    torchaudio offers (DB_to_amplitude, InverseMelScale with gelsd, as its default gels raises
    here, and GriffinLim at the same 32 iterations and momentum), seeds 0-2. Measured spectral
    convergence: cumel 0.110, torchaudio 0.128."""
    x = speech("speech_07", 60.0)
    n = len(x)
    features = real_db(x)
    inverse = torchaudio.transforms.InverseMelScale(201, driver="gelsd")
    griffinlim = torchaudio.transforms.GriffinLim(n_fft=400, hop_length=200, n_iter=32, momentum=0.99,
                                                  length=n, power=2.0)

    def sc(y):
        return cumel.spectral_convergence(np.asarray(y), x.numpy(), 400, 200)

    ours, theirs = [], []
    for seed in (0, 1, 2):
        ours.append(sc(cumel.mel_to_audio(features.numpy(), frontend="torchaudio", length=n, seed=seed)))
        torch.manual_seed(seed)
        with torch.no_grad():
            theirs.append(sc(griffinlim(inverse(torchaudio.functional.DB_to_amplitude(features, 1.0, 1.0)))))
    assert np.mean(ours) <= np.mean(theirs), (ours, theirs)


# -- the inverse: solver="lstsq" and nnls against torchaudio 2.x --------------------------------------

@pytest.mark.parametrize("n_stft, n_mels", [(513, 80), (201, 40)])
def test_lstsq_is_torchaudios_inverse_where_gels_answers(n_stft, n_mels):
    x = speech()
    mel = real_mel(x, n_fft=2 * (n_stft - 1), n_mels=n_mels)
    real = torchaudio.transforms.InverseMelScale(n_stft, n_mels)                  # driver "gels"
    expected = real(mel)
    ours = T.InverseMelScale(n_stft, n_mels, solver="lstsq")
    ours.load_state_dict(real.state_dict())
    # full rank: one least-squares answer; measured 3.0e-7 of the largest value
    assert (ours(mel) - expected).abs().max().item() <= 2e-6 * expected.abs().max().item()
    own = T.InverseMelScale(n_stft, n_mels, solver="lstsq")(mel)                   # cumel's fb
    assert (own - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()   # 1.4e-6


def test_lstsq_is_the_minimum_norm_answer_where_gels_raises():
    mel = real_mel(speech())                                                      # 201 x 128
    with pytest.raises(torch.linalg.LinAlgError):
        torchaudio.transforms.InverseMelScale(201)(mel)
    real = torchaudio.transforms.InverseMelScale(201, driver="gelsd")
    expected = real(mel)
    ours = T.InverseMelScale(201, solver="lstsq")
    own = ours(mel)
    ours.load_state_dict(real.state_dict())
    # of the largest value, measured: 2.7e-7 with torchaudio's filterbank, 2.4e-6 with cumel's
    scale = expected.abs().max().item()
    assert (ours(mel) - expected).abs().max().item() <= 1.5e-6 * scale
    assert (own - expected).abs().max().item() <= 1.2e-5 * scale


def test_nnls_fits_the_mel_at_least_as_well_as_torchaudio():
    """relu(lstsq) is a non-negative answer, and nnls minimises the mel residual over those: its
    residual cannot be larger (measured on speech_07: 2.8e-6 against torchaudio's 1.1e-2)."""
    mel = real_mel(speech())
    real = torchaudio.transforms.InverseMelScale(201, driver="gelsd")
    ours = T.InverseMelScale(201)
    ours.load_state_dict(real.state_dict())
    A = real.fb.double().T

    def residual(S):
        return ((A @ S.double() - mel.double()).norm() / mel.double().norm()).item()

    assert residual(ours(mel)) <= residual(real(mel))


# -- solver="torchaudio" against torchaudio 0.8's loop ------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_start_is_torch_manual_seed_and_rand(dtype):
    shape = (2, 7, 33)
    for seed in (0, 1, 1234):
        torch.manual_seed(seed)
        real = torch.rand(shape, dtype=getattr(torch, dtype)).numpy()
        ours = cumel.InverseMelScale(33, 10, solver="torchaudio", seed=seed).start(shape, dtype)
        np.testing.assert_array_equal(ours, real)


def sgd_mel(frames, dtype=torch.float32, clips=("speech_07",)):
    """(len(clips), 128, frames) real mel of the clips, scaled to a peak of 1 so that the default
    step (lr 0.1) is stable."""
    mel = torch.stack([real_mel(speech(name))[:, 10:10 + frames] for name in clips]).to(dtype)
    return mel / mel.max()


def reference_sgd(mel, fb, seed, **kw):
    torch.manual_seed(seed)
    with torch.enable_grad():
        return inverse_mel_scale_sgd(mel, fb.to(mel.dtype), **kw)


# of the largest value, 20 frames of speech_07, 150 iterations: measured 1.7e-7 at most in float32
SGD_CASES = [pytest.param("float32", None, 1e-6, id="float32"),
             pytest.param("float64", None, 1e-14, id="float64"),                       # 7e-17
             pytest.param("float32", {"lr": 0.05, "momentum": 0.5, "nesterov": True}, 1e-6, id="nesterov"),
             pytest.param("float32", {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.01},
                          1e-6, id="dampening-weight-decay"),
             pytest.param("float32", {"lr": 0.1}, 1e-6, id="no-momentum")]


@pytest.mark.parametrize("dtype, sgdargs, bound", SGD_CASES)
def test_sgd_solver_is_torchaudio_08s_loop(dtype, sgdargs, bound):
    mel = sgd_mel(20, getattr(torch, dtype))
    real_module = torchaudio.transforms.InverseMelScale(201)
    fb = real_module.fb
    kw = dict(max_iter=150, tolerance_loss=0.0, tolerance_change=0.0)      # every iteration runs
    expected, iterations = reference_sgd(mel, fb, seed=4, sgdargs=sgdargs, **kw)
    assert iterations == 150
    scale = expected.abs().max().item()
    inv = cumel.InverseMelScale(201, fb=fb.numpy(), solver="torchaudio", seed=4, sgdargs=sgdargs, **kw)
    S, info = inv(mel.numpy(), return_info=True)
    assert S.dtype == mel.numpy().dtype and (info.iterations == 150).all()
    assert np.abs(S - expected.numpy()).max() <= bound * scale
    # cumel.torch's drop-in holding the real module's buffer
    module = T.InverseMelScale(201, solver="torchaudio", seed=4, sgdargs=sgdargs, **kw).to(mel.dtype)
    module.load_state_dict(real_module.state_dict())
    assert (module(mel) - expected).abs().max().item() <= bound * scale
    # and with cumel's own filterbank (1.2e-5 from torchaudio's): measured 1.3e-5 at most
    own = cumel.InverseMelScale(201, solver="torchaudio", seed=4, sgdargs=sgdargs, **kw)(mel.numpy())
    assert np.abs(own - expected.numpy()).max() <= 1e-4 * scale


def test_sgd_solver_stops_where_torchaudio_08_stops():
    """Default tolerances on a batch of three clips (one loss for the batch). torch sums the loss
    in float32, cumel in float64: REFERENCE.md allows the stop to move by one iteration on a
    near-tie, and the answers then agree within 1e-4 of the largest value. Measured here: the
    same iteration (1023), answers 8.5e-9 of the largest value apart."""
    mel = sgd_mel(12, clips=CLIPS)
    fb = torchaudio.transforms.InverseMelScale(201).fb
    kw = dict(max_iter=100000, tolerance_loss=1e-5, tolerance_change=1e-8)
    expected, iterations = reference_sgd(mel, fb, seed=5, **kw)
    assert 1 < iterations < kw["max_iter"]
    S, info = cumel.InverseMelScale(201, fb=fb.numpy(), solver="torchaudio", seed=5, **kw)(
        mel.numpy(), return_info=True)
    assert len(np.unique(info.iterations)) == 1
    assert abs(int(info.iterations.flat[0]) - iterations) <= 1
    same = int(info.iterations.flat[0]) == iterations
    bound = 1e-6 if same else 1e-4
    assert np.abs(S - expected.numpy()).max() <= bound * expected.abs().max().item()
