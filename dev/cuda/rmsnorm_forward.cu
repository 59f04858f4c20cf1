/* Sandbox: RMSNorm forward with bf16 activations and an fp32 weight (the training layout),
 * out = weight * x * rsqrt(mean(x^2) + eps) per row, rstd saved. Reference: the CPU
 * rmsnorm_forward on the same bf16-rounded inputs. */
#include "dev/cuda/sandbox.cuh"

typedef __nv_bfloat16 bf16;

/* variant 1: one thread per row, serial over C (simple and correct, uncoalesced) */
__global__ static void rmsnorm_forward_kernel1(bf16 *out, float *rstd, const bf16 *inp,
                                               const float *weight, int N, int C, float eps) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const bf16 *x = inp + (size_t)n * C; // (C)
    bf16 *o = out + (size_t)n * C;       // (C)
    float ss = 0.0f;
    for (int c = 0; c < C; c++) {
        float xc = __bfloat162float(x[c]);
        ss += xc * xc;
    }
    float r = rsqrtf(ss / C + eps);
    for (int c = 0; c < C; c++) o[c] = __float2bfloat16(weight[c] * (__bfloat162float(x[c]) * r));
    rstd[n] = r;
}

/* variant 3: one warp per row, a shuffle reduction, no shared memory or block barrier */
__global__ static void rmsnorm_forward_kernel3(bf16 *out, float *rstd, const bf16 *inp,
                                               const float *weight, int N, int C, float eps) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return; /* whole warps leave together */
    const bf16 *x = inp + (size_t)n * C;
    bf16 *o = out + (size_t)n * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xc = __bfloat162float(x[c]);
        ss += xc * xc;
    }
    float r = rsqrtf(dp_warp_sum(ss) / C + eps);
    for (int c = lane; c < C; c += 32)
        o[c] = __float2bfloat16(weight[c] * (__bfloat162float(x[c]) * r));
    if (lane == 0) rstd[n] = r;
}

/* variant 4: one block per row, 128-bit loads and stores (8 bf16, 2 x 4 weights); C % 8 == 0 */
__global__ static void rmsnorm_forward_kernel4(bf16 *out, float *rstd, const bf16 *inp,
                                               const float *weight, int C, float eps) {
    __shared__ float partial[32];
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *o = out + (size_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
        sb_bf16x8 p = sb_load128<sb_bf16x8>(x + c);
        for (int k = 0; k < 8; k++) {
            float xc = __bfloat162float(p.v[k]);
            ss += xc * xc;
        }
    }
    float r = rsqrtf(dp_block_sum(ss, partial) / C + eps);
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
        sb_bf16x8 p = sb_load128<sb_bf16x8>(x + c), q;
        sb_f32x4 w0 = sb_load128<sb_f32x4>(weight + c), w1 = sb_load128<sb_f32x4>(weight + c + 4);
        for (int k = 0; k < 8; k++)
            q.v[k] =
                __float2bfloat16((k < 4 ? w0.v[k] : w1.v[k - 4]) * (__bfloat162float(p.v[k]) * r));
        sb_store128(o + c, q);
    }
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}

static const char *const variants[] = {"simple: thread per row", "production (default 256)",
                                       "warp per row (shuffles only)",
                                       "block per row, 128-bit loads"};
static const bool fixed_block[] = {false, false, false, false};

int main(int argc, char **argv) {
    static const int defaults[] = {8192, 3584}; /* B*T rows of Qwen2.5-7B's hidden size */
    sb_program p = {"rmsnorm_forward", "N,C", "rows (B*T), hidden size C", 2, defaults,
                    variants,          4};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    int N = o.shape[0], C = o.shape[1];
    size_t n = (size_t)N * C;
    const float eps = 1e-6f;

    float *x = sb_random(n, 2.0f), *w = sb_random(C, 0.5f);
    for (int c = 0; c < C; c++) w[c] += 1.0f;
    sb_round_bf16(x, n);
    float *ref = sb_host(n), *ref_rstd = sb_host(N), *got = sb_host(n), *got_rstd = sb_host(N);
    rmsnorm_forward(ref, ref_rstd, x, w, N, C, eps);

    bf16 *d_x = sb_upload_bf16(x, n), *d_out = sb_dev<bf16>(n);
    float *d_w = sb_upload_f32(w, C), *d_rstd = sb_dev<float>(N);
    sb_cost cost = {2.0 * n * sizeof(bf16) + C * 4.0 + N * 4.0, 0};

    sb_sweep(
        p, o, fixed_block, cost, -1.0f,
        [&] {
            sb_poison(d_out, n * sizeof(bf16));
            sb_poison(d_rstd, N * sizeof(float));
        },
        [&](int v, int block) {
            switch (v) {
            case 1:
                DP_LAUNCH(rmsnorm_forward_kernel1, dp_ceil_div(N, block), block, 0, 0, d_out,
                          d_rstd, d_x, d_w, N, C, eps);
                return true;
            case 2:
                if (block % 32) return false;
                SB_OK(DP_CUDA_FN(rmsnorm_forward_bf16_block)(
                    (dp_bf16 *)d_out, d_rstd, (const dp_bf16 *)d_x, d_w, N, C, eps, block));
                return true;
            case 3:
                if (block % 32) return false;
                DP_LAUNCH(rmsnorm_forward_kernel3, dp_ceil_div(N, block / 32), block, 0, 0, d_out,
                          d_rstd, d_x, d_w, N, C, eps);
                return true;
            case 4:
                if (block % 32 || C % 8) return false;
                DP_LAUNCH(rmsnorm_forward_kernel4, N, block, 0, 0, d_out, d_rstd, d_x, d_w, C, eps);
                return true;
            }
            return false;
        },
        [&] {
            sb_download_bf16(got, d_out, n);
            sb_download_f32(got_rstd, d_rstd, N);
            /* bf16 output: two roundings of 2^-9 at most, plus the fp32 sum's order */
            sb_compare("out", ref, got, n, 1e-5, 8e-3);
            sb_compare("rstd", ref_rstd, got_rstd, N, 0, 1e-4);
        });

    SB_CHECK(cudaFree(d_x));
    SB_CHECK(cudaFree(d_out));
    SB_CHECK(cudaFree(d_w));
    SB_CHECK(cudaFree(d_rstd));
    free(x), free(w), free(ref), free(ref_rstd), free(got), free(got_rstd);
    return sb_finish(p);
}
