/* safetensors reader and writer: hostile headers are rejected with a clear message; a file
 * written by the reference implementation (pip safetensors) reads back exactly; the writer's
 * output reads back through the checked reader. */
#include "check.h"
#include "data/base/error.h"
#include "infer/safetensors.h"

#include <stdint.h>
#include <unistd.h>

/* builds "len8 + header + data" in buf; returns total size */
static size_t build(uint8_t *buf, const char *header, size_t data_len) {
    size_t n = strlen(header);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++) buf[8 + n + i] = (uint8_t)i;
    return 8 + n + data_len;
}

/* the header must be rejected with a message containing `want` */
static void expect_reject(const char *what, const char *header, size_t data_len, const char *want) {
    static uint8_t buf[1 << 16];
    size_t len = build(buf, header, data_len);
    dp_clear_error();
    dp_safetensors *st = dp_safetensors_open_memory(buf, len, what);
    CHECK_REPORT(st == NULL, "%s: accepted a hostile file", what);
    CHECK_REPORT(strstr(dp_last_error(), want) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
                 dp_last_error(), want);
    dp_safetensors_close(st);
}

static void test_hostile(void) {
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    uint8_t buf[256];
    size_t len = build(buf, ok, 8);
    dp_safetensors *st = dp_safetensors_open_memory(buf, len, "ok");
    CHECK(st != NULL);
    dp_safetensors_close(st);
    /* truncations at every length fail cleanly */
    for (size_t cut = 0; cut < len; cut++) {
        st = dp_safetensors_open_memory(buf, cut, "cut");
        CHECK_REPORT(st == NULL, "truncated to %zu bytes: accepted", cut);
        dp_safetensors_close(st);
    }
    /* header length over the 100 MB limit and past the end of the file */
    uint8_t big[16] = {0};
    big[3] = 0x10; /* 2^28 */
    CHECK(dp_safetensors_open_memory(big, sizeof big, "big") == NULL);
    CHECK(strstr(dp_last_error(), "exceeds the limit") != NULL);
    big[3] = 0;
    big[0] = 200;
    CHECK(dp_safetensors_open_memory(big, sizeof big, "short") == NULL);
    CHECK(strstr(dp_last_error(), "truncated") != NULL);

    expect_reject("not json", "{\"a\": nope}", 0, "not a valid JSON");
    expect_reject("not object", "[1,2]", 0, "does not start with '{'");
    expect_reject("size mismatch",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                  "needs 12");
    expect_reject("bf16 size",
                  "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4,
                  "needs 8");
    expect_reject("overlap",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                  6, "overlapping");
    expect_reject("hole",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
                  10, "hole");
    expect_reject("not from zero",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, "hole");
    expect_reject("past end", "{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}",
                  8, "past the end");
    expect_reject("trailing bytes",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8,
                  "file holds 8");
    expect_reject("overflow",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                  "\"data_offsets\":[0,4]}}",
                  4, "overflow");
    expect_reject("huge offset",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1e300,1e300]}}", 1,
                  "data_offsets");
    expect_reject("negative dim",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0,
                  "shape[0]");
    expect_reject("fraction", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}",
                  1, "shape[0]");
    expect_reject("unknown dtype",
                  "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                  "unsupported dtype \"F8_E4M3\"");
    expect_reject("duplicate",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                  2, "appears twice");
    expect_reject("meta not string", "{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    expect_reject("tensor not object", "{\"a\":5}", 0, "expected an object");
    expect_reject("missing offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "missing");
    expect_reject("garbage after json", "{}x", 0, "unexpected bytes");
    expect_reject("too many dims",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
                  1, "dimensions");

    /* zero-size tensors and space padding are fine */
    const char *zs = "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                     "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}    ";
    len = build(buf, zs, 8);
    st = dp_safetensors_open_memory(buf, len, "zero-size");
    CHECK(st != NULL);
    if (st) {
        CHECK_EQ_INT(2, st->n_tensors);
        const dp_st_tensor *e = dp_safetensors_find(st, "e");
        CHECK(e && e->numel == 0 && e->ndim == 2 && e->shape[1] == 3);
        CHECK(dp_safetensors_find(st, "nope") == NULL);
    }
    dp_safetensors_close(st);
}

/* A file written by the reference implementation (tests/reference/make_safetensors_fixture.py). */
static void test_reference_file(void) {
    const char *path = DOPPEL_SOURCE_DIR "/tests/fixtures/load/reference.safetensors";
    dp_safetensors *st = dp_safetensors_open(path);
    CHECK_REPORT(st != NULL, "%s", dp_last_error());
    if (!st) return;
    CHECK_EQ_INT(7, st->n_tensors);
    CHECK_EQ_STR("doppel-test", dp_safetensors_meta(st, "format"));
    /* values: f32 = arange(6)/4 - 0.5 in (2,3); f16 = arange(8)*0.125 - 1; bf16 = the same;
     * i64 = [-3, 1<<40]; u8 = 0..9; i8 = -5..4; i32 = [7, -7] */
    const dp_st_tensor *t = dp_safetensors_find(st, "f32");
    float v[8];
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->dtype == DP_DT_F32);
    if (t && dp_st_tensor_f32(t, v, 2, 3) == 0)
        for (int i = 0; i < 6; i++) CHECK_NEAR(i / 4.0 - 0.5, v[i], 0, 0);
    t = dp_safetensors_find(st, "f16");
    CHECK(t && t->dtype == DP_DT_F16);
    if (t && dp_st_tensor_f32(t, v, 8, 0) == 0)
        for (int i = 0; i < 8; i++) CHECK_NEAR(i * 0.125 - 1, v[i], 0, 0);
    t = dp_safetensors_find(st, "bf16");
    CHECK(t && t->dtype == DP_DT_BF16);
    if (t && dp_st_tensor_f32(t, v, 8, 0) == 0)
        for (int i = 0; i < 8; i++) CHECK_NEAR(i * 0.125 - 1, v[i], 0, 0);
    CHECK(dp_st_tensor_f32(t, v, 4, 2) != 0); /* wrong shape */
    t = dp_safetensors_find(st, "i64");
    CHECK(t && t->dtype == DP_DT_I64 && t->numel == 2);
    if (t) {
        int64_t x[2];
        memcpy(x, t->data, 16);
        CHECK_EQ_INT(-3, x[0]);
        CHECK_EQ_INT(1LL << 40, x[1]);
    }
    t = dp_safetensors_find(st, "u8");
    CHECK(t && t->dtype == DP_DT_U8 && t->numel == 10);
    if (t)
        for (int i = 0; i < 10; i++) CHECK_EQ_INT(i, ((const uint8_t *)t->data)[i]);
    t = dp_safetensors_find(st, "i8");
    CHECK(t && t->dtype == DP_DT_I8 && t->numel == 10);
    if (t)
        for (int i = 0; i < 10; i++) CHECK_EQ_INT(i - 5, ((const int8_t *)t->data)[i]);
    t = dp_safetensors_find(st, "i32");
    CHECK(t && t->dtype == DP_DT_I32 && t->numel == 2);
    if (t) {
        int32_t x[2];
        memcpy(x, t->data, 8);
        CHECK_EQ_INT(7, x[0]);
        CHECK_EQ_INT(-7, x[1]);
    }
    dp_safetensors_close(st);
}

static void test_writer_roundtrip(void) {
    char path[] = "/tmp/doppel-st-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint8_t b[3] = {7, 8, 9};
    int64_t sa[2] = {2, 3}, sb[1] = {3}, sz[2] = {0, 5};
    dp_st_writer *w = dp_st_writer_new();
    CHECK(dp_st_writer_add(w, "x.weight", DP_DT_F32, 2, sa, a) == 0);
    CHECK(dp_st_writer_add(w, "x.weight.absmax", DP_DT_U8, 1, sb, b) == 0);
    CHECK(dp_st_writer_add(w, "empty", DP_DT_F16, 2, sz, NULL) == 0);
    CHECK(dp_st_writer_add(w, "x.weight", DP_DT_U8, 1, sb, b) != 0); /* duplicate */
    CHECK(dp_st_writer_meta(w, "format", "pt") == 0);
    CHECK(dp_st_writer_meta(w, "format", "np") == 0); /* replaces */
    CHECK(dp_st_writer_save(w, path) == 0);
    dp_st_writer_free(w);
    dp_safetensors *st = dp_safetensors_open(path);
    CHECK_REPORT(st != NULL, "%s", dp_last_error());
    if (st) {
        CHECK_EQ_INT(3, st->n_tensors);
        CHECK_EQ_STR("np", dp_safetensors_meta(st, "format"));
        const dp_st_tensor *t = dp_safetensors_find(st, "x.weight");
        CHECK(t && t->dtype == DP_DT_F32 && t->shape[0] == 2 && t->shape[1] == 3 &&
              !memcmp(t->data, a, sizeof a));
        t = dp_safetensors_find(st, "x.weight.absmax");
        CHECK(t && t->dtype == DP_DT_U8 && !memcmp(t->data, b, 3));
        /* the data section starts 8-byte aligned */
        CHECK(t && ((const uint8_t *)t->data - (const uint8_t *)st->map - t->offset) % 8 == 0);
    }
    dp_safetensors_close(st);
    unlink(path);
}

/* A sharded model directory: index + two shards, written by the writer. */
static void test_sharded(void) {
    char dir[] = "/tmp/doppel-shard-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char p[512];
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    int64_t s2[1] = {2}, s3[1] = {3};
    dp_st_writer *w = dp_st_writer_new();
    dp_st_writer_add(w, "a", DP_DT_F32, 1, s2, a);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK(dp_st_writer_save(w, p) == 0);
    dp_st_writer_free(w);
    w = dp_st_writer_new();
    dp_st_writer_add(w, "b", DP_DT_F32, 1, s3, b);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(dp_st_writer_save(w, p) == 0);
    dp_st_writer_free(w);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                      "\"b\":\"model-00002-of-00002.safetensors\"}}";
    FILE *f = fopen(p, "w");
    fputs(idx, f);
    fclose(f);
    dp_st_set *set = dp_st_set_open_dir(dir);
    CHECK_REPORT(set != NULL, "%s", dp_last_error());
    if (set) {
        CHECK_EQ_INT(2, set->n_files);
        const dp_st_tensor *t = dp_st_set_find(set, "b");
        float v[3];
        CHECK(t && dp_st_tensor_f32(t, v, 3, 0) == 0 && v[2] == 5);
        CHECK(dp_st_set_find(set, "a") != NULL);
    }
    dp_st_set_close(set);
    /* an index naming a tensor its shard lacks, and one escaping the directory */
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"c\":\"model-00001-of-00002.safetensors\"}}", f);
    fclose(f);
    CHECK(dp_st_set_open_dir(dir) == NULL);
    CHECK(strstr(dp_last_error(), "no such tensor") != NULL);
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"a\":\"../etc/passwd\"}}", f);
    fclose(f);
    CHECK(dp_st_set_open_dir(dir) == NULL);
    CHECK(strstr(dp_last_error(), "same directory") != NULL);
    unlink(p);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    unlink(p);
    CHECK(dp_st_set_open_dir(dir) == NULL);
    CHECK(strstr(dp_last_error(), "no model.safetensors") != NULL);
    rmdir(dir);
}

int main(void) {
    test_hostile();
    test_reference_file();
    test_writer_roundtrip();
    test_sharded();
    return check_done();
}
