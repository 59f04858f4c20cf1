/* CPU ops against PyTorch / transformers: the committed fixture tests/reference/ops_reference.json
 * (written by tests/reference/gen_ops_reference.py) holds inputs, outputs and autograd
 * gradients for RoPE (llama3 scaling included), RMSNorm, attention, SwiGLU, cross-entropy and
 * AdamW. */
#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "kernels/ops.h"

#include <cjson/cJSON.h>

static cJSON *root;

static cJSON *section(const char *name) {
    cJSON *s = cJSON_GetObjectItemCaseSensitive(root, name);
    CHECK(s != NULL);
    return s;
}
static double num(cJSON *s, const char *name) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(s, name);
    CHECK(cJSON_IsNumber(v));
    return v ? v->valuedouble : 0;
}
/* a float array of exactly n entries (malloc'd; zeros when missing, with a failed check) */
static float *floats(cJSON *s, const char *name, size_t n) {
    cJSON *a = cJSON_IsObject(s) ? cJSON_GetObjectItemCaseSensitive(s, name) : s;
    float *x = calloc(n ? n : 1, sizeof(float));
    CHECK_REPORT(cJSON_IsArray(a) && (size_t)cJSON_GetArraySize(a) == n,
                 "fixture array %s: expected %zu numbers", name, n);
    size_t i = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, a) if (i < n) x[i++] = (float)e->valuedouble;
    return x;
}
static int32_t *ints(cJSON *s, const char *name, size_t n) {
    float *f = floats(s, name, n);
    int32_t *x = malloc((n ? n : 1) * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)f[i];
    free(f);
    return x;
}

static void test_rope(void) {
    cJSON *s = section("rope_llama3");
    int D = (int)num(s, "D");
    dp_rope_scaling sc = {.llama3 = true,
                          .factor = (float)num(s, "factor"),
                          .low_freq_factor = (float)num(s, "low_freq_factor"),
                          .high_freq_factor = (float)num(s, "high_freq_factor"),
                          .original_max_position = (int)num(s, "original_max_position")};
    float *ref = floats(s, "inv_freq", D / 2), inv[256];
    rope_inv_freq(inv, D, (float)num(s, "theta"), &sc);
    check_arrays_near("rope inv_freq llama3 vs transformers", ref, inv, D / 2, 0, 2e-6);
    free(ref);

    s = section("rope_default");
    D = (int)num(s, "D");
    ref = floats(s, "inv_freq", D / 2);
    rope_inv_freq(inv, D, (float)num(s, "theta"), NULL);
    check_arrays_near("rope inv_freq default vs transformers", ref, inv, D / 2, 0, 2e-6);
    free(ref);

    s = section("rope_apply");
    int N = (int)num(s, "N"), nh = (int)num(s, "nh");
    D = (int)num(s, "D");
    size_t n = (size_t)N * nh * D;
    float *x = floats(s, "x", n), *out = floats(s, "out", n);
    int32_t *pos = ints(s, "pos", N);
    rope_inv_freq(inv, D, (float)num(s, "theta"), NULL);
    rope_forward(x, pos, inv, N, nh, D);
    /* inv_freq and the angle are rounded as transformers does; cos/sin may differ by ulps */
    check_arrays_near("rope apply vs transformers", out, x, n, 1e-6, 1e-6);
    free(x), free(out), free(pos);
}

static void test_rmsnorm(void) {
    cJSON *s = section("rmsnorm");
    int N = (int)num(s, "N"), C = (int)num(s, "C");
    size_t n = (size_t)N * C;
    float *x = floats(s, "x", n), *w = floats(s, "weight", C), *g = floats(s, "dout", n);
    float *ref = floats(s, "out", n), *rdx = floats(s, "dx", n), *rdw = floats(s, "dweight", C);
    float *out = calloc(n, 4), *rstd = calloc(N, 4), *dx = calloc(n, 4), *dw = calloc(C, 4);
    rmsnorm_forward(out, rstd, x, w, N, C, (float)num(s, "eps"));
    check_arrays_near("rmsnorm out vs transformers", ref, out, n, 1e-6, 1e-5);
    rmsnorm_backward(dx, dw, g, x, w, rstd, N, C);
    check_arrays_near("rmsnorm dx vs autograd", rdx, dx, n, 1e-5, 1e-4);
    check_arrays_near("rmsnorm dweight vs autograd", rdw, dw, C, 1e-5, 1e-4);
    free(x), free(w), free(g), free(ref), free(rdx), free(rdw), free(out), free(rstd), free(dx),
        free(dw);
}

static void test_attention(void) {
    cJSON *s = section("attention");
    cJSON *cuj = cJSON_GetObjectItemCaseSensitive(s, "cu_seqlens");
    int nseq = cJSON_GetArraySize(cuj) - 1;
    int32_t *cu = ints(s, "cu_seqlens", nseq + 1);
    int H = (int)num(s, "H"), KVH = (int)num(s, "KVH"), D = (int)num(s, "D"), N = cu[nseq];
    size_t nq = (size_t)N * H * D, nk = (size_t)N * KVH * D;
    float *q = floats(s, "q", nq), *k = floats(s, "k", nk), *v = floats(s, "v", nk);
    float *g = floats(s, "dout", nq), *ref = floats(s, "out", nq);
    float *rdq = floats(s, "dq", nq), *rdk = floats(s, "dk", nk), *rdv = floats(s, "dv", nk);
    float *out = calloc(nq, 4), *lse = calloc((size_t)N * H, 4);
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    attention_forward(out, lse, q, k, v, cu, nseq, H, KVH, D);
    check_arrays_near("attention out vs torch sdpa", ref, out, nq, 1e-5, 1e-4);
    attention_backward(dq, dk, dv, g, out, lse, q, k, v, cu, nseq, H, KVH, D);
    check_arrays_near("attention dq vs autograd", rdq, dq, nq, 2e-5, 1e-4);
    check_arrays_near("attention dk vs autograd", rdk, dk, nk, 2e-5, 1e-4);
    check_arrays_near("attention dv vs autograd", rdv, dv, nk, 2e-5, 1e-4);
    free(cu), free(q), free(k), free(v), free(g), free(ref), free(rdq), free(rdk), free(rdv);
    free(out), free(lse), free(dq), free(dk), free(dv);
}

static void test_swiglu(void) {
    cJSON *s = section("swiglu");
    size_t n = (size_t)num(s, "n");
    float *gate = floats(s, "gate", n), *up = floats(s, "up", n), *g = floats(s, "dout", n);
    float *ref = floats(s, "out", n), *rdg = floats(s, "dgate", n), *rdu = floats(s, "dup", n);
    float *out = calloc(n, 4), *dg = calloc(n, 4), *du = calloc(n, 4);
    swiglu_forward(out, gate, up, n);
    check_arrays_near("swiglu out vs torch", ref, out, n, 1e-6, 1e-5);
    swiglu_backward(dg, du, g, gate, up, n);
    check_arrays_near("swiglu dgate vs autograd", rdg, dg, n, 1e-6, 1e-5);
    check_arrays_near("swiglu dup vs autograd", rdu, du, n, 1e-6, 1e-5);
    free(gate), free(up), free(g), free(ref), free(rdg), free(rdu), free(out), free(dg), free(du);
}

static void test_cross_entropy(void) {
    cJSON *s = section("cross_entropy");
    int N = (int)num(s, "N"), V = (int)num(s, "V");
    float *logits = floats(s, "logits", (size_t)N * V), *rl = floats(s, "losses", N);
    float *rdl = floats(s, "dlogits", (size_t)N * V);
    int32_t *t = ints(s, "targets", N);
    float *losses = calloc(N, 4), *dl = calloc((size_t)N * V, 4);
    cross_entropy_forward_backward(losses, dl, logits, t, N, V, (float)num(s, "dloss"));
    check_arrays_near("cross-entropy losses vs torch", rl, losses, N, 1e-5, 1e-5);
    check_arrays_near("cross-entropy dlogits vs autograd", rdl, dl, (size_t)N * V, 1e-7, 1e-5);
    free(logits), free(rl), free(rdl), free(t), free(losses), free(dl);
}

static void test_adamw(void) {
    cJSON *s = section("adamw");
    size_t n = (size_t)num(s, "n");
    float *p = floats(s, "param0", n), *ref = floats(s, "param", n);
    float *rm = floats(s, "m", n), *rv = floats(s, "v", n);
    float *m = calloc(n, 4), *v = calloc(n, 4);
    cJSON *grads = cJSON_GetObjectItemCaseSensitive(s, "grads"), *gj;
    int t = 0;
    cJSON_ArrayForEach(gj, grads) {
        float *g = floats(gj, "grads[t]", n);
        /* torch has no grad scale: feed 2g with scale 0.5 (exact) to exercise it */
        for (size_t i = 0; i < n; i++) g[i] *= 2.0f;
        adamw_update(p, g, m, v, n, (float)num(s, "lr"), (float)num(s, "beta1"),
                     (float)num(s, "beta2"), (float)num(s, "eps"), (float)num(s, "weight_decay"),
                     0.5f, ++t);
        free(g);
    }
    CHECK_EQ_INT(4, t);
    check_arrays_near("adamw params vs torch.optim.AdamW", ref, p, n, 1e-7, 1e-6);
    /* beta1, beta2 arrive as floats (torch keeps Python doubles): m, v agree to ~1e-7 */
    check_arrays_near("adamw exp_avg vs torch", rm, m, n, 1e-7, 1e-5);
    check_arrays_near("adamw exp_avg_sq vs torch", rv, v, n, 1e-9, 1e-5);
    free(p), free(ref), free(rm), free(rv), free(m), free(v);
}

int main(void) {
    const char *path = DOPPEL_SOURCE_DIR "/tests/reference/ops_reference.json";
    char *text;
    size_t len;
    if (dp_read_file(path, &text, &len) != 0) {
        fprintf(stderr, "%s\n", dp_last_error());
        return 1; /* the fixture is committed: missing is a failure, not a skip */
    }
    root = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(root != NULL);
    if (!root) return check_done();
    test_rope();
    test_rmsnorm();
    test_attention();
    test_swiglu();
    test_cross_entropy();
    test_adamw();
    cJSON_Delete(root);
    return check_done();
}
