/* GPU memory plan for QLoRA training: one table of allocations (category, name, bytes) that
 * `doppel plan` prints and that the GPU training step (train/grad_gpu.c) allocates item by item
 * and carves its buffers from, checking that they fill every item exactly; so the plan is
 * checked by a run (the EMU backend records the device bytes it really allocates). */
#ifndef DOPPEL_MEMPLAN_H
#define DOPPEL_MEMPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/model.h"

typedef enum {
    DP_MEM_BASE_NF4,      /* frozen linear weights, NF4 + double quantization */
    DP_MEM_BASE_16BIT,    /* embeddings, lm_head (activation dtype: bf16), norms, biases (fp32) */
    DP_MEM_LORA_WEIGHTS,  /* fp32 master LoRA A and B */
    DP_MEM_LORA_GRADS,    /* fp32 */
    DP_MEM_OPTIMIZER,     /* AdamW m and v, fp32 */
    DP_MEM_ACTIVATIONS,   /* layer-input checkpoints, one layer's recomputed activations, the
                           * gradient scratch of a layer, LoRA fp32 scratch, batch ids */
    DP_MEM_DEQUANT,       /* scratch for one dequantized weight matrix (activation dtype) */
    DP_MEM_ATTENTION,     /* attention's saved log-sum-exp rows */
    DP_MEM_CROSS_ENTROPY, /* fp32 logits of one chunk of rows, per-row losses */
    DP_MEM_CUBLAS,        /* cuBLAS workspace */
    DP_MEM_CONTEXT,       /* CUDA context + loaded kernels (an estimate, not an allocation) */
    DP_MEM_N_CATEGORIES
} dp_mem_category;

extern const char *const dp_mem_category_names[DP_MEM_N_CATEGORIES];

/* Rows of logits materialized at once in the cross-entropy when nothing else is asked: the one
 * default of the planner, the CPU step and the GPU step (--ce-chunk). */
#define DP_CE_CHUNK_DEFAULT 256

typedef struct {
    int seq;          /* tokens per micro-batch row (T) */
    int micro_batch;  /* rows per micro-batch (B) */
    int r;            /* LoRA rank */
    unsigned targets; /* bit i set: LoRA on dp_linear_id i (all seven by default) */
    bool lm_head_nf4; /* quantize the lm_head too */
    bool recompute;   /* gradient checkpointing per layer (default on) */
    int ce_chunk;     /* rows of logits materialized at once in the cross-entropy */
    bool act_f32;     /* fp32 activations and dense weights (tests; the GPU default is bf16) */
    bool base_dense;  /* block linears kept dense in the activation dtype instead of NF4 */
    bool dropout;     /* LoRA dropout on (needs an fp32 copy of each LoRA input) */
    int ranks;        /* data-parallel GPUs (0 or 1: one): each holds a whole replica, its own
                       * micro-batch, and from 2 on NCCL's buffers (an estimate) */
} dp_train_shape;

/* The defaults: seq 2048, micro-batch 1, r 16, all seven linears, recompute, chunk
 * DP_CE_CHUNK_DEFAULT, bf16
 * activations, NF4 base, no dropout. */
dp_train_shape dp_train_shape_default(void);

typedef struct {
    dp_mem_category category;
    char name[48];
    uint64_t bytes;
} dp_alloc;

/* Every item is one device allocation; each buffer carved from it starts 256-byte aligned
 * (dp_gpu_align), so item sizes are sums of aligned buffers. */
typedef struct {
    dp_alloc *items; /* owned */
    int n, cap;
    uint64_t by_category[DP_MEM_N_CATEGORIES];
    uint64_t total;
    uint64_t lora_params; /* number of LoRA parameters */
    uint64_t base_linear_params;
} dp_memplan;

/* Builds the allocation table; returns 0 or -1 (bad shape). Free with dp_memplan_free. */
int dp_memplan_build(dp_memplan *plan, const dp_model_config *cfg, const dp_train_shape *shape);
void dp_memplan_free(dp_memplan *plan);

/* train's --recompute auto: keep every layer's activations (no recomputation) when the run
 * without recomputation needs at most a quarter of the memory available (CPU: MemAvailable,
 * GPU: its memory). One rule for the CPU, the GPU and `doppel plan`. */
static inline bool dp_recompute_auto_keeps(double bytes_without, double available) {
    return bytes_without > 0 && available > 0 && bytes_without <= available / 4;
}

/* The longest seq (tokens per row, same other settings) whose plan fits in vram_bytes;
 * 0 when not even 1 token fits. */
int dp_memplan_max_seq(const dp_model_config *cfg, const dp_train_shape *shape,
                       uint64_t vram_bytes);

/* Roofline estimate of one optimizer step (one micro-batch) on a given GPU. */
typedef struct {
    double flops;        /* matmul + attention FLOPs, forward + recompute + backward */
    double bytes;        /* DRAM bytes moved (weights, dequant scratch, activations) */
    double seconds;      /* max(flops / peak_flops, bytes / bandwidth) */
    double tokens_per_s; /* seq * micro_batch / seconds */
} dp_roofline;

typedef struct {
    const char *name;
    double bandwidth;  /* bytes/s */
    double peak_flops; /* bf16 tensor-core FLOP/s with fp32 accumulation */
} dp_gpu_spec;

extern const dp_gpu_spec dp_gpu_rtx3060;

/* NCCL's device buffers and work queues on each rank of a data-parallel run: an estimate (NCCL
 * sizes them by topology and channels), in the plan's "CUDA context (estimate)" category. */
#define DP_NCCL_RESERVE_BYTES (256ull << 20)
/* Bus bandwidth assumed for the plan's all-reduce time between consumer GPUs without NVLink
 * (PCIe 4.0 x16, through the host): an assumption, not a measurement. */
#define DP_PCIE_ALLREDUCE_BW 10e9
void dp_memplan_roofline(dp_roofline *out, const dp_model_config *cfg, const dp_train_shape *shape,
                         const dp_gpu_spec *gpu);

#endif
