/* The allocation table behind `doppel plan` and the GPU training step's buffers
 * (train/grad_gpu.c carves every buffer from these items and checks it fills them exactly). */
#include "train/memplan.h"
#include "data/base/error.h"
#include "infer/gpu_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const dp_mem_category_names[DP_MEM_N_CATEGORIES] = {
    "NF4 base (frozen linears)", "embeddings, lm_head, norms", "LoRA weights (fp32)",
    "LoRA gradients (fp32)",     "AdamW moments (fp32)",       "activations",
    "dequantization scratch",    "attention scratch",          "cross-entropy scratch",
    "cuBLAS workspace",          "CUDA context (estimate)",
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
                            .ce_chunk = DP_CE_CHUNK_DEFAULT};
}

static int add(dp_memplan *p, dp_mem_category cat, const char *name, uint64_t bytes) {
    if (!bytes) return 0;
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

#define AL(x) dp_gpu_align((uint64_t)(x))

/* One layer's saved activations for N rows (the buffers train/grad_gpu.c recomputes into):
 * attention's log-sum-exp rows are counted apart, in *lse. */
static uint64_t layer_bytes(const dp_model_config *c, const dp_train_shape *s, uint64_t N,
                            uint64_t es, uint64_t *lse) {
    uint64_t C = (uint64_t)c->C, HD = (uint64_t)c->H * c->D, KVD = (uint64_t)c->KVH * c->D;
    uint64_t F = (uint64_t)c->F;
    uint64_t b = 3 * AL(N * C * es)     /* attn-norm out, residual after attention, ffn-norm out */
                 + 2 * AL(N * F32)      /* rstd of both norms */
                 + 2 * AL(N * HD * es)  /* q after norm + RoPE, attention output */
                 + 2 * AL(N * KVD * es) /* k, v */
                 + 3 * AL(N * F * es);  /* gate, up, silu(gate) * up */
    if (c->qk_norm)                     /* q, k before their norms, and the norms' rstd */
        b += AL(N * HD * es) + AL(N * KVD * es) + AL(N * (uint64_t)c->H * F32) +
             AL(N * (uint64_t)c->KVH * F32);
    for (int i = 0; i < DP_N_LINEAR; i++)
        if ((s->targets >> i) & 1) b += AL(N * (uint64_t)s->r * F32); /* x A^T, kept for dB */
    *lse = AL(N * (uint64_t)c->H * F32);
    return b;
}

/* One layer's gradient buffers (activation dtype), the residual gradient apart. */
static uint64_t layer_grad_bytes(const dp_model_config *c, uint64_t N, uint64_t es) {
    uint64_t C = (uint64_t)c->C, HD = (uint64_t)c->H * c->D, KVD = (uint64_t)c->KVH * c->D;
    uint64_t b = AL(N * C * es)                              /* the normed inputs' gradient */
                 + 3 * AL(N * c->F * es)                     /* silu(gate) * up, gate, up */
                 + 2 * AL(N * HD * es)                       /* attention output, q */
                 + 2 * AL(N * KVD * es);                     /* k, v */
    if (c->qk_norm) b += AL(N * HD * es) + AL(N * KVD * es); /* q, k before their norms */
    return b;
}

int dp_memplan_build(dp_memplan *p, const dp_model_config *c, const dp_train_shape *s) {
    memset(p, 0, sizeof *p);
    if (s->seq <= 0 || s->micro_batch <= 0 || s->r <= 0 || s->ce_chunk <= 0)
        return dp_fail("plan: seq, micro-batch, r and the cross-entropy chunk must be positive");
    if (c->L <= 0 || c->C <= 0 || c->H <= 0 || c->KVH <= 0 || c->D <= 0 || c->F <= 0 || c->V <= 0)
        return dp_fail("plan: the model config has a non-positive dimension");
    const uint64_t es = s->act_f32 ? F32 : BF16;
    const uint64_t N = (uint64_t)s->seq * (uint64_t)s->micro_batch;
    const uint64_t C = (uint64_t)c->C, V = (uint64_t)c->V, L = (uint64_t)c->L;
    const uint64_t HD = (uint64_t)c->H * c->D, KVD = (uint64_t)c->KVH * c->D;
    const bool head_nf4 = s->lm_head_nf4 && !c->tied_embeddings;
    char name[48];

    /* frozen base: NF4 (or dense) block linears, the NF4 maps when anything is NF4 */
    uint64_t nf4 = 0, dense = 0, lora = 0, max_linear = 0, wide = C;
    for (int id = 0; id < DP_N_LINEAR; id++) {
        int64_t out, in;
        dp_linear_shape(c, (dp_linear_id)id, &out, &in);
        nf4 += dp_gpu_nf4_bytes(out * in, 64);
        dense += AL((uint64_t)(out * in) * es);
        p->base_linear_params += (uint64_t)(out * in);
        if ((uint64_t)(out * in) > max_linear) max_linear = (uint64_t)(out * in);
        if ((uint64_t)out > wide) wide = (uint64_t)out;
        if ((uint64_t)in > wide) wide = (uint64_t)in;
        if ((s->targets >> id) & 1) lora += (uint64_t)s->r * (uint64_t)(out + in);
    }
    p->base_linear_params *= L;
    if (!s->base_dense || head_nf4)
        if (add(p, DP_MEM_BASE_NF4, "NF4 maps", AL((256 + 16) * F32))) goto fail;
    if (!s->base_dense && add(p, DP_MEM_BASE_NF4, "block linears", nf4 * L)) goto fail;
    if (s->base_dense && add(p, DP_MEM_BASE_16BIT, "block linears (dense)", dense * L)) goto fail;
    if (add(p, DP_MEM_BASE_16BIT, "embed_tokens", AL(V * C * es))) goto fail;
    if (!c->tied_embeddings) {
        if (head_nf4) {
            if (add(p, DP_MEM_BASE_NF4, "lm_head", dp_gpu_nf4_bytes((int64_t)(V * C), 64)))
                goto fail;
        } else if (add(p, DP_MEM_BASE_16BIT, "lm_head", AL(V * C * es)))
            goto fail;
    }
    uint64_t norms = (2 * L + 1) * AL(C * F32);
    if (c->qk_norm) norms += 2 * L * AL((uint64_t)c->D * F32);
    if (c->qkv_bias) norms += L * (AL(HD * F32) + 2 * AL(KVD * F32));
    if (add(p, DP_MEM_BASE_16BIT, "norms and biases (fp32)", norms)) goto fail;
    if (add(p, DP_MEM_BASE_16BIT, "RoPE frequencies", AL((uint64_t)c->D / 2 * F32))) goto fail;
    uint64_t max_dequant = s->base_dense ? 0 : max_linear;
    if (head_nf4 && V * C > max_dequant) max_dequant = V * C;

    /* LoRA: master weights, gradients, AdamW moments, one flat buffer each */
    p->lora_params = lora * L;
    if (add(p, DP_MEM_LORA_WEIGHTS, "lora A and B", AL(p->lora_params * F32))) goto fail;
    if (add(p, DP_MEM_LORA_GRADS, "lora grads", AL(p->lora_params * F32))) goto fail;
    if (add(p, DP_MEM_OPTIMIZER, "adamw m", AL(p->lora_params * F32))) goto fail;
    if (add(p, DP_MEM_OPTIMIZER, "adamw v", AL(p->lora_params * F32))) goto fail;
    if (add(p, DP_MEM_OPTIMIZER, "grad-norm accumulator", AL(8))) goto fail;

    /* activations: every layer's input kept (and the last layer's output, for the final norm);
     * with recomputation one layer's activations are rebuilt right before its backward */
    uint64_t lse, layer = layer_bytes(c, s, N, es, &lse);
    uint64_t nlayers = s->recompute ? 1 : L;
    if (add(p, DP_MEM_ACTIVATIONS, "layer-input checkpoints", AL((L + 1) * N * C * es))) goto fail;
    if (s->recompute)
        snprintf(name, sizeof name, "recomputed layer");
    else
        snprintf(name, sizeof name, "all %d layers", c->L);
    if (add(p, DP_MEM_ACTIVATIONS, name, layer * nlayers)) goto fail;
    if (add(p, DP_MEM_ATTENTION, "log-sum-exp rows", lse * nlayers)) goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "residual gradient", AL(N * C * es))) goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "layer gradient scratch", layer_grad_bytes(c, N, es))) goto fail;
    /* the LoRA path runs in fp32: copies of bf16 inputs / outputs, the dropped input */
    uint64_t lscratch = AL(N * (uint64_t)s->r * F32);
    if (!s->act_f32 || s->dropout) lscratch += AL(N * wide * F32);
    if (!s->act_f32) lscratch += AL(N * wide * F32);
    if (add(p, DP_MEM_ACTIVATIONS, "LoRA scratch (fp32)", lscratch)) goto fail;
    if (!s->act_f32 && c->qkv_bias &&
        add(p, DP_MEM_ACTIVATIONS, "bias scratch (fp32)", AL(N * HD * F32)))
        goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "final norm", AL(N * C * es) + AL(N * F32))) goto fail;
    if (add(p, DP_MEM_ACTIVATIONS, "tokens, targets, positions, offsets",
            3 * AL(N * 4) + AL((N + 1) * 4)))
        goto fail;

    if (max_dequant && add(p, DP_MEM_DEQUANT, "largest NF4 weight", AL(max_dequant * es)))
        goto fail;
    uint64_t chunk = (uint64_t)s->ce_chunk < N ? (uint64_t)s->ce_chunk : N;
    if (add(p, DP_MEM_CROSS_ENTROPY, "logits chunk (fp32)", AL(chunk * V * F32))) goto fail;
    if (!s->act_f32 &&
        add(p, DP_MEM_CROSS_ENTROPY, "logits gradient chunk (bf16)", AL(chunk * V * BF16)))
        goto fail;
    if (add(p, DP_MEM_CROSS_ENTROPY, "per-row losses", AL(N * F32))) goto fail;
    if (add(p, DP_MEM_CUBLAS, "workspace", CUBLAS_WORKSPACE_BYTES)) goto fail;
    if (add(p, DP_MEM_CONTEXT, "context + kernels", CONTEXT_RESERVE_BYTES)) goto fail;
    if (s->ranks > 1 &&
        add(p, DP_MEM_CONTEXT, "NCCL buffers (data parallel)", DP_NCCL_RESERVE_BYTES))
        goto fail;
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
