/* Sandbox: fused cross-entropy forward + backward over a chunk of logits rows (bf16 logits and
 * dlogits, fp32 losses; target < 0 is an ignored row). Reference: the CPU
 * cross_entropy_forward_backward on the same bf16-rounded logits. */
#include "dev/cuda/sandbox.cuh"

typedef __nv_bfloat16 bf16;

/* variant 1: one thread per row, three serial passes over V (max, sum, dlogits) */
__global__ static void cross_entropy_kernel1(float *losses, bf16 *dlogits, const bf16 *logits,
                                             const int32_t *targets, int N, int V, float dloss) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const bf16 *x = logits + (size_t)n * V; // (V)
    bf16 *dx = dlogits + (size_t)n * V;     // (V)
    int t = targets[n];
    if (t < 0 || t >= V) {
        losses[n] = t < 0 ? 0.0f : NAN;
        for (int i = 0; i < V; i++) dx[i] = __float2bfloat16(0.0f);
        return;
    }
    float mx = -INFINITY, sum = 0.0f;
    for (int i = 0; i < V; i++) mx = fmaxf(mx, __bfloat162float(x[i]));
    for (int i = 0; i < V; i++) sum += expf(__bfloat162float(x[i]) - mx);
    float lse = mx + logf(sum);
    losses[n] = lse - __bfloat162float(x[t]);
    for (int i = 0; i < V; i++)
        dx[i] = __float2bfloat16((expf(__bfloat162float(x[i]) - lse) - (i == t)) * dloss);
}

/* ---- online softmax: a running (max m, sum s of exp(x - m)) per thread, merged in pairs */
__device__ static __forceinline__ void sb_online_add(float &m, float &s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else {
        s += expf(x - m);
    }
}
__device__ static __forceinline__ void sb_online_merge(float &m, float &s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return; /* both empty */
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}
/* the block's log-sum-exp, returned to every thread (blockDim.x a multiple of 32) */
__device__ static __forceinline__ float sb_block_lse(float m, float s) {
    __shared__ float ms[32], ss[32];
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off), s2 = __shfl_xor_sync(0xffffffffu, s, off);
        sb_online_merge(m, s, m2, s2);
    }
    if (threadIdx.x % 32 == 0) ms[threadIdx.x / 32] = m, ss[threadIdx.x / 32] = s;
    __syncthreads();
    m = -INFINITY, s = 0.0f;
    for (int w = 0; w < (int)blockDim.x / 32; w++) sb_online_merge(m, s, ms[w], ss[w]);
    return m + logf(s);
}

/* variant 3: one block per row, one pass for the log-sum-exp (online softmax), one for dlogits:
 * logits are read twice instead of three times */
__global__ static void cross_entropy_kernel3(float *losses, bf16 *dlogits, const bf16 *logits,
                                             const int32_t *targets, int V, float dloss) {
    const bf16 *x = logits + (size_t)blockIdx.x * V;
    bf16 *dx = dlogits + (size_t)blockIdx.x * V;
    int t = targets[blockIdx.x];
    if (t < 0 || t >= V) { /* uniform across the block */
        if (threadIdx.x == 0) losses[blockIdx.x] = t < 0 ? 0.0f : NAN;
        for (int i = threadIdx.x; i < V; i += blockDim.x) dx[i] = __float2bfloat16(0.0f);
        return;
    }
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sb_online_add(m, s, __bfloat162float(x[i]));
    float lse = sb_block_lse(m, s);
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - __bfloat162float(x[t]);
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        dx[i] = __float2bfloat16((expf(__bfloat162float(x[i]) - lse) - (i == t)) * dloss);
}

/* variant 4: variant 3 with 128-bit loads and stores (8 bf16 per access); V % 8 == 0 */
__global__ static void cross_entropy_kernel4(float *losses, bf16 *dlogits, const bf16 *logits,
                                             const int32_t *targets, int V, float dloss) {
    const bf16 *x = logits + (size_t)blockIdx.x * V;
    bf16 *dx = dlogits + (size_t)blockIdx.x * V;
    int t = targets[blockIdx.x];
    if (t < 0 || t >= V) {
        if (threadIdx.x == 0) losses[blockIdx.x] = t < 0 ? 0.0f : NAN;
        sb_bf16x8 z;
        for (int k = 0; k < 8; k++) z.v[k] = __float2bfloat16(0.0f);
        for (int i = threadIdx.x * 8; i < V; i += blockDim.x * 8) sb_store128(dx + i, z);
        return;
    }
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x * 8; i < V; i += blockDim.x * 8) {
        sb_bf16x8 p = sb_load128<sb_bf16x8>(x + i);
        for (int k = 0; k < 8; k++) sb_online_add(m, s, __bfloat162float(p.v[k]));
    }
    float lse = sb_block_lse(m, s);
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - __bfloat162float(x[t]);
    for (int i = threadIdx.x * 8; i < V; i += blockDim.x * 8) {
        sb_bf16x8 p = sb_load128<sb_bf16x8>(x + i), d;
        for (int k = 0; k < 8; k++)
            d.v[k] =
                __float2bfloat16((expf(__bfloat162float(p.v[k]) - lse) - (i + k == t)) * dloss);
        sb_store128(dx + i, d);
    }
}

static const char *const variants[] = {"simple: thread per row, 3 passes",
                                       "production (default 512)", "block per row, online softmax",
                                       "online softmax, 128-bit loads"};
static const bool fixed_block[] = {false, false, false, false};

int main(int argc, char **argv) {
    static const int defaults[] = {256, 152064}; /* a chunk of rows over Qwen2.5's vocabulary */
    sb_program p = {"cross_entropy", "N,V", "rows N (one chunk), vocabulary V", 2, defaults,
                    variants,        4};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    int N = o.shape[0], V = o.shape[1];
    size_t n = (size_t)N * V;
    const float dloss = 1.0f / N;

    float *x = sb_random(n, 4.0f);
    sb_round_bf16(x, n);
    int32_t *targets = (int32_t *)malloc(N * sizeof(int32_t));
    for (int i = 0; i < N; i++) /* every 7th row ignored (a prompt token) */
        targets[i] = i % 7 == 1 ? -1 : (int32_t)((sb_uniform() * 0.5f + 0.5f) * (V - 1));
    float *ref = sb_host(N), *ref_dx = sb_host(n), *got = sb_host(N), *got_dx = sb_host(n);
    cross_entropy_forward_backward(ref, ref_dx, x, targets, N, V, dloss);

    bf16 *d_x = sb_upload_bf16(x, n), *d_dx = sb_dev<bf16>(n);
    float *d_losses = sb_dev<float>(N);
    int32_t *d_t = sb_dev<int32_t>(N);
    SB_CHECK(cudaMemcpy(d_t, targets, N * sizeof(int32_t), cudaMemcpyHostToDevice));
    sb_cost cost = {4.0 * n + 8.0 * N, 0};

    sb_sweep(
        p, o, fixed_block, cost, -1.0f,
        [&] {
            sb_poison(d_dx, n * sizeof(bf16));
            sb_poison(d_losses, N * sizeof(float));
        },
        [&](int v, int block) {
            switch (v) {
            case 1:
                DP_LAUNCH(cross_entropy_kernel1, dp_ceil_div(N, block), block, 0, 0, d_losses, d_dx,
                          d_x, d_t, N, V, dloss);
                return true;
            case 2:
                if (block % 32) return false;
                SB_OK(DP_CUDA_FN(cross_entropy_forward_backward_bf16_block)(
                    d_losses, (dp_bf16 *)d_dx, (const dp_bf16 *)d_x, d_t, N, V, dloss, block));
                return true;
            case 3:
                if (block % 32) return false;
                DP_LAUNCH(cross_entropy_kernel3, N, block, 0, 0, d_losses, d_dx, d_x, d_t, V,
                          dloss);
                return true;
            case 4:
                if (block % 32 || V % 8) return false;
                DP_LAUNCH(cross_entropy_kernel4, N, block, 0, 0, d_losses, d_dx, d_x, d_t, V,
                          dloss);
                return true;
            }
            return false;
        },
        [&] {
            sb_download_f32(got, d_losses, N);
            sb_download_bf16(got_dx, d_dx, n);
            sb_compare("losses", ref, got, N, 1e-4, 1e-4);
            /* bf16 dlogits: rounding of 2^-9, plus fp32 exp and sums (relative everywhere) */
            sb_compare("dlogits", ref_dx, got_dx, n, 1e-9, 8e-3);
        });

    void *dev[] = {d_x, d_dx, d_losses, d_t};
    for (void *d : dev) SB_CHECK(cudaFree(d));
    free(x), free(targets), free(ref), free(ref_dx), free(got), free(got_dx);
    return sb_finish(p);
}
