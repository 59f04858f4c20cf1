/* NF4 with double quantization, bit-for-bit the CPU algorithm of bitsandbytes: 4-bit codes by
 * midpoint buckets of x * (1/absmax), absmax codes by nearest value of the signed dynamic map. */
#include "kernels/nf4.h"

#include "kernels/status.h"
#include "kernels/cpu/simd.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const float dp_nf4_values[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each exponent
 * i = 0..6, the 2^i midpoints of linspace(0.1, 1, 2^i + 1) times +-10^(i-6). torch's float32
 * linspace steps from the start below halfway and from the end above, each point rounded once
 * (fused multiply-add): fmaf reproduces it exactly. */
void dp_dynamic_map(float code[256]) {
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int k = (1 << i) + 1, half = k / 2;
        float step = (1.0f - 0.1f) / (float)(k - 1), b[65];
        for (int j = 0; j < k; j++)
            b[j] = j < half ? fmaf(step, (float)j, 0.1f) : fmaf(-step, (float)(k - 1 - j), 1.0f);
        float scale = (float)pow(10.0, i - 6);
        for (int j = 0; j + 1 < k; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            code[n++] = scale * mean;
            code[n++] = -scale * mean;
        }
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    qsort(code, 256, sizeof(float), cmp_float);
}

static float dyn_map[256];
static pthread_once_t dyn_once = PTHREAD_ONCE_INIT;
static void dyn_init(void) {
    dp_dynamic_map(dyn_map);
}
/* the map, computed once (dequantization runs per tile, from many threads) */
static const float *dynamic_map(void) {
    pthread_once(&dyn_once, dyn_init);
    return dyn_map;
}
const float *dp_dynamic_map_cached(void) {
    return dynamic_map();
}

int dp_nf4_alloc(dp_nf4 *q, int64_t rows, int64_t cols, int blocksize) {
    memset(q, 0, sizeof *q);
    if (rows <= 0 || cols <= 0 || rows > INT64_MAX / cols || blocksize < 64 || blocksize > 4096 ||
        (blocksize & (blocksize - 1)))
        return dp_fail("NF4: bad shape (%lld, %lld) or blocksize %d (a power of two, 64..4096)",
                       (long long)rows, (long long)cols, blocksize);
    q->rows = rows, q->cols = cols, q->n = rows * cols, q->blocksize = blocksize;
    q->nblocks = (q->n + blocksize - 1) / blocksize;
    q->codes = malloc((size_t)(q->n + 1) / 2);
    q->absmax_q = malloc((size_t)q->nblocks);
    q->absmax2 = malloc((size_t)((q->nblocks + 255) / 256) * sizeof(float));
    if (!q->codes || !q->absmax_q || !q->absmax2) {
        dp_nf4_free(q);
        return dp_fail("out of memory for a (%lld, %lld) NF4 matrix", (long long)rows,
                       (long long)cols);
    }
    return 0;
}

void dp_nf4_free(dp_nf4 *q) {
    free(q->codes);
    free(q->absmax_q);
    free(q->absmax2);
    q->codes = NULL, q->absmax_q = NULL, q->absmax2 = NULL;
}

size_t dp_nf4_size(int64_t rows, int64_t cols, int blocksize) {
    int64_t n = rows * cols, nblocks = (n + blocksize - 1) / blocksize;
    /* codes, absmax codes, one fp32 scale per 256 blocks, the fp32 offset */
    return (size_t)(n + 1) / 2 + (size_t)nblocks + (size_t)((nblocks + 255) / 256) * 4 + 4;
}

size_t dp_nf4_bytes(const dp_nf4 *q) {
    return dp_nf4_size(q->rows, q->cols, q->blocksize);
}

/* torch.bucketize(s, midpoints, right=False): the first bucket whose upper midpoint >= s. */
static inline uint8_t nf4_code(float s, const float *mid) {
    uint8_t c = 0;
    while (c < 15 && s > mid[c]) c++;
    return c;
}

/* first pass: block absmax and packed codes */
static void quantize_codes(dp_nf4 *q, const float *w, float *absmax) {
    float mid[15];
    for (int i = 0; i < 15; i++) mid[i] = (dp_nf4_values[i] + dp_nf4_values[i + 1]) / 2.0f;
    const int64_t bs = q->blocksize, full = q->n / bs;
    memset(q->codes, 0, (size_t)(q->n + 1) / 2);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < q->nblocks; b++) {
        const float *x = w + b * bs;
        int64_t cnt = b < full ? bs : q->n - b * bs;
        float am = 0;
        for (int64_t i = 0; i < cnt; i++) am = fmaxf(am, fabsf(x[i]));
        absmax[b] = am;
        float amc = fmaxf(am, 1e-38f), inv = 1.0f / amc;
        for (int64_t i = 0; i < cnt; i++) {
            /* full blocks scale by the reciprocal, the ragged tail divides (as bitsandbytes) */
            float s = b < full ? x[i] * inv : x[i] / amc;
            s = fminf(fmaxf(s, -1.0f), 1.0f);
            uint8_t c = nf4_code(s, mid);
            int64_t e = b * bs + i; /* blocks hold an even count, so bytes never straddle */
            q->codes[e / 2] |= (e & 1) ? c : (uint8_t)(c << 4);
        }
    }
    if (q->n & 1) q->codes[q->n / 2] |= nf4_code(0.0f, mid); /* bitsandbytes pads with 0.0 */
}

/* second pass: absmax - offset in groups of 256, each scaled by its max |.| and coded as the
 * nearest dynamic-map value by midpoint buckets (bitsandbytes' reference "default" kernel for
 * quantize_blockwise; full groups scale by the reciprocal, a ragged last group divides and
 * stores its clamped max). */
static void quantize_absmax(dp_nf4 *q, const float *absmax) {
    const float *code = dynamic_map();
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = (code[i] + code[i + 1]) / 2.0f;
    int64_t ng = (q->nblocks + 255) / 256, full = q->nblocks / 256;
    for (int64_t g = 0; g < ng; g++) {
        int64_t lo = g * 256, hi = lo + 256 < q->nblocks ? lo + 256 : q->nblocks;
        float am2 = 0;
        for (int64_t b = lo; b < hi; b++) am2 = fmaxf(am2, fabsf(absmax[b] - q->offset));
        float amc = fmaxf(am2, 1e-38f), inv = 1.0f / amc;
        q->absmax2[g] = g < full ? am2 : amc;
        for (int64_t b = lo; b < hi; b++) {
            float d = absmax[b] - q->offset;
            float v = g < full ? d * inv : d / amc;
            v = fminf(fmaxf(v, -1.0f), 1.0f);
            /* torch.bucketize(right=False): the number of midpoints strictly below v */
            int l = 0, h = 255;
            while (l < h) {
                int m = (l + h) / 2;
                if (mid[m] < v)
                    l = m + 1;
                else
                    h = m;
            }
            q->absmax_q[b] = (uint8_t)l;
        }
    }
}

int dp_nf4_quantize_offset(dp_nf4 *q, const float *w, int64_t rows, int64_t cols, int blocksize,
                           float offset) {
    if (dp_nf4_alloc(q, rows, cols, blocksize)) return -1;
    float *absmax = malloc((size_t)q->nblocks * sizeof(float));
    if (!absmax) {
        dp_nf4_free(q);
        return dp_fail("out of memory quantizing to NF4");
    }
    quantize_codes(q, w, absmax);
    q->offset = offset;
    quantize_absmax(q, absmax);
    free(absmax);
    return 0;
}

int dp_nf4_quantize(dp_nf4 *q, const float *w, int64_t rows, int64_t cols, int blocksize) {
    if (dp_nf4_alloc(q, rows, cols, blocksize)) return -1;
    float *absmax = malloc((size_t)q->nblocks * sizeof(float));
    if (!absmax) {
        dp_nf4_free(q);
        return dp_fail("out of memory quantizing to NF4");
    }
    quantize_codes(q, w, absmax);
    /* the mean in double, rounded once: within an ulp of torch's float32 mean */
    double s = 0;
    for (int64_t b = 0; b < q->nblocks; b++) s += absmax[b];
    q->offset = (float)(s / (double)q->nblocks);
    quantize_absmax(q, absmax);
    free(absmax);
    return 0;
}

void dp_nf4_absmax(const dp_nf4 *q, float *absmax) {
    const float *code = dynamic_map();
    for (int64_t b = 0; b < q->nblocks; b++) {
        float v = code[q->absmax_q[b]] * q->absmax2[b / 256];
        absmax[b] = v + q->offset;
    }
}

#ifdef DP_X86
#include <immintrin.h>
/* AVX2: 16 bytes -> 32 values in element order (high nibble first), looked up in the
 * 16-entry table with two permutes and a blend, times the block's absmax (the same single
 * product per element as the scalar loop, so the same bits). n: a multiple of 32. */
__attribute__((target("avx2"))) static void dequant_run_avx2(const uint8_t *codes, float *out,
                                                             int64_t n, float am) {
    const __m256 tlo = _mm256_loadu_ps(dp_nf4_values), thi = _mm256_loadu_ps(dp_nf4_values + 8);
    const __m256 s = _mm256_set1_ps(am);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m256i seven = _mm256_set1_epi32(7);
    for (int64_t i = 0; i < n; i += 32) {
        __m128i v = _mm_loadu_si128((const __m128i *)(codes + i / 2));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4), lo = _mm_and_si128(v, m4);
        __m128i e0 = _mm_unpacklo_epi8(hi, lo), e1 = _mm_unpackhi_epi8(hi, lo);
        __m128i parts[4] = {e0, _mm_srli_si128(e0, 8), e1, _mm_srli_si128(e1, 8)};
        for (int k = 0; k < 4; k++) {
            __m256i idx = _mm256_cvtepu8_epi32(parts[k]);
            __m256 vl = _mm256_permutevar8x32_ps(tlo, idx);
            __m256 vh = _mm256_permutevar8x32_ps(thi, idx);
            __m256 mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, seven));
            _mm256_storeu_ps(out + i + 8 * k, _mm256_mul_ps(_mm256_blendv_ps(vl, vh, mask), s));
        }
    }
}

/* AVX-512: 16 bytes -> 32 values in element order, each 16 looked up with one permute in the
 * 16-entry table, times the block's absmax (again the scalar loop's single product, the same
 * bits). n: a multiple of 32. */
__attribute__((target("avx512f"))) static void dequant_run_avx512(const uint8_t *codes, float *out,
                                                                 int64_t n, float am) {
    const __m512 tbl = _mm512_loadu_ps(dp_nf4_values), s = _mm512_set1_ps(am);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n; i += 32) {
        __m128i v = _mm_loadu_si128((const __m128i *)(codes + i / 2));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4), lo = _mm_and_si128(v, m4);
        __m512i e0 = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)),
                e1 = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_permutexvar_ps(e0, tbl), s));
        _mm512_storeu_ps(out + i + 16, _mm512_mul_ps(_mm512_permutexvar_ps(e1, tbl), s));
    }
}
#endif

void dp_nf4_dequantize_range(const dp_nf4 *q, float *out, int64_t start, int64_t count) {
    const float *code = dynamic_map();
    const int64_t bs = q->blocksize;
    int64_t e = start, end = start + count;
#ifdef DP_X86
    const int simd = dp_simd_level(); /* once per call, not per block */
#endif
    while (e < end) {
        int64_t b = e / bs, stop = (b + 1) * bs < end ? (b + 1) * bs : end;
        float v = code[q->absmax_q[b]] * q->absmax2[b / 256];
        float am = v + q->offset;
#ifdef DP_X86
        if (simd >= SIMD_AVX2 && !(e & 1) && stop - e >= 32) { /* whole bytes, 32 at a time */
            int64_t n = (stop - e) / 32 * 32;
            if (simd == SIMD_AVX512)
                dequant_run_avx512(q->codes + e / 2, out + (e - start), n, am);
            else
                dequant_run_avx2(q->codes + e / 2, out + (e - start), n, am);
            e += n;
        }
#endif
        for (; e < stop; e++) {
            uint8_t byte = q->codes[e / 2];
            out[e - start] = dp_nf4_values[(e & 1) ? (byte & 15) : (byte >> 4)] * am;
        }
    }
}

void dp_nf4_dequantize(const dp_nf4 *q, float *out) {
    dp_nf4_dequantize_range(q, out, 0, q->n);
}
