/* doppel quantize: load a model, quantize every block's linear weights to NF4 with double
 * quantization, and save them in the bitsandbytes layout so later runs load in seconds. */
#include "cmd/commands.h"
#include "data/base/error.h"
#include "infer/model_load.h"

#include <stdio.h>
#include <time.h>

typedef struct {
    const char *out_path;
    int64_t blocksize;
    bool lm_head;
} quantize_options;

static const dp_opt opts[] = {
    {"out", DP_OPT_STRING, DP_FIELD(quantize_options, out_path), "FILE",
     "output .safetensors (default: MODEL/model.nf4.safetensors, or MODEL.nf4.safetensors for a "
     ".gguf, where loading looks for it)"},
    {"blocksize", DP_OPT_INT, DP_FIELD(quantize_options, blocksize), "N",
     "NF4 block size, 64 (default) or 256"},
    {"lm-head", DP_OPT_FLAG, DP_FIELD(quantize_options, lm_head), NULL,
     "also quantize an untied lm_head"},
    {0},
};

const dp_command_spec dp_quantize_spec = {
    .name = "quantize",
    .usage = "MODEL [--out FILE] [--blocksize 64] [--lm-head]",
    .summary = "quantize a model's linear weights to NF4 with double quantization",
    .details = "MODEL is a Hugging Face directory (config.json + safetensors) or a .gguf file.\n"
               "The output holds every weight: the block linears as bitsandbytes NF4 tensors\n"
               "(X.weight U8, .absmax, .quant_map, .nested_absmax, .nested_quant_map,\n"
               ".quant_state.bitsandbytes__nf4), embeddings and norms in fp32.",
    .opts = opts,
    .min_args = 1,
    .max_args = 1,
};

int dp_cmd_quantize(int argc, char **argv) {
    quantize_options q = {.blocksize = 64};
    dp_cli cli;
    int rc = dp_cli_parse(&dp_quantize_spec, argc, argv, &q, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    const char *out_path = q.out_path;
    const int64_t blocksize = q.blocksize;
    if (blocksize != 64 && blocksize != 256) {
        dp_cli_free(&cli);
        return dp_usage_error(&dp_quantize_spec, "--blocksize must be 64 or 256 (got %lld)",
                              (long long)blocksize);
    }
    const char *model = cli.args.items[0];
    char def[4096];
    if (!out_path) {
        dp_nf4_default_path(model, def, sizeof def);
        out_path = def;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* quantize from the original weights, layer by layer (never from an older NF4 file) */
    dp_load_opts o = {.nf4 = true,
                      .nf4_fresh = true,
                      .blocksize = (int)blocksize,
                      .nf4_lm_head = q.lm_head,
                      .quiet = cli.quiet};
    dp_model *m = dp_model_load(model, &o);
    if (!m || dp_model_save_nf4(m, out_path)) {
        rc = dp_runtime_error(&dp_quantize_spec);
    } else {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!cli.quiet)
            fprintf(stderr, "quantized %s -> %s (%.1f MiB of weights in memory, %.1f s)\n", model,
                    out_path, dp_model_weight_bytes(m) / 1048576.0,
                    (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
        printf("%s\n", out_path);
        rc = DP_EXIT_OK;
    }
    dp_model_free(m);
    dp_cli_free(&cli);
    return rc;
}
