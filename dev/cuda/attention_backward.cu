/* Sandbox: causal GQA attention backward over packed sequences (bf16 q, k, v, out, dout and
 * gradients; fp32 lse from the forward), dq, dk, dv accumulated (+=). Reference: the CPU
 * attention_backward on the same bf16-rounded inputs (and the bf16 forward output the GPU
 * saved). Peer: the five cuBLAS GEMMs of the same shape (S = QK^T, dP = dO V^T, dQ = dS K,
 * dK = dS^T Q, dV = P^T dO; dense squares, strided-batched GemmEx bf16/fp32). */
#include "dev/cuda/attention_shape.cuh"

typedef __nv_bfloat16 bf16;

__device__ static __forceinline__ float sb_dot_bf16(const bf16 *a, const bf16 *b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; d++) s += __bfloat162float(a[d]) * __bfloat162float(b[d]);
    return s;
}

/* variant 1, dq: one thread per (row, head), recomputing p and ds from the saved lse */
__global__ static void attention_dq_kernel1(bf16 *dq, const bf16 *dout, const bf16 *out,
                                            const float *lse, const bf16 *q, const bf16 *k,
                                            const bf16 *v, const int32_t *cu, int nseq, int N,
                                            int H, int KVH, int D) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) return;
    int row = idx / H, h = idx % H, kvh = h / (H / KVH);
    int s = 0;
    while (s + 1 < nseq && cu[s + 1] <= row) s++;
    size_t r = (size_t)row * H + h;
    const bf16 *qr = q + r * D, *dor = dout + r * D; // (D)
    float Di = sb_dot_bf16(dor, out + r * D, D), L = lse[r], scale = rsqrtf((float)D);
    float acc[SB_ATT_MAXD];
    for (int d = 0; d < D; d++) acc[d] = 0.0f;
    for (int j = cu[s]; j <= row; j++) {
        const bf16 *kj = k + ((size_t)j * KVH + kvh) * D, *vj = v + ((size_t)j * KVH + kvh) * D;
        float p = expf(sb_dot_bf16(qr, kj, D) * scale - L);
        float ds = p * (sb_dot_bf16(dor, vj, D) - Di) * scale;
        for (int d = 0; d < D; d++) acc[d] += ds * __bfloat162float(kj[d]);
    }
    for (int d = 0; d < D; d++)
        dq[r * D + d] = __float2bfloat16(__bfloat162float(dq[r * D + d]) + acc[d]);
}

/* variant 1, dk and dv: one thread per (key, kv head), over every head of its group and every
 * later row of its sequence */
__global__ static void attention_dkv_kernel1(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                                             const float *lse, const bf16 *q, const bf16 *k,
                                             const bf16 *v, const int32_t *cu, int nseq, int N,
                                             int H, int KVH, int D) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * KVH) return;
    int key = idx / KVH, kvh = idx % KVH, G = H / KVH;
    int s = 0;
    while (s + 1 < nseq && cu[s + 1] <= key) s++;
    size_t kr = (size_t)key * KVH + kvh;
    const bf16 *kj = k + kr * D, *vj = v + kr * D; // (D)
    float scale = rsqrtf((float)D), ak[SB_ATT_MAXD], av[SB_ATT_MAXD];
    for (int d = 0; d < D; d++) ak[d] = av[d] = 0.0f;
    for (int h = kvh * G; h < (kvh + 1) * G; h++)
        for (int i = key; i < cu[s + 1]; i++) {
            size_t r = (size_t)i * H + h;
            const bf16 *qi = q + r * D, *doi = dout + r * D;
            float p = expf(sb_dot_bf16(qi, kj, D) * scale - lse[r]);
            float ds = p * (sb_dot_bf16(doi, vj, D) - sb_dot_bf16(doi, out + r * D, D)) * scale;
            for (int d = 0; d < D; d++) {
                av[d] += p * __bfloat162float(doi[d]);
                ak[d] += ds * __bfloat162float(qi[d]);
            }
        }
    for (int d = 0; d < D; d++) {
        dk[kr * D + d] = __float2bfloat16(__bfloat162float(dk[kr * D + d]) + ak[d]);
        dv[kr * D + d] = __float2bfloat16(__bfloat162float(dv[kr * D + d]) + av[d]);
    }
}

/* variant 3, between the GEMMs: one block per (row i, head h) of one sequence. From the scaled
 * scores S and dP = dO V^T (H, T, T) fp32: P = exp(S - lse) and dS = P (dP - Di) scale, both
 * bf16 (H, T, T), zero above the diagonal; Di = dout . out of the row. */
__global__ static void attention_ds_kernel(bf16 *P, bf16 *dS, const float *S, const float *dP,
                                           const float *lse, const bf16 *dout, const bf16 *out,
                                           int T, int H, int D, int row0, float scale) {
    __shared__ float partial[32];
    int i = blockIdx.x, h = blockIdx.y;
    size_t r = (size_t)(row0 + i) * H + h, o = ((size_t)h * T + i) * T;
    float di = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        di += __bfloat162float(dout[r * D + d]) * __bfloat162float(out[r * D + d]);
    di = dp_block_sum(di, partial);
    float L = lse[r];
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float p = j <= i ? expf(S[o + j] - L) : 0.0f;
        P[o + j] = __float2bfloat16(p);
        dS[o + j] = __float2bfloat16(p * (dP[o + j] - di) * scale);
    }
}

static const char *const variants[] = {"simple: thread per row / per key", "production launcher",
                                       "cuBLAS GEMMs + dS kernel"};
static const bool fixed_block[] = {false, true, false};

int main(int argc, char **argv) {
    sb_opts o;
    sb_att_shape a;
    sb_program p = sb_att_parse(argc, argv, "attention_backward", variants, 3, &o, &a);
    const int B = a.B, T = a.T, H = a.H, KVH = a.KVH, D = a.D, G = a.G, N = a.N;
    int32_t *cu = a.cu;
    size_t nq = (size_t)N * H * D, nk = (size_t)N * KVH * D, nl = (size_t)N * H;

    float *q = sb_random(nq, 1.5f), *k = sb_random(nk, 1.5f), *v = sb_random(nk, 1.0f);
    float *g = sb_random(nq, 1.0f), *out = sb_host(nq), *lse = sb_host(nl);
    float *aq = sb_random(nq, 0.5f), *ak = sb_random(nk, 0.5f), *av = sb_random(nk, 0.5f);
    float *all[] = {q, k, v, g, aq, ak, av};
    size_t sizes[] = {nq, nk, nk, nq, nq, nk, nk};
    for (int i = 0; i < 7; i++) sb_round_bf16(all[i], sizes[i]);
    attention_forward(out, lse, q, k, v, cu, B, H, KVH, D);
    sb_round_bf16(out, nq); /* the backward sees the bf16 output the GPU saved */
    /* the gradients alone (for the tolerance's scale), then on top of the accumulators */
    float *rq = sb_host(nq), *rk = sb_host(nk), *rv = sb_host(nk);
    attention_backward(rq, rk, rv, g, out, lse, q, k, v, cu, B, H, KVH, D);
    float gmax[3] = {sb_max_abs(rq, nq), sb_max_abs(rk, nk), sb_max_abs(rv, nk)};
    for (size_t i = 0; i < nq; i++) rq[i] += aq[i];
    for (size_t i = 0; i < nk; i++) rk[i] += ak[i], rv[i] += av[i];
    float *got = sb_host(nq > nk ? nq : nk);

    bf16 *d_q = sb_upload_bf16(q, nq), *d_k = sb_upload_bf16(k, nk), *d_v = sb_upload_bf16(v, nk);
    bf16 *d_g = sb_upload_bf16(g, nq), *d_out = sb_upload_bf16(out, nq);
    bf16 *d_dq = sb_dev<bf16>(nq), *d_dk = sb_dev<bf16>(nk), *d_dv = sb_dev<bf16>(nk);
    float *d_lse = sb_upload_f32(lse, nl);
    int32_t *d_cu = sb_dev<int32_t>(B + 1);
    SB_CHECK(cudaMemcpy(d_cu, cu, (B + 1) * sizeof(int32_t), cudaMemcpyHostToDevice));
    /* the accumulators' starting values, kept on the device for the resets */
    bf16 *d_aq = sb_upload_bf16(aq, nq), *d_ak = sb_upload_bf16(ak, nk),
         *d_av = sb_upload_bf16(av, nk);
    /* variant 3's scratch: one sequence, all heads */
    size_t nsq = (size_t)H * T * T;
    float *d_S = sb_dev<float>(nsq), *d_dP = sb_dev<float>(nsq);
    bf16 *d_P = sb_dev<bf16>(nsq), *d_dS = sb_dev<bf16>(nsq);
    dp_blas *blas;
    SB_OK(DP_CUDA_FN(blas_create)(&blas));
    const float scale = 1.0f / sqrtf((float)D);

    /* One call per (sequence s, position g within a kv group), batched over kv heads: head
     * h = kvh * G + g steps through q, dout, dq by G*D, through k, v, dk, dv by D and through
     * the (H, Ts, Ts) scratch by G*Ts*Ts. */
#define SB_GEMM(tA, tB, M, Nn, K, alpha, A, lda, sA, Bm, ldb, sB, beta, C, ldc, sC, ab, c)         \
    SB_OK(DP_CUDA_FN(gemm_batched)(blas, tA, tB, M, Nn, K, alpha, A, lda, sA, Bm, ldb, sB, beta,   \
                                   C, ldc, sC, KVH, ab, c))
    auto gemms_scores =
        [&](int s, int gi) { /* S = scale Q K^T, dP = dO V^T (fp32) */
                             int s0 = cu[s], Ts = cu[s + 1] - s0;
                             size_t qo = ((size_t)s0 * H + gi) * D, ko = (size_t)s0 * KVH * D,
                                    so = (size_t)gi * Ts * Ts;
                             int64_t sq = (int64_t)G * D, ss = (int64_t)G * Ts * Ts;
                             SB_GEMM(false, true, Ts, Ts, D, scale, d_q + qo, H * D, sq, d_k + ko,
                                     KVH * D, D, 0.0f, d_S + so, Ts, ss, DP_BF16, DP_F32);
                             SB_GEMM(false, true, Ts, Ts, D, 1.0f, d_g + qo, H * D, sq, d_v + ko,
                                     KVH * D, D, 0.0f, d_dP + so, Ts, ss, DP_BF16, DP_F32);
        };
    auto gemms_grads =
        [&](int s, int gi) { /* dQ += dS K, dK += dS^T Q, dV += P^T dO */
                             int s0 = cu[s], Ts = cu[s + 1] - s0;
                             size_t qo = ((size_t)s0 * H + gi) * D, ko = (size_t)s0 * KVH * D,
                                    so = (size_t)gi * Ts * Ts;
                             int64_t sq = (int64_t)G * D, ss = (int64_t)G * Ts * Ts;
                             SB_GEMM(false, false, Ts, D, Ts, 1.0f, d_dS + so, Ts, ss, d_k + ko,
                                     KVH * D, D, 1.0f, d_dq + qo, H * D, sq, DP_BF16, DP_BF16);
                             SB_GEMM(true, false, Ts, D, Ts, 1.0f, d_dS + so, Ts, ss, d_q + qo,
                                     H * D, sq, 1.0f, d_dk + ko, KVH * D, D, DP_BF16, DP_BF16);
                             SB_GEMM(true, false, Ts, D, Ts, 1.0f, d_P + so, Ts, ss, d_g + qo,
                                     H * D, sq, 1.0f, d_dv + ko, KVH * D, D, DP_BF16, DP_BF16);
        };
#undef SB_GEMM
    auto reset = [&] {
        SB_CHECK(cudaMemcpy(d_dq, d_aq, nq * 2, cudaMemcpyDeviceToDevice));
        SB_CHECK(cudaMemcpy(d_dk, d_ak, nk * 2, cudaMemcpyDeviceToDevice));
        SB_CHECK(cudaMemcpy(d_dv, d_av, nk * 2, cudaMemcpyDeviceToDevice));
    };
    /* bf16 results (2^-9 of the accumulated value) plus the gradient's own error, which scales
     * with its largest entry (sums over many rows of bf16-stored terms) */
    auto check = [&] {
        sb_download_bf16(got, d_dq, nq);
        sb_compare("dq", rq, got, nq, 2e-2 * gmax[0], 8e-3);
        sb_download_bf16(got, d_dk, nk);
        sb_compare("dk", rk, got, nk, 2e-2 * gmax[1], 8e-3);
        sb_download_bf16(got, d_dv, nk);
        sb_compare("dv", rv, got, nk, 2e-2 * gmax[2], 8e-3);
    };

    double causal = 0, square = 0; /* score entries: causal triangle, dense square */
    for (int s = 0; s < B; s++) {
        double Ts = cu[s + 1] - cu[s];
        causal += Ts * (Ts + 1) / 2, square += Ts * Ts;
    }
    double io_bytes = 2.0 * (5 * nq + 6 * nk) + 4.0 * nl;
    float peer_ms = sb_peer(
        "cuBLAS: the 5 GEMMs, dense", o, {io_bytes, 10.0 * H * D * square}, reset,
        [&] {
            for (int s = 0; s < B; s++)
                for (int gi = 0; gi < G; gi++) gemms_scores(s, gi), gemms_grads(s, gi);
        },
        [] { printf("  (timed only; variant 3 validates these GEMMs with the dS kernel)"); });

    sb_cost cost = {io_bytes, 10.0 * H * D * causal};
    sb_sweep(
        p, o, fixed_block, cost, peer_ms, reset,
        [&](int var, int block) {
            switch (var) {
            case 1:
                DP_LAUNCH(attention_dq_kernel1, dp_ceil_div(N * H, block), block, 0, 0, d_dq, d_g,
                          d_out, d_lse, d_q, d_k, d_v, d_cu, B, N, H, KVH, D);
                DP_LAUNCH(attention_dkv_kernel1, dp_ceil_div(N * KVH, block), block, 0, 0, d_dk,
                          d_dv, d_g, d_out, d_lse, d_q, d_k, d_v, d_cu, B, N, H, KVH, D);
                return true;
            case 2:
                SB_OK(DP_CUDA_FN(attention_backward_bf16)(
                    (dp_bf16 *)d_dq, (dp_bf16 *)d_dk, (dp_bf16 *)d_dv, (const dp_bf16 *)d_g,
                    (const dp_bf16 *)d_out, d_lse, (const dp_bf16 *)d_q, (const dp_bf16 *)d_k,
                    (const dp_bf16 *)d_v, d_cu, B, N, H, KVH, D));
                return true;
            case 3:
                if (block % 32) return false;
                for (int s = 0; s < B; s++) {
                    int Ts = cu[s + 1] - cu[s];
                    for (int gi = 0; gi < G; gi++) gemms_scores(s, gi);
                    DP_LAUNCH(attention_ds_kernel, dim3(Ts, H), block, 0, 0, d_P, d_dS, d_S, d_dP,
                              d_lse, d_g, d_out, Ts, H, D, cu[s], scale);
                    for (int gi = 0; gi < G; gi++) gemms_grads(s, gi);
                }
                return true;
            }
            return false;
        },
        check);

    SB_OK(DP_CUDA_FN(blas_destroy)(blas));
    void *dev[] = {d_q,  d_k,  d_v,  d_g,  d_out, d_dq, d_dk, d_dv, d_lse,
                   d_cu, d_aq, d_ak, d_av, d_S,   d_dP, d_P,  d_dS};
    for (void *d : dev) SB_CHECK(cudaFree(d));
    for (int i = 0; i < 7; i++) free(all[i]);
    free(cu), free(out), free(lse), free(rq), free(rk), free(rv), free(got);
    return sb_finish(p);
}
