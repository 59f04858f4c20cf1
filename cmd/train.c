/* doppel train: fine-tune LoRA adapters over a frozen NF4 base model (QLoRA) on the CPU or a
 * GPU. Checks every option (and, for a GPU, the memory plan against its memory) before loading
 * anything, then: tokenizer -> token cache -> model -> LoRA -> training loop (train/trainer.c)
 * -> PEFT adapter + doppel.json. */
#include "cmd/commands.h"
#include "data/chat_format.h"
#include "data/dataset.h"
#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/hash.h"
#include "data/base/io.h"
#include "data/tokenizer.h"
#include "infer/config.h"
#include "infer/gguf_tokenizer.h"
#include "infer/model_load.h"
#include "kernels/cuda/kernels.h"
#include "kernels/device.h"
#include "kernels/ops.h"
#include "train/adapter.h"
#include "train/batches.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/eval.h"
#include "infer/generate.h"
#include "train/memplan.h"
#include "train/model_grad.h"
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *compute_dtype_s; /* bf16 | fp32; NULL: bf16 where the CPU has AVX512_BF16 */
    const char *recompute_s;     /* auto | on | off (--no-recompute: off) */
    bool gpu_recompute;          /* on a GPU: choose_device's choice (not an option) */
    const char *model_path, *data_path, *val_path, *out_dir, *targets_s, *sched_s, *format_s,
        *persona, *system_override, *device_s, *find_lr_csv, *dist_init;
    int64_t rank, world_size; /* data parallel: -1 from mpirun or the environment */
    double dist_timeout;
    int world; /* ranks of the run, once the communicator exists (not an option) */
    int64_t r, max_seq, batch_tokens, grad_accum, epochs, max_steps, seed, warmup_steps, eval_every,
        save_every, early_stop, stop_at, ce_chunk, vram, find_lr_steps, samples, sample_tokens;
    double alpha, dropout, lr, warmup_ratio, weight_decay, max_grad_norm, beta1, beta2, adam_eps,
        neftune_alpha, find_lr_min, find_lr_max;
    bool find_lr, rslora, resume, fp32_base, no_recompute, no_cache;
} train_options;

static train_options train_defaults(void) {
    return (train_options){.device_s = "auto",
                           .recompute_s = "auto",
                           .rank = -1,
                           .world_size = -1,
                           .dist_timeout = 300,
                           .world = 1,
                           .targets_s = "all",
                           .sched_s = "cosine",
                           .r = 16,
                           .max_seq = 1024,
                           .grad_accum = 1,
                           .epochs = 1,
                           .seed = 42,
                           .warmup_steps = -1,
                           .alpha = -1,
                           .dropout = 0.05,
                           .lr = 2e-4,
                           .warmup_ratio = 0.03,
                           .max_grad_norm = 1.0,
                           .beta1 = 0.9,
                           .beta2 = 0.999,
                           .adam_eps = 1e-8,
                           .find_lr_steps = 100,
                           .samples = 3,
                           .sample_tokens = 40,
                           .find_lr_min = 1e-6,
                           .find_lr_max = 1.0};
}

/* the most micro-batches one optimizer step may add up (the loop has no fixed arrays) */
#define MAX_GRAD_ACCUM (1 << 20)

#define F(field) DP_FIELD(train_options, field)
static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, F(model_path), "M",
     "base model: Hugging Face directory or .gguf file"},
    {"data", DP_OPT_STRING, F(data_path), "FILE", "training conversations (prep's JSONL, .zst ok)"},
    {"val", DP_OPT_STRING, F(val_path), "FILE", "validation conversations (JSONL)"},
    {"out", DP_OPT_STRING, F(out_dir), "DIR",
     "run directory: adapter, best/, checkpoint.h5, metrics.h5"},
    {"targets", DP_OPT_STRING, F(targets_s), "LIST",
     "LoRA modules: all (default) or e.g. q_proj,v_proj"},
    {"r", DP_OPT_INT, F(r), "N", "LoRA rank (default 16)"},
    {"alpha", DP_OPT_DOUBLE, F(alpha), "A", "LoRA alpha (default 2 x r)"},
    {"dropout", DP_OPT_DOUBLE, F(dropout), "P", "LoRA dropout (default 0.05)"},
    {"rslora", DP_OPT_FLAG, F(rslora), NULL, "scale alpha/sqrt(r) instead of alpha/r"},
    {"neftune-alpha", DP_OPT_DOUBLE, F(neftune_alpha), "A",
     "NEFTune: uniform noise of scale A/sqrt(L*C) on the input embeddings while training "
     "(the paper uses 5; default 0, off)"},
    {"lr", DP_OPT_DOUBLE, F(lr), "LR", "peak learning rate (default 2e-4)"},
    {"schedule", DP_OPT_STRING, F(sched_s), "NAME", "constant, linear or cosine (default cosine)"},
    {"warmup-steps", DP_OPT_INT, F(warmup_steps), "N", "linear warmup steps (wins over the ratio)"},
    {"warmup-ratio", DP_OPT_DOUBLE, F(warmup_ratio), "F", "warmup as a share of the steps (0.03)"},
    {"weight-decay", DP_OPT_DOUBLE, F(weight_decay), "W", "AdamW decoupled weight decay (0)"},
    {"max-grad-norm", DP_OPT_DOUBLE, F(max_grad_norm), "G",
     "clip the global grad norm (1.0; 0 off)"},
    {"beta1", DP_OPT_DOUBLE, F(beta1), "B", "AdamW beta1 (0.9)"},
    {"beta2", DP_OPT_DOUBLE, F(beta2), "B", "AdamW beta2 (0.999)"},
    {"adam-eps", DP_OPT_DOUBLE, F(adam_eps), "E", "AdamW epsilon (1e-8)"},
    {"max-seq", DP_OPT_INT, F(max_seq), "T",
     "longest conversation in tokens; longer ones lose their oldest messages (default 1024)"},
    {"batch-tokens", DP_OPT_INT, F(batch_tokens), "N",
     "tokens per micro-batch, conversations packed without padding (default max-seq)"},
    {"grad-accum", DP_OPT_INT, F(grad_accum), "N", "micro-batches per optimizer step (default 1)"},
    {"epochs", DP_OPT_INT, F(epochs), "N", "passes over the data (default 1)"},
    {"max-steps", DP_OPT_INT, F(max_steps), "N",
     "optimizer steps (wins over --epochs; sets the "
     "schedule's length)"},
    {"seed", DP_OPT_INT, F(seed), "N", "seed of LoRA init, shuffling and dropout (default 42)"},
    {"eval-every", DP_OPT_INT, F(eval_every), "N",
     "validation loss every N steps (and at the end)"},
    {"early-stop", DP_OPT_INT, F(early_stop), "PATIENCE",
     "stop after PATIENCE evaluations without a better val loss"},
    {"samples", DP_OPT_INT, F(samples), "N",
     "at each evaluation, replies to the first N validation contexts (chat's sampler, seed 1), "
     "printed and kept in metrics.h5 (default 3; 0 off)"},
    {"sample-tokens", DP_OPT_INT, F(sample_tokens), "N", "longest sampled reply (default 40)"},
    {"save-every", DP_OPT_INT, F(save_every), "N", "checkpoint every N steps (and at the end)"},
    {"resume", DP_OPT_FLAG, F(resume), NULL,
     "continue from DIR/checkpoint.h5 with the same options"},
    {"stop-at", DP_OPT_INT, F(stop_at), "STEP",
     "save a checkpoint at STEP and end, as Ctrl-C does"},
    {"chat-format", DP_OPT_STRING, F(format_s), "NAME",
     "chatml or llama3 (default: from the model's template)"},
    {"persona", DP_OPT_STRING, F(persona), "NAME", "persona name recorded in doppel.json"},
    {"system", DP_OPT_STRING, F(system_override), "TEXT",
     "system prompt recorded for chat (default: the data's own system message, if any)"},
    {"fp32-base", DP_OPT_FLAG, F(fp32_base), NULL, "keep the base in fp32 instead of NF4 (LoRA)"},
    {"compute-dtype", DP_OPT_STRING, F(compute_dtype_s), "T",
     "the frozen NF4 base's products on the CPU: bf16 (AMX tiles where the CPU has AMX-BF16, else "
     "AVX512_BF16 vdpbf16ps; fp32 sums; the default where the CPU has AVX512_BF16) or fp32 "
     "(OpenBLAS; the default elsewhere). With AMX the head's products are bf16 too; LoRA, "
     "norms, attention and the optimizer stay fp32, and so do validation losses. Not "
     "implemented on the GPU"},
    {"recompute", DP_OPT_STRING, F(recompute_s), "MODE",
     "recompute each layer's activations in the backward instead of keeping them all: on (least "
     "memory), off (~25% faster), or auto (the default: off when the workspace without it fits "
     "in a quarter of the memory available, MemAvailable or the GPU's)"},
    {"no-recompute", DP_OPT_FLAG, F(no_recompute), NULL, "the same as --recompute off"},
    {"ce-chunk", DP_OPT_INT, F(ce_chunk), "ROWS",
     "rows of logits at once in the loss (default " DP_STR(DP_CE_CHUNK_DEFAULT) ")"},
    {"find-lr", DP_OPT_FLAG, F(find_lr), NULL,
     "LR range test instead of training: an exponential lr sweep on a throwaway copy of the "
     "adapter, the loss-vs-lr plot and the suggested peak lr; writes nothing to --out"},
    {"find-lr-steps", DP_OPT_INT, F(find_lr_steps), "N", "steps of the sweep (default 100)"},
    {"find-lr-min", DP_OPT_DOUBLE, F(find_lr_min), "LR", "first lr of the sweep (default 1e-6)"},
    {"find-lr-max", DP_OPT_DOUBLE, F(find_lr_max), "LR", "last lr of the sweep (default 1)"},
    {"find-lr-csv", DP_OPT_STRING, F(find_lr_csv), "FILE",
     "the sweep as CSV (step,lr,loss,smoothed), and FILE.png beside it when python3 has "
     "matplotlib"},
    {"device", DP_OPT_STRING, F(device_s), "NAME",
     "auto (CUDA when a device is present), cpu or cuda (default auto)"},
    {"vram", DP_OPT_SIZE, F(vram), "SIZE",
     "GPU memory the run may use (default: the device's); a run the memory plan says will not "
     "fit is refused before loading anything"},
    {"no-cache", DP_OPT_FLAG, F(no_cache), NULL,
     "always re-tokenize (do not read or write caches)"},
    {"dist-init", DP_OPT_STRING, F(dist_init), "URL",
     "data parallel without mpirun (GPU, NCCL): tcp://HOST:PORT (rank 0 listens) or "
     "file://PATH on a shared file system; under mpirun nothing is needed (mpi)"},
    {"rank", DP_OPT_INT, F(rank), "R", "this process's rank with --dist-init (default $RANK)"},
    {"world-size", DP_OPT_INT, F(world_size), "N", "ranks with --dist-init (default $WORLD_SIZE)"},
    {"dist-timeout", DP_OPT_DOUBLE, F(dist_timeout), "SECONDS",
     "a rank that waits longer than this for the others fails with a message (default 300)"},
    {0},
};
#undef F

const dp_command_spec dp_train_spec = {
    .name = "train",
    .usage = "--model M --data train.jsonl [--val val.jsonl] --out DIR [options]",
    .summary = "fine-tune LoRA adapters over a frozen NF4 base model (QLoRA)",
    .details =
        "The run directory gets the PEFT adapter (adapter_config.json, adapter_model.safetensors)\n"
        "and doppel.json, best/ (the adapter with the lowest validation loss), checkpoint.h5\n"
        "and metrics.h5. Ctrl-C saves a checkpoint and exits 0; --resume continues it with the\n"
        "same losses as a run that never stopped. Conversations are tokenized once into\n"
        "DATA.tok-KEY.h5 beside the data file.\n"
        "Data parallel: `mpirun -np N doppel train ...` runs N ranks; each takes every N-th\n"
        "micro-batch of a step of --grad-accum x N micro-batches, the LoRA gradients are summed\n"
        "across ranks (MPI; NCCL on CUDA), rank 0 alone writes the run directory. The same\n"
        "numbers as one process with --grad-accum x N; --resume works with another N of the\n"
        "same product. `kill -USR1 <mpirun pid>` stops every rank after the step (Ctrl-C on\n"
        "mpirun leaves each rank 1 s; a dead rank: rank 0 saves the last whole step).",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

/* 1: SIGINT, or SIGUSR1 (which mpirun forwards to every rank at once): stop after this step;
 * 2: SIGTERM, which mpirun sends every rank a second after Ctrl-C or a rank's death, a second
 * before its SIGKILL: collectives stop waiting for lost peers */
static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    interrupted = sig == SIGTERM ? 2 : 1;
}

/* ------------------------------------------------------------------ rendering */

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
static int token_data(const train_options *o, const char *path, dp_train_render_ctx *rc,
                      uint64_t tok_fp, dp_token_data *d, bool quiet) {
    uint64_t fh;
    if (dp_hash_file(path, &fh)) return -1;
    uint64_t parts[4] = {fh, tok_fp, (uint64_t)o->max_seq, (uint64_t)rc->fmt};
    uint64_t key = dp_hash_bytes(parts, sizeof parts, 0x746f6b);
    char cache[4200];
    dp_token_cache_path(cache, sizeof cache, path, key);
    int got = o->no_cache ? 0 : dp_token_cache_load(cache, key, d);
    if (got < 0) return -1;
    if (got == 0) {
        if (dp_token_data_build(path, (int)o->max_seq, dp_train_render, rc, d)) return -1;
        if (!o->no_cache && dp_token_cache_save(cache, key, d) && !quiet)
            fprintf(stderr, "train: note: %s (continuing without a cache)\n", dp_last_error());
    }
    if (!quiet)
        fprintf(stderr,
                "train: %s: %lld conversations -> %lld sequences, %lld tokens (%lld trained)%s; "
                "%lld truncated from the left to fit %lld tokens, %lld skipped\n",
                path, (long long)d->n_read, (long long)d->nseq, (long long)d->T,
                (long long)d->n_trained, got ? " [cache]" : "", (long long)d->n_truncated,
                (long long)o->max_seq, (long long)d->n_skipped);
    return 0;
}

/* ------------------------------------------------------------------ run configuration */

/* absolute path, so a resume from another directory compares equal */
static void add_path(cJSON *j, const char *key, const char *path) {
    char *abs = realpath(path, NULL);
    cJSON_AddStringToObject(j, key, abs ? abs : path);
    free(abs);
}

/* bf16 base-weight products asked for: an NF4 base, and --compute-dtype bf16 or unset */
static bool wants_bf16(const train_options *o) {
    return !o->fp32_base && (!o->compute_dtype_s || !strcmp(o->compute_dtype_s, "bf16"));
}

/* The CPU's base-weight products as they will run (bf16 falls back without AVX512_BF16) */
static const char *cpu_compute_dtype(const train_options *o) {
    return wants_bf16(o) && dp_bf16_gemm_ok() ? "bf16" : "fp32";
}

static cJSON *run_config(const train_options *o) {
    cJSON *j = cJSON_CreateObject();
    add_path(j, "model", o->model_path);
    add_path(j, "data", o->data_path);
    if (o->val_path) add_path(j, "val", o->val_path);
    cJSON_AddStringToObject(j, "targets", o->targets_s);
    cJSON_AddNumberToObject(j, "r", (double)o->r);
    cJSON_AddNumberToObject(j, "alpha", o->alpha);
    cJSON_AddNumberToObject(j, "dropout", o->dropout);
    cJSON_AddBoolToObject(j, "rslora", o->rslora);
    cJSON_AddNumberToObject(j, "neftune_alpha", o->neftune_alpha);
    cJSON_AddNumberToObject(j, "lr", o->lr);
    cJSON_AddStringToObject(j, "schedule", o->sched_s);
    cJSON_AddNumberToObject(j, "warmup_steps", (double)o->warmup_steps);
    cJSON_AddNumberToObject(j, "warmup_ratio", o->warmup_ratio);
    cJSON_AddNumberToObject(j, "weight_decay", o->weight_decay);
    cJSON_AddNumberToObject(j, "max_grad_norm", o->max_grad_norm);
    cJSON_AddNumberToObject(j, "beta1", o->beta1);
    cJSON_AddNumberToObject(j, "beta2", o->beta2);
    cJSON_AddNumberToObject(j, "adam_eps", o->adam_eps);
    cJSON_AddNumberToObject(j, "max_seq", (double)o->max_seq);
    cJSON_AddNumberToObject(j, "batch_tokens", (double)o->batch_tokens);
    cJSON_AddNumberToObject(j, "grad_accum", (double)o->grad_accum);
    /* what decides a step's numbers is its micro-batches, however many ranks share them */
    cJSON_AddNumberToObject(j, "micro_batches_per_step", (double)(o->grad_accum * o->world));
    cJSON_AddNumberToObject(j, "world_size", (double)o->world);
    cJSON_AddNumberToObject(j, "epochs", (double)o->epochs);
    cJSON_AddNumberToObject(j, "max_steps", (double)o->max_steps);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddBoolToObject(j, "fp32_base", o->fp32_base);
    cJSON_AddStringToObject(j, "compute_dtype", cpu_compute_dtype(o));
    if (o->format_s) cJSON_AddStringToObject(j, "chat_format", o->format_s);
    return j;
}

/* Options that decide the numbers of a run must match the checkpoint's on --resume. */
static int check_resume_config(const char *ckpt, const cJSON *now) {
    char *text = NULL;
    if (dp_checkpoint_read_config(ckpt, &text)) return -1;
    cJSON *then = NULL;
    int bad = dp_json_parse(text, strlen(text), DP_JSON_REFUSE_NUL, ckpt, 1, &then);
    free(text);
    if (bad) return -1;
    if (!then) return dp_fail("%s: the run configuration in the checkpoint is not JSON", ckpt);
    static const char *const keys[] = {"model",
                                       "data",
                                       "targets",
                                       "r",
                                       "alpha",
                                       "dropout",
                                       "rslora",
                                       "lr",
                                       "schedule",
                                       "warmup_steps",
                                       "warmup_ratio",
                                       "weight_decay",
                                       "max_grad_norm",
                                       "beta1",
                                       "beta2",
                                       "adam_eps",
                                       "max_seq",
                                       "batch_tokens",
                                       "grad_accum",
                                       "epochs",
                                       "max_steps",
                                       "seed",
                                       "fp32_base",
                                       "neftune_alpha",
                                       "compute_dtype",
                                       NULL};
    int rc = 0;
    for (int i = 0; keys[i] && !rc; i++) {
        const cJSON *a = cJSON_GetObjectItem(then, keys[i]), *b = cJSON_GetObjectItem(now, keys[i]);
        /* checkpoints from before NEFTune existed trained without it */
        if (!a && !strcmp(keys[i], "neftune_alpha") && cJSON_IsNumber(b) && b->valuedouble == 0)
            continue;
        /* ... and before bf16 products existed, in fp32 */
        if (!a && !strcmp(keys[i], "compute_dtype") && cJSON_IsString(b) &&
            !strcmp(b->valuestring, "fp32"))
            continue;
        /* data parallel: another number of ranks is fine when ranks x --grad-accum is not */
        if (!strcmp(keys[i], "grad_accum")) {
            const cJSON *ma = cJSON_GetObjectItem(then, "micro_batches_per_step"),
                        *mb = cJSON_GetObjectItem(now, "micro_batches_per_step");
            if (ma && mb) {
                if (!cJSON_Compare(ma, mb, true))
                    rc = dp_fail("--resume: the checkpointed run took %g micro-batches per step "
                                 "(ranks x --grad-accum) and this one takes %g: give "
                                 "--grad-accum %g / ranks",
                                 ma->valuedouble, mb->valuedouble, ma->valuedouble);
                continue;
            }
        }
        if (!cJSON_Compare(a, b, true)) {
            char *sa = a ? cJSON_PrintUnformatted(a) : NULL,
                 *sb = b ? cJSON_PrintUnformatted(b) : NULL;
            rc = dp_fail("--resume: option %s was %s in the checkpointed run and is %s now (resume "
                         "with the same options, or train into a new --out)",
                         keys[i], sa ? sa : "unset", sb ? sb : "unset");
            cJSON_free(sa);
            cJSON_free(sb);
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

/* Every check that needs no file contents, before anything is loaded; fills the defaults that
 * depend on other options (alpha, batch-tokens). 0 or the exit code. */
static int check_options(train_options *o, dp_sched_kind *sk, unsigned *targets) {
    const dp_command_spec *S = &dp_train_spec;
    if (!o->model_path || !o->data_path || (!o->out_dir && !o->find_lr))
        return dp_usage_error(S, "--model, --data and --out are required");
    if (o->find_lr && o->resume)
        return dp_usage_error(S, "--find-lr trains a throwaway copy: it does not --resume");
    if (o->find_lr && (o->find_lr_steps < 8 || o->find_lr_steps > 100000 ||
                       !(o->find_lr_min > 0 && o->find_lr_max > o->find_lr_min)))
        return dp_usage_error(S, "--find-lr: needs 8..100000 steps and 0 < --find-lr-min < "
                                 "--find-lr-max");
    if (!is_file(o->model_path) && !is_dir(o->model_path))
        return dp_usage_error(S, "--model %s: no such file or directory", o->model_path);
    if (!is_file(o->data_path))
        return dp_usage_error(S, "--data %s: no such file (make one with `doppel prep`)",
                              o->data_path);
    if (o->val_path && !is_file(o->val_path))
        return dp_usage_error(S, "--val %s: no such file", o->val_path);
    if (o->r < 1 || o->r > 4096)
        return dp_usage_error(S, "--r %lld: the rank must be 1..4096", (long long)o->r);
    if (o->alpha != -1 && !(o->alpha > 0)) return dp_usage_error(S, "--alpha must be positive");
    if (!(o->dropout >= 0 && o->dropout < 1))
        return dp_usage_error(S, "--dropout %g: must be in [0, 1)", o->dropout);
    if (!(o->lr > 0 && o->lr < 1)) return dp_usage_error(S, "--lr %g: must be in (0, 1)", o->lr);
    if (!(o->neftune_alpha >= 0 && o->neftune_alpha <= 1000))
        return dp_usage_error(S, "--neftune-alpha %g: must be in [0, 1000] (the paper uses 5-15)",
                              o->neftune_alpha);
    if (o->max_seq < 16 || o->max_seq > 1 << 20)
        return dp_usage_error(S, "--max-seq %lld: must be 16..1048576", (long long)o->max_seq);
    if (o->batch_tokens && o->batch_tokens < o->max_seq)
        return dp_usage_error(S,
                              "--batch-tokens %lld is below --max-seq %lld: a longest "
                              "conversation must fit one micro-batch",
                              (long long)o->batch_tokens, (long long)o->max_seq);
    if (o->grad_accum < 1 || o->grad_accum > MAX_GRAD_ACCUM)
        return dp_usage_error(S, "--grad-accum %lld: must be 1..%d", (long long)o->grad_accum,
                              MAX_GRAD_ACCUM);
    if (o->epochs < 1 && o->max_steps <= 0)
        return dp_usage_error(S, "--epochs must be at least 1 (or give --max-steps)");
    if (o->max_steps < 0 || o->stop_at < 0 || o->eval_every < 0 || o->save_every < 0 ||
        o->early_stop < 0 || o->ce_chunk < 0)
        return dp_usage_error(S, "step counts (--max-steps, --stop-at, --eval-every, "
                                 "--save-every, --early-stop, --ce-chunk) cannot be negative");
    if (o->samples < 0 || o->samples > 64 || o->sample_tokens < 1 || o->sample_tokens > 4096)
        return dp_usage_error(S, "--samples must be 0..64 and --sample-tokens 1..4096");
    if (o->early_stop > 0 && (!o->val_path || o->eval_every == 0))
        return dp_usage_error(S, "--early-stop needs --val and --eval-every");
    if (!(o->warmup_ratio >= 0 && o->warmup_ratio < 1))
        return dp_usage_error(S, "--warmup-ratio %g: must be in [0, 1)", o->warmup_ratio);
    if (!(o->weight_decay >= 0) || !(o->max_grad_norm >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) ||
        !(o->beta2 >= 0 && o->beta2 < 1) || !(o->adam_eps > 0))
        return dp_usage_error(S, "AdamW settings out of range (weight decay >= 0, max grad norm "
                                 ">= 0, betas in [0, 1), epsilon > 0)");
    if (dp_schedule_parse(o->sched_s, sk))
        return dp_usage_error(S, "--schedule: %s", dp_last_error());
    if (o->compute_dtype_s && strcmp(o->compute_dtype_s, "bf16") && strcmp(o->compute_dtype_s, "fp32"))
        return dp_usage_error(S, "--compute-dtype %s: bf16 or fp32", o->compute_dtype_s);
    if (strcmp(o->recompute_s, "auto") && strcmp(o->recompute_s, "on") &&
        strcmp(o->recompute_s, "off"))
        return dp_usage_error(S, "--recompute %s: auto, on or off", o->recompute_s);
    if (o->no_recompute && !strcmp(o->recompute_s, "on"))
        return dp_usage_error(S, "--no-recompute and --recompute on contradict each other");
    if (o->no_recompute) o->recompute_s = "off";
    if (dp_lora_parse_targets(o->targets_s, targets))
        return dp_usage_error(S, "--targets: %s", dp_last_error());
    dp_chat_format fmt;
    if (o->format_s && dp_chat_format_parse(o->format_s, &fmt))
        return dp_usage_error(S, "--chat-format: %s", dp_last_error());
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", o->out_dir ? o->out_dir : ".");
    if (o->find_lr) { /* nothing of the run directory is used */
    } else if (o->resume && !is_file(ckpt))
        return dp_usage_error(S, "--resume: no checkpoint at %s", ckpt);
    else if (!o->resume && is_file(ckpt))
        return dp_usage_error(S,
                              "%s holds a checkpoint: add --resume to continue it, or choose "
                              "another --out",
                              o->out_dir);
    if (o->world_size == 0 || o->world_size > 65536 || o->rank < -1 ||
        (o->world_size > 0 && o->rank >= o->world_size))
        return dp_usage_error(S, "--rank R --world-size N: needs 1 <= N <= 65536 and 0 <= R < N");
    if ((o->rank >= 0 || o->world_size > 0) && !o->dist_init)
        return dp_usage_error(S, "--rank and --world-size go with --dist-init tcp://HOST:PORT or "
                                 "file://PATH (under mpirun leave all three out)");
    if (!(o->dist_timeout > 0 && o->dist_timeout <= 86400))
        return dp_usage_error(S, "--dist-timeout %g: must be in (0, 86400] seconds",
                              o->dist_timeout);
    if (o->find_lr && dp_dist_requested(o->dist_init))
        return dp_usage_error(S, "--find-lr runs on one process: start it without mpirun or "
                                 "--dist-init");
    if (o->vram < 0 || (o->vram > 0 && o->vram < (1 << 20)))
        return dp_usage_error(S, "--vram %lld: give the GPU memory, e.g. 12GB", (long long)o->vram);
    if (o->alpha == -1) o->alpha = 2.0 * (double)o->r;
    if (!o->batch_tokens) o->batch_tokens = o->max_seq;
    return 0;
}

/* GPUs of a data-parallel run as the launcher tells it before any communicator exists (each needs
 * NCCL's buffers beside its replica): --world-size, mpirun's or torchrun-style environment. */
static int planned_ranks(const train_options *o) {
    if (o->world_size > 0) return (int)o->world_size;
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *s = getenv(vars[i]);
        int n = s ? atoi(s) : 0;
        if (n > 0) return n;
    }
    return 1;
}

/* The backend --device names (NULL: the CPU), and for a GPU the memory plan of this run against
 * its memory (--vram, else the device's), before anything is loaded. 0, or the exit code. */
static int choose_device(train_options *o, unsigned targets, const dp_gpu_ops **gpu,
                         bool *emulated, bool quiet) {
    const dp_command_spec *S = &dp_train_spec;
    dp_device dev;
    bool bad_name;
    *gpu = NULL;
    if (dp_device_select(o->device_s, true, &dev, &bad_name))
        return dp_usage_error(S, "%s", dev.why);
    if (dev.cpu_fallback && !quiet)
        fprintf(stderr, "train: no CUDA device (%s): training on the CPU\n", dev.cuda.status);
    if (!dev.gpu) return 0;
    *gpu = dev.gpu;
    *emulated = dev.asked == DP_DEVICE_EMU;
    uint64_t limit = (uint64_t)o->vram; /* EMU: unlimited memory unless --vram */
    if (!limit && dev.asked != DP_DEVICE_EMU) limit = dev.cuda.total_mem;
    o->gpu_recompute = strcmp(o->recompute_s, "off") != 0; /* auto without a limit: on */
    if (!limit) return 0;
    dp_model_config cfg;
    if (dp_config_load_path(&cfg, o->model_path)) return dp_runtime_error(S);
    dp_train_shape sh = dp_train_shape_default();
    sh.seq = (int)o->batch_tokens, sh.micro_batch = 1, sh.r = (int)o->r;
    sh.targets = targets, sh.base_dense = o->fp32_base;
    sh.ce_chunk = o->ce_chunk > 0 ? (int)o->ce_chunk : DP_CE_CHUNK_DEFAULT;
    sh.dropout = o->dropout > 0;
    sh.ranks = planned_ranks(o);
    dp_memplan p;
    if (!strcmp(o->recompute_s, "auto")) { /* off when the plan without it fits a quarter */
        sh.recompute = false;
        if (dp_memplan_build(&p, &cfg, &sh)) return dp_usage_error(S, "%s", dp_last_error());
        o->gpu_recompute = !dp_recompute_auto_keeps((double)p.total, (double)limit);
        dp_memplan_free(&p);
        if (!quiet)
            fprintf(stderr, "train: recomputation %s (--recompute auto: %.0f MiB of GPU memory "
                            "without it, %s a quarter of %.0f MiB)\n",
                    o->gpu_recompute ? "on" : "off", p.total / 1048576.0,
                    o->gpu_recompute ? "more than" : "within", limit / 1048576.0);
    }
    sh.recompute = o->gpu_recompute;
    if (dp_memplan_build(&p, &cfg, &sh)) return dp_usage_error(S, "%s", dp_last_error());
    uint64_t need = p.total;
    dp_memplan_free(&p);
    if (need <= limit) return 0;
    int fit = dp_memplan_max_seq(&cfg, &sh, limit);
    if (fit >= 16)
        return dp_usage_error(
            S,
            "--device %s: this run needs %.0f MiB of GPU memory%s, more than the %.0f MiB "
            "available: --max-seq %d --batch-tokens %d fits (`doppel plan --model %s --vram "
            "%lluMiB --seq %lld --r %lld --gpus %d` shows where it goes)",
            o->device_s, need / 1048576.0, sh.ranks > 1 ? " per GPU" : "", limit / 1048576.0, fit,
            fit, o->model_path, (unsigned long long)(limit >> 20), (long long)o->batch_tokens,
            (long long)o->r, sh.ranks);
    return dp_usage_error(S,
                          "--device %s: this run needs %.0f MiB of GPU memory%s and not even 16 "
                          "tokens fit in %.0f MiB: train on the CPU (--device cpu) or a smaller "
                          "model",
                          o->device_s, need / 1048576.0, sh.ranks > 1 ? " per GPU" : "",
                          limit / 1048576.0);
}

/* ------------------------------------------------------------------ the run */

/* What one run holds, freed by run_free whatever happened. */
typedef struct {
    cJSON *config; /* run_config() */
    dp_train_render_ctx rctx;
    dp_token_data train, val;
    dp_model *model;
    dp_lora *lora;
    char *sys_prompt;  /* malloc'd */
    char *meta;        /* doppel.json text before training (cJSON_Print) */
    char *config_text; /* cJSON_PrintUnformatted */
    uint64_t tok_fp;
    dp_eval_set sample_set; /* the validation set, whose first n_samples contexts are sampled */
    int n_samples;
    dp_eval_gen_opts sample_opts;
} train_run;

static void run_free(train_run *r) {
    dp_eval_set_free(&r->sample_set);
    cJSON_Delete(r->config);
    cJSON_free(r->config_text);
    cJSON_free(r->meta);
    free(r->sys_prompt);
    dp_lora_free(r->lora);
    dp_model_free(r->model);
    dp_token_data_free(&r->train);
    dp_token_data_free(&r->val);
    dp_train_render_ctx_free(&r->rctx);
    dp_tokenizer_free(r->rctx.tok);
}

/* The doppel.json text for this run with `summary` as its "training" record (cJSON_free it). */
static char *adapter_meta(const train_options *o, const train_run *r, const cJSON *summary) {
    char *summary_text = cJSON_PrintUnformatted(summary);
    if (!summary_text) return NULL;
    dp_adapter_meta am = {.persona = o->persona,
                          .system_prompt = r->sys_prompt,
                          .chat_format = dp_chat_format_name(r->rctx.fmt),
                          .tokenizer_fingerprint = r->tok_fp,
                          .base_model = o->model_path,
                          .training_json = summary_text};
    char *meta = dp_adapter_meta_json(&am, r->model);
    cJSON_free(summary_text);
    return meta;
}

/* Tokenizer, chat format, data, model and LoRA: everything the loop needs. 0 or -1. */
static int run_prepare(const train_options *o, unsigned targets, train_run *r, bool quiet) {
    size_t plen = strlen(o->model_path);
    bool gguf = plen > 5 && !strcmp(o->model_path + plen - 5, ".gguf");
    r->rctx.tok = gguf ? dp_tokenizer_load_gguf(o->model_path) : dp_tokenizer_load(o->model_path);
    if (!r->rctx.tok) return -1;
    if (dp_chat_format_choose(dp_tokenizer_chat_template(r->rctx.tok), o->format_s, &r->rctx.fmt))
        return -1;
    r->tok_fp = dp_tokenizer_fingerprint(r->rctx.tok);
    if (token_data(o, o->data_path, &r->rctx, r->tok_fp, &r->train, quiet)) return -1;
    if (o->val_path && token_data(o, o->val_path, &r->rctx, r->tok_fp, &r->val, quiet)) return -1;
    r->sys_prompt =
        o->system_override ? dp_strdup(o->system_override) : data_system_prompt(o->data_path);

    dp_load_opts lo = {.nf4 = !o->fp32_base, .quiet = quiet};
    r->model = dp_model_load(o->model_path, &lo);
    if (!r->model) return -1;
    dp_lora_config lc = {.r = (int)o->r,
                         .alpha = (float)o->alpha,
                         .dropout = (float)o->dropout,
                         .rslora = o->rslora,
                         .targets = targets};
    r->lora = dp_lora_create(&r->model->cfg, &lc);
    if (!r->lora) return -1;
    dp_lora_init(r->lora, (uint64_t)o->seed);
    r->config_text = cJSON_PrintUnformatted(r->config);
    cJSON *summary = cJSON_CreateObject();
    cJSON_AddItemToObject(summary, "config", cJSON_Duplicate(r->config, true));
    r->meta = adapter_meta(o, r, summary);
    cJSON_Delete(summary);
    return r->config_text && r->meta ? 0 : -1;
}

/* trainer.h's sample callback: the adapter's replies to the first contexts of the validation
 * set, as doppel eval generates them (chat's sampler and stop set, the run's system prompt) */
static int sample_replies(void *ctx, const dp_lora *lora, char **texts) {
    train_run *r = ctx;
    unsigned char ended[64];
    return dp_eval_generate(r->model, lora, r->rctx.tok, r->rctx.fmt, &r->sample_set,
                            (size_t)r->n_samples, &r->sample_opts, texts, ended);
}

/* The validation contexts to sample while training (none without --val or with --samples 0). */
static int sample_prepare(const train_options *o, train_run *r) {
    if (!o->val_path || o->samples <= 0) return 0;
    if (dp_eval_set_load(o->val_path, &r->sample_set)) return -1;
    r->n_samples = r->sample_set.n < (size_t)o->samples ? (int)r->sample_set.n : (int)o->samples;
    r->sample_opts = (dp_eval_gen_opts){.max_tokens = (int)o->sample_tokens,
                                        .max_context = (int)o->max_seq + (int)o->sample_tokens,
                                        .system = r->sys_prompt};
    r->sample_opts.sampling = dp_sampler_defaults();
    if (dp_sampler_params_from_generation_config(&r->sample_opts.sampling, o->model_path))
        return -1;
    r->sample_opts.sampling.seed = 1;
    return 0;
}

/* --recompute on the CPU; auto: off when the workspace without recomputation fits in a quarter
 * of MemAvailable (the model is loaded by now; the rest is left to the machine's other work) */
static bool cpu_recompute(const train_options *o, const train_run *r, bool quiet) {
    if (strcmp(o->recompute_s, "auto")) return !strcmp(o->recompute_s, "on");
    size_t off = dp_grad_ws_plan_bytes(r->model, r->lora, (int)o->batch_tokens, false,
                                       (int)o->ce_chunk, wants_bf16(o));
    double avail = dp_mem_available();
    bool on = !dp_recompute_auto_keeps((double)off, avail);
    if (!quiet)
        fprintf(stderr, "train: recomputation %s (--recompute auto: a %.0f MiB workspace without "
                        "it, %s a quarter of the %.0f MiB available)\n",
                on ? "on" : "off", off / 1048576.0, on ? "more than" : "within",
                avail / 1048576.0);
    return on;
}

static dp_train_opts trainer_opts(const train_options *o, train_run *r, dp_sched_kind sk,
                                  const dp_gpu_ops *gpu, bool quiet) {
    return (dp_train_opts){.model = r->model,
                           .lora = r->lora,
                           .train = &r->train,
                           .val = o->val_path ? &r->val : NULL,
                           .batch_tokens = o->batch_tokens,
                           .grad_accum = (int)o->grad_accum,
                           .epochs = (int)o->epochs,
                           .max_steps = (long)o->max_steps,
                           .seed = (uint64_t)o->seed,
                           .sched = sk,
                           .lr = o->lr,
                           .warmup_ratio = o->warmup_ratio,
                           .warmup_steps = (long)o->warmup_steps,
                           .adam = {(float)o->beta1, (float)o->beta2, (float)o->adam_eps,
                                    (float)o->weight_decay, (float)o->max_grad_norm},
                           .eval_every = (long)o->eval_every,
                           .save_every = (long)o->save_every,
                           .early_stop = (long)o->early_stop,
                           .stop_at = (long)o->stop_at,
                           .recompute = gpu ? o->gpu_recompute : cpu_recompute(o, r, quiet),
                           /* the CPU path; falls back to fp32 without AVX512_BF16 */
                           .cpu_bf16 = wants_bf16(o),
                           .ce_chunk = (int)o->ce_chunk,
                           .neftune_alpha = (float)o->neftune_alpha,
                           .gpu = gpu,
                           .gpu_bf16 = true,
                           .out_dir = o->out_dir,
                           .config_json = r->config_text,
                           .base_model = o->model_path,
                           .doppel_json = r->meta,
                           .resume = o->resume,
                           .quiet = quiet,
                           .stop_flag = &interrupted,
                           .sample = r->n_samples ? sample_replies : NULL,
                           .sample_ctx = r,
                           .n_samples = r->n_samples};
}

static void print_result(const train_options *o, const dp_train_result *res) {
    if (res->interrupted)
        fprintf(stderr,
                "train: stopped at step %ld of %ld; checkpoint saved: continue with the same "
                "options and --resume\n",
                res->steps_done, res->total_steps);
    else
        fprintf(stderr, "train: done, %ld steps%s\n", res->steps_done,
                res->early_stopped ? " (early stop: the validation loss stopped improving)" : "");
    if (!isnan(res->val_before) || !isnan(res->val_after))
        fprintf(stderr, "train: validation loss %.4f before, %.4f after, best %.4f at step %ld\n",
                res->val_before, res->val_after, res->best_val, res->best_step);
    fprintf(stderr, "train: %.0f tokens/s, peak memory %.0f MiB (workspace %.0f MiB)\n",
            res->tokens_per_s, res->peak_rss_mib, res->workspace_bytes / 1048576.0);
    fprintf(stderr, "train: adapter in %s/ (best in %s/best/), metrics in %s/metrics.h5\n",
            o->out_dir, o->out_dir, o->out_dir);
}

/* doppel.json again, now with the run's results. 0 or -1. */
static int write_summary(const train_options *o, const train_run *r, const dp_train_result *res) {
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddItemToObject(sum, "config", cJSON_Duplicate(r->config, true));
    cJSON_AddNumberToObject(sum, "steps", (double)res->steps_done);
    cJSON_AddNumberToObject(sum, "total_steps", (double)res->total_steps);
    cJSON_AddBoolToObject(sum, "interrupted", res->interrupted);
    cJSON_AddBoolToObject(sum, "early_stopped", res->early_stopped);
    if (!isnan(res->val_before)) cJSON_AddNumberToObject(sum, "val_loss_before", res->val_before);
    if (!isnan(res->val_after)) cJSON_AddNumberToObject(sum, "val_loss_after", res->val_after);
    if (!isnan(res->best_val)) {
        cJSON_AddNumberToObject(sum, "best_val_loss", res->best_val);
        cJSON_AddNumberToObject(sum, "best_step", (double)res->best_step);
    }
    cJSON_AddNumberToObject(sum, "tokens_per_s", round(res->tokens_per_s));
    char *meta = adapter_meta(o, r, sum);
    cJSON_Delete(sum);
    char mp[4300];
    snprintf(mp, sizeof mp, "%s/doppel.json", o->out_dir);
    int rc = !meta || dp_write_file_atomic(mp, meta, strlen(meta)) ? -1 : 0;
    cJSON_free(meta);
    return rc;
}

/* Loads everything and trains (a rank of a data-parallel run when dist's world is above 1). The
 * exit code. */
static int train(const train_options *o, dp_sched_kind sk, unsigned targets, const dp_gpu_ops *gpu,
                 dp_dist *dist, bool quiet) {
    train_run r = {.config = run_config(o)};
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", o->out_dir);
    if (o->resume && check_resume_config(ckpt, r.config)) {
        run_free(&r);
        fprintf(stderr, "doppel train: %s\n", dp_last_error());
        return DP_EXIT_USAGE;
    }
    int status = DP_EXIT_ERROR;
    if (run_prepare(o, targets, &r, quiet) || sample_prepare(o, &r)) goto done;
    dp_train_opts to = trainer_opts(o, &r, sk, gpu, quiet);
    to.dist = dist;
    if (!quiet && o->world > 1)
        fprintf(stderr,
                "train: data parallel over %d ranks (%s): each takes %lld of every "
                "step's %lld micro-batches\n",
                o->world, dp_dist_kind(dist), (long long)o->grad_accum,
                (long long)o->grad_accum * o->world);
    if (!quiet && gpu && o->compute_dtype_s)
        fprintf(stderr, "train: --compute-dtype is not implemented on the GPU (its own dtypes "
                        "stay: bf16 activations, fp32 LoRA and optimizer)\n");
    if (!quiet && !gpu && o->compute_dtype_s && to.cpu_bf16 && !dp_bf16_gemm_ok())
        fprintf(stderr, "train: --compute-dtype bf16: this CPU has no AVX512_BF16 (or DOPPEL_SIMD "
                        "narrows it): the base's products run in fp32\n");
    if (!quiet) {
        char tl[128];
        dp_lora_format_targets(targets, tl, sizeof tl);
        fprintf(stderr,
                "train: %s, %s base, on %s; LoRA r %d alpha %g on %s: %.2f M parameters; "
                "%ld steps of %lld tokens x %lld micro-batches\n",
                o->model_path,
                o->fp32_base                       ? "fp32"
                : gpu                              ? "NF4"
                : to.cpu_bf16 && dp_bf16_amx_ok()  ? "NF4 (bf16 products, AMX)"
                : to.cpu_bf16 && dp_bf16_gemm_ok() ? "NF4 (bf16 products)"
                                                   : "NF4 (fp32 products)",
                gpu ? gpu->backend : "the CPU", (int)o->r, o->alpha, tl, r.lora->n / 1e6,
                dp_train_total_steps(&to), (long long)o->batch_tokens, (long long)o->grad_accum);
    }
    struct sigaction sa = {0}, old, old_term, old_usr1;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    if (o->world > 1) sigaction(SIGTERM, &sa, &old_term), sigaction(SIGUSR1, &sa, &old_usr1);
    dp_train_result res;
    int trc = dp_train(&to, &res);
    sigaction(SIGINT, &old, NULL);
    if (o->world > 1) sigaction(SIGTERM, &old_term, NULL), sigaction(SIGUSR1, &old_usr1, NULL);
    if (trc) goto done;
    if (!quiet) print_result(o, &res);
    if (!quiet && res.world > 1)
        fprintf(stderr, "train: %d ranks, %.0f bytes of gradients all-reduced per step\n",
                res.world, res.bytes_reduced_per_step);
    if (dp_dist_rank(dist) == 0 && write_summary(o, &r, &res)) goto done;
    status = DP_EXIT_OK;
done:
    if (status != DP_EXIT_OK) fprintf(stderr, "doppel train: %s\n", dp_last_error());
    run_free(&r);
    return status;
}

/* ------------------------------------------------------------------ --find-lr */

/* The smoothed loss against log lr in the terminal: '*' the smoothed loss, 'o' its minimum,
 * '^' under the axis the suggested lr. */
static void text_plot(FILE *out, const dp_lr_find_result *r) {
    enum { W = 64, H = 14 };
    double lo = INFINITY, hi = -INFINITY;
    for (long i = 0; i < r->n; i++)
        if (isfinite(r->smoothed[i])) lo = fmin(lo, r->smoothed[i]), hi = fmax(hi, r->smoothed[i]);
    if (!isfinite(lo) || r->n < 2) return;
    if (hi - lo < 1e-9) hi = lo + 1e-9;
    double x0 = log(r->lr[0]), x1 = log(r->lr[r->n - 1]);
    char grid[H][W + 1];
    memset(grid, ' ', sizeof grid);
    for (long i = 0; i < r->n; i++) {
        if (!isfinite(r->smoothed[i])) continue;
        int x = (int)lround((log(r->lr[i]) - x0) / (x1 - x0) * (W - 1));
        int y = (int)lround((hi - r->smoothed[i]) / (hi - lo) * (H - 1));
        grid[y][x] = i == r->i_min ? 'o' : (grid[y][x] == 'o' ? 'o' : '*');
    }
    fprintf(out, "smoothed loss vs lr (log scale)\n");
    for (int y = 0; y < H; y++) {
        grid[y][W] = 0;
        double v = hi - (hi - lo) * y / (H - 1);
        fprintf(out, "%8.4f |%s\n", v, grid[y]);
    }
    fprintf(out, "         +");
    for (int x = 0; x < W; x++) fputc('-', out);
    fputc('\n', out);
    char marks[W + 1];
    memset(marks, ' ', W);
    marks[W] = 0;
    if (isfinite(r->suggested) && log(r->suggested) >= x0) {
        int x = (int)lround((log(r->suggested) - x0) / (x1 - x0) * (W - 1));
        marks[x] = '^';
    }
    fprintf(out, "          %s\n", marks);
    fprintf(out, "          %-*.1e%.1e\n", W - 7, r->lr[0], r->lr[r->n - 1]);
}

/* matplotlib's figure of the CSV, run when python3 has it (exit 3 when it does not) */
static const char lr_plot_py[] =
    "import csv, os, sys\n"
    "try:\n"
    "    import matplotlib\n"
    "    matplotlib.use('Agg')\n"
    "    import matplotlib.pyplot as plt\n"
    "except ImportError:\n"
    "    sys.exit(3)\n"
    "rows = list(csv.DictReader(open(os.environ['DOPPEL_LR_CSV'])))\n"
    "lr = [float(r['lr']) for r in rows]\n"
    "fig, ax = plt.subplots(figsize=(7, 4))\n"
    "ax.plot(lr, [float(r['loss']) for r in rows], alpha=0.35, label='loss')\n"
    "ax.plot(lr, [float(r['smoothed']) for r in rows], label='smoothed loss')\n"
    "s = float(os.environ['DOPPEL_LR_SUGGESTED'])\n"
    "ax.axvline(s, color='k', ls='--', label='suggested %.2g (min / 10)' % s)\n"
    "ax.set_xscale('log'); ax.set_xlabel('learning rate'); ax.set_ylabel('training loss')\n"
    "fin = [float(r['smoothed']) for r in rows if float(r['smoothed']) < 1e30]\n"
    "ax.set_ylim(min(fin) - 0.1 * (max(fin) - min(fin)), fin[0] + 0.5 * (max(fin) - min(fin)))\n"
    "ax.legend(); ax.set_title('doppel train --find-lr')\n"
    "fig.tight_layout(); fig.savefig(os.environ['DOPPEL_LR_PNG'], dpi=110)\n";

static int write_lr_csv(const char *path, const dp_lr_find_result *r, bool quiet) {
    FILE *f = fopen(path, "w");
    if (!f) return dp_fail("%s: cannot write the sweep (%s)", path, strerror(errno));
    fprintf(f, "step,lr,loss,smoothed\n");
    for (long i = 0; i < r->n; i++)
        fprintf(f, "%ld,%.9g,%.9g,%.9g\n", i + 1, r->lr[i],
                isfinite(r->loss[i]) ? r->loss[i] : 1e308,
                isfinite(r->smoothed[i]) ? r->smoothed[i] : 1e308);
    if (fclose(f)) return dp_fail("%s: cannot write the sweep (disk full?)", path);
    if (!isfinite(r->suggested)) return 0;
    /* FILE.png beside it (FILE without its .csv) */
    char png[4200];
    size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".csv")) n -= 4;
    snprintf(png, sizeof png, "%.*s.png", (int)n, path);
    char sug[64];
    snprintf(sug, sizeof sug, "%.9g", r->suggested);
    setenv("DOPPEL_LR_CSV", path, 1), setenv("DOPPEL_LR_PNG", png, 1);
    setenv("DOPPEL_LR_SUGGESTED", sug, 1);
    FILE *py = popen("python3 - 2>/dev/null", "w");
    int rc = -1;
    if (py) {
        fputs(lr_plot_py, py);
        rc = pclose(py);
    }
    if (!quiet)
        fprintf(stderr,
                rc == 0 ? "train: the plot is in %s\n"
                        : "train: no plot picture (%s needs python3 with matplotlib)\n",
                png);
    return 0;
}

/* The LR range test: loads what training loads, sweeps, prints. The exit code. */
static int find_lr(const train_options *o, dp_sched_kind sk, unsigned targets,
                   const dp_gpu_ops *gpu, bool quiet) {
    train_run r = {.config = run_config(o)};
    int status = DP_EXIT_ERROR;
    dp_lr_find_result res = {0};
    if (run_prepare(o, targets, &r, quiet)) goto done;
    dp_train_opts to = trainer_opts(o, &r, sk, gpu, quiet);
    to.out_dir = NULL; /* nothing is written to the run */
    dp_lr_find_opts f = {.lr_min = o->find_lr_min,
                         .lr_max = o->find_lr_max,
                         .steps = (long)o->find_lr_steps,
                         .beta = 0.9,
                         .diverge = 4};
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    int rc = dp_find_lr(&to, &f, &res);
    sigaction(SIGINT, &old, NULL);
    if (rc) goto done;
    text_plot(stdout, &res);
    if (!isfinite(res.suggested)) {
        dp_fail("--find-lr: no step had a trained token (is the data empty?)");
        goto done;
    }
    printf("%ld steps from %.2e to %.2e%s; smoothed loss lowest (%.4f) at lr %.3g\n", res.n,
           res.lr[0], res.lr[res.n - 1], res.diverged ? ", stopped at divergence" : "",
           res.smoothed[res.i_min], res.lr_at_min);
    printf("suggested peak lr: %.3g (the lr at the smoothed minimum / 10): --lr %.3g\n",
           res.suggested, res.suggested);
    if (o->find_lr_csv && write_lr_csv(o->find_lr_csv, &res, quiet)) goto done;
    status = DP_EXIT_OK;
done:
    if (status != DP_EXIT_OK) fprintf(stderr, "doppel train: %s\n", dp_last_error());
    dp_lr_find_result_free(&res);
    run_free(&r);
    return status;
}

int dp_cmd_train(int argc, char **argv) {
    train_options o = train_defaults();
    dp_cli cli;
    int rc = dp_cli_parse(&dp_train_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    dp_sched_kind sk = DP_SCHED_COSINE;
    unsigned targets = 0;
    const dp_gpu_ops *gpu = NULL;
    bool emulated = false;
    rc = check_options(&o, &sk, &targets);
    if (!rc) rc = choose_device(&o, targets, &gpu, &emulated, cli.quiet);
    dp_dist *dist = NULL;
    if (!rc && !o.find_lr) {
        dp_dist_opts dopt = {.init = o.dist_init,
                             .rank = (int)o.rank,
                             .world = (int)o.world_size,
                             .gpu = gpu != NULL,
                             .emulated = emulated,
                             .timeout_s = o.dist_timeout,
                             .stop_flag = &interrupted};
        if (dp_dist_create(&dist, &dopt)) {
            fprintf(stderr, "doppel train: %s\n", dp_last_error());
            rc = DP_EXIT_ERROR;
        } else
            o.world = dp_dist_world(dist);
    }
    if (!rc)
        rc = o.find_lr ? find_lr(&o, sk, targets, gpu, cli.quiet)
                       : train(&o, sk, targets, gpu, dist, cli.quiet || dp_dist_rank(dist) != 0);
    dp_dist_destroy(dist);
    dp_cli_free(&cli);
    return rc;
}
