/* Sandbox: NF4 (double-quantized absmax) dequantization to bf16, the step before each cuBLAS
 * GEMM over a frozen base weight. Reference: the CPU dp_nf4_dequantize rounded to bf16; every
 * variant uses the same fp32 roundings (no FMA), so the comparison is bit-exact. */
#include "dev/cuda/sandbox.cuh"

typedef __nv_bfloat16 bf16;

/* absmax of quantization block b: code_map[absmax_q] * absmax2 + offset, rounded as the CPU */
__device__ static __forceinline__ float sb_nf4_absmax(const dp_nf4_dev &w, int64_t b) {
    return __fadd_rn(__fmul_rn(w.maps[w.absmax_q[b]], w.absmax2[b / 256]), w.offset);
}
/* code of element e: high nibble first */
__device__ static __forceinline__ int sb_nf4_code(uint8_t byte, int64_t e) {
    return (e & 1) ? (byte & 15) : (byte >> 4);
}

/* variant 1: one thread per element, a grid that covers n */
__global__ static void nf4_dequantize_kernel1(bf16 *out, dp_nf4_dev w) {
    int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= w.n) return;
    float v = w.maps[256 + sb_nf4_code(w.codes[e / 2], e)];
    out[e] = __float2bfloat16(__fmul_rn(v, sb_nf4_absmax(w, e / w.blocksize)));
}

/* variant 3: one thread per code byte (two elements of one block), one 32-bit bf16x2 store */
__global__ static void nf4_dequantize_kernel3(bf16 *out, dp_nf4_dev w) {
    int64_t nbytes = (w.n + 1) / 2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nbytes;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint8_t byte = w.codes[i];
        float a = sb_nf4_absmax(w, 2 * i / w.blocksize); /* blocksize is even: one block */
        __nv_bfloat162 pair;
        pair.x = __float2bfloat16(__fmul_rn(w.maps[256 + (byte >> 4)], a));
        pair.y = __float2bfloat16(__fmul_rn(w.maps[256 + (byte & 15)], a));
        if (2 * i + 1 < w.n)
            *reinterpret_cast<__nv_bfloat162 *>(out + 2 * i) = pair;
        else
            out[2 * i] = pair.x; /* odd n: the last byte holds one element */
    }
}

/* variant 4: one thread per 4 code bytes (8 elements, one block since blocksize % 8 == 0):
 * a 32-bit load of codes, the NF4 table in shared memory, one 128-bit store */
__global__ static void nf4_dequantize_kernel4(bf16 *out, dp_nf4_dev w) {
    __shared__ float nf4[16];
    if (threadIdx.x < 16) nf4[threadIdx.x] = w.maps[256 + threadIdx.x];
    __syncthreads();
    int64_t nchunks = (w.n + 7) / 8;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nchunks;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t e0 = 8 * i;
        float a = sb_nf4_absmax(w, e0 / w.blocksize);
        if (e0 + 8 <= w.n) {
            uint32_t bytes = *reinterpret_cast<const uint32_t *>(w.codes + 4 * i);
            sb_bf16x8 q;
            for (int k = 0; k < 4; k++) { /* byte k (little-endian) holds elements 2k, 2k+1 */
                uint32_t b = bytes >> (8 * k) & 0xff;
                q.v[2 * k] = __float2bfloat16(__fmul_rn(nf4[b >> 4], a));
                q.v[2 * k + 1] = __float2bfloat16(__fmul_rn(nf4[b & 15], a));
            }
            sb_store128(out + e0, q);
        } else { /* the ragged tail, element by element */
            for (int64_t e = e0; e < w.n; e++)
                out[e] = __float2bfloat16(__fmul_rn(nf4[sb_nf4_code(w.codes[e / 2], e)], a));
        }
    }
}

static const char *const variants[] = {"simple: thread per element", "production (default 256)",
                                       "thread per byte, bf16x2 stores",
                                       "thread per 8, 128-bit stores"};
static const bool fixed_block[] = {false, false, false, false};

int main(int argc, char **argv) {
    static const int defaults[] = {18944, 3584}; /* Qwen2.5-7B's gate/up projection */
    sb_program p = {"nf4_dequantize",
                    "ROWS,COLS",
                    "weight rows, columns (NF4 block 64)",
                    2,
                    defaults,
                    variants,
                    4};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    int rows = o.shape[0], cols = o.shape[1];
    size_t n = (size_t)rows * cols;

    float *w = sb_random(n, 0.05f), *ref = sb_host(n), *got = sb_host(n);
    dp_nf4 q;
    SB_OK(dp_nf4_quantize(&q, w, rows, cols, 64));
    dp_nf4_dequantize(&q, ref);
    sb_round_bf16(ref, n); /* the same round-to-nearest-even as __float2bfloat16 */
    dp_nf4_dev d;
    SB_OK(DP_CUDA_FN(nf4_upload)(&d, &q));
    bf16 *d_out = sb_dev<bf16>(n);
    int sms = 0;
#ifndef DOPPEL_EMU
    SB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
#endif
    /* grid-stride variants: enough blocks to fill the GPU several times over */
    auto grid = [&](size_t items, int block) {
        size_t g = (items + block - 1) / block, cap = sms > 0 ? (size_t)sms * 32 : 65535;
        return (int)(g < 1 ? 1 : g > cap ? cap : g);
    };
    sb_cost cost = {(double)(n + 1) / 2 + q.nblocks + (q.nblocks + 255) / 256 * 4.0 + 2.0 * n, 0};

    sb_sweep(
        p, o, fixed_block, cost, -1.0f, [&] { sb_poison(d_out, n * sizeof(bf16)); },
        [&](int v, int block) {
            switch (v) {
            case 1:
                DP_LAUNCH(nf4_dequantize_kernel1, (unsigned)((n + block - 1) / block), block, 0, 0,
                          d_out, d);
                return true;
            case 2:
                SB_OK(DP_CUDA_FN(nf4_dequantize_bf16_block)((dp_bf16 *)d_out, &d, block));
                return true;
            case 3:
                DP_LAUNCH(nf4_dequantize_kernel3, grid((n + 1) / 2, block), block, 0, 0, d_out, d);
                return true;
            case 4:
                if (block < 16 || d.blocksize % 8) return false;
                DP_LAUNCH(nf4_dequantize_kernel4, grid((n + 7) / 8, block), block, 0, 0, d_out, d);
                return true;
            }
            return false;
        },
        [&] {
            sb_download_bf16(got, d_out, n);
            sb_compare("out (bit-exact)", ref, got, n, 0, 0);
        });

    SB_OK(DP_CUDA_FN(nf4_free)(&d));
    SB_CHECK(cudaFree(d_out));
    dp_nf4_free(&q);
    free(w), free(ref), free(got);
    return sb_finish(p);
}
