/* doppel merge --format lora-gguf (see export_lora_gguf.h): the header and the adapter's A and B
 * streamed module by module. */
#include "infer/export_lora_gguf.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/config.h"
#include "infer/dtype.h"
#include "infer/export_gguf.h"
#include "infer/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ALIGN 32 /* general.alignment's default */

/* llama.cpp's tensor names of the seven linears (src/llama-arch.cpp) */
static const char *const lora_gguf_linear[DP_N_LINEAR] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

static int put_u32(dp_buf *h, uint32_t v) {
    return dp_buf_append(h, &v, 4);
}
static int put_u64(dp_buf *h, uint64_t v) {
    return dp_buf_append(h, &v, 8);
}
static int put_str(dp_buf *h, const char *s) {
    return put_u64(h, strlen(s)) || dp_buf_append(h, s, strlen(s));
}
static int put_kv_str(dp_buf *h, const char *key, const char *v) {
    return put_str(h, key) || put_u32(h, DP_GGUF_STRING) || put_str(h, v);
}

/* rows x cols floats as F32 or F16 */
static int write_floats(dp_writer *w, const float *x, size_t n, int type, uint16_t *h16) {
    if (type == DP_GGML_F32) return dp_writer_write(w, x, n * sizeof(float));
    for (size_t k = 0; k < n; k++) h16[k] = dp_f32_to_f16(x[k]);
    return dp_writer_write(w, h16, n * 2);
}

int dp_export_lora_gguf(const dp_merge *mg, const dp_export_lora_gguf_opts *o) {
    if (o->type != DP_GGML_F32 && o->type != DP_GGML_F16)
        return dp_fail("--type of --format lora-gguf must be f32 or f16");
    struct stat st;
    if (stat(o->out_path, &st) == 0)
        return dp_fail("%s already exists: give a new path (doppel merge never overwrites)",
                       o->out_path);
    const dp_model_config *c = &mg->model->cfg;
    const dp_lora *lora = mg->lora;
    const int r = lora->cfg.r;
    const size_t esize = o->type == DP_GGML_F32 ? 4 : 2;
    char *persona = dp_merge_meta_string(mg, "persona");
    dp_buf header = {0};
    dp_writer *w = NULL;
    float *permuted = NULL;
    uint16_t *h16 = NULL;
    int rc = -1;
    /* the largest B and A: (F, r) or (r, F) floats */
    size_t big = 0;
    int n_mod = 0;
    for (int l = 0; l < c->L; l++)
        for (int id = 0; id < DP_N_LINEAR; id++) {
            const dp_lora_module *m = dp_lora_mod(lora, l, id);
            if (!m->A) continue;
            n_mod++;
            size_t a = (size_t)m->in * (size_t)r, b = (size_t)m->out * (size_t)r;
            if (a > big) big = a;
            if (b > big) big = b;
        }
    if (!n_mod) {
        dp_fail("%s: the adapter adapts no module; there is nothing to export", mg->adapter_dir);
        goto out;
    }
    permuted = dp_malloc(big * sizeof(float));
    h16 = dp_malloc(big * 2);
    if (!permuted || !h16) goto out;

    /* llama.cpp's scale is alpha / r with r = lora_b's ne[0]; rsLoRA's alpha / sqrt(r) is
     * alpha' / r with alpha' = alpha sqrt(r) (llama.cpp's converter writes alpha as it is, which
     * is wrong for rsLoRA) */
    const float alpha = lora->cfg.rslora ? lora->cfg.alpha * sqrtf((float)r) : lora->cfg.alpha;
    const char *name = persona ? persona : "doppel adapter";
    dp_buf *h = &header;
    if (dp_buf_append(h, "GGUF", 4) || put_u32(h, 3) || put_u64(h, 2 * (uint64_t)n_mod) ||
        put_u64(h, 5) || put_kv_str(h, "general.architecture", dp_arch_name(c->arch)) ||
        put_kv_str(h, "general.type", "adapter") || put_kv_str(h, "general.name", name) ||
        put_kv_str(h, "adapter.type", "lora") || put_str(h, "adapter.lora.alpha") ||
        put_u32(h, DP_GGUF_F32) || dp_buf_append(h, &alpha, 4))
        goto out;
    uint64_t off = 0;
    for (int l = 0; l < c->L; l++)
        for (int id = 0; id < DP_N_LINEAR; id++) {
            const dp_lora_module *m = dp_lora_mod(lora, l, id);
            if (!m->A) continue;
            for (int ab = 0; ab < 2; ab++) {
                char tn[128];
                snprintf(tn, sizeof tn, "blk.%d.%s.weight.lora_%c", l, lora_gguf_linear[id],
                         ab ? 'b' : 'a');
                /* A (r, in): ne (in, r); B (out, r): ne (r, out) */
                uint64_t ne0 = ab ? (uint64_t)r : (uint64_t)m->in;
                uint64_t ne1 = ab ? (uint64_t)m->out : (uint64_t)r;
                if (put_str(h, tn) || put_u32(h, 2) || put_u64(h, ne0) || put_u64(h, ne1) ||
                    put_u32(h, (uint32_t)o->type) || put_u64(h, off))
                    goto out;
                off += (ne0 * ne1 * esize + ALIGN - 1) / ALIGN * ALIGN;
            }
        }
    static const uint8_t zeros[ALIGN] = {0};
    if (h->len % ALIGN && dp_buf_append(h, zeros, ALIGN - h->len % ALIGN)) goto out;
    if (!(w = dp_writer_open(o->out_path)) || dp_writer_write(w, h->data, h->len)) goto out;
    for (int l = 0; l < c->L; l++)
        for (int id = 0; id < DP_N_LINEAR; id++) {
            const dp_lora_module *m = dp_lora_mod(lora, l, id);
            if (!m->A) continue;
            size_t na = (size_t)r * (size_t)m->in, nb = (size_t)m->out * (size_t)r;
            for (size_t k = 0; k < na + nb; k++) {
                float v = k < na ? m->A[k] : m->B[k - na];
                if (!isfinite(v) || (o->type == DP_GGML_F16 && fabsf(v) > 65504.0f)) {
                    dp_fail("%s: layer %d %s holds %g, which %s cannot hold", mg->adapter_dir, l,
                            dp_linear_names[id], (double)v, dp_ggml_type_name(o->type));
                    goto out;
                }
            }
            const float *B = m->B;
            if (c->arch == DP_ARCH_LLAMA && (id == DP_Q || id == DP_K)) {
                /* (out, r) rows into GGUF's rope order, as the base's q/k rows are */
                dp_gguf_permute_rows(m->B, permuted, id == DP_Q ? c->H : c->KVH, m->out, r);
                B = permuted;
            }
            if (write_floats(w, m->A, na, o->type, h16) ||
                ((na * esize) % ALIGN && dp_writer_write(w, zeros, ALIGN - (na * esize) % ALIGN)) ||
                write_floats(w, B, nb, o->type, h16) ||
                ((nb * esize) % ALIGN && dp_writer_write(w, zeros, ALIGN - (nb * esize) % ALIGN)))
                goto out;
        }
    rc = dp_writer_commit(w);
    w = NULL;
    if (!rc && !o->quiet)
        fprintf(stderr, "%d adapted linears, r = %d, llama.cpp alpha %g (scale %g)\n", n_mod, r,
                (double)alpha, (double)lora->scale);
out:
    if (w) dp_writer_abort(w);
    free(permuted);
    free(h16);
    dp_buf_free(&header);
    free(persona);
    return rc;
}
