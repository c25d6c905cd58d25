// cumel nnls: the default solver, one warp per frame, the whole solve in one launch.
//
// Iteration (cumel/solvers/nnls/ is the NumPy twin and the reference; same steps, same order):
//   e = exponent of max|m| (frexp); m <- m 2^-e      exact rescaling: s(c m) = c s(m)
//   mu_0 = (A A.T + eps I)^-1 m                     cached Thomas factors of the plan
//   for it in 0 .. step_cap:                        step_cap = min(max_iter, 4 n_mels + 32)
//     t = A.T mu;  s = max(t, 0);  d = (t > 0)      d kept as a bit mask, one ballot per 32 bins
//     F = A s + eps mu - m;  kkt = ||F|| / ||m||    KKT residual of the regularised problem
//     stop if kkt <= tolerance_loss; or the last step was a full Newton step and d is unchanged
//       (F is then zero up to rounding: Newton is exact on a piece of F); or kkt <= 1e-6 and
//       kkt > 0.5 min(kkt of the last three iterates) (rounding floor); or the last step
//       stalled; or it == step_cap
//     J = A diag(d) A.T + eps I                     TRIDIAGONAL: diag, upper per mel
//     delta = -J^-1 F                               Thomas algorithm on lane 0, O(n_mels)
//                                                   (NumPy: cyclic reduction; same delta)
//     alpha: phi'(a) = sum_j max(t_j + a u_j, 0) u_j + c0 + a c1, u = A.T delta, phi'(0) = F.delta
//            full step if phi'(1) <= 1e-12 |phi'(0)| (a rounding tie is a full step), else the
//            EXACT root of the increasing, piecewise linear phi' on (0, 1): bracket [lo, hi],
//            secant point c, one pass for phi'(c), the slope g just right of c and the nearest
//            breakpoints b_j = -t_j / u_j around c; r = c - phi'(c) / g is the root if it lies on
//            that piece, else the bracket moves past the piece (as in NumPy)
//     mu += alpha delta
//     stalled = alpha ||u|| <= tolerance_change ||s||
//   out = 2^e max(A.T mu, 0)                        relu keeps NaN, as np.maximum does
// The gradient step, the clamp (s = max(t, 0)) and the convergence check are one fused loop:
// nothing leaves the chip between iterations and the host never synchronises.
//
// nnls_prior: the same iteration for the proximal variant (cumel/solvers/nnls/, "Prior"; the
// mel step of cumel/admm.py): per bin a centre c and a spread v (each frame's spread divided by
// its maximum, plus a floor), and everywhere above t replaced by z = c 2^-e + v t:
//   mu_0 = (A diag(v) A.T + eps I)^-1 (m - A c 2^-e)   J's diag and upper with every bin active,
//                                                    then Thomas on lane 0
//   s = max(z, 0);  J = A diag(v (z > 0)) A.T + eps I;  phi'(a) = max(z + a v u, 0).u + ...
//   stalled = alpha ||v u|| <= tolerance_change ||s||;  out = 2^e max(z, 0)
//   a frame with m = 0: out = max(c, 0) on the bins no triangle covers, 0 elsewhere
// c and v stay in global memory (read through the cache at each pass, two more loads and a
// division a bin): n_freqs doubles a warp would not fit beside the rest at 1025 bins. The prior's
// per-frame state costs registers: 140 a thread (python -m bench kernels), 12 of 64 warps an
// SM, against nnls_solve's 16; at inner_steps = 0 (the ADMM's default) a frame is the start and
// one pass, so the launch is short either way.
// nnls_solve is nnls_frame<T, false>: every operation of the plain iteration as it was, and its
// registers too (119 on sm_80, 114 on sm_90: the prior is an empty type there).
//
// Launch design and cost model.
// cost nnls_solve: frame_bytes = (n_mels + n_freqs) * item + 16; frame_flops = 4 * (n_mels + n_freqs)
// cost nnls_solve: step_bytes = 0; step_flops = 32 * n_freqs + 24 * n_mels; math = fp64
// cost nnls_prior: frame_bytes = (n_mels + 3 * n_freqs) * item + 16
// cost nnls_prior: frame_flops = 10 * n_freqs + 8 * n_mels; step_bytes = 8 * n_freqs * item
// cost nnls_prior: step_flops = 48 * n_freqs + 24 * n_mels; math = fp64
//   (the prior adds its two inputs once a frame and, from the cache, again at each pass: ~4
//   passes a step; at inner_steps = 0 a frame costs the start and one pass for F)
//   (a step: a Newton step with a full step taken; each line-search pass adds ~12 n_freqs flops.
//   Per frame the mel in, the spectrum, step count and KKT residual out; the state never leaves
//   the chip. By this count an H100 would allow ~1e9 frames/s: the kernel is latency bound,
//   see the Thomas sweep below, and the benchmark's measured / bound says by how much.)
//   * One warp per frame, frames independent: a frame's work never waits for another frame and a
//     converged frame's warp simply exits (grid-stride over frames, so it picks up the next one).
//   * On-chip state per warp, all float64: m, mu, F, delta, diag, upper, upper_scaled
//     (7 (n_mels + 1) doubles) and two bit masks of n_freqs bits: 7.5 KB at 128 mels. t and u are
//     NOT stored: t_j = w_lo[j] mu[lo[j]] + w_hi[j] mu[lo[j]+1] is two FMAs from shared memory,
//     cheaper to recompute than to keep. The filterbank (lo, w_lo, w_hi, row_start: 20 bytes a bin)
//     is read through the read-only cache and is shared by every warp on the SM.
//   * Per Newton step and frame: ~4 passes over the bins (A products, mask ballot, phi'(1), norms)
//     of ~6 flops each, plus 1-3 extra passes (~12 flops a bin) when the line search is needed
//     (on real audio; each pass ends the search or removes a breakpoint), plus the
//     Thomas sweep: 2 n_mels dependent steps on one lane (~40 cycles each) -- the latency-bound
//     part, hidden by the other warps resident on the SM. At 201 x 128, ~10 steps worst case and
//     ~2-3 typical: about 2 * 128 * 40 * 3 = 30k cycles of sweep latency per frame plus the bin
//     passes, call it ~50k cycles (~30 us at 1.7 GHz).
//   * Occupancy is low on purpose (python -m bench kernels): a warp holds a whole frame's
//     state, in 114 registers a thread on sm_90 and 119 on sm_80 (no spills, no stack frame) and
//     ~7 KB of shared memory at 128 mels. Registers cap residency at 16 of 64 warps per SM on
//     both (4 blocks of 4 warps; shared memory, 28 KB a block, would allow 7 on sm_90 and 5 on
//     sm_80). 20 warps need <= 96 registers: __launch_bounds__(128, 5) gets there without spills
//     on sm_80 but spills 4 bytes (8-byte stack frame) on sm_90, so it is not set. 132 SMs x 16
//     frames / ~30 us is ~7e7 frames/s as a latency-bound ceiling; 1e7 frames/s leaves a 7x
//     margin for what this model misses.
//   * float64 on purpose: the dual is ill-conditioned by design (eps ~ 1e-9 of ||A||^2); Hopper's
//     FP64 rate is half its FP32 rate and this kernel is latency bound, not FLOP bound.
//   * Input mel and output S are addressed through strides (B, rows, T), so any layout works and
//     every output element of every frame is written exactly once, zero frames included.
//
// nnls_backward: the gradient of the answer, by implicit differentiation (cumel/solvers/gradient.py
// is the NumPy twin). With D = diag(s > 0) of the returned answer and g = dL/ds of a frame:
//   rhs = A D g;  J = A D A.T + eps I (tridiagonal: diag, upper per mel);  dL/dm = J^-1 rhs
// One warp per frame, as nnls_solve: lanes sum rhs_k, diag_k, upper_k over mel k's bin run and
// the run below it (the bins with s_j > 0), lane 0 runs thomas_sweep (the Newton step's solve,
// the same arithmetic), lanes write the mel gradient. No iteration: a frame is one pass over its
// bins and one sweep.
// cost nnls_backward: frame_bytes = (2 * n_freqs + n_mels) * item
// cost nnls_backward: frame_flops = 10 * n_freqs + 9 * n_mels; step_bytes = 0; step_flops = 0
// cost nnls_backward: math = fp64
//   (per bin: its s and g read, and for an active bin 3 FMAs in its own mel's run and 2 in the
//   run of the mel above; per mel: the sweep's 1 division and 4 multiply-adds forward, 1 back,
//   and the gradient written. Latency bound like the forward: the sweep is 2 n_mels dependent
//   steps on one lane, hidden by the other warps on the SM; 4 (n_mels + 1) doubles of shared
//   memory a warp.)
#include "common.cuh"

namespace cumel {

constexpr double kFullStepTie = 1e-12;
// rounding-floor rule (cumel/solvers/nnls/iteration.py FLOOR_*): below kFloorKkt, stop a frame whose kkt did
// not drop below kFloorRatio times the smallest of its last three
constexpr double kFloorKkt = 1e-6;
constexpr double kFloorRatio = 0.5;

struct NnlsWarpState {
    double* m;
    double* mu;
    double* F;
    double* delta;
    double* diag;
    double* upper;
    double* upper_scaled;
    unsigned* mask;       // d of this iteration, bit (j % 32) of word j / 32
    unsigned* mask_prev;  // d of the previous iteration
};

// Thomas algorithm on one thread: x = T^-1 rhs for the symmetric tridiagonal T of diagonal
// ``diag`` and super-diagonal ``upper`` (n rows); ``upper_scaled`` is scratch (upper_k / pivot_k).
__device__ __forceinline__ void thomas_sweep(const double* diag, const double* upper,
                                             double* upper_scaled, const double* rhs, double* x,
                                             int n) {
    double inv_pivot = 1.0 / diag[0];
    upper_scaled[0] = upper[0] * inv_pivot;
    double y = rhs[0] * inv_pivot;
    x[0] = y;
    for (int k = 1; k < n; ++k) {
        inv_pivot = 1.0 / (diag[k] - upper[k - 1] * upper_scaled[k - 1]);
        upper_scaled[k] = upper[k] * inv_pivot;
        y = (rhs[k] - upper[k - 1] * y) * inv_pivot;
        x[k] = y;
    }
    for (int k = n - 2; k >= 0; --k) x[k] -= upper_scaled[k] * x[k + 1];
}

// The warp's slice of the block's dynamic shared memory, laid out as cumel/cuda sizes it
// (nnls_shared_bytes): 7 (n_mels + 1) doubles, then the two bit masks.
__device__ __forceinline__ NnlsWarpState nnls_warp_state(double* shared, int warp, int n_mels,
                                                         int n_freqs) {
    const int n_words = (n_freqs + 31) / 32;
    const int doubles_per_warp = 7 * (n_mels + 1) + n_words;  // 2 n_words unsigned = n_words doubles
    double* base = shared + static_cast<long long>(warp) * doubles_per_warp;
    NnlsWarpState st;
    st.m = base;
    st.mu = base + (n_mels + 1);
    st.F = base + 2 * (n_mels + 1);
    st.delta = base + 3 * (n_mels + 1);
    st.diag = base + 4 * (n_mels + 1);
    st.upper = base + 5 * (n_mels + 1);
    st.upper_scaled = base + 6 * (n_mels + 1);
    st.mask = reinterpret_cast<unsigned*>(base + 7 * (n_mels + 1));
    st.mask_prev = st.mask + n_words;
    return st;
}

// One round of the exact line search at the point c of the bracket [a_lo, a_hi]: phi'(c), the
// slope g of phi' just right of c, and the breakpoints bl <= c < br nearest to c inside the
// bracket (a_lo, a_hi where there is none). All lanes get the values.
struct NnlsPiece {
    double value, slope, left, right;
};

// The prior of one frame (nnls_prior): where its centre and spread are, and how they are scaled.
// Without one (nnls_solve: the empty specialisation below) z(j, t) is t and step(j, u) is u, the
// plain iteration's values, and nothing is passed or kept.
template <typename T, bool kPrior>
struct NnlsPrior {
    const T* __restrict__ center;
    const T* __restrict__ spread;
    long long sb, sj, st;   // strides (B, rows, T) shared by center and spread
    double floor;
    long long f;            // the frame
    int n_time, exponent;
    double v_max;           // the frame's largest spread

    __device__ __forceinline__ long long at(int j) const {
        return strided_index(f, j, n_time, sb, sj, st);
    }
    __device__ __forceinline__ double c(int j) const {   // c 2^-e
        return ldexp(static_cast<double>(center[at(j)]), -exponent);
    }
    __device__ __forceinline__ double v(int j) const {   // normalised spread
        const double raw = static_cast<double>(spread[at(j)]);
        return (v_max > 0.0 ? raw / v_max : 1.0) + floor;
    }
    __device__ __forceinline__ double z(int j, double t) const {
        if (!kPrior) return t;
        return t * v(j) + c(j);                          // NumPy: t *= v; t += c
    }
    __device__ __forceinline__ double step(int j, double u) const {
        if (!kPrior) return u;
        return v(j) * u;
    }
};

template <typename T>
struct NnlsPrior<T, false> {
    __device__ __forceinline__ double c(int) const { return 0.0; }
    __device__ __forceinline__ double v(int) const { return 1.0; }
    __device__ __forceinline__ double z(int, double t) const { return t; }
    __device__ __forceinline__ double step(int, double u) const { return u; }
};

template <typename T, bool kPrior>
__device__ NnlsPiece nnls_piece(double c, double a_lo, double a_hi, const NnlsWarpState& st,
                                const int* __restrict__ lo, const double* __restrict__ w_lo,
                                const double* __restrict__ w_hi, int n_freqs, double c0, double c1,
                                const NnlsPrior<T, kPrior> pr, int lane) {
    double value = 0.0, slope = 0.0, left = a_lo, right = a_hi;
    for (int j = lane; j < n_freqs; j += 32) {
        const double t = pr.z(j, rmatvec_bin(lo, w_lo, w_hi, st.mu, j));
        const double u = rmatvec_bin(lo, w_lo, w_hi, st.delta, j);
        const double su = pr.step(j, u);                 // z moves by su per unit of alpha
        const double x = t + c * su;
        value += relu(x) * u;
        if (x > 0.0 || (x == 0.0 && su > 0.0)) slope += su * u;  // active just right of c
        if (su != 0.0) {
            const double b = -t / su;
            if (b > a_lo && b <= c) left = fmax(left, b);
            if (b > c && b < a_hi) right = fmin(right, b);
        }
    }
    NnlsPiece piece;
    piece.value = warp_sum(value) + c0 + c * c1;
    piece.slope = warp_sum(slope) + c1;
    piece.left = warp_max(left);
    piece.right = warp_min(right);
    return piece;
}

template <typename T, bool kPrior>
__device__ void nnls_frame(const T* __restrict__ mel, long long f, int n_time, long long mel_sb,
                           long long mel_sk, long long mel_st, T* __restrict__ out,
                           long long out_sb, long long out_sj, long long out_st,
                           long long* __restrict__ iterations, double* __restrict__ kkt_out,
                           int n_mels, int n_freqs, const int* __restrict__ lo,
                           const double* __restrict__ w_lo, const double* __restrict__ w_hi,
                           const long long* __restrict__ row_start,
                           const double* __restrict__ start_inv_pivot,
                           const double* __restrict__ start_upper_scaled,
                           const double* __restrict__ start_upper, double eps, long long step_cap,
                           double tolerance_loss, double tolerance_change,
                           const NnlsWarpState& st, NnlsPrior<T, kPrior> pr, int lane) {
    const int n_words = (n_freqs + 31) / 32;

    // ---- load m, rescale it exactly by a power of two (max |m| in [0.5, 1)), ||m|| ----
    double m_max = 0.0;
    for (int k = lane; k < n_mels; k += 32) {
        const double v = static_cast<double>(mel[strided_index(f, k, n_time, mel_sb, mel_sk, mel_st)]);
        st.m[k] = v;
        m_max = fmax(m_max, fabs(v));
    }
    int exponent = 0;
    frexp(warp_max(m_max), &exponent);  // 0 for a zero frame
    double m_sq = 0.0;
    for (int k = lane; k < n_mels; k += 32) {  // each lane rescales the entries it loaded
        const double v = ldexp(st.m[k], -exponent);
        st.m[k] = v;
        m_sq += v * v;
    }
    if (lane == 0) {
        st.mu[n_mels] = 0.0;
        st.delta[n_mels] = 0.0;
    }
    const double m_norm = sqrt(warp_sum(m_sq));
    if constexpr (kPrior) {
        pr.f = f;
        pr.n_time = n_time;
        pr.exponent = exponent;
        double v_max = 0.0;
        for (int j = lane; j < n_freqs; j += 32) {
            v_max = fmax(v_max, static_cast<double>(pr.spread[pr.at(j)]));
        }
        pr.v_max = warp_max(v_max);
    }
    __syncwarp();

    long long it_count = 0;
    double kkt = 0.0;
    if constexpr (kPrior) {
      if (m_norm > 0.0) {
        // ---- mu_0 = (A diag(v) A.T + eps I)^-1 (m - A c 2^-e): per mel, then Thomas ----
        for (int k = lane; k < n_mels; k += 32) {
            double ac = 0.0, dg = 0.0, up = 0.0;
            for (long long j = row_start[k]; j < row_start[k + 1]; ++j) {       // lo[j] == k
                const int jj = static_cast<int>(j);
                const double v = pr.v(jj);
                ac += w_lo[j] * pr.c(jj);
                dg += (w_lo[j] * w_lo[j]) * v;
                up += (w_lo[j] * w_hi[j]) * v;
            }
            if (k > 0) {
                for (long long j = row_start[k - 1]; j < row_start[k]; ++j) {   // lo[j] == k-1
                    const int jj = static_cast<int>(j);
                    ac += w_hi[j] * pr.c(jj);
                    dg += (w_hi[j] * w_hi[j]) * pr.v(jj);
                }
            }
            st.F[k] = st.m[k] - ac;          // the right-hand side, in F until the loop fills it
            st.diag[k] = dg + eps;
            st.upper[k] = up;
        }
        __syncwarp();
        if (lane == 0) thomas_sweep(st.diag, st.upper, st.upper_scaled, st.F, st.mu, n_mels);
      }
    }
    if (m_norm > 0.0) {
        // ---- mu_0 = (A A.T + eps I)^-1 m with the cached factors (lane 0: sequential) ----
        if (lane == 0 && !kPrior) {
            double y = st.m[0] * start_inv_pivot[0];
            st.mu[0] = y;
            for (int k = 1; k < n_mels; ++k) {
                y = (st.m[k] - start_upper[k - 1] * y) * start_inv_pivot[k];
                st.mu[k] = y;
            }
            for (int k = n_mels - 2; k >= 0; --k) st.mu[k] -= start_upper_scaled[k] * st.mu[k + 1];
        }
        for (int w = lane; w < n_words; w += 32) st.mask_prev[w] = 0u;
        __syncwarp();

        bool exact = false;    // the last step was a full Newton step
        bool stalled = false;  // the last step moved nothing
        const double inf = __longlong_as_double(0x7ff0000000000000LL);
        double recent0 = inf, recent1 = inf, recent2 = inf;  // kkt of the last three iterates
        for (long long it = 0;; ++it) {
            // ---- d = (t > 0) as a bit mask; did it change since the last step? ----
            bool changed = false;
            for (int w = 0; w < n_words; ++w) {
                const int j = w * 32 + lane;
                const bool pos = j < n_freqs && pr.z(j, rmatvec_bin(lo, w_lo, w_hi, st.mu, j)) > 0.0;
                const unsigned word = __ballot_sync(CUMEL_FULL_MASK, pos);
                changed |= word != st.mask_prev[w];
                if (lane == 0) st.mask[w] = word;
            }
            __syncwarp();

            // ---- per mel k: (A s)_k, F_k, J's diag_k and upper_k (t recomputed from mu) ----
            double f_sq = 0.0;
            for (int k = lane; k < n_mels; k += 32) {
                double as = 0.0, dg = 0.0, up = 0.0;
                for (long long j = row_start[k]; j < row_start[k + 1]; ++j) {       // lo[j] == k
                    const int jj = static_cast<int>(j);
                    const double t = pr.z(jj, rmatvec_bin(lo, w_lo, w_hi, st.mu, jj));
                    if (t > 0.0) {
                        as += w_lo[j] * t;
                        if (kPrior) {
                            const double v = pr.v(jj);
                            dg += (w_lo[j] * w_lo[j]) * v;
                            up += (w_lo[j] * w_hi[j]) * v;
                        } else {
                            dg += w_lo[j] * w_lo[j];
                            up += w_lo[j] * w_hi[j];
                        }
                    }
                }
                if (k > 0) {
                    for (long long j = row_start[k - 1]; j < row_start[k]; ++j) {   // lo[j] == k-1
                        const int jj = static_cast<int>(j);
                        const double t = pr.z(jj, rmatvec_bin(lo, w_lo, w_hi, st.mu, jj));
                        if (t > 0.0) {
                            as += w_hi[j] * t;
                            if (kPrior) {
                                dg += (w_hi[j] * w_hi[j]) * pr.v(jj);
                            } else {
                                dg += w_hi[j] * w_hi[j];
                            }
                        }
                    }
                }
                const double F = as + eps * st.mu[k] - st.m[k];
                st.F[k] = F;
                st.diag[k] = dg + eps;
                st.upper[k] = up;
                f_sq += F * F;
            }
            kkt = sqrt(warp_sum(f_sq)) / m_norm;
            const bool any_changed = __any_sync(CUMEL_FULL_MASK, changed);
            // a non-finite frame stops too (the host then raises): it can never meet a rule.
            // Every operand is the same on all lanes, so the warp leaves together.
            const bool at_floor = kkt <= kFloorKkt &&
                                  kkt > kFloorRatio * fmin(recent0, fmin(recent1, recent2));
            recent2 = recent1;
            recent1 = recent0;
            recent0 = kkt;
            if (kkt <= tolerance_loss || !isfinite(kkt) || it == step_cap || stalled || at_floor ||
                (exact && !any_changed)) {
                break;
            }
            ++it_count;
            __syncwarp();

            // ---- delta = -J^-1 F: Thomas algorithm on lane 0 ----
            if (lane == 0) {
                thomas_sweep(st.diag, st.upper, st.upper_scaled, st.F, st.delta, n_mels);
                for (int k = 0; k < n_mels; ++k) st.delta[k] = -st.delta[k];
            }
            __syncwarp();

            // ---- line search on phi'(alpha) ----
            double c0_part = 0.0, c1_part = 0.0, slope_part = 0.0;
            for (int k = lane; k < n_mels; k += 32) {
                c0_part += (eps * st.mu[k] - st.m[k]) * st.delta[k];
                c1_part += st.delta[k] * st.delta[k];
                slope_part += st.F[k] * st.delta[k];
            }
            const double c0 = warp_sum(c0_part);
            const double c1 = eps * warp_sum(c1_part);
            const double slope0 = warp_sum(slope_part);  // phi'(0) = F.delta < 0
            double s_sq = 0.0, u_sq = 0.0, dphi1 = 0.0;
            for (int j = lane; j < n_freqs; j += 32) {
                const double t = pr.z(j, rmatvec_bin(lo, w_lo, w_hi, st.mu, j));
                const double u = rmatvec_bin(lo, w_lo, w_hi, st.delta, j);
                const double su = pr.step(j, u);
                const double s = relu(t);
                s_sq += s * s;
                u_sq += su * su;
                dphi1 += relu(t + su) * u;
            }
            s_sq = warp_sum(s_sq);
            u_sq = warp_sum(u_sq);
            const double hi_start = warp_sum(dphi1) + c0 + c1;
            double alpha = 1.0;
            // full step unless phi'(1) is clearly positive: at a converged Newton step phi'(1) is
            // a rounding-level +-1e-15 |phi'(0)|, and its sign must not pick the step (NumPy twin)
            const bool full = !(hi_start > kFullStepTie * fabs(slope0));
            if (!full) {
                double a_lo = 0.0, a_hi = 1.0;
                double lo_val = slope0;   // phi'(a_lo) <= 0
                double hi_val = hi_start; // phi'(a_hi) > 0
                alpha = -1.0;
                // every round ends the search or removes a breakpoint from the bracket
                for (int r = 0; r < n_freqs + 2 && alpha < 0.0; ++r) {
                    const double width = a_hi - a_lo;
                    const double step = hi_val - lo_val;
                    double c = step > 0.0 ? a_lo - lo_val * width / step : a_lo + 0.5 * width;
                    c = fmin(fmax(c, a_lo), a_hi);
                    const NnlsPiece p = nnls_piece<T, kPrior>(c, a_lo, a_hi, st, lo, w_lo, w_hi,
                                                              n_freqs, c0, c1, pr, lane);
                    const double root = c - p.value / p.slope;
                    if (root >= p.left && root <= p.right) {
                        alpha = root;                 // phi' is linear on [left, right]
                    } else if (a_hi <= a_lo) {
                        alpha = a_lo;                 // rounding left no room
                    } else if (p.value < 0.0) {
                        lo_val = p.value + p.slope * (p.right - c);
                        a_lo = p.right;
                    } else {
                        hi_val = p.value - p.slope * (c - p.left);
                        a_hi = p.left;
                    }
                }
                if (alpha < 0.0) alpha = a_lo;
            }

            // ---- step, remember d, stall check ----
            for (int k = lane; k < n_mels; k += 32) st.mu[k] += alpha * st.delta[k];
            for (int w = lane; w < n_words; w += 32) st.mask_prev[w] = st.mask[w];
            exact = full;
            // stalled: the step moves t by a negligible amount next to the answer s = max(t, 0)
            // (not next to ||t||: an inconsistent frame's clamped bins grow like residual / eps);
            // the frame stops at the top of the next pass, so kkt is the returned iterate's
            stalled = alpha * sqrt(u_sq) <= tolerance_change * sqrt(s_sq);
            __syncwarp();
        }
    } else {
        for (int k = lane; k <= n_mels; k += 32) st.mu[k] = 0.0;
        __syncwarp();
    }

    // ---- out = max(A.T mu, 0) (nnls_prior: max(z, 0)), every bin of the frame written ----
    for (int j = lane; j < n_freqs; j += 32) {
        double t = pr.z(j, rmatvec_bin(lo, w_lo, w_hi, st.mu, j));
        if (kPrior && !(m_norm > 0.0)) {    // m = 0: the free bins keep max(c, 0), the rest 0
            t = (w_lo[j] == 0.0 && w_hi[j] == 0.0) ? pr.c(j) : 0.0;
        }
        out[strided_index(f, j, n_time, out_sb, out_sj, out_st)] = static_cast<T>(ldexp(relu(t), exponent));
    }
    if (lane == 0) {
        iterations[f] = it_count;
        kkt_out[f] = kkt;
    }
    __syncwarp();
}

}  // namespace cumel

// Dynamic shared memory: warps_per_block * (7 * (n_mels + 1) doubles + 2 * ceil(n_freqs / 32)
// unsigned), laid out warp by warp (see cumel/cuda/launch.py: nnls_shared_bytes).
template <typename T>
__global__ void nnls_solve(const T* __restrict__ mel, long long n_frames, int n_time,
                           long long mel_sb, long long mel_sk, long long mel_st,
                           T* __restrict__ out, long long out_sb, long long out_sj,
                           long long out_st, long long* __restrict__ iterations,
                           double* __restrict__ kkt, int n_mels, int n_freqs,
                           const int* __restrict__ lo, const double* __restrict__ w_lo,
                           const double* __restrict__ w_hi, const long long* __restrict__ row_start,
                           const double* __restrict__ start_inv_pivot,
                           const double* __restrict__ start_upper_scaled,
                           const double* __restrict__ start_upper, double eps, long long step_cap,
                           double tolerance_loss, double tolerance_change) {
    extern __shared__ double cumel_shared[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    const cumel::NnlsWarpState st = cumel::nnls_warp_state(cumel_shared, warp, n_mels, n_freqs);
    const cumel::NnlsPrior<T, false> none{};
    const long long first = static_cast<long long>(blockIdx.x) * warps_per_block + warp;
    const long long stride = static_cast<long long>(gridDim.x) * warps_per_block;
    for (long long f = first; f < n_frames; f += stride) {
        cumel::nnls_frame<T, false>(mel, f, n_time, mel_sb, mel_sk, mel_st, out, out_sb, out_sj,
                                    out_st, iterations, kkt, n_mels, n_freqs, lo, w_lo, w_hi,
                                    row_start, start_inv_pivot, start_upper_scaled, start_upper,
                                    eps, step_cap, tolerance_loss, tolerance_change, st, none,
                                    lane);
    }
}

// The proximal variant: nnls_solve's arguments, then the centre and spread (B, n_freqs, T) with
// their common strides and the floor of the normalised spread. The start factors are unused
// (each frame factorises its own A diag(v) A.T + eps I); they stay in the list so that both
// kernels are launched alike.
template <typename T>
__global__ void nnls_prior(const T* __restrict__ mel, long long n_frames, int n_time,
                           long long mel_sb, long long mel_sk, long long mel_st,
                           T* __restrict__ out, long long out_sb, long long out_sj,
                           long long out_st, long long* __restrict__ iterations,
                           double* __restrict__ kkt, int n_mels, int n_freqs,
                           const int* __restrict__ lo, const double* __restrict__ w_lo,
                           const double* __restrict__ w_hi, const long long* __restrict__ row_start,
                           const double* __restrict__ start_inv_pivot,
                           const double* __restrict__ start_upper_scaled,
                           const double* __restrict__ start_upper, double eps, long long step_cap,
                           double tolerance_loss, double tolerance_change,
                           const T* __restrict__ center, const T* __restrict__ spread,
                           long long prior_sb, long long prior_sj, long long prior_st,
                           double floor) {
    extern __shared__ double cumel_shared[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    const cumel::NnlsWarpState st = cumel::nnls_warp_state(cumel_shared, warp, n_mels, n_freqs);
    cumel::NnlsPrior<T, true> prior{};
    prior.center = center;
    prior.spread = spread;
    prior.sb = prior_sb;
    prior.sj = prior_sj;
    prior.st = prior_st;
    prior.floor = floor;
    const long long first = static_cast<long long>(blockIdx.x) * warps_per_block + warp;
    const long long stride = static_cast<long long>(gridDim.x) * warps_per_block;
    for (long long f = first; f < n_frames; f += stride) {
        cumel::nnls_frame<T, true>(mel, f, n_time, mel_sb, mel_sk, mel_st, out, out_sb, out_sj,
                                   out_st, iterations, kkt, n_mels, n_freqs, lo, w_lo, w_hi,
                                   row_start, start_inv_pivot, start_upper_scaled, start_upper,
                                   eps, step_cap, tolerance_loss, tolerance_change, st, prior,
                                   lane);
    }
}


// Dynamic shared memory: warps_per_block * 4 * (n_mels + 1) doubles (rhs and solution, diag, upper,
// upper_scaled), warp by warp (cumel/cuda/launch.py: nnls_backward_shared_bytes).
template <typename T>
__global__ void nnls_backward(const T* __restrict__ s, long long s_sb, long long s_sj,
                              long long s_st, const T* __restrict__ g, long long g_sb,
                              long long g_sj, long long g_st, T* __restrict__ grad,
                              long long grad_sb, long long grad_sk, long long grad_st,
                              long long n_frames, int n_time, int n_mels, int n_freqs,
                              const int* __restrict__ lo, const double* __restrict__ w_lo,
                              const double* __restrict__ w_hi,
                              const long long* __restrict__ row_start, double eps) {
    extern __shared__ double cumel_shared[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    double* rhs = cumel_shared + static_cast<long long>(warp) * 4 * (n_mels + 1);
    double* diag = rhs + (n_mels + 1);
    double* upper = rhs + 2 * (n_mels + 1);
    double* upper_scaled = rhs + 3 * (n_mels + 1);
    const long long first = static_cast<long long>(blockIdx.x) * warps_per_block + warp;
    const long long stride = static_cast<long long>(gridDim.x) * warps_per_block;
    for (long long f = first; f < n_frames; f += stride) {
        // ---- per mel k: (A D g)_k and J's diag_k, upper_k over the active bins ----
        for (int k = lane; k < n_mels; k += 32) {
            double r = 0.0, dg = 0.0, up = 0.0;
            for (long long j = row_start[k]; j < row_start[k + 1]; ++j) {       // lo[j] == k
                const int jj = static_cast<int>(j);
                if (s[cumel::strided_index(f, jj, n_time, s_sb, s_sj, s_st)] > T(0)) {
                    r += w_lo[j] * static_cast<double>(g[cumel::strided_index(f, jj, n_time, g_sb,
                                                                               g_sj, g_st)]);
                    dg += w_lo[j] * w_lo[j];
                    up += w_lo[j] * w_hi[j];
                }
            }
            if (k > 0) {
                for (long long j = row_start[k - 1]; j < row_start[k]; ++j) {   // lo[j] == k-1
                    const int jj = static_cast<int>(j);
                    if (s[cumel::strided_index(f, jj, n_time, s_sb, s_sj, s_st)] > T(0)) {
                        r += w_hi[j] * static_cast<double>(g[cumel::strided_index(f, jj, n_time,
                                                                                   g_sb, g_sj, g_st)]);
                        dg += w_hi[j] * w_hi[j];
                    }
                }
            }
            rhs[k] = r;
            diag[k] = dg + eps;
            upper[k] = up;
        }
        __syncwarp();
        // ---- dL/dm = J^-1 rhs: Thomas on lane 0, in place ----
        if (lane == 0) cumel::thomas_sweep(diag, upper, upper_scaled, rhs, rhs, n_mels);
        __syncwarp();
        for (int k = lane; k < n_mels; k += 32) {
            grad[cumel::strided_index(f, k, n_time, grad_sb, grad_sk, grad_st)] = static_cast<T>(rhs[k]);
        }
        __syncwarp();
    }
}
