/* doppel.json: what an adapter needs besides its weights so chat/serve render prompts exactly
 * as training did (persona, system prompt, chat format, tokenizer fingerprint) and refuse a
 * different base model (its identity), plus a training summary. */
#ifndef DOPPEL_ADAPTER_H
#define DOPPEL_ADAPTER_H

#include <stdint.h>

#include "infer/model.h"

/* A hash of the base model's configuration and of a sample of its weights (norms, embedding
 * rows, the first block's linears), independent of fp32/NF4 storage of the block linears. */
uint64_t dp_model_fingerprint(const dp_model *m);

typedef struct {
    const char *persona;       /* or NULL */
    const char *system_prompt; /* or NULL: none */
    const char *chat_format;   /* "chatml" | "llama3" */
    uint64_t tokenizer_fingerprint;
    const char *base_model;    /* path as given */
    const char *training_json; /* a JSON object text (summary), or NULL */
} dp_adapter_meta;

/* The doppel.json text (malloc'd) for model m. */
char *dp_adapter_meta_json(const dp_adapter_meta *meta, const dp_model *m);

/* Checks that doppel.json (text, from adapter dir `where`) was trained on a model like m:
 * same architecture and sizes, and the same fingerprint. -1 with a message naming both. */
int dp_adapter_check_base(const char *doppel_json, const char *where, const dp_model *m);

#endif
