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
// Both kernels fuse the gradient step, the clamp and the convergence bookkeeping in one launch
// that runs every iteration on the device: the host launches once and never synchronises per
// iteration (torchaudio's own loop: ~10 launches and a loss.item() host sync per iteration).
//
// Launch design and cost model.
//   * One warp per frame (see common.cuh). Per iteration and frame: one pass over the bins for
//     A S (lane per mel over its bin runs) and one for A.T diff + momentum + clamp: ~8 flops and
//     12-16 bytes of state traffic per bin (S, buf read and written, float32); the filterbank
//     (20 bytes a bin) stays in L1/L2. So an iteration over N frames moves ~16 N n_freqs bytes:
//     memory bound at large N (32 clips x 1000 frames x 201 bins: ~100 MB/iter, ~40 us at
//     ~3 TB/s on an H100) and latency bound at small N.
//   * torchaudio's loss couples every frame, so iteration i+1 cannot start before all of
//     iteration i's loss is known: a COOPERATIVE launch (grid = resident blocks only) with one
//     grid.sync() per iteration (~1-2 us). Block partial sums go to a double-buffered array
//     partials[2][gridDim.x]; after the sync every block adds them in the same order, so every
//     block takes the same stop decision, and no block can overwrite a buffer still being read
//     (that needs passing the next grid.sync). A device-side flag polled by the host every K
//     iterations would add K wasted iterations or a checkpoint; CUDA graphs still need the host
//     to read the loss. The cooperative loop costs one barrier per iteration and nothing else.
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

// State S and buf: (n_frames, n_freqs), frame f = b * n_time + t; S holds the start on entry and
// the clamped result on exit. Dynamic shared memory: warps_per_block * (n_mels + 1) T values.
template <typename T>
__global__ void torchaudio_sgd(const T* __restrict__ mel, long long n_frames, int n_time,
                               long long mel_sb, long long mel_sk, long long mel_st,
                               T* __restrict__ S, T* __restrict__ buf,
                               double* __restrict__ partials, long long* __restrict__ iterations,
                               int n_mels, int n_freqs, const int* __restrict__ lo,
                               const T* __restrict__ w_lo, const T* __restrict__ w_hi,
                               const long long* __restrict__ row_start, T lr, T momentum,
                               T dampening, T weight_decay, int nesterov, T grad_scale,
                               long long max_iter, double tolerance_loss, double tolerance_change) {
    cg::grid_group grid = cg::this_grid();
    extern __shared__ unsigned char cumel_shared_bytes[];
    __shared__ double warp_loss[32];
    __shared__ double total_loss;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    T* diff = cumel::warp_diff_buffer<T>(cumel_shared_bytes, n_mels);
    const long long first = static_cast<long long>(blockIdx.x) * warps_per_block + warp;
    const long long stride = static_cast<long long>(gridDim.x) * warps_per_block;

    double prev_loss = __longlong_as_double(0x7ff0000000000000LL);  // +inf
    long long it = 0;
    while (it < max_iter) {
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
        grid.sync();
        if (threadIdx.x == 0) {
            double sum = 0.0;
            for (unsigned blk = 0; blk < gridDim.x; ++blk) sum += slot[blk];
            total_loss = sum;
        }
        __syncthreads();
        const double loss = total_loss / static_cast<double>(n_frames);
        ++it;
        if (!isfinite(loss)) {  // diverged: poison this block's frames and stop; the host raises
            for (long long f = first; f < n_frames; f += stride) {
                for (int j = lane; j < n_freqs; j += 32) S[f * n_freqs + j] = cumel::quiet_nan<T>();
            }
            break;
        }
        const bool stop = loss < tolerance_loss || fabs(prev_loss - loss) < tolerance_change;
        prev_loss = loss;
        if (stop) break;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) iterations[0] = it;
}

// One block per channel c: frames c * n_time .. (c + 1) * n_time - 1. x and x_next: (n_frames,
// n_freqs), x holds the start on entry. out: (C, n_freqs, n_time) through strides.
// Dynamic shared memory: warps_per_block * (n_mels + 1) T values.
template <typename T>
__global__ void mindspore_gd(const T* __restrict__ mel, int n_time, long long mel_sb,
                             long long mel_sk, long long mel_st, T* __restrict__ x,
                             T* __restrict__ x_next, T* __restrict__ out, long long out_sb,
                             long long out_sj, long long out_st, long long* __restrict__ iterations,
                             int n_mels, int n_freqs, const int* __restrict__ lo,
                             const T* __restrict__ w_lo, const T* __restrict__ w_hi,
                             const long long* __restrict__ row_start, T step, double prev_start,
                             long long max_iter, double tolerance_loss, double tolerance_change) {
    extern __shared__ unsigned char cumel_shared_bytes[];
    __shared__ double warp_loss[32];
    __shared__ double total_loss;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    T* diff = cumel::warp_diff_buffer<T>(cumel_shared_bytes, n_mels);
    const long long channel = blockIdx.x;
    const long long frame0 = channel * n_time;
    T* cur = x + frame0 * n_freqs;
    T* nxt = x_next + frame0 * n_freqs;

    double prev = prev_start;
    bool diverged = false;
    long long it = 0;
    while (it < max_iter) {
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
            break;
        }
        if (loss < tolerance_loss || fabs(prev - loss) < tolerance_change) break;
        prev = loss;
        T* tmp = cur;  // accept the step
        cur = nxt;
        nxt = tmp;
        __syncthreads();  // every warp done reading the old iterate before it is overwritten
    }
    for (int t = warp; t < n_time; t += warps_per_block) {
        const long long f = frame0 + t;
        const T* xc = cur + static_cast<long long>(t) * n_freqs;
        for (int j = lane; j < n_freqs; j += 32) {
            const T v = diverged ? cumel::quiet_nan<T>() : xc[j];
            out[cumel::strided_index(f, j, n_time, out_sb, out_sj, out_st)] = cumel::relu(v);
        }
    }
    if (threadIdx.x == 0) iterations[channel] = it;
}
