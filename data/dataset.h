/* Conversation datasets as JSONL, one conversation per line:
 * {"messages":[{"role":"user","content":"..."},...], optional extra keys}
 * (the OpenAI / Hugging Face chat format). Writer (atomic, `.zst` compresses) and a streaming
 * reader (`.zst` transparent) that `doppel train` iterates. */
#ifndef DOPPEL_DATASET_H
#define DOPPEL_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/base/io.h"

/* DP_ROLE_TOOL: a tool's output given back to the model (doppel chat --tools); each chat
 * format renders it its own way (data/chat_format.h). */
typedef enum { DP_ROLE_SYSTEM, DP_ROLE_USER, DP_ROLE_ASSISTANT, DP_ROLE_TOOL } dp_role;

typedef struct {
    dp_role role;
    const char *content; /* UTF-8, NUL-terminated */
    size_t len;          /* bytes, without the NUL */
} dp_chat_msg;

typedef struct {
    dp_chat_msg *msgs;
    int n;
    const char *extra; /* writer: extra JSON members without braces (`"session":3`), or NULL */
    int64_t line;      /* reader: the line it came from */
} dp_conversation;

const char *dp_role_name(dp_role r);
/* "system" / "user" / "assistant" / "tool" -> *r; -1 for anything else. */
int dp_role_parse(const char *name, dp_role *r);

/* ---- writer */
typedef struct dp_dataset_writer dp_dataset_writer;
/* Writes to PATH.tmp.PID; commit renames it over PATH, abort removes it. */
dp_dataset_writer *dp_dataset_writer_open(const char *path);
int dp_dataset_write(dp_dataset_writer *w, const dp_conversation *c);
int64_t dp_dataset_writer_count(const dp_dataset_writer *w);
int dp_dataset_writer_commit(dp_dataset_writer *w); /* frees w */
void dp_dataset_writer_abort(dp_dataset_writer *w); /* frees w */
/* Appends one conversation as a JSON line (with the trailing newline) to b. */
int dp_conversation_to_json(const dp_conversation *c, dp_buf *b);

/* ---- reader */
typedef struct dp_dataset_reader dp_dataset_reader;
dp_dataset_reader *dp_dataset_open(const char *path);
/* 1 and *c (valid until the next call), 0 at the end, -1 with "FILE:LINE: what" on bad input. */
int dp_dataset_next(dp_dataset_reader *r, dp_conversation *c);
void dp_dataset_close(dp_dataset_reader *r);

/* ---- ChatML, for --preview and for people */
/* "<|im_start|>role\ncontent<|im_end|>\n" per message. */
void dp_chatml_print(FILE *out, const dp_conversation *c);

#endif
