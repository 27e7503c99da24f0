// Flash attention, forward and backward: f32 on CUDA cores (fp32 products,
// parity with the CPU backend), bf16 and f16 on tensor cores (wmma).
//
// No T x T matrix ever reaches memory. A block owns a tile of rows of one
// (batch, head) pair, split between its warps, and walks over the other
// side in tiles of columns held in shared memory:
//  - forward: rows are queries, columns keys; an online softmax keeps a
//    running max and sum per row and rescales the output accumulator, so
//    one pass over the keys gives out and lse (natural log, as the CPU
//    backend saves it);
//  - backward, FlashAttention-2 style, in three kernels: D = rowsum(dO * O)
//    into scratch; a key-owned pass (rows are keys, columns queries) that
//    recomputes P = exp(S - lse) and accumulates dV += P^T dO and
//    dK += dS^T Q; and a query-owned pass (rows are queries, columns keys)
//    that recomputes P and dP once more for dQ += dS K. Every gradient
//    element is summed by one thread (or one fragment) in a fixed order, so
//    results are the same bits run after run, with no atomics.
// Masked columns get probability 0, and rows past T are zero in shared
// memory, so a padded row or column adds exactly nothing.
//
// The f32 path: 32 rows per block, 8 per warp, tiles of 32 columns (one
// per lane), fp32 tiles in shared memory. Each lane owns output dims lane,
// lane + 32, ... (NI of them, HS <= 32 NI), which keeps any HS up to 128
// (DiT's 72 included) on one code path: tiles are padded to a multiple of 4
// with zeros for the float4 dot products, and a row stride of 4 mod 8 floats
// keeps the float4 reads of 8 lanes on distinct banks.
//
// Heads of 129..512 (a VAE's mid-block: one head of 512 over every pixel)
// take the same forward kernel with 4 rows per warp, in every dtype
// (att_forward_wide); backward stays at 128 (struct kbackend's
// max_head_size_backward).
#include "kernels/cuda/common.cuh"

#include <math.h>
#ifndef DIT_CUDA_EMU
#include <mma.h>
#endif

using namespace nvcuda;

namespace {

constexpr int ATT_WARPS = 4;
constexpr int ATT_ROWS = 8;                     // rows per warp
constexpr int ATT_BR = ATT_WARPS * ATT_ROWS;    // rows per block
constexpr int ATT_BC = 32;                      // columns per tile: one per lane
constexpr int ATT_THREADS = ATT_WARPS * 32;
constexpr int ATT_MAX_HS = 128;          // backward, and the forward's usual paths
constexpr int ATT_WIDE_ROWS = 4;         // rows per warp of the wide-head forward
constexpr int ATT_WIDE_BR = ATT_WARPS * ATT_WIDE_ROWS;
constexpr int ATT_MAX_HS_WIDE = 512;     // the forward's wide-head path
constexpr float ATT_LOG2E = 1.4426950408889634f;
constexpr float ATT_LN2 = 0.69314718055994531f;

// Floats between rows of a tile in shared memory: >= HS rounded up to 4,
// and 4 mod 8, so that lanes 0..7 reading float4s at the same column of
// consecutive rows hit 8 different groups of 4 banks.
__host__ __device__ inline int att_ld(int HS)
{
    return ((HS + 7) & ~7) + 4;
}

__host__ __device__ inline int att_hs4(int HS)
{
    return (HS + 3) & ~3;
}

// 16 bytes of storage elements: a vectorised load of any dtype.
template <typename T> struct alignas(16) att_pack {
    T v[16 / sizeof(T)];
};

// dst[rows][LD] (shared, fp32) = rows t0.. of a head slice src[T][HS] whose
// rows are `stride` elements apart, zero past row T and in the pad columns
// up to HS rounded to 4: the zeros keep masked probabilities (0) times
// values finite. vec: HS, stride and src are 16-byte aligned in elements.
template <typename T>
__device__ void att_load_tile(float *dst, const T *src, int t0, int Tn, int64_t stride, int HS,
                              int LD, int rows, bool vec)
{
    if (vec) {
        constexpr int V = 16 / sizeof(T);
        const int per_row = HS / V;
        for (int idx = threadIdx.x; idx < rows * per_row; idx += blockDim.x) {
            const int r = idx / per_row, c = (idx - r * per_row) * V;
            float *d = dst + r * LD + c;
            if (t0 + r < Tn) {
                const att_pack<T> p =
                    ld_vec<att_pack<T>>(src + (int64_t)(t0 + r) * stride + c);
#pragma unroll
                for (int k = 0; k < V; k += 4)
                    st_vec(d + k, make_float4(ld(p.v[k]), ld(p.v[k + 1]), ld(p.v[k + 2]),
                                              ld(p.v[k + 3])));
            } else {
#pragma unroll
                for (int k = 0; k < V; k += 4)
                    st_vec(d + k, make_float4(0.f, 0.f, 0.f, 0.f));
            }
        }
        return; // HS is a multiple of V >= 4: no pad columns
    }
    const int HS4 = att_hs4(HS);
    for (int idx = threadIdx.x; idx < rows * HS4; idx += blockDim.x) {
        const int r = idx / HS4, c = idx - r * HS4;
        float v = 0.0f;
        if (t0 + r < Tn && c < HS)
            v = ld(src[(int64_t)(t0 + r) * stride + c]);
        dst[r * LD + c] = v;
    }
}

// acc[r] = A[r] . b over HS4 columns: R rows of A (LD apart) against one row
// b, both in shared memory.
template <int R>
__device__ __forceinline__ void att_dot_rows(const float *A, const float *b, int HS4, int LD,
                                             float acc[R])
{
#pragma unroll
    for (int r = 0; r < R; r++)
        acc[r] = 0.0f;
    for (int d = 0; d < HS4; d += 4) {
        const float4 bv = ld_vec<float4>(b + d);
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float4 av = ld_vec<float4>(A + r * LD + d);
            float s = acc[r];
            s = fmaf(av.x, bv.x, s);
            s = fmaf(av.y, bv.y, s);
            s = fmaf(av.z, bv.z, s);
            s = fmaf(av.w, bv.w, s);
            acc[r] = s;
        }
    }
}

// acc[r][n] += sum_j W[r][j] * X[j][lane + 32 n] over the 32 columns j of a
// tile: W [R][32] this warp's weights, X [32][LD] the tile, in shared memory.
// Lanes past HS read column HS - 1 and their sums are never stored.
template <int R, int NI>
__device__ __forceinline__ void att_accum(const float *W, const float *X, int LD, int HS,
                                          float acc[R][NI])
{
    const int lane = threadIdx.x & 31;
    int col[NI];
#pragma unroll
    for (int n = 0; n < NI; n++)
        col[n] = min(lane + 32 * n, HS - 1);
#pragma unroll 2
    for (int j = 0; j < ATT_BC; j += 4) {
        float4 w[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            w[r] = ld_vec<float4>(W + r * ATT_BC + j);
        float x[4][NI];
#pragma unroll
        for (int jj = 0; jj < 4; jj++)
#pragma unroll
            for (int n = 0; n < NI; n++)
                x[jj][n] = X[(j + jj) * LD + col[n]];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int n = 0; n < NI; n++) {
                float a = acc[r][n];
                a = fmaf(w[r].x, x[0][n], a);
                a = fmaf(w[r].y, x[1][n], a);
                a = fmaf(w[r].z, x[2][n], a);
                a = fmaf(w[r].w, x[3][n], a);
                acc[r][n] = a;
            }
    }
}

// Stores R rows of NI-per-lane accumulators times `mul` into rows row0.. of
// a head slice dst (rows `stride` apart), skipping rows past T and dims
// past HS.
template <typename T, int R, int NI>
__device__ __forceinline__ void att_store_rows(T *dst, int64_t stride, int row0, int Tn, int HS,
                                               const float acc[R][NI], const float mul[R])
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (row0 + r >= Tn)
            break;
#pragma unroll
        for (int n = 0; n < NI; n++) {
            const int d = lane + 32 * n;
            if (d < HS)
                dst[(int64_t)(row0 + r) * stride + d] = st<T>(acc[r][n] * mul[r]);
        }
    }
}

// ---- forward ----------------------------------------------------------

// Block = ATT_WARPS * R queries of one (b, h); grid = B * NH * query
// tiles. R = ATT_ROWS up to head size 128; the wide heads (up to 512, NI
// 16) take R = ATT_WIDE_ROWS, which keeps the Q, K and V tiles within
// shared memory and the R x NI accumulators within registers.
template <typename T, int NI, int R = ATT_ROWS>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_forward_kernel(T *out, float *lse, const T *qkv, int Tn, int C, int NH, int HS,
                        float scale_log2, int vec)
{
    constexpr int BR = ATT_WARPS * R;
    DYNAMIC_SMEM(float, smem);
    const int LD = att_ld(HS), HS4 = att_hs4(HS);
    float *Qs = smem, *Ks = Qs + BR * LD, *Vs = Ks + ATT_BC * LD, *Ps = Vs + ATT_BC * LD;
    const int tiles = (Tn + BR - 1) / BR;
    const int bh = blockIdx.x / tiles, q0 = (blockIdx.x - bh * tiles) * BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t C3 = 3 * (int64_t)C;
    const T *Q = qkv + (int64_t)b * Tn * C3 + (int64_t)h * HS;
    const T *K = Q + C, *V = Q + 2 * (int64_t)C;

    att_load_tile(Qs, Q, q0, Tn, C3, HS, LD, BR, vec);
    const float *Qw = Qs + warp * R * LD;
    float *Pw = Ps + warp * R * ATT_BC;

    // m: running max of the scores in log2 units; l: this lane's share of
    // the running sum (summed over the warp once, at the end).
    float m[R], l[R], o[R][NI];
#pragma unroll
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int n = 0; n < NI; n++)
            o[r][n] = 0.0f;
    }

    for (int k0 = 0; k0 < Tn; k0 += ATT_BC) {
        __syncthreads(); // the last tile is read by every warp (and Q is in)
        att_load_tile(Ks, K, k0, Tn, C3, HS, LD, ATT_BC, vec);
        att_load_tile(Vs, V, k0, Tn, C3, HS, LD, ATT_BC, vec);
        __syncthreads();
        float s[R];
        att_dot_rows<R>(Qw, Ks + lane * LD, HS4, LD, s);
        const bool valid = k0 + lane < Tn;
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float x = valid ? s[r] * scale_log2 : -INFINITY;
            // Every tile holds a valid key, so mnew is finite; the first
            // tile's correction is exp2(-inf) = 0 on zero accumulators.
            const float mnew = fmaxf(m[r], warp_max(x));
            const float corr = exp2f(m[r] - mnew);
            const float p = exp2f(x - mnew);
            m[r] = mnew;
            l[r] = fmaf(l[r], corr, p);
#pragma unroll
            for (int n = 0; n < NI; n++)
                o[r][n] *= corr;
            Pw[r * ATT_BC + lane] = p;
        }
        __syncwarp();
        att_accum<R, NI>(Pw, Vs, LD, HS, o);
        __syncwarp(); // P is read by every lane before the next tile's write
    }

    const int row0 = q0 + warp * R;
    float inv[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float sum = warp_sum(l[r]);
        inv[r] = 1.0f / sum;
        if (lane == 0 && row0 + r < Tn)
            lse[(int64_t)bh * Tn + row0 + r] = (m[r] + log2f(sum)) * ATT_LN2;
    }
    att_store_rows<T, R, NI>(out + (int64_t)b * Tn * C + (int64_t)h * HS, C, row0, Tn, HS, o,
                             inv);
}

// Empty heads (HS = 0): every score is 0, so the softmax is uniform.
__global__ void attn_lse_uniform_kernel(float *lse, int64_t n, float value)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        lse[i] = value;
}

// ---- backward ---------------------------------------------------------

// D[b, h, t] = dO . O over the head's dims: one warp per (b, t, h).
template <typename T>
__global__ void attn_rowdot_kernel(float *D, const T *dout, const T *out, int B, int Tn, int C,
                                   int NH, int HS)
{
    const int lane = threadIdx.x & 31;
    const int64_t rows = (int64_t)B * Tn * NH;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t w = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); w < rows;
         w += warps) {
        const int h = (int)(w % NH);
        const int64_t bt = w / NH, b = bt / Tn, t = bt - b * Tn;
        const int64_t off = bt * C + (int64_t)h * HS;
        float s = 0.0f;
        for (int d = lane; d < HS; d += 32)
            s = fmaf(ld(dout[off + d]), ld(out[off + d]), s);
        s = warp_sum(s);
        if (lane == 0)
            D[(b * NH + h) * Tn + t] = s;
    }
}

// dK and dV of ATT_BR keys of one (b, h): loops over every query tile.
template <typename T, int NI>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_backward_kv_kernel(T *dqkv, const T *dout, const float *lse, const float *Dg,
                            const T *qkv, int Tn, int C, int NH, int HS, float scale,
                            float scale_log2, int vec, int vec_out)
{
    DYNAMIC_SMEM(float, smem);
    const int LD = att_ld(HS), HS4 = att_hs4(HS);
    float *Ks = smem, *Vs = Ks + ATT_BR * LD, *Qs = Vs + ATT_BR * LD, *dOs = Qs + ATT_BC * LD;
    float *Ps = dOs + ATT_BC * LD, *dSs = Ps + ATT_BR * ATT_BC;
    float *lse2s = dSs + ATT_BR * ATT_BC, *Ds = lse2s + ATT_BC;
    const int tiles = (Tn + ATT_BR - 1) / ATT_BR;
    const int bh = blockIdx.x / tiles, k0 = (blockIdx.x - bh * tiles) * ATT_BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t C3 = 3 * (int64_t)C;
    const T *Q = qkv + (int64_t)b * Tn * C3 + (int64_t)h * HS;
    const T *K = Q + C, *V = Q + 2 * (int64_t)C;
    const T *dO = dout + (int64_t)b * Tn * C + (int64_t)h * HS;
    const float *lse_bh = lse + (int64_t)bh * Tn, *D_bh = Dg + (int64_t)bh * Tn;

    att_load_tile(Ks, K, k0, Tn, C3, HS, LD, ATT_BR, vec);
    att_load_tile(Vs, V, k0, Tn, C3, HS, LD, ATT_BR, vec);
    const float *Kw = Ks + warp * ATT_ROWS * LD, *Vw = Vs + warp * ATT_ROWS * LD;
    float *Pw = Ps + warp * ATT_ROWS * ATT_BC, *dSw = dSs + warp * ATT_ROWS * ATT_BC;

    float dk[ATT_ROWS][NI], dv[ATT_ROWS][NI];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++)
#pragma unroll
        for (int n = 0; n < NI; n++)
            dk[r][n] = dv[r][n] = 0.0f;

    for (int i0 = 0; i0 < Tn; i0 += ATT_BC) {
        __syncthreads();
        att_load_tile(Qs, Q, i0, Tn, C3, HS, LD, ATT_BC, vec);
        att_load_tile(dOs, dO, i0, Tn, (int64_t)C, HS, LD, ATT_BC, vec_out);
        if (threadIdx.x < ATT_BC) {
            const int i = i0 + threadIdx.x;
            // A query past T gets lse = +inf: its probabilities are 0.
            lse2s[threadIdx.x] = i < Tn ? lse_bh[i] * ATT_LOG2E : INFINITY;
            Ds[threadIdx.x] = i < Tn ? D_bh[i] : 0.0f;
        }
        __syncthreads();
        float s[ATT_ROWS], dp[ATT_ROWS];
        att_dot_rows<ATT_ROWS>(Kw, Qs + lane * LD, HS4, LD, s);
        att_dot_rows<ATT_ROWS>(Vw, dOs + lane * LD, HS4, LD, dp);
        const float l2 = lse2s[lane], Di = Ds[lane];
#pragma unroll
        for (int r = 0; r < ATT_ROWS; r++) {
            const float p = exp2f(fmaf(s[r], scale_log2, -l2));
            Pw[r * ATT_BC + lane] = p;
            dSw[r * ATT_BC + lane] = p * (dp[r] - Di);
        }
        __syncwarp();
        att_accum<ATT_ROWS, NI>(Pw, dOs, LD, HS, dv);
        att_accum<ATT_ROWS, NI>(dSw, Qs, LD, HS, dk);
        __syncwarp();
    }

    const int row0 = k0 + warp * ATT_ROWS;
    float one[ATT_ROWS], sc[ATT_ROWS];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        one[r] = 1.0f;
        sc[r] = scale;
    }
    T *dK = dqkv + (int64_t)b * Tn * C3 + C + (int64_t)h * HS;
    att_store_rows<T, ATT_ROWS, NI>(dK, C3, row0, Tn, HS, dk, sc);
    att_store_rows<T, ATT_ROWS, NI>(dK + C, C3, row0, Tn, HS, dv, one);
}

// dQ of ATT_BR queries of one (b, h): loops over every key tile.
template <typename T, int NI>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_backward_q_kernel(T *dqkv, const T *dout, const float *lse, const float *Dg,
                           const T *qkv, int Tn, int C, int NH, int HS, float scale,
                           float scale_log2, int vec, int vec_out)
{
    DYNAMIC_SMEM(float, smem);
    const int LD = att_ld(HS), HS4 = att_hs4(HS);
    float *Qs = smem, *dOs = Qs + ATT_BR * LD, *Ks = dOs + ATT_BR * LD, *Vs = Ks + ATT_BC * LD;
    float *dSs = Vs + ATT_BC * LD;
    const int tiles = (Tn + ATT_BR - 1) / ATT_BR;
    const int bh = blockIdx.x / tiles, q0 = (blockIdx.x - bh * tiles) * ATT_BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t C3 = 3 * (int64_t)C;
    const T *Q = qkv + (int64_t)b * Tn * C3 + (int64_t)h * HS;
    const T *K = Q + C, *V = Q + 2 * (int64_t)C;
    const T *dO = dout + (int64_t)b * Tn * C + (int64_t)h * HS;

    att_load_tile(Qs, Q, q0, Tn, C3, HS, LD, ATT_BR, vec);
    att_load_tile(dOs, dO, q0, Tn, (int64_t)C, HS, LD, ATT_BR, vec_out);
    const float *Qw = Qs + warp * ATT_ROWS * LD, *dOw = dOs + warp * ATT_ROWS * LD;
    float *dSw = dSs + warp * ATT_ROWS * ATT_BC;
    const int row0 = q0 + warp * ATT_ROWS;

    float l2[ATT_ROWS], Dr[ATT_ROWS], dq[ATT_ROWS][NI];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        const int i = min(row0 + r, Tn - 1); // rows past T are computed, never stored
        l2[r] = lse[(int64_t)bh * Tn + i] * ATT_LOG2E;
        Dr[r] = Dg[(int64_t)bh * Tn + i];
#pragma unroll
        for (int n = 0; n < NI; n++)
            dq[r][n] = 0.0f;
    }

    for (int k0 = 0; k0 < Tn; k0 += ATT_BC) {
        __syncthreads();
        att_load_tile(Ks, K, k0, Tn, C3, HS, LD, ATT_BC, vec);
        att_load_tile(Vs, V, k0, Tn, C3, HS, LD, ATT_BC, vec);
        __syncthreads();
        float s[ATT_ROWS], dp[ATT_ROWS];
        att_dot_rows<ATT_ROWS>(Qw, Ks + lane * LD, HS4, LD, s);
        att_dot_rows<ATT_ROWS>(dOw, Vs + lane * LD, HS4, LD, dp);
        const bool valid = k0 + lane < Tn;
#pragma unroll
        for (int r = 0; r < ATT_ROWS; r++) {
            const float p = valid ? exp2f(fmaf(s[r], scale_log2, -l2[r])) : 0.0f;
            dSw[r * ATT_BC + lane] = p * (dp[r] - Dr[r]);
        }
        __syncwarp();
        att_accum<ATT_ROWS, NI>(dSw, Ks, LD, HS, dq);
        __syncwarp();
    }

    float sc[ATT_ROWS];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++)
        sc[r] = scale;
    att_store_rows<T, ATT_ROWS, NI>(dqkv + (int64_t)b * Tn * C3 + (int64_t)h * HS, C3, row0, Tn,
                                    HS, dq, sc);
}

// ---- tensor cores, for bf16 and f16 storage ---------------------------
//
// The same three passes with the products on wmma m16n16k16 (inputs in the
// storage dtype, fp32 accumulators): 64 rows per block, 16 per warp, and
// column tiles of 64. Tiles stay in the storage dtype in shared memory,
// head dims padded with zeros to HSP = 16 NB. Each warp stores its fp32
// score tiles to shared memory, where lane pairs (one row, alternate pairs
// of columns) do the softmax or dS in fp32 and write the probabilities
// back in the storage dtype for the next product, as FlashAttention-2 does
// in registers. Only fill, load, store and mma touch fragments: the
// element-to-lane mapping of a fragment is unspecified. wmma pointers must
// be 32-byte aligned: these kernels have no static shared memory, so the
// dynamic buffer starts at the window's base, and every region and warp
// slice below is a whole number of 32 bytes.

constexpr int TC_WARPS = 4;
constexpr int TC_BR = 16 * TC_WARPS; // rows per block
constexpr int TC_BC = 64;            // columns per tile
constexpr int TC_THREADS = 32 * TC_WARPS;
constexpr int TC_LDP = TC_BC + 8;    // storage elements between rows of a P tile

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> tc_acc;
template <typename T> using tc_a = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T> using tc_bt = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
template <typename T> using tc_b = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;

// Storage elements between rows of a [rows][HSP] tile: a multiple of 8 (wmma's
// ldm) that is 16 bytes off a multiple of 32, so the 8 rows of a fragment
// load fall on different banks.
template <int NB> struct tc_dims {
    static constexpr int HSP = 16 * NB;
    static constexpr int LDT = HSP + 8;
    // floats between rows of a warp's fp32 tile: scores (forward), or scores
    // and dP side by side (backward), or a [16][HSP] result
    static constexpr int LDF1 = (HSP > TC_BC ? HSP : TC_BC) + 4;
    static constexpr int LDF2 = (HSP > 2 * TC_BC ? HSP : 2 * TC_BC) + 4;
};

// dst[rows][LDT] (shared, storage dtype) = rows t0.. of a head slice, zero
// past row T and in the columns HS..HSP.
template <typename T>
__device__ void tc_load_tile(T *dst, const T *src, int t0, int Tn, int64_t stride, int HS,
                             int HSP, int LDT, int rows, bool vec)
{
    if (vec) {
        constexpr int V = 16 / sizeof(T);
        const int per_row = HSP / V; // HS and HSP are multiples of V
        const int real = HS / V;
        att_pack<T> zero;
#pragma unroll
        for (int k = 0; k < V; k++)
            zero.v[k] = st<T>(0.0f);
        for (int idx = threadIdx.x; idx < rows * per_row; idx += blockDim.x) {
            const int r = idx / per_row, cv = idx - r * per_row;
            att_pack<T> p = zero;
            if (t0 + r < Tn && cv < real)
                p = ld_vec<att_pack<T>>(src + (int64_t)(t0 + r) * stride + cv * V);
            st_vec(dst + r * LDT + cv * V, p);
        }
        return;
    }
    for (int idx = threadIdx.x; idx < rows * HSP; idx += blockDim.x) {
        const int r = idx / HSP, c = idx - r * HSP;
        T v = st<T>(0.0f);
        if (t0 + r < Tn && c < HS)
            v = src[(int64_t)(t0 + r) * stride + c];
        dst[r * LDT + c] = v;
    }
}

// acc[j] (j < N) = A[16][16 NB] B[16 N][16 NB]^T: A this warp's rows, B a tile
// of rows, both [rows][LDT] in shared memory.
template <typename T, int NB, int N>
__device__ __forceinline__ void tc_abt(tc_acc acc[N], const T *A, const T *B, int LDT)
{
#pragma unroll
    for (int j = 0; j < N; j++)
        wmma::fill_fragment(acc[j], 0.0f);
#pragma unroll
    for (int kb = 0; kb < NB; kb++) {
        tc_a<T> a;
        wmma::load_matrix_sync(a, A + kb * 16, LDT);
#pragma unroll
        for (int j = 0; j < N; j++) {
            tc_bt<T> b;
            wmma::load_matrix_sync(b, B + j * 16 * LDT + kb * 16, LDT);
            wmma::mma_sync(acc[j], a, b, acc[j]);
        }
    }
}

// acc[d] += W[16][TC_BC] X[TC_BC][16 NB]: W a warp's P or dS tile (TC_LDP
// apart), X a tile of rows (LDT apart), both in shared memory.
template <typename T, int NB>
__device__ __forceinline__ void tc_ab(tc_acc acc[NB], const T *W, const T *X, int LDT)
{
#pragma unroll
    for (int kb = 0; kb < TC_BC / 16; kb++) {
        tc_a<T> a;
        wmma::load_matrix_sync(a, W + kb * 16, TC_LDP);
#pragma unroll
        for (int d = 0; d < NB; d++) {
            tc_b<T> b;
            wmma::load_matrix_sync(b, X + kb * 16 * LDT + d * 16, LDT);
            wmma::mma_sync(acc[d], a, b, acc[d]);
        }
    }
}

// Stores a warp's [16][HS] result (acc, via its fp32 tile F) times mul into
// rows row0.. of a head slice (rows `stride` apart), coalesced.
template <typename T, int NB>
__device__ __forceinline__ void tc_store_rows(T *dst, int64_t stride, int row0, int Tn, int HS,
                                              tc_acc acc[NB], float *F, int LDF, float mul)
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int d = 0; d < NB; d++)
        wmma::store_matrix_sync(F + d * 16, acc[d], LDF, wmma::mem_row_major);
    __syncwarp();
    for (int idx = lane; idx < 16 * HS; idx += 32) {
        const int r = idx / HS, c = idx - r * HS;
        if (row0 + r < Tn)
            dst[(int64_t)(row0 + r) * stride + c] = st<T>(F[r * LDF + c] * mul);
    }
}

template <typename T, int NB> size_t tc_forward_smem()
{
    typedef tc_dims<NB> D;
    return sizeof(T) * ((size_t)(TC_BR + 2 * TC_BC) * D::LDT + TC_BR * TC_LDP) +
           sizeof(float) * TC_BR * D::LDF1;
}

template <typename T, int NB> size_t tc_backward_kv_smem()
{
    typedef tc_dims<NB> D;
    return sizeof(T) * ((size_t)(2 * TC_BR + 2 * TC_BC) * D::LDT + 2 * TC_BR * TC_LDP) +
           sizeof(float) * ((size_t)TC_BR * D::LDF2 + 2 * TC_BC);
}

template <typename T, int NB> size_t tc_backward_q_smem()
{
    typedef tc_dims<NB> D;
    return sizeof(T) * ((size_t)(2 * TC_BR + 2 * TC_BC) * D::LDT + TC_BR * TC_LDP) +
           sizeof(float) * TC_BR * D::LDF2;
}

template <typename T, int NB>
__global__ void __launch_bounds__(TC_THREADS)
    attn_forward_tc_kernel(T *out, float *lse, const T *qkv, int Tn, int C, int NH, int HS,
                           float scale_log2, int vec)
{
    typedef tc_dims<NB> D;
    constexpr int LDT = D::LDT, LDF = D::LDF1;
    DYNAMIC_SMEM(float, smem);
    // every region a multiple of 32 bytes, as wmma pointers must be aligned
    float *Fs = smem;
    T *Qs = reinterpret_cast<T *>(Fs + TC_BR * LDF);
    T *Ks = Qs + TC_BR * LDT, *Vs = Ks + TC_BC * LDT, *Ps = Vs + TC_BC * LDT;
    const int tiles = (Tn + TC_BR - 1) / TC_BR;
    const int bh = blockIdx.x / tiles, q0 = (blockIdx.x - bh * tiles) * TC_BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = lane >> 1, half = lane & 1; // this lane's row, and its columns
    const int64_t C3 = 3 * (int64_t)C;
    const T *Q = qkv + (int64_t)b * Tn * C3 + (int64_t)h * HS;
    const T *K = Q + C, *V = Q + 2 * (int64_t)C;
    float *Fw = Fs + warp * 16 * LDF;
    T *Pw = Ps + warp * 16 * TC_LDP;
    const T *Qw = Qs + warp * 16 * LDT;

    tc_load_tile(Qs, Q, q0, Tn, C3, HS, D::HSP, LDT, TC_BR, vec);

    // This lane's part of its row: columns 4i + 2 half + {0, 1}.
    float m = -INFINITY, l = 0.0f, o[D::HSP / 2];
#pragma unroll
    for (int i = 0; i < D::HSP / 2; i++)
        o[i] = 0.0f;

    for (int k0 = 0; k0 < Tn; k0 += TC_BC) {
        __syncthreads();
        tc_load_tile(Ks, K, k0, Tn, C3, HS, D::HSP, LDT, TC_BC, vec);
        tc_load_tile(Vs, V, k0, Tn, C3, HS, D::HSP, LDT, TC_BC, vec);
        __syncthreads();
        {
            tc_acc acc[TC_BC / 16];
            tc_abt<T, NB, TC_BC / 16>(acc, Qw, Ks, LDT);
#pragma unroll
            for (int j = 0; j < TC_BC / 16; j++)
                wmma::store_matrix_sync(Fw + j * 16, acc[j], LDF, wmma::mem_row_major);
        }
        __syncwarp();
        float s[TC_BC / 2];
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < TC_BC / 4; i++) {
            const int c = 4 * i + 2 * half;
            const float2 v = ld_vec<float2>(Fw + row * LDF + c);
            s[2 * i] = k0 + c < Tn ? v.x * scale_log2 : -INFINITY;
            s[2 * i + 1] = k0 + c + 1 < Tn ? v.y * scale_log2 : -INFINITY;
            mx = fmaxf(mx, fmaxf(s[2 * i], s[2 * i + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float mnew = fmaxf(m, mx); // finite: every tile has a valid key
        const float corr = exp2f(m - mnew);
        float psum = 0.0f;
#pragma unroll
        for (int i = 0; i < TC_BC / 4; i++) {
            const int c = 4 * i + 2 * half;
            const float p0 = exp2f(s[2 * i] - mnew), p1 = exp2f(s[2 * i + 1] - mnew);
            psum += p0 + p1;
            Pw[row * TC_LDP + c] = st<T>(p0);
            Pw[row * TC_LDP + c + 1] = st<T>(p1);
        }
        m = mnew;
        l = fmaf(l, corr, psum);
        __syncwarp();
        {
            tc_acc acc[NB];
#pragma unroll
            for (int d = 0; d < NB; d++)
                wmma::fill_fragment(acc[d], 0.0f);
            tc_ab<T, NB>(acc, Pw, Vs, LDT);
#pragma unroll
            for (int d = 0; d < NB; d++)
                wmma::store_matrix_sync(Fw + d * 16, acc[d], LDF, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < D::HSP / 4; i++) {
            const float2 v = ld_vec<float2>(Fw + row * LDF + 4 * i + 2 * half);
            o[2 * i] = fmaf(o[2 * i], corr, v.x);
            o[2 * i + 1] = fmaf(o[2 * i + 1], corr, v.y);
        }
        __syncwarp();
    }

    const float sum = l + __shfl_xor_sync(0xffffffffu, l, 1);
    const int t = q0 + warp * 16 + row;
    if (t < Tn) {
        const float inv = 1.0f / sum;
        T *dst = out + ((int64_t)b * Tn + t) * C + (int64_t)h * HS;
#pragma unroll
        for (int i = 0; i < D::HSP / 4; i++) {
            const int c = 4 * i + 2 * half;
            if (c < HS)
                dst[c] = st<T>(o[2 * i] * inv);
            if (c + 1 < HS)
                dst[c + 1] = st<T>(o[2 * i + 1] * inv);
        }
        if (half == 0)
            lse[(int64_t)bh * Tn + t] = (m + log2f(sum)) * ATT_LN2;
    }
}

// dK and dV of 64 keys of one (b, h), over every query tile.
template <typename T, int NB>
__global__ void __launch_bounds__(TC_THREADS)
    attn_backward_kv_tc_kernel(T *dqkv, const T *dout, const float *lse, const float *Dg,
                               const T *qkv, int Tn, int C, int NH, int HS, float scale,
                               float scale_log2, int vec, int vec_out)
{
    typedef tc_dims<NB> D;
    constexpr int LDT = D::LDT, LDF = D::LDF2;
    DYNAMIC_SMEM(float, smem);
    float *Fs = smem, *lse2s = Fs + TC_BR * LDF, *Ds = lse2s + TC_BC;
    T *Ks = reinterpret_cast<T *>(Ds + TC_BC);
    T *Vs = Ks + TC_BR * LDT, *Qs = Vs + TC_BR * LDT, *dOs = Qs + TC_BC * LDT;
    T *Ps = dOs + TC_BC * LDT, *dSs = Ps + TC_BR * TC_LDP;
    const int tiles = (Tn + TC_BR - 1) / TC_BR;
    const int bh = blockIdx.x / tiles, k0 = (blockIdx.x - bh * tiles) * TC_BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = lane >> 1, half = lane & 1;
    const int64_t C3 = 3 * (int64_t)C;
    const T *Q = qkv + (int64_t)b * Tn * C3 + (int64_t)h * HS;
    const T *K = Q + C, *V = Q + 2 * (int64_t)C;
    const T *dO = dout + (int64_t)b * Tn * C + (int64_t)h * HS;
    const float *lse_bh = lse + (int64_t)bh * Tn, *D_bh = Dg + (int64_t)bh * Tn;
    float *Fw = Fs + warp * 16 * LDF;
    T *Pw = Ps + warp * 16 * TC_LDP, *dSw = dSs + warp * 16 * TC_LDP;
    const T *Kw = Ks + warp * 16 * LDT, *Vw = Vs + warp * 16 * LDT;

    tc_load_tile(Ks, K, k0, Tn, C3, HS, D::HSP, LDT, TC_BR, vec);
    tc_load_tile(Vs, V, k0, Tn, C3, HS, D::HSP, LDT, TC_BR, vec);

    tc_acc dk[NB], dv[NB];
#pragma unroll
    for (int d = 0; d < NB; d++) {
        wmma::fill_fragment(dk[d], 0.0f);
        wmma::fill_fragment(dv[d], 0.0f);
    }

    for (int i0 = 0; i0 < Tn; i0 += TC_BC) {
        __syncthreads();
        tc_load_tile(Qs, Q, i0, Tn, C3, HS, D::HSP, LDT, TC_BC, vec);
        tc_load_tile(dOs, dO, i0, Tn, (int64_t)C, HS, D::HSP, LDT, TC_BC, vec_out);
        if (threadIdx.x < TC_BC) {
            const int i = i0 + threadIdx.x;
            // A query past T gets lse = +inf: its probabilities are 0.
            lse2s[threadIdx.x] = i < Tn ? lse_bh[i] * ATT_LOG2E : INFINITY;
            Ds[threadIdx.x] = i < Tn ? D_bh[i] : 0.0f;
        }
        __syncthreads();
        {
            // S^T = K Q^T in columns 0..63, dP^T = V dO^T in 64..127
            tc_acc acc[TC_BC / 16];
            tc_abt<T, NB, TC_BC / 16>(acc, Kw, Qs, LDT);
#pragma unroll
            for (int j = 0; j < TC_BC / 16; j++)
                wmma::store_matrix_sync(Fw + j * 16, acc[j], LDF, wmma::mem_row_major);
            tc_abt<T, NB, TC_BC / 16>(acc, Vw, dOs, LDT);
#pragma unroll
            for (int j = 0; j < TC_BC / 16; j++)
                wmma::store_matrix_sync(Fw + TC_BC + j * 16, acc[j], LDF,
                                        wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < TC_BC / 4; i++) {
            const int c = 4 * i + 2 * half;
            const float2 s = ld_vec<float2>(Fw + row * LDF + c);
            const float2 dp = ld_vec<float2>(Fw + row * LDF + TC_BC + c);
            const float p0 = exp2f(fmaf(s.x, scale_log2, -lse2s[c]));
            const float p1 = exp2f(fmaf(s.y, scale_log2, -lse2s[c + 1]));
            Pw[row * TC_LDP + c] = st<T>(p0);
            Pw[row * TC_LDP + c + 1] = st<T>(p1);
            dSw[row * TC_LDP + c] = st<T>(p0 * (dp.x - Ds[c]));
            dSw[row * TC_LDP + c + 1] = st<T>(p1 * (dp.y - Ds[c + 1]));
        }
        __syncwarp();
        tc_ab<T, NB>(dv, Pw, dOs, LDT);
        tc_ab<T, NB>(dk, dSw, Qs, LDT);
    }

    __syncwarp();
    const int row0 = k0 + warp * 16;
    T *dK = dqkv + (int64_t)b * Tn * C3 + C + (int64_t)h * HS;
    tc_store_rows<T, NB>(dK, C3, row0, Tn, HS, dk, Fw, LDF, scale);
    __syncwarp();
    tc_store_rows<T, NB>(dK + C, C3, row0, Tn, HS, dv, Fw, LDF, 1.0f);
}

// dQ of 64 queries of one (b, h), over every key tile.
template <typename T, int NB>
__global__ void __launch_bounds__(TC_THREADS)
    attn_backward_q_tc_kernel(T *dqkv, const T *dout, const float *lse, const float *Dg,
                              const T *qkv, int Tn, int C, int NH, int HS, float scale,
                              float scale_log2, int vec, int vec_out)
{
    typedef tc_dims<NB> D;
    constexpr int LDT = D::LDT, LDF = D::LDF2;
    DYNAMIC_SMEM(float, smem);
    float *Fs = smem;
    T *Qs = reinterpret_cast<T *>(Fs + TC_BR * LDF);
    T *dOs = Qs + TC_BR * LDT, *Ks = dOs + TC_BR * LDT, *Vs = Ks + TC_BC * LDT;
    T *dSs = Vs + TC_BC * LDT;
    const int tiles = (Tn + TC_BR - 1) / TC_BR;
    const int bh = blockIdx.x / tiles, q0 = (blockIdx.x - bh * tiles) * TC_BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = lane >> 1, half = lane & 1;
    const int64_t C3 = 3 * (int64_t)C;
    const T *Q = qkv + (int64_t)b * Tn * C3 + (int64_t)h * HS;
    const T *K = Q + C, *V = Q + 2 * (int64_t)C;
    const T *dO = dout + (int64_t)b * Tn * C + (int64_t)h * HS;
    float *Fw = Fs + warp * 16 * LDF;
    T *dSw = dSs + warp * 16 * TC_LDP;
    const T *Qw = Qs + warp * 16 * LDT, *dOw = dOs + warp * 16 * LDT;
    const int row0 = q0 + warp * 16;

    tc_load_tile(Qs, Q, q0, Tn, C3, HS, D::HSP, LDT, TC_BR, vec);
    tc_load_tile(dOs, dO, q0, Tn, (int64_t)C, HS, D::HSP, LDT, TC_BR, vec_out);
    const int t = min(row0 + row, Tn - 1); // rows past T are computed, never stored
    const float l2 = lse[(int64_t)bh * Tn + t] * ATT_LOG2E, Dt = Dg[(int64_t)bh * Tn + t];

    tc_acc dq[NB];
#pragma unroll
    for (int d = 0; d < NB; d++)
        wmma::fill_fragment(dq[d], 0.0f);

    for (int k0 = 0; k0 < Tn; k0 += TC_BC) {
        __syncthreads();
        tc_load_tile(Ks, K, k0, Tn, C3, HS, D::HSP, LDT, TC_BC, vec);
        tc_load_tile(Vs, V, k0, Tn, C3, HS, D::HSP, LDT, TC_BC, vec);
        __syncthreads();
        {
            tc_acc acc[TC_BC / 16];
            tc_abt<T, NB, TC_BC / 16>(acc, Qw, Ks, LDT);
#pragma unroll
            for (int j = 0; j < TC_BC / 16; j++)
                wmma::store_matrix_sync(Fw + j * 16, acc[j], LDF, wmma::mem_row_major);
            tc_abt<T, NB, TC_BC / 16>(acc, dOw, Vs, LDT);
#pragma unroll
            for (int j = 0; j < TC_BC / 16; j++)
                wmma::store_matrix_sync(Fw + TC_BC + j * 16, acc[j], LDF,
                                        wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < TC_BC / 4; i++) {
            const int c = 4 * i + 2 * half;
            const float2 s = ld_vec<float2>(Fw + row * LDF + c);
            const float2 dp = ld_vec<float2>(Fw + row * LDF + TC_BC + c);
            const float p0 = k0 + c < Tn ? exp2f(fmaf(s.x, scale_log2, -l2)) : 0.0f;
            const float p1 = k0 + c + 1 < Tn ? exp2f(fmaf(s.y, scale_log2, -l2)) : 0.0f;
            dSw[row * TC_LDP + c] = st<T>(p0 * (dp.x - Dt));
            dSw[row * TC_LDP + c + 1] = st<T>(p1 * (dp.y - Dt));
        }
        __syncwarp();
        tc_ab<T, NB>(dq, dSw, Ks, LDT);
    }

    __syncwarp();
    tc_store_rows<T, NB>(dqkv + (int64_t)b * Tn * C3 + (int64_t)h * HS, C3, row0, Tn, HS, dq,
                         Fw, LDF, scale);
}

// ---- host side --------------------------------------------------------

// Q for `rows` queries, a K and a V tile, the probabilities of the rows.
size_t att_forward_smem(int HS, int rows)
{
    return sizeof(float) * ((size_t)(rows + 2 * ATT_BC) * att_ld(HS) + (size_t)rows * ATT_BC);
}

size_t att_backward_kv_smem(int HS)
{
    return sizeof(float) *
           ((size_t)(2 * ATT_BR + 2 * ATT_BC) * att_ld(HS) + 2 * ATT_BR * ATT_BC + 2 * ATT_BC);
}

size_t att_backward_q_smem(int HS)
{
    return sizeof(float) * ((size_t)(2 * ATT_BR + 2 * ATT_BC) * att_ld(HS) + ATT_BR * ATT_BC);
}

// Raises the kernel's dynamic shared memory limit when it needs more than
// the default 48 KiB, then launches it over B * NH tiles of `rows` rows.
template <typename F, typename... Args>
void att_launch(F fn, int rows, size_t smem, struct kctx *ctx, int B, int Tn, int NH,
                Args... args)
{
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void *>(fn),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    const int64_t blocks = (int64_t)B * NH * ((Tn + rows - 1) / rows);
    KLAUNCH(fn, (unsigned)blocks, 128, smem, cuda_stream_of(ctx), args...);
}

// Whether rows of `stride` elements starting at p + h * HS can be read 16
// bytes at a time.
bool att_vec_ok(const void *p, size_t elem, int HS, int C)
{
    const int V = 16 / (int)elem;
    return ((uintptr_t)p & 15) == 0 && HS % V == 0 && C % V == 0;
}

void att_check_hs(const char *op, int HS, int most)
{
    if (HS > most) {
        fprintf(stderr, "dit: %s: head size %d is over the CUDA backend's %d\n", op, HS, most);
        abort();
    }
}

// D = rowsum(dO * O) into scratch, before either gradient pass.
template <typename T>
void att_rowdot(struct kctx *ctx, float *D, const T *dout, const T *out, int B, int Tn, int C,
                int NH)
{
    auto fn = attn_rowdot_kernel<T>;
    const int64_t rows = (int64_t)B * Tn * NH;
    KLAUNCH(fn, cuda_blocks_for(rows, 8), 256, 0, cuda_stream_of(ctx), D, dout, out, B, Tn, C,
            NH, (int)(C / NH));
}

// f32: CUDA cores, fp32 products, parity with the CPU backend.
void att_forward_f32(struct kctx *ctx, float *out, float *lse, const float *qkv, int B, int Tn,
                     int C, int NH)
{
    const int HS = C / NH;
    const float scale_log2 = ATT_LOG2E / sqrtf((float)HS);
    const int vec = att_vec_ok(qkv, sizeof(float), HS, C);
    const size_t smem = att_forward_smem(HS, ATT_BR);
#define ATT_FWD(NI)                                                                           \
    do {                                                                                      \
        auto fn = attn_forward_kernel<float, NI>;                                             \
        att_launch(fn, ATT_BR, smem, ctx, B, Tn, NH, out, lse, qkv, Tn, C, NH, HS,            \
                   scale_log2, vec);                                                          \
    } while (0)
    switch ((HS + 31) / 32) {
    case 1: ATT_FWD(1); break;
    case 2: ATT_FWD(2); break;
    case 3: ATT_FWD(3); break;
    default: ATT_FWD(4); break;
    }
#undef ATT_FWD
}

// Head sizes 129..512 (a VAE's mid-block attention: one head of 512 over
// every pixel), in every dtype: the f32 kernel's CUDA-core path, its tiles
// converted to fp32 in shared memory, 16 queries a block (Q, K and V tiles
// take 163 KiB at HS 512), and NI rounded up to 6, 8, 12 or 16 dims per
// lane. bf16 and f16 thus get fp32 probabilities and products as well as
// fp32 sums; the tensor-core kernels' registers (HSP / 2 accumulators per
// lane) would not hold a head of 512. Forward only: training never meets
// heads this wide, and the backward kernels stay at 128.
template <typename T>
void att_forward_wide(struct kctx *ctx, T *out, float *lse, const T *qkv, int B, int Tn, int C,
                      int NH)
{
    const int HS = C / NH;
    const float scale_log2 = ATT_LOG2E / sqrtf((float)HS);
    const int vec = att_vec_ok(qkv, sizeof(T), HS, C);
    const size_t smem = att_forward_smem(HS, ATT_WIDE_BR);
#define ATT_WIDE(NI)                                                                          \
    do {                                                                                      \
        auto fn = attn_forward_kernel<T, NI, ATT_WIDE_ROWS>;                                  \
        att_launch(fn, ATT_WIDE_BR, smem, ctx, B, Tn, NH, out, lse, qkv, Tn, C, NH, HS,       \
                   scale_log2, vec);                                                          \
    } while (0)
    if (HS <= 192)
        ATT_WIDE(6);
    else if (HS <= 256)
        ATT_WIDE(8);
    else if (HS <= 384)
        ATT_WIDE(12);
    else
        ATT_WIDE(16);
#undef ATT_WIDE
}

void att_backward_f32(struct kctx *ctx, float *dqkv, const float *dout, const float *out,
                      const float *lse, const float *qkv, float *D, int B, int Tn, int C,
                      int NH)
{
    const int HS = C / NH;
    const float scale = 1.0f / sqrtf((float)HS);
    const float scale_log2 = ATT_LOG2E * scale;
    const int vec = att_vec_ok(qkv, sizeof(float), HS, C);
    const int vec_out = att_vec_ok(dout, sizeof(float), HS, C);
    att_rowdot(ctx, D, dout, out, B, Tn, C, NH);
    const size_t smem_kv = att_backward_kv_smem(HS), smem_q = att_backward_q_smem(HS);
#define ATT_BWD(NI)                                                                           \
    do {                                                                                      \
        auto fkv = attn_backward_kv_kernel<float, NI>;                                        \
        att_launch(fkv, ATT_BR, smem_kv, ctx, B, Tn, NH, dqkv, dout, lse, (const float *)D,   \
                   qkv, Tn, C, NH, HS, scale, scale_log2, vec, vec_out);                      \
        auto fq = attn_backward_q_kernel<float, NI>;                                          \
        att_launch(fq, ATT_BR, smem_q, ctx, B, Tn, NH, dqkv, dout, lse, (const float *)D,     \
                   qkv, Tn, C, NH, HS, scale, scale_log2, vec, vec_out);                      \
    } while (0)
    switch ((HS + 31) / 32) {
    case 1: ATT_BWD(1); break;
    case 2: ATT_BWD(2); break;
    case 3: ATT_BWD(3); break;
    default: ATT_BWD(4); break;
    }
#undef ATT_BWD
}

// Runs F<NB>::run(args...) with NB = HS / 16 rounded up (1..8).
template <template <int> class F, typename... Args> void tc_dispatch(int HS, Args... args)
{
    switch ((HS + 15) / 16) {
    case 1: F<1>::run(args...); break;
    case 2: F<2>::run(args...); break;
    case 3: F<3>::run(args...); break;
    case 4: F<4>::run(args...); break;
    case 5: F<5>::run(args...); break;
    case 6: F<6>::run(args...); break;
    case 7: F<7>::run(args...); break;
    default: F<8>::run(args...); break;
    }
}

// bf16 and f16: tensor cores.
template <typename T> struct tc_forward {
    template <int NB> struct with {
        static void run(struct kctx *ctx, T *out, float *lse, const T *qkv, int B, int Tn, int C,
                        int NH)
        {
            const int HS = C / NH;
            const float scale_log2 = ATT_LOG2E / sqrtf((float)HS);
            const int vec = att_vec_ok(qkv, sizeof(T), HS, C);
            auto fn = attn_forward_tc_kernel<T, NB>;
            att_launch(fn, TC_BR, tc_forward_smem<T, NB>(), ctx, B, Tn, NH, out, lse, qkv, Tn,
                       C, NH, HS, scale_log2, vec);
        }
    };
};

template <typename T> struct tc_backward {
    template <int NB> struct with {
        static void run(struct kctx *ctx, T *dqkv, const T *dout, const float *lse,
                        const float *D, const T *qkv, int B, int Tn, int C, int NH)
        {
            const int HS = C / NH;
            const float scale = 1.0f / sqrtf((float)HS);
            const float scale_log2 = ATT_LOG2E * scale;
            const int vec = att_vec_ok(qkv, sizeof(T), HS, C);
            const int vec_out = att_vec_ok(dout, sizeof(T), HS, C);
            auto fkv = attn_backward_kv_tc_kernel<T, NB>;
            att_launch(fkv, TC_BR, tc_backward_kv_smem<T, NB>(), ctx, B, Tn, NH, dqkv, dout, lse,
                       D, qkv, Tn, C, NH, HS, scale, scale_log2, vec, vec_out);
            auto fq = attn_backward_q_tc_kernel<T, NB>;
            att_launch(fq, TC_BR, tc_backward_q_smem<T, NB>(), ctx, B, Tn, NH, dqkv, dout, lse,
                       D, qkv, Tn, C, NH, HS, scale, scale_log2, vec, vec_out);
        }
    };
};

template <typename T>
void att_forward_tc(struct kctx *ctx, T *out, float *lse, const T *qkv, int B, int Tn, int C,
                    int NH)
{
    tc_dispatch<tc_forward<T>::template with>(C / NH, ctx, out, lse, qkv, B, Tn, C, NH);
}

template <typename T>
void att_backward_tc(struct kctx *ctx, T *dqkv, const T *dout, const T *out, const float *lse,
                     const T *qkv, float *D, int B, int Tn, int C, int NH)
{
    att_rowdot(ctx, D, dout, out, B, Tn, C, NH);
    tc_dispatch<tc_backward<T>::template with>(C / NH, ctx, dqkv, dout, lse, (const float *)D,
                                               qkv, B, Tn, C, NH);
}

} // namespace

// D = rowsum(dO * O) per (b, h, t); P, dP and dS are recomputed per tile.
extern "C" int64_t cuda_attention_scratch(int B, int T, int NH)
{
    return (int64_t)B * NH * T;
}

extern "C" void cuda_attention_forward(struct kctx *ctx, void *out, float *lse, const void *qkv,
                                       float *scratch, enum kdtype dt, int B, int T, int C,
                                       int NH)
{
    (void)scratch;
    if (B <= 0 || T <= 0 || NH <= 0)
        return;
    const int HS = C / NH;
    if (HS == 0) {
        const int64_t n = (int64_t)B * NH * T;
        KLAUNCH(attn_lse_uniform_kernel, cuda_blocks_for(n, 256), 256, 0, cuda_stream_of(ctx),
                lse, n, logf((float)T));
        return;
    }
    att_check_hs("attention_forward", HS, ATT_MAX_HS_WIDE);
    if (HS > ATT_MAX_HS) {
        switch (dt) {
        case KDT_F32:
            att_forward_wide(ctx, (float *)out, lse, (const float *)qkv, B, T, C, NH);
            return;
        case KDT_BF16:
            att_forward_wide(ctx, (bf16 *)out, lse, (const bf16 *)qkv, B, T, C, NH);
            return;
        case KDT_F16:
            att_forward_wide(ctx, (f16 *)out, lse, (const f16 *)qkv, B, T, C, NH);
            return;
        default:
            break; // named below
        }
    }
    switch (dt) {
    case KDT_F32:
        att_forward_f32(ctx, (float *)out, lse, (const float *)qkv, B, T, C, NH);
        break;
    case KDT_BF16:
        att_forward_tc(ctx, (bf16 *)out, lse, (const bf16 *)qkv, B, T, C, NH);
        break;
    case KDT_F16:
        att_forward_tc(ctx, (f16 *)out, lse, (const f16 *)qkv, B, T, C, NH);
        break;
    default:
        fprintf(stderr, "dit: attention_forward: unknown dtype %d\n", (int)dt);
        abort();
    }
}

extern "C" void cuda_attention_backward(struct kctx *ctx, void *dqkv, const void *dout,
                                        const void *out, const float *lse, const void *qkv,
                                        float *scratch, enum kdtype dt, int B, int T, int C,
                                        int NH)
{
    if (!dqkv || B <= 0 || T <= 0 || NH <= 0 || C / NH == 0)
        return;
    att_check_hs("attention_backward", C / NH, ATT_MAX_HS);
    switch (dt) {
    case KDT_F32:
        att_backward_f32(ctx, (float *)dqkv, (const float *)dout, (const float *)out, lse,
                         (const float *)qkv, scratch, B, T, C, NH);
        break;
    case KDT_BF16:
        att_backward_tc(ctx, (bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)out, lse,
                        (const bf16 *)qkv, scratch, B, T, C, NH);
        break;
    case KDT_F16:
        att_backward_tc(ctx, (f16 *)dqkv, (const f16 *)dout, (const f16 *)out, lse,
                        (const f16 *)qkv, scratch, B, T, C, NH);
        break;
    default:
        fprintf(stderr, "dit: attention_backward: unknown dtype %d\n", (int)dt);
        abort();
    }
}

// ---- attention with a bias and a key mask (T5) ------------------------------
//
// k_attention_bias_forward: any Tq and Tk, q, k and v rows at their own
// strides (views into one fused qkv buffer, or q with a fused kv of another
// sequence: cross-attention), an additive f32 bias [NH, Tq, Tk] and an f32
// key mask [B, Tk], each optional. The f32 forward's scheme on CUDA cores, in
// every dtype: a block owns BR = 4 R queries of one (b, h), R per warp, and
// walks the keys in tiles of 32 (one per lane), K and V converted to fp32 in
// shared memory, with an online softmax (running max and sum per row, the
// output accumulator rescaled), so no score or probability leaves the block
// and no scratch is needed. The exponent is the natural expf of s - max,
// not exp2f of log2e-scaled scores: T5's scores are unscaled and its biases
// large, and the rounding of s * log2e grows with |s|. A tile whose keys are
// all masked (T5's padding) is skipped by the whole block; a masked key
// inside a tile gets probability exactly 0; a row with no attended key ends
// with a zero sum, and gets zeros and lse = -inf.
//
// HS up to 128 runs with R = 8 and NI = HS / 32 rounded up dims per lane;
// 129..512 (the backend's max_head_size_forward) with R = 4 and NI 8 or 16,
// which keeps Q, K and V tiles within shared memory (167 KiB at HS 512).

namespace {

constexpr int ATB_WARPS = 4;
constexpr int ATB_BC = 32; // keys per tile: one per lane
constexpr int ATB_THREADS = 32 * ATB_WARPS;
constexpr int ATB_MAX_HS = 512;

// The tiles are the self-attention kernels' (att_load_tile, att_dot_rows,
// att_accum above): key tiles of ATT_BC = ATB_BC columns, one per lane.
static_assert(ATB_BC == ATT_BC, "the tile helpers take ATT_BC keys a tile");

// Block = ATB_WARPS * R queries of one (b, h); grid = B * NH * query tiles.
// q (B, Tq, .) rows q_stride apart, k and v (B, Tk, .) rows kv_stride apart,
// head h at + h * HS -> out (B, Tq, NH * HS), lse (B, NH, Tq) or NULL.
template <typename T, int NI, int R>
__global__ void __launch_bounds__(ATB_THREADS)
    atb_forward_kernel(T *out, float *lse, const T *q, const T *k, const T *v, const float *bias,
                       const float *mask, int Tq, int Tk, int NH, int HS, int64_t q_stride,
                       int64_t kv_stride, float scale, int vec_q, int vec_kv)
{
    constexpr int BR = ATB_WARPS * R;
    DYNAMIC_SMEM(float, smem);
    const int LD = att_ld(HS), HS4 = att_hs4(HS);
    float *Qs = smem, *Ks = Qs + BR * LD, *Vs = Ks + ATB_BC * LD, *Ps = Vs + ATB_BC * LD;
    const int tiles = (Tq + BR - 1) / BR;
    const int bh = blockIdx.x / tiles, q0 = (blockIdx.x - bh * tiles) * BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = q0 + warp * R;
    const T *Q = q + (int64_t)b * Tq * q_stride + (int64_t)h * HS;
    const T *K = k + (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    const T *V = v + (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    const float *mask_b = mask ? mask + (int64_t)b * Tk : nullptr;
    // this warp's rows of bias[h]: row r at bias_w + r * Tk
    const float *bias_w = bias ? bias + ((int64_t)h * Tq + row0) * Tk : nullptr;

    att_load_tile(Qs, Q, q0, Tq, q_stride, HS, LD, BR, vec_q);
    const float *Qw = Qs + warp * R * LD;
    float *Pw = Ps + warp * R * ATB_BC;

    // m: the running max of the row's attended scores (-inf until the first);
    // l: this lane's share of the running sum, summed over the warp at the end.
    float m[R], l[R], o[R][NI];
#pragma unroll
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int n = 0; n < NI; n++)
            o[r][n] = 0.0f;
    }

    for (int k0 = 0; k0 < Tk; k0 += ATB_BC) {
        const int key = k0 + lane;
        const bool valid = key < Tk && (!mask_b || mask_b[key] != 0.0f);
        // The barrier before K and V are overwritten (every warp is done with
        // the last tile, and Q is in), and a vote: a tile without an attended
        // key is skipped by the whole block.
        if (!__syncthreads_or(valid))
            continue;
        att_load_tile(Ks, K, k0, Tk, kv_stride, HS, LD, ATB_BC, vec_kv);
        att_load_tile(Vs, V, k0, Tk, kv_stride, HS, LD, ATB_BC, vec_kv);
        __syncthreads();
        float s[R];
        att_dot_rows<R>(Qw, Ks + lane * LD, HS4, LD, s);
#pragma unroll
        for (int r = 0; r < R; r++) {
            float x = -INFINITY;
            if (valid && row0 + r < Tq) {
                x = s[r] * scale;
                if (bias_w)
                    x += bias_w[(int64_t)r * Tk + key];
            }
            const float mnew = fmaxf(m[r], warp_max(x));
            // Until the row meets an attended key there is nothing to add or
            // rescale (and -inf - -inf would be NaN); after, a masked key's
            // exp(-inf) is 0 and the first correction exp(-inf) zeroes zeros.
            const bool none = mnew == -INFINITY;
            const float corr = none ? 1.0f : expf(m[r] - mnew);
            const float p = none ? 0.0f : expf(x - mnew);
            m[r] = mnew;
            l[r] = fmaf(l[r], corr, p);
#pragma unroll
            for (int n = 0; n < NI; n++)
                o[r][n] *= corr;
            Pw[r * ATB_BC + lane] = p;
        }
        __syncwarp();
        if (HS > 0)
            att_accum<R, NI>(Pw, Vs, LD, HS, o);
        __syncwarp(); // P is read by every lane before the next tile's write
    }

    const int64_t C = (int64_t)NH * HS;
    T *O = out + (int64_t)b * Tq * C + (int64_t)h * HS;
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float sum = warp_sum(l[r]);
        const int row = row0 + r;
        if (row >= Tq)
            break;
        // no attended key: zeros, and the log of an empty sum
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        if (lse && lane == 0)
            lse[(int64_t)bh * Tq + row] = sum > 0.0f ? m[r] + logf(sum) : -INFINITY;
#pragma unroll
        for (int n = 0; n < NI; n++) {
            const int d = lane + 32 * n;
            if (d < HS)
                O[(int64_t)row * C + d] = st<T>(o[r][n] * inv);
        }
    }
}

// Whether rows `stride` elements apart from p (a head at p + h * HS) can be
// read 16 bytes at a time.
bool atb_vec_ok(const void *p, size_t elem, int HS, int64_t stride)
{
    const int V = 16 / (int)elem;
    return ((uintptr_t)p & 15) == 0 && HS % V == 0 && stride % V == 0;
}

template <typename T, int NI, int R>
void atb_launch(struct kctx *ctx, T *out, float *lse, const T *q, const T *k, const T *v,
                const float *bias, const float *mask, int B, int Tq, int Tk, int NH, int HS,
                int q_stride, int kv_stride, float scale)
{
    constexpr int BR = ATB_WARPS * R;
    auto fn = atb_forward_kernel<T, NI, R>;
    const size_t smem =
        sizeof(float) * ((size_t)(BR + 2 * ATB_BC) * att_ld(HS) + (size_t)BR * ATB_BC);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void *>(fn),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    const int64_t blocks = (int64_t)B * NH * ((Tq + BR - 1) / BR);
    if (blocks > 0x7fffffff) {
        fprintf(stderr, "dit: attention_bias_forward: %lld blocks are more than a grid holds\n",
                (long long)blocks);
        abort();
    }
    const int vec_q = atb_vec_ok(q, sizeof(T), HS, q_stride);
    const int vec_kv =
        atb_vec_ok(k, sizeof(T), HS, kv_stride) && atb_vec_ok(v, sizeof(T), HS, kv_stride);
    KLAUNCH(fn, (unsigned)blocks, ATB_THREADS, smem, cuda_stream_of(ctx), out, lse, q, k, v,
            bias, mask, Tq, Tk, NH, HS, (int64_t)q_stride, (int64_t)kv_stride, scale, vec_q,
            vec_kv);
}

template <typename T>
void atb_forward(struct kctx *ctx, T *out, float *lse, const T *q, const T *k, const T *v,
                 const float *bias, const float *mask, int B, int Tq, int Tk, int NH, int HS,
                 int q_stride, int kv_stride, float scale)
{
#define ATB_CASE(NI, R)                                                                        \
    atb_launch<T, NI, R>(ctx, out, lse, q, k, v, bias, mask, B, Tq, Tk, NH, HS, q_stride,      \
                         kv_stride, scale)
    const int ni = (HS + 31) / 32;
    if (ni <= 1)
        ATB_CASE(1, 8);
    else if (ni == 2)
        ATB_CASE(2, 8);
    else if (ni == 3)
        ATB_CASE(3, 8);
    else if (ni == 4)
        ATB_CASE(4, 8);
    else if (ni <= 8)
        ATB_CASE(8, 4);
    else
        ATB_CASE(16, 4);
#undef ATB_CASE
}

} // namespace

// Flash-style: nothing is kept between key tiles outside the block.
extern "C" int64_t cuda_attention_bias_scratch(int B, int Tq, int Tk, int NH, int HS)
{
    return 0;
}

extern "C" void cuda_attention_bias_forward(struct kctx *ctx, void *out, float *lse, const void *q,
                                            const void *k, const void *v, const float *bias,
                                            const float *key_mask, enum kdtype dt, int B, int Tq,
                                            int Tk, int NH, int HS, int q_stride, int kv_stride,
                                            float scale)
{
    if (B <= 0 || Tq <= 0 || NH <= 0)
        return;
    if (HS > ATB_MAX_HS) {
        fprintf(stderr, "dit: attention_bias_forward: head size %d is over the CUDA backend's %d\n",
                HS, ATB_MAX_HS);
        abort();
    }
    switch (dt) {
    case KDT_F32:
        atb_forward(ctx, (float *)out, lse, (const float *)q, (const float *)k,
                    (const float *)v, bias, key_mask, B, Tq, Tk, NH, HS, q_stride, kv_stride,
                    scale);
        break;
    case KDT_BF16:
        atb_forward(ctx, (bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                    bias, key_mask, B, Tq, Tk, NH, HS, q_stride, kv_stride, scale);
        break;
    case KDT_F16:
        atb_forward(ctx, (f16 *)out, lse, (const f16 *)q, (const f16 *)k, (const f16 *)v, bias,
                    key_mask, B, Tq, Tk, NH, HS, q_stride, kv_stride, scale);
        break;
    default:
        fprintf(stderr, "dit: attention_bias_forward: unknown dtype %d\n", (int)dt);
        abort();
    }
}

// ---- its backward -----------------------------------------------------------
//
// k_attention_bias_backward, FlashAttention-2 style as the self-attention
// backward above and on the same tile helpers, with fp32 tiles in shared
// memory in every dtype (as the bias forward): D = rowsum(dO * O) into
// scratch (attn_rowdot_kernel: dout and out are contiguous [B, Tq, C]); a
// key-owned pass, a block owning BR = 4 R keys of one (b, h), R per warp,
// that walks every query in tiles of 32 (one per lane) for dV += P^T dO and
// dK += dS^T Q; and a query-owned pass, a block owning BR queries, that
// walks the key tiles for dQ += dS K. Both recompute
// P = exp(scale q . k + bias - lse) in fp32 with expf, as the forward takes
// its exponent: 0 for a masked key, a key past Tk, a query past Tq and a
// query with lse = -inf (it attended nothing, so its lse is taken as +inf).
// Every gradient element is summed by one lane in a fixed order: the same
// bits run after run, with no atomics. A key block with no attended key
// stores zeros at once; a key tile with none is skipped by the query pass.
//
// Each lane holds R x NI accumulators of each gradient, R NI = 32: R = 8 up
// to HS 128, 4 up to 256 (F-Lite's heads), 2 up to 512 (the forward's
// limit, so every head the forward takes), which keeps the tiles of the
// key pass within 167 KiB of shared memory.

namespace {

// A bias tile of the key pass in shared memory: BR keys by ATB_BC queries,
// rows padded by one float so that lanes reading a row hit distinct banks.
constexpr int ATB_LDB = ATB_BC + 1;

// dK and dV of BR keys of one (b, h), over every query; dk, dv (rows
// kv_stride apart, head h at + h * HS) each may be null.
template <typename T, int NI, int R>
__global__ void __launch_bounds__(ATB_THREADS)
    atb_backward_kv_kernel(T *dk, T *dv, const T *dout, const float *lse, const float *Dg,
                           const T *q, const T *k, const T *v, const float *bias,
                           const float *mask, int Tq, int Tk, int NH, int HS, int64_t q_stride,
                           int64_t kv_stride, float scale, int vec_q, int vec_kv, int vec_o)
{
    constexpr int BR = ATB_WARPS * R;
    DYNAMIC_SMEM(float, smem);
    const int LD = att_ld(HS), HS4 = att_hs4(HS);
    float *Ks = smem, *Vs = Ks + BR * LD, *Qs = Vs + BR * LD, *dOs = Qs + ATB_BC * LD;
    float *Ps = dOs + ATB_BC * LD, *dSs = Ps + BR * ATB_BC;
    float *lses = dSs + BR * ATB_BC, *Ds = lses + ATB_BC, *Bs = Ds + ATB_BC;
    const int tiles = (Tk + BR - 1) / BR;
    const int bh = blockIdx.x / tiles, k0 = (blockIdx.x - bh * tiles) * BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = k0 + warp * R;
    const int64_t C = (int64_t)NH * HS;
    const T *Q = q + (int64_t)b * Tq * q_stride + (int64_t)h * HS;
    const T *K = k + (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    const T *V = v + (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    const T *dO = dout + (int64_t)b * Tq * C + (int64_t)h * HS;
    const float *lse_bh = lse + (int64_t)bh * Tq, *D_bh = Dg + (int64_t)bh * Tq;
    const float *mask_b = mask ? mask + (int64_t)b * Tk : nullptr;
    const float *bias_h = bias ? bias + (int64_t)h * Tq * Tk : nullptr;
    const float *Kw = Ks + warp * R * LD, *Vw = Vs + warp * R * LD;
    float *Pw = Ps + warp * R * ATB_BC, *dSw = dSs + warp * R * ATB_BC;

    bool kvalid[R], any = false;
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int key = row0 + r;
        kvalid[r] = key < Tk && (!mask_b || mask_b[key] != 0.0f);
        any = any || kvalid[r];
    }
    float dka[R][NI], dva[R][NI];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int n = 0; n < NI; n++)
            dka[r][n] = dva[r][n] = 0.0f;

    // no attended key in the block: no query reaches it, zero gradients
    if (__syncthreads_or(any)) {
        att_load_tile(Ks, K, k0, Tk, kv_stride, HS, LD, BR, vec_kv);
        att_load_tile(Vs, V, k0, Tk, kv_stride, HS, LD, BR, vec_kv);
        for (int i0 = 0; i0 < Tq; i0 += ATB_BC) {
            __syncthreads(); // every warp is done with the last query tile
            att_load_tile(Qs, Q, i0, Tq, q_stride, HS, LD, ATB_BC, vec_q);
            att_load_tile(dOs, dO, i0, Tq, C, HS, LD, ATB_BC, vec_o);
            if (threadIdx.x < ATB_BC) {
                const int i = i0 + threadIdx.x;
                const float l = i < Tq ? lse_bh[i] : -INFINITY;
                lses[threadIdx.x] = l == -INFINITY ? INFINITY : l;
                Ds[threadIdx.x] = i < Tq ? D_bh[i] : 0.0f;
            }
            if (bias_h)
                // coalesced: consecutive threads read consecutive keys of a query
                for (int idx = threadIdx.x; idx < ATB_BC * BR; idx += blockDim.x) {
                    const int qi = idx / BR, kj = idx - qi * BR;
                    const int i = i0 + qi, key = k0 + kj;
                    Bs[kj * ATB_LDB + qi] =
                        i < Tq && key < Tk ? bias_h[(int64_t)i * Tk + key] : 0.0f;
                }
            __syncthreads();
            float s[R], dp[R];
            att_dot_rows<R>(Kw, Qs + lane * LD, HS4, LD, s);
            att_dot_rows<R>(Vw, dOs + lane * LD, HS4, LD, dp);
            const float l = lses[lane], Di = Ds[lane];
#pragma unroll
            for (int r = 0; r < R; r++) {
                float p = 0.0f;
                if (kvalid[r]) {
                    float x = s[r] * scale;
                    if (bias_h)
                        x += Bs[(warp * R + r) * ATB_LDB + lane];
                    p = expf(x - l);
                }
                Pw[r * ATB_BC + lane] = p;
                dSw[r * ATB_BC + lane] = p * (dp[r] - Di);
            }
            __syncwarp();
            att_accum<R, NI>(Pw, dOs, LD, HS, dva);
            att_accum<R, NI>(dSw, Qs, LD, HS, dka);
            __syncwarp();
        }
    }

    float one[R], sc[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        one[r] = 1.0f;
        sc[r] = scale;
    }
    const int64_t head = (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    if (dk)
        att_store_rows<T, R, NI>(dk + head, kv_stride, row0, Tk, HS, dka, sc);
    if (dv)
        att_store_rows<T, R, NI>(dv + head, kv_stride, row0, Tk, HS, dva, one);
}

// dQ of BR queries of one (b, h) (rows q_stride apart), over every key tile.
template <typename T, int NI, int R>
__global__ void __launch_bounds__(ATB_THREADS)
    atb_backward_q_kernel(T *dq, const T *dout, const float *lse, const float *Dg, const T *q,
                          const T *k, const T *v, const float *bias, const float *mask, int Tq,
                          int Tk, int NH, int HS, int64_t q_stride, int64_t kv_stride,
                          float scale, int vec_q, int vec_kv, int vec_o)
{
    constexpr int BR = ATB_WARPS * R;
    DYNAMIC_SMEM(float, smem);
    const int LD = att_ld(HS), HS4 = att_hs4(HS);
    float *Qs = smem, *dOs = Qs + BR * LD, *Ks = dOs + BR * LD, *Vs = Ks + ATB_BC * LD;
    float *dSs = Vs + ATB_BC * LD;
    const int tiles = (Tq + BR - 1) / BR;
    const int bh = blockIdx.x / tiles, q0 = (blockIdx.x - bh * tiles) * BR;
    const int b = bh / NH, h = bh - b * NH;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = q0 + warp * R;
    const int64_t C = (int64_t)NH * HS;
    const T *Q = q + (int64_t)b * Tq * q_stride + (int64_t)h * HS;
    const T *K = k + (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    const T *V = v + (int64_t)b * Tk * kv_stride + (int64_t)h * HS;
    const T *dO = dout + (int64_t)b * Tq * C + (int64_t)h * HS;
    const float *mask_b = mask ? mask + (int64_t)b * Tk : nullptr;
    // this warp's rows of bias[h]: row r at bias_w + r * Tk (read for rows < Tq only)
    const float *bias_w = bias ? bias + ((int64_t)h * Tq + row0) * Tk : nullptr;

    att_load_tile(Qs, Q, q0, Tq, q_stride, HS, LD, BR, vec_q);
    att_load_tile(dOs, dO, q0, Tq, C, HS, LD, BR, vec_o);
    const float *Qw = Qs + warp * R * LD, *dOw = dOs + warp * R * LD;
    float *dSw = dSs + warp * R * ATB_BC;

    // lse +inf for a row past Tq or one that attended nothing: P = 0
    float l[R], Dr[R], dqa[R][NI];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int i = row0 + r;
        const float li = i < Tq ? lse[(int64_t)bh * Tq + i] : -INFINITY;
        l[r] = li == -INFINITY ? INFINITY : li;
        Dr[r] = i < Tq ? Dg[(int64_t)bh * Tq + i] : 0.0f;
#pragma unroll
        for (int n = 0; n < NI; n++)
            dqa[r][n] = 0.0f;
    }

    for (int k0 = 0; k0 < Tk; k0 += ATB_BC) {
        const int key = k0 + lane;
        const bool valid = key < Tk && (!mask_b || mask_b[key] != 0.0f);
        // the barrier before K and V are overwritten, and a vote: a tile
        // without an attended key adds nothing
        if (!__syncthreads_or(valid))
            continue;
        att_load_tile(Ks, K, k0, Tk, kv_stride, HS, LD, ATB_BC, vec_kv);
        att_load_tile(Vs, V, k0, Tk, kv_stride, HS, LD, ATB_BC, vec_kv);
        __syncthreads();
        float s[R], dp[R];
        att_dot_rows<R>(Qw, Ks + lane * LD, HS4, LD, s);
        att_dot_rows<R>(dOw, Vs + lane * LD, HS4, LD, dp);
#pragma unroll
        for (int r = 0; r < R; r++) {
            float p = 0.0f;
            if (valid && row0 + r < Tq) {
                float x = s[r] * scale;
                if (bias_w)
                    x += bias_w[(int64_t)r * Tk + key];
                p = expf(x - l[r]);
            }
            dSw[r * ATB_BC + lane] = p * (dp[r] - Dr[r]);
        }
        __syncwarp();
        att_accum<R, NI>(dSw, Ks, LD, HS, dqa);
        __syncwarp(); // dS is read by every lane before the next tile's write
    }

    float sc[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        sc[r] = scale;
    att_store_rows<T, R, NI>(dq + (int64_t)b * Tq * q_stride + (int64_t)h * HS, q_stride, row0,
                             Tq, HS, dqa, sc);
}

// Raises fn's dynamic shared memory limit past the default 48 KiB when it
// needs to, and refuses a grid of more blocks than CUDA takes.
template <typename F> unsigned atb_backward_grid(F fn, size_t smem, int64_t blocks)
{
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void *>(fn),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    if (blocks > 0x7fffffff) {
        fprintf(stderr, "dit: attention_bias_backward: %lld blocks are more than a grid holds\n",
                (long long)blocks);
        abort();
    }
    return (unsigned)blocks;
}

template <typename T, int NI, int R>
void atb_backward_launch(struct kctx *ctx, T *dq, T *dk, T *dv, const T *dout, const float *lse,
                         const float *D, const T *q, const T *k, const T *v, const float *bias,
                         const float *mask, int B, int Tq, int Tk, int NH, int HS, int q_stride,
                         int kv_stride, float scale)
{
    constexpr int BR = ATB_WARPS * R;
    const int LD = att_ld(HS);
    const int vec_q = atb_vec_ok(q, sizeof(T), HS, q_stride);
    const int vec_kv =
        atb_vec_ok(k, sizeof(T), HS, kv_stride) && atb_vec_ok(v, sizeof(T), HS, kv_stride);
    const int vec_o = atb_vec_ok(dout, sizeof(T), HS, (int64_t)NH * HS);
    if ((dk || dv) && Tk > 0) {
        auto fn = atb_backward_kv_kernel<T, NI, R>;
        // K, V of the block; a Q and a dO tile; P and dS; lse, D; the bias tile
        const size_t smem = sizeof(float) * ((size_t)(2 * BR + 2 * ATB_BC) * LD +
                                             2 * BR * ATB_BC + 2 * ATB_BC + BR * ATB_LDB);
        const unsigned grid = atb_backward_grid(fn, smem, (int64_t)B * NH * ((Tk + BR - 1) / BR));
        KLAUNCH(fn, grid, ATB_THREADS, smem, cuda_stream_of(ctx), dk, dv, dout, lse, D, q, k, v,
                bias, mask, Tq, Tk, NH, HS, (int64_t)q_stride, (int64_t)kv_stride, scale, vec_q,
                vec_kv, vec_o);
    }
    if (dq && Tq > 0) {
        auto fn = atb_backward_q_kernel<T, NI, R>;
        // Q, dO of the block; a K and a V tile; dS
        const size_t smem =
            sizeof(float) * ((size_t)(2 * BR + 2 * ATB_BC) * LD + (size_t)BR * ATB_BC);
        const unsigned grid = atb_backward_grid(fn, smem, (int64_t)B * NH * ((Tq + BR - 1) / BR));
        KLAUNCH(fn, grid, ATB_THREADS, smem, cuda_stream_of(ctx), dq, dout, lse, D, q, k, v,
                bias, mask, Tq, Tk, NH, HS, (int64_t)q_stride, (int64_t)kv_stride, scale, vec_q,
                vec_kv, vec_o);
    }
}

template <typename T>
void atb_backward(struct kctx *ctx, T *dq, T *dk, T *dv, const T *dout, const T *out,
                  const float *lse, const T *q, const T *k, const T *v, const float *bias,
                  const float *mask, float *D, int B, int Tq, int Tk, int NH, int HS,
                  int q_stride, int kv_stride, float scale)
{
    if (Tq > 0)
        att_rowdot(ctx, D, dout, out, B, Tq, NH * HS, NH);
#define ATB_BWD(NI, R)                                                                         \
    atb_backward_launch<T, NI, R>(ctx, dq, dk, dv, dout, lse, D, q, k, v, bias, mask, B, Tq,   \
                                  Tk, NH, HS, q_stride, kv_stride, scale)
    const int ni = (HS + 31) / 32;
    if (ni <= 1)
        ATB_BWD(1, 8);
    else if (ni == 2)
        ATB_BWD(2, 8);
    else if (ni == 3)
        ATB_BWD(3, 8);
    else if (ni == 4)
        ATB_BWD(4, 8);
    else if (ni <= 8)
        ATB_BWD(8, 4);
    else
        ATB_BWD(16, 2);
#undef ATB_BWD
}

} // namespace

// D = rowsum(dO * O) per (b, h, query); P and dS are recomputed per tile.
extern "C" int64_t cuda_attention_bias_backward_scratch(int B, int Tq, int Tk, int NH, int HS)
{
    return B > 0 && Tq > 0 && NH > 0 ? (int64_t)B * NH * Tq : 0;
}

extern "C" void cuda_attention_bias_backward(struct kctx *ctx, void *dq, void *dk, void *dv,
                                             const void *dout, const void *out, const float *lse,
                                             const void *q, const void *k, const void *v,
                                             const float *bias, const float *key_mask,
                                             float *scratch, enum kdtype dt, int B, int Tq,
                                             int Tk, int NH, int HS, int q_stride, int kv_stride,
                                             float scale)
{
    if (B <= 0 || NH <= 0 || HS <= 0 || (!dq && !dk && !dv))
        return; // no gradient has an element
    att_check_hs("attention_bias_backward", HS, ATB_MAX_HS);
    switch (dt) {
    case KDT_F32:
        atb_backward(ctx, (float *)dq, (float *)dk, (float *)dv, (const float *)dout,
                     (const float *)out, lse, (const float *)q, (const float *)k,
                     (const float *)v, bias, key_mask, scratch, B, Tq, Tk, NH, HS, q_stride,
                     kv_stride, scale);
        break;
    case KDT_BF16:
        atb_backward(ctx, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                     (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                     bias, key_mask, scratch, B, Tq, Tk, NH, HS, q_stride, kv_stride, scale);
        break;
    case KDT_F16:
        atb_backward(ctx, (f16 *)dq, (f16 *)dk, (f16 *)dv, (const f16 *)dout, (const f16 *)out,
                     lse, (const f16 *)q, (const f16 *)k, (const f16 *)v, bias, key_mask,
                     scratch, B, Tq, Tk, NH, HS, q_stride, kv_stride, scale);
        break;
    default:
        fprintf(stderr, "dit: attention_bias_backward: unknown dtype %d\n", (int)dt);
        abort();
    }
}
