/* doppel train: fine-tune LoRA adapters over a frozen NF4 base model (QLoRA) on the CPU or a
 * GPU. Checks every option (and, for a GPU, the memory plan against its memory) before loading
 * anything, then: tokenizer -> token cache -> model -> LoRA -> training loop (train/trainer.c)
 * -> PEFT adapter + doppel.json. */
#include "cmd/commands.h"
#include "data/chat_format.h"
#include "data/dataset.h"
#include "data/base/error.h"
#include "data/base/hash.h"
#include "data/base/io.h"
#include "data/tokenizer.h"
#include "infer/gguf_tokenizer.h"
#include "infer/model_load.h"
#include "kernels/cuda/kernels.h"
#include "kernels/device.h"
#include "train/adapter.h"
#include "train/batches.h"
#include "train/checkpoint.h"
#include "train/memplan.h"
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *model_path, *data_path, *val_path, *out_dir, *targets_s, *sched_s, *format_s,
    *persona, *system_override, *device_s;
static int64_t r_, max_seq, batch_tokens, grad_accum, epochs, max_steps, seed, warmup_steps,
    eval_every, save_every, early_stop, stop_at, ce_chunk, vram;

/* The EMU backend (kernels/emu: the CUDA kernels run on CPU fibers) when this binary links it:
 * `--device emu` is for tests, slow. A weak reference, so libdoppel links without it. */
extern const dp_gpu_ops dp_emu_ops __attribute__((weak));
static double alpha, dropout, lr, warmup_ratio, weight_decay, max_grad_norm, beta1, beta2, adam_eps;
static bool rslora, resume, fp32_base, no_recompute, no_cache;

static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, &model_path, "M", "base model: Hugging Face directory or .gguf file"},
    {"data", DP_OPT_STRING, &data_path, "FILE", "training conversations (prep's JSONL, .zst ok)"},
    {"val", DP_OPT_STRING, &val_path, "FILE", "validation conversations (JSONL)"},
    {"out", DP_OPT_STRING, &out_dir, "DIR",
     "run directory: adapter, best/, checkpoint.h5, metrics.h5"},
    {"targets", DP_OPT_STRING, &targets_s, "LIST",
     "LoRA modules: all (default) or e.g. q_proj,v_proj"},
    {"r", DP_OPT_INT, &r_, "N", "LoRA rank (default 16)"},
    {"alpha", DP_OPT_DOUBLE, &alpha, "A", "LoRA alpha (default 2 x r)"},
    {"dropout", DP_OPT_DOUBLE, &dropout, "P", "LoRA dropout (default 0.05)"},
    {"rslora", DP_OPT_FLAG, &rslora, NULL, "scale alpha/sqrt(r) instead of alpha/r"},
    {"lr", DP_OPT_DOUBLE, &lr, "LR", "peak learning rate (default 2e-4)"},
    {"schedule", DP_OPT_STRING, &sched_s, "NAME", "constant, linear or cosine (default cosine)"},
    {"warmup-steps", DP_OPT_INT, &warmup_steps, "N", "linear warmup steps (wins over the ratio)"},
    {"warmup-ratio", DP_OPT_DOUBLE, &warmup_ratio, "F", "warmup as a share of the steps (0.03)"},
    {"weight-decay", DP_OPT_DOUBLE, &weight_decay, "W", "AdamW decoupled weight decay (0)"},
    {"max-grad-norm", DP_OPT_DOUBLE, &max_grad_norm, "G", "clip the global grad norm (1.0; 0 off)"},
    {"beta1", DP_OPT_DOUBLE, &beta1, "B", "AdamW beta1 (0.9)"},
    {"beta2", DP_OPT_DOUBLE, &beta2, "B", "AdamW beta2 (0.999)"},
    {"adam-eps", DP_OPT_DOUBLE, &adam_eps, "E", "AdamW epsilon (1e-8)"},
    {"max-seq", DP_OPT_INT, &max_seq, "T",
     "longest conversation in tokens; longer ones lose their oldest messages (default 1024)"},
    {"batch-tokens", DP_OPT_INT, &batch_tokens, "N",
     "tokens per micro-batch, conversations packed without padding (default max-seq)"},
    {"grad-accum", DP_OPT_INT, &grad_accum, "N", "micro-batches per optimizer step (1..64, 1)"},
    {"epochs", DP_OPT_INT, &epochs, "N", "passes over the data (default 1)"},
    {"max-steps", DP_OPT_INT, &max_steps, "N",
     "optimizer steps (wins over --epochs; sets the "
     "schedule's length)"},
    {"seed", DP_OPT_INT, &seed, "N", "seed of LoRA init, shuffling and dropout (default 42)"},
    {"eval-every", DP_OPT_INT, &eval_every, "N", "validation loss every N steps (and at the end)"},
    {"early-stop", DP_OPT_INT, &early_stop, "PATIENCE",
     "stop after PATIENCE evaluations without a better val loss"},
    {"save-every", DP_OPT_INT, &save_every, "N", "checkpoint every N steps (and at the end)"},
    {"resume", DP_OPT_FLAG, &resume, NULL, "continue from DIR/checkpoint.h5 with the same options"},
    {"stop-at", DP_OPT_INT, &stop_at, "STEP", "save a checkpoint at STEP and end, as Ctrl-C does"},
    {"chat-format", DP_OPT_STRING, &format_s, "NAME",
     "chatml or llama3 (default: from the model's template)"},
    {"persona", DP_OPT_STRING, &persona, "NAME", "persona name recorded in doppel.json"},
    {"system", DP_OPT_STRING, &system_override, "TEXT",
     "system prompt recorded for chat (default: the data's own system message, if any)"},
    {"fp32-base", DP_OPT_FLAG, &fp32_base, NULL, "keep the base in fp32 instead of NF4 (LoRA)"},
    {"no-recompute", DP_OPT_FLAG, &no_recompute, NULL,
     "keep every layer's activations instead of recomputing them (more memory, ~25% faster)"},
    {"ce-chunk", DP_OPT_INT, &ce_chunk, "ROWS", "rows of logits at once in the loss (128)"},
    {"device", DP_OPT_STRING, &device_s, "NAME",
     "auto (CUDA when a device is present), cpu or cuda (default auto)"},
    {"vram", DP_OPT_SIZE, &vram, "SIZE",
     "GPU memory the run may use (default: the device's); a run the memory plan says will not "
     "fit is refused before loading anything"},
    {"no-cache", DP_OPT_FLAG, &no_cache, NULL, "always re-tokenize (do not read or write caches)"},
    {0},
};

const dp_command_spec dp_train_spec = {
    .name = "train",
    .usage = "--model M --data train.jsonl [--val val.jsonl] --out DIR [options]",
    .summary = "fine-tune LoRA adapters over a frozen NF4 base model (QLoRA)",
    .details =
        "The run directory gets the PEFT adapter (adapter_config.json, adapter_model.safetensors)\n"
        "and doppel.json, best/ (the adapter with the lowest validation loss), checkpoint.h5\n"
        "and metrics.h5. Ctrl-C saves a checkpoint and exits 0; --resume continues it with the\n"
        "same losses as a run that never stopped. Conversations are tokenized once into\n"
        "DATA.tok-KEY.h5 beside the data file.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* ------------------------------------------------------------------ rendering */

typedef struct {
    dp_tokenizer *tok;
    dp_chat_format fmt;
    dp_chat_tokens ct;
    dp_chat_msg *tmp;
    int tmp_cap;
} render_ctx;

static int render(void *vctx, const dp_conversation *c, int first, dp_rendered *out) {
    render_ctx *x = vctx;
    if (c->n + 1 > x->tmp_cap) {
        dp_chat_msg *n = dp_realloc(x->tmp, sizeof *n * (size_t)(c->n + 1));
        if (!n) return -1;
        x->tmp = n;
        x->tmp_cap = c->n + 1;
    }
    int n = 0;
    if (first > 0 && c->msgs[0].role == DP_ROLE_SYSTEM) x->tmp[n++] = c->msgs[0];
    for (int i = first; i < c->n; i++) x->tmp[n++] = c->msgs[i];
    x->ct.ids.n = 0;
    if (dp_chat_render(x->tok, x->fmt, x->tmp, (size_t)n, false, &x->ct)) return -1;
    for (size_t i = 0; i < x->ct.ids.n; i++)
        if (dp_rendered_push(out, x->ct.ids.v[i], x->ct.mask[i])) return -1;
    return 0;
}

/* The data's system message (first conversation that has one), malloc'd, or NULL. */
static char *data_system_prompt(const char *path) {
    dp_dataset_reader *rd = dp_dataset_open(path);
    if (!rd) return NULL;
    dp_conversation c;
    char *s = NULL;
    if (dp_dataset_next(rd, &c) == 1 && c.n > 0 && c.msgs[0].role == DP_ROLE_SYSTEM)
        s = dp_strdup(c.msgs[0].content);
    dp_dataset_close(rd);
    return s;
}

/* Tokenized data from the cache, or rendered and cached. */
static int token_data(const char *path, render_ctx *rc, uint64_t tok_fp, dp_token_data *d,
                      bool quiet) {
    uint64_t fh;
    if (dp_hash_file(path, &fh)) return -1;
    uint64_t parts[4] = {fh, tok_fp, (uint64_t)max_seq, (uint64_t)rc->fmt};
    uint64_t key = dp_hash_bytes(parts, sizeof parts, 0x746f6b);
    char cache[4200];
    dp_token_cache_path(cache, sizeof cache, path, key);
    int got = no_cache ? 0 : dp_token_cache_load(cache, key, d);
    if (got < 0) return -1;
    if (got == 0) {
        if (dp_token_data_build(path, (int)max_seq, render, rc, d)) return -1;
        if (!no_cache && dp_token_cache_save(cache, key, d) && !quiet)
            fprintf(stderr, "train: note: %s (continuing without a cache)\n", dp_last_error());
    }
    if (!quiet)
        fprintf(stderr,
                "train: %s: %lld conversations -> %lld sequences, %lld tokens (%lld trained)%s; "
                "%lld truncated from the left to fit %lld tokens, %lld skipped\n",
                path, (long long)d->n_read, (long long)d->nseq, (long long)d->T,
                (long long)d->n_trained, got ? " [cache]" : "", (long long)d->n_truncated,
                (long long)max_seq, (long long)d->n_skipped);
    return 0;
}

/* ------------------------------------------------------------------ run configuration */

/* absolute path, so a resume from another directory compares equal */
static void add_path(cJSON *j, const char *key, const char *path) {
    char *abs = realpath(path, NULL);
    cJSON_AddStringToObject(j, key, abs ? abs : path);
    free(abs);
}

static cJSON *run_config(void) {
    cJSON *j = cJSON_CreateObject();
    add_path(j, "model", model_path);
    add_path(j, "data", data_path);
    if (val_path) add_path(j, "val", val_path);
    cJSON_AddStringToObject(j, "targets", targets_s);
    cJSON_AddNumberToObject(j, "r", (double)r_);
    cJSON_AddNumberToObject(j, "alpha", alpha);
    cJSON_AddNumberToObject(j, "dropout", dropout);
    cJSON_AddBoolToObject(j, "rslora", rslora);
    cJSON_AddNumberToObject(j, "lr", lr);
    cJSON_AddStringToObject(j, "schedule", sched_s);
    cJSON_AddNumberToObject(j, "warmup_steps", (double)warmup_steps);
    cJSON_AddNumberToObject(j, "warmup_ratio", warmup_ratio);
    cJSON_AddNumberToObject(j, "weight_decay", weight_decay);
    cJSON_AddNumberToObject(j, "max_grad_norm", max_grad_norm);
    cJSON_AddNumberToObject(j, "beta1", beta1);
    cJSON_AddNumberToObject(j, "beta2", beta2);
    cJSON_AddNumberToObject(j, "adam_eps", adam_eps);
    cJSON_AddNumberToObject(j, "max_seq", (double)max_seq);
    cJSON_AddNumberToObject(j, "batch_tokens", (double)batch_tokens);
    cJSON_AddNumberToObject(j, "grad_accum", (double)grad_accum);
    cJSON_AddNumberToObject(j, "epochs", (double)epochs);
    cJSON_AddNumberToObject(j, "max_steps", (double)max_steps);
    cJSON_AddNumberToObject(j, "seed", (double)seed);
    cJSON_AddBoolToObject(j, "fp32_base", fp32_base);
    if (format_s) cJSON_AddStringToObject(j, "chat_format", format_s);
    return j;
}

/* Options that decide the numbers of a run must match the checkpoint's on --resume. */
static int check_resume_config(const char *ckpt, const cJSON *now) {
    char *text = NULL;
    if (dp_checkpoint_read_config(ckpt, &text)) return -1;
    cJSON *then = cJSON_Parse(text);
    free(text);
    if (!then) return dp_fail("%s: the run configuration in the checkpoint is not JSON", ckpt);
    static const char *const keys[] = {
        "model",         "data",         "targets",      "r",
        "alpha",         "dropout",      "rslora",       "lr",
        "schedule",      "warmup_steps", "warmup_ratio", "weight_decay",
        "max_grad_norm", "beta1",        "beta2",        "adam_eps",
        "max_seq",       "batch_tokens", "grad_accum",   "epochs",
        "max_steps",     "seed",         "fp32_base",    NULL};
    int rc = 0;
    for (int i = 0; keys[i] && !rc; i++) {
        const cJSON *a = cJSON_GetObjectItem(then, keys[i]), *b = cJSON_GetObjectItem(now, keys[i]);
        if (!cJSON_Compare(a, b, true)) {
            char *sa = a ? cJSON_PrintUnformatted(a) : NULL,
                 *sb = b ? cJSON_PrintUnformatted(b) : NULL;
            rc = dp_fail("--resume: option %s was %s in the checkpointed run and is %s now (resume "
                         "with the same options, or train into a new --out)",
                         keys[i], sa ? sa : "unset", sb ? sb : "unset");
            free(sa);
            free(sb);
        }
    }
    cJSON_Delete(then);
    return rc;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}
static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The backend --device names (NULL: the CPU), and for a GPU the memory plan of this run against
 * its memory (--vram, else the device's), before anything is loaded. 0, or the exit code. */
static int choose_device(const dp_command_spec *S, const dp_gpu_ops **gpu, bool quiet) {
    *gpu = NULL;
    bool want_cuda = !strcmp(device_s, "cuda"), want_emu = !strcmp(device_s, "emu");
    if (!want_cuda && !want_emu && strcmp(device_s, "cpu") && strcmp(device_s, "auto"))
        return dp_usage_error(S, "--device %s: choose auto, cpu or cuda", device_s);
    if (!strcmp(device_s, "cpu")) return 0;
    uint64_t limit = (uint64_t)vram;
    if (want_emu) {
        if (!&dp_emu_ops)
            return dp_usage_error(S, "--device emu: this binary was built without the EMU "
                                     "backend (it needs the CUDA toolkit's headers)");
        *gpu = &dp_emu_ops; /* unlimited memory unless --vram */
    } else {
        dp_cuda_info cu;
        dp_cuda_query(&cu);
#ifdef DOPPEL_HAVE_CUDA
        if (cu.device_count > 0) *gpu = &dp_cuda_ops;
#endif
        if (!*gpu) {
            if (want_cuda)
                return dp_usage_error(S, "--device cuda: %s (use --device cpu)", cu.status);
            if (!quiet)
                fprintf(stderr, "train: no CUDA device (%s): training on the CPU\n", cu.status);
            return 0;
        }
        if (!limit) limit = cu.total_mem;
    }
    if (!limit) return 0;
    dp_model_config cfg;
    if (dp_plan_load_config(&cfg, model_path)) return dp_runtime_error(S);
    dp_train_shape sh = dp_train_shape_default();
    sh.seq = (int)batch_tokens, sh.micro_batch = 1, sh.r = (int)r_;
    unsigned targets = 0;
    dp_lora_parse_targets(targets_s, &targets);
    sh.targets = targets, sh.recompute = !no_recompute, sh.base_dense = fp32_base;
    sh.ce_chunk = ce_chunk > 0 ? (int)ce_chunk : 256, sh.dropout = dropout > 0;
    dp_memplan p;
    if (dp_memplan_build(&p, &cfg, &sh)) return dp_usage_error(S, "%s", dp_last_error());
    uint64_t need = p.total;
    dp_memplan_free(&p);
    if (need <= limit) return 0;
    int fit = dp_memplan_max_seq(&cfg, &sh, limit);
    if (fit >= 16)
        return dp_usage_error(
            S,
            "--device %s: this run needs %.0f MiB of GPU memory, more than the %.0f MiB "
            "available: --max-seq %d --batch-tokens %d fits (`doppel plan --model %s --vram "
            "%lluMiB --seq %lld --r %lld` shows where it goes)",
            device_s, need / 1048576.0, limit / 1048576.0, fit, fit, model_path,
            (unsigned long long)(limit >> 20), (long long)batch_tokens, (long long)r_);
    return dp_usage_error(S,
                          "--device %s: this run needs %.0f MiB of GPU memory and not even 16 "
                          "tokens fit in %.0f MiB: train on the CPU (--device cpu) or a smaller "
                          "model",
                          device_s, need / 1048576.0, limit / 1048576.0);
}

int dp_cmd_train(int argc, char **argv) {
    model_path = data_path = val_path = out_dir = format_s = persona = system_override = NULL;
    device_s = "auto", vram = 0;
    targets_s = "all", sched_s = "cosine";
    r_ = 16, max_seq = 1024, batch_tokens = 0, grad_accum = 1, epochs = 1, max_steps = 0, seed = 42,
    warmup_steps = -1, eval_every = 0, save_every = 0, early_stop = 0, stop_at = 0, ce_chunk = 0;
    alpha = -1, dropout = 0.05, lr = 2e-4, warmup_ratio = 0.03, weight_decay = 0,
    max_grad_norm = 1.0, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
    rslora = resume = fp32_base = no_recompute = no_cache = false;
    dp_cli cli;
    int rc = dp_cli_parse(&dp_train_spec, argc, argv, &cli);
    if (rc) {
        dp_cli_free(&cli);
        return rc < 0 ? DP_EXIT_OK : rc;
    }
    const dp_command_spec *S = &dp_train_spec;
    /* every check that needs no file contents, before anything is loaded */
    if (!model_path || !data_path || !out_dir)
        rc = dp_usage_error(S, "--model, --data and --out are required");
    else if (!is_file(model_path) && !is_dir(model_path))
        rc = dp_usage_error(S, "--model %s: no such file or directory", model_path);
    else if (!is_file(data_path))
        rc = dp_usage_error(S, "--data %s: no such file (make one with `doppel prep`)", data_path);
    else if (val_path && !is_file(val_path))
        rc = dp_usage_error(S, "--val %s: no such file", val_path);
    else if (r_ < 1 || r_ > 4096)
        rc = dp_usage_error(S, "--r %lld: the rank must be 1..4096", (long long)r_);
    else if (alpha != -1 && !(alpha > 0))
        rc = dp_usage_error(S, "--alpha must be positive");
    else if (!(dropout >= 0 && dropout < 1))
        rc = dp_usage_error(S, "--dropout %g: must be in [0, 1)", dropout);
    else if (!(lr > 0 && lr < 1))
        rc = dp_usage_error(S, "--lr %g: must be in (0, 1)", lr);
    else if (max_seq < 16 || max_seq > 1 << 20)
        rc = dp_usage_error(S, "--max-seq %lld: must be 16..1048576", (long long)max_seq);
    else if (batch_tokens && batch_tokens < max_seq)
        rc = dp_usage_error(S,
                            "--batch-tokens %lld is below --max-seq %lld: a longest "
                            "conversation must fit one micro-batch",
                            (long long)batch_tokens, (long long)max_seq);
    else if (grad_accum < 1 || grad_accum > 64)
        rc = dp_usage_error(S, "--grad-accum %lld: must be 1..64", (long long)grad_accum);
    else if (epochs < 1 && max_steps <= 0)
        rc = dp_usage_error(S, "--epochs must be at least 1 (or give --max-steps)");
    else if (max_steps < 0 || stop_at < 0 || eval_every < 0 || save_every < 0 || early_stop < 0 ||
             ce_chunk < 0)
        rc = dp_usage_error(S, "step counts (--max-steps, --stop-at, --eval-every, --save-every, "
                               "--early-stop, --ce-chunk) cannot be negative");
    else if (early_stop > 0 && (!val_path || eval_every == 0))
        rc = dp_usage_error(S, "--early-stop needs --val and --eval-every");
    else if (!(warmup_ratio >= 0 && warmup_ratio < 1))
        rc = dp_usage_error(S, "--warmup-ratio %g: must be in [0, 1)", warmup_ratio);
    else if (!(weight_decay >= 0) || !(max_grad_norm >= 0) || !(beta1 >= 0 && beta1 < 1) ||
             !(beta2 >= 0 && beta2 < 1) || !(adam_eps > 0))
        rc = dp_usage_error(S, "AdamW settings out of range (weight decay >= 0, max grad norm "
                               ">= 0, betas in [0, 1), epsilon > 0)");
    dp_sched_kind sk = DP_SCHED_COSINE;
    unsigned targets = 0;
    dp_chat_format fmt_override = DP_CHAT_CHATML;
    if (!rc && dp_schedule_parse(sched_s, &sk))
        rc = dp_usage_error(S, "--schedule: %s", dp_last_error());
    if (!rc && dp_lora_parse_targets(targets_s, &targets))
        rc = dp_usage_error(S, "--targets: %s", dp_last_error());
    if (!rc && format_s && dp_chat_format_parse(format_s, &fmt_override))
        rc = dp_usage_error(S, "--chat-format: %s", dp_last_error());
    char ckpt[4200] = "";
    if (!rc) snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", out_dir);
    if (!rc && resume && !is_file(ckpt))
        rc = dp_usage_error(S, "--resume: no checkpoint at %s", ckpt);
    if (!rc && !resume && is_file(ckpt))
        rc = dp_usage_error(S,
                            "%s holds a checkpoint: add --resume to continue it, or choose "
                            "another --out",
                            out_dir);
    if (rc) {
        dp_cli_free(&cli);
        return rc;
    }
    if (alpha == -1) alpha = 2.0 * (double)r_;
    if (!batch_tokens) batch_tokens = max_seq;
    const dp_gpu_ops *gpu = NULL;
    if (vram < 0 || (vram > 0 && vram < (1 << 20)))
        rc = dp_usage_error(S, "--vram %lld: give the GPU memory, e.g. 12GB", (long long)vram);
    if (!rc) rc = choose_device(S, &gpu, cli.quiet);
    if (rc) {
        dp_cli_free(&cli);
        return rc;
    }
    cJSON *cfg = run_config();
    if (resume && check_resume_config(ckpt, cfg)) {
        cJSON_Delete(cfg);
        dp_cli_free(&cli);
        fprintf(stderr, "doppel train: %s\n", dp_last_error());
        return DP_EXIT_USAGE;
    }

    /* tokenizer, chat format, data */
    int status = DP_EXIT_ERROR;
    dp_token_data tr = {0}, va = {0};
    dp_model *model = NULL;
    dp_lora *lora = NULL;
    char *sys_prompt = NULL, *meta = NULL, *cfg_text = NULL;
    render_ctx rctx = {0};
    size_t plen = strlen(model_path);
    bool gguf = plen > 5 && !strcmp(model_path + plen - 5, ".gguf");
    rctx.tok = gguf ? dp_tokenizer_load_gguf(model_path) : dp_tokenizer_load(model_path);
    if (!rctx.tok) goto fail;
    if (dp_chat_format_choose(dp_tokenizer_chat_template(rctx.tok), format_s, &rctx.fmt)) goto fail;
    uint64_t tok_fp = dp_tokenizer_fingerprint(rctx.tok);
    if (token_data(data_path, &rctx, tok_fp, &tr, cli.quiet)) goto fail;
    if (val_path && token_data(val_path, &rctx, tok_fp, &va, cli.quiet)) goto fail;
    sys_prompt = system_override ? dp_strdup(system_override) : data_system_prompt(data_path);

    /* model and LoRA */
    dp_load_opts lo = {.nf4 = !fp32_base, .quiet = cli.quiet};
    model = dp_model_load(model_path, &lo);
    if (!model) goto fail;
    dp_lora_config lc = {.r = (int)r_,
                         .alpha = (float)alpha,
                         .dropout = (float)dropout,
                         .rslora = rslora,
                         .targets = targets};
    lora = dp_lora_create(&model->cfg, &lc);
    if (!lora) goto fail;
    dp_lora_init(lora, (uint64_t)seed);
    cfg_text = cJSON_PrintUnformatted(cfg);
    cJSON *summary = cJSON_CreateObject();
    cJSON_AddItemToObject(summary, "config", cJSON_Duplicate(cfg, true));
    char *summary_text = cJSON_PrintUnformatted(summary);
    cJSON_Delete(summary);
    dp_adapter_meta am = {.persona = persona,
                          .system_prompt = sys_prompt,
                          .chat_format = dp_chat_format_name(rctx.fmt),
                          .tokenizer_fingerprint = tok_fp,
                          .base_model = model_path,
                          .training_json = summary_text};
    meta = dp_adapter_meta_json(&am, model);
    free(summary_text);
    if (!meta) goto fail;

    dp_train_opts o = {.model = model,
                       .lora = lora,
                       .train = &tr,
                       .val = val_path ? &va : NULL,
                       .batch_tokens = batch_tokens,
                       .grad_accum = (int)grad_accum,
                       .epochs = (int)epochs,
                       .max_steps = (long)max_steps,
                       .seed = (uint64_t)seed,
                       .sched = sk,
                       .lr = lr,
                       .warmup_ratio = warmup_ratio,
                       .warmup_steps = (long)warmup_steps,
                       .adam = {(float)beta1, (float)beta2, (float)adam_eps, (float)weight_decay,
                                (float)max_grad_norm},
                       .eval_every = (long)eval_every,
                       .save_every = (long)save_every,
                       .early_stop = (long)early_stop,
                       .stop_at = (long)stop_at,
                       .recompute = !no_recompute,
                       .ce_chunk = (int)ce_chunk,
                       .gpu = gpu,
                       .gpu_bf16 = true,
                       .out_dir = out_dir,
                       .config_json = cfg_text,
                       .base_model = model_path,
                       .doppel_json = meta,
                       .resume = resume,
                       .quiet = cli.quiet,
                       .stop_flag = &interrupted};
    if (!cli.quiet) {
        char tl[128];
        dp_lora_format_targets(targets, tl, sizeof tl);
        fprintf(stderr,
                "train: %s, %s base, on %s; LoRA r %d alpha %g on %s: %.2f M parameters; "
                "%ld steps of %lld tokens x %lld micro-batches\n",
                model_path, fp32_base ? "fp32" : "NF4", gpu ? gpu->backend : "the CPU", lc.r, alpha,
                tl, lora->n / 1e6, dp_train_total_steps(&o), (long long)batch_tokens,
                (long long)grad_accum);
    }
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    dp_train_result res;
    int trc = dp_train(&o, &res);
    sigaction(SIGINT, &old, NULL);
    if (trc) goto fail;
    if (!cli.quiet) {
        if (res.interrupted)
            fprintf(stderr,
                    "train: stopped at step %ld of %ld; checkpoint saved: continue with the same "
                    "options and --resume\n",
                    res.steps_done, res.total_steps);
        else
            fprintf(stderr, "train: done, %ld steps%s\n", res.steps_done,
                    res.early_stopped ? " (early stop: the validation loss stopped improving)"
                                      : "");
        if (!isnan(res.val_before) || !isnan(res.val_after))
            fprintf(stderr,
                    "train: validation loss %.4f before, %.4f after, best %.4f at step %ld\n",
                    res.val_before, res.val_after, res.best_val, res.best_step);
        fprintf(stderr, "train: %.0f tokens/s, peak memory %.0f MiB (workspace %.0f MiB)\n",
                res.tokens_per_s, res.peak_rss_mib, res.workspace_bytes / 1048576.0);
        fprintf(stderr, "train: adapter in %s/ (best in %s/best/), metrics in %s/metrics.h5\n",
                out_dir, out_dir, out_dir);
    }
    /* doppel.json again, now with the run's results */
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddItemToObject(sum, "config", cJSON_Duplicate(cfg, true));
    cJSON_AddNumberToObject(sum, "steps", (double)res.steps_done);
    cJSON_AddNumberToObject(sum, "total_steps", (double)res.total_steps);
    cJSON_AddBoolToObject(sum, "interrupted", res.interrupted);
    cJSON_AddBoolToObject(sum, "early_stopped", res.early_stopped);
    if (!isnan(res.val_before)) cJSON_AddNumberToObject(sum, "val_loss_before", res.val_before);
    if (!isnan(res.val_after)) cJSON_AddNumberToObject(sum, "val_loss_after", res.val_after);
    if (!isnan(res.best_val)) {
        cJSON_AddNumberToObject(sum, "best_val_loss", res.best_val);
        cJSON_AddNumberToObject(sum, "best_step", (double)res.best_step);
    }
    cJSON_AddNumberToObject(sum, "tokens_per_s", round(res.tokens_per_s));
    char *st = cJSON_PrintUnformatted(sum);
    cJSON_Delete(sum);
    am.training_json = st;
    char *meta2 = dp_adapter_meta_json(&am, model);
    cJSON_free(st);
    char mp[4300];
    snprintf(mp, sizeof mp, "%s/doppel.json", out_dir);
    if (!meta2 || dp_write_file_atomic(mp, meta2, strlen(meta2))) {
        free(meta2);
        goto fail;
    }
    free(meta2);
    status = DP_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "doppel train: %s\n", dp_last_error());
done:
    cJSON_Delete(cfg);
    cJSON_free(cfg_text);
    free(meta);
    free(sys_prompt);
    dp_lora_free(lora);
    dp_model_free(model);
    dp_token_data_free(&tr);
    dp_token_data_free(&va);
    dp_chat_tokens_free(&rctx.ct);
    free(rctx.tmp);
    dp_tokenizer_free(rctx.tok);
    dp_cli_free(&cli);
    return status;
}
