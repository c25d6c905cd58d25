"""Start points of the SGD solvers, bit-exact with torch's and MindSpore's CPU streams.

Both anchors draw from MT19937 seeded with the standard ``init_genrand``; NumPy's legacy
``RandomState(seed)`` is the same generator, so the raw 32-bit words are reproduced here on the
host (also for the GPU path: the init is generated on the host and copied once).

torch (``torch.manual_seed(seed); torch.rand(shape)`` on the CPU, filled in C order)
    float32: one word ``r`` per value, ``(r & 0xFFFFFF) / 2**24``.
    float64: two words ``r1, r2`` per value, ``(((r1 << 32) | r2) & (2**53 - 1)) / 2**53``.
MindSpore (``std::mt19937(seed)`` + ``std::uniform_real_distribution``, libstdc++)
    float32: one word per value, ``float32(r) / 2**32``, a result of 1.0 replaced by the largest
    float below 1.
    float64: two words, ``(r1 + r2 * 2**32) / 2**64`` (same rule at 1.0).
"""
from __future__ import annotations

import numpy as np


def mt19937_words(seed, n):
    """The first ``n`` 32-bit outputs of MT19937 seeded by ``init_genrand(seed)`` (uint64)."""
    return np.random.RandomState(seed).randint(0, 2 ** 32, size=n, dtype=np.uint64)


def torch_rand(seed, shape, dtype):
    """``torch.manual_seed(seed); torch.rand(shape, dtype=dtype)`` on the CPU, as NumPy."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype == np.float64:
        w = mt19937_words(seed, 2 * n)
        x = ((w[0::2] << np.uint64(32)) | w[1::2]) & np.uint64((1 << 53) - 1)
        return (x.astype(np.float64) * 2.0 ** -53).reshape(shape)
    w = mt19937_words(seed, n)
    return ((w & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2.0 ** -24)).reshape(shape)


def mindspore_uniform(seed, shape, dtype):
    """Values of MindSpore's InverseMelScale init for ``prod(shape)`` draws in C order."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype == np.float64:
        w = mt19937_words(seed, 2 * n).astype(np.float64)
        v = (w[0::2] + w[1::2] * 2.0 ** 32) * 2.0 ** -64
        v[v >= 1.0] = np.nextafter(1.0, 0.0)
        return v.reshape(shape)
    v = mt19937_words(seed, n).astype(np.float32) * np.float32(2.0 ** -32)
    v[v >= 1.0] = np.nextafter(np.float32(1.0), np.float32(0.0))
    return v.reshape(shape)
