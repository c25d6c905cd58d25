"""Self-tests of the CUDA emulator (tests/cudasim): small purpose-written kernels, most of them
WRONG on purpose, compiled by the same machinery as cumel's kernels. Each strictness rule of the
emulator is shown to fire (the launch raises) or to expose the bug (results differ by order).
"""
import numpy as np
import pytest

import cudasim
from cudasim import fakecupy

pytestmark = pytest.mark.emulated

HEADER = "#include <cooperative_groups.h>\nnamespace cg = cooperative_groups;\n"


def _kernel(cp, body, name="k", cooperative=False):
    module = cp.RawModule(code=HEADER + body, options=("-std=c++17",), name_expressions=[name],
                          enable_cooperative_groups=cooperative)
    return module.get_function(name)


def _run(cp, kernel, grid, block, args, shared_mem=0):
    kernel(grid, block, args, shared_mem=shared_mem)


# ---- warp intrinsics ----------------------------------------------------------------------------

WARP_OPS = r"""
extern "C" __global__ void k(int* out) {
    const int lane = threadIdx.x & 31;
    out[0 * 32 + lane] = __shfl_sync(0xffffffffu, lane * 10, 3);
    out[1 * 32 + lane] = __shfl_xor_sync(0xffffffffu, lane, 1);
    out[2 * 32 + lane] = __shfl_down_sync(0xffffffffu, lane, 4);
    out[3 * 32 + lane] = __shfl_up_sync(0xffffffffu, lane, 4);
    out[4 * 32 + lane] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    out[5 * 32 + lane] = __any_sync(0xffffffffu, lane == 7);
    out[6 * 32 + lane] = __all_sync(0xffffffffu, lane < 31);
    out[7 * 32 + lane] = (int)__shfl_xor_sync(0xffffffffu, (double)lane + 0.5, 16);
}
"""


@pytest.mark.parametrize("order", ["forward", "reverse", "random:3"])
def test_warp_intrinsics_compute_what_cuda_documents(emulated_cupy, order):
    cp = emulated_cupy
    out = cp.zeros(8 * 32, np.int32)
    with cudasim.order(order):
        _run(cp, _kernel(cp, WARP_OPS), (1,), (32,), (out,))
    got = out.get().reshape(8, 32)
    lane = np.arange(32)
    np.testing.assert_array_equal(got[0], 30)
    np.testing.assert_array_equal(got[1], lane ^ 1)
    np.testing.assert_array_equal(got[2], np.where(lane + 4 < 32, lane + 4, lane))
    np.testing.assert_array_equal(got[3], np.where(lane >= 4, lane - 4, lane))
    ballot = sum(1 << int(i) for i in lane if i % 3 == 0)
    np.testing.assert_array_equal(got[4], np.int64(ballot).astype(np.uint32).view(np.int32))
    np.testing.assert_array_equal(got[5], 1)
    np.testing.assert_array_equal(got[6], 0)
    np.testing.assert_array_equal(got[7], lane ^ 16)


def test_warp_op_with_different_masks_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) {
    const int lane = threadIdx.x & 31;
    out[lane] = __shfl_xor_sync(lane < 16 ? 0xffffffffu : 0xfffffffeu | 1u << 0 ^ 1u, lane, 1);
}""")
    with pytest.raises(fakecupy.LaunchError, match=r"warp barrier mismatch.*mask"):
        _run(cp, k, (1,), (32,), (cp.zeros(32, np.int32),))


def test_warp_op_at_different_call_sites_raises_naming_lines(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) {
    const int lane = threadIdx.x & 31;
    if (lane < 16) {
        __syncwarp();
    } else {
        __syncwarp();
    }
    out[lane] = lane;
}""")
    for order, first, second in (("forward", 9, 7), ("reverse", 7, 9)):
        with cudasim.order(order), pytest.raises(
                fakecupy.LaunchError,
                match=rf"k: warp barrier mismatch.*kernel.cu:{first} .*kernel.cu:{second}"):
            _run(cp, k, (1,), (32,), (cp.zeros(32, np.int32),))


def test_lane_exiting_while_the_warp_waits_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) {
    const int lane = threadIdx.x & 31;
    if (lane == 5) return;
    out[lane] = __shfl_xor_sync(0xffffffffu, lane, 1);
}""")
    for order in ("forward", "reverse"):
        with cudasim.order(order), pytest.raises(fakecupy.LaunchError, match="exited"):
            _run(cp, k, (1,), (32,), (cp.zeros(32, np.int32),))


def test_deadlock_raises_instead_of_hanging(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) {
    if ((threadIdx.x & 31) == 0) __syncthreads();
    else __syncwarp();
    out[threadIdx.x] = 1;
}""")
    with pytest.raises(fakecupy.LaunchError, match="deadlock"):
        _run(cp, k, (1,), (32,), (cp.zeros(32, np.int32),))


def test_partial_warp_mask_naming_missing_lanes_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) { out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0); }""")
    with pytest.raises(fakecupy.LaunchError, match="exited .or do not exist"):
        _run(cp, k, (1,), (48,), (cp.zeros(48, np.int32),))


def test_missing_syncwarp_changes_bits_between_orders(emulated_cupy):
    cp = emulated_cupy
    racy = r"""
extern "C" __global__ void k(float* out) {
    extern __shared__ float buf[];
    const int lane = threadIdx.x & 31;
    if (lane == 0) buf[0] = 42.0f;
    %s
    out[threadIdx.x] = buf[0];
}"""
    results = {}
    for sync in ("", "__syncwarp();"):
        k = _kernel(cp, racy % sync)
        for order in ("forward", "reverse"):
            out = cp.zeros(32, np.float32)
            with cudasim.order(order):
                _run(cp, k, (1,), (32,), (out,), shared_mem=4)
            results[sync, order] = out.get()
    np.testing.assert_array_equal(results["", "forward"], 42.0)       # lane 0 happened to go first
    assert np.isnan(results["", "reverse"][1:]).all()                 # poisoned shared memory read
    np.testing.assert_array_equal(results["__syncwarp();", "forward"], 42.0)
    np.testing.assert_array_equal(results["__syncwarp();", "reverse"], 42.0)


# ---- __syncthreads ---------------------------------------------------------------------------------

def test_syncthreads_at_different_call_sites_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) {
    if (threadIdx.x < 32) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}""")
    with pytest.raises(fakecupy.LaunchError, match=r"__syncthreads mismatch"):
        _run(cp, k, (1,), (64,), (cp.zeros(64, np.int32),))


def test_syncthreads_counts_only_live_threads_and_orders_the_block(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int* out) {
    __shared__ int value;
    if (threadIdx.x >= 96) return;               // a whole warp leaves early: allowed
    if (threadIdx.x == 95) value = 7;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}""")
    for order in ("forward", "reverse", "random:5"):
        out = cp.full(2 * 128, -1, np.int32)
        with cudasim.order(order):
            _run(cp, k, (2,), (128,), (out,))
        got = out.get().reshape(2, 128)
        np.testing.assert_array_equal(got[:, :96], 7)
        np.testing.assert_array_equal(got[:, 96:], -1)


# ---- shared memory -----------------------------------------------------------------------------------

def test_shared_memory_is_poisoned_with_nan(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(double* out) {
    extern __shared__ double dyn[];
    __shared__ float stat[4];
    out[threadIdx.x] = dyn[threadIdx.x];
    out[32 + threadIdx.x] = stat[threadIdx.x & 3];
}""")
    out = cp.zeros(64, np.float64)
    _run(cp, k, (1,), (32,), (out,), shared_mem=32 * 8)
    assert np.isnan(out.get()).all()


def test_write_past_dynamic_shared_memory_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, r"""
extern "C" __global__ void k(int n) {
    extern __shared__ float buf[];
    if (threadIdx.x == 0) buf[n] = 1.0f;
}""")
    _run(cp, k, (1,), (32,), (np.int32(15),), shared_mem=64)
    with pytest.raises(fakecupy.LaunchError, match="past the end of dynamic shared memory"):
        _run(cp, k, (1,), (32,), (np.int32(16),), shared_mem=64)


def test_dynamic_shared_memory_limits_and_opt_in(emulated_cupy):
    cp = emulated_cupy
    src = r"""
extern "C" __global__ void k(float* out) {
    extern __shared__ float buf[];
    __shared__ double stat[512];
    buf[threadIdx.x] = 1.0f; stat[threadIdx.x] = 1.0;
    out[threadIdx.x] = buf[threadIdx.x] + (float)stat[threadIdx.x];
}"""
    k = _kernel(cp, src)
    out = cp.zeros(32, np.float32)
    _run(cp, k, (1,), (32,), (out,), shared_mem=40000)
    with pytest.raises(fakecupy.CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        _run(cp, k, (1,), (32,), (out,), shared_mem=49153)
    with pytest.raises(fakecupy.LaunchError, match="CUDA_ERROR_INVALID_VALUE: static"):
        _run(cp, k, (1,), (32,), (out,), shared_mem=49152 - 4096 + 1)   # 4 KB static + dynamic
    with pytest.raises(fakecupy.CUDADriverError, match="MaxSharedMemoryPerBlockOptin"):
        k.max_dynamic_shared_size_bytes = 232448 + 1
    k.max_dynamic_shared_size_bytes = 100000
    _run(cp, k, (1,), (32,), (out,), shared_mem=100000)
    np.testing.assert_array_equal(out.get(), 2.0)
    with pytest.raises(fakecupy.CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        _run(cp, k, (1,), (32,), (out,), shared_mem=100001)


# ---- cooperative launches ----------------------------------------------------------------------------

GRID_SUM = r"""
extern "C" __global__ void k(double* partial, double* total, int skip_block) {
    cg::grid_group grid = cg::this_grid();
    for (int it = 0; it < 3; ++it) {
        if (threadIdx.x == 0) partial[blockIdx.x] = blockIdx.x + it;
        if (!(it == 1 && (int)blockIdx.x == skip_block)) grid.sync();
        if (threadIdx.x == 0) {
            double s = 0.0;
            for (unsigned b = 0; b < gridDim.x; ++b) s += partial[b];
            total[it * gridDim.x + blockIdx.x] = s;
        }
        grid.sync();
    }
}"""


def test_grid_sync_is_a_barrier_across_all_blocks(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, GRID_SUM, cooperative=True)
    for order in ("forward", "reverse", "random:7"):
        partial, total = cp.zeros(8, np.float64), cp.zeros(3 * 8, np.float64)
        with cudasim.order(order):
            _run(cp, k, (8,), (64,), (partial, total, np.int32(-1)))
        expected = np.repeat([28.0 + 8 * it for it in range(3)], 8)
        np.testing.assert_array_equal(total.get(), expected)


def test_skipping_grid_sync_in_one_block_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, GRID_SUM, cooperative=True)
    with pytest.raises(fakecupy.LaunchError, match="grid.sync"):
        _run(cp, k, (8,), (64,), (cp.zeros(8, np.float64), cp.zeros(24, np.float64), np.int32(3)))


def test_cooperative_grid_larger_than_resident_blocks_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, GRID_SUM, cooperative=True)
    resident = cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(k.kernel.ptr, 1024, 0)
    assert resident == 1                       # 64 registers x 1024 threads fill an SM
    limit = resident * cp.cuda.Device().attributes["MultiProcessorCount"]
    args = (cp.zeros(64, np.float64), cp.zeros(3 * 64, np.float64), np.int32(-1))
    _run(cp, k, (limit,), (1024,), args)
    with pytest.raises(fakecupy.CUDADriverError, match="COOPERATIVE_LAUNCH_TOO_LARGE"):
        _run(cp, k, (limit + 1,), (1024,), args)


def test_grid_sync_outside_a_cooperative_launch_raises(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, GRID_SUM, cooperative=False)
    with pytest.raises(fakecupy.LaunchError, match="not cooperative"):
        _run(cp, k, (2,), (32,), (cp.zeros(2, np.float64), cp.zeros(6, np.float64), np.int32(-1)))


# ---- arguments and launch configuration ---------------------------------------------------------------

ARGS = r"""
template <typename T>
__global__ void k(const T* x, long long n, int m, double scale, T* out) {
    for (long long i = threadIdx.x; i < n; i += blockDim.x) out[i] = x[i] * (T)scale + (T)m;
}"""


def test_kernel_signature_comes_from_the_cpp_types(emulated_cupy):
    k = _kernel(emulated_cupy, ARGS, name="k<float>")
    assert k.signature == ["const float*", "long long", "int", "double", "float*"]
    module = emulated_cupy.RawModule(code=ARGS, name_expressions=["k<float>"])
    assert module.get_function("k<double>").signature[0] == "const double*"
    with pytest.raises(fakecupy.CUDADriverError, match="CUDA_ERROR_NOT_FOUND"):
        module.get_function("missing")


def test_arguments_are_checked_against_the_cpp_types(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, ARGS, name="k<float>")
    x, out = cp.arange(10, dtype=np.float32), cp.zeros(10, np.float32)
    good = [x, np.int64(10), np.int32(1), np.float64(2.0), out]
    k((1,), (32,), tuple(good))
    np.testing.assert_array_equal(out.get(), np.arange(10) * 2 + 1)
    bad = {1: (np.int32(10), r"argument 1 is long long \(numpy.int64\) but got numpy.int32"),
           2: (1, r"argument 2 is int \(numpy.int32\) but got int"),
           3: (2.0, r"argument 3 is double \(numpy.float64\) but got float"),
           0: (cp.arange(10, dtype=np.float64), r"argument 0 is const float\* but got an array of float64"),
           4: (np.zeros(10, np.float32), r"argument 4 is float\* but got ndarray")}
    for i, (value, message) in bad.items():
        args = list(good)
        args[i] = value
        with pytest.raises(TypeError, match=message):
            k((1,), (32,), tuple(args))
    with pytest.raises(TypeError, match="4 arguments given, the kernel takes 5"):
        k((1,), (32,), tuple(good[:4]))


def test_block_and_grid_dimensions_are_checked(emulated_cupy):
    cp = emulated_cupy
    k = _kernel(cp, ARGS, name="k<float>")
    args = (cp.zeros(4, np.float32), np.int64(4), np.int32(0), np.float64(1), cp.zeros(4, np.float32))
    with pytest.raises(fakecupy.CUDADriverError, match="more than 1024"):
        k((1,), (1056,), args)
    with pytest.raises(fakecupy.CUDADriverError, match=">= 1"):
        k((0,), (32,), args)


def test_arrays_of_another_device_are_an_illegal_address(emulated_cupy):
    cp = emulated_cupy
    cp.cudasim.device_count = 2
    k = _kernel(cp, ARGS, name="k<float>")
    with cp.cuda.Device(1):
        x1 = cp.zeros(4, np.float32)
        assert x1.device.id == 1
    args = (x1, np.int64(4), np.int32(0), np.float64(1), cp.zeros(4, np.float32))
    with pytest.raises(fakecupy.CUDADriverError, match="ILLEGAL_ADDRESS"):
        k((1,), (32,), args)


def test_a_failed_launch_leaves_the_emulator_usable(emulated_cupy):
    cp = emulated_cupy
    bad = _kernel(cp, GRID_SUM, cooperative=True)
    for _ in range(3):
        with pytest.raises(fakecupy.LaunchError):
            _run(cp, bad, (4,), (32,), (cp.zeros(4, np.float64), cp.zeros(12, np.float64), np.int32(0)))
    test_warp_intrinsics_compute_what_cuda_documents(cp, "forward")


# ---- the fake cupy module ----------------------------------------------------------------------------

def test_fake_arrays_refuse_implicit_host_conversion_and_mixing(emulated_cupy):
    cp = emulated_cupy
    a = cp.arange(6, dtype=np.float32).reshape(2, 3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="NumPy array mixed"):
        a + np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="NumPy array mixed"):
        cp.maximum(a, np.zeros(3))
    assert isinstance(np.sqrt(a), cp.ndarray) and isinstance(a * 2, cp.ndarray)
    assert isinstance(np.concatenate([a, a]), cp.ndarray)
    assert isinstance(a.sum(), cp.ndarray) and float(a.sum()) == 15.0
    view = a.T[::-1]
    view[0, 0] = 100
    assert a.get()[0, 2] == 100                                    # views share memory
    assert view.strides == (-4, 12) and not view.flags.c_contiguous
    assert view.data.ptr == a.data.ptr + 8
    assert cp.get_array_module(a) is cp and cp.get_array_module(a.get()) is np


def test_memory_figures_and_out_of_memory_injection(emulated_cupy):
    cp = emulated_cupy
    cp.cudasim.mem_total = 1000
    cp.cudasim.mem_free = 100
    assert cp.cuda.runtime.memGetInfo() == (100, 1000)

    def hook(nbytes, device):
        if nbytes > 64:
            raise cp.cuda.memory.OutOfMemoryError(f"out of memory allocating {nbytes} bytes")

    cp.cudasim.alloc_hook = hook
    cp.zeros(16, np.float32)
    with pytest.raises(cp.cuda.memory.OutOfMemoryError):
        cp.zeros(17, np.float32)
    with pytest.raises(cp.cuda.memory.OutOfMemoryError):
        cp.asarray(np.zeros(100))
    cp.cudasim.alloc_hook = None
    pool = cp.get_default_memory_pool()
    before = pool.used_bytes()
    a = cp.zeros(1000, np.float64)
    b = a.astype(np.float64, copy=False)                       # same buffer: counted once
    assert b.data.ptr == a.data.ptr and pool.used_bytes() == before + 8000
    del a, b
    assert pool.used_bytes() == before
    buf = np.frombuffer(cp.cuda.alloc_pinned_memory(64), np.float32, 16)
    assert buf.shape == (16,)


def test_device_description_and_events_are_as_strict_as_cuda(emulated_cupy):
    cp = emulated_cupy
    rt = cp.cuda.runtime
    props = rt.getDeviceProperties(0)
    # CuPy 14 under CUDA 13: cudaDeviceProp no longer has the clocks; the attributes do
    assert "clockRate" not in props and "memoryClockRate" not in props
    attributes = cp.cuda.Device().attributes
    assert props["multiProcessorCount"] == attributes["MultiProcessorCount"] \
        == rt.deviceGetAttribute(rt.cudaDevAttrMultiProcessorCount, 0)
    assert rt.deviceGetAttribute(rt.cudaDevAttrClockRate, 0) == attributes["ClockRate"] > 0
    assert rt.deviceGetAttribute(rt.cudaDevAttrMemoryClockRate, 0) == attributes["MemoryClockRate"]
    assert props["memoryBusWidth"] == attributes["GlobalMemoryBusWidth"] > 0
    assert (props["major"], props["minor"]) == (9, 0) and isinstance(props["name"], bytes)
    with pytest.raises(fakecupy.CUDARuntimeError, match="invalid device ordinal"):
        rt.getDeviceProperties(1)
    with pytest.raises(fakecupy.CUDARuntimeError, match="cudaErrorInvalidValue"):
        rt.deviceGetAttribute(12345, 0)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    with pytest.raises(fakecupy.CUDARuntimeError, match="invalid resource handle"):
        cp.cuda.get_elapsed_time(start, end)                 # never recorded
    start.record()
    end.record()
    end.synchronize()
    assert cp.cuda.get_elapsed_time(start, end) >= 0.0
    untimed = cp.cuda.Event(disable_timing=True)
    untimed.record()
    with pytest.raises(fakecupy.CUDARuntimeError, match="invalid resource handle"):
        cp.cuda.get_elapsed_time(start, untimed)
    with pytest.raises(fakecupy.CUDARuntimeError, match="interprocess"):
        cp.cuda.Event(interprocess=True)
