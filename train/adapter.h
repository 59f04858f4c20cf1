/* Writing doppel.json: what an adapter needs besides its weights so chat/serve render prompts
 * exactly as training did (persona, system prompt, chat format, tokenizer fingerprint) and
 * refuse a different base model (its fingerprint), plus a training summary. Reading it back is
 * infer/adapter.h's (dp_adapter_check_base). */
#ifndef DOPPEL_ADAPTER_H
#define DOPPEL_ADAPTER_H

#include <stdint.h>

#include "infer/adapter.h"

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

#endif
