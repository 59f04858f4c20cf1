/* Sandbox: the fused NF4 GEMV of decoding, out (OC) = W (OC, C) x (C) + bias, dequantizing W
 * on the fly (fp32 x and out). Reference: the CPU gemv_nf4. Peer: cuBLAS GemmEx (bf16 in, fp32
 * compute) over the same weight stored dense in bf16, i.e. what a 16-bit model's decode reads. */
#include "dev/cuda/sandbox.cuh"

typedef __nv_bfloat16 bf16;

__device__ static __forceinline__ float sb_nf4_absmax(const dp_nf4_dev &w, int64_t b) {
    return __fadd_rn(__fmul_rn(w.maps[w.absmax_q[b]], w.absmax2[b / 256]), w.offset);
}

/* variant 1: one thread per output row, serial over C */
__global__ static void gemv_nf4_kernel1(float *out, const float *x, dp_nf4_dev w, const float *bias,
                                        int C, int OC) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= OC) return;
    float s = 0.0f;
    for (int c = 0; c < C; c++) {
        int64_t e = (int64_t)row * C + c;
        uint8_t byte = w.codes[e / 2];
        float v = w.maps[256 + ((e & 1) ? (byte & 15) : (byte >> 4))];
        s += __fmul_rn(v, sb_nf4_absmax(w, e / w.blocksize)) * x[c];
    }
    out[row] = s + (bias ? bias[row] : 0.0f);
}

/* Dot product of 8 consecutive weights (one 32-bit load of codes, in one quantization block)
 * with 8 x values (two 128-bit loads). e0 % 8 == 0, c % 8 == 0. */
__device__ static __forceinline__ float sb_dot8(const dp_nf4_dev &w, const float *x, int64_t e0,
                                                int c) {
    uint32_t bytes = *reinterpret_cast<const uint32_t *>(w.codes + e0 / 2);
    sb_f32x4 x0 = sb_load128<sb_f32x4>(x + c), x1 = sb_load128<sb_f32x4>(x + c + 4);
    float a = sb_nf4_absmax(w, e0 / w.blocksize), s = 0.0f;
    for (int k = 0; k < 4; k++) {
        uint32_t b = bytes >> (8 * k) & 0xff;
        float xa = k < 2 ? x0.v[2 * k] : x1.v[2 * k - 4];
        float xb = k < 2 ? x0.v[2 * k + 1] : x1.v[2 * k - 3];
        s += __fmul_rn(w.maps[256 + (b >> 4)], a) * xa + __fmul_rn(w.maps[256 + (b & 15)], a) * xb;
    }
    return s;
}

/* variant 3: one warp per row, each lane 8 weights per step (vector loads); C % 8 == 0 */
__global__ static void gemv_nf4_kernel3(float *out, const float *x, dp_nf4_dev w, const float *bias,
                                        int C, int OC) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= OC) return; /* whole warps leave together */
    float s = 0.0f;
    for (int c = lane * 8; c < C; c += 32 * 8) s += sb_dot8(w, x, (int64_t)row * C + c, c);
    s = dp_warp_sum(s);
    if (lane == 0) out[row] = s + (bias ? bias[row] : 0.0f);
}

/* variant 4: one block per row (few long rows: a down projection), vector loads; C % 8 == 0 */
__global__ static void gemv_nf4_kernel4(float *out, const float *x, dp_nf4_dev w, const float *bias,
                                        int C) {
    __shared__ float partial[32];
    int row = blockIdx.x;
    float s = 0.0f;
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8)
        s += sb_dot8(w, x, (int64_t)row * C + c, c);
    s = dp_block_sum(s, partial);
    if (threadIdx.x == 0) out[row] = s + (bias ? bias[row] : 0.0f);
}

static const char *const variants[] = {"simple: thread per row", "production (default 256)",
                                       "warp per row, 8 per lane, vector", "block per row, vector"};
static const bool fixed_block[] = {false, false, false, false};

int main(int argc, char **argv) {
    static const int defaults[] = {18944, 3584}; /* Qwen2.5-7B's gate/up projection, one token */
    sb_program p = {"gemv_nf4", "OC,C", "output rows OC, input size C (NF4 block 64)", 2, defaults,
                    variants,   4};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    int OC = o.shape[0], C = o.shape[1];
    size_t n = (size_t)OC * C;

    float *w = sb_random(n, 1.0f), *x = sb_random(C, 1.0f), *bias = sb_random(OC, 1.0f);
    float *ref = sb_host(OC), *got = sb_host(OC);
    dp_nf4 q;
    SB_OK(dp_nf4_quantize(&q, w, OC, C, 64));
    gemv_nf4(ref, x, &q, bias, C, OC);

    dp_nf4_dev d;
    SB_OK(DP_CUDA_FN(nf4_upload)(&d, &q));
    float *d_x = sb_upload_f32(x, C), *d_bias = sb_upload_f32(bias, OC), *d_out = sb_dev<float>(OC);
    /* fp32 sums in another order than the CPU's: the error grows with C */
    const double abs_tol = 3e-7 * C, rel_tol = 1e-4;
    auto check = [&] {
        sb_download_f32(got, d_out, OC);
        sb_compare("out", ref, got, OC, abs_tol, rel_tol);
    };

    /* the peer: W dequantized once to dense bf16, x in bf16, out = x W^T + bias (beta = 1) */
    dp_blas *blas;
    SB_OK(DP_CUDA_FN(blas_create)(&blas));
    bf16 *d_wbf = sb_dev<bf16>(n);
    SB_OK(DP_CUDA_FN(nf4_dequantize_bf16)((dp_bf16 *)d_wbf, &d));
    float *xb = sb_host(C), *wb = sb_host(n), *ref_peer = sb_host(OC);
    memcpy(xb, x, C * sizeof(float));
    sb_round_bf16(xb, C);
    dp_nf4_dequantize(&q, wb);
    sb_round_bf16(wb, n);
    matmul_forward(ref_peer, xb, wb, bias, 1, C, OC); /* the CPU op on the same bf16 inputs */
    bf16 *d_xb = sb_upload_bf16(x, C);
    sb_cost peer_cost = {2.0 * n + 2.0 * C + 8.0 * OC, 2.0 * n};
    float peer_ms = sb_peer(
        "cuBLAS GemmEx bf16 dense W", o, peer_cost,
        [&] { SB_CHECK(cudaMemcpy(d_out, d_bias, OC * 4, cudaMemcpyDeviceToDevice)); },
        [&] {
            SB_OK(DP_CUDA_FN(gemm)(blas, false, true, 1, OC, C, 1.0f, d_xb, C, d_wbf, C, 1.0f,
                                   d_out, OC, DP_BF16, DP_F32));
        },
        [&] {
            sb_download_f32(got, d_out, OC);
            sb_compare("out vs CPU matmul on bf16", ref_peer, got, OC, abs_tol, rel_tol);
        });

    sb_cost cost = {(double)(n + 1) / 2 + q.nblocks + 4.0 * C + 8.0 * OC, 2.0 * n};
    sb_sweep(
        p, o, fixed_block, cost, peer_ms, [&] { sb_poison(d_out, OC * sizeof(float)); },
        [&](int v, int block) {
            switch (v) {
            case 1:
                DP_LAUNCH(gemv_nf4_kernel1, dp_ceil_div(OC, block), block, 0, 0, d_out, d_x, d,
                          d_bias, C, OC);
                return true;
            case 2:
                if (block % 32) return false;
                SB_OK(DP_CUDA_FN(gemv_nf4_block)(d_out, d_x, &d, d_bias, C, OC, block));
                return true;
            case 3:
                if (block % 32 || C % 8 || d.blocksize % 8) return false;
                DP_LAUNCH(gemv_nf4_kernel3, dp_ceil_div(OC, block / 32), block, 0, 0, d_out, d_x, d,
                          d_bias, C, OC);
                return true;
            case 4:
                if (block % 32 || C % 8 || d.blocksize % 8) return false;
                DP_LAUNCH(gemv_nf4_kernel4, OC, block, 0, 0, d_out, d_x, d, d_bias, C);
                return true;
            }
            return false;
        },
        check);

    SB_OK(DP_CUDA_FN(blas_destroy)(blas));
    SB_OK(DP_CUDA_FN(nf4_free)(&d));
    SB_CHECK(cudaFree(d_x));
    SB_CHECK(cudaFree(d_bias));
    SB_CHECK(cudaFree(d_out));
    SB_CHECK(cudaFree(d_wbf));
    SB_CHECK(cudaFree(d_xb));
    dp_nf4_free(&q);
    free(w), free(x), free(bias), free(ref), free(got), free(xb), free(wb), free(ref_peer);
    return sb_finish(p);
}
