"""Worker threads of the CPU path (``workers=``) and progress reports (``progress=``).

The frames are independent and every chunk is solved by the same arithmetic, so the result's
bits may depend neither on the number of threads nor on how the batch is cut into chunks.
"""
import io
import os
import threading
import time

import numpy as np
import pytest

import cumel
from cumel import _threads
from cumel.solvers import nnls

try:
    from cumel.solvers.nnls import compiled  # noqa: F401  (nnls.compiled below; needs numba)
except ImportError:
    pass

from conftest import audio_pair


@pytest.fixture(scope="module")
def music_batch():
    # 89 frames an item (a prime): no count of workers or chunk size divides it, so a dropped
    # remainder shows
    _, M = audio_pair("music-1025x128", "music_00")
    return np.stack([M[:, :89], M[:, 89:178], M[:, 170:259]]).astype(np.float32)


MUSIC = dict(n_stft=1025, n_mels=128, sample_rate=22050, norm="slaney", mel_type="slaney")


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_bits_do_not_depend_on_workers_or_chunks(music_batch, workers, monkeypatch, cpu_loop):
    reference, info = cumel.InverseMelScale(**MUSIC, workers=1)(music_batch, return_info=True)
    for chunk_elements in (nnls.CHUNK_ELEMENTS, 41 * 1025, 1025):   # several chunks, one frame
        monkeypatch.setattr(nnls.chunks, "CHUNK_ELEMENTS", chunk_elements)
        monkeypatch.setattr(nnls.chunks, "THREAD_CHUNK_ELEMENTS", chunk_elements)
        monkeypatch.setattr(nnls.chunks, "MIN_CHUNK_ELEMENTS", min(chunk_elements, nnls.MIN_CHUNK_ELEMENTS))
        monkeypatch.setattr(nnls.chunks, "COMPILED_CHUNK_ELEMENTS", chunk_elements)
        S, other = cumel.InverseMelScale(**MUSIC, workers=workers)(music_batch, return_info=True)
        np.testing.assert_array_equal(S, reference)
        np.testing.assert_array_equal(other.iterations, info.iterations)
    assert info.converged.all()
    # a frame alone gives the bits it has in the batch
    alone = cumel.InverseMelScale(**MUSIC, workers=workers)(music_batch[1, :, 17:18])
    np.testing.assert_array_equal(alone, reference[1, :, 17:18])


def _first_two_workers_meet(seen):
    """A function that adds the calling thread to ``seen``; the first two threads in (the calling
    thread solves chunks too) wait there for each other, once, so one thread cannot take all the
    chunks however they are scheduled (without the wait a loaded machine sometimes let it: a test
    about timing). A thread alone gives up after 30 s, and ``seen`` then shows it alone."""
    both = threading.Barrier(2, timeout=30)
    lock = threading.Lock()
    meeting = [True]

    def meet():
        me = threading.get_ident()
        with lock:
            wait = meeting[0] and me not in seen
            seen.add(me)
            if len(seen) >= 2:
                meeting[0] = False
        if wait:
            try:
                both.wait()
            except threading.BrokenBarrierError:
                pass
    return meet


def test_several_threads_really_run(music_batch, monkeypatch, cpu_loop):
    seen = set()
    # each loop's function that solves one chunk's frames
    module, name = (nnls.chunks, "_solve_frames") if cpu_loop == "numpy" else (nnls.compiled, "solve_frames")
    solve_frames = getattr(module, name)
    meet = _first_two_workers_meet(seen)

    def record(*args, **kwargs):
        meet()
        return solve_frames(*args, **kwargs)

    monkeypatch.setattr(module, name, record)
    monkeypatch.setattr(nnls.chunks, "MIN_CHUNK_ELEMENTS", 1025)
    cumel.InverseMelScale(**MUSIC, workers=3)(music_batch)
    assert len(seen) >= 2
    seen.clear()
    cumel.InverseMelScale(**MUSIC, workers=1)(music_batch)
    assert seen == {threading.get_ident()}


def test_chunks_cover_the_batch_once():
    for n_frames in (1, 5, 63, 64, 1000, 24000, 100003):
        for n_freqs in (201, 1025, 4097):
            for workers in (1, 2, 5, 64):
                chunks = nnls.chunk_bounds(n_frames, n_freqs, workers)
                starts, stops = zip(*chunks)
                assert starts[0] == 0 and stops[-1] == n_frames
                assert list(starts[1:]) == list(stops[:-1])
                cap = nnls.CHUNK_ELEMENTS if workers == 1 else nnls.THREAD_CHUNK_ELEMENTS
                assert max(b - a for a, b in chunks) * n_freqs <= max(cap, n_freqs)
                if workers > 1 and n_frames * n_freqs >= 4 * workers * nnls.THREAD_CHUNK_ELEMENTS:
                    assert len(chunks) >= 4 * workers     # every thread gets several
                if workers > 1 and len(chunks) > workers:
                    assert len(chunks) % workers == 0     # no thread left alone with the last
                if n_frames <= max(1, nnls.MIN_CHUNK_ELEMENTS // n_freqs):
                    assert len(chunks) == 1               # too small to share: the calling thread


class ChunkFailed(Exception):
    pass


@pytest.mark.parametrize("workers", [1, 2, 3, 16])
def test_one_failing_chunk_among_several_raises_its_exception(workers):
    """map_chunks and Runner re-raise a chunk's exception whichever chunk it is (first, middle,
    last) and however many threads run them (7 chunks: a prime, none left over unseen)."""
    for bad in (0, 3, 6):
        done = set()

        def work(chunk):
            if chunk == bad:
                raise ChunkFailed(f"chunk {chunk}")
            done.add(chunk)

        with pytest.raises(ChunkFailed, match=f"chunk {bad}$"):
            _threads.map_chunks(work, range(7), workers)
        assert set(range(bad)) <= done <= set(range(7)) - {bad}

        def span(a, b):
            if a <= bad < b:
                raise ChunkFailed(f"items {a}:{b}")
            done.update(range(a, b))

        done.clear()
        with _threads.Runner(workers) as run, pytest.raises(ChunkFailed, match="items"):
            run(span, 7)
        assert bad not in done


def test_of_two_failing_chunks_the_first_in_order_is_raised():
    """Two chunks fail, the later one first in time (chunk 2 waits until chunk 5 has failed):
    map_chunks re-raises chunk 2's exception, the first in the chunks' order, whichever thread
    failed first; both failures happen (the waiting chunk was already running)."""
    five_failed = threading.Event()
    raised = []

    def work(chunk):
        if chunk == 2:
            five_failed.wait(timeout=30)
            raised.append(2)
            raise ChunkFailed("chunk 2")
        if chunk == 5:
            raised.append(5)
            five_failed.set()
            raise ChunkFailed("chunk 5")

    with pytest.raises(ChunkFailed, match="chunk 2$"):
        _threads.map_chunks(work, range(7), 2)
    assert sorted(raised) == [2, 5]


@pytest.mark.parametrize("workers", [2, 3])
def test_no_chunk_starts_after_a_failure(workers):
    """Once a chunk has failed, the threads take no more chunks: of 60 chunks, the first fails
    and the others start only after it has (they wait for it, then pause 50 ms, ample for the
    failure to be recorded), so only those already running finish, at most one a thread."""
    failing = threading.Event()
    started = []

    def work(chunk):
        if chunk == 0:
            failing.set()
            raise ChunkFailed("chunk 0")
        failing.wait(timeout=30)
        time.sleep(0.05)
        started.append(chunk)

    with pytest.raises(ChunkFailed, match="chunk 0$"):
        _threads.map_chunks(work, range(60), workers)
    assert len(started) <= workers


def test_a_chunks_failure_reaches_the_caller_of_the_solver(music_batch, monkeypatch, cpu_loop):
    if cpu_loop == "numpy":
        owner, name = nnls.chunks, "_solve_frames"
    else:
        owner, name = nnls.chunks.compiled_module(), "solve_frames"
    solve_frames = getattr(owner, name)
    calls = []

    def fail_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("third chunk")
        return solve_frames(*args, **kwargs)

    monkeypatch.setattr(owner, name, fail_third)
    for constant in ("CHUNK_ELEMENTS", "THREAD_CHUNK_ELEMENTS", "COMPILED_CHUNK_ELEMENTS"):
        monkeypatch.setattr(nnls.chunks, constant, 17 * 1025)
    monkeypatch.setattr(nnls.chunks, "MIN_CHUNK_ELEMENTS", 1025)
    for workers in (1, 3):
        calls.clear()
        with pytest.raises(MemoryError, match="third chunk"):
            cumel.InverseMelScale(**MUSIC, workers=workers)(music_batch)
        assert len(calls) >= 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", 2.0])
def test_bad_workers_raise_naming_the_parameter(bad):
    with pytest.raises(ValueError, match=r"workers must be None .* got " + repr(bad).replace(".", r"\.")):
        cumel.InverseMelScale(201, 128, workers=bad)
    with pytest.raises(ValueError, match="workers"):
        cumel.inverse_mel_scale(np.ones((128, 3), np.float32), 201, workers=bad)


def test_none_means_every_usable_core(monkeypatch):
    assert _threads.resolve_workers(None) == _threads.usable_cpus() >= 1
    assert _threads.resolve_workers(3) == 3
    # every core this process may run on: its affinity mask where the OS has one, else the count
    if hasattr(os, "sched_getaffinity"):
        assert _threads.usable_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
        assert _threads.usable_cpus() == 3
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4})
        assert _threads.usable_cpus() == 1

        def refused(pid):
            raise OSError("not permitted")
        monkeypatch.setattr(os, "sched_getaffinity", refused)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    assert _threads.usable_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert _threads.usable_cpus() == 1


def test_progress_callable_counts_every_frame(music_batch):
    counts = []
    lock = threading.Lock()

    def tell(n):
        with lock:
            counts.append(n)

    cumel.InverseMelScale(**MUSIC, workers=2, progress=tell)(music_batch)
    assert sum(counts) == music_batch.shape[0] * music_batch.shape[2]


def test_progress_bar_on_stderr(music_batch, monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    stream = io.StringIO()
    original = tqdm.tqdm

    def to_stream(*args, **kwargs):
        return original(*args, file=stream, **kwargs)

    monkeypatch.setattr("tqdm.auto.tqdm", to_stream)
    cumel.InverseMelScale(**MUSIC, progress=True)(music_batch)
    assert "frame" in stream.getvalue()
    stream.truncate(0)
    cumel.InverseMelScale(**MUSIC, progress="auto")(music_batch[:, :, :5])   # well under 2 s
    assert stream.getvalue() == ""


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_bad_progress_raises(bad):
    with pytest.raises(ValueError, match="progress must be True, False, 'auto' or a callable"):
        cumel.InverseMelScale(201, 128, progress=bad)


def test_dask_blocks_use_one_thread_unless_asked(monkeypatch):
    da = pytest.importorskip("dask.array")
    import dask
    seen = []
    solve_into = nnls.solve_into

    def record(*args, workers=1, **kwargs):
        seen.append(workers)
        return solve_into(*args, workers=workers, **kwargs)

    monkeypatch.setattr(nnls, "solve_into", record)
    _, M = audio_pair("speech-201x128", "speech_00")
    mel = da.from_array(M[:, :400].astype(np.float32), chunks=(128, 100))
    expected = cumel.InverseMelScale(201, 128, workers=1)(M[:, :400].astype(np.float32))
    seen.clear()
    with dask.config.set(scheduler="threads"):
        S = cumel.InverseMelScale(201, 128)(mel).compute()
    np.testing.assert_array_equal(S, expected)
    assert seen == [1, 1, 1, 1]
    seen.clear()
    with dask.config.set(scheduler="threads"):
        cumel.InverseMelScale(201, 128, workers=2)(mel).compute()
    assert seen == [2, 2, 2, 2]


# -- Griffin-Lim and mel_to_audio ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_griffinlim_bits_do_not_depend_on_workers(dtype):
    S, _ = audio_pair("speech-201x128", "speech_00")
    # odd, prime frame counts (701; 2 x 353): the threads' shares never divide them evenly, so a
    # dropped remainder shows
    S = S[:, :701].astype(dtype)
    batch = np.stack([S[:, :353], S[:, 348:]])
    for kwargs in ({}, {"center": False, "pad": 120}):
        one = cumel.GriffinLim(400, n_iter=6, hop_length=160, seed=3, workers=1, **kwargs)
        for workers in (2, 3, 5):
            many = cumel.GriffinLim(400, n_iter=6, hop_length=160, seed=3, workers=workers,
                                    **kwargs)
            np.testing.assert_array_equal(many(S), one(S))
            np.testing.assert_array_equal(many(batch), one(batch))


def test_griffinlim_shares_its_frames_between_threads(monkeypatch):
    S, _ = audio_pair("speech-201x128", "speech_00")
    seen = set()
    rfft = np.fft.rfft
    meet = _first_two_workers_meet(seen)

    def record(*args, **kwargs):
        meet()
        return rfft(*args, **kwargs)

    monkeypatch.setattr(np.fft, "rfft", record)
    cumel.GriffinLim(400, n_iter=2, hop_length=160, seed=0, workers=2)(S)
    assert len(seen) == 2


def test_mel_to_audio_and_front_ends_take_workers():
    _, M = audio_pair("speech-201x128", "speech_01")
    M = M[:, :300]
    one = cumel.mel_to_audio(M, 400, hop_length=160, seed=1, n_iter=4, workers=1)
    np.testing.assert_array_equal(
        cumel.mel_to_audio(M, 400, hop_length=160, seed=1, n_iter=4, workers=2), one)
    fe = cumel.frontend("whisper")
    features = fe.features(np.random.default_rng(0).standard_normal(16000).astype(np.float32))
    np.testing.assert_array_equal(fe.audio(features, length=16000, seed=0, n_iter=3, workers=2),
                                  fe.audio(features, length=16000, seed=0, n_iter=3, workers=1))


def test_griffinlim_progress_counts_iterations():
    S, _ = audio_pair("speech-201x128", "speech_01")
    counts = []
    cumel.GriffinLim(400, n_iter=5, hop_length=160, seed=0, progress=counts.append)(S[:, :100])
    assert sum(counts) == 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, "all"])
def test_griffinlim_and_mel_to_audio_reject_bad_workers(bad):
    with pytest.raises(ValueError, match="workers must be None"):
        cumel.GriffinLim(400, workers=bad)
    with pytest.raises(ValueError, match="workers must be None"):
        cumel.mel_to_audio(np.ones((128, 20), np.float32), 400, workers=bad)
