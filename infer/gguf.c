/* GGUF reader: a bounds-checked cursor over the mmap'd file; nothing is read or allocated
 * from a count or length before it is checked against the bytes that remain. */
#include "infer/gguf.h"

#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COUNT (1u << 24) /* tensors, KVs: far above any real model */
#define MAX_KEY   65536
#define MAX_NAME  1024

typedef struct {
    const uint8_t *p;
    uint64_t pos, size;
    const char *path;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return dp_fail("%s: truncated at byte %llu reading %s (%llu bytes needed, %llu left)",
                       c->path, (unsigned long long)c->pos, what, (unsigned long long)n,
                       (unsigned long long)(c->size - c->pos));
    return 0;
}

static int rd(cursor *c, void *out, uint64_t n, const char *what) {
    if (need(c, n, what)) return -1;
    memcpy(out, c->p + c->pos, n); /* little-endian host assumed (x86-64, aarch64) */
    c->pos += n;
    return 0;
}
static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    return rd(c, v, 4, what);
}
static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    return rd(c, v, 8, what);
}

/* u64 length + bytes -> NUL-terminated copy */
static int rd_str(cursor *c, char **out, uint64_t *len_out, uint64_t max, const char *what) {
    uint64_t n;
    if (rd_u64(c, &n, what)) return -1;
    if (n > max)
        return dp_fail("%s: byte %llu: %s of %llu bytes exceeds the limit of %llu", c->path,
                       (unsigned long long)(c->pos - 8), what, (unsigned long long)n,
                       (unsigned long long)max);
    if (need(c, n, what)) return -1;
    char *s = dp_malloc(n + 1);
    if (!s) return -1;
    memcpy(s, c->p + c->pos, n);
    s[n] = 0;
    c->pos += n;
    *out = s;
    if (len_out) *len_out = n;
    return 0;
}

static const int vsize[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const vname[13] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};

/* reads one numeric scalar of type t from raw bytes into the i/u/f triple */
static void scalar_from(const uint8_t *b, dp_gguf_vtype t, int64_t *i, uint64_t *u, double *f) {
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    float f32;
    uint64_t u64;
    int64_t i64;
    double f64;
    switch (t) {
    case DP_GGUF_U8:
    case DP_GGUF_BOOL:
        memcpy(&u8, b, 1);
        *u = u8, *i = u8, *f = u8;
        break;
    case DP_GGUF_I8:
        memcpy(&i8, b, 1);
        *i = i8, *u = (uint64_t)i8, *f = i8;
        break;
    case DP_GGUF_U16:
        memcpy(&u16, b, 2);
        *u = u16, *i = u16, *f = u16;
        break;
    case DP_GGUF_I16:
        memcpy(&i16, b, 2);
        *i = i16, *u = (uint64_t)i16, *f = i16;
        break;
    case DP_GGUF_U32:
        memcpy(&u32, b, 4);
        *u = u32, *i = u32, *f = u32;
        break;
    case DP_GGUF_I32:
        memcpy(&i32, b, 4);
        *i = i32, *u = (uint64_t)i32, *f = i32;
        break;
    case DP_GGUF_U64:
        memcpy(&u64, b, 8);
        *u = u64, *i = (int64_t)u64, *f = (double)u64;
        break;
    case DP_GGUF_I64:
        memcpy(&i64, b, 8);
        *i = i64, *u = (uint64_t)i64, *f = (double)i64;
        break;
    case DP_GGUF_F32:
        memcpy(&f32, b, 4);
        *f = f32;
        *i = (f32 > -9.2e18f && f32 < 9.2e18f) ? (int64_t)f32 : 0;
        *u = (uint64_t)*i;
        break;
    case DP_GGUF_F64:
        memcpy(&f64, b, 8);
        *f = f64;
        *i = (f64 > -9.2e18 && f64 < 9.2e18) ? (int64_t)f64 : 0;
        *u = (uint64_t)*i;
        break;
    default:
        *i = 0, *u = 0, *f = 0;
    }
}

static int read_kv(cursor *c, dp_gguf_kv *kv) {
    uint64_t start = c->pos;
    if (rd_str(c, &kv->key, NULL, MAX_KEY, "a metadata key")) return -1;
    uint32_t t;
    if (rd_u32(c, &t, "a metadata type")) return -1;
    if (t > DP_GGUF_F64)
        return dp_fail("%s: byte %llu: key \"%s\" has unknown value type %u", c->path,
                       (unsigned long long)start, kv->key, t);
    kv->type = (dp_gguf_vtype)t;
    if (t == DP_GGUF_STRING) return rd_str(c, &kv->str, &kv->str_len, c->size, kv->key);
    if (t != DP_GGUF_ARRAY) {
        if (need(c, (uint64_t)vsize[t], kv->key)) return -1;
        scalar_from(c->p + c->pos, kv->type, &kv->i, &kv->u, &kv->f);
        c->pos += (uint64_t)vsize[t];
        return 0;
    }
    uint32_t at;
    if (rd_u32(c, &at, "an array type") || rd_u64(c, &kv->arr_n, "an array length")) return -1;
    if (at > DP_GGUF_F64 || at == DP_GGUF_ARRAY)
        return dp_fail("%s: key \"%s\": unsupported array element type %u", c->path, kv->key, at);
    kv->arr_type = (dp_gguf_vtype)at;
    uint64_t left = c->size - c->pos, n = kv->arr_n;
    /* every element takes at least its size (a string at least its 8-byte length) */
    uint64_t min = at == DP_GGUF_STRING ? 8 : (uint64_t)vsize[at];
    if (n > left / min)
        return dp_fail("%s: key \"%s\": array of %llu elements cannot fit in the %llu bytes left",
                       c->path, kv->key, (unsigned long long)n, (unsigned long long)left);
    if (at != DP_GGUF_STRING) {
        kv->arr_data = c->p + c->pos;
        c->pos += n * min;
        return 0;
    }
    kv->arr_str = dp_calloc(n + 1, sizeof(char *));
    kv->arr_str_len = dp_calloc(n + 1, sizeof(uint64_t));
    if (!kv->arr_str || !kv->arr_str_len) return -1;
    for (uint64_t k = 0; k < n; k++)
        if (rd_str(c, &kv->arr_str[k], &kv->arr_str_len[k], c->size, kv->key)) return -1;
    return 0;
}

/* ------------------------------------------------------------------ tensor types */

static const struct {
    const char *name;
    int64_t elems, bytes;
} ggml_types[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292}, [24] = {"I8", 1, 1},
    [25] = {"I16", 1, 2},      [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},      [30] = {"BF16", 1, 2},
};
#define N_GGML_TYPES (int)(sizeof ggml_types / sizeof ggml_types[0])

const char *dp_ggml_type_name(int type) {
    return type >= 0 && type < N_GGML_TYPES && ggml_types[type].name ? ggml_types[type].name : "?";
}
int64_t dp_ggml_block_elems(int type) {
    return type >= 0 && type < N_GGML_TYPES ? ggml_types[type].elems : 0;
}
int64_t dp_ggml_block_bytes(int type) {
    return type >= 0 && type < N_GGML_TYPES ? ggml_types[type].bytes : 0;
}

static int read_tensor_info(cursor *c, dp_gguf_tensor *t) {
    uint64_t start = c->pos;
    if (rd_str(c, &t->name, NULL, MAX_NAME, "a tensor name")) return -1;
    uint32_t nd;
    if (rd_u32(c, &nd, "a tensor's dimension count")) return -1;
    if (nd > DP_GGUF_MAX_DIMS)
        return dp_fail("%s: byte %llu: tensor \"%s\" has %u dimensions (at most %d)", c->path,
                       (unsigned long long)start, t->name, nd, DP_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if (rd_u64(c, &v, "a tensor dimension")) return -1;
        if (v > (uint64_t)INT64_MAX || (v && numel > (uint64_t)INT64_MAX / v))
            return dp_fail("%s: tensor \"%s\": dimensions overflow", c->path, t->name);
        t->ne[d] = (int64_t)v;
        numel *= v;
    }
    for (int d = (int)nd; d < DP_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    uint32_t type;
    if (rd_u32(c, &type, "a tensor type") || rd_u64(c, &t->offset, "a tensor offset")) return -1;
    t->type = (int)type;
    int64_t be = dp_ggml_block_elems(t->type), bb = dp_ggml_block_bytes(t->type);
    if (!be) return dp_fail("%s: tensor \"%s\": unknown tensor type %u", c->path, t->name, type);
    if (t->ne[0] % be)
        return dp_fail("%s: tensor \"%s\": row of %lld elements is not a multiple of the %s "
                       "block size %lld",
                       c->path, t->name, (long long)t->ne[0], ggml_types[type].name, (long long)be);
    uint64_t blocks = numel / (uint64_t)be;
    if (blocks > (uint64_t)INT64_MAX / (uint64_t)bb)
        return dp_fail("%s: tensor \"%s\": size overflows", c->path, t->name);
    t->numel = (int64_t)numel;
    t->nbytes = blocks * (uint64_t)bb;
    return 0;
}

static int cmp_tensor_off(const void *a, const void *b) {
    const dp_gguf_tensor *x = *(const dp_gguf_tensor *const *)a,
                         *y = *(const dp_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a repeated name among n structs whose first member is a char * (O(n log n), since a
 * hostile file may hold millions of entries). */
static int find_duplicate(const void *items, uint64_t n, size_t stride, const char **dup) {
    const char **names = dp_malloc((n + 1) * sizeof *names);
    if (!names) return -1;
    for (uint64_t k = 0; k < n; k++)
        memcpy(&names[k], (const char *)items + k * stride, sizeof(char *));
    qsort(names, n, sizeof *names, cmp_str);
    *dup = NULL;
    for (uint64_t k = 1; k < n && !*dup; k++)
        if (!strcmp(names[k - 1], names[k])) *dup = names[k];
    free(names);
    return 0;
}

static int parse(dp_gguf *g) {
    cursor c = {g->map, 0, g->map_size, g->path};
    uint8_t magic[4];
    if (rd(&c, magic, 4, "the magic") || memcmp(magic, "GGUF", 4))
        return dp_fail("%s: not a GGUF file (no \"GGUF\" magic)", g->path);
    if (rd_u32(&c, &g->version, "the version")) return -1;
    if (g->version != 2 && g->version != 3)
        return dp_fail("%s: GGUF version %u is not supported (expected 3, or 2; a big-endian "
                       "file shows a huge number)",
                       g->path, g->version);
    uint64_t n_kv, n_t;
    if (rd_u64(&c, &n_t, "the tensor count") || rd_u64(&c, &n_kv, "the KV count")) return -1;
    /* a KV takes >= 12 bytes (key length + type), a tensor info >= 24 */
    uint64_t left = c.size - c.pos;
    if (n_kv > MAX_COUNT || n_kv > left / 12)
        return dp_fail("%s: %llu metadata entries cannot fit in a file of %llu bytes", g->path,
                       (unsigned long long)n_kv, (unsigned long long)c.size);
    if (n_t > MAX_COUNT || n_t > left / 24)
        return dp_fail("%s: %llu tensors cannot fit in a file of %llu bytes", g->path,
                       (unsigned long long)n_t, (unsigned long long)c.size);
    g->kv = dp_calloc(n_kv + 1, sizeof(dp_gguf_kv));
    g->tensors = dp_calloc(n_t + 1, sizeof(dp_gguf_tensor));
    if (!g->kv || !g->tensors) return -1;
    /* n_kv / n_tensors count what is filled, so close frees exactly that */
    for (uint64_t k = 0; k < n_kv; k++) {
        int rc = read_kv(&c, &g->kv[k]);
        g->n_kv = k + 1;
        if (rc) return -1;
    }
    const char *dup = NULL;
    if (find_duplicate(g->kv, n_kv, sizeof *g->kv, &dup)) return -1;
    if (dup) return dp_fail("%s: metadata key \"%s\" appears twice", g->path, dup);
    g->alignment = 32;
    const dp_gguf_kv *al = dp_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != DP_GGUF_U32 || al->u == 0 || (al->u & (al->u - 1)) || al->u > (1u << 30))
            return dp_fail("%s: general.alignment must be a u32 power of two (got %s %llu)",
                           g->path, vname[al->type], (unsigned long long)al->u);
        g->alignment = al->u;
    }
    for (uint64_t k = 0; k < n_t; k++) {
        int rc = read_tensor_info(&c, &g->tensors[k]);
        g->n_tensors = k + 1;
        if (rc) return -1;
    }
    uint64_t a = g->alignment;
    g->data_offset = c.pos + (a - c.pos % a) % a;
    if (n_t == 0) return 0;
    if (g->data_offset > c.size)
        return dp_fail("%s: the data section (byte %llu) starts past the end of the file", g->path,
                       (unsigned long long)g->data_offset);
    uint64_t data_size = c.size - g->data_offset;
    dp_gguf_tensor **byoff = dp_calloc(n_t, sizeof *byoff);
    if (!byoff) return -1;
    for (uint64_t k = 0; k < n_t; k++) byoff[k] = &g->tensors[k];
    qsort(byoff, n_t, sizeof *byoff, cmp_tensor_off);
    int rc = 0;
    uint64_t end = 0;
    for (uint64_t k = 0; k < n_t && !rc; k++) {
        dp_gguf_tensor *t = byoff[k];
        if (t->offset % a)
            rc = dp_fail("%s: tensor \"%s\": offset %llu is not a multiple of the alignment %llu",
                         g->path, t->name, (unsigned long long)t->offset, (unsigned long long)a);
        else if (t->offset > data_size || t->nbytes > data_size - t->offset)
            rc = dp_fail("%s: tensor \"%s\": %llu bytes at data offset %llu run past the end of "
                         "the file (%llu data bytes; truncated file?)",
                         g->path, t->name, (unsigned long long)t->nbytes,
                         (unsigned long long)t->offset, (unsigned long long)data_size);
        else if (t->offset < end)
            rc = dp_fail("%s: tensor \"%s\" overlaps the previous tensor's data", g->path, t->name);
        if (!rc) {
            end = t->offset + t->nbytes;
            t->data = (const uint8_t *)g->map + g->data_offset + t->offset;
        }
    }
    free(byoff);
    if (!rc) {
        const char *dup = NULL;
        if (find_duplicate(g->tensors, n_t, sizeof *g->tensors, &dup)) return -1;
        if (dup) rc = dp_fail("%s: tensor \"%s\" appears twice", g->path, dup);
    }
    return rc;
}

void dp_gguf_close(dp_gguf *g) {
    if (!g) return;
    for (uint64_t k = 0; k < g->n_kv; k++) {
        dp_gguf_kv *kv = &g->kv[k];
        free(kv->key);
        free(kv->str);
        if (kv->arr_str)
            for (uint64_t j = 0; j < kv->arr_n; j++) free(kv->arr_str[j]);
        free(kv->arr_str);
        free(kv->arr_str_len);
    }
    free(g->kv);
    for (uint64_t k = 0; k < g->n_tensors; k++) free(g->tensors[k].name);
    free(g->tensors);
    if (g->owns_map) dp_unmap_file(g->map, g->map_size);
    free(g->path);
    free(g);
}

dp_gguf *dp_gguf_open_memory(const void *buf, size_t len, const char *name) {
    dp_gguf *g = dp_calloc(1, sizeof *g);
    if (!g) return NULL;
    g->path = dp_strdup(name ? name : "(memory)");
    g->map = (void *)buf;
    g->map_size = len;
    if (!g->path || parse(g)) {
        dp_gguf_close(g);
        return NULL;
    }
    return g;
}

dp_gguf *dp_gguf_open(const char *path) {
    void *map;
    size_t size;
    if (dp_map_file(path, &map, &size)) return NULL;
    dp_gguf *g = dp_calloc(1, sizeof *g);
    if (!g) {
        dp_unmap_file(map, size);
        return NULL;
    }
    g->path = dp_strdup(path);
    g->map = map;
    g->map_size = size;
    g->owns_map = true;
    if (!g->path || parse(g)) {
        dp_gguf_close(g);
        return NULL;
    }
    return g;
}

/* ------------------------------------------------------------------ look-up */

const dp_gguf_kv *dp_gguf_find(const dp_gguf *g, const char *key) {
    for (uint64_t k = 0; k < g->n_kv; k++)
        if (!strcmp(g->kv[k].key, key)) return &g->kv[k];
    return NULL;
}

static const dp_gguf_kv *find_typed(const dp_gguf *g, const char *key, const char *want) {
    const dp_gguf_kv *kv = dp_gguf_find(g, key);
    if (!kv) dp_fail("%s: no metadata key \"%s\" (expected a %s)", g->path, key, want);
    return kv;
}

static bool is_int_type(dp_gguf_vtype t) {
    return t <= DP_GGUF_I32 || t == DP_GGUF_BOOL || t == DP_GGUF_U64 || t == DP_GGUF_I64;
}
static bool is_num_type(dp_gguf_vtype t) {
    return is_int_type(t) || t == DP_GGUF_F32 || t == DP_GGUF_F64;
}

int dp_gguf_get_str(const dp_gguf *g, const char *key, const char **out) {
    const dp_gguf_kv *kv = find_typed(g, key, "string");
    if (!kv) return -1;
    if (kv->type != DP_GGUF_STRING)
        return dp_fail("%s: metadata \"%s\" is a %s, expected a string", g->path, key,
                       vname[kv->type]);
    *out = kv->str;
    return 0;
}

int dp_gguf_get_int(const dp_gguf *g, const char *key, int64_t *out) {
    const dp_gguf_kv *kv = find_typed(g, key, "integer");
    if (!kv) return -1;
    if (!is_int_type(kv->type))
        return dp_fail("%s: metadata \"%s\" is a %s, expected an integer", g->path, key,
                       vname[kv->type]);
    if (kv->type == DP_GGUF_U64 && kv->u > (uint64_t)INT64_MAX)
        return dp_fail("%s: metadata \"%s\" = %llu is too large", g->path, key,
                       (unsigned long long)kv->u);
    *out = kv->i;
    return 0;
}

int dp_gguf_get_num(const dp_gguf *g, const char *key, double *out) {
    const dp_gguf_kv *kv = find_typed(g, key, "number");
    if (!kv) return -1;
    if (!is_num_type(kv->type))
        return dp_fail("%s: metadata \"%s\" is a %s, expected a number", g->path, key,
                       vname[kv->type]);
    *out = kv->f;
    return 0;
}

int dp_gguf_get_str_array(const dp_gguf *g, const char *key, char *const **strs,
                          const uint64_t **lens, uint64_t *n) {
    const dp_gguf_kv *kv = find_typed(g, key, "string array");
    if (!kv) return -1;
    if (kv->type != DP_GGUF_ARRAY || kv->arr_type != DP_GGUF_STRING)
        return dp_fail("%s: metadata \"%s\" is not an array of strings", g->path, key);
    *strs = kv->arr_str;
    if (lens) *lens = kv->arr_str_len;
    *n = kv->arr_n;
    return 0;
}

static int num_array(const dp_gguf *g, const char *key, bool ints, const dp_gguf_kv **out) {
    const dp_gguf_kv *kv = find_typed(g, key, "array");
    if (!kv) return -1;
    if (kv->type != DP_GGUF_ARRAY ||
        !(ints ? is_int_type(kv->arr_type) : is_num_type(kv->arr_type)))
        return dp_fail("%s: metadata \"%s\" is not an array of %s", g->path, key,
                       ints ? "integers" : "numbers");
    *out = kv;
    return 0;
}

int dp_gguf_get_int_array(const dp_gguf *g, const char *key, int64_t **out, uint64_t *n) {
    const dp_gguf_kv *kv;
    if (num_array(g, key, true, &kv)) return -1;
    int64_t *a = dp_malloc((kv->arr_n + 1) * sizeof *a);
    if (!a) return -1;
    int sz = vsize[kv->arr_type];
    for (uint64_t k = 0; k < kv->arr_n; k++) {
        uint64_t u;
        double f;
        scalar_from(kv->arr_data + k * (uint64_t)sz, kv->arr_type, &a[k], &u, &f);
    }
    *out = a;
    *n = kv->arr_n;
    return 0;
}

int dp_gguf_get_f32_array(const dp_gguf *g, const char *key, float **out, uint64_t *n) {
    const dp_gguf_kv *kv;
    if (num_array(g, key, false, &kv)) return -1;
    float *a = dp_malloc((kv->arr_n + 1) * sizeof *a);
    if (!a) return -1;
    int sz = vsize[kv->arr_type];
    for (uint64_t k = 0; k < kv->arr_n; k++) {
        int64_t i;
        uint64_t u;
        double f;
        scalar_from(kv->arr_data + k * (uint64_t)sz, kv->arr_type, &i, &u, &f);
        a[k] = (float)f;
    }
    *out = a;
    *n = kv->arr_n;
    return 0;
}

const dp_gguf_tensor *dp_gguf_find_tensor(const dp_gguf *g, const char *name) {
    for (uint64_t k = 0; k < g->n_tensors; k++)
        if (!strcmp(g->tensors[k].name, name)) return &g->tensors[k];
    return NULL;
}

/* ------------------------------------------------------------------ dequantization */

static float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return dp_f16_to_f32(h);
}

int dp_ggml_dequantize(float *out, const void *src, int type, int64_t n) {
    const uint8_t *b = src;
    int64_t be = dp_ggml_block_elems(type);
    if (!be || n < 0 || n % be)
        return dp_fail("cannot dequantize %lld elements of type %s", (long long)n,
                       dp_ggml_type_name(type));
    switch (type) {
    case DP_GGML_F32:
        memcpy(out, src, (size_t)n * 4);
        return 0;
    case DP_GGML_F16:
        return dp_convert_to_f32(out, src, DP_DT_F16, (size_t)n);
    case DP_GGML_BF16:
        return dp_convert_to_f32(out, src, DP_DT_BF16, (size_t)n);
    case DP_GGML_Q8_0:
        for (int64_t k = 0; k < n / 32; k++, b += 34) {
            float d = f16(b);
            for (int j = 0; j < 32; j++) out[k * 32 + j] = d * (float)(int8_t)b[2 + j];
        }
        return 0;
    case DP_GGML_Q4_0:
        for (int64_t k = 0; k < n / 32; k++, b += 18) {
            float d = f16(b);
            const uint8_t *q = b + 2;
            float *o = out + k * 32;
            for (int j = 0; j < 16; j++) {
                o[j] = (float)((q[j] & 0xf) - 8) * d;
                o[j + 16] = (float)((q[j] >> 4) - 8) * d;
            }
        }
        return 0;
    case DP_GGML_Q4_1:
        for (int64_t k = 0; k < n / 32; k++, b += 20) {
            float d = f16(b), m = f16(b + 2);
            const uint8_t *q = b + 4;
            float *o = out + k * 32;
            for (int j = 0; j < 16; j++) {
                o[j] = (float)(q[j] & 0xf) * d + m;
                o[j + 16] = (float)(q[j] >> 4) * d + m;
            }
        }
        return 0;
    default:
        return dp_fail("tensor type %s is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, "
                       "Q4_1; re-export the model with one of them)",
                       dp_ggml_type_name(type));
    }
}

int dp_gguf_tensor_f32(const dp_gguf_tensor *t, float *out) {
    if (dp_ggml_dequantize(out, t->data, t->type, t->numel))
        return dp_fail_context("tensor %s", t->name);
    return 0;
}
