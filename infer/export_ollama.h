/* doppel merge --ollama: an Ollama Modelfile beside a merged GGUF or a LoRA GGUF — FROM (the
 * merged file, or the base under ADAPTER), a Go TEMPLATE that renders the training chat format
 * (data/chat_format.c) exactly, SYSTEM, PARAMETER stop for the end-of-turn tokens and chat's
 * sampling defaults. */
#ifndef DOPPEL_EXPORT_OLLAMA_H
#define DOPPEL_EXPORT_OLLAMA_H

#include <stdbool.h>

#include "data/base/io.h"
#include "data/chat_format.h"
#include "infer/merge.h"

/* The Go text/template (Ollama's TEMPLATE) over .Messages (.Role, .Content) that renders a
 * conversation as dp_chat_render_text does with the generation prompt after a last message
 * that is not the assistant's; a last assistant message is left open (Ollama continues it).
 * with_bos: Llama-3's <|begin_of_text|> is written by the template (false when the GGUF's
 * tokenizer adds it, tokenizer.ggml.add_bos_token). Llama-3 strips each message's content
 * (Python str.strip()); Ollama's templates cannot, so such content is rendered as it is. */
int dp_ollama_template(dp_chat_format f, bool with_bos, dp_buf *out);

/* The Modelfile path for an output: PATH without ".gguf", plus ".Modelfile". */
void dp_ollama_modelfile_path(const char *gguf_path, char *out, size_t cap);

/* Writes the Modelfile for gguf_path (a merged GGUF, or with adapter the LoRA GGUF over
 * mg->model_path). Refuses an existing Modelfile; temporary name + rename. */
int dp_export_ollama(const dp_merge *mg, const char *gguf_path, bool adapter);

#endif
