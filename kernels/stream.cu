// cumel stream: the overlap-add, normalisation and re-framing of online fast Griffin-Lim
// (cumel.MelStream), fused, over every stream and every frame in flight.
//
// Iteration (cumel/stream/__init__.py is the NumPy twin, cumel/stream/compiled.py the compiled
// CPU one; one arriving frame, K frames of look-ahead,
// R = ceil(n_fft / hop) frames over each hop-sized slot, k <= K + 1 frames in flight a..a+k-1):
//   repeat n_iter times:
//     f       = irfft(X)                                   cupy.fft, (S, k, n_fft)
//     y[q, h] = inv[q, h] * (tail[q, h] + sum_{r=0}^{R-1} w[r hop + h] f[q - r, r hop + h])  \
//     seg[i, n] = w[n] * y[i hop + n]                      THIS KERNEL, one pass            /
//              (q = slot a + q of the window; the tail term only for q < R - 1: the committed
//               frames' overlap-add; frame q - r only where 0 <= q - r < k; inv = 1 / envelope
//               of the frames 0..a+k-1)
//     rebuilt = rfft(seg)                                  cupy.fft
//     X       = update(rebuilt, tprev, mag)                kernels/griffinlim.cu
//     tprev   = rebuilt
// Each output value adds the R frames of its slot in the NumPy path's order (r ascending, the
// tail first), so the two paths agree to the rounding of a fused multiply-add.
//
// Launch design and cost model.
// cost stream_overlap: step_bytes = (2 + n_fft / hop) * n_fft * item + 2 * hop * item; step_flops = (2 * n_fft / hop + 2) * n_fft; math = item
//   One thread per output sample (stream, frame in flight, n), grid-stride loop, 256 threads a
//   block, at most 4096 blocks; no shared memory, no synchronisation, no atomics: each thread
//   reads the R frames that cover its sample (R = ceil(n_fft / hop), ~n_fft / hop in the cost
//   lines, coalesced along n: neighbouring
//   threads read neighbouring samples of the same frames), the window twice and the envelope
//   once, and writes one value. Per frame in flight and iteration: (R + 2) n_fft words read
//   and written, plus the tail and envelope rows; against the NumPy path's ~2 R + 4 passes
//   (window, R adds, envelope, R windowed copies) over the same data. Memory bound like
//   griffinlim_update; with S streams x (K + 1) frames the launch covers S (K + 1) n_fft
//   samples: 16 streams at K = 3 and n_fft 1024 are 65536 threads, under one wave of an H100,
//   so a batch of streams, not one, is what fills the device (the launch itself, ~5 us, is
//   the floor for a single stream).
// cost stream_iteration: frame_bytes = (4 * n_freqs + 2 * n_fft) * item
// cost stream_iteration: step_bytes = (11 * n_freqs + (6 + n_fft / hop) * n_fft + 2 * hop) * item
// cost stream_iteration: step_flops = 5 * n_fft * log2(n_fft) + (2 * n_fft / hop + 2) * n_fft + 12 * n_freqs
// cost stream_iteration: math = item
//   (per frame in flight: irfft, this kernel, rfft and griffinlim_update; each arriving frame
//   runs n_iter of them over its K + 1 frames in flight, so a frame costs (K + 1) n_iter)
//   float64 (the stream's precision) and float32 instantiations.

template <typename T>
__global__ void stream_overlap(const T* __restrict__ frames, const T* __restrict__ tail,
                               const T* __restrict__ inv, const T* __restrict__ window,
                               T* __restrict__ seg, long long n_streams, int k, int n_fft,
                               int hop, int hops) {
    // frames (S, k, n_fft); tail (S, hops - 1, hop); inv (k + hops - 1, hop);
    // window (hops * hop), zero past n_fft; seg (S, k, n_fft)
    const long long n = n_streams * k * n_fft;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
         idx += stride) {
        const int j = static_cast<int>(idx % n_fft);
        const long long row = idx / n_fft;
        const int i = static_cast<int>(row % k);
        const long long s = row / k;
        const int p = i * hop + j;             // sample of the window, from slot a's start
        const int q = p / hop;
        const int h = p - q * hop;
        T acc = q < hops - 1 ? tail[(s * (hops - 1) + q) * hop + h] : static_cast<T>(0);
        for (int r = 0; r < hops; ++r) {
            const int f = q - r;               // the frame whose chunk r covers slot q
            if (f >= 0 && f < k) {
                const int m = r * hop + h;
                if (m < n_fft) {
                    const T product = window[m] * frames[(s * k + f) * n_fft + m];
                    acc += product;
                }
            }
        }
        seg[idx] = window[j] * (acc * inv[static_cast<long long>(q) * hop + h]);
    }
}
