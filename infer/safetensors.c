/* safetensors reader (mmap, every header field checked before use) and atomic writer. */
#include "infer/safetensors.h"

#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/io.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* JSON numbers are doubles: integers above 2^53 are not exact, and no file is that large. */
#define MAX_JSON_INT 9007199254740992.0

static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= MAX_JSON_INT) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const dp_st_tensor *)a)->name, ((const dp_st_tensor *)b)->name);
}
static int cmp_offset(const void *a, const void *b) {
    const dp_st_tensor *x = *(const dp_st_tensor *const *)a, *y = *(const dp_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    /* zero-size tensors first at a shared offset, so contiguity is checked in order */
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int parse_tensor(const char *file, const cJSON *item, dp_st_tensor *t) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return dp_fail("%s: tensor \"%s\": expected an object {dtype, shape, data_offsets}", file,
                       name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return dp_fail("%s: tensor \"%s\": missing or malformed dtype/shape/data_offsets", file,
                       name);
    if (dp_dtype_parse(dt->valuestring, &t->dtype))
        return dp_fail("%s: tensor \"%s\": unsupported dtype \"%.32s\" (supported: F32 F16 BF16 "
                       "F64 U8 I8 I16 I32 I64 U16 U32 U64 BOOL)",
                       file, name, dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > DP_ST_MAX_DIMS)
        return dp_fail("%s: tensor \"%s\": %d dimensions (at most %d supported)", file, name, nd,
                       DP_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t v;
        if (json_uint(d, &v))
            return dp_fail("%s: tensor \"%s\": shape[%d] is not a non-negative integer", file, name,
                           i);
        t->shape[i++] = (int64_t)v;
        if (v && numel > UINT64_MAX / v)
            return dp_fail("%s: tensor \"%s\": shape overflows 64 bits", file, name);
        numel *= v;
    }
    uint64_t esz = dp_dtype_size(t->dtype);
    if (numel > UINT64_MAX / esz || numel * esz > (uint64_t)INT64_MAX)
        return dp_fail("%s: tensor \"%s\": size overflows 64 bits", file, name);
    t->numel = (int64_t)numel;
    uint64_t b, e;
    if (cJSON_GetArraySize(offs) != 2 || json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
        json_uint(cJSON_GetArrayItem(offs, 1), &e) || e < b)
        return dp_fail("%s: tensor \"%s\": data_offsets must be [begin, end] with "
                       "0 <= begin <= end",
                       file, name);
    if (e - b != numel * esz)
        return dp_fail("%s: tensor \"%s\": data_offsets span %llu bytes but %s x shape needs %llu",
                       file, name, (unsigned long long)(e - b), dt->valuestring,
                       (unsigned long long)(numel * esz));
    t->offset = b;
    t->nbytes = e - b;
    t->name = dp_strdup(name);
    return t->name ? 0 : -1;
}

static int parse_meta(dp_safetensors *st, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return dp_fail("%s: __metadata__ must be an object of strings", st->path);
    int n = cJSON_GetArraySize(meta);
    st->meta_keys = dp_calloc((size_t)n + 1, sizeof(char *));
    st->meta_values = dp_calloc((size_t)n + 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_values) return -1;
    const cJSON *m;
    cJSON_ArrayForEach(m, meta) {
        if (!cJSON_IsString(m))
            return dp_fail("%s: __metadata__ \"%s\" is not a string", st->path, m->string);
        st->meta_keys[st->n_meta] = dp_strdup(m->string);
        st->meta_values[st->n_meta] = dp_strdup(m->valuestring);
        if (!st->meta_keys[st->n_meta] || !st->meta_values[st->n_meta]) return -1;
        st->n_meta++;
    }
    return 0;
}

/* Validates the buffer and fills st (whose path and map are set). */
static int parse(dp_safetensors *st) {
    const uint8_t *buf = st->map;
    uint64_t size = st->map_size, n = 0;
    if (size < 8)
        return dp_fail("%s: %llu bytes, too short for a safetensors file (8-byte header length "
                       "missing)",
                       st->path, (unsigned long long)size);
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > DP_ST_MAX_HEADER)
        return dp_fail("%s: header length %llu exceeds the limit of %llu bytes (not a "
                       "safetensors file, or a hostile one)",
                       st->path, (unsigned long long)n, DP_ST_MAX_HEADER);
    if (n > size - 8)
        return dp_fail("%s: header length %llu but only %llu bytes follow (truncated file?)",
                       st->path, (unsigned long long)n, (unsigned long long)(size - 8));
    if (n < 2 || buf[8] != '{')
        return dp_fail("%s: header does not start with '{' (not a safetensors file)", st->path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)buf + 8, n, &end, false);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_fail("%s: header is not a valid JSON object", st->path);
    }
    /* a tensor name or metadata string cut at a NUL could alias another: refuse those */
    if (dp_json_check_nul((const char *)buf + 8, (size_t)(end - (const char *)buf - 8), st->path,
                          1)) {
        cJSON_Delete(root);
        return -1;
    }
    /* only spaces may pad the JSON up to the declared length */
    for (const char *p = end; p < (const char *)buf + 8 + n; p++)
        if (*p != ' ' && *p != '\0' && *p != '\n' && *p != '\t' && *p != '\r') {
            cJSON_Delete(root);
            return dp_fail("%s: unexpected bytes after the header JSON (offset %lld)", st->path,
                           (long long)(p - (const char *)buf));
        }
    int rc = 0, count = cJSON_GetArraySize(root);
    st->tensors = dp_calloc((size_t)count + 1, sizeof(dp_st_tensor));
    dp_st_tensor **byoff = dp_calloc((size_t)count + 1, sizeof(dp_st_tensor *));
    if (!st->tensors || !byoff) rc = -1;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (rc) break;
        if (!strcmp(item->string, "__metadata__")) {
            if (st->meta_keys)
                rc = dp_fail("%s: __metadata__ appears twice", st->path);
            else
                rc = parse_meta(st, item);
            continue;
        }
        rc = parse_tensor(st->path, item, &st->tensors[st->n_tensors]);
        if (!rc) st->n_tensors++;
    }
    cJSON_Delete(root);
    uint64_t data_size = size - 8 - n;
    if (!rc) {
        qsort(st->tensors, (size_t)st->n_tensors, sizeof(dp_st_tensor), cmp_name);
        for (int i = 1; i < st->n_tensors && !rc; i++)
            if (!strcmp(st->tensors[i].name, st->tensors[i - 1].name))
                rc = dp_fail("%s: tensor \"%s\" appears twice", st->path, st->tensors[i].name);
    }
    if (!rc) {
        for (int i = 0; i < st->n_tensors; i++) byoff[i] = &st->tensors[i];
        qsort(byoff, (size_t)st->n_tensors, sizeof(*byoff), cmp_offset);
        uint64_t expect = 0;
        for (int i = 0; i < st->n_tensors && !rc; i++) {
            dp_st_tensor *t = byoff[i];
            if (t->offset != expect)
                rc = dp_fail("%s: tensor \"%s\" data starts at %llu but the previous tensor ends "
                             "at %llu (%s)",
                             st->path, t->name, (unsigned long long)t->offset,
                             (unsigned long long)expect,
                             t->offset < expect ? "overlapping data" : "hole in the data");
            expect = t->offset + t->nbytes; /* no overflow: both <= 2^53 */
            if (!rc && expect > data_size)
                rc = dp_fail("%s: tensor \"%s\" ends at data byte %llu past the end of the file "
                             "(%llu data bytes; truncated file?)",
                             st->path, t->name, (unsigned long long)expect,
                             (unsigned long long)data_size);
        }
        if (!rc && expect != data_size)
            rc = dp_fail("%s: tensors cover %llu data bytes but the file holds %llu (trailing "
                         "bytes or a corrupt header)",
                         st->path, (unsigned long long)expect, (unsigned long long)data_size);
    }
    free(byoff);
    if (!rc)
        for (int i = 0; i < st->n_tensors; i++)
            st->tensors[i].data = buf + 8 + n + st->tensors[i].offset;
    return rc;
}

void dp_safetensors_close(dp_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    if (st->owns_map) dp_unmap_file(st->map, st->map_size);
    free(st->path);
    free(st);
}

dp_safetensors *dp_safetensors_open_memory(const void *buf, size_t len, const char *name) {
    dp_safetensors *st = dp_calloc(1, sizeof *st);
    if (!st) return NULL;
    st->path = dp_strdup(name ? name : "(memory)");
    st->map = (void *)buf;
    st->map_size = len;
    if (!st->path || parse(st)) {
        dp_safetensors_close(st);
        return NULL;
    }
    return st;
}

dp_safetensors *dp_safetensors_open(const char *path) {
    void *map;
    size_t size;
    if (dp_map_file(path, &map, &size)) return NULL;
    dp_safetensors *st = dp_calloc(1, sizeof *st);
    if (!st) {
        dp_unmap_file(map, size);
        return NULL;
    }
    st->path = dp_strdup(path);
    st->map = map;
    st->map_size = size;
    st->owns_map = true;
    if (!st->path || parse(st)) {
        dp_safetensors_close(st);
        return NULL;
    }
    return st;
}

const dp_st_tensor *dp_safetensors_find(const dp_safetensors *st, const char *name) {
    dp_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof key, cmp_name);
}

const char *dp_safetensors_meta(const dp_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

/* ------------------------------------------------------------------ sets (sharded models) */

void dp_st_set_close(dp_st_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) dp_safetensors_close(set->files[i]);
    free(set->files);
    free(set);
}

dp_st_set *dp_st_set_open_file(const char *path) {
    dp_st_set *set = dp_calloc(1, sizeof *set);
    if (!set) return NULL;
    set->files = dp_calloc(1, sizeof(dp_safetensors *));
    if (!set->files || !(set->files[0] = dp_safetensors_open(path))) {
        dp_st_set_close(set);
        return NULL;
    }
    set->n_files = 1;
    return set;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

dp_st_set *dp_st_set_open_dir(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!exists(path)) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (!exists(path)) {
            dp_fail("%s: no model.safetensors or model.safetensors.index.json (expected a "
                    "Hugging Face model directory)",
                    dir);
            return NULL;
        }
        return dp_st_set_open_file(path);
    }
    char *text = NULL;
    size_t len = 0;
    if (dp_read_file(path, &text, &len)) return NULL;
    cJSON *root = NULL;
    int bad = dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &root);
    free(text);
    if (bad) return NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    dp_st_set *set = dp_calloc(1, sizeof *set);
    int rc = set ? 0 : -1;
    if (!rc && !cJSON_IsObject(wm))
        rc = dp_fail("%s: no \"weight_map\" object (expected {\"weight_map\": {tensor: file}})",
                     path);
    const cJSON *e;
    if (!rc) set->files = dp_calloc((size_t)cJSON_GetArraySize(wm) + 1, sizeof(dp_safetensors *));
    if (!rc && !set->files) rc = -1;
    char **names = rc ? NULL : dp_calloc((size_t)cJSON_GetArraySize(wm) + 1, sizeof(char *));
    if (!rc && !names) rc = -1;
    if (!rc) cJSON_ArrayForEach(e, wm) {
            if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
                !strcmp(e->valuestring, "..")) {
                rc = dp_fail("%s: weight_map[\"%s\"] must be a file name in the same directory",
                             path, e->string);
                break;
            }
            int f = 0;
            while (f < set->n_files && strcmp(names[f], e->valuestring)) f++;
            if (f == set->n_files) {
                char shard[4096];
                snprintf(shard, sizeof shard, "%s/%s", dir, e->valuestring);
                names[f] = e->valuestring;
                set->files[f] = dp_safetensors_open(shard);
                if (!set->files[f]) {
                    rc = dp_fail_context("%s (listed in %s)", e->valuestring, path);
                    break;
                }
                set->n_files++;
            }
            if (!dp_safetensors_find(set->files[f], e->string)) {
                rc = dp_fail("%s: weight_map lists \"%s\" in %s, but that file has no such tensor",
                             path, e->string, e->valuestring);
                break;
            }
        }
    free(names);
    cJSON_Delete(root);
    if (!rc && set->n_files == 0) rc = dp_fail("%s: weight_map is empty", path);
    if (rc) {
        dp_st_set_close(set);
        return NULL;
    }
    return set;
}

const dp_st_tensor *dp_st_set_find(const dp_st_set *set, const char *name) {
    for (int i = 0; i < set->n_files; i++) {
        const dp_st_tensor *t = dp_safetensors_find(set->files[i], name);
        if (t) return t;
    }
    return NULL;
}

int dp_st_tensor_f32(const dp_st_tensor *t, float *out, int64_t rows, int64_t cols) {
    bool ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                   : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128] = "";
        size_t k = 0;
        for (int i = 0; i < t->ndim && k < sizeof got - 24; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%s%lld", i ? ", " : "",
                                  (long long)t->shape[i]);
        if (cols)
            return dp_fail("tensor %s has shape [%s], expected [%lld, %lld]", t->name, got,
                           (long long)rows, (long long)cols);
        return dp_fail("tensor %s has shape [%s], expected [%lld]", t->name, got, (long long)rows);
    }
    if (dp_convert_to_f32(out, t->data, t->dtype, (size_t)t->numel))
        return dp_fail_context("tensor %s", t->name);
    return 0;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *name;
    dp_dtype dtype;
    int ndim;
    int64_t shape[DP_ST_MAX_DIMS];
    uint64_t nbytes;
    const void *data;
} wtensor;

struct dp_st_writer {
    wtensor *t;
    int n, cap;
    char **mk, **mv;
    int nm;
};

dp_st_writer *dp_st_writer_new(void) {
    return dp_calloc(1, sizeof(dp_st_writer));
}

void dp_st_writer_free(dp_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->t);
    free(w->mk);
    free(w->mv);
    free(w);
}

int dp_st_writer_add(dp_st_writer *w, const char *name, dp_dtype dtype, int ndim,
                     const int64_t *shape, const void *data) {
    if (!name[0] || !strcmp(name, "__metadata__"))
        return dp_fail("safetensors writer: invalid tensor name \"%s\"", name);
    if (ndim < 0 || ndim > DP_ST_MAX_DIMS || (unsigned)dtype >= DP_N_DTYPES)
        return dp_fail("safetensors writer: tensor %s: bad dtype or %d dimensions", name, ndim);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return dp_fail("safetensors writer: tensor %s added twice", name);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return dp_fail("safetensors writer: tensor %s: negative shape", name);
        numel *= (uint64_t)shape[i];
    }
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 64;
        wtensor *nt = dp_realloc(w->t, (size_t)nc * sizeof *nt);
        if (!nt) return -1;
        w->t = nt;
        w->cap = nc;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = dp_strdup(name);
    if (!t->name) return -1;
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    t->nbytes = numel * dp_dtype_size(dtype);
    t->data = data;
    w->n++;
    return 0;
}

int dp_st_writer_meta(dp_st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->mk[i], key)) {
            char *v = dp_strdup(value);
            if (!v) return -1;
            free(w->mv[i]);
            w->mv[i] = v;
            return 0;
        }
    char **nk = dp_realloc(w->mk, (size_t)(w->nm + 1) * sizeof(char *));
    if (!nk) return -1;
    w->mk = nk;
    char **nv = dp_realloc(w->mv, (size_t)(w->nm + 1) * sizeof(char *));
    if (!nv) return -1;
    w->mv = nv;
    w->mk[w->nm] = dp_strdup(key);
    w->mv[w->nm] = dp_strdup(value);
    if (!w->mk[w->nm] || !w->mv[w->nm]) {
        free(w->mk[w->nm]);
        free(w->mv[w->nm]);
        return -1;
    }
    w->nm++;
    return 0;
}

int dp_st_writer_save(dp_st_writer *w, const char *path) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return dp_fail("out of memory building a safetensors header");
    if (w->nm) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < w->nm; i++) cJSON_AddStringToObject(m, w->mk[i], w->mv[i]);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        wtensor *t = &w->t[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(o, "dtype", dp_dtype_name(t->dtype));
        cJSON *s = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(s, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *a = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return dp_fail("out of memory building a safetensors header");
    /* pad with spaces so the data section starts 8-byte aligned, as the reference does */
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    dp_writer *f = dp_writer_open(path);
    int rc = f ? 0 : -1;
    if (!rc) rc = dp_writer_write(f, len8, 8);
    if (!rc) rc = dp_writer_write(f, json, jl);
    if (!rc && padded > jl) rc = dp_writer_write(f, "        ", padded - jl);
    for (int i = 0; i < w->n && !rc; i++)
        if (w->t[i].nbytes) rc = dp_writer_write(f, w->t[i].data, w->t[i].nbytes);
    free(json);
    if (rc) {
        if (f) dp_writer_abort(f);
        return -1;
    }
    return dp_writer_commit(f);
}
