"""Dask arrays on a distributed.LocalCluster (two worker processes): same answers as in memory,
the plan rebuilt on the workers, and a worker killed mid-compute."""
import os
import pickle

import numpy as np
import pytest

import cumel
from cumel.transforms import get_plan

da = pytest.importorskip("dask.array", reason="needs dask[array] (pip install 'cumel[dask]')")
distributed = pytest.importorskip("distributed", reason="needs distributed (pip install 'cumel[dask]')")

N_STFT, N_MELS = 65, 16


def _mel(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.fixture(scope="module")
def client():
    import dask
    with dask.config.set({"distributed.scheduler.allowed-failures": 10,
                          "distributed.worker.daemon": False}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", silence_logs=40) as cluster, \
                distributed.Client(cluster) as c:
            yield c


# -- without a cluster ---------------------------------------------------------------------------

def test_pickles_as_constructor_arguments_and_rebuilds_the_plan():
    inv = cumel.InverseMelScale(N_STFT, N_MELS, solver="mindspore", seed=1, max_iter=5)
    inv.plan.pinv(np.float32)                              # make the plan heavy
    inv(_mel((N_MELS, 4)))                                 # and cache a start
    blob = pickle.dumps(inv)
    assert len(blob) < 2000 and b"Plan" not in blob and b"_starts" not in blob
    inv2 = pickle.loads(blob)
    assert "plan" not in inv2.__dict__
    assert inv2.plan is get_plan(inv.key)                  # from this process's cache, lazily
    np.testing.assert_array_equal(inv2(_mel((N_MELS, 4))), inv(_mel((N_MELS, 4))))


@pytest.mark.parametrize("mel_chunk", [N_MELS, 8, 6, 5, 1])          # 1, 2, 3, 4 and 16 chunks
def test_the_mel_axis_in_any_number_of_chunks(mel_chunk):
    """The solve needs whole frames: however many chunks the mel axis is cut into, the frames are
    joined first and the answer is the in-memory one (local scheduler, no cluster)."""
    mel = _mel((2, N_MELS, 9), seed=4)
    inv = cumel.InverseMelScale(N_STFT, N_MELS)
    lazy = inv(da.from_array(mel, chunks=(1, mel_chunk, 5)))
    assert lazy.chunks[-2] == (N_STFT,)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), inv(mel))


def test_lazy_result_and_errors():
    mel = _mel((3, N_MELS, 20))
    out = cumel.InverseMelScale(N_STFT, N_MELS)(da.from_array(mel, chunks=(1, N_MELS, 10)))
    assert isinstance(out, da.Array) and out.shape == (3, N_STFT, 20) and out.dtype == np.float32
    assert out.chunks == ((1, 1, 1), (N_STFT,), (10, 10))
    with pytest.raises(ValueError, match="return_info"):
        cumel.InverseMelScale(N_STFT, N_MELS)(da.from_array(mel), return_info=True)
    with pytest.raises(ValueError, match="n_mels=16"):
        cumel.InverseMelScale(N_STFT, N_MELS)(da.from_array(_mel((3, 8, 20))))
    with pytest.raises(ValueError, match=r"torchaudio.*axis 0 \(batch: 3 chunks\)"):
        cumel.InverseMelScale(N_STFT, N_MELS, solver="torchaudio")(
            da.from_array(mel, chunks=(1, N_MELS, 20)))
    with pytest.raises(ValueError, match=r"mindspore.*axis 2 \(time: 2 chunks\)"):
        cumel.InverseMelScale(N_STFT, N_MELS, solver="mindspore")(
            da.from_array(mel, chunks=(1, N_MELS, 10)))


def test_functional_form_takes_dask():
    mel = _mel((N_MELS, 30), dtype=np.float64)
    out = cumel.inverse_mel_scale(da.from_array(mel, chunks=(N_MELS, 7)), n_stft=N_STFT)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.compute(scheduler="sync"),
                                  cumel.inverse_mel_scale(mel, n_stft=N_STFT))


@pytest.mark.parametrize("batch_chunk", [4, 2, 1])                  # 1, 2 and 4 batch blocks
def test_seeded_mindspore_batch_blocks_bit_equal(batch_chunk):
    # each block draws the whole batch's start and keeps its own channels (_with_batch_offset);
    # one block uses the transform's own start, two or more the offset copy
    mel = _mel((4, N_MELS, 9), seed=7)
    inv = cumel.InverseMelScale(N_STFT, N_MELS, solver="mindspore", seed=11, max_iter=15)
    x = da.from_array(mel, chunks=(batch_chunk, N_MELS, 9))
    assert x.numblocks[0] == 4 // batch_chunk
    np.testing.assert_array_equal(inv(x).compute(scheduler="sync"), inv(mel))


@pytest.mark.parametrize("chunks", [(2, 2), (3, 2), (1, 4)])
def test_seeded_mindspore_blocks_of_a_2d_batch_bit_equal(chunks):
    """A (3, 5) batch in blocks of several items along both batch axes: each block keeps the
    channels it holds, in C order, of the whole batch's start (in-memory bits)."""
    mel = _mel((3, 5, N_MELS, 6), seed=9)
    inv = cumel.InverseMelScale(N_STFT, N_MELS, solver="mindspore", seed=13, max_iter=10)
    x = da.from_array(mel, chunks=chunks + (N_MELS, 6))
    assert x.numblocks[:2] == tuple(-(-n // c) for n, c in zip((3, 5), chunks))
    np.testing.assert_array_equal(inv(x).compute(scheduler="sync"), inv(mel))


# -- on the cluster -------------------------------------------------------------------------------

CHUNKINGS = [(1, N_MELS, 40), (2, N_MELS, 7), (3, 5, 13)]     # batch, time, mel split (rechunked)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_nnls_bit_equal_on_cluster(client, chunks):
    mel = _mel((3, N_MELS, 40), seed=1)
    inv = cumel.InverseMelScale(N_STFT, N_MELS)
    out = inv(da.from_array(mel, chunks=chunks)).compute()
    np.testing.assert_array_equal(out, inv(mel))


def test_lstsq_equal_on_cluster(client):
    # one matrix product per block: equal up to BLAS blocking, which depends on the block's width
    mel = _mel((3, N_MELS, 40), seed=2)
    inv = cumel.InverseMelScale(N_STFT, N_MELS, solver="lstsq")
    ref = inv(mel)
    np.testing.assert_array_equal(inv(da.from_array(mel, chunks=(1, N_MELS, 40))).compute(), ref)
    out = inv(da.from_array(mel, chunks=(2, 5, 13))).compute()
    # two float32 dot products of n_mels terms differ by at most the sum of their error bounds,
    # 2 n_mels eps sum_k |pinv_jk m_k|, whatever order BLAS adds them in (measured: 1.1e-7 of max)
    bound = 2 * N_MELS * np.finfo(np.float32).eps * (np.abs(inv.plan.pinv(np.float32)) @ np.abs(mel))
    assert (np.abs(out - ref) <= bound).all()


@pytest.mark.parametrize("solver", ["torchaudio", "mindspore"])
def test_sgd_solvers_on_cluster(client, solver):
    mel = _mel((2, 2, N_MELS, 12), seed=3)
    inv = cumel.InverseMelScale(N_STFT, N_MELS, solver=solver, seed=5, max_iter=20)
    chunks = (2, 2, 5, 12) if solver == "torchaudio" else (1, 1, 5, 12)   # mindspore: per channel
    out = inv(da.from_array(mel, chunks=chunks)).compute()
    np.testing.assert_array_equal(out, inv(mel))


def test_workers_build_the_plan_once_from_its_key(client):
    def plan_cache():
        from cumel.transforms import get_plan as worker_get_plan
        return worker_get_plan.cache_info()._asdict()

    before = client.run(plan_cache)
    inv = cumel.InverseMelScale(67, N_MELS)                  # a filterbank no other test uses
    mel = _mel((1, N_MELS, 64), seed=6)
    out = inv(da.from_array(mel, chunks=(1, N_MELS, 8))).compute()   # 8 tasks
    np.testing.assert_array_equal(out, inv(mel))
    after = client.run(plan_cache)
    common = set(before) & set(after)
    built = sum(after[w]["misses"] - before[w]["misses"] for w in common)
    reused = sum(after[w]["hits"] - before[w]["hits"] for w in common)
    # looked up by key on the workers (the tasks carry no plan), built at most once per worker
    assert built + reused >= 1 and built <= len(common)


def test_killed_worker_is_retried(client, tmp_path):
    marker = str(tmp_path / "killed-once")
    mel = _mel((4, N_MELS, 24), seed=4)
    inv = cumel.InverseMelScale(N_STFT, N_MELS)

    def die_once(block, block_info=None):
        # the first attempt on block (2, 0, 0) kills its worker process; the retry goes through
        if block_info[0]["chunk-location"][0] == 2:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return block
            os._exit(1)
        return block

    x = da.from_array(mel, chunks=(1, N_MELS, 12)).map_blocks(die_once, dtype=mel.dtype)
    before = set(client.scheduler_info()["workers"])
    out = inv(x).compute()
    assert os.path.exists(marker)                      # the worker did die once
    assert set(client.scheduler_info()["workers"]) != before   # and the scheduler lost it
    np.testing.assert_array_equal(out, inv(mel))
