/* Sandbox: the fused AdamW step over fp32 LoRA parameters, gradients and moments (in place).
 * Reference: the CPU adamw_update from the same starting state. */
#include "dev/cuda/sandbox.cuh"

/* the per-element update, in the CPU twin's arithmetic order */
__device__ static __forceinline__ void sb_adamw_one(float &p, float &m, float &v, float g,
                                                    float beta1, float beta2, float eps,
                                                    float step_size, float bc2_sqrt, float decay,
                                                    float grad_scale) {
    g *= grad_scale;
    float pd = p * decay;
    float mi = m + (1.0f - beta1) * (g - m);
    float vi = v * beta2 + (1.0f - beta2) * g * g;
    p = pd - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    m = mi;
    v = vi;
}

/* variant 1: one thread per element, a grid that covers n */
__global__ static void adamw_kernel1(float *param, const float *grad, float *m, float *v, size_t n,
                                     float beta1, float beta2, float eps, float step_size,
                                     float bc2_sqrt, float decay, float grad_scale) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    sb_adamw_one(param[i], m[i], v[i], grad[i], beta1, beta2, eps, step_size, bc2_sqrt, decay,
                 grad_scale);
}

/* variant 3: four elements per thread through 128-bit loads and stores, grid-stride; the
 * n % 4 tail by the first threads */
__global__ static void adamw_kernel3(float *param, const float *grad, float *m, float *v, size_t n,
                                     float beta1, float beta2, float eps, float step_size,
                                     float bc2_sqrt, float decay, float grad_scale) {
    size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x,
           stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = tid; i < n / 4; i += stride) {
        sb_f32x4 p = sb_load128<sb_f32x4>(param + 4 * i), g = sb_load128<sb_f32x4>(grad + 4 * i);
        sb_f32x4 mm = sb_load128<sb_f32x4>(m + 4 * i), vv = sb_load128<sb_f32x4>(v + 4 * i);
        for (int k = 0; k < 4; k++)
            sb_adamw_one(p.v[k], mm.v[k], vv.v[k], g.v[k], beta1, beta2, eps, step_size, bc2_sqrt,
                         decay, grad_scale);
        sb_store128(param + 4 * i, p);
        sb_store128(m + 4 * i, mm);
        sb_store128(v + 4 * i, vv);
    }
    size_t i = n / 4 * 4 + tid;
    if (i < n)
        sb_adamw_one(param[i], m[i], v[i], grad[i], beta1, beta2, eps, step_size, bc2_sqrt, decay,
                     grad_scale);
}

static const char *const variants[] = {"simple: thread per element", "production (default 256)",
                                       "4 per thread, 128-bit, grid-stride"};
static const bool fixed_block[] = {false, false, false};

int main(int argc, char **argv) {
    static const int defaults[] = {40370176}; /* LoRA r=16 on every linear of Qwen2.5-7B */
    sb_program p = {"adamw", "n", "parameter count", 1, defaults, variants, 3};
    sb_opts o;
    sb_parse(argc, argv, p, &o);
    size_t n = (size_t)o.shape[0];
    const float lr = 2e-4f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 0.01f, scale = 0.7f;
    const int t = 10; /* mid-warm-up: the bias corrections matter */

    float *param = sb_random(n, 1.0f), *grad = sb_random(n, 1.0f), *m0 = sb_random(n, 0.1f);
    float *v0 = sb_random(n, 0.01f);
    for (size_t i = 0; i < n; i++) v0[i] = fabsf(v0[i]);
    float *rp = sb_host(n), *rm = sb_host(n), *rv = sb_host(n);
    memcpy(rp, param, n * 4), memcpy(rm, m0, n * 4), memcpy(rv, v0, n * 4);
    adamw_update(rp, grad, rm, rv, n, lr, beta1, beta2, eps, wd, scale, t);

    float *d_p = sb_dev<float>(n), *d_g = sb_upload_f32(grad, n), *d_m = sb_dev<float>(n),
          *d_v = sb_dev<float>(n), *got = sb_host(n);
    /* the launcher's derived constants, for the sandbox's own kernels */
    float step_size = lr / (1.0f - powf(beta1, (float)t));
    float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)t)), decay = 1.0f - lr * wd;
    int sms = 0;
#ifndef DOPPEL_EMU
    SB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
#endif
    sb_cost cost = {7.0 * 4 * n, 0}; /* param, grad, m, v read; param, m, v written */

    sb_sweep(
        p, o, fixed_block, cost, -1.0f,
        [&] { /* the update is in place: every run starts from the same state */
              SB_CHECK(cudaMemcpy(d_p, param, n * 4, cudaMemcpyHostToDevice));
              SB_CHECK(cudaMemcpy(d_m, m0, n * 4, cudaMemcpyHostToDevice));
              SB_CHECK(cudaMemcpy(d_v, v0, n * 4, cudaMemcpyHostToDevice));
        },
        [&](int var, int block) {
            switch (var) {
            case 1:
                DP_LAUNCH(adamw_kernel1, (unsigned)((n + block - 1) / block), block, 0, 0, d_p, d_g,
                          d_m, d_v, n, beta1, beta2, eps, step_size, bc2_sqrt, decay, scale);
                return true;
            case 2:
                SB_OK(DP_CUDA_FN(adamw_update_block)(d_p, d_g, d_m, d_v, n, lr, beta1, beta2, eps,
                                                     wd, scale, t, block));
                return true;
            case 3: {
                size_t g = (n / 4 + block - 1) / block, cap = sms > 0 ? (size_t)sms * 16 : 65535;
                g = g < 1 ? 1 : g > cap ? cap : g;
                DP_LAUNCH(adamw_kernel3, (unsigned)g, block, 0, 0, d_p, d_g, d_m, d_v, n, beta1,
                          beta2, eps, step_size, bc2_sqrt, decay, scale);
                return true;
            }
            }
            return false;
        },
        [&] {
            sb_download_f32(got, d_p, n);
            sb_compare("param", rp, got, n, 1e-7, 1e-6);
            sb_download_f32(got, d_m, n);
            sb_compare("m", rm, got, n, 1e-9, 1e-5);
            sb_download_f32(got, d_v, n);
            sb_compare("v", rv, got, n, 1e-12, 1e-5);
        });

    void *dev[] = {d_p, d_g, d_m, d_v};
    for (void *d : dev) SB_CHECK(cudaFree(d));
    free(param), free(grad), free(m0), free(v0), free(rp), free(rm), free(rv), free(got);
    return sb_finish(p);
}
