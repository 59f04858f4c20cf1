/* Model loading: HF directories (llama, qwen2 with biases, qwen3 with q/k norms in BF16) place
 * every tensor where the file has it; a GGUF of the same llama (q/k permuted by the reference
 * converter's formula) loads to identical weights; NF4 on the fly, saved in the bitsandbytes
 * layout and loaded back, gives the same codes; broken models give clear errors. */
#include "check.h"
#include "data/base/error.h"
#include "infer/config.h"
#include "infer/model_load.h"
#include "infer/safetensors.h"

#include <unistd.h>

#define FIX DOPPEL_SOURCE_DIR "/tests/fixtures/load/"

static const dp_load_opts quiet = {.quiet = true};

/* the tensor `name` of the file equals out (n floats) */
static void same_as_file(const dp_safetensors *st, const char *name, const float *got) {
    const dp_st_tensor *t = dp_safetensors_find(st, name);
    CHECK_REPORT(t != NULL, "fixture lacks %s", name);
    if (!t || !got) return;
    float *ref = malloc((size_t)t->numel * 4);
    dp_convert_to_f32(ref, t->data, t->dtype, (size_t)t->numel);
    CHECK_REPORT(!memcmp(ref, got, (size_t)t->numel * 4), "%s differs from the file", name);
    free(ref);
}

static void check_placement(const dp_model *m, const char *file) {
    dp_safetensors *st = dp_safetensors_open(file);
    CHECK_REPORT(st != NULL, "%s", dp_last_error());
    if (!st) return;
    same_as_file(st, "model.embed_tokens.weight", m->embed);
    same_as_file(st, "model.norm.weight", m->final_norm);
    char name[256];
    for (int l = 0; l < m->cfg.L; l++) {
        const dp_layer *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        same_as_file(st, name, ly->attn_norm);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        same_as_file(st, name, ly->ffn_norm);
        for (int id = 0; id < DP_N_LINEAR; id++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l,
                     id < DP_GATE ? "self_attn" : "mlp", dp_linear_names[id]);
            same_as_file(st, name, ly->lin[id].w);
            if (ly->lin[id].bias) {
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l,
                         dp_linear_names[id]);
                same_as_file(st, name, ly->lin[id].bias);
            }
        }
        if (ly->q_norm) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
            same_as_file(st, name, ly->q_norm);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
            same_as_file(st, name, ly->k_norm);
        }
    }
    if (!m->cfg.tied_embeddings) same_as_file(st, "lm_head.weight", m->lm_head.w);
    dp_safetensors_close(st);
}

/* the HF directory and the GGUF of the same weights load to identical models */
static void test_hf_vs_gguf(const char *dir, const char *gguf, const char *st, dp_arch arch) {
    dp_model *hf = dp_model_load(dir, &quiet);
    CHECK_REPORT(hf != NULL, "%s", dp_last_error());
    dp_model *gg = dp_model_load(gguf, &quiet);
    CHECK_REPORT(gg != NULL, "%s", dp_last_error());
    if (!hf || !gg) goto done;
    check_placement(hf, st);
    const dp_model_config *a = &hf->cfg, *b = &gg->cfg;
    CHECK(a->arch == arch && b->arch == arch && a->qkv_bias == b->qkv_bias);
    CHECK(a->L == b->L && a->C == b->C && a->F == b->F && a->H == b->H && a->KVH == b->KVH &&
          a->D == b->D && a->V == b->V && a->max_position == b->max_position);
    CHECK(a->rms_eps == b->rms_eps && a->rope_theta == b->rope_theta);
    CHECK(a->tied_embeddings && b->tied_embeddings);
    CHECK(hf->lm_head.w == hf->embed && gg->lm_head.w == gg->embed);
    if (arch == DP_ARCH_LLAMA) CHECK(b->n_eos == 1 && b->eos_ids[0] == 2 && b->bos_id == 1);
    size_t C = (size_t)a->C;
    CHECK(!memcmp(hf->embed, gg->embed, (size_t)a->V * C * 4));
    CHECK(!memcmp(hf->final_norm, gg->final_norm, C * 4));
    for (int l = 0; l < a->L; l++)
        for (int id = 0; id < DP_N_LINEAR; id++) {
            const dp_linear *x = &hf->layers[l].lin[id], *y = &gg->layers[l].lin[id];
            CHECK(x->out == y->out && x->in == y->in);
            CHECK_REPORT(!memcmp(x->w, y->w, (size_t)x->out * x->in * 4),
                         "layer %d %s: GGUF weights differ from HF (q/k permutation?)", l,
                         dp_linear_names[id]);
            CHECK(!x->bias == !y->bias);
            if (x->bias && y->bias) CHECK(!memcmp(x->bias, y->bias, (size_t)x->out * 4));
        }
done:
    dp_model_free(hf);
    dp_model_free(gg);
}

static void test_qwen(void) {
    dp_model *m = dp_model_load(FIX "tiny-qwen2", &quiet);
    CHECK_REPORT(m != NULL, "%s", dp_last_error());
    if (m) {
        CHECK(m->cfg.arch == DP_ARCH_QWEN2 && m->cfg.qkv_bias);
        CHECK(m->layers[0].lin[DP_Q].bias && m->layers[0].lin[DP_V].bias &&
              !m->layers[0].lin[DP_O].bias);
        check_placement(m, FIX "tiny-qwen2/model.safetensors");
    }
    dp_model_free(m);
    m = dp_model_load(FIX "tiny-qwen3", &quiet);
    CHECK_REPORT(m != NULL, "%s", dp_last_error());
    if (m) {
        CHECK(m->cfg.arch == DP_ARCH_QWEN3 && m->cfg.D == 16 && m->layers[1].q_norm);
        CHECK(!m->cfg.tied_embeddings && m->lm_head.w && m->lm_head.w != m->embed);
        CHECK(m->layers[0].lin[DP_Q].out == 64 && m->layers[0].lin[DP_O].in == 64);
        CHECK(m->cfg.n_eos == 2 && m->cfg.eos_ids[1] == 5);
        check_placement(m, FIX "tiny-qwen3/model.safetensors");
    }
    dp_model_free(m);
}

static void test_nf4_roundtrip(void) {
    dp_model *f = dp_model_load(FIX "tiny-qwen3", &quiet);
    dp_load_opts o = {.nf4 = true, .nf4_lm_head = true, .quiet = true, .nf4_file = NULL};
    dp_model *q = dp_model_load(FIX "tiny-qwen3", &o);
    CHECK_REPORT(f && q, "%s", dp_last_error());
    if (!f || !q) goto done;
    /* on-the-fly NF4: the same bytes as quantizing the fp32 weights; each value within half the
     * widest NF4 gap ((1 - 0.6962) / 2) of its block's true absmax s, plus the error of the
     * double-quantized absmax s' (|w - c s'| <= |w - c s| + |s - s'|) */
    double worst = 0;
    for (int l = 0; l < f->cfg.L; l++)
        for (int id = 0; id < DP_N_LINEAR; id++) {
            const dp_linear *a = &f->layers[l].lin[id], *b = &q->layers[l].lin[id];
            CHECK(b->w == NULL && b->nf4 != NULL);
            dp_nf4 ref;
            dp_nf4_quantize(&ref, a->w, a->out, a->in, 64);
            CHECK(!memcmp(ref.codes, b->nf4->codes, (size_t)(ref.n + 1) / 2));
            CHECK(!memcmp(ref.absmax_q, b->nf4->absmax_q, (size_t)ref.nblocks));
            float *d = malloc((size_t)ref.n * 4), *am = malloc((size_t)ref.nblocks * 4);
            dp_nf4_dequantize(b->nf4, d);
            dp_nf4_absmax(b->nf4, am);
            for (int64_t b = 0; b < ref.nblocks; b++) {
                double sb = 0;
                for (int64_t i = b * 64; i < (b + 1) * 64 && i < ref.n; i++)
                    sb = fmax(sb, fabs(a->w[i]));
                for (int64_t i = b * 64; i < (b + 1) * 64 && i < ref.n; i++) {
                    double e = fabs(d[i] - a->w[i]) / (0.1520 * sb + fabs(sb - am[b]) + 1e-7);
                    if (e > worst) worst = e;
                }
            }
            free(d);
            free(am);
            dp_nf4_free(&ref);
        }
    fprintf(stderr, "  NF4 worst |w - dequant| / (0.152 s + |s - s'|) = %.4f (must be <= 1)\n",
            worst);
    CHECK(worst <= 1.0);
    CHECK(q->lm_head.nf4 != NULL);
    /* saved in the bitsandbytes layout, then loaded back through nf4_file */
    char path[] = "/tmp/doppel-nf4-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_REPORT(dp_model_save_nf4(q, path) == 0, "%s", dp_last_error());
    dp_safetensors *st = dp_safetensors_open(path);
    CHECK(st != NULL);
    if (st) {
        const dp_st_tensor *t = dp_safetensors_find(
            st, "model.layers.1.mlp.down_proj.weight.quant_state.bitsandbytes__nf4");
        CHECK(t && t->dtype == DP_DT_U8);
        CHECK(dp_safetensors_find(st, "model.layers.0.self_attn.q_proj.weight.nested_quant_map"));
        CHECK(dp_safetensors_find(st, "lm_head.weight.absmax"));
        t = dp_safetensors_find(st, "model.layers.0.mlp.up_proj.weight");
        CHECK(t && t->dtype == DP_DT_U8 && t->ndim == 2 && t->shape[1] == 1 &&
              t->shape[0] == 48 * 32 / 2);
        dp_safetensors_close(st);
    }
    o.nf4_file = path;
    dp_model *r = dp_model_load(FIX "tiny-qwen3", &o);
    CHECK_REPORT(r != NULL, "%s", dp_last_error());
    if (r) {
        for (int l = 0; l < r->cfg.L; l++)
            for (int id = 0; id < DP_N_LINEAR; id++) {
                const dp_nf4 *a = q->layers[l].lin[id].nf4, *b = r->layers[l].lin[id].nf4;
                CHECK(b && !memcmp(a->codes, b->codes, (size_t)(a->n + 1) / 2) &&
                      !memcmp(a->absmax_q, b->absmax_q, (size_t)a->nblocks) &&
                      a->absmax2[0] == b->absmax2[0] && a->offset == b->offset);
            }
        CHECK(!memcmp(r->embed, f->embed, (size_t)f->cfg.V * f->cfg.C * 4));
        CHECK(r->lm_head.nf4 && !memcmp(r->lm_head.nf4->codes, q->lm_head.nf4->codes, 64 * 32 / 2));
        CHECK(!memcmp(r->layers[1].q_norm, f->layers[1].q_norm, 16 * 4));
    }
    dp_model_free(r);
    /* it records the weights it came from: named for another model, it is refused */
    CHECK(dp_model_load(FIX "tiny-qwen2", &o) == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "quantized from other weights") != NULL, "%s",
                 dp_last_error());
    unlink(path);
    /* a missing explicit NF4 file is an error naming it */
    o.nf4_file = "/nonexistent/x.nf4.safetensors";
    CHECK(dp_model_load(FIX "tiny-qwen3", &o) == NULL);
    CHECK(strstr(dp_last_error(), "doppel quantize") != NULL);
done:
    dp_model_free(f);
    dp_model_free(q);
}

static void test_errors(void) {
    CHECK(dp_model_load("/nonexistent/model", &quiet) == NULL);
    CHECK(strstr(dp_last_error(), "no such file or directory") != NULL);
    CHECK(dp_model_load("/tmp", &quiet) == NULL);
    CHECK(strstr(dp_last_error(), "no config.json") != NULL);
    /* a config that disagrees with the weights names the tensor and both shapes */
    char dir[] = "/tmp/doppel-bad-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":40,"
          "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
          "\"vocab_size\":64,\"tie_word_embeddings\":true}",
          f);
    fclose(f);
    snprintf(q, sizeof q, "%s/model.safetensors", dir);
    CHECK(symlink(FIX "tiny-llama/model.safetensors", q) == 0);
    CHECK(dp_model_load(dir, &quiet) == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "gate_proj.weight has shape [48, 32], expected [40, 32]"),
                 "%s", dp_last_error());
    f = fopen(p, "w");
    fputs("{\"model_type\":\"gemma\"}", f);
    fclose(f);
    CHECK(dp_model_load(dir, &quiet) == NULL);
    CHECK(strstr(dp_last_error(), "unsupported architecture \"gemma\"") != NULL);
    unlink(q);
    unlink(p);
    rmdir(dir);
}

int main(void) {
    test_hf_vs_gguf(FIX "tiny-llama", FIX "tiny-llama.gguf", FIX "tiny-llama/model.safetensors",
                    DP_ARCH_LLAMA);
    test_hf_vs_gguf(FIX "tiny-qwen2", FIX "tiny-qwen2.gguf", FIX "tiny-qwen2/model.safetensors",
                    DP_ARCH_QWEN2);
    test_qwen();
    test_nf4_roundtrip();
    test_errors();
    return check_done();
}
