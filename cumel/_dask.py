"""Dask arrays in, lazy Dask arrays out: :func:`invert`, reached through ``InverseMelScale.__call__``.

Dask is optional (``pip install 'cumel[dask]'``) and imported only when a Dask array arrives.
Each block is solved by the transform itself, so NumPy-backed blocks take the CPU path and
CuPy-backed blocks the GPU path. The transform travels to the workers as its constructor
arguments (``InverseMelScale.__getstate__`` drops the plan); each worker process rebuilds the
per-filterbank plan from its small key once, through :func:`cumel.transforms.get_plan`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["invert", "is_dask_array"]


def is_dask_array(x):
    """True for a ``dask.array.Array``; never imports dask."""
    return type(x).__module__.startswith("dask.") and hasattr(x, "map_blocks") and hasattr(x, "chunks")


def _one_thread_per_task(transform):
    """The transform a task runs: Dask already runs one task per core, so a block solves in its
    task's thread unless ``workers`` was given, and draws no progress bar."""
    if transform.workers is not None and not transform.progress:
        return transform
    import copy
    transform = copy.copy(transform)
    transform.workers = 1 if transform.workers is None else transform.workers
    transform.progress = False
    return transform


def _solve_block(block, transform, lead_shape=None, block_info=None):
    if lead_shape is not None and block_info is not None:
        transform = _with_batch_offset(transform, lead_shape, block_info[0]["array-location"])
    return transform(block)


def _with_batch_offset(transform, lead_shape, location):
    """A copy of a seeded "mindspore" transform whose start point is this block's part of the
    start the whole batch would get, so batch chunks give the same bits as the in-memory call.

    The MT19937 stream has no cheap skip-ahead: the block draws the stream up to its last
    channel (at most the whole batch's start, n_channels x n_stft x T values) and keeps its own.
    """
    import copy
    from . import _random
    ranges = [range(lo, hi) for lo, hi in location[:len(lead_shape)]]
    flat = np.ravel_multi_index(np.meshgrid(*ranges, indexing="ij"), lead_shape).ravel()
    original = transform

    def start(shape, dtype, xp=np):
        _, n_freqs, T = shape
        prefix = _random.mindspore_uniform(original.seed, (int(flat.max()) + 1, n_freqs, T), dtype)
        return xp.asarray(prefix[flat])

    transform = copy.copy(original)
    transform.start = start
    return transform


def _split_axes(mel, axes, what):
    """Names of the axes in ``axes`` that ``mel`` splits into more than one chunk."""
    return [f"axis {a} ({what(a)}: {len(mel.chunks[a])} chunks)" for a in axes
            if len(mel.chunks[a]) > 1]


def invert(transform, mel, return_info=False):
    """Invert a Dask array of mel spectrograms lazily, block by block.

    Parameters
    ----------
    transform : cumel.InverseMelScale
    mel : dask.array.Array, shape (..., n_mels, time)
        NumPy- or CuPy-backed chunks. The mel axis must be one chunk: where it is split, it is
        rechunked to a single chunk first (an extra step in the graph, no error). Batch and time
        axes may be chunked freely for ``solver="nnls"`` and ``"lstsq"`` (they solve each frame
        on its own: every chunking gives the same bits as the in-memory call). ``"torchaudio"``
        (one loss over the whole batch) needs every batch and time axis in a single chunk;
        ``"mindspore"`` (each channel on its own) accepts batch chunks but needs the time axis in
        a single chunk. Otherwise a ValueError says which axis to rechunk.
    return_info : bool
        Not supported with Dask input (the diagnostics would need the computed result): raises
        ValueError. Call ``.compute()`` first, or ask for ``transform(block, return_info=True)``
        inside your own ``map_blocks``.

    Returns
    -------
    dask.array.Array, shape (..., n_stft, time)
        Lazy; float64 for float64 input, float32 otherwise; same chunks on the batch and time
        axes. For ``"mindspore"`` a 2-D input gives (1, n_stft, time), as in memory.
    """
    if return_info:
        raise ValueError("return_info=True is not supported for a dask.array input (the "
                         "diagnostics need the computed result): call .compute() first, or "
                         "call the transform with return_info=True inside your own map_blocks")
    if mel.ndim < 2:
        raise ValueError(f"mel must have at least 2 dims (..., n_mels, time), got shape {tuple(mel.shape)}")
    if mel.dtype.kind not in "fiu" or mel.dtype == np.bool_:
        raise TypeError(f"mel must hold real numbers, got dtype {mel.dtype}")
    if mel.shape[-2] != transform.n_mels:
        raise ValueError(f"mel.shape[-2] must equal n_mels={transform.n_mels}, got mel of shape "
                         f"{tuple(mel.shape)}")
    ndim = mel.ndim
    if len(mel.chunks[-2]) > 1:
        mel = mel.rechunk({ndim - 2: -1})           # the solve needs whole frames
    if transform.solver == "mindspore" and ndim == 2:
        mel = mel[None]                              # MindSpore's (1, n_stft, T) for 2-D input
        ndim = 3

    def name(a):
        return "time" if a == ndim - 1 else "batch"

    if transform.solver == "torchaudio":
        split = _split_axes(mel, [*range(ndim - 2), ndim - 1], name)
        if split:
            raise ValueError("solver='torchaudio' minimises one loss over the whole batch, so the "
                             "dask array must be a single chunk on the batch and time axes; got "
                             f"{', '.join(split)}: rechunk with mel.rechunk(-1) (or compute it)")
    elif transform.solver == "mindspore":
        split = _split_axes(mel, [ndim - 1], name)
        if split:
            raise ValueError("solver='mindspore' solves each channel over all its frames, so the "
                             "time axis of the dask array must be a single chunk; got "
                             f"{', '.join(split)}: rechunk with mel.rechunk({{-1: -1}})")
    out_dtype = np.dtype(np.float64) if mel.dtype == np.float64 else np.dtype(np.float32)
    chunks = mel.chunks[:-2] + ((transform.n_stft,), mel.chunks[-1])
    meta = mel._meta.astype(out_dtype) if getattr(mel, "_meta", None) is not None else None
    from dask.base import tokenize
    nonce = np.random.SeedSequence().entropy if transform.seed is None else None  # fresh draws
    token = tokenize(nonce, mel, transform.solver, transform.key, transform.max_iter,
                     transform.tolerance_loss, transform.tolerance_change,
                     sorted(transform.sgdargs.items()), transform.seed, transform.device)
    lead_shape = None
    if transform.solver == "mindspore" and transform.seed is not None and \
            int(np.prod(mel.numblocks[:-2])) > 1:
        lead_shape = tuple(int(n) for n in mel.shape[:-2])   # start drawn for the whole batch
    transform = _one_thread_per_task(transform)
    return mel.map_blocks(_solve_block, transform, lead_shape, dtype=out_dtype, chunks=chunks,
                          meta=meta, name=f"cumel-inverse-mel-{token}")
