/* doppel merge: the adapter merged into its base model and written as a standalone model (a
 * Hugging Face directory or one GGUF file), or alone as llama.cpp's LoRA GGUF; an Ollama
 * Modelfile beside a GGUF; --merge-into auto's choice by validation loss (train/eval.h). */
#include "cmd/commands.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/base/progress.h"
#include "infer/export_gguf.h"
#include "infer/export_hf.h"
#include "infer/export_lora_gguf.h"
#include "infer/export_ollama.h"
#include "infer/gguf.h"
#include "infer/generate.h"
#include "infer/merge.h"
#include "infer/model_load.h"
#include "infer/safetensors.h"
#include "train/batches.h"
#include "train/eval.h"

#include <cjson/cJSON.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *model_path, *adapter_dir, *out_path, *format, *dtype, *type, *merge_into, *val_path;
    int64_t max_shard; /* bytes; 0: 5 GB */
    bool ollama;
} merge_options;

#define F(field) DP_FIELD(merge_options, field)

static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, F(model_path), "M",
     "the base model the adapter was trained on: Hugging Face directory or .gguf"},
    {"adapter", DP_OPT_STRING, F(adapter_dir), "DIR", "run directory from `doppel train`"},
    {"out", DP_OPT_STRING, F(out_path), "PATH", "output (must not exist)"},
    {"format", DP_OPT_STRING, F(format), "hf|gguf|lora-gguf",
     "output format: merged Hugging Face directory (default), merged GGUF, or the adapter alone "
     "as llama.cpp's LoRA GGUF"},
    {"dtype", DP_OPT_STRING, F(dtype), "bf16|fp16|fp32", "weights of --format hf (default bf16)"},
    {"type", DP_OPT_STRING, F(type), "f32|f16|q8_0|q4_0",
     "weights of --format gguf (default q8_0); of lora-gguf f32 (default) or f16"},
    {"merge-into", DP_OPT_STRING, F(merge_into), "auto|dequantized|original",
     "add the adapter to the NF4-dequantized weights training saw or to a Hugging Face base's "
     "original 16/32-bit weights; auto (default): both are scored on the run's validation set "
     "and the lower loss wins (dequantized for a GGUF base or without a validation set)"},
    {"val", DP_OPT_STRING, F(val_path), "FILE",
     "validation conversations for --merge-into auto (default: the run's --val)"},
    {"ollama", DP_OPT_FLAG, F(ollama), NULL,
     "with gguf or lora-gguf: also an Ollama Modelfile beside PATH (PATH without .gguf + "
     ".Modelfile): FROM, ADAPTER, the training TEMPLATE, SYSTEM, stop tokens, sampling"},
    {"max-shard-size", DP_OPT_SIZE, F(max_shard), "BYTES",
     "largest safetensors shard (default 5 GB = 5e9 bytes, as transformers)"},
    {0},
};
#undef F

const dp_command_spec dp_merge_spec = {
    .name = "merge",
    .usage = "--model M --adapter DIR --out PATH [--format hf|gguf|lora-gguf] [--dtype bf16] "
             "[--type q8_0]",
    .summary = "merge an adapter into a standalone model (Hugging Face safetensors or GGUF), or "
               "export it as a LoRA GGUF",
    .details =
        "W' = W + scale * B @ A for every adapted linear, one tensor at a time (the merged model\n"
        "is never whole in memory). --format hf writes config.json, generation_config.json\n"
        "(eos ids include the chat's end-of-turn token), tokenizer.json and\n"
        "tokenizer_config.json whose chat_template renders exactly the training format (with\n"
        "doppel.json's system prompt as its default), and safetensors shards of at most 5 GB\n"
        "with model.safetensors.index.json. --format gguf writes one GGUF v3 file for\n"
        "llama.cpp / Ollama: a GGUF base's metadata and tokenizer, or a Hugging Face base's\n"
        "config and tokenizer.json as llama.cpp's convert_hf_to_gguf.py writes them\n"
        "(tokenizer.ggml.pre from the pre-tokenizer: gpt-2, smollm, qwen2, llama-bpe; any other\n"
        "is refused), general.name = the persona, the training chat template, eot = the\n"
        "end-of-turn token; block linears and\n"
        "embeddings in F16, Q8_0 or Q4_0 (ggml's reference quantizers), norms F32.\n"
        "--format lora-gguf writes the adapter alone as llama.cpp's LoRA GGUF (`llama-server\n"
        "--lora`, Ollama's ADAPTER): blk.N.<linear>.weight.lora_a / .lora_b, adapter.lora.alpha,\n"
        "the base's architecture; the base GGUF stays as it is.\n"
        "--ollama also writes PATH.Modelfile for `ollama create`. --merge-into auto (default)\n"
        "scores the adapter over the NF4-dequantized and the original weights of a 16-bit base\n"
        "on the run's validation set (doppel eval's loss), prints both and merges into the lower.\n"
        "The output is written under PATH.tmp.PID and renamed\n"
        "at the end: a failed merge leaves nothing behind. An adapter trained on another base\n"
        "model is refused (doppel.json's fingerprint).",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* doppel.json's training.config.KEY, or NULL / 0 */
static const cJSON *training_config(const cJSON *dj, const char *key) {
    return cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(dj, "training"), "config"),
                               key);
}

/* Bytes the original weights take in fp32: every tensor of the base's safetensors set (the
 * one model.safetensors or the index's shards) at 4 bytes an element; 0 when it cannot be read
 * (the load that follows says why). */
static double original_fp32_bytes(const char *dir) {
    dp_st_set *set = dp_st_set_open_dir(dir);
    double total = 0;
    for (int f = 0; set && f < set->n_files; f++)
        for (int t = 0; t < set->files[f]->n_tensors; t++)
            total += (double)set->files[f]->tensors[t].numel * 4;
    dp_st_set_close(set);
    return total;
}

/* --merge-into auto: the adapter over the NF4-dequantized base (mg->model, as training saw it)
 * and over the original weights (loaded again in fp32) scored with doppel eval's loss on the
 * validation set; the lower one is kept in mg. A base without originals (GGUF), an adapter
 * trained over fp32 weights, or no validation set leave the dequantized choice, said so. */
static int choose_by_validation(dp_merge *mg, const char *val_path, bool quiet) {
    if (!is_dir(mg->model_path) || mg->fp32_base) {
        if (!quiet)
            fprintf(stderr, "merge-into: %s\n",
                    mg->fp32_base
                        ? "the adapter was trained over the fp32 weights: merged into them"
                        : "a GGUF base has only its dequantized weights: merged into them");
        return 0;
    }
    cJSON *dj = cJSON_Parse(mg->doppel_json);
    const cJSON *v = training_config(dj, "val"), *ms = training_config(dj, "max_seq");
    const char *val = val_path ? val_path : cJSON_GetStringValue(v);
    int max_seq = cJSON_IsNumber(ms) && ms->valuedouble > 0 ? (int)ms->valuedouble : 1024;
    struct stat st;
    if (!val || stat(val, &st) != 0) {
        fprintf(stderr,
                "merge-into: %s: merged into the NF4-dequantized weights training saw (give --val "
                "FILE to choose by validation loss, or --merge-into original)\n",
                val ? "the run's validation set is gone" : "the run has no validation set");
        cJSON_Delete(dj);
        return 0;
    }
    /* scoring loads the original weights a second time in fp32: a 7B base needs ~28 GB more */
    double need = original_fp32_bytes(mg->model_path), avail = dp_mem_available();
    if (avail >= 0 && need > 0.9 * avail) {
        fprintf(stderr,
                "merge-into: scoring the original weights needs them in fp32 (%.1f GiB) and %.1f GiB "
                "of memory is available: merged into the NF4-dequantized weights training saw "
                "without scoring (--merge-into original to take the original weights)\n",
                need / 1073741824.0, avail / 1073741824.0);
        cJSON_Delete(dj);
        return 0;
    }
    int rc = -1;
    char *fmt_name = dp_merge_meta_string(mg, "chat_format");
    dp_tokenizer *tok = dp_model_tokenizer(mg->model_path);
    dp_train_render_ctx rctx = {.tok = tok};
    dp_token_data td = {0};
    dp_model *orig = NULL;
    dp_eval_loss_result deq = {0}, org = {0};
    if (!tok || dp_chat_format_choose(dp_tokenizer_chat_template(tok), fmt_name, &rctx.fmt) ||
        dp_token_data_build(val, max_seq, dp_train_render, &rctx, &td))
        goto out;
    if (!td.n_trained) {
        dp_fail("%s: no scored token (an empty validation set?)", val);
        goto out;
    }
    if (dp_eval_heldout_loss(mg->model, mg->lora, &td, 0, 0, &deq)) goto out;
    dp_load_opts lo = {.nf4 = false, .quiet = true};
    if (!(orig = dp_model_load(mg->model_path, &lo)) ||
        dp_eval_heldout_loss(orig, mg->lora, &td, 0, 0, &org))
        goto out;
    dp_merge_into pick = org.loss < deq.loss ? DP_MERGE_INTO_ORIGINAL : DP_MERGE_INTO_DEQUANTIZED;
    fprintf(stderr,
            "merge-into: validation loss on %s (%lld tokens): dequantized %.6f, original %.6f -> "
            "%s\n",
            val, (long long)td.n_trained, deq.loss, org.loss,
            pick == DP_MERGE_INTO_ORIGINAL ? "original" : "dequantized");
    rc = dp_merge_set_into(mg, pick);
out:
    dp_model_free(orig);
    dp_token_data_free(&td);
    dp_train_render_ctx_free(&rctx);
    dp_tokenizer_free(tok);
    free(fmt_name);
    cJSON_Delete(dj);
    return rc;
}

int dp_cmd_merge(int argc, char **argv) {
    merge_options o = {.format = "hf", .dtype = "bf16", .type = NULL, .merge_into = "auto"};
    dp_cli cli;
    int rc = dp_cli_parse(&dp_merge_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    dp_merge *mg = NULL;
    dp_export_hf_opts eo = {
        .out_dir = o.out_path, .max_shard_bytes = o.max_shard, .quiet = cli.quiet};
    dp_export_gguf_opts go = {.out_path = o.out_path, .quiet = cli.quiet};
    dp_export_lora_gguf_opts lo = {.out_path = o.out_path, .quiet = cli.quiet};
    dp_merge_into into = DP_MERGE_INTO_DEQUANTIZED;
    bool gguf = !strcmp(o.format, "gguf"), lora_gguf = !strcmp(o.format, "lora-gguf");
    if (!o.type) o.type = lora_gguf ? "f32" : "q8_0";
    struct stat st;
    if (!o.model_path || !o.adapter_dir || !o.out_path)
        rc = dp_usage_error(&dp_merge_spec, "--model, --adapter and --out are required");
    else if (strcmp(o.format, "hf") && !gguf && !lora_gguf)
        rc = dp_usage_error(&dp_merge_spec, "--format must be hf, gguf or lora-gguf, not '%s'",
                            o.format);
    else if (lora_gguf && !strcmp(o.type, "f32"))
        lo.type = DP_GGML_F32;
    else if (lora_gguf && !strcmp(o.type, "f16"))
        lo.type = DP_GGML_F16;
    else if (lora_gguf)
        rc = dp_usage_error(&dp_merge_spec, "--type of lora-gguf must be f32 or f16, not '%s'",
                            o.type);
    else if (gguf && !strcmp(o.type, "f32"))
        go.type = DP_GGML_F32;
    else if (gguf && !strcmp(o.type, "f16"))
        go.type = DP_GGML_F16;
    else if (gguf && !strcmp(o.type, "q8_0"))
        go.type = DP_GGML_Q8_0;
    else if (gguf && !strcmp(o.type, "q4_0"))
        go.type = DP_GGML_Q4_0;
    else if (gguf)
        rc = dp_usage_error(&dp_merge_spec, "--type must be f32, f16, q8_0 or q4_0, not '%s'",
                            o.type);
    else if (!strcmp(o.dtype, "bf16"))
        eo.dtype = DP_DT_BF16;
    else if (!strcmp(o.dtype, "fp16") || !strcmp(o.dtype, "f16"))
        eo.dtype = DP_DT_F16;
    else if (!strcmp(o.dtype, "fp32") || !strcmp(o.dtype, "f32"))
        eo.dtype = DP_DT_F32;
    else
        rc =
            dp_usage_error(&dp_merge_spec, "--dtype must be bf16, fp16 or fp32, not '%s'", o.dtype);
    bool auto_into = !strcmp(o.merge_into, "auto") && !lora_gguf;
    if (!rc) {
        if (!strcmp(o.merge_into, "original") && !lora_gguf)
            into = DP_MERGE_INTO_ORIGINAL;
        else if (strcmp(o.merge_into, "dequantized") && strcmp(o.merge_into, "auto") &&
                 strcmp(o.merge_into, "original"))
            rc = dp_usage_error(&dp_merge_spec,
                                "--merge-into must be auto, dequantized or original, not '%s'",
                                o.merge_into);
    }
    if (!rc && lora_gguf && strcmp(o.merge_into, "auto"))
        rc = dp_usage_error(&dp_merge_spec, "--merge-into goes with hf or gguf: lora-gguf keeps "
                                            "the adapter apart from the base");
    if (!rc && o.val_path && stat(o.val_path, &st) != 0)
        rc = dp_usage_error(&dp_merge_spec, "--val %s: no such file", o.val_path);
    if (!rc && o.ollama && !gguf && !lora_gguf)
        rc = dp_usage_error(&dp_merge_spec, "--ollama goes with --format gguf or lora-gguf "
                                            "(Ollama loads GGUF files)");
    char modelfile[4200];
    dp_ollama_modelfile_path(o.out_path ? o.out_path : "", modelfile, sizeof modelfile);
    if (!rc && o.ollama && stat(modelfile, &st) == 0)
        rc = dp_usage_error(&dp_merge_spec,
                            "%s already exists: give a new path (doppel merge never overwrites)",
                            modelfile);
    if (!rc && o.max_shard < 0)
        rc = dp_usage_error(&dp_merge_spec, "--max-shard-size must be positive");
    /* refused before minutes of loading */
    if (!rc && stat(o.out_path, &st) == 0)
        rc = dp_usage_error(&dp_merge_spec,
                            "%s already exists: give a new path (doppel merge never overwrites)",
                            o.out_path);
    if (rc) goto out;
    /* a file-size limit (ulimit -f) must fail the write with EFBIG, which is reported and
     * cleaned up, instead of killing the process with its temporary output left behind */
    signal(SIGXFSZ, SIG_IGN);
    double t0 = dp_now_seconds();
    mg = dp_merge_open(o.model_path, o.adapter_dir, into, cli.quiet);
    if (mg && auto_into && choose_by_validation(mg, o.val_path, cli.quiet)) {
        rc = dp_runtime_error(&dp_merge_spec);
        goto out;
    }
    into = mg ? mg->into : into;
    if (!mg || (lora_gguf ? dp_export_lora_gguf(mg, &lo)
                : gguf    ? dp_export_gguf(mg, &go)
                          : dp_export_hf(mg, &eo))) {
        rc = dp_runtime_error(&dp_merge_spec);
        if (strstr(dp_last_error(), "too large") || strstr(dp_last_error(), "No space"))
            fprintf(stderr,
                    "doppel merge: nothing was written: free space on the disk of %s (or "
                    "raise the file-size limit, ulimit -f), or give an --out elsewhere\n",
                    o.out_path);
        goto out;
    }
    if (o.ollama && dp_export_ollama(mg, o.out_path, lora_gguf)) {
        /* all or nothing: the GGUF goes too */
        unlink(o.out_path);
        rc = dp_runtime_error(&dp_merge_spec);
        goto out;
    }
    if (!cli.quiet && lora_gguf)
        fprintf(stderr,
                "exported %s (an adapter of %s) as LoRA GGUF (%s) -> %s in %.1f s, peak RSS "
                "%.0f MiB\n",
                o.adapter_dir, o.model_path, o.type, o.out_path, dp_now_seconds() - t0,
                dp_peak_rss_bytes() / 1048576.0);
    else if (!cli.quiet)
        fprintf(stderr, "merged %s into %s (%s weights, %s) -> %s in %.1f s, peak RSS %.0f MiB\n",
                o.adapter_dir, o.model_path,
                into == DP_MERGE_INTO_ORIGINAL ? "original"
                : mg->fp32_base                ? "fp32"
                                               : "NF4-dequantized",
                gguf || lora_gguf ? o.type : o.dtype, o.out_path, dp_now_seconds() - t0,
                dp_peak_rss_bytes() / 1048576.0);
    printf("%s\n", o.out_path);
    if (o.ollama) printf("%s\n", modelfile);
out:
    dp_merge_close(mg);
    dp_cli_free(&cli);
    return rc;
}
