/* NF4 + double quantization against bitsandbytes (tests/reference/make_nf4_fixture.py, every
 * value computed by bitsandbytes itself): the same packed codes, absmax codes, nested absmax
 * and code maps byte for byte, and the same dequantized values; the offset (a float32 mean)
 * within one ulp. The nested codes are those of bitsandbytes' default kernel; its native CPU
 * library picks a code that is not the nearest for a few values (see the fixture script), and
 * wherever the two differ doppel's code must be the nearer one. */
#include "check.h"
#include "data/base/error.h"
#include "infer/safetensors.h"
#include "kernels/nf4.h"

#include <stdint.h>

static const dp_st_tensor *get(const dp_safetensors *st, const char *c, const char *what) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", c, what);
    const dp_st_tensor *t = dp_safetensors_find(st, name);
    CHECK_REPORT(t != NULL, "fixture lacks %s", name);
    return t;
}

static int bytes_differ(const void *a, const void *b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += ((const uint8_t *)a)[i] != ((const uint8_t *)b)[i];
    return d;
}

/* Where bitsandbytes' native CPU library chose another nested code than doppel, doppel's must
 * be at least as near to the value being coded: (block absmax - offset) / group absmax. */
static void check_native_codes(const char *c, const dp_nf4 *q, const float *x,
                               const uint8_t *native, const dp_st_tensor *nested_absmax,
                               float offset) {
    float map[256], am2[64];
    dp_dynamic_map(map);
    int64_t n_groups = nested_absmax->numel;
    if (n_groups > 64) n_groups = 64;
    memcpy(am2, nested_absmax->data, (size_t)n_groups * 4);
    int differ = 0, farther = 0;
    for (int64_t b = 0; b < q->nblocks && b / 256 < n_groups; b++) {
        if (native[b] == q->absmax_q[b]) continue;
        differ++;
        float absmax = 0;
        for (int64_t i = b * q->blocksize; i < (b + 1) * q->blocksize && i < q->n; i++)
            absmax = fmaxf(absmax, fabsf(x[i]));
        double v = (double)(absmax - offset) / am2[b / 256];
        v = v < -1 ? -1 : v > 1 ? 1 : v;
        double ours = fabs(map[q->absmax_q[b]] - v), theirs = fabs(map[native[b]] - v);
        fprintf(stderr,
                "  %-12s block %lld: value %.6g, doppel code %d (%.6g), native CPU code %d "
                "(%.6g)\n",
                c, (long long)b, v, q->absmax_q[b], map[q->absmax_q[b]], native[b], map[native[b]]);
        farther += ours > theirs + 1e-7;
    }
    fprintf(stderr, "  %-12s bitsandbytes' native CPU library differs in %d of %lld absmax codes\n",
            c, differ, (long long)q->nblocks);
    CHECK_EQ_INT(0, farther);
}

static void test_case(const dp_safetensors *st, const char *c) {
    char key[128];
    snprintf(key, sizeof key, "%s.blocksize", c);
    const char *bs_s = dp_safetensors_meta(st, key);
    const dp_st_tensor *in = get(st, c, "input"), *w = get(st, c, "weight"),
                       *am = get(st, c, "absmax"), *nam = get(st, c, "nested_absmax"),
                       *off = get(st, c, "offset"), *deq = get(st, c, "dequant");
    if (!bs_s || !in || !w || !am || !nam || !off || !deq) return;
    int bs = atoi(bs_s);
    int64_t rows = in->ndim == 2 ? in->shape[0] : 1, cols = in->shape[in->ndim - 1];
    float *x = malloc((size_t)in->numel * 4);
    memcpy(x, in->data, (size_t)in->numel * 4);
    float ref_off;
    memcpy(&ref_off, off->data, 4);

    dp_nf4 q;
    CHECK(dp_nf4_quantize_offset(&q, x, rows, cols, bs, ref_off) == 0);
    CHECK_EQ_INT(w->numel, (q.n + 1) / 2);
    CHECK_EQ_INT(am->numel, q.nblocks);
    CHECK_EQ_INT(nam->numel, (q.nblocks + 255) / 256);
    int dc = bytes_differ(w->data, q.codes, (size_t)w->numel);
    int da = bytes_differ(am->data, q.absmax_q, (size_t)am->numel);
    int dn = bytes_differ(nam->data, q.absmax2, (size_t)nam->numel * 4);
    fprintf(stderr,
            "  %-12s bs %d, %lld elems: codes %d/%lld bytes differ, absmax codes %d/%lld, "
            "nested absmax %d bytes\n",
            c, bs, (long long)q.n, dc, (long long)w->numel, da, (long long)am->numel, dn);
    CHECK_EQ_INT(0, dc);
    CHECK_EQ_INT(0, da);
    CHECK_EQ_INT(0, dn);
    const dp_st_tensor *nat = get(st, c, "native_absmax");
    if (nat) check_native_codes(c, &q, x, (const uint8_t *)nat->data, nam, ref_off);
    dp_nf4_free(&q);

    /* our own offset: the mean of absmax, within an ulp of torch's float32 mean */
    CHECK(dp_nf4_quantize(&q, x, rows, cols, bs) == 0);
    CHECK_NEAR(ref_off, q.offset, 0, 2.5e-7);
    CHECK_EQ_INT(0, bytes_differ(w->data, q.codes, (size_t)w->numel));
    dp_nf4_free(&q);

    /* dequantize bitsandbytes' own bytes: the same floats as its dequantize_4bit */
    CHECK(dp_nf4_alloc(&q, rows, cols, bs) == 0);
    memcpy(q.codes, w->data, (size_t)w->numel);
    memcpy(q.absmax_q, am->data, (size_t)am->numel);
    memcpy(q.absmax2, nam->data, (size_t)nam->numel * 4);
    q.offset = ref_off;
    float *out = malloc((size_t)q.n * 4), *ref = malloc((size_t)q.n * 4);
    memcpy(ref, deq->data, (size_t)q.n * 4);
    /* on every SIMD path this CPU has (each capped by it): the same bits */
    const char *paths[] = {NULL, "avx2", "scalar"};
    for (int p = 0; p < 3; p++) {
        if (paths[p]) setenv("DOPPEL_SIMD", paths[p], 1);
        dp_nf4_dequantize(&q, out);
        char what[96];
        snprintf(what, sizeof what, "%s dequantize vs bitsandbytes (%s)", c,
                 paths[p] ? paths[p] : "widest");
        check_arrays_near(what, ref, out, (size_t)q.n, 0, 0);
        /* a range starting mid-block */
        if (q.n > 100) {
            dp_nf4_dequantize_range(&q, out, 37, q.n - 37);
            snprintf(what, sizeof what, "%s dequantize [37:] (%s)", c,
                     paths[p] ? paths[p] : "widest");
            check_arrays_near(what, ref + 37, out, (size_t)(q.n - 37), 0, 0);
        }
    }
    unsetenv("DOPPEL_SIMD");
    dp_nf4_free(&q);
    free(out);
    free(ref);
    free(x);
}

int main(void) {
    dp_safetensors *st =
        dp_safetensors_open(DOPPEL_SOURCE_DIR "/tests/fixtures/load/nf4.safetensors");
    CHECK_REPORT(st != NULL, "%s", dp_last_error());
    if (!st) return check_done();
    fprintf(stderr, "fixture from bitsandbytes %s, torch %s\n",
            dp_safetensors_meta(st, "bitsandbytes"), dp_safetensors_meta(st, "torch"));
    /* the code maps */
    const dp_st_tensor *qm = dp_safetensors_find(st, "normal.quant_map"),
                       *nqm = dp_safetensors_find(st, "normal.nested_quant_map");
    float map[256];
    dp_dynamic_map(map);
    CHECK(qm && qm->numel == 16 && !memcmp(qm->data, dp_nf4_values, 64));
    CHECK(nqm && nqm->numel == 256);
    if (nqm) {
        float ref[256];
        memcpy(ref, nqm->data, sizeof ref);
        check_arrays_near("dynamic map vs create_dynamic_map", ref, map, 256, 0, 0);
    }
    CHECK(map[0] == -0.99296875f && map[127] == 0 && map[255] == 1);
    const char *cases[] = {"normal", "many_blocks", "ragged", "odd", "block256", "edges"};
    for (int i = 0; i < 6; i++) test_case(st, cases[i]);
    dp_safetensors_close(st);
    return check_done();
}
