/* libFuzzer target: doppel serve's request parser (JSON body -> generation request), the
 * /tokenize body and the stop-string scanner on what the parser accepted. */
#include "infer/server_request.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_chat_request r;
    dp_api_error e;
    if (dp_chat_request_parse((const char *)data, size, &r, &e) == 0) {
        /* what the server relies on in an accepted request */
        if (r.n_msgs < 1 || r.n_stop > DP_API_MAX_STOP || r.top_logprobs < 0 ||
            r.top_logprobs > DP_API_MAX_TOP_LOGPROBS || (r.max_tokens != -1 && r.max_tokens < 1))
            __builtin_trap();
        for (int i = 0; i < r.n_msgs; i++)
            if (strlen(r.msgs[i].content) != r.msgs[i].len) __builtin_trap(); /* nothing cut */
        for (int i = 0; i < r.n_msgs; i++) {
            bool hit;
            size_t n = dp_stop_scan(r.msgs[i].content, r.msgs[i].len, 0, r.stop, r.n_stop, &hit);
            if (n > r.msgs[i].len) __builtin_trap();
        }
        dp_chat_request_free(&r);
    } else if (e.status < 400 || e.status > 599 || !e.message[0]) {
        __builtin_trap();
    }
    char *content = NULL;
    size_t len;
    bool special;
    if (dp_tokenize_request_parse((const char *)data, size, &content, &len, &special, &e) == 0 &&
        strlen(content) != len)
        __builtin_trap();
    free(content);
    return 0;
}
