/* TEMPORARY plain reference versions of the kernels/ops.h ops the training path needs, so the
 * train branch builds and tests before the kern/load branches land. Deleted at that merge. */
#include "kernels/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, sizeof(float) * C);
}

void rope_inv_freq(float *inv_freq, int D, float theta, const dp_rope_scaling *scaling) {
    for (int i = 0; i < D / 2; i++) {
        double f = pow((double)theta, -2.0 * i / D);
        if (scaling && scaling->llama3) {
            double lo = scaling->original_max_position / scaling->low_freq_factor;
            double hi = scaling->original_max_position / scaling->high_freq_factor;
            double wl = 2 * M_PI / f;
            if (wl > lo)
                f /= scaling->factor;
            else if (wl >= hi) {
                double s = (scaling->original_max_position / wl - scaling->low_freq_factor) /
                           (scaling->high_freq_factor - scaling->low_freq_factor);
                f = (1 - s) * f / scaling->factor + s * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}

static void rope_apply(float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D,
                       float sign) {
    int h2 = D / 2;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < h2; i++) {
            float ang = (float)pos[n] * inv_freq[i];
            float c = cosf(ang), s = sign * sinf(ang);
            for (int h = 0; h < nh; h++) {
                float *v = x + ((size_t)n * nh + h) * D;
                float a = v[i], b = v[i + h2];
                v[i] = a * c - b * s;
                v[i + h2] = b * c + a * s;
            }
        }
}
void rope_forward(float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D) {
    rope_apply(x, pos, inv_freq, N, nh, D, 1.0f);
}
void rope_backward(float *dx, const int32_t *pos, const float *inv_freq, int N, int nh, int D) {
    rope_apply(dx, pos, inv_freq, N, nh, D, -1.0f);
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int32_t *cu_seqlens, int nseq, int H, int KVH, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int grp = H / KVH;
    for (int s = 0; s < nseq; s++) {
        int b0 = cu_seqlens[s], b1 = cu_seqlens[s + 1];
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
        for (int t = b0; t < b1; t++)
            for (int h = 0; h < H; h++) {
                const float *qv = q + ((size_t)t * H + h) * D;
                int kh = h / grp;
                float mx = -INFINITY;
                float *att = malloc(sizeof(float) * (size_t)(t - b0 + 1));
                for (int j = b0; j <= t; j++) {
                    const float *kv = k + ((size_t)j * KVH + kh) * D;
                    float d = 0;
                    for (int i = 0; i < D; i++) d += qv[i] * kv[i];
                    att[j - b0] = d * scale;
                    if (att[j - b0] > mx) mx = att[j - b0];
                }
                double sum = 0;
                for (int j = b0; j <= t; j++) sum += expf(att[j - b0] - mx);
                float *o = out + ((size_t)t * H + h) * D;
                memset(o, 0, sizeof(float) * D);
                for (int j = b0; j <= t; j++) {
                    float p = (float)(expf(att[j - b0] - mx) / sum);
                    const float *vv = v + ((size_t)j * KVH + kh) * D;
                    for (int i = 0; i < D; i++) o[i] += p * vv[i];
                }
                if (lse) lse[(size_t)t * H + h] = mx + (float)log(sum);
                free(att);
            }
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v,
                        const int32_t *cu_seqlens, int nseq, int H, int KVH, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int grp = H / KVH;
    for (int s = 0; s < nseq; s++) {
        int b0 = cu_seqlens[s], b1 = cu_seqlens[s + 1];
        for (int t = b0; t < b1; t++)
            for (int h = 0; h < H; h++) {
                const float *qv = q + ((size_t)t * H + h) * D;
                const float *dov = dout + ((size_t)t * H + h) * D;
                const float *ov = out + ((size_t)t * H + h) * D;
                float L = lse[(size_t)t * H + h];
                int kh = h / grp;
                float delta = 0;
                for (int i = 0; i < D; i++) delta += dov[i] * ov[i];
                for (int j = b0; j <= t; j++) {
                    const float *kv = k + ((size_t)j * KVH + kh) * D;
                    const float *vv = v + ((size_t)j * KVH + kh) * D;
                    float d = 0, dp = 0;
                    for (int i = 0; i < D; i++) d += qv[i] * kv[i], dp += dov[i] * vv[i];
                    float p = expf(d * scale - L);
                    float ds = p * (dp - delta) * scale;
                    float *dkv = dk + ((size_t)j * KVH + kh) * D;
                    float *dvv = dv + ((size_t)j * KVH + kh) * D;
                    float *dqv = dq + ((size_t)t * H + h) * D;
                    for (int i = 0; i < D; i++) {
                        dvv[i] += p * dov[i];
                        dqv[i] += ds * kv[i];
                        dkv[i] += ds * qv[i];
                    }
                }
            }
    }
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-gate[i]));
        float silu = gate[i] * sg;
        dup[i] += dout[i] * silu;
        dgate[i] += dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
    }
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int C, int OC) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, 0.0f,
                out, OC);
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
}
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C,
                    1.0f, dinp, C);
    if (dweight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
                    dweight, C);
    if (dbias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) dbias[o] += dout[(size_t)n * OC + o];
}

void cross_entropy_forward_backward(float *losses, float *dlogits, const float *logits,
                                    const int32_t *targets, int N, int V, float dloss) {
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        if (targets[n] < 0) {
            losses[n] = 0;
            if (d) memset(d, 0, sizeof(float) * V);
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        double sum = 0;
        for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
        double lse = mx + log(sum);
        float xt = x[targets[n]];
        losses[n] = (float)(lse - xt);
        if (d)
            for (int i = 0; i < V; i++)
                d[i] = (float)(exp((double)x[i] - lse) - (i == targets[n])) * dloss;
    }
}

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  int t) {
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        float mh = m[i] / bc1, vh = v[i] / bc2;
        param[i] -= lr * (mh / (sqrtf(vh) + eps) + weight_decay * param[i]);
    }
}

double sum_squares(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}
