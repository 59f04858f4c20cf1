/* Causal GQA attention over packed sequences, tiled with an online softmax (FlashAttention
 * style): a block takes ATT_BQ query rows of one head, streams the keys in tiles of ATT_BK
 * rows through shared memory, and keeps a running max, sum and output per row in registers.
 * The backward recomputes the probabilities from the saved log-sum-exp in two kernels with no
 * atomics: one over query tiles for dq, one over key tiles for dk and dv (each key block owns
 * its rows, all heads of its group included). Twins of kernels/cpu/attention.c.
 * Layout: q, out, dout: (rows, H, D); k, v: (keys, KVH, D); lse: (rows, H). D <= 128. */
#include "kernels/cuda/common.cuh"

#define ATT_BQ      16 /* query rows per block: 4 warps x 4 rows */
#define ATT_BK      32 /* keys per tile: one per lane */
#define ATT_WARPS   4
#define ATT_RPW     (ATT_BQ / ATT_WARPS)
#define ATT_MAXD    128
#define ATT_DPL     (ATT_MAXD / 32) /* output columns per lane */
#define ATT_THREADS (ATT_WARPS * 32)

/* Which keys a query row sees. Packed sequences (cu_seqlens != NULL): from the start of the
 * row's sequence to the row itself. Decoding (cu_seqlens == NULL): query row t of Tq sits at
 * position Tk - Tq + t of the cache and sees keys [0, Tk - Tq + t]. */
struct att_rows {
    const int32_t *cu_seqlens;
    int nseq, Tq, Tk;
};

__device__ static __forceinline__ int att_seq_of(const int32_t *cu, int nseq, int row) {
    int lo = 0, hi = nseq - 1; /* last s with cu[s] <= row */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (cu[mid] <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}
__device__ static __forceinline__ int att_key_lo(att_rows r, int row) {
    return r.cu_seqlens ? r.cu_seqlens[att_seq_of(r.cu_seqlens, r.nseq, row)] : 0;
}
__device__ static __forceinline__ int att_key_hi(att_rows r, int row) {
    return r.cu_seqlens ? row : r.Tk - r.Tq + row;
}

__device__ static __forceinline__ float att_dot(const float *a, const float *b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

/* ---------------------------------------------------------------- forward */
template <class T>
__global__ static void attention_forward_kernel(T *out, float *lse, const T *q, const T *k,
                                                const T *v, att_rows rows, int Nq, int H, int KVH,
                                                int D) {
    DP_DYNAMIC_SHARED(float, smem);
    const int KD = D + 1;         /* padded key rows: lanes read different rows */
    float *Qs = smem;             // (ATT_BQ, D)
    float *Ks = Qs + ATT_BQ * D;  // (ATT_BK, D+1)
    float *Vs = Ks + ATT_BK * KD; // (ATT_BK, D)
    float *Ps = Vs + ATT_BK * D;  // (ATT_WARPS, ATT_BK)
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int h = blockIdx.y, kvh = h / (H / KVH), r0 = blockIdx.x * ATT_BQ;
    float scale = rsqrtf((float)D);

    for (int i = threadIdx.x; i < ATT_BQ * D; i += blockDim.x) {
        int row = r0 + i / D;
        Qs[i] = row < Nq ? dp_load(q + ((size_t)row * H + h) * D + i % D) : 0.0f;
    }
    int last = min(r0 + ATT_BQ, Nq) - 1;
    int lo_blk = att_key_lo(rows, r0), hi_blk = att_key_hi(rows, last);

    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][ATT_DPL];
    int lo[ATT_RPW], hi[ATT_RPW];
    for (int j = 0; j < ATT_RPW; j++) {
        int row = r0 + warp * ATT_RPW + j;
        m[j] = -INFINITY, l[j] = 0.0f;
        lo[j] = row < Nq ? att_key_lo(rows, row) : 0;
        hi[j] = row < Nq ? att_key_hi(rows, row) : -1;
        for (int e = 0; e < ATT_DPL; e++) acc[j][e] = 0.0f;
    }

    for (int kt = lo_blk; kt <= hi_blk; kt += ATT_BK) {
        __syncthreads(); /* the previous tile is no longer read */
        for (int i = threadIdx.x; i < ATT_BK * D; i += blockDim.x) {
            int kr = i / D, d = i % D, key = kt + kr;
            bool ok = key <= hi_blk;
            size_t off = ((size_t)key * KVH + kvh) * D + d;
            Ks[kr * KD + d] = ok ? dp_load(k + off) : 0.0f;
            Vs[kr * D + d] = ok ? dp_load(v + off) : 0.0f;
        }
        __syncthreads();
        for (int j = 0; j < ATT_RPW; j++) {
            int r = warp * ATT_RPW + j;
            if (r0 + r >= Nq) continue; /* uniform across the warp */
            int key = kt + lane;
            bool ok = key >= lo[j] && key <= hi[j];
            float s = ok ? att_dot(Qs + r * D, Ks + lane * KD, D) * scale : -INFINITY;
            float tile_max = dp_warp_max(s);
            if (tile_max == -INFINITY) continue; /* no visible key in this tile */
            float m_new = fmaxf(m[j], tile_max);
            float corr = expf(m[j] - m_new);
            float p = ok ? expf(s - m_new) : 0.0f;
            l[j] = l[j] * corr + dp_warp_sum(p);
            Ps[warp * ATT_BK + lane] = p;
            __syncwarp();
            for (int e = 0; e < ATT_DPL; e++) {
                int d = lane + 32 * e;
                if (d >= D) break;
                float a = acc[j][e] * corr;
                for (int kk = 0; kk < ATT_BK; kk++) a += Ps[warp * ATT_BK + kk] * Vs[kk * D + d];
                acc[j][e] = a;
            }
            __syncwarp(); /* Ps is rewritten for the next row */
            m[j] = m_new;
        }
    }
    for (int j = 0; j < ATT_RPW; j++) {
        int row = r0 + warp * ATT_RPW + j;
        if (row >= Nq) continue;
        for (int e = 0; e < ATT_DPL; e++) {
            int d = lane + 32 * e;
            if (d < D) dp_store(out + ((size_t)row * H + h) * D + d, acc[j][e] / l[j]);
        }
        if (lse && lane == 0) lse[(size_t)row * H + h] = m[j] + logf(l[j]);
    }
}

/* ---------------------------------------------------------------- backward: dq */
template <class T>
__global__ static void attention_dq_kernel(T *dq, const T *dout, const T *out, const float *lse,
                                           const T *q, const T *k, const T *v, att_rows rows,
                                           int Nq, int H, int KVH, int D) {
    DP_DYNAMIC_SHARED(float, smem);
    const int KD = D + 1;
    float *Qs = smem;              // (ATT_BQ, D)
    float *dOs = Qs + ATT_BQ * D;  // (ATT_BQ, D)
    float *Ks = dOs + ATT_BQ * D;  // (ATT_BK, D+1)
    float *Vs = Ks + ATT_BK * KD;  // (ATT_BK, D+1)
    float *DSs = Vs + ATT_BK * KD; // (ATT_WARPS, ATT_BK)
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int h = blockIdx.y, kvh = h / (H / KVH), r0 = blockIdx.x * ATT_BQ;
    float scale = rsqrtf((float)D);

    for (int i = threadIdx.x; i < ATT_BQ * D; i += blockDim.x) {
        int row = r0 + i / D;
        size_t off = ((size_t)row * H + h) * D + i % D;
        Qs[i] = row < Nq ? dp_load(q + off) : 0.0f;
        dOs[i] = row < Nq ? dp_load(dout + off) : 0.0f;
    }
    int last = min(r0 + ATT_BQ, Nq) - 1;
    int lo_blk = att_key_lo(rows, r0), hi_blk = att_key_hi(rows, last);

    float acc[ATT_RPW][ATT_DPL], Di[ATT_RPW], L[ATT_RPW];
    int lo[ATT_RPW], hi[ATT_RPW];
    for (int j = 0; j < ATT_RPW; j++) {
        int row = r0 + warp * ATT_RPW + j;
        lo[j] = row < Nq ? att_key_lo(rows, row) : 0;
        hi[j] = row < Nq ? att_key_hi(rows, row) : -1;
        L[j] = row < Nq ? lse[(size_t)row * H + h] : 0.0f;
        float s = 0.0f; /* Di = dout . out over the row, lanes split the columns */
        for (int d = lane; d < D && row < Nq; d += 32)
            s += dp_load(dout + ((size_t)row * H + h) * D + d) *
                 dp_load(out + ((size_t)row * H + h) * D + d);
        Di[j] = dp_warp_sum(s);
        for (int e = 0; e < ATT_DPL; e++) acc[j][e] = 0.0f;
    }

    for (int kt = lo_blk; kt <= hi_blk; kt += ATT_BK) {
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_BK * D; i += blockDim.x) {
            int kr = i / D, d = i % D, key = kt + kr;
            bool ok = key <= hi_blk;
            size_t off = ((size_t)key * KVH + kvh) * D + d;
            Ks[kr * KD + d] = ok ? dp_load(k + off) : 0.0f;
            Vs[kr * KD + d] = ok ? dp_load(v + off) : 0.0f;
        }
        __syncthreads();
        for (int j = 0; j < ATT_RPW; j++) {
            int r = warp * ATT_RPW + j;
            if (r0 + r >= Nq) continue;
            int key = kt + lane;
            float ds = 0.0f;
            if (key >= lo[j] && key <= hi[j]) {
                float p = expf(att_dot(Qs + r * D, Ks + lane * KD, D) * scale - L[j]);
                ds = p * (att_dot(dOs + r * D, Vs + lane * KD, D) - Di[j]) * scale;
            }
            DSs[warp * ATT_BK + lane] = ds;
            __syncwarp();
            for (int e = 0; e < ATT_DPL; e++) {
                int d = lane + 32 * e;
                if (d >= D) break;
                float a = acc[j][e];
                for (int kk = 0; kk < ATT_BK; kk++) a += DSs[warp * ATT_BK + kk] * Ks[kk * KD + d];
                acc[j][e] = a;
            }
            __syncwarp();
        }
    }
    for (int j = 0; j < ATT_RPW; j++) {
        int row = r0 + warp * ATT_RPW + j;
        if (row >= Nq) continue;
        for (int e = 0; e < ATT_DPL; e++) {
            int d = lane + 32 * e;
            if (d >= D) break;
            T *p = dq + ((size_t)row * H + h) * D + d;
            dp_store(p, dp_load(p) + acc[j][e]);
        }
    }
}

/* ---------------------------------------------------------------- backward: dk, dv
 * A block owns ATT_BQ key rows of one kv head; lanes take query rows, warps take key rows. */
template <class T>
__global__ static void attention_dkv_kernel(T *dk, T *dv, const T *dout, const T *out,
                                            const float *lse, const T *q, const T *k, const T *v,
                                            const int32_t *cu_seqlens, int nseq, int N, int H,
                                            int KVH, int D) {
    DP_DYNAMIC_SHARED(float, smem);
    const int QD = D + 1;
    float *Kb = smem;              // (ATT_BQ, D) this block's keys
    float *Vb = Kb + ATT_BQ * D;   // (ATT_BQ, D)
    float *Qt = Vb + ATT_BQ * D;   // (ATT_BK, D+1) a tile of query rows
    float *dOt = Qt + ATT_BK * QD; // (ATT_BK, D+1)
    float *Lt = dOt + ATT_BK * QD; // (ATT_BK) their lse
    float *Dt = Lt + ATT_BK;       // (ATT_BK) their dout . out
    float *Ps = Dt + ATT_BK;       // (ATT_WARPS, ATT_BK)
    float *DSs = Ps + ATT_WARPS * ATT_BK;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int kvh = blockIdx.y, group = H / KVH, j0 = blockIdx.x * ATT_BQ;
    float scale = rsqrtf((float)D);

    for (int i = threadIdx.x; i < ATT_BQ * D; i += blockDim.x) {
        int key = j0 + i / D;
        size_t off = ((size_t)key * KVH + kvh) * D + i % D;
        Kb[i] = key < N ? dp_load(k + off) : 0.0f;
        Vb[i] = key < N ? dp_load(v + off) : 0.0f;
    }
    int lastkey = min(j0 + ATT_BQ, N) - 1;
    int qhi_blk = cu_seqlens[att_seq_of(cu_seqlens, nseq, lastkey) + 1] - 1;
    float dk_acc[ATT_RPW][ATT_DPL], dv_acc[ATT_RPW][ATT_DPL];
    int qend[ATT_RPW]; /* last query row that sees each key: the end of its sequence */
    for (int jj = 0; jj < ATT_RPW; jj++) {
        int key = j0 + warp * ATT_RPW + jj;
        qend[jj] = key < N ? cu_seqlens[att_seq_of(cu_seqlens, nseq, key) + 1] - 1 : -1;
        for (int e = 0; e < ATT_DPL; e++) dk_acc[jj][e] = dv_acc[jj][e] = 0.0f;
    }

    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int qt = j0; qt <= qhi_blk; qt += ATT_BK) {
            __syncthreads();
            for (int i = threadIdx.x; i < ATT_BK * D; i += blockDim.x) {
                int qr = i / D, d = i % D, row = qt + qr;
                bool ok = row <= qhi_blk;
                size_t off = ((size_t)row * H + h) * D + d;
                Qt[qr * QD + d] = ok ? dp_load(q + off) : 0.0f;
                dOt[qr * QD + d] = ok ? dp_load(dout + off) : 0.0f;
            }
            for (int qr = warp; qr < ATT_BK; qr += ATT_WARPS) { /* a warp per row: dout . out */
                int row = qt + qr;
                bool ok = row <= qhi_blk;
                float s = 0.0f;
                for (int d = lane; d < D && ok; d += 32)
                    s += dp_load(dout + ((size_t)row * H + h) * D + d) *
                         dp_load(out + ((size_t)row * H + h) * D + d);
                s = dp_warp_sum(s);
                if (lane == 0) {
                    Dt[qr] = s;
                    Lt[qr] = ok ? lse[(size_t)row * H + h] : 0.0f;
                }
            }
            __syncthreads();
            for (int jj = 0; jj < ATT_RPW; jj++) {
                int kr = warp * ATT_RPW + jj, key = j0 + kr;
                if (key >= N) continue; /* uniform across the warp */
                int row = qt + lane;
                float p = 0.0f, ds = 0.0f;
                if (row >= key && row <= qend[jj]) {
                    p = expf(att_dot(Qt + lane * QD, Kb + kr * D, D) * scale - Lt[lane]);
                    ds = p * (att_dot(dOt + lane * QD, Vb + kr * D, D) - Dt[lane]) * scale;
                }
                Ps[warp * ATT_BK + lane] = p;
                DSs[warp * ATT_BK + lane] = ds;
                __syncwarp();
                for (int e = 0; e < ATT_DPL; e++) {
                    int d = lane + 32 * e;
                    if (d >= D) break;
                    float a = dv_acc[jj][e], b = dk_acc[jj][e];
                    for (int l = 0; l < ATT_BK; l++) {
                        a += Ps[warp * ATT_BK + l] * dOt[l * QD + d];
                        b += DSs[warp * ATT_BK + l] * Qt[l * QD + d];
                    }
                    dv_acc[jj][e] = a, dk_acc[jj][e] = b;
                }
                __syncwarp();
            }
        }
    }
    for (int jj = 0; jj < ATT_RPW; jj++) {
        int key = j0 + warp * ATT_RPW + jj;
        if (key >= N) continue;
        for (int e = 0; e < ATT_DPL; e++) {
            int d = lane + 32 * e;
            if (d >= D) break;
            size_t off = ((size_t)key * KVH + kvh) * D + d;
            if (dk) dp_store(dk + off, dp_load(dk + off) + dk_acc[jj][e]);
            if (dv) dp_store(dv + off, dp_load(dv + off) + dv_acc[jj][e]);
        }
    }
}

/* ---------------------------------------------------------------- launchers */
static int att_check(const char *what, int N, int H, int KVH, int D) {
    if (N <= 0 || H <= 0 || KVH <= 0 || D <= 0 || H % KVH)
        return dp_fail("%s: bad shape N=%d H=%d KVH=%d D=%d (H must be a multiple of KVH)", what, N,
                       H, KVH, D);
    if (D > ATT_MAXD)
        return dp_fail("%s: head dim D=%d above the %d this kernel supports", what, D, ATT_MAXD);
    if (H > 65535) return dp_fail("%s: H=%d heads exceed the grid", what, H);
    return 0;
}

static size_t att_fwd_smem(int D) {
    return sizeof(float) * ((size_t)ATT_BQ * D + (size_t)ATT_BK * (D + 1) + (size_t)ATT_BK * D +
                            ATT_WARPS * ATT_BK);
}
static size_t att_dq_smem(int D) {
    return sizeof(float) *
           (2 * (size_t)ATT_BQ * D + 2 * (size_t)ATT_BK * (D + 1) + ATT_WARPS * ATT_BK);
}
static size_t att_dkv_smem(int D) {
    return sizeof(float) * (2 * (size_t)ATT_BQ * D + 2 * (size_t)ATT_BK * (D + 1) + 2 * ATT_BK +
                            2 * ATT_WARPS * ATT_BK);
}

template <class T>
static int attention_forward_launch(T *out, float *lse, const T *q, const T *k, const T *v,
                                    att_rows rows, int Nq, int H, int KVH, int D) {
    size_t smem = att_fwd_smem(D);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel<T>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    DP_LAUNCH(attention_forward_kernel<T>, dim3(dp_ceil_div(Nq, ATT_BQ), H), ATT_THREADS, smem, 0,
              out, lse, q, k, v, rows, Nq, H, KVH, D);
    CUDA_CHECK_LAUNCH();
    return 0;
}

template <class T>
static int attention_backward_launch(T *dq, T *dk, T *dv, const T *dout, const T *out,
                                     const float *lse, const T *q, const T *k, const T *v,
                                     const int32_t *cu_seqlens, int nseq, int N, int H, int KVH,
                                     int D) {
    att_rows rows = {cu_seqlens, nseq, 0, 0};
    if (dq) {
        size_t smem = att_dq_smem(D);
        if (smem > 48 * 1024)
            CUDA_CHECK(cudaFuncSetAttribute(
                attention_dq_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        DP_LAUNCH(attention_dq_kernel<T>, dim3(dp_ceil_div(N, ATT_BQ), H), ATT_THREADS, smem, 0, dq,
                  dout, out, lse, q, k, v, rows, N, H, KVH, D);
        CUDA_CHECK_LAUNCH();
    }
    if (dk || dv) {
        size_t smem = att_dkv_smem(D);
        if (smem > 48 * 1024)
            CUDA_CHECK(cudaFuncSetAttribute(
                attention_dkv_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        DP_LAUNCH(attention_dkv_kernel<T>, dim3(dp_ceil_div(N, ATT_BQ), KVH), ATT_THREADS, smem, 0,
                  dk, dv, dout, out, lse, q, k, v, cu_seqlens, nseq, N, H, KVH, D);
        CUDA_CHECK_LAUNCH();
    }
    return 0;
}

/* Packed sequences: cu_seqlens (nseq + 1, device) with cu_seqlens[0] = 0, cu_seqlens[nseq] = N
 * (N is passed because the host cannot read device memory without a synchronizing copy). */
extern "C" int DP_CUDA_FN(attention_forward)(float *out, float *lse, const float *q, const float *k,
                                             const float *v, const int32_t *cu_seqlens, int nseq,
                                             int N, int H, int KVH, int D) {
    if (att_check("attention_forward", N, H, KVH, D) || nseq <= 0) return -1;
    att_rows rows = {cu_seqlens, nseq, 0, 0};
    return attention_forward_launch(out, lse, q, k, v, rows, N, H, KVH, D);
}
extern "C" int DP_CUDA_FN(attention_forward_bf16)(dp_bf16 *out, float *lse, const dp_bf16 *q,
                                                  const dp_bf16 *k, const dp_bf16 *v,
                                                  const int32_t *cu_seqlens, int nseq, int N, int H,
                                                  int KVH, int D) {
    if (att_check("attention_forward_bf16", N, H, KVH, D) || nseq <= 0) return -1;
    att_rows rows = {cu_seqlens, nseq, 0, 0};
    return attention_forward_launch(dp_bf(out), lse, dp_bf(q), dp_bf(k), dp_bf(v), rows, N, H, KVH,
                                    D);
}
/* dq, dk, dv accumulate (+=); any may be NULL */
extern "C" int DP_CUDA_FN(attention_backward)(float *dq, float *dk, float *dv, const float *dout,
                                              const float *out, const float *lse, const float *q,
                                              const float *k, const float *v,
                                              const int32_t *cu_seqlens, int nseq, int N, int H,
                                              int KVH, int D) {
    if (att_check("attention_backward", N, H, KVH, D) || nseq <= 0) return -1;
    return attention_backward_launch(dq, dk, dv, dout, out, lse, q, k, v, cu_seqlens, nseq, N, H,
                                     KVH, D);
}
extern "C" int DP_CUDA_FN(attention_backward_bf16)(dp_bf16 *dq, dp_bf16 *dk, dp_bf16 *dv,
                                                   const dp_bf16 *dout, const dp_bf16 *out,
                                                   const float *lse, const dp_bf16 *q,
                                                   const dp_bf16 *k, const dp_bf16 *v,
                                                   const int32_t *cu_seqlens, int nseq, int N,
                                                   int H, int KVH, int D) {
    if (att_check("attention_backward_bf16", N, H, KVH, D) || nseq <= 0) return -1;
    return attention_backward_launch(dp_bf(dq), dp_bf(dk), dp_bf(dv), dp_bf(dout), dp_bf(out), lse,
                                     dp_bf(q), dp_bf(k), dp_bf(v), cu_seqlens, nseq, N, H, KVH, D);
}
/* Decoding: q, out: (Tq, H, D) at positions [Tk - Tq, Tk); kcache, vcache: (Tk, KVH, D) */
extern "C" int DP_CUDA_FN(attention_cached)(float *out, const float *q, const float *kcache,
                                            const float *vcache, int Tq, int Tk, int H, int KVH,
                                            int D) {
    if (att_check("attention_cached", Tq, H, KVH, D)) return -1;
    if (Tk < Tq) return dp_fail("attention_cached: Tq=%d Tk=%d (need Tq <= Tk)", Tq, Tk);
    att_rows rows = {NULL, 0, Tq, Tk};
    return attention_forward_launch(out, (float *)NULL, q, kcache, vcache, rows, Tq, H, KVH, D);
}
extern "C" int DP_CUDA_FN(attention_cached_bf16)(dp_bf16 *out, const dp_bf16 *q,
                                                 const dp_bf16 *kcache, const dp_bf16 *vcache,
                                                 int Tq, int Tk, int H, int KVH, int D) {
    if (att_check("attention_cached_bf16", Tq, H, KVH, D)) return -1;
    if (Tk < Tq) return dp_fail("attention_cached_bf16: Tq=%d Tk=%d (need Tq <= Tk)", Tq, Tk);
    att_rows rows = {NULL, 0, Tq, Tk};
    return attention_forward_launch(dp_bf(out), (float *)NULL, dp_bf(q), dp_bf(kcache),
                                    dp_bf(vcache), rows, Tq, H, KVH, D);
}
