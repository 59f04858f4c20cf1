/* Model configuration from a Hugging Face config.json (+ generation_config.json) or from GGUF
 * metadata, into dp_model_config (infer/model.h). Supported: llama, qwen2, qwen3. */
#ifndef DOPPEL_CONFIG_H
#define DOPPEL_CONFIG_H

#include <stddef.h>

#include "infer/gguf.h"
#include "infer/model.h"

/* Parses config.json text; `path` names it in messages. */
int dp_config_from_json(dp_model_config *cfg, const char *text, size_t len, const char *path);
/* Adds generation_config.json's eos_token_id (int or list) to the stop set. */
int dp_config_add_generation(dp_model_config *cfg, const char *text, size_t len, const char *path);
/* DIR/config.json and, when present, DIR/generation_config.json. */
int dp_config_load_dir(dp_model_config *cfg, const char *dir);
/* A model's config without its weights, from PATH: a HF directory, a config.json or a .gguf
 * (its metadata). For `doppel plan`, and for train to refuse a run that will not fit a GPU
 * before loading anything. */
int dp_config_load_path(dp_model_config *cfg, const char *path);
/* GGUF metadata (general.architecture, {arch}.*, tokenizer.ggml.*_token_id). */
int dp_config_from_gguf(dp_model_config *cfg, const dp_gguf *g);
/* Adds id to the stop set unless present (at most 8 ids). */
void dp_config_add_eos(dp_model_config *cfg, int id);
/* "llama", "qwen2", "qwen3" */
const char *dp_arch_name(dp_arch arch);

#endif
