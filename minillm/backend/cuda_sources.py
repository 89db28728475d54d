"""The CUDA C source of minillm's kernels (compiled by CuPy on first use; see
:mod:`.cuda_kernels`, which launches them): the row kernels (softmax, cross-entropy, layer norm,
embedding backward, column sums) and the counter-based random numbers."""

# -- raw row kernels ------------------------------------------------------------------------------
# Common device code. acc_t (the arithmetic type) and the storage types x_t, y_t, o_t are
# typedefs put in front of it per compiled variant.
HELPERS = r"""
__device__ __forceinline__ acc_t ld(const float v) { return (acc_t)v; }
__device__ __forceinline__ acc_t ld(const double v) { return (acc_t)v; }
__device__ __forceinline__ acc_t ld(const unsigned short h) {      /* float16 bits -> float */
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return (acc_t)f;
}
__device__ __forceinline__ void st(float* p, const acc_t v) { *p = (float)v; }
__device__ __forceinline__ void st(double* p, const acc_t v) { *p = (double)v; }
__device__ __forceinline__ void st(unsigned short* p, const acc_t v) {  /* round to nearest */
    unsigned short h;
    const float f = (float)v;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    *p = h;
}
__device__ __forceinline__ float ex(const float v) { return expf(v); }
__device__ __forceinline__ double ex(const double v) { return exp(v); }
__device__ __forceinline__ float lg(const float v) { return logf(v); }
__device__ __forceinline__ double lg(const double v) { return log(v); }
__device__ __forceinline__ float sq(const float v) { return sqrtf(v); }
__device__ __forceinline__ double sq(const double v) { return sqrt(v); }

#define POS_INF ((acc_t)__int_as_float(0x7f800000))
#define NEG_INF (-POS_INF)
#define NOT_A_NUMBER ((acc_t)__int_as_float(0x7fc00000))

__device__ __forceinline__ acc_t warp_sum(acc_t v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ acc_t warp_max(acc_t v) {
    for (int o = 16; o > 0; o >>= 1) {
        const acc_t u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}
/* Sum (max) over the thread block; every thread gets the result. blockDim.x must be a
   multiple of 32 and every thread of the block must call it. red: __shared__ acc_t[32]. */
__device__ acc_t block_sum(acc_t v, acc_t* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();                 /* red may still be read by the previous reduction */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    return warp_sum(lane < n_warps ? red[lane] : (acc_t)0);
}
__device__ acc_t block_max(acc_t v, acc_t* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    return warp_max(lane < n_warps ? red[lane] : NEG_INF);
}
"""

# One thread block per row; row = blockIdx.x, its threads stride over the n_cols columns.
SOURCES = {
    # p = exp(s - m) / sum(exp(s - m)), m = row max. With masked_rows_zero a row without a
    # finite max (every entry masked to -inf) gives zeros, not NaN. x and y may be the same
    # array (in place): each thread reads x[j] and writes y[j] for its own j only, after the
    # last reduction.
    "softmax_fwd": r"""
extern "C" __global__ void minillm_softmax_fwd(const x_t* x, y_t* y, const int n_cols,
                                               const int masked_rows_zero) {
    __shared__ acc_t red[32];
    const long long off = (long long)blockIdx.x * n_cols;
    acc_t m = NEG_INF;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        const acc_t v = ld(x[off + j]);
        m = v > m ? v : m;
    }
    m = block_max(m, red);
    if (masked_rows_zero && !(m > NEG_INF && m < POS_INF)) m = (acc_t)0;
    acc_t s = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) s += ex(ld(x[off + j]) - m);
    s = block_sum(s, red);
    const acc_t inv = (acc_t)1 / (masked_rows_zero && s == (acc_t)0 ? (acc_t)1 : s);
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x)
        st(y + off + j, ex(ld(x[off + j]) - m) * inv);
}
""",
    # ds = p * (dp - sum_j dp_j p_j). dp and ds may be the same array (in place).
    "softmax_bwd": r"""
extern "C" __global__ void minillm_softmax_bwd(const x_t* dp, const y_t* p, o_t* ds,
                                               const int n_cols) {
    __shared__ acc_t red[32];
    const long long off = (long long)blockIdx.x * n_cols;
    acc_t s = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) s += ld(dp[off + j]) * ld(p[off + j]);
    s = block_sum(s, red);
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x)
        st(ds + off + j, (ld(dp[off + j]) - s) * ld(p[off + j]));
}
""",
    # p = softmax(z) (kept for the backward), lse = m + log(sum exp(z - m)),
    # loss = lse - z[t] (0 where t == ignore_index), with label smoothing eps:
    # (1 - eps) (lse - z[t]) + eps (lse - mean(z)).
    "xent_fwd": r"""
extern "C" __global__ void minillm_xent_fwd(const x_t* z, const long long* t, acc_t* p,
                                            acc_t* lse, acc_t* loss, const int n_cols,
                                            const long long ignore_index, const acc_t eps,
                                            const acc_t one_minus_eps) {
    __shared__ acc_t red[32];
    const long long row = blockIdx.x, off = row * n_cols;
    acc_t m = NEG_INF, zsum = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        const acc_t v = ld(z[off + j]);
        m = v > m ? v : m;
        zsum += v;
    }
    m = block_max(m, red);
    zsum = block_sum(zsum, red);
    acc_t s = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        const acc_t e = ex(ld(z[off + j]) - m);
        p[off + j] = e;
        s += e;
    }
    s = block_sum(s, red);
    const acc_t inv = (acc_t)1 / s;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) p[off + j] *= inv;  /* own j's */
    if (threadIdx.x == 0) {
        const acc_t l = lg(s) + m;
        const long long tg = t[row];
        acc_t out;
        if (tg == ignore_index) {
            out = (acc_t)0;
        } else if (tg < 0 || tg >= n_cols) {        /* reported by the caller's check */
            out = NOT_A_NUMBER;
        } else {
            out = l - ld(z[off + tg]);
            if (eps != (acc_t)0) out = one_minus_eps * out + eps * (l - zsum / (acc_t)n_cols);
        }
        lse[row] = l;
        loss[row] = out;
    }
}
""",
    # xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) (biased var), y = xhat * w + b.
    "layer_norm_fwd": r"""
extern "C" __global__ void minillm_layer_norm_fwd(const x_t* x, const x_t* w, const x_t* b,
                                                  x_t* y, acc_t* xhat, acc_t* rstd,
                                                  const int n_cols, const acc_t inv_n,
                                                  const acc_t eps, const int has_w,
                                                  const int has_b) {
    __shared__ acc_t red[32];
    const long long off = (long long)blockIdx.x * n_cols;
    acc_t s = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) s += ld(x[off + j]);
    const acc_t mean = block_sum(s, red) * inv_n;
    acc_t v = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        const acc_t d = ld(x[off + j]) - mean;
        v += d * d;
    }
    const acc_t r = (acc_t)1 / sq(block_sum(v, red) * inv_n + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        const acc_t h = (ld(x[off + j]) - mean) * r;
        xhat[off + j] = h;
        acc_t o = h;
        if (has_w) o *= ld(w[j]);
        if (has_b) o += ld(b[j]);
        st(y + off + j, o);
    }
}
""",
    # dxhat = g * w; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
    "layer_norm_bwd": r"""
extern "C" __global__ void minillm_layer_norm_bwd(const x_t* g, const acc_t* xhat,
                                                  const acc_t* rstd, const x_t* w, x_t* dx,
                                                  const int n_cols, const acc_t inv_n,
                                                  const int has_w) {
    __shared__ acc_t red[32];
    const long long off = (long long)blockIdx.x * n_cols;
    acc_t s1 = 0, s2 = 0;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        acc_t d = ld(g[off + j]);
        if (has_w) d *= ld(w[j]);
        s1 += d;
        s2 += d * xhat[off + j];
    }
    const acc_t m = block_sum(s1, red) * inv_n;
    const acc_t c = block_sum(s2, red) * inv_n;
    const acc_t r = rstd[blockIdx.x];
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        acc_t d = ld(g[off + j]);
        if (has_w) d *= ld(w[j]);
        st(dx + off + j, (d - (xhat[off + j] * c + m)) * r);
    }
}
""",
    # Deterministic embedding backward. r = the sorted row ids, order = the argsort that
    # sorted them. One thread per (position i, column c); the thread at the first position
    # of a run of equal ids sums that run's values of column c in sorted order and adds the
    # sum to target[row, c]. No two threads write the same element, so no atomics.
    "index_add_rows": r"""
extern "C" __global__ void minillm_index_add_rows(const long long* r, const long long* order,
                                                  const x_t* v, y_t* target,
                                                  const long long n, const int d,
                                                  const long long n_target_rows) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * d) return;
    const long long i = idx / d;
    const int c = (int)(idx - i * d);
    const long long row = r[i];
    if ((i > 0 && r[i - 1] == row) || row < 0 || row >= n_target_rows) return;
    acc_t s = 0;
    for (long long j = i; j < n && r[j] == row; ++j) s += ld(v[order[j] * d + c]);
    const long long o = row * d + c;
    st(target + o, ld(target[o]) + s);
}
""",
    # Column sums of g (rows, n_cols) and of g * h, over a tile of 32 columns x 8 row lanes:
    # threadIdx.x walks the columns (coalesced reads), threadIdx.y and blockIdx.y the rows.
    # Each block writes one partial row: part[blockIdx.y, c]; a second launch with one row
    # block (has_h = 0) sums the partials. Fixed order: deterministic.
    "column_sums": r"""
extern "C" __global__ void minillm_column_sums(const x_t* g, const y_t* h, acc_t* part_gh,
                                               acc_t* part_g, const long long n_rows,
                                               const int n_cols, const int has_h,
                                               const int need_g) {
    __shared__ acc_t s_gh[8][33], s_g[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    acc_t a_gh = 0, a_g = 0;
    if (c < n_cols) {
        for (long long r = (long long)blockIdx.y * 8 + threadIdx.y; r < n_rows;
             r += (long long)gridDim.y * 8) {
            const acc_t v = ld(g[r * n_cols + c]);
            if (has_h) a_gh += v * ld(h[r * n_cols + c]);
            a_g += v;
        }
    }
    s_gh[threadIdx.y][threadIdx.x] = a_gh;
    s_g[threadIdx.y][threadIdx.x] = a_g;
    __syncthreads();
    if (threadIdx.y == 0 && c < n_cols) {
        for (int k = 1; k < 8; ++k) {
            a_gh += s_gh[k][threadIdx.x];
            a_g += s_g[k][threadIdx.x];
        }
        if (has_h) part_gh[(long long)blockIdx.y * n_cols + c] = a_gh;
        if (need_g) part_g[(long long)blockIdx.y * n_cols + c] = a_g;
    }
}
""",
}


# splitmix64 (Steele, Lea & Flood 2014) on the counter i of a draw with a 64-bit key: the
# output of a SplitMix64 generator whose state after i + 1 steps is key + (i + 1) * gamma.
# Uniforms keep the top 24 (float32) or 53 (float64) bits: k / 2^24 or k / 2^53 in [0, 1).
RNG = r"""
__device__ __forceinline__ unsigned long long minillm_mix(const unsigned long long key,
                                                          const unsigned long long i) {
    unsigned long long z = key + (i + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float minillm_u24(const unsigned long long key,
                                             const unsigned long long i) {
    return (float)(minillm_mix(key, i) >> 40) * 5.9604644775390625e-08f;
}
__device__ __forceinline__ double minillm_u53(const unsigned long long key,
                                              const unsigned long long i) {
    return (double)(minillm_mix(key, i) >> 11) * 1.1102230246251565e-16;
}
"""
