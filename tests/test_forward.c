/* The forward pass against transformers: tests/fixtures/tiny-{qwen2,llama,qwen3} logits for
 * whole sequences (every position), a prefill + KV-cache decode, chunked prefill, and the NF4
 * path against transformers run on bitsandbytes-dequantized weights. */
#include "check.h"
#include "fixture_st.h"
#include "data/base/error.h"
#include "infer/forward.h"
#include "infer/model_load.h"
#include "infer/safetensors.h"

#include "kernels/nf4.h"

#include <math.h>
#include <stdlib.h>

static const char *const MODELS[] = {"tiny-qwen2", "tiny-llama", "tiny-qwen3"};

/* every position of each sequence, in one prefill (and in chunks of 5 for the longest) */
static void check_sequences(const dp_model *m, const dp_safetensors *ref, const char *name,
                            const char *prefix, double rel_tol) {
    const int V = m->cfg.V;
    for (int s = 0; s < 4; s++) {
        char key[64], what[128];
        int64_t T, n;
        snprintf(key, sizeof key, "seq%d.tokens", s);
        int32_t *tok = (int32_t *)fx_st_tensor(ref, key, &T);
        snprintf(key, sizeof key, "%sseq%d.logits", prefix, s);
        float *want = fx_st_tensor(ref, key, &n);
        if (!tok || !want || n != T * V) {
            CHECK_REPORT(0, "%s: bad reference shapes", name);
            free(tok), free(want);
            return;
        }
        double tol = rel_tol * fx_max_abs(want, (size_t)n);
        float *got = calloc((size_t)n, sizeof(float));
        for (int chunk = 0; chunk <= 5; chunk += 5) {
            if (chunk && T < 20) break;
            dp_forward f;
            CHECK(dp_forward_create(&f, m, 64, chunk) == 0);
            CHECK(dp_forward_tokens(&f, tok, (int)T, got) == 0);
            snprintf(what, sizeof what, "%s %sseq%d (T=%d)%s", name, prefix, s, (int)T,
                     chunk ? " chunked" : "");
            check_arrays_near(what, want, got, (size_t)n, tol, 0);
            /* last-position logits are also left in f.logits */
            CHECK_NEAR(want[(T - 1) * V + 7], f.logits[7], tol, 0);
            dp_forward_free(&f);
        }
        free(got), free(tok), free(want);
    }
}

static void check_decode(const dp_model *m, const dp_safetensors *ref, const char *name) {
    const int V = m->cfg.V;
    int64_t P, S, n;
    int32_t *prefix = (int32_t *)fx_st_tensor(ref, "decode.prefix", &P);
    int32_t *steps = (int32_t *)fx_st_tensor(ref, "decode.tokens", &S);
    float *want = fx_st_tensor(ref, "decode.logits", &n);
    if (!prefix || !steps || !want || n != (S + 1) * V) {
        CHECK_REPORT(0, "%s: bad decode reference", name);
        goto out;
    }
    double tol = 1e-4 * fx_max_abs(want, (size_t)n);
    float *got = calloc((size_t)n, sizeof(float));
    dp_forward f;
    CHECK(dp_forward_create(&f, m, 32, 0) == 0);
    CHECK(dp_forward_tokens(&f, prefix, (int)P, NULL) == 0);
    memcpy(got, f.logits, (size_t)V * sizeof(float));
    for (int i = 0; i < S; i++) {
        CHECK(dp_forward_tokens(&f, &steps[i], 1, NULL) == 0);
        memcpy(got + (size_t)(i + 1) * V, f.logits, (size_t)V * sizeof(float));
    }
    CHECK_EQ_INT(P + S, f.T);
    char what[128];
    snprintf(what, sizeof what, "%s prefill %d + decode %d", name, (int)P, (int)S);
    check_arrays_near(what, want, got, (size_t)n, tol, 0);

    /* truncating the cache and decoding again gives the same logits */
    dp_forward_truncate(&f, (int)P);
    CHECK(dp_forward_tokens(&f, steps, 1, NULL) == 0);
    snprintf(what, sizeof what, "%s after truncate", name);
    check_arrays_near(what, want + V, f.logits, (size_t)V, tol, 0);

    /* overflow and bad ids fail cleanly and append nothing */
    int T = f.T;
    int32_t big[40] = {0};
    CHECK(dp_forward_tokens(&f, big, 40, NULL) == -1);
    CHECK(strstr(dp_last_error(), "context") != NULL);
    int32_t bad = m->cfg.V;
    CHECK(dp_forward_tokens(&f, &bad, 1, NULL) == -1);
    CHECK(strstr(dp_last_error(), "outside the vocabulary") != NULL);
    CHECK_EQ_INT(T, f.T);
    dp_forward_free(&f);
    free(got);
out:
    free(prefix), free(steps), free(want);
}

/* The NF4 linears (tile dequant + sgemm for prefill, fused gemv for decode) against the fp32
 * path over the same weights dequantized: equal up to summation order. */
static void check_nf4_kernels(const dp_model *m, const dp_safetensors *ref, const char *name) {
    const dp_model_config *c = &m->cfg;
    dp_model d = *m;
    d.layers = calloc((size_t)c->L, sizeof *d.layers);
    for (int l = 0; l < c->L; l++) {
        d.layers[l] = m->layers[l];
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_linear *lin = &m->layers[l].lin[i];
            CHECK(lin->nf4 != NULL && lin->w == NULL);
            if (!lin->nf4) continue;
            float *w = malloc((size_t)lin->out * lin->in * sizeof(float));
            dp_nf4_dequantize(lin->nf4, w);
            d.layers[l].lin[i].w = w;
            d.layers[l].lin[i].nf4 = NULL;
        }
    }
    int64_t T;
    int32_t *tok = (int32_t *)fx_st_tensor(ref, "seq3.tokens", &T);
    size_t n = (size_t)T * c->V;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    float *a1 = malloc((size_t)c->V * sizeof(float));
    dp_forward fa, fb;
    CHECK(dp_forward_create(&fa, m, 64, 0) == 0 && dp_forward_create(&fb, &d, 64, 0) == 0);
    CHECK(dp_forward_tokens(&fa, tok, (int)T - 1, a) == 0);
    CHECK(dp_forward_tokens(&fb, tok, (int)T, b) == 0);
    CHECK(dp_forward_tokens(&fa, tok + T - 1, 1, NULL) == 0); /* the gemv path */
    memcpy(a + (size_t)(T - 1) * c->V, fa.logits, (size_t)c->V * sizeof(float));
    char what[128];
    snprintf(what, sizeof what, "%s NF4 kernels vs fp32 of dequantized", name);
    check_arrays_near(what, b, a, n, 1e-5 * fx_max_abs(b, n), 0);
    dp_forward_free(&fa);
    dp_forward_free(&fb);
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) free(d.layers[l].lin[i].w);
    free(d.layers), free(a), free(b), free(a1), free(tok);
}

int main(void) {
    for (size_t i = 0; i < sizeof MODELS / sizeof MODELS[0]; i++) {
        char dir[4096], refpath[4200];
        snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", DOPPEL_SOURCE_DIR, MODELS[i]);
        snprintf(refpath, sizeof refpath, "%s/reference.safetensors", dir);
        dp_safetensors *ref = dp_safetensors_open(refpath);
        CHECK_REPORT(ref != NULL, "%s", dp_last_error());
        if (!ref) continue;

        dp_load_opts opts = {.quiet = true};
        dp_model *m = dp_model_load(dir, &opts);
        if (!m) {
            CHECK_REPORT(0, "%s", dp_last_error());
        } else {
            check_sequences(m, ref, MODELS[i], "", 1e-4);
            check_decode(m, ref, MODELS[i]);
            dp_model_free(m);
        }
        /* quantized here, never from a stale quantized file beside the fixture */
        m = dp_model_load(dir, &opts);
        if (!m || dp_model_quantize_nf4(m, 64, false)) {
            CHECK_REPORT(0, "%s (NF4): %s", MODELS[i], dp_last_error());
        } else {
            /* doppel's NF4 bytes equal bitsandbytes' except where its fp32 mean of the absmax
             * (the double-quant offset) rounds one ulp away from torch's, which can move an
             * 8-bit absmax code by one step: hence 1e-3 x scale here, and the exact check of
             * the NF4 kernels below */
            check_sequences(m, ref, MODELS[i], "nf4.", 1e-3);
            check_nf4_kernels(m, ref, MODELS[i]);
            dp_model_free(m);
        }
        /* the Llama with llama3 RoPE scaling as llama.cpp converts it: the scaling is a
         * rope_freqs tensor of the GGUF (tests/reference/make_llama3_gguf_fixture.py), and the
         * logits are still transformers' */
        if (!strcmp(MODELS[i], "tiny-llama")) {
            m = dp_model_load(DOPPEL_SOURCE_DIR "/tests/fixtures/load/tiny-llama3.gguf", &opts);
            CHECK_REPORT(m != NULL, "tiny-llama3.gguf: %s", dp_last_error());
            if (m) {
                CHECK_EQ_INT(m->cfg.rope_scaling.n_factors, m->cfg.D / 2);
                check_sequences(m, ref, "tiny-llama3.gguf", "", 1e-4);
                dp_model_free(m);
            }
        }
        dp_safetensors_close(ref);
    }
    return check_done();
}
