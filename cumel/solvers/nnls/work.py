"""Work arrays: one set a chunk being solved, taken from and given back to a pool, and kept
between calls."""
from __future__ import annotations

import collections
import queue

import numpy as np

from .tridiagonal import _CyclicReduction


class _WorkSets:
    """Sets of work arrays for chunks of up to ``capacity`` frames: a chunk takes a free one (or
    a new one: at most as many as chunks run at once) and gives it back.  ``compiled``: the
    compiled loop's sets (:class:`_CompiledWork`), else the NumPy loop's (:class:`_Work`)."""

    def __init__(self, plan, capacity, prior, compiled=False):
        self.key = (plan, capacity, prior, compiled)
        self.free = queue.SimpleQueue()

    def take(self):
        try:
            return self.free.get_nowait()
        except queue.Empty:
            plan, capacity, prior, compiled = self.key
            return (_CompiledWork if compiled else _Work)(plan, capacity, prior)

    def give_back(self, work):
        self.free.put(work)

    def trim(self, budget):
        """Free the sets beyond ``budget`` bytes (the rest stay for the next call); returns the
        bytes kept."""
        kept, held = [], 0
        while True:
            try:
                work = self.free.get_nowait()
            except queue.Empty:
                break
            if held + work.nbytes <= budget:
                kept.append(work)
                held += work.nbytes
        for work in kept:
            self.free.put(work)
        return held


# Work arrays kept between calls, for the last few plans: at most KEPT_BYTES in all, whatever the
# number of threads (a call with more threads allocates the sets it needs and frees the extra
# ones when it returns).
_KEPT = collections.OrderedDict()
KEPT_PLANS = 2
KEPT_BYTES = 48 << 20


def _work_sets(scratch, plan, capacity, prior, compiled=False):
    """The caller's kept :class:`_WorkSets` when it fits (same plan, prior and loop, enough
    capacity), else a new one, kept in ``scratch`` if given, else in this module for the next
    call on the same plan (at most ``KEPT_PLANS`` plans, ``KEPT_BYTES`` in all, see
    :func:`trim_kept`): a call on a clip after a call on a clip then finds its work arrays with
    their pages already mapped (on a virtual machine a page fault costs a few microseconds, and
    one chunk's arrays are thousands of pages)."""
    if scratch is None:
        key = (id(plan), prior, compiled)
        kept = _KEPT.get(key)
        if kept is None or kept.key[0] is not plan or kept.key[1] < capacity:
            kept = _KEPT[key] = _WorkSets(plan, capacity, prior, compiled)
        _KEPT.move_to_end(key)
        while len(_KEPT) > KEPT_PLANS:
            _KEPT.popitem(last=False)
        return kept
    kept = scratch.get("nnls")
    if kept is None or kept.key != (plan, max(capacity, kept.key[1]), prior, compiled):
        kept = scratch["nnls"] = _WorkSets(plan, capacity, prior, compiled)
    return kept


def trim_kept(scratch=None):
    """After a call: what this module keeps (or ``scratch``'s sets) cut to ``KEPT_BYTES``, the
    most recent plan's sets first."""
    if scratch is not None:
        if "nnls" in scratch:
            scratch["nnls"].trim(KEPT_BYTES)
        return
    budget = KEPT_BYTES
    for key in reversed(list(_KEPT)):
        budget -= _KEPT[key].trim(budget)


def kept_bytes():
    """Bytes of work arrays this module keeps between calls."""
    total = 0
    for sets in list(_KEPT.values()):
        total += sets.trim(float("inf"))
    return total


def bytes_per_frame(plan, prior, compiled=False):
    """Bytes a set of work arrays takes per frame of its capacity (what chunks are sized by)."""
    n_freqs, n_mels = plan.sparse.n_freqs, plan.n_mels
    if compiled:
        return 8 * (n_mels + n_freqs * (3 if prior else 1)) + 16
    floats = len(_Work._BIN_FLOAT) + (len(_Work._BIN_PRIOR) if prior else 0)
    # bins: float64 and bool arrays; mels: float64 arrays and the cyclic reduction's (7 of half
    # the rows each level, about the rows in all)
    return n_freqs * (8 * floats + len(_Work._BIN_BOOL)) + 8 * n_mels * (len(_Work._MEL) + 7)


class _CompiledWork:
    """One thread's arrays for the compiled loop: the chunk's frames gathered frame-major in
    float64 (``m``: (capacity, n_mels); with a prior ``c`` and ``v``: (capacity, n_freqs), bin
    order), its result ``s`` (capacity, n_freqs), step counts and KKT residuals.  The loop's own
    state is a few vectors of a frame, allocated per call."""

    def __init__(self, plan, capacity, prior=False):
        n_freqs, n_mels = plan.sparse.n_freqs, plan.n_mels
        self.capacity = capacity
        self.m = np.empty((capacity, n_mels))
        self.s = np.empty((capacity, n_freqs))
        shape = (capacity, n_freqs) if prior else (0, n_freqs)
        self.c, self.v = np.empty(shape), np.empty(shape)
        self.iterations = np.empty(capacity, dtype=np.int64)
        self.kkt = np.empty(capacity)
        self.nbytes = sum(a.nbytes for a in (self.m, self.s, self.c, self.v, self.iterations,
                                             self.kkt))


class _Work:
    """One thread's work arrays for chunks of up to ``capacity`` frames, allocated once.

    Every array a Newton step touches is a view of these (the frames still running are the
    first columns, contiguous): the loop allocates nothing the size of a chunk, which matters
    as much as the arithmetic (a fresh multi-megabyte temporary costs its page faults each time).
    Bin arrays are in the plan's run-major order.
    """

    _BIN_FLOAT = ("t", "s", "u", "x", "y", "s_out")
    _BIN_PRIOR = ("c", "v", "w", "w_cols")     # centre, spread, v u and its searched columns
    _BIN_BOOL = ("d", "d_prev", "d_one", "cross")
    _MEL = ("m", "mu", "F", "delta", "tmp", "diag", "upper", "sums", "sums_hi", "j_diag", "j_upper")

    def __init__(self, plan, capacity, prior=False):
        self.n_freqs, self.n_mels, self.capacity = plan.sparse.n_freqs, plan.n_mels, capacity
        size_bins, size_mels = self.n_freqs * capacity, self.n_mels * capacity
        names = self._BIN_FLOAT + (self._BIN_PRIOR if prior else ())
        self.flat = {name: np.empty(size_bins) for name in names}
        self.flat.update({name: np.empty(size_bins, dtype=bool) for name in self._BIN_BOOL})
        self.flat.update({name: np.empty(size_mels) for name in self._MEL})
        self.tridiag = _CyclicReduction(self.n_mels, capacity)
        reduced = {id(b): b.nbytes for level in self.tridiag.buffers for b in level}
        self.nbytes = sum(a.nbytes for a in self.flat.values()) + sum(reduced.values())
        self.views = {}               # (name, columns) -> view; see bin_view

    def bin_view(self, name, n):
        """The first ``n`` columns of bin array ``name``: (n_freqs, n), made once per ``n``."""
        view = self.views.get((name, n))
        if view is None:
            view = self.views[name, n] = self.flat[name][:self.n_freqs * n].reshape(self.n_freqs, n)
        return view

    def mel_view(self, name, n):
        """The first ``n`` columns of mel array ``name``: (n_mels, n), made once per ``n``."""
        view = self.views.get((name, n))
        if view is None:
            view = self.views[name, n] = self.flat[name][:self.n_mels * n].reshape(self.n_mels, n)
        return view

    def run_sums(self, plan, n):
        """:meth:`NnlsPlan.run_sums` of ``x`` into ``sums`` (``n`` columns), the same additions
        on slices made once per ``n``."""
        blocks = self.views.get(("run_sums", n))
        if blocks is None:
            x, out, off = self.bin_view("x", n), self.mel_view("sums", n), plan.offsets
            first = off[1] - off[0] if len(off) > 1 else 0
            blocks = self.views["run_sums", n] = (
                out[:first], x[:first], out[first:],
                [(out[:off[r + 1] - off[r]], x[off[r]:off[r + 1]]) for r in range(1, len(off) - 1)])
        out_first, x_first, out_rest, adds = blocks
        out_rest.fill(0.0)
        np.copyto(out_first, x_first)
        for total, part in adds:
            np.add(total, part, out=total)
        return self.mel_view("sums", n)

    def compact(self, names, n_old, keep):
        """Keep the columns ``keep`` of the work arrays ``names``: (rows, n_old) ->
        (rows, keep.size), through a scratch array of the same kind (``y``, ``cross`` or
        ``delta``, free whenever frames are dropped).  Returns the new views."""
        views = []
        for name in names:
            flat = self.flat[name]
            view = self.bin_view if flat.size == self.n_freqs * self.capacity else self.mel_view
            scratch = "delta" if view == self.mel_view else ("cross" if flat.dtype == bool else "y")
            kept = np.take(view(name, n_old), keep, axis=1, out=view(scratch, keep.size),
                           mode="clip")
            new = view(name, keep.size)
            np.copyto(new, kept)
            views.append(new)
        return views
