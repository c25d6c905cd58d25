"""The three reference semantics (torchaudio 0.8 SGD, MindSpore, torchaudio 2.x lstsq) against the
golden outputs the real systems produced (tests/data/fixtures)."""
import numpy as np
import pytest

import cumel

from conftest import audio_pair, fixture_index, load_fixture, mel_residual

SEED_INPUT = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=np.float32)


def test_seed_document_example_torchaudio():
    out = cumel.InverseMelScale(n_stft=2, n_mels=4, solver="torchaudio", seed=1)(SEED_INPUT)
    assert out.shape == (2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[0.7576316, 0.40306926],
                                                 [0.27931088, 0.73468447]], dtype=np.float32))


def test_seed_document_example_mindspore():
    out = cumel.InverseMelScale(n_stft=2, n_mels=4, solver="mindspore", seed=3)(SEED_INPUT)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[[0.5507979, 0.07072488],
                                                  [0.7081478, 0.8399491]]], dtype=np.float32))


# fixture prefix -> (index file, the solver that reproduces it)
FIXTURE_SOLVERS = {"ms_": ("mindspore_index.json", "mindspore"),
                   "ta08_": ("torchaudio_index.json", "torchaudio"),
                   "ta2_": ("torchaudio_index.json", "lstsq")}


def _cases():
    cases = []
    for prefix, (index, solver) in FIXTURE_SOLVERS.items():
        cases += [pytest.param(e, index, solver, id=e["file"])
                  for e in fixture_index(index) if e["file"].startswith(prefix)]
    return cases


@pytest.mark.parametrize("entry, index, solver", _cases())
def test_fixture_reproduced(entry, index, solver):
    """Every golden output of tests/data/fixtures, within 1e-4 of the output's maximum."""
    data = load_fixture(entry["file"])
    kwargs = dict(entry["kwargs"])
    if "mel_scale" in kwargs:
        kwargs["mel_type"] = kwargs.pop("mel_scale")
    mel = data["melspec"]
    before = mel.copy()
    out = cumel.InverseMelScale(**kwargs, solver=solver, seed=entry.get("seed"))(mel)
    np.testing.assert_array_equal(mel, before)          # the caller's array is untouched
    ref = data["output"]
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_torchaudio_iterations_and_global_loss():
    # ta08_sgdargs_maxiter ran exactly max_iter=20 iterations; the count is global to the batch
    entry = next(e for e in fixture_index("torchaudio_index.json") if e["file"] == "ta08_sgdargs_maxiter.npz")
    data = load_fixture(entry["file"])
    _, info = cumel.InverseMelScale(**entry["kwargs"], solver="torchaudio", seed=entry["seed"])(
        data["melspec"], return_info=True)
    assert info.iterations.shape == data["melspec"].shape[:1] + data["melspec"].shape[2:]
    assert (info.iterations == 20).all()


def test_torchaudio_global_loss_couples_the_batch():
    # One loss over the batch: a clip's result depends on its batch-mates (torchaudio quirk).
    data = load_fixture("ta08_batch4d_default.npz")
    mel = data["melspec"].reshape(6, 10, 7)
    inv = cumel.InverseMelScale(n_stft=33, n_mels=10, solver="torchaudio", seed=5, max_iter=50)
    alone = cumel.InverseMelScale(n_stft=33, n_mels=10, solver="torchaudio", seed=5, max_iter=50)(mel[:1])
    assert not np.allclose(inv(mel)[:1], alone)


def test_mindspore_channels_are_independent():
    # Per-channel loss: channel c of a batch equals channel c solved with the same init draws.
    data = load_fixture("ms_batch4d_default.npz")
    mel = data["melspec"].reshape(6, 10, 7)
    out, info = cumel.InverseMelScale(n_stft=33, n_mels=10, solver="mindspore", seed=5)(mel, return_info=True)
    assert info.iterations.shape == (6, 7)
    assert len(set(info.iterations[:, 0].tolist())) > 1       # channels stop on their own
    first = cumel.InverseMelScale(n_stft=33, n_mels=10, solver="mindspore", seed=5)(mel[:1])
    np.testing.assert_array_equal(out[:1], first)


def test_mindspore_momentum_has_no_effect():
    data = load_fixture("ms_sgdargs_maxiter.npz")
    a = cumel.InverseMelScale(n_stft=17, n_mels=6, max_iter=20, solver="mindspore", seed=1,
                              sgdargs={"sgd_lr": 0.05, "sgd_momentum": 0.5})(data["melspec"])
    b = cumel.InverseMelScale(n_stft=17, n_mels=6, max_iter=20, solver="mindspore", seed=1,
                              sgdargs={"sgd_lr": 0.05, "sgd_momentum": 0.0})(data["melspec"])
    np.testing.assert_array_equal(a, b)


def test_lstsq_runs_where_gels_raises_speech_201x128():
    # speech-201x128 on speech_00: torchaudio's default gels raises (rank deficient).
    S_true, M = audio_pair("speech-201x128", "speech_00")
    inv = cumel.InverseMelScale(n_stft=201, n_mels=128, solver="lstsq")
    assert np.linalg.matrix_rank(inv.fb.astype(np.float64)) < 128
    S = inv(M)
    assert S.shape == (201, M.shape[1]) and (S >= 0).all()
    res = mel_residual(inv.fb, S, M)
    assert 1e-4 < res < 5e-3         # REFERENCE.md: lstsq + relu sits near 2e-3 here


def _torch_sgd_restated(mel, fb, s0, n_iter, lr, momentum=0.0, dampening=0.0, nesterov=False,
                        weight_decay=0.0):
    """torchaudio 0.8's loop with torch.optim.SGD's update written out from torch's own
    definition (float64, no stopping rule): g = dL/dS (+ weight_decay S); buf = g on the first
    step, then momentum buf + (1 - dampening) g; step = g + momentum buf (nesterov) or buf;
    S = max(S - lr step, 0)."""
    M = mel.transpose(0, 2, 1).astype(np.float64)                    # (B, T, n_mels)
    S, fb = s0.astype(np.float64), fb.astype(np.float64)
    B, T = M.shape[:2]
    buf = None
    for _ in range(n_iter):
        g = -2.0 / (B * T) * (M - S @ fb) @ fb.T
        g = g + weight_decay * S
        if momentum:
            buf = g if buf is None else momentum * buf + (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        S = np.maximum(S - lr * g, 0.0)
    return S.transpose(0, 2, 1)


@pytest.mark.parametrize("extra", [{}, {"nesterov": True}, {"weight_decay": 0.1}, {"dampening": 0.5},
                                   {"momentum": 0.0}])
def test_torchaudio_sgd_options_follow_torchs_update(extra):
    data = load_fixture("ta08_sgdargs_maxiter.npz")
    mel = data["melspec"].astype(np.float64)                          # (2, 6, 5)
    sgd = {"lr": 0.05, "momentum": 0.5, **extra}
    inv = cumel.InverseMelScale(n_stft=17, n_mels=6, solver="torchaudio", seed=1, max_iter=13,
                                tolerance_loss=0.0, tolerance_change=0.0, sgdargs=sgd)
    S, info = inv(mel, return_info=True)
    assert (info.iterations == 13).all()
    ref = _torch_sgd_restated(mel, inv.plan.fb(np.float64), inv.start((2, 5, 17), np.float64), 13, **sgd)
    np.testing.assert_allclose(S, ref, rtol=1e-12, atol=1e-14)


def test_row_sum_bits_do_not_depend_on_the_batch_or_the_layout():
    """Each row is summed on its own, in one fixed order: its bits are the same alone, in a
    batch of any size, and in C or Fortran order (``x.sum(-1)`` changes its order with the
    layout). Rows with magnitudes over 25 decades, where the order shows in the last bits."""
    import math

    from cumel.solvers._rows import row_sum
    rng = np.random.default_rng(0)
    for n in (7, 9, 17, 31, 257):
        x = rng.standard_normal((5, n)) * 10.0 ** rng.integers(-8, 17, (5, n))
        ref = row_sum(x)
        np.testing.assert_array_equal(row_sum(np.asfortranarray(x)), ref)
        np.testing.assert_array_equal(row_sum(np.concatenate([x] * 40))[:5], ref)
        for r in range(5):
            np.testing.assert_array_equal(row_sum(x[r:r + 1]), ref[r:r + 1])
            # and it is the sum: within n ulps of the exact one, scaled by the row's magnitude
            assert abs(ref[r] - math.fsum(x[r])) <= n * 2.3e-16 * np.abs(x[r]).sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstsq_drops_singular_values_below_eps_times_the_larger_dimension(dtype):
    """The pseudo-inverse keeps the singular values above eps(dtype) * max(n_mels, n_freqs) *
    sigma_max (NumPy's and torch's default cut-off, gelsd's answer) and drops those below: a
    (40, 8) filterbank with one singular value at 0.5x the cut-off and one at 2x (both above
    eps * min(n_mels, n_freqs), so the smaller dimension would keep both)."""
    from cumel.solvers import lstsq
    rng = np.random.default_rng(3)
    n_freqs, n_mels = 40, 8
    eps = np.finfo(dtype).eps
    cut = eps * max(n_freqs, n_mels)
    assert 0.5 * cut > eps * min(n_freqs, n_mels)
    sigma = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 2 * cut, 0.5 * cut])
    U, _ = np.linalg.qr(rng.standard_normal((n_freqs, n_mels)))
    V, _ = np.linalg.qr(rng.standard_normal((n_mels, n_mels)))
    fb = (U * sigma) @ V.T                                  # fb.T = A = V diag(sigma) U.T
    fb = fb.astype(dtype).astype(np.float64)               # exactly what pseudo_inverse reads
    P = lstsq.pseudo_inverse(fb, dtype).astype(np.float64)
    Ua, s, Vta = np.linalg.svd(fb.T, full_matrices=False)
    kept = s > cut * s[0]
    assert kept.sum() == n_mels - 1                         # the 0.5x one is the one dropped
    want = (Vta[kept].T / s[kept]) @ Ua[:, kept].T
    np.testing.assert_allclose(P, want, rtol=0, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver, sgdargs", [("torchaudio", {"lr": 1e-30, "momentum": 0.9}),
                                             ("mindspore", {"sgd_lr": 1e-30})])
def test_stop_tests_are_strict_where_the_loss_repeats(solver, sgdargs, dtype):
    # A step of 1e-30 leaves the iterate's bits unchanged, so the loss repeats exactly: a change
    # of 0 is not < tolerance_change=0, and a loss is not < tolerance_loss equal to it, so the
    # loop runs to max_iter (both stop tests are strict, as in torch's and MindSpore's loops).
    rng = np.random.default_rng(7)
    mel = rng.random((2, 12, 5)).astype(dtype)
    kw = dict(n_stft=33, n_mels=12, solver=solver, seed=1, max_iter=6, sgdargs=sgdargs)
    _, info = cumel.InverseMelScale(**kw, tolerance_loss=0.0, tolerance_change=0.0)(
        mel, return_info=True)
    assert (info.iterations == 6).all(), info.iterations
    # the same run with tolerance_change just above 0 stops at the second iteration, the first
    # whose change is measured (loss_{-1} is inf)
    _, info = cumel.InverseMelScale(**kw, tolerance_loss=0.0, tolerance_change=1e-300)(
        mel, return_info=True)
    assert (info.iterations == 2).all(), info.iterations
