/* Test helper: the tiny reference models of tests/fixtures/peft/<arch>.h5 (written by
 * tests/reference/make_peft_fixture.py with transformers + PEFT) as a dp_model in memory, plus
 * readers for the fixture's arrays. */
#ifndef DOPPEL_FIXTURE_H5_H
#define DOPPEL_FIXTURE_H5_H

#include "infer/batch.h"
#include "infer/model.h"
#include "infer/adapter.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole numeric dataset as float (or int32 when as_int); NULL when absent. */
/* tests/fixtures/peft/ARCH.h5 opened read-only, or -1 after a failed check. */
static inline hid_t fx_open(const char *arch) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/peft/%s.h5", DOPPEL_SOURCE_DIR, arch);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK_REPORT(f >= 0, "cannot open %s", path);
    return f;
}

static inline void *fx_read(hid_t f, const char *name, size_t *count, int as_int) {
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return NULL;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    void *buf = malloc((size_t)(n > 0 ? n : 1) * 4);
    H5Dread(d, as_int ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(sp);
    H5Dclose(d);
    if (count) *count = (size_t)n;
    return buf;
}

/* The fixture's training batch (batch/tokens, targets, pos, cu_seqlens); bufs[4] get the arrays
 * to free. */
static inline dp_batch fx_batch(hid_t f, int32_t **bufs) {
    size_t n, ns;
    bufs[0] = fx_read(f, "batch/tokens", &n, 1);
    bufs[1] = fx_read(f, "batch/targets", NULL, 1);
    bufs[2] = fx_read(f, "batch/pos", NULL, 1);
    bufs[3] = fx_read(f, "batch/cu_seqlens", &ns, 1);
    return (dp_batch){.N = (int)n,
                      .nseq = (int)ns - 1,
                      .tokens = bufs[0],
                      .targets = bufs[1],
                      .pos = bufs[2],
                      .cu_seqlens = bufs[3]};
}

static inline double fx_read_scalar(hid_t f, const char *name) {
    double x = NAN;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return x;
    H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &x);
    H5Dclose(d);
    return x;
}

static inline double fx_attr(hid_t f, const char *name) {
    double x = NAN;
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_DOUBLE, &x);
    H5Aclose(a);
    H5Gclose(g);
    return x;
}

typedef struct {
    dp_model model;
    dp_lora_config lc;
    float *blocks[64]; /* every allocation, freed by fx_model_free */
    int nblocks;
} fx_model;

static inline float *fx_w(hid_t f, fx_model *fm, const char *fmt, int layer) {
    char name[256];
    snprintf(name, sizeof name, fmt, layer);
    float *w = fx_read(f, name, NULL, 0);
    if (w && fm->nblocks < 64) fm->blocks[fm->nblocks++] = w;
    return w;
}

static const char *const fx_lin_hf[DP_N_LINEAR] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

static inline int fx_model_load(hid_t f, const char *arch, fx_model *fm) {
    memset(fm, 0, sizeof *fm);
    dp_model_config *c = &fm->model.cfg;
    c->arch = !strcmp(arch, "llama")   ? DP_ARCH_LLAMA
              : !strcmp(arch, "qwen2") ? DP_ARCH_QWEN2
                                       : DP_ARCH_QWEN3;
    c->L = (int)fx_attr(f, "L"), c->C = (int)fx_attr(f, "C"), c->F = (int)fx_attr(f, "F");
    c->H = (int)fx_attr(f, "H"), c->KVH = (int)fx_attr(f, "KVH"), c->D = (int)fx_attr(f, "D");
    c->V = (int)fx_attr(f, "V"), c->rms_eps = (float)fx_attr(f, "rms_eps");
    c->rope_theta = (float)fx_attr(f, "rope_theta");
    c->tied_embeddings = fx_attr(f, "tied") != 0;
    c->qkv_bias = c->arch == DP_ARCH_QWEN2;
    c->qk_norm = c->arch == DP_ARCH_QWEN3;
    c->max_position = 128;
    c->bos_id = -1;
    fm->lc.r = (int)fx_attr(f, "r");
    fm->lc.alpha = (float)fx_attr(f, "alpha");
    fm->lc.rslora = fx_attr(f, "rslora") != 0;
    fm->lc.targets = DP_LORA_ALL_TARGETS;
    dp_model *m = &fm->model;
    m->embed = fx_w(f, fm, "weights/model.embed_tokens.weight", 0);
    m->final_norm = fx_w(f, fm, "weights/model.norm.weight", 0);
    m->lm_head = (dp_linear){.out = c->V, .in = c->C};
    m->lm_head.w = c->tied_embeddings ? m->embed : fx_w(f, fm, "weights/lm_head.weight", 0);
    m->layers = calloc((size_t)c->L, sizeof *m->layers);
    for (int l = 0; l < c->L; l++) {
        dp_layer *ly = &m->layers[l];
        ly->attn_norm = fx_w(f, fm, "weights/model.layers.%d.input_layernorm.weight", l);
        ly->ffn_norm = fx_w(f, fm, "weights/model.layers.%d.post_attention_layernorm.weight", l);
        if (c->qk_norm) {
            ly->q_norm = fx_w(f, fm, "weights/model.layers.%d.self_attn.q_norm.weight", l);
            ly->k_norm = fx_w(f, fm, "weights/model.layers.%d.self_attn.k_norm.weight", l);
        }
        for (int k = 0; k < DP_N_LINEAR; k++) {
            char fmt[128];
            dp_linear *lin = &ly->lin[k];
            dp_lora_module_shape(c, k, &lin->out, &lin->in);
            snprintf(fmt, sizeof fmt, "weights/model.layers.%%d.%s.weight", fx_lin_hf[k]);
            lin->w = fx_w(f, fm, fmt, l);
            if (c->qkv_bias && k <= DP_V) {
                snprintf(fmt, sizeof fmt, "weights/model.layers.%%d.%s.bias", fx_lin_hf[k]);
                lin->bias = fx_w(f, fm, fmt, l);
            }
            if (!lin->w) return -1;
        }
    }
    return m->embed && m->final_norm && m->lm_head.w ? 0 : -1;
}

static inline void fx_model_free(fx_model *fm) {
    for (int i = 0; i < fm->nblocks; i++) free(fm->blocks[i]);
    free(fm->model.layers);
}

static inline void fx_nf4_free(dp_nf4 *q, int L) {
    for (int i = 0; q && i < L * DP_N_LINEAR; i++) dp_nf4_free(&q[i]);
    free(q);
}

/* The QLoRA base of the fixture: an NF4 copy (blocksize 64) of every block linear of fm, at
 * q[l * DP_N_LINEAR + m]; fm's fp32 weights are left as they are. NULL when one fails. */
static inline dp_nf4 *fx_model_nf4(const fx_model *fm) {
    const dp_model_config *c = &fm->model.cfg;
    dp_nf4 *q = calloc((size_t)c->L * DP_N_LINEAR, sizeof *q);
    for (int i = 0; q && i < c->L * DP_N_LINEAR; i++) {
        const dp_linear *lin = &fm->model.layers[i / DP_N_LINEAR].lin[i % DP_N_LINEAR];
        if (dp_nf4_quantize(&q[i], lin->w, lin->out, lin->in, 64)) {
            fx_nf4_free(q, c->L);
            return NULL;
        }
    }
    return q;
}

/* PEFT's name of a LoRA tensor in the fixture ("lora_init/...", "grads/..."). */
static inline void fx_lora_name(char *out, size_t cap, const char *group, int l, int m, char ab) {
    snprintf(out, cap, "%s/base_model.model.model.layers.%d.%s.lora_%c.weight", group, l,
             fx_lin_hf[m], ab);
}

/* Copies the fixture's LoRA init into lora; -1 when a tensor is missing or mis-sized. */
static inline int fx_lora_init(hid_t f, dp_lora *lora) {
    for (int l = 0; l < lora->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            dp_lora_module *md = dp_lora_mod(lora, l, m);
            for (int ab = 0; ab < 2; ab++) {
                char name[256];
                size_t n;
                fx_lora_name(name, sizeof name, "lora_init", l, m, ab ? 'B' : 'A');
                float *x = fx_read(f, name, &n, 0);
                size_t want = ab ? (size_t)md->out * lora->cfg.r : (size_t)lora->cfg.r * md->in;
                if (!x || n != want) {
                    free(x);
                    return -1;
                }
                memcpy(ab ? md->B : md->A, x, n * sizeof(float));
                free(x);
            }
        }
    return 0;
}

#endif
