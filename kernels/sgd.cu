// cumel SGD compat solvers: torchaudio 0.8 (one loss over the batch) and MindSpore (one loss per
// channel). NumPy twins and references: cumel/solvers/torchaudio_sgd.py, mindspore_gd.py.
//
// torchaudio_sgd, per iteration i (frames f, S_f of n_freqs bins, m_f of n_mels):
//   diff_f = m_f - A S_f;  loss_i = sum_f ||diff_f||^2 / n_frames     (ONE scalar, float64 sum)
//   g_f = grad_scale * A.T diff_f (+ weight_decay S_f),   grad_scale = -2 / n_frames
//   buf = g (i == 0) | momentum buf + (1 - dampening) g;  step = g + momentum buf (nesterov) | buf
//   S_f = max(S_f - lr step, 0)                          -- the step of iteration i is applied
//   stop after iteration i if loss_i < tolerance_loss or |loss_{i-1} - loss_i| < tolerance_change
// mindspore_gd, per channel c (frames t of the channel), per iteration:
//   diff_t = m_t - A x_t;  loss = sum_t ||diff_t||^2 / (n_time n_mels)   (float64 sum)
//   x_next_t = x_t + (lr / n_time) A.T diff_t
//   stop if loss < tolerance_loss or |prev - loss| < tolerance_change  -- x_next is then DROPPED
// Both also stop on a non-finite loss (divergence), and the host then raises.
//   else x = x_next, prev = loss;  finally out = max(x, 0)
// Both kernels fuse the gradient step, the clamp and the convergence bookkeeping, and run many
// iterations per launch on the device (torchaudio's own loop: ~10 launches and a loss.item()
// host sync per iteration). A launch runs at most up to iteration iter_end, so a long solve is
// several launches of bounded length (a desktop GPU's display watchdog kills a kernel after ~2 s;
// cumel.cuda.iterations_per_launch picks the bound from the work size). The loop state
// (iteration count, previous loss, stop flag; for MindSpore which buffer holds the iterate) lives
// in global memory, so K launches compute exactly what one launch would.
//
// Launch design and cost model.
// cost torchaudio_sgd: frame_bytes = 3 * n_freqs * item; step_bytes = (4 * n_freqs + n_mels) * item
// cost torchaudio_sgd: step_flops = 14 * n_freqs + 3 * n_mels; math = item
// cost mindspore_gd: frame_bytes = 3 * n_freqs * item; step_bytes = (2 * n_freqs + n_mels) * item
// cost mindspore_gd: step_flops = 9 * n_freqs + 3 * n_mels; math = item
//   (per frame: the start's copy in and the answer out; per step: the mel read again, the state
//   read and written: torchaudio S and the momentum buffer, MindSpore x read and x_next written)
//   * One warp per frame (see common.cuh). Per iteration and frame: one pass over the bins for
//     A S (lane per mel over its bin runs) and one for A.T diff + momentum + clamp: ~8 flops and
//     12-16 bytes of state traffic per bin (S, buf read and written, float32); the filterbank
//     (20 bytes a bin) stays in L1/L2. So an iteration over N frames moves ~16 N n_freqs bytes:
//     memory bound at large N (32 clips x 1000 frames x 201 bins: ~100 MB/iter, ~40 us at
//     ~3 TB/s on an H100) and latency bound at small N.
//   * Occupancy (python -m bench kernels): torchaudio_sgd takes 80 registers a thread on sm_90
//     and 72 on sm_80 (no spills, no stack frame), so 24 and 28 of 64 warps an SM, by registers;
//     mindspore_gd 64 registers, 32 warps. Enough to keep the state streaming at large N (each
//     warp has a frame's bins in flight); the cooperative grid is exactly the resident blocks
//     (6 an SM on sm_90), so a batch of fewer frames than that leaves warps idle.
//   * torchaudio's loss couples every frame, so iteration i+1 cannot start before all of
//     iteration i's loss is known: a COOPERATIVE launch (grid = resident blocks only) with one
//     grid.sync() per iteration (~1-2 us). Block partial sums go to a double-buffered array
//     partials[2][gridDim.x]; after the sync every block adds them in the same order, so every
//     block takes the same stop decision, and no block can overwrite a buffer still being read
//     (that needs passing the next grid.sync). A device-side flag polled by the host every K
//     iterations would add K wasted iterations or a checkpoint; CUDA graphs still need the host
//     to read the loss. The cooperative loop costs one barrier per iteration and nothing else.
//     Where the device lacks CooperativeLaunch, the same kernel runs with cooperative = 0: ONE
//     iteration per launch, and the stop test of iteration i (the sum of its block partials, in
//     the same order) at the start of launch i + 1 -- the kernel boundary is the grid barrier.
//     Same arithmetic, same result; a launch (~5 us) per iteration instead of a barrier.
//   * MindSpore's loss is per channel and channels never interact: ONE BLOCK PER CHANNEL, its
//     warps share the channel's frames, one __syncthreads-based reduction per iteration, no grid
//     barrier, no cooperative launch. The iterate is double-buffered in global memory (x, x_next)
//     because the stopping iteration's step must be discarded. A batch with fewer channels than
//     SMs leaves SMs idle: that is MindSpore's semantics (channels solved on their own).
#include <cooperative_groups.h>

#include "common.cuh"

namespace cg = cooperative_groups;

namespace cumel {

template <typename T>
__device__ __forceinline__ T quiet_nan() {
    return static_cast<T>(__longlong_as_double(0x7ff8000000000000LL));  // quiet NaN
}

// Block-wide sum of one value per warp (lane 0's), in warp order; the result is valid on
// thread 0. Every thread of the block must call it (it holds a __syncthreads).
__device__ __forceinline__ double block_sum(double warp_value, double* warp_scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    if (lane == 0) warp_scratch[warp] = warp_value;
    __syncthreads();
    double sum = 0.0;
    if (threadIdx.x == 0) {
        for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) sum += warp_scratch[w];
    }
    return sum;
}

// This warp's n_mels + 1 values of dynamic shared memory.
template <typename T>
__device__ __forceinline__ T* warp_diff_buffer(unsigned char* shared, int n_mels) {
    return reinterpret_cast<T*>(shared) + static_cast<long long>(threadIdx.x >> 5) * (n_mels + 1);
}

// diff = m_f - A x_f for one frame (lane per mel), stored in diff[0..n_mels), diff[n_mels] = 0;
// returns ||diff||^2 (float64, on every lane).
template <typename T>
__device__ double frame_mel_residual(const T* __restrict__ mel, long long f, int n_time,
                                     long long mel_sb, long long mel_sk, long long mel_st,
                                     const T* __restrict__ x, int n_mels,
                                     const T* __restrict__ w_lo, const T* __restrict__ w_hi,
                                     const long long* __restrict__ row_start, T* diff, int lane) {
    double sq = 0.0;
    for (int k = lane; k < n_mels; k += 32) {
        T ax = T(0);
        for (long long j = row_start[k]; j < row_start[k + 1]; ++j) ax += w_lo[j] * x[j];
        if (k > 0) {
            for (long long j = row_start[k - 1]; j < row_start[k]; ++j) ax += w_hi[j] * x[j];
        }
        const T d = mel[strided_index(f, k, n_time, mel_sb, mel_sk, mel_st)] - ax;
        diff[k] = d;
        sq += static_cast<double>(d) * static_cast<double>(d);
    }
    if (lane == 0) diff[n_mels] = T(0);
    __syncwarp();
    return warp_sum(sq);
}

}  // namespace cumel

// Loop state of torchaudio_sgd in global memory, two slots indexed by launch parity: a launch
// reads slot `parity` and block 0 writes slot `parity ^ 1` after its last barrier, so no block
// of a launch can see another block's update of the state it started from.
//   iterations[p]: steps applied so far; prev_loss[p]: loss of the last step; done[p]: stopped.
namespace cumel {

// Every block: the batch loss of one iteration from its block partials (fixed block order, so
// every block takes the same decision). Every thread must call it (it holds a __syncthreads).
__device__ __forceinline__ double grid_loss(const double* slot, long long n_frames,
                                            double* total_loss) {
    if (threadIdx.x == 0) {
        double sum = 0.0;
        for (unsigned blk = 0; blk < gridDim.x; ++blk) sum += slot[blk];
        *total_loss = sum;
    }
    __syncthreads();
    return *total_loss / static_cast<double>(n_frames);
}

// The anchor's rule after a step: 0 go on, 1 stop, 2 diverged (poison and stop; the host raises)
__device__ __forceinline__ int stop_test(double loss, double prev_loss, double tolerance_loss,
                                         double tolerance_change) {
    if (!isfinite(loss)) return 2;
    return (loss < tolerance_loss || fabs(prev_loss - loss) < tolerance_change) ? 1 : 0;
}

template <typename T>
__device__ void poison_frames(T* S, long long first, long long stride, long long n_frames,
                              int n_freqs, int lane) {
    for (long long f = first; f < n_frames; f += stride) {
        for (int j = lane; j < n_freqs; j += 32) S[f * n_freqs + j] = quiet_nan<T>();
    }
}

}  // namespace cumel

// State S and buf: (n_frames, n_freqs), frame f = b * n_time + t; S holds the start before the
// first launch and the clamped result after the last. Dynamic shared memory: warps_per_block *
// (n_mels + 1) T values. Runs iterations up to iter_end (cooperative) or one (cooperative = 0),
// never past max_iter; the grid must be the same for every launch of a solve.
template <typename T>
__global__ void torchaudio_sgd(const T* __restrict__ mel, long long n_frames, int n_time,
                               long long mel_sb, long long mel_sk, long long mel_st,
                               T* __restrict__ S, T* __restrict__ buf,
                               double* __restrict__ partials, long long* __restrict__ iterations,
                               double* __restrict__ prev_loss, int* __restrict__ done, int parity,
                               int n_mels, int n_freqs, const int* __restrict__ lo,
                               const T* __restrict__ w_lo, const T* __restrict__ w_hi,
                               const long long* __restrict__ row_start, T lr, T momentum,
                               T dampening, T weight_decay, int nesterov, T grad_scale,
                               long long iter_end, long long max_iter, double tolerance_loss,
                               double tolerance_change, int cooperative) {
    extern __shared__ unsigned char cumel_shared_bytes[];
    __shared__ double warp_loss[32];
    __shared__ double total_loss;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    T* diff = cumel::warp_diff_buffer<T>(cumel_shared_bytes, n_mels);
    const long long first = static_cast<long long>(blockIdx.x) * warps_per_block + warp;
    const long long stride = static_cast<long long>(gridDim.x) * warps_per_block;

    long long it = iterations[parity];
    double prev = prev_loss[parity];
    int stopped = done[parity];
    if (!stopped && !cooperative && it > 0) {
        // the stop test of step it - 1, whose block partials the previous launch left
        const double loss = cumel::grid_loss(partials + ((it - 1) & 1) * gridDim.x, n_frames,
                                             &total_loss);
        stopped = cumel::stop_test(loss, prev, tolerance_loss, tolerance_change);
        if (stopped == 2) cumel::poison_frames(S, first, stride, n_frames, n_freqs, lane);
        prev = loss;
    }
    if (it >= max_iter) stopped = stopped ? stopped : 1;
    while (!stopped && it < iter_end) {
        double loss_part = 0.0;
        for (long long f = first; f < n_frames; f += stride) {
            T* s = S + f * n_freqs;
            T* b = buf + f * n_freqs;
            loss_part += cumel::frame_mel_residual<T>(mel, f, n_time, mel_sb, mel_sk, mel_st, s,
                                                      n_mels, w_lo, w_hi, row_start, diff, lane);
            for (int j = lane; j < n_freqs; j += 32) {
                const T sj = s[j];
                T g = grad_scale * cumel::rmatvec_bin(lo, w_lo, w_hi, diff, j);
                if (weight_decay != T(0)) g += weight_decay * sj;
                if (momentum != T(0)) {
                    const T bj = (it == 0) ? g : momentum * b[j] + (T(1) - dampening) * g;
                    b[j] = bj;
                    g = nesterov ? g + momentum * bj : bj;
                }
                const T next = sj - lr * g;
                s[j] = cumel::relu(next);
            }
            __syncwarp();
        }
        const double block_loss = cumel::block_sum(loss_part, warp_loss);
        double* slot = partials + static_cast<long long>(it & 1) * gridDim.x;
        if (threadIdx.x == 0) slot[blockIdx.x] = block_loss;
        ++it;
        if (!cooperative) break;  // the next launch takes this step's stop test
        cg::this_grid().sync();
        const double loss = cumel::grid_loss(slot, n_frames, &total_loss);
        stopped = cumel::stop_test(loss, prev, tolerance_loss, tolerance_change);
        if (stopped == 2) cumel::poison_frames(S, first, stride, n_frames, n_freqs, lane);
        prev = loss;
    }
    if (cooperative && !stopped && it >= max_iter) stopped = 1;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        iterations[parity ^ 1] = it;
        prev_loss[parity ^ 1] = prev;
        done[parity ^ 1] = stopped;
    }
}

// One block per channel c: frames c * n_time .. (c + 1) * n_time - 1. x and x_next: (n_frames,
// n_freqs), x holds the start before the first launch. out: (C, n_freqs, n_time) through
// strides, written when the channel finishes. Per-channel loop state in global memory (only its
// own block touches it): iterations[c], prev_loss[c] (host-initialised to the anchor's start),
// flags[c] = 1 done | 2 the iterate is in x_next | 4 diverged. Runs up to iter_end.
// Dynamic shared memory: warps_per_block * (n_mels + 1) T values.
template <typename T>
__global__ void mindspore_gd(const T* __restrict__ mel, int n_time, long long mel_sb,
                             long long mel_sk, long long mel_st, T* __restrict__ x,
                             T* __restrict__ x_next, T* __restrict__ out, long long out_sb,
                             long long out_sj, long long out_st, long long* __restrict__ iterations,
                             double* __restrict__ prev_loss, int* __restrict__ flags,
                             int n_mels, int n_freqs, const int* __restrict__ lo,
                             const T* __restrict__ w_lo, const T* __restrict__ w_hi,
                             const long long* __restrict__ row_start, T step, long long iter_end,
                             long long max_iter, double tolerance_loss, double tolerance_change) {
    extern __shared__ unsigned char cumel_shared_bytes[];
    __shared__ double warp_loss[32];
    __shared__ double total_loss;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    T* diff = cumel::warp_diff_buffer<T>(cumel_shared_bytes, n_mels);
    const long long channel = blockIdx.x;
    const int entry_flags = flags[channel];
    if (entry_flags & 1) return;  // finished in an earlier launch
    const long long frame0 = channel * n_time;
    T* cur = ((entry_flags & 2) ? x_next : x) + frame0 * n_freqs;
    T* nxt = ((entry_flags & 2) ? x : x_next) + frame0 * n_freqs;
    bool in_next = (entry_flags & 2) != 0;

    double prev = prev_loss[channel];
    bool diverged = false;
    bool finished = false;
    long long it = iterations[channel];
    while (it < iter_end) {
        double loss_part = 0.0;
        for (int t = warp; t < n_time; t += warps_per_block) {
            const long long f = frame0 + t;
            const T* xc = cur + static_cast<long long>(t) * n_freqs;
            T* xn = nxt + static_cast<long long>(t) * n_freqs;
            loss_part += cumel::frame_mel_residual<T>(mel, f, n_time, mel_sb, mel_sk, mel_st, xc,
                                                      n_mels, w_lo, w_hi, row_start, diff, lane);
            for (int j = lane; j < n_freqs; j += 32) {
                xn[j] = xc[j] + step * cumel::rmatvec_bin(lo, w_lo, w_hi, diff, j);
            }
            __syncwarp();
        }
        const double channel_loss = cumel::block_sum(loss_part, warp_loss);
        if (threadIdx.x == 0) total_loss = channel_loss;
        __syncthreads();
        const double loss = total_loss / (static_cast<double>(n_time) * n_mels);
        ++it;
        if (!isfinite(loss)) {  // diverged: stop and poison the output; the host raises
            diverged = true;
            finished = true;
            break;
        }
        if (loss < tolerance_loss || fabs(prev - loss) < tolerance_change) {
            finished = true;
            break;
        }
        prev = loss;
        T* tmp = cur;  // accept the step
        cur = nxt;
        nxt = tmp;
        in_next = !in_next;
        __syncthreads();  // every warp done reading the old iterate before it is overwritten
    }
    if (it >= max_iter) finished = true;
    if (finished) {
        for (int t = warp; t < n_time; t += warps_per_block) {
            const long long f = frame0 + t;
            const T* xc = cur + static_cast<long long>(t) * n_freqs;
            for (int j = lane; j < n_freqs; j += 32) {
                const T v = diverged ? cumel::quiet_nan<T>() : xc[j];
                out[cumel::strided_index(f, j, n_time, out_sb, out_sj, out_st)] = cumel::relu(v);
            }
        }
    }
    __syncthreads();  // every thread has read this channel's entry state before it is replaced
    if (threadIdx.x == 0) {
        iterations[channel] = it;
        prev_loss[channel] = prev;
        flags[channel] = (finished ? 1 : 0) | (in_next ? 2 : 0) | (diverged ? 4 : 0);
    }
}
