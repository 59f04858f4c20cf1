/* The allocation table behind `doppel plan` and the CUDA training backend's buffers. */
#include "train/memplan.h"
#include "data/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const dp_mem_category_names[DP_MEM_N_CATEGORIES] = {
    "NF4 base (frozen linears)",     "16-bit embeddings/lm_head/norms",
    "LoRA weights (fp32)",           "LoRA gradients (fp32)",
    "AdamW moments (fp32)",          "activations",
    "dequantization scratch (bf16)", "attention scratch",
    "cross-entropy scratch",         "cuBLAS workspace",
    "CUDA context (estimate)",
};

/* Spec-sheet figures, not measurements: 360 GB/s; bf16 tensor cores with fp32 accumulation
 * run at half the fp16-accumulate rate on GeForce Ampere (about 25 of 51 TFLOPS). */
const dp_gpu_spec dp_gpu_rtx3060 = {"RTX 3060 12GB", 360e9, 25.4e12};

#define MIB                    (1024.0 * 1024.0)
#define CUBLAS_WORKSPACE_BYTES (32ull << 20)
#define CONTEXT_RESERVE_BYTES  (400ull << 20)
#define BF16                   2ull
#define F32                    4ull

dp_train_shape dp_train_shape_default(void) {
    return (dp_train_shape){.seq = 2048,
                            .micro_batch = 1,
                            .r = 16,
                            .targets = 0x7f,
                            .lm_head_nf4 = false,
                            .recompute = true,
                            .ce_chunk = 256};
}

/* NF4 + double quantization at bitsandbytes' blocksize. */
static uint64_t nf4_bytes(int64_t rows, int64_t cols) {
    return dp_nf4_size(rows, cols, 64);
}

static int add(dp_memplan *p, dp_mem_category cat, const char *name, uint64_t bytes) {
    if (p->n == p->cap) {
        int ncap = p->cap ? p->cap * 2 : 32;
        dp_alloc *ni = dp_realloc(p->items, sizeof *ni * (size_t)ncap);
        if (!ni) return -1;
        p->items = ni;
        p->cap = ncap;
    }
    dp_alloc *a = &p->items[p->n++];
    a->category = cat;
    snprintf(a->name, sizeof a->name, "%s", name);
    a->bytes = bytes;
    p->by_category[cat] += bytes;
    p->total += bytes;
    return 0;
}

/* Bytes of one layer's saved activations for N tokens (bf16 unless noted). */
static uint64_t layer_activation_bytes(const dp_model_config *c, const dp_train_shape *s,
                                       uint64_t N) {
    uint64_t C = (uint64_t)c->C, HD = (uint64_t)c->H * c->D, KVD = (uint64_t)c->KVH * c->D;
    uint64_t F = (uint64_t)c->F;
    uint64_t b = N * C * BF16 * 3            /* ln1 out, residual after attention, ln2 out */
                 + N * F32 * 2               /* rstd of both norms */
                 + N * (HD + 2 * KVD) * BF16 /* q, k, v after RoPE */
                 + N * HD * BF16             /* attention output (before o_proj) */
                 + N * F * BF16 * 3;         /* gate, up, silu(gate)*up */
    if (c->qk_norm) b += N * (uint64_t)(c->H + c->KVH) * F32; /* q_norm/k_norm rstd */
    int nlora = 0;
    for (int i = 0; i < DP_N_LINEAR; i++) nlora += (s->targets >> i) & 1;
    b += (uint64_t)nlora * N * (uint64_t)s->r * BF16; /* A x, kept for dB */
    return b;
}

int dp_memplan_build(dp_memplan *p, const dp_model_config *c, const dp_train_shape *s) {
    memset(p, 0, sizeof *p);
    if (s->seq <= 0 || s->micro_batch <= 0 || s->r <= 0 || s->ce_chunk <= 0)
        return dp_fail("plan: seq, micro-batch, r and the cross-entropy chunk must be positive");
    if (c->L <= 0 || c->C <= 0 || c->H <= 0 || c->KVH <= 0 || c->D <= 0 || c->F <= 0 || c->V <= 0)
        return dp_fail("plan: the model config has a non-positive dimension");
    uint64_t N = (uint64_t)s->seq * (uint64_t)s->micro_batch;
    uint64_t C = (uint64_t)c->C, V = (uint64_t)c->V;
    char name[48];

    /* frozen base */
    uint64_t nf4 = 0, lora = 0, max_linear = 0;
    for (int id = 0; id < DP_N_LINEAR; id++) {
        int64_t out, in;
        dp_linear_shape(c, (dp_linear_id)id, &out, &in);
        nf4 += nf4_bytes(out, in);
        p->base_linear_params += (uint64_t)(out * in);
        if ((uint64_t)(out * in) > max_linear) max_linear = (uint64_t)(out * in);
        if ((s->targets >> id) & 1) lora += (uint64_t)s->r * (uint64_t)(out + in);
    }
    p->base_linear_params *= (uint64_t)c->L;
    if (add(p, DP_MEM_BASE_NF4, "block linears", nf4 * (uint64_t)c->L)) goto fail;
    if (add(p, DP_MEM_BASE_16BIT, "embed_tokens", V * C * BF16)) goto fail;
    if (!c->tied_embeddings) {
        if (s->lm_head_nf4) {
            if (add(p, DP_MEM_BASE_NF4, "lm_head", nf4_bytes(c->V, c->C))) goto fail;
            if (V * C > max_linear) max_linear = V * C;
        } else if (add(p, DP_MEM_BASE_16BIT, "lm_head", V * C * BF16))
            goto fail;
    }
    uint64_t norms = (2 * (uint64_t)c->L + 1) * C;
    if (c->qk_norm) norms += 2 * (uint64_t)c->L * (uint64_t)c->D;
    if (c->qkv_bias) norms += (uint64_t)c->L * (uint64_t)(c->H + 2 * c->KVH) * (uint64_t)c->D;
    if (add(p, DP_MEM_BASE_16BIT, "norms and biases", norms * BF16)) goto fail;

    /* LoRA */
    p->lora_params = lora * (uint64_t)c->L;
    if (add(p, DP_MEM_LORA_WEIGHTS, "lora A and B", p->lora_params * F32)) goto fail;
    if (add(p, DP_MEM_LORA_GRADS, "lora grads", p->lora_params * F32)) goto fail;
    if (add(p, DP_MEM_OPTIMIZER, "adamw m", p->lora_params * F32)) goto fail;
    if (add(p, DP_MEM_OPTIMIZER, "adamw v", p->lora_params * F32)) goto fail;

    /* activations */
    uint64_t layer = layer_activation_bytes(c, s, N);
    if (s->recompute) {
        if (add(p, DP_MEM_ACTIVATIONS, "layer-input checkpoints", (uint64_t)c->L * N * C * BF16))
            goto fail;
        if (add(p, DP_MEM_ACTIVATIONS, "recomputed layer", layer)) goto fail;
    } else {
        snprintf(name, sizeof name, "all %d layers", c->L);
        if (add(p, DP_MEM_ACTIVATIONS, name, (uint64_t)c->L * (layer + N * C * BF16))) goto fail;
    }
    if (add(p, DP_MEM_ACTIVATIONS, "layer gradient scratch", layer)) goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "residual gradient (fp32)", N * C * F32)) goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "final norm", N * C * BF16 + N * F32)) goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "tokens, targets, positions", N * 3 * 4)) goto fail;

    if (add(p, DP_MEM_DEQUANT, "largest weight in bf16", max_linear * BF16)) goto fail;
    if (add(p, DP_MEM_ATTENTION, "lse and delta rows", 2 * N * (uint64_t)c->H * F32)) goto fail;
    uint64_t chunk = (uint64_t)s->ce_chunk < N ? (uint64_t)s->ce_chunk : N;
    if (add(p, DP_MEM_CROSS_ENTROPY, "logits chunk (fp32)", chunk * V * F32)) goto fail;
    if (add(p, DP_MEM_CROSS_ENTROPY, "per-row losses", N * F32)) goto fail;
    if (add(p, DP_MEM_CUBLAS, "workspace", CUBLAS_WORKSPACE_BYTES)) goto fail;
    if (add(p, DP_MEM_CONTEXT, "context + kernels", CONTEXT_RESERVE_BYTES)) goto fail;
    return 0;
fail:
    dp_memplan_free(p);
    return -1;
}

void dp_memplan_free(dp_memplan *p) {
    free(p->items);
    memset(p, 0, sizeof *p);
}

int dp_memplan_max_seq(const dp_model_config *c, const dp_train_shape *shape, uint64_t vram) {
    /* the plan grows monotonically with seq: binary search the last seq that fits */
    int lo = 0, hi = 1 << 22;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        dp_train_shape s = *shape;
        s.seq = mid;
        dp_memplan p;
        if (dp_memplan_build(&p, c, &s)) return 0;
        bool fits = p.total <= vram;
        dp_memplan_free(&p);
        if (fits)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

void dp_memplan_roofline(dp_roofline *o, const dp_model_config *c, const dp_train_shape *s,
                         const dp_gpu_spec *gpu) {
    dp_memplan p;
    memset(o, 0, sizeof *o);
    if (dp_memplan_build(&p, c, s)) return;
    double N = (double)s->seq * s->micro_batch, T = s->seq;
    double P = (double)p.base_linear_params, Pl = (double)p.lora_params;
    double passes = s->recompute ? 3 : 2; /* forward, (recompute), backward through the weights */
    /* base linears: 2 FLOPs per weight per token per pass; LoRA: forward + two grads */
    o->flops = 2 * P * N * passes + 2 * Pl * N * (passes + 2);
    /* causal attention: QK^T and PV over T/2 keys on average; backward about 2.5x forward */
    double att = 4 * N * (T / 2) * c->H * (double)c->D;
    o->flops += att * (s->recompute ? 2 : 1) + 2.5 * att;
    o->flops += 4 * N * (double)c->V * c->C; /* lm_head forward + input gradient */
    /* bytes: NF4 weights read and bf16 scratch written + read once per pass */
    o->bytes = passes * ((double)p.by_category[DP_MEM_BASE_NF4] + 2 * 2 * P);
    o->bytes += 2 * (double)c->V * c->C * 2;                    /* lm_head reads */
    o->bytes += 4 * (double)p.by_category[DP_MEM_ACTIVATIONS];  /* activations, a few passes */
    o->bytes += 4 * (double)p.by_category[DP_MEM_LORA_WEIGHTS]; /* AdamW: p, g, m, v */
    double t_compute = o->flops / gpu->peak_flops, t_memory = o->bytes / gpu->bandwidth;
    o->seconds = t_compute > t_memory ? t_compute : t_memory;
    o->tokens_per_s = o->seconds > 0 ? N / o->seconds : 0;
    dp_memplan_free(&p);
}
