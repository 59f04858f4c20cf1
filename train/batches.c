/* Tokenized training data, its HDF5 cache and micro-batch packing (see batches.h). */
#include "train/batches.h"
#include "data/base/error.h"
#include "train/h5.h"
#include "data/base/io.h"
#include "data/base/rng.h"

#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_FORMAT 1

int dp_rendered_push(dp_rendered *r, int32_t id, uint8_t mask) {
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 256;
        int32_t *ni = dp_realloc(r->ids, nc * sizeof *ni);
        if (!ni) return -1;
        r->ids = ni;
        uint8_t *nm = dp_realloc(r->mask, nc);
        if (!nm) return -1;
        r->mask = nm;
        r->cap = nc;
    }
    r->ids[r->n] = id;
    r->mask[r->n++] = mask;
    return 0;
}

void dp_token_data_free(dp_token_data *d) {
    free(d->tokens);
    free(d->loss_mask);
    free(d->offsets);
    memset(d, 0, sizeof *d);
}

/* appends one rendered sequence */
static int add_seq(dp_token_data *d, const dp_rendered *r, int64_t *cap_t, int64_t *cap_s) {
    if (d->T + (int64_t)r->n > *cap_t) {
        int64_t nc = *cap_t ? *cap_t * 2 : 65536;
        while (nc < d->T + (int64_t)r->n) nc *= 2;
        int32_t *nt = dp_realloc(d->tokens, (size_t)nc * sizeof *nt);
        if (!nt) return -1;
        d->tokens = nt;
        uint8_t *nm = dp_realloc(d->loss_mask, (size_t)nc);
        if (!nm) return -1;
        d->loss_mask = nm;
        *cap_t = nc;
    }
    if (d->nseq + 2 > *cap_s) {
        int64_t nc = *cap_s ? *cap_s * 2 : 1024;
        int64_t *no = dp_realloc(d->offsets, (size_t)nc * sizeof *no);
        if (!no) return -1;
        d->offsets = no;
        *cap_s = nc;
    }
    memcpy(d->tokens + d->T, r->ids, r->n * sizeof(int32_t));
    memcpy(d->loss_mask + d->T, r->mask, r->n);
    for (size_t i = 1; i < r->n; i++) d->n_trained += r->mask[i];
    d->T += (int64_t)r->n;
    d->offsets[++d->nseq] = d->T;
    return 0;
}

/* a trained token other than the first (the first row is never a target) */
static bool has_target(const dp_rendered *r) {
    for (size_t i = 1; i < r->n; i++)
        if (r->mask[i]) return true;
    return false;
}

int dp_token_data_build(const char *dataset, int max_seq, dp_render_fn render, void *ctx,
                        dp_token_data *out) {
    memset(out, 0, sizeof *out);
    if (max_seq < 2) return dp_fail("maximum sequence length %d is too short", max_seq);
    dp_dataset_reader *rd = dp_dataset_open(dataset);
    if (!rd) return -1;
    int64_t cap_t = 0, cap_s = 0;
    dp_rendered r = {0};
    dp_conversation c;
    int rc, status = 0;
    out->offsets = dp_calloc(1, sizeof(int64_t));
    cap_s = out->offsets ? 1 : 0;
    if (!out->offsets) status = -1;
    while (!status && (rc = dp_dataset_next(rd, &c)) == 1) {
        out->n_read++;
        int first = c.n > 0 && c.msgs[0].role == DP_ROLE_SYSTEM ? 1 : 0;
        bool fitted = false, truncated = false;
        /* drop the earliest messages (after the system prompt) until it fits */
        for (int f = first; f < c.n; f++) {
            r.n = 0;
            if (render(ctx, &c, f, &r)) {
                dp_fail_context("%s:%lld", dataset, (long long)c.line);
                status = -1;
                break;
            }
            if ((int64_t)r.n <= max_seq) {
                fitted = has_target(&r);
                truncated = f > first;
                break;
            }
        }
        if (status) break;
        if (!fitted) {
            out->n_skipped++;
            continue;
        }
        out->n_truncated += truncated;
        if (add_seq(out, &r, &cap_t, &cap_s)) status = -1;
    }
    if (!status && rc < 0) status = -1;
    free(r.ids);
    free(r.mask);
    dp_dataset_close(rd);
    if (!status && out->nseq == 0)
        status = dp_fail("%s: no conversation with an assistant reply fits in %d tokens "
                         "(%lld read, %lld skipped)",
                         dataset, max_seq, (long long)out->n_read, (long long)out->n_skipped);
    if (status) dp_token_data_free(out);
    return status;
}

/* ------------------------------------------------------------------ cache */

void dp_token_cache_path(char *out, size_t cap, const char *dataset, uint64_t key) {
    snprintf(out, cap, "%s.tok-%016llx.h5", dataset, (unsigned long long)key);
}

int dp_token_cache_save(const char *path, uint64_t key, const dp_token_data *d) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return dp_fail("%s: cannot create the token cache", tmp);
    int rc = dp_h5_write_1d(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, d->tokens, (hsize_t)d->T,
                            true);
    rc |= dp_h5_write_1d(f, "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, d->loss_mask,
                         (hsize_t)d->T, true);
    rc |= dp_h5_write_1d(f, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, d->offsets,
                         (hsize_t)d->nseq + 1, true);
    rc |= dp_h5_write_attr_i64(f, "format_version", CACHE_FORMAT);
    rc |= dp_h5_write_attr_i64(f, "key", (int64_t)key);
    rc |= dp_h5_write_attr_i64(f, "n_read", d->n_read);
    rc |= dp_h5_write_attr_i64(f, "n_truncated", d->n_truncated);
    rc |= dp_h5_write_attr_i64(f, "n_skipped", d->n_skipped);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc || rename(tmp, path)) {
        unlink(tmp);
        return dp_fail("%s: cannot write the token cache (disk full or read-only directory?)",
                       path);
    }
    return 0;
}

static int read_ds(hid_t f, const char *path, const char *name, hid_t mtype, size_t esz, void **out,
                   int64_t *n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return dp_fail("%s: token cache has no dataset '%s'", path, name);
    hid_t sp = H5Dget_space(d);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    void *buf = cnt >= 0 ? dp_malloc((size_t)(cnt ? cnt : 1) * esz) : NULL;
    herr_t rc = buf ? H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
    H5Dclose(d);
    if (rc < 0) {
        free(buf);
        return dp_fail("%s: token cache dataset '%s' is unreadable", path, name);
    }
    *out = buf;
    *n = cnt;
    return 0;
}

int dp_token_cache_load(const char *path, uint64_t key, dp_token_data *d) {
    memset(d, 0, sizeof *d);
    if (access(path, F_OK)) return 0;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0; /* unreadable: rebuilt and replaced */
    int64_t fmt = 0, k = 0, nt = 0, nm = 0, no = 0;
    if (dp_h5_read_attr_i64(f, "format_version", &fmt) || fmt != CACHE_FORMAT ||
        dp_h5_read_attr_i64(f, "key", &k) || (uint64_t)k != key) {
        H5Fclose(f);
        return 0;
    }
    dp_h5_read_attr_i64(f, "n_read", &d->n_read);
    dp_h5_read_attr_i64(f, "n_truncated", &d->n_truncated);
    dp_h5_read_attr_i64(f, "n_skipped", &d->n_skipped);
    int rc = read_ds(f, path, "tokens", H5T_NATIVE_INT32, 4, (void **)&d->tokens, &nt);
    if (!rc) rc = read_ds(f, path, "loss_mask", H5T_NATIVE_UINT8, 1, (void **)&d->loss_mask, &nm);
    if (!rc) rc = read_ds(f, path, "offsets", H5T_NATIVE_INT64, 8, (void **)&d->offsets, &no);
    H5Fclose(f);
    if (!rc && (nt != nm || no < 2 || d->offsets[0] != 0 || d->offsets[no - 1] != nt))
        rc = dp_fail("%s: token cache datasets disagree in size (delete the file to rebuild it)",
                     path);
    for (int64_t i = 1; !rc && i < no; i++)
        if (d->offsets[i] <= d->offsets[i - 1])
            rc = dp_fail("%s: token cache offsets are not increasing at %lld (delete the file)",
                         path, (long long)i);
    if (rc) {
        dp_token_data_free(d);
        return -1;
    }
    d->T = nt;
    d->nseq = no - 1;
    for (int64_t s = 0; s < d->nseq; s++)
        for (int64_t t = d->offsets[s] + 1; t < d->offsets[s + 1]; t++)
            d->n_trained += d->loss_mask[t];
    return 1;
}

/* ------------------------------------------------------------------ packing */

void dp_epoch_plan_free(dp_epoch_plan *p) {
    free(p->order);
    free(p->start);
    memset(p, 0, sizeof *p);
}

int dp_epoch_plan_make(const dp_token_data *d, int64_t batch_tokens, uint64_t seed, int64_t epoch,
                       bool shuffle, dp_epoch_plan *p) {
    memset(p, 0, sizeof *p);
    p->order = dp_malloc((size_t)d->nseq * sizeof(int64_t));
    p->start = dp_malloc((size_t)(d->nseq + 1) * sizeof(int64_t));
    if (!p->order || !p->start) {
        dp_epoch_plan_free(p);
        return -1;
    }
    for (int64_t i = 0; i < d->nseq; i++) p->order[i] = i;
    if (shuffle) /* Fisher-Yates from the counter-based generator: stream = epoch */
        for (int64_t i = d->nseq - 1; i > 0; i--) {
            int64_t j = (int64_t)(dp_rng_bits(seed, 0x5e0000 + (uint64_t)epoch, (uint64_t)i) %
                                  (uint64_t)(i + 1));
            int64_t t = p->order[i];
            p->order[i] = p->order[j];
            p->order[j] = t;
        }
    int64_t fill = 0;
    p->start[0] = 0;
    for (int64_t i = 0; i < d->nseq; i++) {
        int64_t len = d->offsets[p->order[i] + 1] - d->offsets[p->order[i]];
        if (len > batch_tokens) {
            dp_epoch_plan_free(p);
            return dp_fail("a sequence of %lld tokens does not fit a micro-batch of %lld",
                           (long long)len, (long long)batch_tokens);
        }
        if (fill > 0 && fill + len > batch_tokens) {
            p->start[++p->nbatches] = i;
            fill = 0;
        }
        fill += len;
    }
    p->start[++p->nbatches] = d->nseq;
    return 0;
}

int dp_batch_buf_init(dp_batch_buf *bb, int64_t cap) {
    memset(bb, 0, sizeof *bb);
    bb->cap = cap;
    bb->tokens = dp_malloc((size_t)cap * 4);
    bb->targets = dp_malloc((size_t)cap * 4);
    bb->pos = dp_malloc((size_t)cap * 4);
    bb->cu = dp_malloc((size_t)(cap + 1) * 4);
    if (!bb->tokens || !bb->targets || !bb->pos || !bb->cu) {
        dp_batch_buf_free(bb);
        return -1;
    }
    return 0;
}

void dp_batch_buf_free(dp_batch_buf *bb) {
    free(bb->tokens);
    free(bb->targets);
    free(bb->pos);
    free(bb->cu);
    memset(bb, 0, sizeof *bb);
}

int dp_batch_fill(dp_batch_buf *bb, const dp_token_data *d, const dp_epoch_plan *p, int64_t k) {
    if (k < 0 || k >= p->nbatches) return dp_fail("micro-batch %lld out of range", (long long)k);
    int64_t n = 0, ns = 0;
    bb->trained = 0;
    bb->cu[0] = 0;
    for (int64_t i = p->start[k]; i < p->start[k + 1]; i++) {
        int64_t s = p->order[i], b0 = d->offsets[s], b1 = d->offsets[s + 1];
        if (n + (b1 - b0) > bb->cap) return dp_fail("micro-batch overflows its buffer");
        for (int64_t t = b0; t < b1; t++, n++) {
            bb->tokens[n] = d->tokens[t];
            bb->pos[n] = (int32_t)(t - b0);
            bb->targets[n] = t + 1 < b1 && d->loss_mask[t + 1] ? d->tokens[t + 1] : -1;
            bb->trained += bb->targets[n] >= 0;
        }
        bb->cu[++ns] = (int32_t)n;
    }
    bb->b = (dp_batch){.N = (int)n,
                       .nseq = (int)ns,
                       .tokens = bb->tokens,
                       .targets = bb->targets,
                       .pos = bb->pos,
                       .cu_seqlens = bb->cu};
    return 0;
}

int dp_train_render(void *vctx, const dp_conversation *c, int first, dp_rendered *out) {
    dp_train_render_ctx *x = vctx;
    if (c->n + 1 > x->tmp_cap) {
        dp_chat_msg *n = dp_realloc(x->tmp, sizeof *n * (size_t)(c->n + 1));
        if (!n) return -1;
        x->tmp = n;
        x->tmp_cap = c->n + 1;
    }
    int n = 0;
    if (first > 0 && c->msgs[0].role == DP_ROLE_SYSTEM) x->tmp[n++] = c->msgs[0];
    for (int i = first; i < c->n; i++) x->tmp[n++] = c->msgs[i];
    x->ct.ids.n = 0;
    if (dp_chat_render(x->tok, x->fmt, x->tmp, (size_t)n, false, &x->ct)) return -1;
    for (size_t i = 0; i < x->ct.ids.n; i++)
        if (dp_rendered_push(out, x->ct.ids.v[i], x->ct.mask[i])) return -1;
    return 0;
}

void dp_train_render_ctx_free(dp_train_render_ctx *x) {
    dp_chat_tokens_free(&x->ct);
    free(x->tmp);
    x->tmp = NULL;
    x->tmp_cap = 0;
}
