/* libFuzzer target: the tokenizer.json loader, the GGUF tokenizer builder, and encode / decode /
 * streaming decode on small built-in tokenizers (Qwen2 pipeline with NFC, Llama-3 pipeline with
 * ignore_merges). First byte: 0 = the rest is a tokenizer.json, 2 = a GGUF file; otherwise the
 * rest is text (and ids). */
#include "data/base/error.h"
#include "data/tokenizer.h"
#include "infer/gguf_tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static dp_tokenizer *toy(const char *pre) {
    static char bytes[256][3];
    static const char *tokens[300];
    static int32_t types[300];
    int n = 0;
    for (int b = 0, k = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = self ? b : 256 + k++;
        if (cp < 0x80)
            bytes[b][0] = (char)cp;
        else
            bytes[b][0] = (char)(0xC0 | (cp >> 6)), bytes[b][1] = (char)(0x80 | (cp & 0x3F));
        types[n] = DP_TOKTYPE_NORMAL;
        tokens[n++] = bytes[b];
    }
    static const char *extra[] = {"Ġt", "he", "Ġthe", "kk", "kkkk", "ĠĠ", "ÃĤ"};
    static const char *merges[] = {"Ġ t", "h e", "Ġt he", "k k", "kk kk", "Ġ Ġ", "Ã Ĥ"};
    for (int i = 0; i < 7; i++) types[n] = DP_TOKTYPE_NORMAL, tokens[n++] = extra[i];
    types[n] = DP_TOKTYPE_CONTROL, tokens[n++] = "<|im_end|>";
    types[n] = DP_TOKTYPE_USER_DEFINED, tokens[n++] = "<u>";
    dp_tokenizer_arrays a = {.name = "fuzz",
                             .pre = pre,
                             .tokens = tokens,
                             .token_types = types,
                             .n_tokens = (size_t)n,
                             .merges = merges,
                             .n_merges = 7,
                             .bos_id = -1,
                             .eos_id = -1,
                             .pad_id = -1};
    return dp_tokenizer_from_arrays(&a);
}

static void text_case(dp_tokenizer *t, const char *s, size_t n, bool nfc) {
    dp_ids ids = {0};
    bool valid = dp_utf8_valid_prefix(s, n) == n;
    int rc = dp_tokenizer_encode(t, s, n, true, &ids);
    if ((rc == 0) != valid) abort(); /* exactly invalid UTF-8 is refused */
    if (rc == 0) {
        dp_buf out = {0};
        if (dp_tokenizer_decode(t, ids.v, ids.n, false, &out)) abort();
        size_t m = n;
        char *want = nfc ? dp_utf8_nfc(s, n, &m) : NULL;
        const char *w = want ? want : s;
        if (out.len != m || memcmp(out.data, w, m) != 0) abort(); /* round trip */
        /* streaming decode gives the same text */
        dp_tok_stream st = {0};
        dp_buf so = {0};
        for (size_t i = 0; i < ids.n; i++)
            if (dp_tok_stream_feed(&st, t, ids.v[i], &so)) abort();
        dp_tok_stream_flush(&st, &so);
        if (so.len != m || (m && memcmp(so.data, w, m) != 0)) abort();
        free(want);
        dp_buf_free(&so);
        dp_buf_free(&out);
    }
    dp_ids_free(&ids);
    /* arbitrary ids: decode must never crash, and always gives valid UTF-8 */
    int32_t raw[64];
    size_t k = n / 2 < 64 ? n / 2 : 64;
    for (size_t i = 0; i < k; i++)
        raw[i] = (int32_t)((unsigned char)s[2 * i] | ((unsigned char)s[2 * i + 1] << 8)) % 300;
    dp_buf out = {0};
    if (dp_tokenizer_decode(t, raw, k, false, &out) == 0 &&
        dp_utf8_valid_prefix(out.data, out.len) != out.len)
        abort();
    dp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static dp_tokenizer *qwen, *llama;
    if (!qwen) qwen = toy("qwen2");
    if (!llama) llama = toy("llama-bpe");
    if (!qwen || !llama) abort();
    if (size == 0) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] == 0 || data[0] == 2) {
        dp_gguf *g = data[0] == 2 ? dp_gguf_open_memory(s, n, "fuzz.gguf") : NULL;
        dp_tokenizer *t = data[0] == 2 ? (g ? dp_tokenizer_from_gguf(g, NULL) : NULL)
                                       : dp_tokenizer_load_json(s, n, NULL, 0, "fuzz.json");
        dp_gguf_close(g);
        if (t) {
            dp_ids ids = {0};
            const char *text = "Hello, world! 123 kkkk <|im_end|> \xC3\xA9";
            if (dp_tokenizer_encode(t, text, strlen(text), true, &ids) == 0) {
                dp_buf out = {0};
                (void)dp_tokenizer_decode(t, ids.v, ids.n, false, &out);
                dp_buf_free(&out);
            }
            dp_ids_free(&ids);
            dp_tokenizer_free(t);
        }
        return 0;
    }
    text_case(data[0] & 1 ? qwen : llama, s, n, data[0] & 1);
    return 0;
}
