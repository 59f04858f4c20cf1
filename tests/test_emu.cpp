/* The EMU execution layer itself: CUDA kernels written here (as they would be for nvcc) run
 * on CPU fibers; results are compared with plain loops. Covers block and warp reductions,
 * a block scan, dynamic shared memory, shuffle sub-widths, ballots, 2-D blocks, barrier
 * misuse reported as errors (not hangs), launch-configuration errors and memory accounting;
 * and the shared Philox generator against cuRAND's device code and the Random123 vectors. */
#include <curand_kernel.h> /* cuRAND's own Philox, compiled for the host: before the EMU macros */

#include "check.h"
#include "data/base/error.h"
#include "kernels/cuda/common.cuh"
#include "kernels/philox.h"

/* ---------------------------------------------------------------- kernels */
/* shared-memory tree reduction; one partial sum per block */
__global__ static void block_sum_kernel(float *out, const float *x, int n) {
    __shared__ float buf[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

/* warp reductions: shfl_down into lane 0 then atomicAdd; shfl_xor leaves the sum in every lane */
__global__ static void warp_sum_kernel(float *total, float *allreduce, const float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    float d = v;
    for (int off = 16; off > 0; off /= 2) d += __shfl_down_sync(0xffffffffu, d, off);
    if (threadIdx.x % 32 == 0) atomicAdd(total, d);
    float a = v;
    for (int off = 16; off > 0; off /= 2) a += __shfl_xor_sync(0xffffffffu, a, off);
    if (i < n) allreduce[i] = a;
}

/* inclusive block scan: warp scans through shfl_up, warp totals scanned by warp 0 */
__global__ static void block_scan_kernel(int *out, const int *x, int n) {
    __shared__ int warp_total[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int v = i < n ? x[i] : 0;
    for (int off = 1; off < 32; off *= 2) {
        int up = __shfl_up_sync(0xffffffffu, v, off);
        if (lane >= off) v += up;
    }
    if (lane == 31) warp_total[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x / 32;
        int t = lane < nw ? warp_total[lane] : 0;
        for (int off = 1; off < 32; off *= 2) {
            int up = __shfl_up_sync(0xffffffffu, t, off);
            if (lane >= off) t += up;
        }
        if (lane < nw) warp_total[lane] = t;
    }
    __syncthreads();
    if (warp > 0) v += warp_total[warp - 1];
    if (i < n) out[i] = v;
}

/* reverses each block's slice through dynamic shared memory (block size not a power of 2) */
__global__ static void reverse_kernel(float *out, const float *x, int n) {
    DP_DYNAMIC_SHARED(float, tile);
    int base = blockIdx.x * blockDim.x, i = base + threadIdx.x;
    int len = min((int)blockDim.x, n - base);
    if ((int)threadIdx.x < len) tile[threadIdx.x] = x[i];
    __syncthreads();
    if ((int)threadIdx.x < len) out[i] = tile[len - 1 - threadIdx.x];
}

/* broadcast from lane 0 of each 8-lane segment, plus a ballot of odd values */
__global__ static void shfl_width_kernel(int *bcast, unsigned *ballot, const int *x) {
    int t = threadIdx.x;
    bcast[t] = __shfl_sync(0xffffffffu, x[t], 0, 8);
    unsigned b = __ballot_sync(0xffffffffu, x[t] & 1);
    if (t % 32 == 0) ballot[t / 32] = b;
}

/* 2-D blocks and grids: every (x, y) writes its own linear coordinate */
__global__ static void coords_kernel(int *out, int W, int H) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x < W && y < H) out[y * W + x] = y * 1000 + x;
}

__global__ static void early_exit_kernel(float *x) {
    if (threadIdx.x >= 10) return; /* threads 10.. never reach the barrier */
    __syncthreads();
    x[threadIdx.x] = 1.0f;
}

__global__ static void divergent_barrier_kernel(float *x) {
    if (threadIdx.x < 5) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    x[threadIdx.x] = 1.0f;
}

__global__ static void shfl_exited_lane_kernel(float *x) {
    if (threadIdx.x == 3) return;
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

/* half a warp in __syncwarp, the other half at __syncthreads: neither can complete */
__global__ static void mixed_barrier_kernel(float *x) {
    if (threadIdx.x < 16)
        __syncwarp();
    else
        __syncthreads();
    x[threadIdx.x] = 1.0f;
}

/* ---------------------------------------------------------------- host side */
static uint64_t rng = 99;
static float frand(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

static void test_block_sum(int n) {
    int nb = dp_ceil_div(n, 256);
    float *x = (float *)malloc(n * 4), *out = (float *)malloc(nb * 4),
          *ref = (float *)calloc(nb, 4);
    for (int i = 0; i < n; i++) x[i] = frand();
    for (int i = 0; i < n; i++) ref[i / 256] += x[i];
    DP_LAUNCH(block_sum_kernel, nb, 256, 0, 0, out, x, n);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    char what[64];
    snprintf(what, sizeof what, "block reduction n=%d", n);
    check_arrays_near(what, ref, out, nb, 1e-5, 1e-5);
    free(x), free(out), free(ref);
}

static void test_warp_sum(int n, int block) {
    float *x = (float *)malloc(n * 4), *all = (float *)malloc(n * 4), *ref = (float *)malloc(n * 4);
    float total = 0;
    double sum = 0;
    for (int i = 0; i < n; i++) x[i] = frand(), sum += x[i];
    DP_LAUNCH(warp_sum_kernel, dp_ceil_div(n, block), block, 0, 0, &total, all, x, n);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    CHECK_NEAR(sum, total, 1e-4, 1e-5);
    for (int i = 0; i < n; i++) { /* every lane holds its own warp's sum */
        double s = 0;
        int w0 = i / 32 * 32;
        for (int j = w0; j < w0 + 32 && j < n; j++) s += x[j];
        ref[i] = (float)s;
    }
    char what[64];
    snprintf(what, sizeof what, "warp all-reduce n=%d block=%d", n, block);
    check_arrays_near(what, ref, all, n, 1e-5, 1e-5);
    free(x), free(all), free(ref);
}

static void test_scan(int n, int block) {
    int *x = (int *)malloc(n * 4), *out = (int *)malloc(n * 4);
    for (int i = 0; i < n; i++) x[i] = (int)(frand() * 100);
    DP_LAUNCH(block_scan_kernel, dp_ceil_div(n, block), block, 0, 0, out, x, n);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    int bad = 0, run = 0;
    for (int i = 0; i < n; i++) {
        if (i % block == 0) run = 0;
        run += x[i];
        bad += out[i] != run;
    }
    fprintf(stderr, "  block scan n=%d block=%d: %d wrong\n", n, block, bad);
    CHECK_EQ_INT(0, bad);
    free(x), free(out);
}

static void test_dynamic_smem(int n, int block) {
    float *x = (float *)malloc(n * 4), *out = (float *)malloc(n * 4);
    for (int i = 0; i < n; i++) x[i] = (float)i;
    DP_LAUNCH(reverse_kernel, dp_ceil_div(n, block), block, block * sizeof(float), 0, out, x, n);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int base = i / block * block, len = n - base < block ? n - base : block;
        bad += out[i] != x[base + len - 1 - (i - base)];
    }
    fprintf(stderr, "  dynamic shared reverse n=%d block=%d: %d wrong\n", n, block, bad);
    CHECK_EQ_INT(0, bad);
    /* more dynamic shared memory than a kernel may have without opting in */
    DP_LAUNCH(reverse_kernel, 1, block, 64 * 1024, 0, out, x, n);
    CHECK_EQ_INT(cudaErrorInvalidValue, cudaGetLastError());
    CHECK(strstr(dp_last_error(), "shared memory") != NULL);
    CHECK_EQ_INT(cudaSuccess,
                 cudaFuncSetAttribute(reverse_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      64 * 1024));
    DP_LAUNCH(reverse_kernel, 1, block, 64 * 1024, 0, out, x, n);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    free(x), free(out);
}

static void test_shfl_width_ballot(void) {
    int x[64], bcast[64];
    unsigned ballot[2], ref[2] = {0, 0};
    for (int i = 0; i < 64; i++) x[i] = (int)(frand() * 1000);
    DP_LAUNCH(shfl_width_kernel, 1, 64, 0, 0, bcast, ballot, x);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    int bad = 0;
    for (int i = 0; i < 64; i++) {
        bad += bcast[i] != x[i / 8 * 8];
        if (x[i] & 1) ref[i / 32] |= 1u << (i % 32);
    }
    CHECK_EQ_INT(0, bad);
    CHECK_EQ_INT(ref[0], ballot[0]);
    CHECK_EQ_INT(ref[1], ballot[1]);
}

/* events: timing code runs under EMU, but the elapsed time is 0 (EMU measures no time) */
static void test_events(void) {
    cudaEvent_t a, b;
    CHECK_EQ_INT(cudaSuccess, cudaEventCreate(&a));
    CHECK_EQ_INT(cudaSuccess, cudaEventCreate(&b));
    float ms = -1.0f;
    CHECK_EQ_INT(cudaErrorInvalidResourceHandle, cudaEventElapsedTime(&ms, a, b)); /* unrecorded */
    CHECK_EQ_INT(cudaSuccess, cudaEventRecord(a));
    CHECK_EQ_INT(cudaSuccess, cudaEventRecord(b, 0));
    CHECK_EQ_INT(cudaSuccess, cudaEventSynchronize(b));
    CHECK_EQ_INT(cudaSuccess, cudaEventElapsedTime(&ms, a, b));
    CHECK(ms == 0.0f);
    CHECK_EQ_INT(cudaSuccess, cudaEventDestroy(a));
    CHECK_EQ_INT(cudaSuccess, cudaEventDestroy(b));
}

static void test_2d(void) {
    int W = 37, Hh = 9;
    int *out = (int *)calloc(W * Hh, 4);
    DP_LAUNCH(coords_kernel, dim3(dp_ceil_div(W, 16), dp_ceil_div(Hh, 4)), dim3(16, 4), 0, 0, out,
              W, Hh);
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError());
    int bad = 0;
    for (int y = 0; y < Hh; y++)
        for (int x = 0; x < W; x++) bad += out[y * W + x] != y * 1000 + x;
    CHECK_EQ_INT(0, bad);
    free(out);
}

static void test_errors(void) {
    float x[64];
    DP_LAUNCH(early_exit_kernel, 2, 64, 0, 0, x);
    CHECK_EQ_INT(cudaErrorLaunchFailure, cudaGetLastError());
    fprintf(stderr, "  expected error: %s\n", dp_last_error());
    CHECK(strstr(dp_last_error(), "__syncthreads") &&
          strstr(dp_last_error(), "reached by 10 of 64"));
    CHECK_EQ_INT(cudaSuccess, cudaGetLastError()); /* reported once */

    DP_LAUNCH(divergent_barrier_kernel, 1, 32, 0, 0, x);
    CHECK_EQ_INT(cudaErrorLaunchFailure, cudaGetLastError());
    fprintf(stderr, "  expected error: %s\n", dp_last_error());
    CHECK(strstr(dp_last_error(), "different barriers") != NULL);

    DP_LAUNCH(shfl_exited_lane_kernel, 1, 32, 0, 0, x);
    CHECK_EQ_INT(cudaErrorLaunchFailure, cudaGetLastError());
    fprintf(stderr, "  expected error: %s\n", dp_last_error());
    CHECK(strstr(dp_last_error(), "lane 3 exited") != NULL);

    DP_LAUNCH(mixed_barrier_kernel, 1, 32, 0, 0, x);
    CHECK_EQ_INT(cudaErrorLaunchFailure, cudaGetLastError());
    fprintf(stderr, "  expected error: %s\n", dp_last_error());
    CHECK(strstr(dp_last_error(), "deadlocks") != NULL);

    DP_LAUNCH(block_sum_kernel, 1, 2048, 0, 0, x, x, 1);
    CHECK_EQ_INT(cudaErrorInvalidConfiguration, cudaGetLastError());
    DP_LAUNCH(block_sum_kernel, 0, 256, 0, 0, x, x, 1);
    CHECK_EQ_INT(cudaErrorInvalidConfiguration, cudaGetLastError());

    /* a good launch after the failures still works */
    test_block_sum(300);
}

static void test_memory(void) {
    size_t base = dp_emu_device_bytes();
    dp_emu_reset_peak();
    void *a, *b;
    CHECK_EQ_INT(cudaSuccess, cudaMalloc(&a, 1000));
    CHECK_EQ_INT(cudaSuccess, cudaMalloc(&b, 3000));
    CHECK_EQ_INT(0, (uintptr_t)a % 256);
    CHECK_EQ_INT(base + 4000, dp_emu_device_bytes());
    CHECK_EQ_INT(cudaSuccess, cudaFree(a));
    CHECK_EQ_INT(base + 3000, dp_emu_device_bytes());
    CHECK_EQ_INT(base + 4000, dp_emu_device_peak_bytes());
    CHECK_EQ_INT(cudaErrorInvalidValue, cudaFree(a)); /* double free is caught */
    dp_emu_set_device_limit(base + 5000);
    void *c = NULL;
    CHECK_EQ_INT(cudaErrorMemoryAllocation, cudaMalloc(&c, 2001));
    CHECK(c == NULL);
    CHECK_EQ_INT(cudaSuccess, cudaMalloc(&c, 2000));
    dp_emu_set_device_limit(0);
    cudaFree(b);
    cudaFree(c);
    CHECK_EQ_INT(base, dp_emu_device_bytes());
}

/* kernels/philox.h is cuRAND's Philox4x32-10: the same block function, and element i of
 * (seed, subsequence) is what curand() returns after curand_init(seed, subsequence, i). */
static void test_philox(void) {
    /* Random123 known-answer vectors for philox4x32-10 */
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (auto &t : kat) {
        dp_philox4 r = dp_philox4x32_10(t.ctr[0], t.ctr[1], t.ctr[2], t.ctr[3], t.key[0], t.key[1]);
        uint4 c = curand_Philox4x32_10(make_uint4(t.ctr[0], t.ctr[1], t.ctr[2], t.ctr[3]),
                                       make_uint2(t.key[0], t.key[1]));
        for (int i = 0; i < 4; i++) CHECK_EQ_INT(t.out[i], r.v[i]);
        CHECK(c.x == t.out[0] && c.y == t.out[1] && c.z == t.out[2] && c.w == t.out[3]);
    }
    int bad = 0, n = 0;
    const uint64_t seeds[] = {0, 42, 0x123456789abcdefULL};
    const uint64_t subs[] = {0, 1, 7, 1ULL << 33};
    const uint64_t offs[] = {0, 1, 2, 3, 4, 5, 1001, (1ULL << 34) + 3};
    for (uint64_t seed : seeds)
        for (uint64_t sub : subs)
            for (uint64_t off : offs) {
                curandStatePhilox4_32_10_t st;
                curand_init(seed, sub, off, &st);
                for (int j = 0; j < 6; j++, n++) { /* consecutive draws continue the stream */
                    curandStatePhilox4_32_10_t st2 = st;
                    unsigned u = curand(&st);
                    float f = curand_uniform(&st2);
                    bad += u != dp_philox_u32(seed, sub, off + j);
                    bad += f != dp_philox_uniform(seed, sub, off + j);
                }
                /* curand_uniform4 (what the dropout kernel draws): four draws from off on */
                curandStatePhilox4_32_10_t st4;
                curand_init(seed, sub, off, &st4);
                float4 u4 = curand_uniform4(&st4);
                const float got4[4] = {u4.x, u4.y, u4.z, u4.w};
                for (int j = 0; j < 4; j++, n++)
                    bad += got4[j] != dp_philox_uniform(seed, sub, off + j);
            }
    fprintf(stderr, "  philox vs cuRAND: %d of %d draws differ\n", bad, n);
    CHECK_EQ_INT(0, bad);
}

int main(void) {
    test_philox();
    test_block_sum(256);
    test_block_sum(1000); /* ragged last block */
    test_warp_sum(1024, 256);
    test_warp_sum(77, 64); /* partial warps read zeros past n, full warps exist */
    test_scan(1000, 128);
    test_scan(1024, 1024);
    test_dynamic_smem(1000, 100);
    test_shfl_width_ballot();
    test_2d();
    test_events();
    test_errors();
    test_memory();
    size_t launches, blocks, switches;
    dp_emu_counters(&launches, &blocks, &switches);
    fprintf(stderr, "  EMU: %zu launches, %zu blocks, %zu fiber switches\n", launches, blocks,
            switches);
    return check_done();
}
