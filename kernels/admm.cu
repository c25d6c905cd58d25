// cumel admm: the element-wise part of the joint magnitude-and-phase ADMM, fused.
//
// Iteration (cumel/admm.py is the NumPy twin and states the derivation, eqs. (1)-(6)):
//   state between iterations: Z (consistent coefficients), XU = X + U, P = W^p, b = Y + V
//   repeat n_iter times:
//     U = XU - Z;  W = P^(1/p);  V = b - W                     \
//     B = Z - U;   c = W - V                                    |
//     Y = max(k1 c + k2 |B|, 0)        k1 = (1 + rho) sigma / det, k2 = rho / det,
//                                      det = rho + sigma + rho sigma                    (3)
//     X = B (rho |B| + Y) / ((|B| + 1e-16) (1 + rho))           |  THIS KERNEL, one pass
//     XU = X + U;  b = Y + V                                    |
//     center = max(b, 0)^p;  spread = max(b, 0)^(2 (p - 1))    /   the mel step's inputs
//     Z = STFT(ISTFT(XU))                                          cupy.fft + overlap-add  (4)
//     P = nnls_prior(mel, center, spread)                          kernels/nnls.cu       (5)-(6)
// Only X + U and Y + V are kept: U and V come back as XU - Z and b - W, so the dual update of the
// previous iteration and this one's (X, Y) step are the same pass.
//
// Launch design and cost model.
// cost admm_update: step_bytes = 14 * n_freqs * item; step_flops = 30 * n_freqs; math = item
//   Per complex bin: read Z (2 T), XU (2 T), P (1 T), b (1 T); write XU (2 T), b (1 T), center
//   (1 T) and, for p != 2, spread (1 T): 10-11 words; ~30 flops, one hypot, one sqrt (p = 2) or
//   pow. Memory bound, like griffinlim_update: one thread per complex element, grid-stride loop,
//   256 threads a block, at most 4096 blocks; complex arrays as interleaved (re, im) views.
//   Elements are independent: no shared memory, no synchronisation, no atomics. The unfused
//   NumPy expression is ~20 passes over the bins; here it is one.
// cost admm_iteration: frame_bytes = (6 * n_freqs + 2 * n_fft) * item
// cost admm_iteration: step_bytes = (25 * n_freqs + 11 * n_fft + 6 * hop) * item + 8 * n_freqs * item
// cost admm_iteration: step_flops = 5 * n_fft * log2(n_fft) + 3 * n_fft + 78 * n_freqs + 24 * n_mels
// cost admm_iteration: math = item
//   (an outer iteration per frame: this kernel, the ISTFT + STFT of griffinlim_iteration, and
//   the mel step at inner_steps = 0, the start of nnls_prior: ~8 passes over the bins and a
//   Thomas sweep a frame)
//   float64 for float64 input, float32 otherwise, as NumPy; |B| is hypot (no overflow).
//   power_mode: 2 (W = sqrt(P), center = spread = b^2: one array), 1 (W = P, spread = 1),
//   0 (pow for any other p).

namespace cumel {

__device__ __forceinline__ float admm_hypot(float x, float y) { return hypotf(x, y); }
__device__ __forceinline__ double admm_hypot(double x, double y) { return hypot(x, y); }
__device__ __forceinline__ float admm_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double admm_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float admm_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double admm_pow(double x, double y) { return pow(x, y); }

}  // namespace cumel

template <typename T>
__global__ void admm_update(const T* __restrict__ z, T* __restrict__ xu, const T* __restrict__ p,
                            T* __restrict__ b, T* __restrict__ center, T* __restrict__ spread,
                            long long n, T k1, T k2, T rho, T one_plus_rho, T power,
                            T inv_power, T spread_power, int power_mode) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const T z_re = z[2 * i];
        const T z_im = z[2 * i + 1];
        const T u_re = xu[2 * i] - z_re;                   // U = (X + U) - Z
        const T u_im = xu[2 * i + 1] - z_im;
        const T b_re = z_re - u_re;                        // B = Z - U
        const T b_im = z_im - u_im;
        const T beta = cumel::admm_hypot(b_re, b_im);
        const T pw = p[i];
        const T w = power_mode == 2 ? cumel::admm_sqrt(pw)
                                    : (power_mode == 1 ? pw : cumel::admm_pow(pw, inv_power));
        const T v = b[i] - w;                              // V = (Y + V) - W
        T y = (w - v) * k1;                                // c = W - V, then (3)
        y = y + k2 * beta;
        y = y < T(0) ? T(0) : y;
        const T scale = (rho * beta + y) / ((beta + static_cast<T>(1e-16)) * one_plus_rho);
        xu[2 * i] = u_re + b_re * scale;                   // X + U
        xu[2 * i + 1] = u_im + b_im * scale;
        const T bn = v + y;                                // Y + V
        b[i] = bn;
        const T bp = bn < T(0) ? T(0) : bn;
        if (power_mode == 2) {
            center[i] = bp * bp;                           // spread is the same array
        } else if (power_mode == 1) {
            center[i] = bp;
            spread[i] = T(1);
        } else {
            center[i] = cumel::admm_pow(bp, power);
            spread[i] = cumel::admm_pow(bp, spread_power);
        }
    }
}
