// cumel griffinlim: the phase update and magnitude projection of fast Griffin-Lim, fused.
//
// Iteration (cumel/griffin_lim.py is the NumPy twin; torchaudio.functional.griffinlim's order):
//   X_0 = mag * start;  alpha = momentum / (1 + momentum);  tprev = 0
//   repeat n_iter times:
//     rebuilt = STFT(ISTFT(X))                     cupy.fft (cuFFT) + overlap-add, on the host side
//     a       = rebuilt - alpha * tprev            \
//     X       = mag * a / (|a| + 1e-16)            /  THIS KERNEL, one pass over the bins
//     tprev   = rebuilt                            (the host keeps the reference: no copy)
// On the first step tprev is 0 and the kernel is told so (has_prev = 0) instead of reading
// a zero array.
//
// Launch design and cost model.
// cost griffinlim_update: step_bytes = 7 * n_freqs * item; step_flops = 12 * n_freqs; math = item
// The whole Griffin-Lim iteration per frame, this kernel and the cupy calls around it (irfft,
// window, overlap-add, envelope, reflect pad, framing, window, rfft), counted from the arrays
// each reads and writes; FFT flops as 2.5 n log2 n per real transform (approximate):
// cost griffinlim_iteration: frame_bytes = (4 * n_freqs + 2 * n_fft) * item
// cost griffinlim_iteration: step_bytes = (11 * n_freqs + 11 * n_fft + 6 * hop) * item
// cost griffinlim_iteration: step_flops = 5 * n_fft * log2(n_fft) + 3 * n_fft + 12 * n_freqs
// cost griffinlim_iteration: math = item
//   * One thread per complex element (bin of a frame of a batch item), grid-stride loop, so any
//     grid covers any size; complex arrays are passed as their interleaved (re, im) real views.
//     Elements are independent: no shared memory, no synchronisation, no atomics.
//   * Per element: read rebuilt (2 T), tprev (2 T, skipped on the first step), mag (1 T), write
//     X (2 T): 7 words, 28 bytes in float32, 56 in float64, for ~10 flops and one sqrt. Memory
//     bound: a speech-201x128 clip of 1100 frames is 221k elements = 6.2 MB in float32, ~2 us at
//     3 TB/s (H100), well under a launch (~5 us). The unfused CuPy expression (subtract, abs,
//     add, divide, multiply) would be 5 launches and ~4 temporaries, ~4x the memory traffic.
//   * 256 threads a block, at most 4096 blocks (32 per SM on a 132-SM H100, a full wave of
//     resident threads at 2048 per SM); larger inputs loop. Per Griffin-Lim iteration the GPU
//     also runs one irfft, the overlap-add, one gather and one rfft: the FFTs dominate, this
//     kernel is ~10-20% of an iteration.
//   * |a| is hypot(re, im) (no overflow for large magnitudes); float64 instantiation for float64
//     input, float32 otherwise, the same precision as the NumPy path.

namespace cumel {

__device__ __forceinline__ float gl_hypot(float x, float y) { return hypotf(x, y); }
__device__ __forceinline__ double gl_hypot(double x, double y) { return hypot(x, y); }

}  // namespace cumel

template <typename T>
__global__ void griffinlim_update(const T* __restrict__ rebuilt, const T* __restrict__ tprev,
                                  const T* __restrict__ mag, T* __restrict__ out, long long n,
                                  T alpha, int has_prev) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        T re = rebuilt[2 * i];
        T im = rebuilt[2 * i + 1];
        if (has_prev) {
            re -= alpha * tprev[2 * i];
            im -= alpha * tprev[2 * i + 1];
        }
        const T scale = mag[i] / (cumel::gl_hypot(re, im) + static_cast<T>(1e-16));
        out[2 * i] = re * scale;
        out[2 * i + 1] = im * scale;
    }
}
