"""The SGD compatibility solvers on the device: torchaudio 0.8 and MindSpore (``kernels/sgd.cu``).

Their loss couples the batch (torchaudio: one loss over every frame; MindSpore: one per
channel), so they take the whole batch at once: :func:`check_fits` says up front, with a clear
:class:`~cumel.cuda.memory.DeviceMemoryError`, when it cannot fit. The starts are generated on
the host by the same code as the CPU path (``InverseMelScale.start``, ``cumel._random``), so a
seed gives the same start on both.

Launches. One launch runs a bounded number of iterations so that it stays well under a
desktop GPU's display watchdog (~2 s): the budget assumes a slow card (:data:`BANDWIDTH_FLOOR`
bytes/s of state traffic, :data:`LAUNCH_OVERHEAD` seconds of barrier and reduction per
iteration) and aims at :data:`LAUNCH_SECONDS`. A fast card then simply finishes a launch sooner.
The host synchronises only to poll the stop flag between launches.
"""
from __future__ import annotations

import numpy as np

from . import launch, memory
from .compile import _kernel, ctype
from .filterbank import device_plan

SOURCE = "sgd.cu"
LAUNCH_SECONDS = 0.1
BANDWIDTH_FLOOR = 5e10
LAUNCH_OVERHEAD = 1e-5
ITERATIONS_PER_LAUNCH = None   # tests force a budget here; None: computed from the work size


def iterations_per_launch(transform, n_frames, itemsize):
    """Iterations one SGD launch may run: aims at :data:`LAUNCH_SECONDS` on a slow card (state
    traffic of about 4 values per bin and iteration at :data:`BANDWIDTH_FLOOR`), so no launch
    nears a display watchdog whatever the batch; at least 1."""
    if ITERATIONS_PER_LAUNCH is not None:
        return max(1, int(ITERATIONS_PER_LAUNCH))
    seconds = LAUNCH_OVERHEAD + 4.0 * n_frames * transform.n_stft * itemsize / BANDWIDTH_FLOOR
    return max(1, int(LAUNCH_SECONDS / seconds))


def check_fits(transform, n_frames, dtype, host_input_bytes):
    """Raise :class:`~cumel.cuda.memory.DeviceMemoryError` up front when an SGD solve cannot fit
    the device."""
    item = np.dtype(dtype).itemsize
    per_state = n_frames * transform.n_stft * item
    # torchaudio: state, momentum buffer, output; MindSpore: start, iterate, next, output
    need = (3 if transform.solver == "torchaudio" else 4) * per_state + host_input_bytes
    allowed, available = memory.budget(transform)
    if need > allowed:
        cap = getattr(transform, "max_device_bytes", None)
        capped = f", max_device_bytes={cap}" if cap is not None else ""
        raise memory.DeviceMemoryError(
            f"solver={transform.solver!r} needs {need} bytes of device memory for this batch "
            f"({n_frames} frames x {transform.n_stft} bins, {np.dtype(dtype).name}), but "
            f"{available} bytes are free on {memory.device_name()}{capped} "
            f"(a call may use {allowed}). Its loss couples the whole batch, so it cannot be "
            "streamed in chunks: use device='cpu' or smaller batches")


def solve_retrying(transform, packed, out):
    """:func:`solve`, once more after freeing CuPy's cached blocks if the device runs out of
    memory anyway (the up-front check counts free memory, not fragmentation), then a clear
    :class:`~cumel.cuda.memory.DeviceMemoryError` instead of CuPy's raw one."""
    try:
        return solve(transform, packed, out)
    except memory.oom_type():
        memory.free_cached_blocks()
    try:
        return solve(transform, packed, out)
    except memory.oom_type() as exc:
        raise memory.DeviceMemoryError(
            f"solver={transform.solver!r} ran out of device memory on "
            f"{memory.device_name()} ({memory.memory_available()} bytes free) although the "
            f"batch seemed to fit: use device='cpu' or smaller batches") from exc


def solve(transform, packed, out):
    """Solve a (B, n_mels, T) device batch with ``transform.solver`` ("torchaudio" or
    "mindspore"); returns ``(S, iterations, None)`` as :func:`cumel.cuda.solve`."""
    if transform.solver == "torchaudio":
        return _torchaudio(transform, packed, out)
    return _mindspore(transform, packed, out)


def _torchaudio(transform, packed, out):
    import cupy
    plan = transform.plan
    B, n_mels, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    n_frames = B * T
    dev = device_plan(plan, dtype)
    warps, smem = launch.shared_layout(launch.sgd_shared_bytes(n_mels, dtype.itemsize, 1),
                                       f"solver={transform.solver!r} at n_mels={n_mels}")
    scalar = dtype.type
    max_iter = int(transform.max_iter)
    per_launch = iterations_per_launch(transform, n_frames, dtype.itemsize)
    sgd = transform.sgdargs
    state = transform.start((n_frames, n_freqs), dtype, cupy)       # torch's C order
    buf = cupy.zeros_like(state)
    # loop state in global memory, double-buffered by launch parity: a launch reads slot p
    # and writes slot 1 - p, so blocks of one launch never see each other's update
    iterations = cupy.zeros(2, np.int64)
    prev_loss = cupy.full(2, np.inf, np.float64)
    done = cupy.zeros(2, np.int32)
    cooperative = launch.cooperative_ok()
    kernel = _kernel(SOURCE, cooperative, f"torchaudio_sgd<{ctype(dtype)}>")
    launch.launch_opt_in(kernel, smem)
    resident = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
        kernel.kernel.ptr, 32 * warps, smem) * launch.sm_count()
    grid = launch.grid_for(n_frames, warps, resident)
    partials = cupy.zeros(2 * grid, np.float64)
    if not cooperative:
        # no grid barrier: one iteration a launch, its stop test at the start of the next
        # launch (one more launch at the end takes the last test)
        per_launch = 1
    n_launches = -(-max_iter // per_launch) if cooperative else max_iter + 1
    ms = launch.strides(packed)
    n = 0
    while n < n_launches:
        iter_end = min(max_iter, (n + 1) * per_launch)
        kernel((grid,), (32 * warps,),
               (packed, np.int64(n_frames), np.int32(T), *ms, state, buf, partials,
                iterations, prev_loss, done, np.int32(n & 1),
                np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo"], dev["w_hi"],
                dev["row_start"], scalar(sgd["lr"]), scalar(sgd["momentum"]),
                scalar(sgd["dampening"]), scalar(sgd["weight_decay"]),
                np.int32(sgd["nesterov"]), scalar(-2.0 / n_frames), np.int64(iter_end),
                np.int64(max_iter), np.float64(transform.tolerance_loss),
                np.float64(transform.tolerance_change), np.int32(cooperative)),
               shared_mem=smem)
        n += 1
        # the launch wrote its state to slot n & 1 (now the newest)
        if n < n_launches and _poll_due(n, cooperative) and int(done[n & 1].get()):
            break
    S = memory.output(out, (B, n_freqs, T), dtype)
    S[...] = state.reshape(B, T, n_freqs).transpose(0, 2, 1)
    return S, cupy.broadcast_to(iterations[n & 1:(n & 1) + 1], (B, T)), None


def _mindspore(transform, packed, out):
    # one block per channel, per-channel loop state in global memory
    import cupy
    plan = transform.plan
    B, n_mels, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    n_frames = B * T
    dev = device_plan(plan, dtype)
    warps, smem = launch.shared_layout(launch.sgd_shared_bytes(n_mels, dtype.itemsize, 1),
                                       f"solver={transform.solver!r} at n_mels={n_mels}")
    scalar = dtype.type
    max_iter = int(transform.max_iter)
    x0 = transform.start((B, n_freqs, T), dtype, cupy)                  # MindSpore's C order
    x = cupy.ascontiguousarray(x0.transpose(0, 2, 1))
    del x0
    x_next = cupy.empty_like(x)
    S = memory.output(out, (B, n_freqs, T), dtype)
    iterations = cupy.zeros(B, np.int64)
    prev = cupy.full(B, np.finfo(dtype).max, np.float64)
    flags = cupy.zeros(B, np.int32)
    kernel = _kernel(SOURCE, False, f"mindspore_gd<{ctype(dtype)}>")
    launch.launch_opt_in(kernel, smem)
    per_launch = iterations_per_launch(transform, n_frames, dtype.itemsize)
    n_launches = -(-max_iter // per_launch)
    ms = launch.strides(packed)
    for n in range(n_launches):
        iter_end = min(max_iter, (n + 1) * per_launch)
        kernel((B,), (32 * warps,),
               (packed, np.int32(T), *ms, x, x_next, S, *launch.strides(S), iterations, prev,
                flags, np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo"], dev["w_hi"],
                dev["row_start"], scalar(transform.sgdargs["lr"] / T), np.int64(iter_end),
                np.int64(max_iter), np.float64(transform.tolerance_loss),
                np.float64(transform.tolerance_change)),
               shared_mem=smem)
        if n + 1 < n_launches and bool(((flags & 1) != 0).all()):   # every channel done
            break
    return S, cupy.repeat(iterations[:, None], T, axis=1), None


def _poll_due(launch_count, long_launches):
    """Whether to read the stop flag (a host synchronisation) after this launch: after every
    launch when launches are long, every 64 when each is one iteration."""
    return long_launches or launch_count % 64 == 0
