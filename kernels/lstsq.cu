// cumel lstsq on the GPU: S_f = max(pinv m_f, 0) for every frame f (torchaudio 2.x's answer; the
// NumPy twin is cumel/solvers/lstsq.py, pinv cached per filterbank by the Plan).
//
// Why a kernel and not one cuBLAS product: cuBLAS picks its algorithm (tiling, split-K) from the
// matrix sizes, so a frame's bits would depend on how many frames share its product -- and a
// streamed batch is cut into chunks whose size depends on the free memory. Here each output is
// ONE dot product over the mels, in a fixed order, accumulated in float64: a frame gives the
// same bits alone, in any batch and in any chunk.
//
// Launch design and cost model.
// cost lstsq_apply: frame_bytes = (n_mels + n_freqs) * item; frame_flops = 2 * n_mels * n_freqs
// cost lstsq_apply: math = fp64
//   * One block per frame (grid-stride): the frame's mel column is staged in shared memory as
//     float64 (n_mels doubles), then thread j computes bin j (strided by blockDim.x).
//   * pinvT is pinv transposed, (n_mels, n_freqs) C order, so the threads of a warp read
//     consecutive addresses for each mel k. pinvT (n_mels n_freqs values: 100 KB at 201 x 128
//     float32) stays in L2 and is shared by every block; per frame 2 n_mels n_freqs flops
//     (51k at 201 x 128). Compute bound in FP64 at ~1e6-1e7 frames/s on a data-centre card; the
//     memory traffic is only the frame's input and output.
#include "common.cuh"

template <typename T>
__global__ void lstsq_apply(const T* __restrict__ mel, long long n_frames, int n_time,
                            long long mel_sb, long long mel_sk, long long mel_st,
                            T* __restrict__ out, long long out_sb, long long out_sj,
                            long long out_st, const T* __restrict__ pinv_t, int n_mels,
                            int n_freqs) {
    extern __shared__ double cumel_shared[];  // the frame's n_mels values
    for (long long f = blockIdx.x; f < n_frames; f += gridDim.x) {
        for (int k = threadIdx.x; k < n_mels; k += blockDim.x) {
            cumel_shared[k] = static_cast<double>(
                mel[cumel::strided_index(f, k, n_time, mel_sb, mel_sk, mel_st)]);
        }
        __syncthreads();
        for (int j = threadIdx.x; j < n_freqs; j += blockDim.x) {
            double acc = 0.0;
            for (int k = 0; k < n_mels; ++k) {
                acc += static_cast<double>(pinv_t[static_cast<long long>(k) * n_freqs + j]) *
                       cumel_shared[k];
            }
            out[cumel::strided_index(f, j, n_time, out_sb, out_sj, out_st)] =
                cumel::relu(static_cast<T>(acc));
        }
        __syncthreads();  // every thread done with this frame's column before the next is staged
    }
}
