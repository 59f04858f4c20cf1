/* doppel plan: GPU memory for QLoRA training, per category, and the longest sequence that
 * fits, from the model's config alone (a HF directory, a config.json or a .gguf). */
#include "cmd/commands.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/config.h"
#include "infer/gguf.h"
#include "train/memplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model;
    int64_t vram, seq, r, micro_batch, ce_chunk, gpus;
    bool lm_head_nf4, no_recompute;
} plan_options;

#define F(field) DP_FIELD(plan_options, field)
static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, F(model), "PATH",
     "HF model directory, config.json or .gguf (required)"},
    {"vram", DP_OPT_SIZE, F(vram), "SIZE", "GPU memory to plan for (default 12GB = 12 GiB)"},
    {"seq", DP_OPT_INT, F(seq), "N", "tokens per sequence (default 2048)"},
    {"r", DP_OPT_INT, F(r), "R", "LoRA rank (default 16; all seven linear modules)"},
    {"micro-batch", DP_OPT_INT, F(micro_batch), "B", "sequences per micro-batch (default 1)"},
    {"ce-chunk", DP_OPT_INT, F(ce_chunk), "N",
     "rows of logits per cross-entropy chunk (default " DP_STR(DP_CE_CHUNK_DEFAULT) ")"},
    {"lm-head-nf4", DP_OPT_FLAG, F(lm_head_nf4), NULL, "quantize an untied lm_head to NF4 too"},
    {"no-recompute", DP_OPT_FLAG, F(no_recompute), NULL,
     "keep every layer's activations (no checkpointing)"},
    {"gpus", DP_OPT_INT, F(gpus), "N",
     "data parallel over N GPUs (mpirun -np N doppel train): the plan of each one (default 1)"},
    {0},
};
#undef F

/* What `plan --config FILE` takes from the file's "train" section: the training run's micro-batch
 * is batch-tokens tokens (max-seq when not given), as `doppel train` plans it. */
static const dp_config_alias from_train[] = {
    {"model", "model"}, {"max-seq", "seq"},       {"batch-tokens", "seq"},          {"r", "r"},
    {"vram", "vram"},   {"ce-chunk", "ce-chunk"}, {"no-recompute", "no-recompute"}, {NULL, NULL},
};

const dp_command_spec dp_plan_spec = {
    .name = "plan",
    .usage = "--model M [--vram 12GB] [--seq N] [--r R] [--micro-batch B] [--gpus N]",
    .summary = "plan GPU memory for training and print the longest sequence that fits",
    .details =
        "Sizes are binary (12GB = 12 GiB, what a 12 GB card has). The CUDA context figure is\n"
        "an estimate; the roofline uses spec-sheet figures: GPU speed has not been measured.\n"
        "Model configs for Qwen2.5-0.5B/1.5B/3B/7B, Llama-3.1-8B and SmolLM2-135M ship in\n"
        "configs/models/ (e.g. --model configs/models/qwen2.5-7b-instruct).",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .borrowed_section = "train",
    .borrowed = from_train,
};

static double mib(uint64_t b) {
    return (double)b / (1024.0 * 1024.0);
}

/* Prints the plan; 0 or the exit code. The strings of o live until the caller's dp_cli_free. */
static int plan(const plan_options *opt) {
    plan_options o = *opt;
    dp_train_shape shape = dp_train_shape_default();
    if (!o.model) return dp_usage_error(&dp_plan_spec, "--model is required");
    if (o.seq <= 0 || o.r <= 0 || o.micro_batch <= 0 || o.ce_chunk <= 0 || o.seq > (1 << 22) ||
        o.r > 4096 || o.micro_batch > 4096 || o.gpus < 1 || o.gpus > 65536)
        return dp_usage_error(&dp_plan_spec, "--seq, --r, --micro-batch, --ce-chunk and --gpus "
                                             "must be positive (seq at most 4M, r and batch at "
                                             "most 4096, gpus at most 65536)");
    shape.seq = (int)o.seq, shape.r = (int)o.r, shape.micro_batch = (int)o.micro_batch;
    shape.ce_chunk = (int)o.ce_chunk, shape.lm_head_nf4 = o.lm_head_nf4;
    shape.recompute = !o.no_recompute;
    shape.ranks = (int)o.gpus;

    dp_model_config cfg;
    if (dp_config_load_path(&cfg, o.model)) return dp_runtime_error(&dp_plan_spec);
    dp_memplan plan;
    if (dp_memplan_build(&plan, &cfg, &shape)) return dp_runtime_error(&dp_plan_spec);

    printf("model:  %s (%s, %d layers, hidden %d, %d/%d heads, ffn %d, vocab %d, %s embeddings)\n",
           o.model, dp_arch_name(cfg.arch), cfg.L, cfg.C, cfg.H, cfg.KVH, cfg.F, cfg.V,
           cfg.tied_embeddings ? "tied" : "untied");
    printf("train:  QLoRA r %d on all 7 linears (%.1fM params), seq %d x micro-batch %d, "
           "recompute %s, cross-entropy chunk %d rows\n\n",
           shape.r, (double)plan.lora_params / 1e6, shape.seq, shape.micro_batch,
           shape.recompute ? "on" : "off", shape.ce_chunk);
    if (o.gpus > 1)
        printf(
            "data parallel over %lld GPUs: each holds all of the table below (the frozen base, "
            "LoRA, gradients and optimizer are replicated; each GPU has its own micro-batch)\n\n",
            (long long)o.gpus);
    printf("  %-36s %10s\n", o.gpus > 1 ? "category (per GPU)" : "category", "MiB");
    for (int c = 0; c < DP_MEM_N_CATEGORIES; c++)
        printf("  %-36s %10.1f\n", dp_mem_category_names[c], mib(plan.by_category[c]));
    printf("  %-36s %10.1f   of %.1f MiB: %s\n", "total", mib(plan.total), mib((uint64_t)o.vram),
           plan.total <= (uint64_t)o.vram ? "fits" : "DOES NOT FIT");
    if (shape.recompute) { /* what train's --recompute auto weighs */
        dp_train_shape kept = shape;
        kept.recompute = false;
        dp_memplan p2;
        if (dp_memplan_build(&p2, &cfg, &kept)) {
            dp_memplan_free(&plan);
            return dp_runtime_error(&dp_plan_spec);
        }
        printf("  %-36s %10.1f   (train's --recompute auto keeps every layer when this is within "
               "a quarter of the GPU's memory: %s here)\n",
               "total without recomputation", mib(p2.total),
               dp_recompute_auto_keeps((double)p2.total, (double)o.vram) ? "yes" : "no");
        dp_memplan_free(&p2);
    }
    int max_seq = dp_memplan_max_seq(&cfg, &shape, (uint64_t)o.vram);
    printf("max seq: %d tokens\n", max_seq);
    if (cfg.max_position > 0 && max_seq > cfg.max_position)
        printf("(more than the model's context of %d positions: memory is not the limit)\n",
               cfg.max_position);

    dp_roofline rl;
    dp_memplan_roofline(&rl, &cfg, &shape, &dp_gpu_rtx3060);
    printf("\nroofline on an %s (spec sheet: %.0f GB/s, %.1f bf16 TFLOPS; not measured):\n"
           "  %.2f TFLOP and %.1f GB moved per micro-batch step -> %.3f s/step, ~%.0f tokens/s "
           "(%s-bound)\n",
           dp_gpu_rtx3060.name, dp_gpu_rtx3060.bandwidth / 1e9, dp_gpu_rtx3060.peak_flops / 1e12,
           rl.flops / 1e12, rl.bytes / 1e9, rl.seconds, rl.tokens_per_s,
           rl.flops / dp_gpu_rtx3060.peak_flops > rl.bytes / dp_gpu_rtx3060.bandwidth ? "compute"
                                                                                      : "memory");
    if (o.gpus > 1) {
        /* ring all-reduce: each GPU sends and receives 2 (N - 1) / N of the buffer */
        double n = (double)o.gpus, grad_bytes = (double)plan.lora_params * 4;
        double ar_s = 2 * (n - 1) / n * grad_bytes / DP_PCIE_ALLREDUCE_BW;
        double tok = n * shape.seq * shape.micro_batch;
        printf("\ndata parallel, %lld GPUs: %.0f tokens per optimizer step (x --grad-accum); "
               "%.1f MiB of fp32 LoRA gradients all-reduced per step, %.1f ms on a ring at an "
               "assumed %.0f GB/s (PCIe, no NVLink; not measured) -> ~%.0f tokens/s over all "
               "GPUs at --grad-accum 1 (%.0f%% of %lld x one GPU)\n",
               (long long)o.gpus, tok, grad_bytes / 1048576.0, ar_s * 1e3,
               DP_PCIE_ALLREDUCE_BW / 1e9, tok / (rl.seconds + ar_s),
               100 * rl.seconds / (rl.seconds + ar_s), (long long)o.gpus);
    }
    dp_memplan_free(&plan);
    return DP_EXIT_OK;
}

int dp_cmd_plan(int argc, char **argv) {
    dp_train_shape shape = dp_train_shape_default();
    plan_options o = {.vram = 12ll << 30,
                      .seq = shape.seq,
                      .r = shape.r,
                      .micro_batch = shape.micro_batch,
                      .ce_chunk = shape.ce_chunk,
                      .gpus = 1};
    dp_cli cli;
    int rc = dp_cli_parse(&dp_plan_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    rc = plan(&o); /* o.model may point into the config: the cli is freed after */
    dp_cli_free(&cli);
    return rc;
}
