/* doppel merge --ollama (see export_ollama.h): the Modelfile's text, written atomically. */
#include "infer/export_ollama.h"
#include "data/base/error.h"
#include "infer/generate.h"
#include "infer/gguf.h"
#include "infer/gguf_tokenizer.h"
#include "infer/sampler.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int dp_ollama_template(dp_chat_format f, bool with_bos, dp_buf *out) {
    /* $last: the role of the message before, "" at the start. A message is closed when the next
     * one opens, so the last one can stay open when it is the assistant's (a prefill) and
     * otherwise gets closed and followed by the assistant header, as add_generation_prompt. */
    if (f == DP_CHAT_CHATML)
        return dp_buf_puts(out,
                           "{{- $last := \"\" }}{{ range .Messages }}"
                           "{{ if $last }}<|im_end|>\n{{ end }}"
                           "<|im_start|>{{ .Role }}\n{{ .Content }}{{ $last = .Role }}{{ end }}"
                           "{{ if ne $last \"assistant\" }}{{ if $last }}<|im_end|>\n{{ end }}"
                           "<|im_start|>assistant\n{{ end }}");
    if (f == DP_CHAT_LLAMA3)
        return dp_buf_printf(out,
                             "{{- $last := \"\" }}{{ range .Messages }}"
                             "{{ if $last }}<|eot_id|>{{ else }}%s{{ end }}"
                             "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}"
                             "{{ $last = .Role }}{{ end }}"
                             "{{ if ne $last \"assistant\" }}{{ if $last }}<|eot_id|>{{ end }}"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}",
                             with_bos ? "<|begin_of_text|>" : "");
    return dp_fail("chat format %d has no Ollama template", (int)f);
}

void dp_ollama_modelfile_path(const char *gguf_path, char *out, size_t cap) {
    size_t n = strlen(gguf_path);
    if (n > 5 && !strcmp(gguf_path + n - 5, ".gguf")) n -= 5;
    snprintf(out, cap, "%.*s.Modelfile", (int)n, gguf_path);
}

/* a value between Ollama's triple quotes: it cannot hold """ */
static int put_triple(dp_buf *b, const char *key, const char *v, const char *what) {
    if (strstr(v, "\"\"\""))
        return dp_fail("%s holds \"\"\", which an Ollama Modelfile cannot quote: edit it out (or "
                       "merge without --ollama)",
                       what);
    return dp_buf_printf(b, "%s \"\"\"%s\"\"\"\n", key, v);
}

/* a stop string between double quotes: Ollama's parser takes the text between them as it is
 * (no escapes), and a value ends at whitespace outside quotes */
static int put_stop(dp_buf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || (unsigned char)s[i] < 0x20)
            return dp_fail("the stop token '%.*s' holds a quote or a control character, which an "
                           "Ollama Modelfile cannot write",
                           (int)n, s);
    return dp_buf_printf(b, "PARAMETER stop \"%.*s\"\n", (int)n, s);
}

/* the file name alone, as "./NAME": Ollama resolves FROM / ADAPTER beside the Modelfile */
static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int dp_export_ollama(const dp_merge *mg, const char *gguf_path, bool adapter) {
    char path[4200];
    dp_ollama_modelfile_path(gguf_path, path, sizeof path);
    struct stat st;
    if (stat(path, &st) == 0)
        return dp_fail("%s already exists: give another --out (doppel merge never overwrites)",
                       path);
    char *format_name = dp_merge_meta_string(mg, "chat_format");
    char *system = dp_merge_meta_string(mg, "system_prompt");
    char *persona = dp_merge_meta_string(mg, "persona");
    dp_buf b = {0}, tmpl = {0};
    dp_gguf *base = NULL;
    char *base_abs = NULL;
    int rc = -1;
    dp_chat_format fmt;
    if (!format_name) {
        dp_fail("%s/doppel.json: no chat_format", mg->adapter_dir);
        goto out;
    }
    if (dp_chat_format_parse(format_name, &fmt)) goto out;
    /* Llama 3's <|begin_of_text|> comes from the tokenizer unless the GGUF says it adds none */
    bool with_bos = false;
    if (stat(mg->model_path, &st) == 0 && S_ISREG(st.st_mode)) {
        if (!(base = dp_gguf_open(mg->model_path))) goto out;
        const dp_gguf_kv *kv = dp_gguf_find(base, "tokenizer.ggml.add_bos_token");
        with_bos = kv && kv->type == DP_GGUF_BOOL && !kv->u;
    }
    if (dp_ollama_template(fmt, with_bos, &tmpl)) goto out;
    dp_sampler_params sp = dp_sampler_defaults();
    if (dp_sampler_params_from_generation_config(&sp, mg->model_path)) goto out;
    if (dp_buf_printf(&b,
                      "# Ollama Modelfile written by doppel merge for the persona %s (chat format "
                      "%s): ollama create NAME -f %s\n",
                      persona ? persona : "(unnamed)", format_name, base_name(path)))
        goto out;
    if (adapter) {
        /* the base as it is; Ollama applies ADAPTER over it */
        if (!(base_abs = realpath(mg->model_path, NULL))) {
            dp_fail("%s: cannot resolve the base model's path", mg->model_path);
            goto out;
        }
        if (dp_buf_printf(&b, "FROM %s\nADAPTER ./%s\n", base_abs, base_name(gguf_path))) goto out;
    } else if (dp_buf_printf(&b, "FROM ./%s\n", base_name(gguf_path))) {
        goto out;
    }
    if (put_triple(&b, "TEMPLATE", tmpl.data, "the template") ||
        (system && *system && put_triple(&b, "SYSTEM", system, "doppel.json's system_prompt")))
        goto out;
    /* the end-of-turn tokens as text: Ollama stops on them (llama.cpp also on its EOG ids) */
    dp_tokenizer *tok =
        base ? dp_tokenizer_from_gguf(base, NULL) : dp_tokenizer_load(mg->model_path);
    if (!tok) goto out;
    int32_t stop[4];
    int n_stop = dp_chat_stop_ids(tok, fmt, stop, 4), bad = 0;
    for (int i = 0; i < n_stop && !bad; i++) {
        size_t len = 0;
        const char *s = dp_tokenizer_token_bytes(tok, stop[i], &len);
        bad = s && put_stop(&b, s, len);
    }
    dp_tokenizer_free(tok);
    if (bad) goto out;
    if (!n_stop) {
        dp_fail("%s: the tokenizer has no end-of-turn token for chat format %s", mg->model_path,
                format_name);
        goto out;
    }
    if (dp_buf_printf(&b,
                      "PARAMETER temperature %g\nPARAMETER top_k %d\nPARAMETER top_p %g\n"
                      "PARAMETER min_p %g\nPARAMETER repeat_penalty %g\n"
                      "PARAMETER repeat_last_n %d\n", /* doppel 0 = all: Ollama -1 */
                      (double)sp.temperature, sp.top_k, (double)sp.top_p, (double)sp.min_p,
                      (double)sp.repeat_penalty, sp.repeat_last_n ? sp.repeat_last_n : -1))
        goto out;
    rc = dp_write_file_atomic(path, b.data, b.len);
out:
    dp_buf_free(&b);
    dp_buf_free(&tmpl);
    dp_gguf_close(base);
    free(base_abs);
    free(format_name);
    free(system);
    free(persona);
    return rc;
}
