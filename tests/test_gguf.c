/* GGUF reader: a file written by the reference writer (pip gguf) reads back with every
 * metadata type, and each tensor type dequantizes to the reference dequantizer's values
 * (tests/reference/make_gguf_fixture.py); hostile files fail with clear messages. */
#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/gguf.h"

#include <cjson/cJSON.h>
#include <stdint.h>

#define FIX DOPPEL_SOURCE_DIR "/tests/fixtures/load/"

static void test_metadata(const dp_gguf *g) {
    int64_t i = 0;
    double f = 0;
    const char *s = NULL;
    CHECK_EQ_INT(3, g->version);
    CHECK_EQ_INT(64, g->alignment);
    CHECK(dp_gguf_get_str(g, "general.architecture", &s) == 0 && s && !strcmp(s, "llama"));
    CHECK(dp_gguf_get_int(g, "test.u8", &i) == 0 && i == 200);
    CHECK(dp_gguf_get_int(g, "test.i8", &i) == 0 && i == -100);
    CHECK(dp_gguf_get_int(g, "test.u16", &i) == 0 && i == 60000);
    CHECK(dp_gguf_get_int(g, "test.i16", &i) == 0 && i == -30000);
    CHECK(dp_gguf_get_int(g, "test.u32", &i) == 0 && i == 4000000000LL);
    CHECK(dp_gguf_get_int(g, "test.i32", &i) == 0 && i == -2000000000LL);
    CHECK(dp_gguf_get_num(g, "test.f32", &f) == 0 && f == 0.15625);
    CHECK(dp_gguf_get_int(g, "test.bool", &i) == 0 && i == 1);
    CHECK(dp_gguf_get_str(g, "test.string", &s) == 0 && s &&
          !strcmp(s, "h\xc3\xa9llo w\xc3\xb6rld"));
    CHECK(dp_gguf_get_int(g, "test.u64", &i) == 0 && i == (1LL << 40));
    CHECK(dp_gguf_get_int(g, "test.i64", &i) == 0 && i == -(1LL << 40));
    CHECK(dp_gguf_get_num(g, "test.f64", &f) == 0 && f == 1e-300);
    CHECK(dp_gguf_get_num(g, "test.u32", &f) == 0 && f == 4e9);
    /* wrong types and missing keys name the key */
    CHECK(dp_gguf_get_int(g, "test.string", &i) != 0);
    CHECK(strstr(dp_last_error(), "test.string") != NULL);
    CHECK(dp_gguf_get_str(g, "nope", &s) != 0);
    CHECK(strstr(dp_last_error(), "\"nope\"") != NULL);
    char *const *strs;
    const uint64_t *lens;
    uint64_t n = 0;
    CHECK(dp_gguf_get_str_array(g, "test.strings", &strs, &lens, &n) == 0);
    CHECK_EQ_INT(4, n);
    if (n == 4) {
        CHECK_EQ_STR("a", strs[0]);
        CHECK_EQ_STR("", strs[1]);
        CHECK_EQ_INT(0, lens[1]);
        CHECK_EQ_STR("\xc4\xa0the", strs[2]);
        CHECK_EQ_STR("<|im_end|>", strs[3]);
    }
    int64_t *ints = NULL;
    CHECK(dp_gguf_get_int_array(g, "test.ints", &ints, &n) == 0);
    CHECK(n == 3 && ints && ints[0] == 3 && ints[1] == -1 && ints[2] == 7);
    free(ints);
    float *fl = NULL;
    CHECK(dp_gguf_get_f32_array(g, "test.floats", &fl, &n) == 0);
    CHECK(n == 2 && fl && fl[0] == 0.5f && fl[1] == -2.25f);
    free(fl);
    CHECK(dp_gguf_get_int_array(g, "test.strings", &ints, &n) != 0);
    CHECK(dp_gguf_get_str_array(g, "test.ints", &strs, &lens, &n) != 0);
}

static void test_tensors(const dp_gguf *g) {
    char *mtext = NULL, *vals = NULL;
    size_t mlen = 0, vlen = 0;
    if (dp_read_file(FIX "quants.expected.json", &mtext, &mlen) ||
        dp_read_file(FIX "quants.expected.f32", &vals, &vlen)) {
        CHECK_REPORT(0, "%s", dp_last_error());
        return;
    }
    cJSON *m = cJSON_Parse(mtext);
    size_t off = 0;
    const cJSON *e;
    CHECK_EQ_INT(cJSON_GetArraySize(m), g->n_tensors);
    cJSON_ArrayForEach(e, m) {
        const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
        const char *type = cJSON_GetObjectItem(e, "type")->valuestring;
        const cJSON *shape = cJSON_GetObjectItem(e, "shape");
        int nd = cJSON_GetArraySize(shape);
        int64_t numel = 1;
        for (int d = 0; d < nd; d++) numel *= (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
        const dp_gguf_tensor *t = dp_gguf_find_tensor(g, name);
        CHECK_REPORT(t != NULL, "tensor %s missing", name);
        if (!t) continue;
        CHECK_EQ_STR(type, dp_ggml_type_name(t->type));
        CHECK_EQ_INT(nd, t->n_dims);
        /* numpy shapes are outermost-first, GGUF dims innermost-first */
        for (int d = 0; d < nd; d++)
            CHECK_EQ_INT((int64_t)cJSON_GetArrayItem(shape, nd - 1 - d)->valuedouble, t->ne[d]);
        CHECK_EQ_INT(numel, t->numel);
        CHECK(off + (size_t)numel * 4 <= vlen);
        float *out = malloc((size_t)numel * 4), *ref = malloc((size_t)numel * 4);
        memcpy(ref, vals + off, (size_t)numel * 4);
        off += (size_t)numel * 4;
        CHECK_REPORT(dp_gguf_tensor_f32(t, out) == 0, "%s", dp_last_error());
        char what[64];
        snprintf(what, sizeof what, "%s (%s) vs gguf.quants", name, type);
        check_arrays_near(what, ref, out, (size_t)numel, 0, 1e-6);
        free(out);
        free(ref);
    }
    cJSON_Delete(m);
    free(mtext);
    free(vals);
}

/* ---- hostile files, built by hand */
typedef struct {
    uint8_t b[4096];
    size_t n;
} blob;
static void put(blob *x, const void *p, size_t n) {
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void u32(blob *x, uint32_t v) {
    put(x, &v, 4);
}
static void u64(blob *x, uint64_t v) {
    put(x, &v, 8);
}
static void str(blob *x, const char *s) {
    u64(x, strlen(s));
    put(x, s, strlen(s));
}
static void head(blob *x, uint64_t nt, uint64_t nkv) {
    x->n = 0;
    put(x, "GGUF", 4);
    u32(x, 3);
    u64(x, nt);
    u64(x, nkv);
}
static void expect_reject(const char *what, const blob *x, const char *want) {
    dp_clear_error();
    dp_gguf *g = dp_gguf_open_memory(x->b, x->n, what);
    CHECK_REPORT(g == NULL, "%s: accepted a hostile file", what);
    CHECK_REPORT(strstr(dp_last_error(), want) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
                 dp_last_error(), want);
    dp_gguf_close(g);
}
static void tensor(blob *x, const char *name, uint64_t ne0, uint64_t ne1, uint32_t type,
                   uint64_t off) {
    str(x, name);
    u32(x, 2);
    u64(x, ne0);
    u64(x, ne1);
    u32(x, type);
    u64(x, off);
}
static void pad_data(blob *x, size_t align, size_t data) {
    while (x->n % align) x->b[x->n++] = 0;
    memset(x->b + x->n, 0, data);
    x->n += data;
}

static void test_hostile(void) {
    blob x;
    head(&x, 0, 0);
    dp_gguf *g = dp_gguf_open_memory(x.b, x.n, "empty");
    CHECK(g != NULL);
    dp_gguf_close(g);
    x.n = 0;
    put(&x, "GGML", 4);
    u32(&x, 3);
    expect_reject("magic", &x, "not a GGUF");
    head(&x, 0, 0);
    memcpy(x.b + 4, "\0\0\0\3", 4); /* big-endian version */
    expect_reject("big-endian", &x, "version");
    head(&x, 0, 1ull << 40);
    expect_reject("huge kv count", &x, "cannot fit");
    head(&x, 1ull << 62, 0);
    expect_reject("huge tensor count", &x, "cannot fit");
    head(&x, 0, 1);
    u64(&x, 1ull << 60);
    pad_data(&x, 1, 32);
    expect_reject("huge key length", &x, "exceeds the limit");
    head(&x, 0, 1);
    str(&x, "k");
    u32(&x, 8);
    u64(&x, 1ull << 50);
    expect_reject("huge string", &x, "exceeds the limit");
    head(&x, 0, 1);
    str(&x, "k");
    u32(&x, 9);
    u32(&x, 8);
    u64(&x, 1ull << 61);
    expect_reject("huge string array", &x, "cannot fit");
    head(&x, 0, 1);
    str(&x, "k");
    u32(&x, 9);
    u32(&x, 9);
    u64(&x, 1);
    expect_reject("nested array", &x, "unsupported array element type");
    head(&x, 0, 1);
    str(&x, "k");
    u32(&x, 13);
    expect_reject("bad value type", &x, "unknown value type");
    head(&x, 0, 2);
    str(&x, "k");
    u32(&x, 4);
    u32(&x, 1);
    str(&x, "k");
    u32(&x, 4);
    u32(&x, 1);
    expect_reject("duplicate key", &x, "appears twice");
    head(&x, 0, 1);
    str(&x, "general.alignment");
    u32(&x, 4);
    u32(&x, 48);
    expect_reject("alignment not power of two", &x, "power of two");
    /* tensors */
    head(&x, 1, 0);
    tensor(&x, "t", 32, 2, 0, 0);
    pad_data(&x, 32, 100);
    expect_reject("truncated data", &x, "past the end");
    head(&x, 1, 0);
    tensor(&x, "t", 33, 1, 2, 0);
    pad_data(&x, 32, 18);
    expect_reject("bad block multiple", &x, "not a multiple");
    head(&x, 1, 0);
    tensor(&x, "t", 32, 1, 99, 0);
    expect_reject("unknown type", &x, "unknown tensor type");
    head(&x, 1, 0);
    tensor(&x, "t", 8, 1, 0, 16);
    pad_data(&x, 32, 64);
    expect_reject("misaligned offset", &x, "alignment");
    head(&x, 2, 0);
    tensor(&x, "a", 16, 1, 0, 0);
    tensor(&x, "b", 16, 1, 0, 32);
    pad_data(&x, 32, 96);
    expect_reject("overlap", &x, "overlaps");
    head(&x, 2, 0);
    tensor(&x, "a", 8, 1, 0, 0);
    tensor(&x, "a", 8, 1, 0, 32);
    pad_data(&x, 32, 64);
    expect_reject("duplicate tensor", &x, "appears twice");
    head(&x, 1, 0);
    tensor(&x, "a", 1ull << 62, 1ull << 62, 0, 0);
    expect_reject("dims overflow", &x, "overflow");
    head(&x, 1, 0);
    str(&x, "t");
    u32(&x, 5);
    pad_data(&x, 1, 64);
    expect_reject("too many dims", &x, "dimensions");
    /* a valid two-tensor file, then every truncation of it fails cleanly */
    head(&x, 2, 0);
    tensor(&x, "a", 8, 1, 0, 0);
    tensor(&x, "b", 32, 1, 8, 32);
    pad_data(&x, 32, 32 + 34);
    g = dp_gguf_open_memory(x.b, x.n, "valid");
    CHECK_REPORT(g != NULL, "%s", dp_last_error());
    dp_gguf_close(g);
    for (size_t cut = 0; cut < x.n; cut++) {
        g = dp_gguf_open_memory(x.b, cut, "cut");
        CHECK_REPORT(g == NULL, "truncated to %zu bytes: accepted", cut);
        dp_gguf_close(g);
    }
    float out[32];
    CHECK(dp_ggml_dequantize(out, x.b, 12, 256) != 0); /* Q4_K: known size, not supported */
    CHECK(strstr(dp_last_error(), "Q4_K") != NULL);
}

int main(void) {
    dp_gguf *g = dp_gguf_open(FIX "quants.gguf");
    CHECK_REPORT(g != NULL, "%s", dp_last_error());
    if (g) {
        test_metadata(g);
        test_tensors(g);
    }
    dp_gguf_close(g);
    test_hostile();
    return check_done();
}
