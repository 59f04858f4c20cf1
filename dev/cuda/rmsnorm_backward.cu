/* Sandbox: RMSNorm backward with bf16 activations, fp32 weight and rstd (saved by the forward):
 * dinp (+=, bf16) = r w dy - x r^3 / C sum(w dy x) per row and dweight (+=, fp32) = sum over
 * rows of dy x r per column. Reference: the CPU rmsnorm_backward on the same bf16-rounded
 * inputs. The column sums are where the variants differ most: N rows per column. */
#include "dev/cuda/sandbox.cuh"

typedef __nv_bfloat16 bf16;

/* variant 1: one thread per row for dinp, one thread per column for dweight (rows in order) */
__global__ static void rmsnorm_dinp_kernel1(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                            const float *weight, const float *rstd, int N, int C) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    size_t row = (size_t)n * C;
    float r = rstd[n], dot = 0.0f;
    for (int c = 0; c < C; c++)
        dot += weight[c] * __bfloat162float(dout[row + c]) * __bfloat162float(inp[row + c]);
    float k = dot * r * r * r / C;
    for (int c = 0; c < C; c++) {
        float dx =
            r * weight[c] * __bfloat162float(dout[row + c]) - k * __bfloat162float(inp[row + c]);
        dinp[row + c] = __float2bfloat16(__bfloat162float(dinp[row + c]) + dx);
    }
}
__global__ static void rmsnorm_dweight_kernel1(float *dweight, const bf16 *dout, const bf16 *inp,
                                               const float *rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++)
        s += __bfloat162float(dout[(size_t)n * C + c]) * __bfloat162float(inp[(size_t)n * C + c]) *
             rstd[n];
    dweight[c] += s;
}

/* variant 3: a warp per row for dinp (shuffle reduction), and dweight in two deterministic
 * stages: partial column sums over chunks of rows into (R, C) scratch, then the R partials of
 * each column added in order (R times more threads than one per column) */
__global__ static void rmsnorm_dinp_kernel3(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                            const float *weight, const float *rstd, int N, int C) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return; /* whole warps leave together */
    size_t row = (size_t)n * C;
    float r = rstd[n], dot = 0.0f;
    for (int c = lane; c < C; c += 32)
        dot += weight[c] * __bfloat162float(dout[row + c]) * __bfloat162float(inp[row + c]);
    float k = dp_warp_sum(dot) * r * r * r / C;
    for (int c = lane; c < C; c += 32) {
        float dx =
            r * weight[c] * __bfloat162float(dout[row + c]) - k * __bfloat162float(inp[row + c]);
        dinp[row + c] = __float2bfloat16(__bfloat162float(dinp[row + c]) + dx);
    }
}
/* grid (ceil(C / block), R): chunk blockIdx.y of the rows, one column per thread */
__global__ static void rmsnorm_dweight_partial_kernel3(float *partial, const bf16 *dout,
                                                       const bf16 *inp, const float *rstd, int N,
                                                       int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, R = gridDim.y, chunk = (N + R - 1) / R;
    if (c >= C) return;
    int n0 = blockIdx.y * chunk, n1 = min(n0 + chunk, N);
    float s = 0.0f;
    for (int n = n0; n < n1; n++)
        s += __bfloat162float(dout[(size_t)n * C + c]) * __bfloat162float(inp[(size_t)n * C + c]) *
             rstd[n];
    partial[(size_t)blockIdx.y * C + c] = s;
}
__global__ static void rmsnorm_dweight_reduce_kernel3(float *dweight, const float *partial, int R,
                                                      int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int r = 0; r < R; r++) s += partial[(size_t)r * C + c];
    dweight[c] += s;
}

static const char *const variants[] = {"simple: thread per row / column", "production launcher",
                                       "warp per row, 2-stage column sums"};
static const bool fixed_block[] = {false, true, false};

int main(int argc, char **argv) {
    static const int defaults[] = {8192, 3584};  /* B*T rows of Qwen2.5-7B's hidden size */
    static const int emu_defaults[] = {40, 200}; /* small and ragged: seconds under EMU */
    sb_program p = {
        "rmsnorm_backward", "N,C", "rows (B*T), hidden size C", 2, defaults, emu_defaults,
        variants,           3};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    int N = o.shape[0], C = o.shape[1];
    size_t n = (size_t)N * C;
    const int R = N < 64 ? N : 64; /* variant 3's row chunks */

    float *x = sb_random(n, 2.0f), *dy = sb_random(n, 1.0f), *w = sb_random(C, 0.5f);
    float *adx = sb_random(n, 0.5f), *adw = sb_random(C, 0.5f);
    for (int c = 0; c < C; c++) w[c] += 1.0f;
    sb_round_bf16(x, n), sb_round_bf16(dy, n), sb_round_bf16(adx, n);
    float *y = sb_host(n), *rstd = sb_host(N), *rdx = sb_host(n), *rdw = sb_host(C);
    rmsnorm_forward(y, rstd, x, w, N, C, 1e-6f);
    rmsnorm_backward(rdx, rdw, dy, x, w, rstd, N, C); /* the gradients alone: their scale */
    float gmax_dx = sb_max_abs(rdx, n), gmax_dw = sb_max_abs(rdw, C);
    for (size_t i = 0; i < n; i++) rdx[i] += adx[i];
    for (int c = 0; c < C; c++) rdw[c] += adw[c];
    float *got = sb_host(n);

    bf16 *d_x = sb_upload_bf16(x, n), *d_dy = sb_upload_bf16(dy, n),
         *d_adx = sb_upload_bf16(adx, n);
    bf16 *d_dx = sb_dev<bf16>(n);
    float *d_w = sb_upload_f32(w, C), *d_rstd = sb_upload_f32(rstd, N), *d_dw = sb_dev<float>(C);
    float *d_partial = sb_dev<float>((size_t)R * C);
    sb_cost cost = {2.0 * (4.0 * n) + 4.0 * (3.0 * C + N), 0}; /* x, dy, dinp r+w; w, dw r+w */

    sb_sweep(
        p, o, fixed_block, cost, -1.0f,
        [&] { /* both gradients accumulate: every run starts from the same values */
              SB_CHECK(cudaMemcpy(d_dx, d_adx, n * 2, cudaMemcpyDeviceToDevice));
              SB_CHECK(cudaMemcpy(d_dw, adw, C * 4, cudaMemcpyHostToDevice));
        },
        [&](int v, int block) {
            switch (v) {
            case 1:
                DP_LAUNCH(rmsnorm_dinp_kernel1, dp_ceil_div(N, block), block, 0, 0, d_dx, d_dy, d_x,
                          d_w, d_rstd, N, C);
                DP_LAUNCH(rmsnorm_dweight_kernel1, dp_ceil_div(C, block), block, 0, 0, d_dw, d_dy,
                          d_x, d_rstd, N, C);
                return true;
            case 2:
                SB_OK(DP_CUDA_FN(rmsnorm_backward_bf16)((dp_bf16 *)d_dx, d_dw,
                                                        (const dp_bf16 *)d_dy, (const dp_bf16 *)d_x,
                                                        d_w, d_rstd, N, C));
                return true;
            case 3:
                if (block % 32) return false;
                DP_LAUNCH(rmsnorm_dinp_kernel3, dp_ceil_div(N, block / 32), block, 0, 0, d_dx, d_dy,
                          d_x, d_w, d_rstd, N, C);
                DP_LAUNCH(rmsnorm_dweight_partial_kernel3, dim3(dp_ceil_div(C, block), R), block, 0,
                          0, d_partial, d_dy, d_x, d_rstd, N, C);
                DP_LAUNCH(rmsnorm_dweight_reduce_kernel3, dp_ceil_div(C, block), block, 0, 0, d_dw,
                          d_partial, R, C);
                return true;
            }
            return false;
        },
        [&] {
            sb_download_bf16(got, d_dx, n);
            sb_compare("dinp", rdx, got, n, 1e-2 * gmax_dx, 8e-3); /* bf16 result */
            sb_download_f32(got, d_dw, C);
            sb_compare("dweight", rdw, got, C, 2e-5 * gmax_dw, 1e-5); /* fp32 sums of N rows */
        });

    void *dev[] = {d_x, d_dy, d_adx, d_dx, d_w, d_rstd, d_dw, d_partial};
    for (void *d : dev) SB_CHECK(cudaFree(d));
    free(x), free(dy), free(w), free(adx), free(adw), free(y), free(rstd), free(rdx), free(rdw);
    free(got);
    return sb_finish(p);
}
