// cumel kernels: shared pieces.
//
// The sparse mel operator (cumel.filterbank.SparseMel), for A = fb.T of shape (n_mels, n_freqs):
//   bin j lies in triangles lo[j] and lo[j] + 1 with weights w_lo[j], w_hi[j];
//   the bins with lo[j] == k are row_start[k] <= j < row_start[k + 1] (lo never decreases).
// so that
//   (A.T v)[j] = w_lo[j] v[lo[j]] + w_hi[j] v[lo[j] + 1]       (v padded with v[n_mels] = 0)
//   (A x)[k]   = sum_{lo[j] == k} w_lo[j] x[j] + sum_{lo[j] == k - 1} w_hi[j] x[j]
//
// Work split used by every kernel: ONE WARP PER FRAME. Lanes stride over bins for A.T products
// and over mels for A products (a lane walks the contiguous bin runs of its mel). A warp needs no
// __syncthreads, only __syncwarp and shuffles, and the per-frame vectors live in the warp's slice
// of shared memory. Reductions run in a fixed order (lane-strided partial sums, then a butterfly),
// so a frame's arithmetic does not depend on which warp, block or batch it lands in.
//
// Cost models. Every kernel header states its cost on fixed lines, read by the benchmark
// (bench/bound.py) to hold the kernel against a device's bandwidth and FLOP rate:
//   // cost <kernel>: frame_bytes = <expr>; frame_flops = <expr>; step_bytes = <expr>; ...
// frame_* once per frame, step_* once per frame and iteration; bytes of DRAM traffic (what stays
// in L1/L2, like the filterbank, is not counted), floating-point operations; math = fp64, fp32 or
// item (the instantiation's type). Expressions use n_mels, n_freqs, n_fft, hop, item (bytes of a
// value of the kernel's type), + - * / ** and log2().
#pragma once

#define CUMEL_FULL_MASK 0xffffffffu

namespace cumel {

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(CUMEL_FULL_MASK, v, offset);
    }
    return v;  // every lane holds the same total
}

__device__ __forceinline__ double warp_max(double v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmax(v, __shfl_xor_sync(CUMEL_FULL_MASK, v, offset));
    }
    return v;  // every lane holds the same maximum
}

__device__ __forceinline__ double warp_min(double v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmin(v, __shfl_xor_sync(CUMEL_FULL_MASK, v, offset));
    }
    return v;  // every lane holds the same minimum
}

// max(x, 0) with NumPy's NaN semantics (np.maximum(x, 0) returns NaN for NaN). fmax would
// return 0 for NaN (it compiles to max.f64), so a diverged frame would come back as zeros on the
// GPU where the NumPy path raises.
template <typename V>
__device__ __forceinline__ V relu(V x) {
    return x < V(0) ? V(0) : x;
}

// (A.T v)[j] for one bin; v has n_mels + 1 entries with v[n_mels] == 0.
template <typename W, typename V>
__device__ __forceinline__ V rmatvec_bin(const int* __restrict__ lo, const W* __restrict__ w_lo,
                                         const W* __restrict__ w_hi, const V* v, int j) {
    const int k = lo[j];
    return static_cast<V>(w_lo[j]) * v[k] + static_cast<V>(w_hi[j]) * v[k + 1];
}

// Strided element of a (B, rows, T) array: frame f = b * T + t, row r.
__device__ __forceinline__ long long strided_index(long long f, int r, int n_time,
                                                   long long stride_b, long long stride_r,
                                                   long long stride_t) {
    const long long b = f / n_time;
    const long long t = f - b * n_time;
    return b * stride_b + static_cast<long long>(r) * stride_r + t * stride_t;
}

}  // namespace cumel
