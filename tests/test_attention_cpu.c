/* CPU causal GQA attention: forward against a double-precision reference written as full
 * masked score matrices, backward against central finite differences of that reference,
 * and the KV-cache path against the last rows of the full forward. */
#include "check.h"
#include "kernels/ops.h"

#include <stdint.h>

static check_rng rng = {7};

/* out = softmax(mask(Q K^T / sqrt(D))) V per sequence and head, in double.
 * q: (N, H, D); k, v: (N, KVH, D); out: (N, H, D); lse: (N, H). */
static void ref_attention(double *out, double *lse, const double *q, const double *k,
                          const double *v, const int32_t *cu, int nseq, int H, int KVH, int D) {
    for (int s = 0; s < nseq; s++) {
        int a = cu[s], T = cu[s + 1] - cu[s];
        for (int h = 0; h < H; h++) {
            int kvh = h * KVH / H; /* = h / (H/KVH) when KVH divides H */
            for (int t = 0; t < T; t++) {
                double S[256], mx = -1e300, z = 0;
                for (int u = 0; u < T; u++) {
                    if (u > t) continue;
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += q[((a + t) * H + h) * D + e] * k[((a + u) * KVH + kvh) * D + e];
                    S[u] = d / sqrt((double)D);
                    if (S[u] > mx) mx = S[u];
                }
                for (int u = 0; u <= t; u++) z += exp(S[u] - mx);
                if (lse) lse[(a + t) * H + h] = mx + log(z);
                for (int e = 0; e < D; e++) {
                    double o = 0;
                    for (int u = 0; u <= t; u++)
                        o += exp(S[u] - mx) / z * v[((a + u) * KVH + kvh) * D + e];
                    out[((a + t) * H + h) * D + e] = o;
                }
            }
        }
    }
}

typedef struct {
    const int32_t *cu;
    int nseq, H, KVH, D, N;
    double *q, *k, *v, *out; /* double copies */
    const float *g;          /* dloss/dout */
} attn_case;

static double ref_loss(attn_case *c) {
    ref_attention(c->out, NULL, c->q, c->k, c->v, c->cu, c->nseq, c->H, c->KVH, c->D);
    double s = 0;
    for (int i = 0; i < c->N * c->H * c->D; i++) s += c->out[i] * c->g[i];
    return s;
}

/* d loss / d x[i] for every i, by central differences on the double reference. */
static void finite_diff(attn_case *c, double *x, float *grad, int n) {
    const double h = 1e-5;
    for (int i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = ref_loss(c);
        x[i] = x0 - h;
        double lm = ref_loss(c);
        x[i] = x0;
        grad[i] = (float)((lp - lm) / (2 * h));
    }
}

static void test_attention(const int32_t *cu, int nseq, int H, int KVH, int D) {
    int N = cu[nseq];
    size_t nq = (size_t)N * H * D, nk = (size_t)N * KVH * D;
    float *q = calloc(nq, 4), *k = calloc(nk, 4), *v = calloc(nk, 4), *g = calloc(nq, 4);
    float *out = malloc(nq * 4), *lse = malloc((size_t)N * H * 4);
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    float *rout = calloc(nq, 4), *rlse = calloc((size_t)N * H, 4);
    float *ndq = malloc(nq * 4), *ndk = malloc(nk * 4), *ndv = malloc(nk * 4);
    double *q64 = malloc(nq * 8), *k64 = malloc(nk * 8), *v64 = malloc(nk * 8);
    double *out64 = malloc(nq * 8), *lse64 = malloc((size_t)N * H * 8);
    for (size_t i = 0; i < nq; i++) {
        q[i] = 2 * check_rng_float(&rng);
        g[i] = check_rng_float(&rng);
        q64[i] = q[i];
    }
    for (size_t i = 0; i < nk; i++) {
        k[i] = 2 * check_rng_float(&rng);
        v[i] = check_rng_float(&rng);
        k64[i] = k[i], v64[i] = v[i];
    }

    attention_forward(out, lse, q, k, v, cu, nseq, H, KVH, D);
    ref_attention(out64, lse64, q64, k64, v64, cu, nseq, H, KVH, D);
    for (size_t i = 0; i < nq; i++) rout[i] = (float)out64[i];
    for (int i = 0; i < N * H; i++) rlse[i] = (float)lse64[i];
    char what[96];
    snprintf(what, sizeof what, "attn out N=%d nseq=%d H=%d KVH=%d D=%d", N, nseq, H, KVH, D);
    check_arrays_near(what, rout, out, nq, 1e-5, 1e-4);
    snprintf(what, sizeof what, "attn lse H=%d KVH=%d D=%d", H, KVH, D);
    check_arrays_near(what, rlse, lse, (size_t)N * H, 1e-5, 1e-5);

    /* backward accumulates: start from 1 and subtract it again to prove += semantics */
    for (size_t i = 0; i < nq; i++) dq[i] = 1.0f;
    attention_backward(dq, dk, dv, g, out, lse, q, k, v, cu, nseq, H, KVH, D);
    for (size_t i = 0; i < nq; i++) dq[i] -= 1.0f;
    attn_case c = {cu, nseq, H, KVH, D, N, q64, k64, v64, out64, g};
    finite_diff(&c, q64, ndq, (int)nq);
    finite_diff(&c, k64, ndk, (int)nk);
    finite_diff(&c, v64, ndv, (int)nk);
    snprintf(what, sizeof what, "attn dq H=%d KVH=%d D=%d", H, KVH, D);
    check_arrays_near(what, ndq, dq, nq, 1e-4, 1e-3);
    snprintf(what, sizeof what, "attn dk H=%d KVH=%d D=%d", H, KVH, D);
    check_arrays_near(what, ndk, dk, nk, 1e-4, 1e-3);
    snprintf(what, sizeof what, "attn dv H=%d KVH=%d D=%d", H, KVH, D);
    check_arrays_near(what, ndv, dv, nk, 1e-4, 1e-3);

    free(q), free(k), free(v), free(g), free(out), free(lse), free(dq), free(dk), free(dv);
    free(rout), free(rlse), free(ndq), free(ndk), free(ndv);
    free(q64), free(k64), free(v64), free(out64), free(lse64);
}

/* Decoding: the last Tq rows of a causal forward over Tk rows, from the cache alone. */
static void test_cached(int Tk, int Tq, int H, int KVH, int D) {
    size_t nq = (size_t)Tk * H * D, nk = (size_t)Tk * KVH * D;
    float *q = calloc(nq, 4), *k = calloc(nk, 4), *v = calloc(nk, 4);
    float *out = malloc(nq * 4), *outc = malloc((size_t)Tq * H * D * 4);
    for (size_t i = 0; i < nq; i++) q[i] = 2 * check_rng_float(&rng);
    for (size_t i = 0; i < nk; i++) {
        k[i] = 2 * check_rng_float(&rng);
        v[i] = check_rng_float(&rng);
    }
    int32_t cu[2] = {0, Tk};
    attention_forward(out, NULL, q, k, v, cu, 1, H, KVH, D);
    attention_cached(outc, q + (size_t)(Tk - Tq) * H * D, k, v, Tq, Tk, H, KVH, D);
    char what[96];
    snprintf(what, sizeof what, "attn cached Tk=%d Tq=%d H=%d KVH=%d D=%d", Tk, Tq, H, KVH, D);
    check_arrays_near(what, out + (size_t)(Tk - Tq) * H * D, outc, (size_t)Tq * H * D, 1e-6, 1e-6);
    free(q), free(k), free(v), free(out), free(outc);
}

int main(void) {
    const int32_t one[] = {0, 9};
    const int32_t packed[] = {0, 5, 12, 13, 20}; /* a 1-row sequence among others */
    test_attention(one, 1, 2, 2, 8);
    test_attention(packed, 4, 4, 4, 5);  /* MHA, D odd */
    test_attention(packed, 4, 4, 2, 12); /* GQA 2:1, D not a multiple of 8 */
    test_attention(packed, 4, 6, 2, 16); /* GQA 3:1 */
    test_attention(packed, 4, 3, 1, 7);  /* MQA */
    /* sequences longer than the 64-row blocks of the training kernels, one ending mid-block */
    const int32_t longer[] = {0, 70, 140};
    test_attention(longer, 2, 2, 1, 2);
    test_cached(17, 1, 4, 2, 12);
    test_cached(17, 5, 6, 2, 16);
    test_cached(9, 9, 3, 1, 7);
    test_cached(150, 3, 4, 2, 8);
    /* the AVX-512 rows of head size 64 and 128 (cache past one 64-key block; the pool's split
     * of a long decode row), then the same through the generic loop */
    for (int narrow = 0; narrow < 2; narrow++) {
        if (narrow) setenv("DOPPEL_SIMD", "avx2", 1);
        test_cached(150, 1, 9, 3, 64);
        test_cached(700, 1, 9, 3, 64);
        test_cached(130, 2, 14, 2, 64);
        test_cached(77, 1, 4, 2, 128);
        test_cached(90, 1, 4, 2, 64); /* two heads per kv head */
    }
    unsetenv("DOPPEL_SIMD");
    return check_done();
}
