/* Sandbox: SwiGLU forward, out = silu(gate) * up elementwise, bf16 in and out (the MLP's
 * activation in training). Reference: the CPU swiglu_forward on the same bf16-rounded inputs. */
#include "dev/cuda/sandbox.cuh"

typedef __nv_bfloat16 bf16;

__device__ static __forceinline__ float sb_swiglu(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

/* variant 1: one thread per element, a grid that covers n */
__global__ static void swiglu_forward_kernel1(bf16 *out, const bf16 *gate, const bf16 *up,
                                              size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = __float2bfloat16(sb_swiglu(__bfloat162float(gate[i]), __bfloat162float(up[i])));
}

/* variant 3: eight elements per thread through 128-bit loads and stores, grid-stride; the
 * n % 8 tail by the first threads */
__global__ static void swiglu_forward_kernel3(bf16 *out, const bf16 *gate, const bf16 *up,
                                              size_t n) {
    size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x,
           stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = tid; i < n / 8; i += stride) {
        sb_bf16x8 g = sb_load128<sb_bf16x8>(gate + 8 * i), u = sb_load128<sb_bf16x8>(up + 8 * i), o;
        for (int k = 0; k < 8; k++)
            o.v[k] =
                __float2bfloat16(sb_swiglu(__bfloat162float(g.v[k]), __bfloat162float(u.v[k])));
        sb_store128(out + 8 * i, o);
    }
    size_t i = n / 8 * 8 + tid;
    if (i < n)
        out[i] = __float2bfloat16(sb_swiglu(__bfloat162float(gate[i]), __bfloat162float(up[i])));
}

static const char *const variants[] = {"simple: thread per element", "production (default 256)",
                                       "8 per thread, 128-bit, grid-stride"};
static const bool fixed_block[] = {false, false, false};

int main(int argc, char **argv) {
    static const int defaults[] = {4096, 18944}; /* B*T rows of Qwen2.5-7B's FFN width */
    sb_program p = {"swiglu_forward", "N,F", "rows (B*T), FFN width F", 2, defaults, variants, 3};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    size_t n = (size_t)o.shape[0] * o.shape[1];

    float *gate = sb_random(n, 4.0f), *up = sb_random(n, 2.0f);
    sb_round_bf16(gate, n), sb_round_bf16(up, n);
    float *ref = sb_host(n), *got = sb_host(n);
    swiglu_forward(ref, gate, up, n);

    bf16 *d_gate = sb_upload_bf16(gate, n), *d_up = sb_upload_bf16(up, n), *d_out = sb_dev<bf16>(n);
    int sms = 0;
#ifndef DOPPEL_EMU
    SB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
#endif
    sb_cost cost = {3.0 * 2 * n, 0};

    sb_sweep(
        p, o, fixed_block, cost, -1.0f, [&] { sb_poison(d_out, n * sizeof(bf16)); },
        [&](int v, int block) {
            switch (v) {
            case 1:
                DP_LAUNCH(swiglu_forward_kernel1, (unsigned)((n + block - 1) / block), block, 0, 0,
                          d_out, d_gate, d_up, n);
                return true;
            case 2:
                SB_OK(DP_CUDA_FN(swiglu_forward_bf16_block)(
                    (dp_bf16 *)d_out, (const dp_bf16 *)d_gate, (const dp_bf16 *)d_up, n, block));
                return true;
            case 3: {
                size_t g = (n / 8 + block - 1) / block, cap = sms > 0 ? (size_t)sms * 16 : 65535;
                g = g < 1 ? 1 : g > cap ? cap : g;
                DP_LAUNCH(swiglu_forward_kernel3, (unsigned)g, block, 0, 0, d_out, d_gate, d_up, n);
                return true;
            }
            }
            return false;
        },
        [&] {
            sb_download_bf16(got, d_out, n);
            sb_compare("out", ref, got, n, 1e-6, 8e-3); /* bf16 output, fp32 expf */
        });

    void *dev[] = {d_gate, d_up, d_out};
    for (void *d : dev) SB_CHECK(cudaFree(d));
    free(gate), free(up), free(ref), free(got);
    return sb_finish(p);
}
