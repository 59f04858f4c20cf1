/* Byte-level BPE core: building the lookup tables, encoding (added tokens, NFC, PCRE2
 * pre-tokenizer, BPE merges by rank), decoding and the streaming decoder.
 * The loaders that fill a tok_spec live in tokenizer_load.c. */
#define _GNU_SOURCE
#include "data/tokenizer_impl.h"
#include "data/base/error.h"
#include "data/base/hash.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ------------------------------------------------------------------ small helpers */

int dp_ids_push(dp_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = dp_realloc(ids->v, cap * sizeof *v);
        if (!v) return -1;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

void dp_ids_free(dp_ids *ids) {
    free(ids->v);
    *ids = (dp_ids){0};
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* One UTF-8 step at s (n > 0 bytes available): the length of a valid character (1..4), 0 when
 * the bytes are a valid but truncated start, or -k for an invalid maximal subpart of k bytes
 * (each such subpart becomes one U+FFFD, as Rust's from_utf8_lossy does). */
static int utf8_step(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED) {
        need = 2;
        hi = 0x9F;
    } else if (c == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else
        return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char b = s[i], l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return -i;
    }
    return need + 1;
}

/* Appends bytes to out, replacing each invalid maximal subpart with U+FFFD. When hold is
 * non-NULL, a valid-but-truncated tail is not written: its length is stored in *hold. */
static int append_lossy(dp_buf *out, const unsigned char *s, size_t n, size_t *hold) {
    size_t i = 0, run = 0;
    if (hold) *hold = 0;
    while (i < n) {
        int k = utf8_step(s + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        if (i > run && dp_buf_append(out, s + run, i - run)) return -1;
        if (k == 0 && hold) {
            *hold = n - i;
            return 0;
        }
        if (dp_buf_append(out, "\xEF\xBF\xBD", 3)) return -1;
        i += k == 0 ? n - i : (size_t)-k;
        run = i;
    }
    if (n > run && dp_buf_append(out, s + run, n - run)) return -1;
    return 0;
}

char *dp_utf8_nfc(const char *s, size_t len, size_t *out_len) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) {
        dp_fail("NFC normalization failed: %s", utf8proc_errmsg(r));
        return NULL;
    }
    if (out_len) *out_len = (size_t)r;
    return (char *)dst;
}

/* ------------------------------------------------------------------ the tokenizer */

enum { CACHE_SLOTS = 1 << 14, CACHE_KEY = 31, CACHE_IDS = 15 };

typedef struct {
    uint64_t hash;
    uint8_t klen, nids; /* klen 0 = empty */
    char key[CACHE_KEY];
    int32_t ids[CACHE_IDS];
} cache_slot;

typedef struct {
    const char *s; /* content (into the arena) */
    uint32_t len;
    int32_t id;
    bool special;
} added_tok;

typedef struct {
    int kind;
    pcre2_code *re;
    pcre2_match_data *md;
    bool jit;
} pre_step;

typedef struct {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
    uint32_t rank;
    int32_t id;
} merge_slot;

typedef struct {
    uint32_t rank, pos;
    int32_t id;
} heap_ent;

struct dp_tokenizer {
    int32_t n_ids;
    char *arena; /* every token's raw bytes */
    uint32_t *off, *len;
    uint8_t *flags;  /* TF_* */
    uint32_t *vocab; /* open addressing: id + 1, 0 = empty */
    size_t vocab_mask;
    merge_slot *merges;
    size_t merge_mask, n_merges;
    int32_t byte_id[256]; /* -1: no token (the byte is dropped) */
    int n_missing_bytes;
    uint64_t dropped; /* bytes dropped so far */
    added_tok *added; /* sorted by first byte, then longest first */
    int n_added;
    int added_start[257];
    bool nfc, ignore_merges;
    int n_pre;
    pre_step pre[TOK_MAX_PRE];
    int32_t bos, eos, pad;
    char *chat_template;
    char desc[256];
    uint64_t fingerprint;
    bool is_clone; /* shares the tables above with its parent; owns only the state below */
    /* encode state: not shared across threads */
    cache_slot *cache;
    int32_t *h_sym, *h_prev, *h_next;
    heap_ent *heap;
    size_t h_cap;
    char *tmp;
    size_t tmp_cap;
};

enum { TF_PRESENT = 1, TF_VOCAB = 2, TF_ADDED = 4, TF_SPECIAL = 8 };

/* GPT-2 byte <-> unicode map (REFERENCE.md section 6). */
static void byte_map(uint32_t cp_of_byte[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_of_byte[b] = self ? (uint32_t)b : 256u + (uint32_t)n++;
    }
}

/* Byte-level text -> raw bytes (dst has room for n bytes). Returns the length or -1 when a
 * character is outside the byte-level alphabet (its code point in *bad). */
static long bytelevel_decode(const char *s, size_t n, const int16_t *byte_of_cp, char *dst,
                             int32_t *bad) {
    size_t i = 0, o = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            *bad = -1;
            return -1;
        }
        if (cp < 0 || cp >= 324 || byte_of_cp[cp] < 0) {
            *bad = cp;
            return -1;
        }
        dst[o++] = (char)byte_of_cp[cp];
        i += (size_t)k;
    }
    return (long)o;
}

static int32_t vocab_find(const dp_tokenizer *t, const char *s, size_t n) {
    size_t i = dp_hash_bytes(s, n, 0) & t->vocab_mask;
    for (;;) {
        uint32_t v = t->vocab[i];
        if (!v) return -1;
        int32_t id = (int32_t)v - 1;
        if (t->len[id] == n && memcmp(t->arena + t->off[id], s, n) == 0) return id;
        i = (i + 1) & t->vocab_mask;
    }
}

static inline const merge_slot *merge_find(const dp_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = dp_hash_u64(key) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[i];
        if (m->key == key) return m;
        if (!m->key) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

static int added_cmp(const void *a, const void *b) {
    const added_tok *x = a, *y = b;
    unsigned char fx = (unsigned char)x->s[0], fy = (unsigned char)y->s[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void free_state(dp_tokenizer *t) {
    for (int i = 0; i < t->n_pre; i++) pcre2_match_data_free(t->pre[i].md);
    free(t->cache);
    free(t->h_sym);
    free(t->h_prev);
    free(t->h_next);
    free(t->heap);
    free(t->tmp);
}

void dp_tokenizer_free(dp_tokenizer *t) {
    if (!t) return;
    free_state(t);
    if (t->is_clone) {
        free(t);
        return;
    }
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->flags);
    free(t->vocab);
    free(t->merges);
    free(t->added);
    free(t->chat_template);
    free(t);
}

dp_tokenizer *dp_tokenizer_clone(const dp_tokenizer *parent) {
    dp_tokenizer *t = dp_malloc(sizeof *t);
    if (!t) return NULL;
    *t = *parent; /* the read-only tables are shared (compiled PCRE2 code is thread-safe) */
    t->is_clone = true;
    t->dropped = 0;
    t->cache = NULL;
    t->h_sym = t->h_prev = t->h_next = NULL;
    t->heap = NULL;
    t->h_cap = 0;
    t->tmp = NULL;
    t->tmp_cap = 0;
    for (int i = 0; i < t->n_pre; i++) t->pre[i].md = NULL;
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re &&
            !(t->pre[i].md = pcre2_match_data_create_from_pattern(t->pre[i].re, NULL))) {
            dp_fail("out of memory for regex match data");
            dp_tokenizer_free(t);
            return NULL;
        }
    if (!(t->cache = dp_calloc(CACHE_SLOTS, sizeof *t->cache))) {
        dp_tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* Unicode White_Space, which \s means in Oniguruma (HF tokenizers' regex engine). PCRE2's \s
 * also matches U+180E (MONGOLIAN VOWEL SEPARATOR, format since Unicode 6.3), so patterns are
 * rewritten to use this set: \s -> [set] and \S -> [^set] outside classes, \s -> set inside. */
#define WHITE_SPACE                                                                                \
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"  \
    "\\x{205F}\\x{3000}"

static char *onig_spaces(const char *pat) {
    dp_buf b = {0};
    bool in_class = false;
    int rc = 0;
    for (const char *q = pat; *q && !rc; q++) {
        if (*q == '\\' && q[1]) {
            if (q[1] == 's')
                rc = dp_buf_puts(&b, in_class ? WHITE_SPACE : "[" WHITE_SPACE "]");
            else if (q[1] == 'S' && !in_class)
                rc = dp_buf_puts(&b, "[^" WHITE_SPACE "]");
            else
                rc = dp_buf_append(&b, q, 2);
            q++;
            continue;
        }
        if (!in_class && *q == '[') {
            in_class = true;
            rc = dp_buf_append(&b, q, 1);
            if (q[1] == '^') rc = rc || dp_buf_append(&b, ++q, 1);
            if (q[1] == ']') rc = rc || dp_buf_append(&b, ++q, 1); /* a leading ] is literal */
            continue;
        }
        if (in_class && *q == '[' && q[1] == ':') { /* POSIX [:name:] */
            const char *e = strstr(q, ":]");
            size_t n = e ? (size_t)(e + 2 - q) : strlen(q);
            rc = dp_buf_append(&b, q, n);
            q += n - 1;
            continue;
        }
        if (in_class && *q == ']') in_class = false;
        rc = dp_buf_append(&b, q, 1);
    }
    if (rc || dp_buf_append(&b, "", 0)) {
        dp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int compile_step(dp_tokenizer *t, const tok_spec *s, int i) {
    pre_step *p = &t->pre[t->n_pre];
    p->kind = s->pre[i].kind;
    if (p->kind == TOK_PRE_SPLIT) {
        int err;
        PCRE2_SIZE eoff;
        /* the pattern comes from the file: pcre2 checks its UTF-8 (unchecked, a bad byte sent
         * pcre2_compile reading past the pattern; found by fuzz_tokenizer) */
        uint32_t opts = PCRE2_UTF | PCRE2_UCP;
        char *pat = NULL;
        if (s->pre[i].literal)
            opts |= PCRE2_LITERAL;
        else if (!(pat = onig_spaces(s->pre[i].pattern)))
            return -1;
        p->re = pcre2_compile((PCRE2_SPTR)(pat ? pat : s->pre[i].pattern), PCRE2_ZERO_TERMINATED,
                              opts, &err, &eoff, NULL);
        free(pat);
        if (!p->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            return dp_fail("%s: pre-tokenizer regex does not compile at offset %zu: %s (regex "
                           "%s)",
                           s->name, (size_t)eoff, (char *)msg, s->pre[i].pattern);
        }
        p->jit = pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE) == 0;
        p->md = pcre2_match_data_create_from_pattern(p->re, NULL);
        if (!p->md) return dp_fail("%s: out of memory for regex match data", s->name);
    }
    t->n_pre++;
    return 0;
}

/* The token arena: added tokens as written, vocab tokens decoded from the byte-level alphabet
 * to raw bytes. 0 or -1 with dp_last_error(). */
static int fill_tokens(dp_tokenizer *t, const tok_spec *s, const int16_t *byte_of_cp,
                       size_t *n_vocab_out) {
    size_t total = 0;
    for (int32_t i = 0; i < s->n_ids; i++) total += s->str[i] ? s->len[i] : 0;
    if (total >= UINT32_MAX) /* offsets are 32-bit */
        return dp_fail("%s: the tokens hold %zu bytes (too many)", s->name, total);
    t->arena = dp_malloc(total + 1);
    t->off = dp_calloc((size_t)s->n_ids + 1, sizeof *t->off);
    t->len = dp_calloc((size_t)s->n_ids + 1, sizeof *t->len);
    t->flags = dp_calloc((size_t)s->n_ids + 1, 1);
    size_t n_vocab = 0;
    if (!t->arena || !t->off || !t->len || !t->flags) return -1;
    size_t pos = 0;
    for (int32_t i = 0; i < s->n_ids; i++) {
        if (!s->str[i]) continue;
        uint8_t ty = s->type[i];
        t->off[i] = (uint32_t)pos;
        if (ty == DP_TOKTYPE_CONTROL || ty == DP_TOKTYPE_USER_DEFINED) {
            if (s->len[i] == 0) {
                dp_fail("%s: added token %d is empty", s->name, (int)i);
                return -1;
            }
            memcpy(t->arena + pos, s->str[i], s->len[i]);
            t->len[i] = s->len[i];
            t->flags[i] = TF_PRESENT | TF_ADDED | (ty == DP_TOKTYPE_CONTROL ? TF_SPECIAL : 0);
            t->n_added++;
        } else {
            int32_t bad = 0;
            long k = bytelevel_decode(s->str[i], s->len[i], byte_of_cp, t->arena + pos, &bad);
            if (k < 0) {
                if (bad < 0)
                    dp_fail("%s: token %d is not valid UTF-8", s->name, (int)i);
                else
                    dp_fail("%s: token %d (\"%.*s\") has U+%04X, outside the GPT-2 byte-level "
                            "alphabet: only byte-level BPE tokenizers are supported",
                            s->name, (int)i, (int)s->len[i], s->str[i], (unsigned)bad);
                return -1;
            }
            t->len[i] = (uint32_t)k;
            t->flags[i] = TF_PRESENT | TF_VOCAB;
            n_vocab++;
        }
        pos += t->len[i];
    }
    *n_vocab_out = n_vocab;
    return 0;
}

/* The added tokens, sorted for leftmost-longest matching, and where each first byte starts.
 * 0 or -1. */
static int sort_added(dp_tokenizer *t, const tok_spec *s) {
    if (t->n_added) {
        t->added = dp_calloc((size_t)t->n_added, sizeof *t->added);
        if (!t->added) return -1;
        int k = 0;
        for (int32_t i = 0; i < s->n_ids; i++)
            if (t->flags[i] & TF_ADDED)
                t->added[k++] = (added_tok){t->arena + t->off[i], t->len[i], i,
                                            (t->flags[i] & TF_SPECIAL) != 0};
        qsort(t->added, (size_t)t->n_added, sizeof *t->added, added_cmp);
    }
    for (int b = 0, k = 0; b <= 256; b++) {
        while (k < t->n_added && (unsigned char)t->added[k].s[0] < b) k++;
        t->added_start[b] = k;
    }
    return 0;
}

/* The one-line description `doppel tokenize` prints. */
static void describe(dp_tokenizer *t, const tok_spec *s) {
    char missing[64] = "";
    if (t->n_missing_bytes)
        snprintf(missing, sizeof missing, ", %d bytes without a token", t->n_missing_bytes);
    snprintf(t->desc, sizeof t->desc,
             "byte-level BPE, %d ids, %zu merges, %d added tokens, %s, %s%s%s", (int)t->n_ids,
             t->n_merges, t->n_added, t->nfc ? "NFC" : "no normalizer",
             s->pre_desc ? s->pre_desc : "no pre-tokenizer",
             t->ignore_merges ? ", ignore_merges" : "", missing);
}

dp_tokenizer *dp_tok_build(const tok_spec *s) {
    dp_tokenizer *t = dp_calloc(1, sizeof *t);
    if (!t) return NULL;
    uint32_t cp_of_byte[256];
    int16_t byte_of_cp[324];
    byte_map(cp_of_byte);
    for (int i = 0; i < 324; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) byte_of_cp[cp_of_byte[b]] = (int16_t)b;

    t->n_ids = s->n_ids;
    t->nfc = s->nfc;
    t->ignore_merges = s->ignore_merges;
    t->bos = s->bos;
    t->eos = s->eos;
    t->pad = s->pad;
    size_t n_vocab = 0;
    if (fill_tokens(t, s, byte_of_cp, &n_vocab)) goto fail;

    /* fingerprint: what decides the ids (tokens, merges, pipeline), not names or templates */
    uint64_t fp = (uint64_t)t->n_ids;
    for (int32_t i = 0; i < s->n_ids; i++)
        fp = dp_hash_bytes(t->arena + t->off[i], t->len[i], fp ^ t->flags[i]);

    /* vocabulary lookup (model vocab only, raw bytes), duplicates keep the lowest id */
    t->vocab_mask = pow2_at_least(n_vocab * 2 + 1) - 1;
    t->vocab = dp_calloc(t->vocab_mask + 1, sizeof *t->vocab);
    if (!t->vocab) goto fail;
    for (int32_t i = 0; i < s->n_ids; i++) {
        if (!(t->flags[i] & TF_VOCAB)) continue;
        if (vocab_find(t, t->arena + t->off[i], t->len[i]) >= 0) continue;
        size_t h = dp_hash_bytes(t->arena + t->off[i], t->len[i], 0) & t->vocab_mask;
        while (t->vocab[h]) h = (h + 1) & t->vocab_mask;
        t->vocab[h] = (uint32_t)i + 1;
    }
    /* a byte without a token is dropped from the text, as HF's BPE does without unk_token
     * (SmolLM2 lacks 21 bytes, mostly ones UTF-8 never uses); dropped bytes are counted */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
        t->n_missing_bytes += t->byte_id[b] < 0;
    }

    /* merges: (left id, right id) -> (rank, merged id); a repeated pair keeps its last rank,
     * as HF's HashMap collect does */
    t->merge_mask = pow2_at_least(s->n_merges * 2 + 1) - 1;
    t->merges = dp_calloc(t->merge_mask + 1, sizeof *t->merges);
    char *buf = dp_malloc(4096);
    if (!t->merges || !buf) {
        free(buf);
        goto fail;
    }
    for (size_t m = 0; m < s->n_merges; m++) {
        if (s->mll[m] + s->mrl[m] > 4000) {
            dp_fail("%s: merge %zu is too long", s->name, m);
            free(buf);
            goto fail;
        }
        int32_t bad = 0;
        long la = bytelevel_decode(s->ml[m], s->mll[m], byte_of_cp, buf, &bad);
        long lb = la < 0 ? -1 : bytelevel_decode(s->mr[m], s->mrl[m], byte_of_cp, buf + la, &bad);
        int32_t a = la > 0 ? vocab_find(t, buf, (size_t)la) : -1;
        int32_t b = lb > 0 ? vocab_find(t, buf + la, (size_t)lb) : -1;
        int32_t c = a >= 0 && b >= 0 ? vocab_find(t, buf, (size_t)(la + lb)) : -1;
        if (c < 0) {
            dp_fail("%s: merge %zu (\"%.*s %.*s\") %s", s->name, m, (int)s->mll[m], s->ml[m],
                    (int)s->mrl[m], s->mr[m],
                    la < 0 || lb < 0 ? "is not in the byte-level alphabet"
                    : a < 0 || b < 0 ? "names a token that is not in the vocabulary"
                                     : "makes a token that is not in the vocabulary");
            free(buf);
            goto fail;
        }
        uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
        size_t h = dp_hash_u64(key) & t->merge_mask;
        while (t->merges[h].key && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
        if (!t->merges[h].key) t->n_merges++;
        t->merges[h] = (merge_slot){key, (uint32_t)m, c};
        fp = dp_hash_u64(fp ^ key) ^ (uint64_t)(uint32_t)c;
    }
    free(buf);

    if (sort_added(t, s)) goto fail;

    for (int i = 0; i < s->n_pre; i++) {
        if (compile_step(t, s, i)) goto fail;
        const char *pat = s->pre[i].pattern ? s->pre[i].pattern : "";
        fp = dp_hash_bytes(pat, strlen(pat),
                           fp ^ (uint64_t)s->pre[i].kind ^ ((uint64_t)s->pre[i].literal << 8));
    }
    t->fingerprint = dp_hash_u64(fp ^ (uint64_t)t->nfc ^ ((uint64_t)t->ignore_merges << 1));
    if (s->chat_template && !(t->chat_template = dp_strdup(s->chat_template))) goto fail;
    t->cache = dp_calloc(CACHE_SLOTS, sizeof *t->cache);
    if (!t->cache) goto fail;
    describe(t, s);
    return t;
fail:
    dp_tokenizer_free(t);
    return NULL;
}

/* ------------------------------------------------------------------ encoding */

/* BPE over one pre-tokenized piece of raw bytes. */
static int bpe_small(dp_tokenizer *t, const unsigned char *s, size_t n, int32_t *sym) {
    /* up to 64 symbols: rank of each adjacent pair, rescanned for the minimum (leftmost) */
    uint32_t rank[64];
    int32_t nid[64];
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[s[i]];
    for (size_t i = 0; i + 1 < m; i++) {
        const merge_slot *g = merge_find(t, sym[i], sym[i + 1]);
        rank[i] = g ? g->rank : UINT32_MAX;
        nid[i] = g ? g->id : -1;
    }
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == UINT32_MAX) break;
        sym[best] = nid[best];
        size_t tail = m - best - 2;
        memmove(sym + best + 1, sym + best + 2, tail * sizeof *sym);
        memmove(rank + best + 1, rank + best + 2, (tail ? tail - 1 : 0) * sizeof *rank);
        memmove(nid + best + 1, nid + best + 2, (tail ? tail - 1 : 0) * sizeof *nid);
        m--;
        if (best > 0) {
            const merge_slot *g = merge_find(t, sym[best - 1], sym[best]);
            rank[best - 1] = g ? g->rank : UINT32_MAX;
            nid[best - 1] = g ? g->id : -1;
        }
        if (best + 1 < m) {
            const merge_slot *g = merge_find(t, sym[best], sym[best + 1]);
            rank[best] = g ? g->rank : UINT32_MAX;
            nid[best] = g ? g->id : -1;
        }
    }
    return (int)m;
}

static inline bool heap_less(heap_ent a, heap_ent b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(e, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Long pieces: linked list of symbols + a heap of candidate merges, O(n log n). */
static int bpe_long(dp_tokenizer *t, const unsigned char *s, size_t n, dp_ids *out) {
    if (n > t->h_cap) {
        size_t cap = n * 2;
        int32_t *a = dp_realloc(t->h_sym, cap * sizeof *a);
        if (!a) return -1;
        t->h_sym = a;
        if (!(a = dp_realloc(t->h_prev, cap * sizeof *a))) return -1;
        t->h_prev = a;
        if (!(a = dp_realloc(t->h_next, cap * sizeof *a))) return -1;
        t->h_next = a;
        heap_ent *h = dp_realloc(t->heap, cap * 3 * sizeof *h);
        if (!h) return -1;
        t->heap = h;
        t->h_cap = cap;
    }
    int32_t *sym = t->h_sym, *prev = t->h_prev, *next = t->h_next;
    heap_ent *heap = t->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[s[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot *g = merge_find(t, sym[i], sym[i + 1]);
        if (g) heap_push(heap, &nh, (heap_ent){g->rank, (uint32_t)i, g->id});
    }
    while (nh) {
        heap_ent e = heap_pop(heap, &nh);
        int32_t p = (int32_t)e.pos, q = next[p];
        if (sym[p] < 0 || q < 0) continue;
        const merge_slot *g = merge_find(t, sym[p], sym[q]);
        if (!g || g->rank != e.rank) continue; /* stale: a neighbour changed */
        sym[p] = e.id;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0) {
            const merge_slot *h = merge_find(t, sym[prev[p]], sym[p]);
            if (h) heap_push(heap, &nh, (heap_ent){h->rank, (uint32_t)prev[p], h->id});
        }
        if (next[p] >= 0) {
            const merge_slot *h = merge_find(t, sym[p], sym[next[p]]);
            if (h) heap_push(heap, &nh, (heap_ent){h->rank, (uint32_t)p, h->id});
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i])
        if (dp_ids_push(out, sym[i])) return -1;
    return 0;
}

static int bpe_piece(dp_tokenizer *t, const char *piece, size_t n, dp_ids *out) {
    const unsigned char *s = (const unsigned char *)piece;
    if (n == 0) return 0;
    if (t->ignore_merges && n > 1) {
        int32_t id = vocab_find(t, piece, n);
        if (id >= 0) return dp_ids_push(out, id);
    }
    if (t->n_missing_bytes) {
        size_t keep = 0;
        for (size_t i = 0; i < n; i++) keep += t->byte_id[s[i]] >= 0;
        if (keep < n) {
            if (keep > t->tmp_cap) {
                char *b = dp_realloc(t->tmp, keep * 2);
                if (!b) return -1;
                t->tmp = b;
                t->tmp_cap = keep * 2;
            }
            for (size_t i = 0, k = 0; i < n; i++)
                if (t->byte_id[s[i]] >= 0) t->tmp[k++] = (char)s[i];
            t->dropped += n - keep;
            s = (const unsigned char *)t->tmp;
            n = keep;
            if (n == 0) return 0;
        }
    }
    if (n == 1) return dp_ids_push(out, t->byte_id[s[0]]);
    cache_slot *c = NULL;
    uint64_t h = 0;
    if (n <= CACHE_KEY) {
        h = dp_hash_bytes(s, n, 0);
        c = &t->cache[h & (CACHE_SLOTS - 1)];
        if (c->klen == n && c->hash == h && memcmp(c->key, s, n) == 0) {
            for (int i = 0; i < c->nids; i++)
                if (dp_ids_push(out, c->ids[i])) return -1;
            return 0;
        }
    }
    if (n > 64) return bpe_long(t, s, n, out);
    int32_t sym[64];
    int m = bpe_small(t, s, n, sym);
    for (int i = 0; i < m; i++)
        if (dp_ids_push(out, sym[i])) return -1;
    if (c && m <= CACHE_IDS) {
        c->hash = h;
        c->klen = (uint8_t)n;
        c->nids = (uint8_t)m;
        memcpy(c->key, s, n);
        memcpy(c->ids, sym, (size_t)m * sizeof *sym);
    }
    return 0;
}

static int pre_run(dp_tokenizer *t, int step, const char *s, size_t n, dp_ids *out);

static int pre_split(dp_tokenizer *t, int step, const char *s, size_t n, dp_ids *out) {
    pre_step *p = &t->pre[step];
    size_t off = 0, last = 0;
    while (off < n) {
        int rc = p->jit
                     ? pcre2_jit_match(p->re, (PCRE2_SPTR)s, n, off, 0, p->md, NULL)
                     : pcre2_match(p->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, p->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return dp_fail("pre-tokenizer regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* an empty match splits nothing: step over one character */
            int k = utf8_step((const unsigned char *)s + ms, n - ms);
            off = ms + (k > 0 ? (size_t)k : 1);
            continue;
        }
        if (ms > last && pre_run(t, step + 1, s + last, ms - last, out)) return -1;
        if (pre_run(t, step + 1, s + ms, me - ms, out)) return -1;
        last = off = me;
    }
    if (last < n && pre_run(t, step + 1, s + last, n - last, out)) return -1;
    return 0;
}

static int pre_run(dp_tokenizer *t, int step, const char *s, size_t n, dp_ids *out) {
    if (step == t->n_pre) return bpe_piece(t, s, n, out);
    if (t->pre[step].kind == TOK_PRE_SPLIT) return pre_split(t, step, s, n, out);
    /* ByteLevel add_prefix_space: a space before a piece that does not start with one */
    if (n == 0 || s[0] == ' ') return pre_run(t, step + 1, s, n, out);
    char *b = dp_malloc(n + 1);
    if (!b) return -1;
    b[0] = ' ';
    memcpy(b + 1, s, n);
    int rc = pre_run(t, step + 1, b, n + 1, out);
    free(b);
    return rc;
}

/* Text between added tokens: normalizer, then the pre-tokenizer steps and BPE. */
static int encode_segment(dp_tokenizer *t, const char *s, size_t n, dp_ids *out) {
    if (n == 0) return 0;
    if (t->nfc) {
        /* text with no code point >= U+0300 (lead byte 0xCC) is already NFC */
        bool plain = true;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] >= 0xCC) {
                plain = false;
                break;
            }
        if (!plain) {
            size_t m;
            char *norm = dp_utf8_nfc(s, n, &m);
            if (!norm) return -1;
            int rc = pre_run(t, 0, norm, m, out);
            free(norm);
            return rc;
        }
    }
    return pre_run(t, 0, s, n, out);
}

int dp_tokenizer_encode(dp_tokenizer *t, const char *text, size_t len, bool allow_special,
                        dp_ids *out) {
    size_t bad = dp_utf8_valid_prefix(text, len);
    if (bad < len)
        return dp_fail("text is not valid UTF-8 at byte offset %zu (byte 0x%02X)", bad,
                       (unsigned char)text[bad]);
    size_t seg = 0, i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        int lo = t->added_start[c], hi = t->added_start[c + 1];
        const added_tok *hit = NULL;
        for (int k = lo; k < hi; k++) { /* longest first */
            const added_tok *a = &t->added[k];
            if (a->special && !allow_special) continue;
            if (a->len <= len - i && memcmp(text + i, a->s, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        if (encode_segment(t, text + seg, i - seg, out)) return -1;
        if (dp_ids_push(out, hit->id)) return -1;
        i += hit->len;
        seg = i;
    }
    return encode_segment(t, text + seg, len - seg, out);
}

/* ------------------------------------------------------------------ decoding */

const char *dp_tokenizer_token_bytes(const dp_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & TF_PRESENT)) return NULL;
    if (len) *len = t->len[id];
    return t->arena + t->off[id];
}

int dp_tokenizer_decode(const dp_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                        dp_buf *out) {
    dp_buf raw = {0};
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *b = dp_tokenizer_token_bytes(t, ids[i], &l);
        if (!b) {
            dp_buf_free(&raw);
            return dp_fail("token id %d at position %zu is not in the vocabulary (0..%d)",
                           (int)ids[i], i, (int)t->n_ids - 1);
        }
        if (skip_special && (t->flags[ids[i]] & TF_SPECIAL)) continue;
        if (dp_buf_append(&raw, b, l)) {
            dp_buf_free(&raw);
            return -1;
        }
    }
    int rc = append_lossy(out, (const unsigned char *)raw.data, raw.len, NULL);
    if (rc == 0 && !out->data) rc = dp_buf_append(out, "", 0);
    dp_buf_free(&raw);
    return rc;
}

int dp_tok_stream_feed(dp_tok_stream *s, const dp_tokenizer *t, int32_t id, dp_buf *out) {
    size_t l;
    const char *b = dp_tokenizer_token_bytes(t, id, &l);
    if (!b)
        return dp_fail("token id %d is not in the vocabulary (0..%d)", (int)id, (int)t->n_ids - 1);
    if (s->skip_special && (t->flags[id] & TF_SPECIAL)) return 0;
    if (s->n_pending == 0) {
        size_t hold;
        if (append_lossy(out, (const unsigned char *)b, l, &hold)) return -1;
        memcpy(s->pending, b + l - hold, hold);
        s->n_pending = (int)hold;
        return 0;
    }
    /* pending bytes (at most 3) + the new token's bytes */
    unsigned char stack[64];
    size_t n = (size_t)s->n_pending + l;
    unsigned char *join = n <= sizeof stack ? stack : dp_malloc(n);
    if (!join) return -1;
    memcpy(join, s->pending, (size_t)s->n_pending);
    memcpy(join + s->n_pending, b, l);
    size_t hold;
    int rc = append_lossy(out, join, n, &hold);
    if (rc == 0) {
        memcpy(s->pending, join + n - hold, hold);
        s->n_pending = (int)hold;
    }
    if (join != stack) free(join);
    return rc;
}

int dp_tok_stream_flush(dp_tok_stream *s, dp_buf *out) {
    int rc = 0;
    if (s->n_pending) rc = append_lossy(out, s->pending, (size_t)s->n_pending, NULL);
    s->n_pending = 0;
    return rc;
}

/* ------------------------------------------------------------------ facts */

int32_t dp_tokenizer_token_id(const dp_tokenizer *t, const char *text) {
    size_t n = strlen(text);
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].len == n && memcmp(t->added[k].s, text, n) == 0) return t->added[k].id;
    return n ? vocab_find(t, text, n) : -1;
}

bool dp_tokenizer_is_special(const dp_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TF_SPECIAL);
}
int32_t dp_tokenizer_vocab_size(const dp_tokenizer *t) {
    return t->n_ids;
}
int32_t dp_tokenizer_bos_id(const dp_tokenizer *t) {
    return t->bos;
}
int32_t dp_tokenizer_eos_id(const dp_tokenizer *t) {
    return t->eos;
}
const char *dp_tokenizer_chat_template(const dp_tokenizer *t) {
    return t->chat_template;
}
const char *dp_tokenizer_describe(const dp_tokenizer *t) {
    return t->desc;
}
uint64_t dp_tokenizer_dropped_bytes(const dp_tokenizer *t) {
    return t->dropped;
}
uint64_t dp_tokenizer_fingerprint(const dp_tokenizer *t) {
    return t->fingerprint;
}
