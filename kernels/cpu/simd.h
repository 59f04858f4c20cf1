/* Which SIMD path the hand-vectorized CPU kernels (NF4 dequantization, NF4 and Q8 GEMVs) take: the
 * widest this CPU has, or a narrower one named by DOPPEL_SIMD=scalar|avx2 (tests run every path).
 */
#ifndef DOPPEL_CPU_SIMD_H
#define DOPPEL_CPU_SIMD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DP_X86 1
#endif

/* Functions built twice (AVX2+FMA and baseline x86-64), picked at load time. x86-64-v3, not
 * arch=haswell: GCC dispatches an arch= clone on the exact CPU model, so a later CPU would get
 * the baseline. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define DP_CLONES_V3 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DP_CLONES_V3
#endif

enum { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512 };

/* How far ahead (bytes) the decode GEMVs prefetch the weight rows they stream: at one thread
 * the out-of-order window alone keeps too few cache misses in flight (bench_forward.sh at 1
 * thread, the commit before vs after, run back to back: SmolLM2 decode 42.0 -> 57.9 tok/s, the
 * Qwen2.5-0.5B shape 13.1 -> 20.6, from 48-49% to 62-75% of the read-bandwidth limit). */
#define DP_PREFETCH_AHEAD 8192
#ifdef DP_X86
#define DP_PREFETCH(p) _mm_prefetch((const char *)(p) + DP_PREFETCH_AHEAD, _MM_HINT_T0)
#else
#define DP_PREFETCH(p) ((void)0)
#endif

static inline int dp_simd_level(void) {
    int best = SIMD_SCALAR;
#ifdef DP_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = SIMD_AVX2;
    if (__builtin_cpu_supports("avx512f")) best = SIMD_AVX512;
#endif
    const char *e = getenv("DOPPEL_SIMD");
    int want = !e                     ? best
               : !strcmp(e, "scalar") ? SIMD_SCALAR
               : !strcmp(e, "avx2")   ? SIMD_AVX2
                                      : best;
    return want < best ? want : best;
}

/* AVX512_BF16's vdpbf16ps (the bf16 GEMM of kernels/cpu/gemm_bf16.c): on AVX-512 CPUs that have
 * it, unless DOPPEL_SIMD names a narrower path (avx512 = AVX-512 without bf16 products;
 * avx512bf16 = vdpbf16ps without AMX tiles, dp_bf16_amx_ok). */
static inline bool dp_simd_bf16(void) {
#ifdef DP_X86
    if (dp_simd_level() != SIMD_AVX512 || !__builtin_cpu_supports("avx512bf16")) return false;
    const char *e = getenv("DOPPEL_SIMD");
    return !(e && !strcmp(e, "avx512"));
#else
    return false;
#endif
}

#ifdef DP_X86
/* An AMX tile configuration (palette 1, ldtilecfg's 64 bytes): fill rows/colsb, then load it */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} dp_amx_tilecfg;
__attribute__((target("amx-tile"), always_inline)) static inline void
dp_amx_load_config(dp_amx_tilecfg *c) {
    c->palette = 1;
    __asm__ volatile("" : : "r"(c) : "memory"); /* GCC 12 drops the stores otherwise */
    _tile_loadconfig(c);
}
#endif

/* for `doppel info` and the benchmarks' headers */
static inline const char *dp_simd_name(int level) {
    return level == SIMD_AVX512 ? "avx512" : level == SIMD_AVX2 ? "avx2" : "scalar";
}

#endif
