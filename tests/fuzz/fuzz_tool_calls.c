/* libFuzzer target: the tool-call parser and the <think> splitter. The first byte chooses
 * how the rest is cut into pieces. The scanner, whole, must give out the same events (text
 * pieces, calls with their names, tools and arguments, in order) as the old quadratic scanner
 * it replaced (tool_scan_ref.h, the oracle), and hold back the same bytes before the end;
 * streamed, the same text and calls, and every byte back exactly once. Each input costs one
 * scan by the oracle (O(n * DP_TOOL_MAX_CALL) at worst, built without coverage feedback) and
 * two by the scanner (O(n)). */
#include "data/chat_format.h"
#include "infer/tools.h"
#include "tool_scan_ref.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *names[] = {"LOAD_FILE", "FETCH_URL"};

typedef struct {
    dp_buf all;  /* every byte given back */
    dp_buf text; /* the text alone */
    dp_buf raws; /* the calls' raw text, each ended by a NUL (a call never holds one) */
    int calls;
    dp_buf *log; /* NULL, or every event as tool_scan_ref.h's sink writes it */
} sink_state;

static int on_text(void *ctx, const char *s, size_t n) {
    sink_state *st = ctx;
    return dp_buf_append(&st->all, s, n) || dp_buf_append(&st->text, s, n) ||
           (st->log && ref_log_text(st->log, s, n));
}

static int on_call(void *ctx, const dp_tool_call *c) {
    sink_state *st = ctx;
    size_t n = strlen(c->raw);
    if (n < 3 || c->raw[0] != '[' || c->raw[n - 1] != ']' || n > DP_TOOL_MAX_CALL ||
        c->n_args > DP_TOOL_MAX_ARGS || !c->name[0])
        __builtin_trap();
    st->calls++;
    return dp_buf_append(&st->all, c->raw, n) || dp_buf_append(&st->raws, c->raw, n + 1) ||
           (st->log && ref_log_call(st->log, c));
}

static bool same(const dp_buf *a, const dp_buf *b) {
    return a->len == b->len && (!a->len || !memcmp(a->data, b->data, a->len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned step = data[0] % 16 + 1;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;

    /* the oracle, the old scanner, whole */
    dp_buf ref_log = {0}, new_log = {0};
    ref_scanner *r = ref_scanner_create(names, 2, ref_log_sink(&ref_log));
    if (!r || ref_scanner_feed(r, text, n)) abort();
    size_t ref_held = ref_scanner_held(r);
    if (ref_scanner_finish(r)) abort();
    ref_scanner_destroy(r);

    /* the scanner, whole: event for event the oracle's, with the same bytes still undecided
     * before the end; then streamed: the same text and calls, every byte back once */
    sink_state whole = {.log = &new_log}, st = {0};
    dp_tool_scanner *w = dp_tool_scanner_create(names, 2, (dp_tool_sink){on_text, on_call, &whole});
    if (!w || dp_tool_scanner_feed(w, text, n)) abort();
    if (dp_tool_scanner_held(w) != ref_held) __builtin_trap();
    if (dp_tool_scanner_finish(w)) abort();
    dp_tool_scanner_destroy(w);
    if (!same(&ref_log, &new_log)) __builtin_trap();
    dp_tool_scanner *s = dp_tool_scanner_create(names, 2, (dp_tool_sink){on_text, on_call, &st});
    if (!s) abort();
    for (size_t i = 0; i < n; i += step)
        if (dp_tool_scanner_feed(s, text + i, n - i < step ? n - i : step)) abort();
    if (dp_tool_scanner_finish(s)) abort();
    dp_tool_scanner_destroy(s);
    if (st.all.len != n || (n && memcmp(st.all.data, text, n)) || st.calls != whole.calls ||
        !same(&st.raws, &whole.raws) || !same(&st.text, &whole.text))
        __builtin_trap();
    sink_state *both[] = {&whole, &st};
    for (int i = 0; i < 2; i++) {
        dp_buf_free(&both[i]->all);
        dp_buf_free(&both[i]->text);
        dp_buf_free(&both[i]->raws);
    }
    dp_buf_free(&ref_log);
    dp_buf_free(&new_log);

    /* the splitter: thought + answer never hold more than the input */
    dp_think_splitter t = {0};
    dp_buf th = {0}, an = {0};
    for (size_t i = 0; i < n; i += step)
        if (dp_think_feed(&t, text + i, n - i < step ? n - i : step, &th, &an)) abort();
    if (dp_think_finish(&t, &th, &an)) abort();
    if (th.len + an.len > n) __builtin_trap();
    dp_think_free(&t);
    dp_buf_free(&th);
    dp_buf_free(&an);
    return 0;
}
