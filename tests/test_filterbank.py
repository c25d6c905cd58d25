"""The filterbank: torchaudio's numbers, the sparse form, shared by every array module."""
import warnings

import numpy as np
import pytest

import cumel
from cumel.filterbank import SparseMel, hz_to_mel, mel_to_hz

from conftest import fixture_index, load_fixture


def _fbank_cases():
    return [pytest.param(i, id=f"fbank_{i:02d}") for i in range(10)]


@pytest.mark.parametrize("i", _fbank_cases())
def test_filterbank_matches_torchaudio_fixture(i):
    entry = fixture_index("fbank_index.json")[i]
    ref = load_fixture(entry["file"])["fb"]
    f_max = entry["f_max"] if entry["f_max"] is not None else float(entry["sample_rate"] // 2)
    fb = cumel.melscale_fbanks(entry["n_freqs"], entry["f_min"], f_max, entry["n_mels"],
                               entry["sample_rate"], entry["norm"], entry["mel_scale"])
    assert fb.shape == ref.shape and fb.dtype == np.float32
    # REFERENCE.md: torchaudio's own float32 rounding moves narrow filters by up to 3.1e-5 of the
    # largest weight; 5e-5 supersedes the core issue's 1e-6.
    scale = max(float(np.abs(ref).max()), 1e-30)
    assert np.abs(fb - ref).max() <= 5e-5 * scale
    # and structurally identical: the same non-zero pattern up to values at rounding level
    assert np.array_equal(fb > 1e-6 * scale, ref > 1e-6 * scale)


def test_filterbank_f_max_none_equivalent_via_transform():
    inv = cumel.InverseMelScale(n_stft=129, n_mels=40, sample_rate=8001, f_min=30.0, f_max=None)
    ref = load_fixture("fbank_08.npz")["fb"]
    assert np.abs(inv.fb - ref).max() <= 5e-5 * ref.max()


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_conversions_invert_each_other(scale):
    hz = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 8000.0, 22050.0])
    assert np.allclose(mel_to_hz(hz_to_mel(hz, scale), scale), hz, rtol=1e-12, atol=1e-9)
    if scale == "slaney":
        assert hz_to_mel(1000.0, scale) == pytest.approx(15.0)
        assert hz_to_mel(600.0, scale) == pytest.approx(9.0)


def test_empty_filter_warns_like_torchaudio():
    with pytest.warns(UserWarning, match="all zero values"):
        cumel.melscale_fbanks(201, 0.0, 8000.0, 128, 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cumel.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, "slaney", "slaney")


@pytest.mark.parametrize("args", [
    (201, 0.0, 8000.0, 128, 16000, None, "htk"),
    (513, 0.0, 8000.0, 80, 16000, "slaney", "slaney"),
    (1025, 0.0, 11025.0, 128, 22050, "slaney", "slaney"),
    (129, 30.0, 4000.0, 40, 8001, None, "htk"),
])
def test_sparse_products_equal_dense(args):
    fb = cumel.melscale_fbanks(*args, dtype=np.float64)
    sp = SparseMel(fb)
    A = fb.T
    rng = np.random.default_rng(0)
    # vectors along axis 0, one column per frame
    mu = rng.standard_normal((A.shape[0], 3))
    s = rng.standard_normal((A.shape[1], 3))
    d = (rng.random((A.shape[1], 3)) > 0.4).astype(np.float64)
    assert np.allclose(sp.rmatvec(mu, np), A.T @ mu, rtol=1e-12, atol=1e-12)
    assert np.allclose(sp.matvec(s, np), A @ s, rtol=1e-12, atol=1e-12)
    assert np.allclose(sp.matvec(s[:, 0], np), A @ s[:, 0], rtol=1e-12, atol=1e-12)  # 1-D too
    diag, upper = sp.tridiag(d, np)
    for col in range(3):
        J = (A * d[:, col]) @ A.T
        assert np.allclose(np.diag(J), diag[:, col], atol=1e-12)
        assert np.allclose(np.diag(J, 1), upper[:-1, col], atol=1e-12)
        # the structural claim behind the nnls solver: nothing beyond the first off-diagonal
        assert np.abs(np.triu(J, 2)).max() == 0.0
    assert upper[-1].tolist() == [0.0, 0.0, 0.0]
    # a boolean active set gives the same matrix
    for a, b in zip(sp.tridiag(d > 0, np), (diag, upper)):
        np.testing.assert_array_equal(a, b)
    # about 2 n_freqs non-zeros instead of n_mels * n_freqs
    assert np.count_nonzero(A) <= 2 * A.shape[1]


def test_sparse_rejects_non_mel_matrix():
    fb = np.ones((5, 3))
    with pytest.raises(ValueError, match="bin 0 lies in triangles"):
        SparseMel(fb)


def test_filterbank_array_module_parameter():
    # The same code serves NumPy and CuPy through ``xp``; with NumPy it returns NumPy.
    fb = cumel.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, "slaney", "slaney", xp=np,
                               dtype=np.float64)
    assert isinstance(fb, np.ndarray) and fb.dtype == np.float64


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_freqs=0), "n_stft"),
    (dict(n_mels=0), "n_mels"),
    (dict(f_min=9000.0), "f_min"),
    (dict(f_max=9000.0), "f_max"),
    (dict(norm="l2"), "norm"),
    (dict(mel_scale="bark"), "mel_scale"),
])
def test_filterbank_bad_arguments(kwargs, match):
    args = dict(n_freqs=201, f_min=0.0, f_max=8000.0, n_mels=80, sample_rate=16000)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cumel.melscale_fbanks(**args)
