/* The timeline and the conversations cut from it (REFERENCE.md §2). Messages flow
 *   reader (own thread) -> ingest (normalize, drop empty/system, authors) -> order -> sessions
 *   -> rule -> sink.
 * Order: the first two distinct instants decide. In time order, messages go straight to the
 * sessionizer (memory: one session). Newest first, closed chunks (cut on gaps) are spilled to
 * an unlinked temporary file and replayed backwards at the end (memory: one chunk). Anything
 * else, or a persona name that turns out to cover an id already used, restarts the pass in the
 * sorted mode: everything in memory (about the size of the text), one stable sort. */
#include "data/chunk.h"
#include "data/dce.h"
#include "data/base/error.h"
#include "data/base/hash.h"
#include "data/base/rng.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { M_SCAN, M_UNDECIDED, M_FORWARD, M_REVERSE, M_SORT };
enum { F_SYSTEM = 1 };
#define PASS_RESTART 1
#define NONE         UINT32_MAX

typedef struct {
    int64_t t, seq;
    uint32_t author, name, len, flags;
    const char *text;
} tl_msg;

typedef struct {
    tl_msg *v;
    size_t n, cap;
} tl_vec;

static int vec_push(tl_vec *v, const tl_msg *m) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 1024;
        tl_msg *nv = dp_realloc(v->v, nc * sizeof *nv);
        if (!nv) return -1;
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = *m;
    return 0;
}

/* Text storage in fixed blocks: no realloc copies, reset keeps the blocks for reuse. */
typedef struct {
    char **blk;
    size_t *used, *size;
    int n, cur;
} arena;

static const char *arena_put(arena *a, const char *s, size_t n) {
    while (a->cur < a->n && a->size[a->cur] - a->used[a->cur] < n + 1) a->cur++;
    if (a->cur == a->n) {
        size_t sz = n + 1 > (1u << 20) ? n + 1 : (1u << 20);
        char **nb = dp_realloc(a->blk, (size_t)(a->n + 1) * sizeof *nb);
        if (!nb) return NULL;
        a->blk = nb;
        size_t *nu = dp_realloc(a->used, (size_t)(a->n + 1) * sizeof *nu);
        if (!nu) return NULL;
        a->used = nu;
        size_t *ns = dp_realloc(a->size, (size_t)(a->n + 1) * sizeof *ns);
        if (!ns) return NULL;
        a->size = ns;
        if (!(a->blk[a->n] = dp_malloc(sz))) return NULL;
        a->used[a->n] = 0;
        a->size[a->n] = sz;
        a->n++;
    }
    char *d = a->blk[a->cur] + a->used[a->cur];
    memcpy(d, s, n);
    d[n] = 0;
    a->used[a->cur] += n + 1;
    return d;
}

static void arena_reset(arena *a) {
    for (int i = 0; i < a->n; i++) a->used[i] = 0;
    a->cur = 0;
}

static void arena_free(arena *a) {
    for (int i = 0; i < a->n; i++) free(a->blk[i]);
    free(a->blk);
    free(a->used);
    free(a->size);
    *a = (arena){0};
}

/* Open-addressing index: slot -> entry number (NONE when empty); the caller compares keys. */
typedef struct {
    uint32_t *slot;
    size_t cap, n;
} index_t;

static int index_grow(index_t *ix, uint64_t (*key_hash)(void *, uint32_t), void *ctx) {
    size_t nc = ix->cap ? ix->cap * 2 : 256;
    uint32_t *ns = dp_malloc(nc * sizeof *ns);
    if (!ns) return -1;
    memset(ns, 0xFF, nc * sizeof *ns);
    for (size_t i = 0; i < ix->cap; i++) {
        if (ix->slot[i] == NONE) continue;
        size_t j = key_hash(ctx, ix->slot[i]) & (nc - 1);
        while (ns[j] != NONE) j = (j + 1) & (nc - 1);
        ns[j] = ix->slot[i];
    }
    free(ix->slot);
    ix->slot = ns;
    ix->cap = nc;
    return 0;
}

typedef struct {
    uint64_t id;
    int64_t count, fed, first, last;
    uint32_t *names;
    int n_names, cap_names;
    bool persona, excluded;
    int anon; /* user number under --anonymize, 0 = not yet given */
} author_t;

struct dp_prep {
    dp_prep_opts o;
    bool persona_is_id;
    uint64_t persona_id;
    uint64_t *exclude_ids;
    int n_exclude_ids;

    author_t *au;
    size_t n_au, cap_au;
    index_t au_ix;
    char **nm;
    size_t *nm_len, n_nm, cap_nm;
    index_t nm_ix;

    int mode;
    bool resolved, restart;
    int64_t seq, last_t, first_t;
    bool have_stored;
    tl_vec buf; /* undecided / the current newest-first chunk / everything when sorting */
    arena buf_arena;
    FILE *spill;
    struct spill_chunk {
        int64_t off, bytes, n;
    } * chunks;
    size_t n_chunks, cap_chunks;
    dp_buf spill_buf;

    tl_vec sess;
    arena sess_arena;
    int64_t last_fed_t, session_index;
    bool have_fed;

    dp_conv_sink sink;
    void *sink_ctx;
    dp_buf norm, lines, run, conv_text, tmp, extra;
    size_t *line_off;
    size_t n_lines, cap_lines;
    int next_anon;
    uint32_t *mention; /* name indices tried at each '@', longest first */
    size_t n_mention;
    uint64_t *dedupe;
    size_t dedupe_cap, dedupe_n;

    dp_prep_stats st;
    uint32_t *pct[3];
    size_t n_pct, cap_pct;
    char *bad[10];
    int n_bad;
    dp_author_info *info;
    const char **info_names;

    void (*progress)(void *, uint64_t);
    void *progress_ctx;
    uint64_t bytes_done;
};

void dp_prep_opts_default(dp_prep_opts *o) {
    *o = (dp_prep_opts){.gap_seconds = 300, .max_turns = 32, .val_fraction = 0.05, .seed = 0};
}

static bool all_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

static bool parse_id(const char *s, uint64_t *id) {
    if (!all_digits(s) || strlen(s) > 20) return false;
    uint64_t v = 0;
    for (; *s; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *id = v;
    return true;
}

dp_prep *dp_prep_create(const dp_prep_opts *o) {
    dp_prep *p = dp_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->o = *o;
    if (p->o.gap_seconds < 1) p->o.gap_seconds = 1;
    if (p->o.max_turns < 2) p->o.max_turns = 2;
    if (p->o.max_turns > 64) p->o.max_turns = 64; /* conv_parts holds 64 turns + system */
    if (o->persona) p->persona_is_id = parse_id(o->persona, &p->persona_id);
    if (o->n_exclude > 0) {
        p->exclude_ids = dp_calloc((size_t)o->n_exclude, sizeof *p->exclude_ids);
        if (!p->exclude_ids) {
            dp_prep_destroy(p);
            return NULL;
        }
        for (int i = 0; i < o->n_exclude; i++)
            if (parse_id(o->exclude[i], &p->exclude_ids[p->n_exclude_ids])) p->n_exclude_ids++;
    }
    return p;
}

void dp_prep_on_progress(dp_prep *p, void (*fn)(void *, uint64_t), void *ctx) {
    p->progress = fn;
    p->progress_ctx = ctx;
}

static void clear_chunks(dp_prep *p) {
    if (p->spill) fclose(p->spill);
    p->spill = NULL;
    p->n_chunks = 0;
}

void dp_prep_destroy(dp_prep *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_au; i++) free(p->au[i].names);
    free(p->au);
    free(p->au_ix.slot);
    for (size_t i = 0; i < p->n_nm; i++) free(p->nm[i]);
    free(p->nm);
    free(p->nm_len);
    free(p->nm_ix.slot);
    free(p->exclude_ids);
    free(p->buf.v);
    arena_free(&p->buf_arena);
    clear_chunks(p);
    free(p->chunks);
    dp_buf_free(&p->spill_buf);
    free(p->sess.v);
    arena_free(&p->sess_arena);
    dp_buf *bufs[] = {&p->norm, &p->lines, &p->run, &p->conv_text, &p->tmp, &p->extra};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) dp_buf_free(bufs[i]);
    free(p->line_off);
    free(p->mention);
    free(p->dedupe);
    for (int i = 0; i < 3; i++) free(p->pct[i]);
    for (int i = 0; i < p->n_bad; i++) free(p->bad[i]);
    free(p->info);
    free(p->info_names);
    free(p);
}

/* ------------------------------------------------------------------ authors and names */

static uint64_t au_hash(void *ctx, uint32_t i) {
    return dp_hash_u64(((dp_prep *)ctx)->au[i].id);
}

static uint64_t nm_hash(void *ctx, uint32_t i) {
    dp_prep *p = ctx;
    return dp_hash_bytes(p->nm[i], p->nm_len[i], 0);
}

static bool name_matches(const dp_prep *p, uint32_t ni, const char *s) {
    return s && strlen(s) == p->nm_len[ni] && !memcmp(p->nm[ni], s, p->nm_len[ni]);
}

static uint32_t author_get(dp_prep *p, uint64_t id) {
    if (p->au_ix.n * 2 >= p->au_ix.cap && index_grow(&p->au_ix, au_hash, p)) return NONE;
    size_t mask = p->au_ix.cap - 1, j = dp_hash_u64(id) & mask;
    for (; p->au_ix.slot[j] != NONE; j = (j + 1) & mask)
        if (p->au[p->au_ix.slot[j]].id == id) return p->au_ix.slot[j];
    if (p->n_au == p->cap_au) {
        size_t nc = p->cap_au ? p->cap_au * 2 : 64;
        author_t *na = dp_realloc(p->au, nc * sizeof *na);
        if (!na) return NONE;
        p->au = na;
        p->cap_au = nc;
    }
    uint32_t i = (uint32_t)p->n_au++;
    author_t *a = &p->au[i];
    *a = (author_t){.id = id};
    a->persona = p->persona_is_id && id == p->persona_id;
    for (int k = 0; k < p->n_exclude_ids; k++)
        if (p->exclude_ids[k] == id) a->excluded = true;
    p->au_ix.slot[j] = i;
    p->au_ix.n++;
    return i;
}

static uint32_t name_get(dp_prep *p, const char *s, size_t n) {
    if (p->nm_ix.n * 2 >= p->nm_ix.cap && index_grow(&p->nm_ix, nm_hash, p)) return NONE;
    size_t mask = p->nm_ix.cap - 1, j = dp_hash_bytes(s, n, 0) & mask;
    for (; p->nm_ix.slot[j] != NONE; j = (j + 1) & mask) {
        uint32_t k = p->nm_ix.slot[j];
        if (p->nm_len[k] == n && !memcmp(p->nm[k], s, n)) return k;
    }
    if (p->n_nm == p->cap_nm) {
        size_t nc = p->cap_nm ? p->cap_nm * 2 : 64;
        char **a = dp_realloc(p->nm, nc * sizeof *a);
        if (!a) return NONE;
        p->nm = a;
        size_t *b = dp_realloc(p->nm_len, nc * sizeof *b);
        if (!b) return NONE;
        p->nm_len = b;
        p->cap_nm = nc;
    }
    char *c = dp_malloc(n + 1);
    if (!c) return NONE;
    memcpy(c, s, n);
    c[n] = 0;
    uint32_t i = (uint32_t)p->n_nm++;
    p->nm[i] = c;
    p->nm_len[i] = n;
    p->nm_ix.slot[j] = i;
    p->nm_ix.n++;
    return i;
}

/* Records that author a used name ni; a name resolves to every id that used it. */
static int author_add_name(dp_prep *p, author_t *a, uint32_t ni) {
    for (int k = a->n_names - 1; k >= 0; k--)
        if (a->names[k] == ni) return 0;
    if (a->n_names == a->cap_names) {
        int nc = a->cap_names ? a->cap_names * 2 : 2;
        uint32_t *nn = dp_realloc(a->names, (size_t)nc * sizeof *nn);
        if (!nn) return -1;
        a->names = nn;
        a->cap_names = nc;
    }
    a->names[a->n_names++] = ni;
    bool was_persona = a->persona, was_excluded = a->excluded;
    if (name_matches(p, ni, p->o.persona)) a->persona = true;
    for (int k = 0; k < p->o.n_exclude; k++)
        if (name_matches(p, ni, p->o.exclude[k])) a->excluded = true;
    /* messages of this id were already cut into sessions under the old reading */
    if ((a->persona != was_persona || a->excluded != was_excluded) && a->fed > 0 && !p->resolved)
        p->restart = true;
    return 0;
}

/* ------------------------------------------------------------------ conversations */

static int64_t utf8_chars(const char *s, size_t n) {
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int push_pct(dp_prep *p, uint32_t a, uint32_t u, uint32_t turns) {
    if (p->n_pct == p->cap_pct) {
        size_t nc = p->cap_pct ? p->cap_pct * 2 : 1024;
        for (int i = 0; i < 3; i++) {
            uint32_t *n = dp_realloc(p->pct[i], nc * sizeof *n);
            if (!n) return -1;
            p->pct[i] = n;
        }
        p->cap_pct = nc;
    }
    p->pct[0][p->n_pct] = a;
    p->pct[1][p->n_pct] = u;
    p->pct[2][p->n_pct] = turns;
    p->n_pct++;
    return 0;
}

/* True when the conversation was seen before (only with --dedupe). */
static int seen_before(dp_prep *p, const dp_conversation *c, bool *dup) {
    *dup = false;
    if (!p->o.dedupe) return 0;
    uint64_t h = 0x1234567;
    for (int i = 0; i < c->n; i++)
        h = dp_hash_bytes(c->msgs[i].content, c->msgs[i].len, h ^ (uint64_t)c->msgs[i].role);
    if (h == 0) h = 1;
    if (p->dedupe_n * 2 >= p->dedupe_cap) {
        size_t nc = p->dedupe_cap ? p->dedupe_cap * 2 : 1024;
        uint64_t *nd = dp_calloc(nc, sizeof *nd);
        if (!nd) return -1;
        for (size_t i = 0; i < p->dedupe_cap; i++) {
            if (!p->dedupe[i]) continue;
            size_t j = p->dedupe[i] & (nc - 1);
            while (nd[j]) j = (j + 1) & (nc - 1);
            nd[j] = p->dedupe[i];
        }
        free(p->dedupe);
        p->dedupe = nd;
        p->dedupe_cap = nc;
    }
    size_t j = h & (p->dedupe_cap - 1);
    for (; p->dedupe[j]; j = (j + 1) & (p->dedupe_cap - 1))
        if (p->dedupe[j] == h) {
            *dup = true;
            return 0;
        }
    p->dedupe[j] = h;
    p->dedupe_n++;
    return 0;
}

/* Builds a conversation from (role, text) parts kept in p->conv_text and hands it out. */
typedef struct {
    dp_role role[66];
    size_t off[66], len[66];
    int n;
} conv_parts;

static int part_add(dp_prep *p, conv_parts *cp, dp_role role, const char *s, size_t n) {
    cp->role[cp->n] = role;
    cp->off[cp->n] = p->conv_text.len;
    cp->len[cp->n] = n;
    cp->n++;
    if (dp_buf_append(&p->conv_text, s, n) || dp_buf_append(&p->conv_text, "", 1)) return -1;
    return 0;
}

static int emit(dp_prep *p, conv_parts *cp, bool val, int64_t t0, int64_t t1, int persona_msgs) {
    dp_chat_msg msgs[66];
    uint32_t achars = 0, uchars = 0;
    for (int i = 0; i < cp->n; i++) {
        msgs[i] = (dp_chat_msg){cp->role[i], p->conv_text.data + cp->off[i], cp->len[i]};
        uint32_t c = (uint32_t)utf8_chars(msgs[i].content, msgs[i].len);
        if (cp->role[i] == DP_ROLE_ASSISTANT) achars += c;
        if (cp->role[i] == DP_ROLE_USER) uchars += c;
    }
    dp_conversation c = {.msgs = msgs, .n = cp->n};
    bool dup;
    if (seen_before(p, &c, &dup)) return -1;
    if (dup) {
        p->st.dropped_duplicate++;
        return 0;
    }
    char a[48], b[48];
    dp_dce_format_instant(t0, a);
    dp_dce_format_instant(t1, b);
    char num[24];
    int k = 23;
    num[k] = 0;
    uint64_t si = (uint64_t)p->session_index;
    do num[--k] = (char)('0' + si % 10);
    while ((si /= 10) > 0);
    p->extra.len = 0;
    if (dp_buf_puts(&p->extra, "\"session\":") || dp_buf_puts(&p->extra, num + k) ||
        dp_buf_puts(&p->extra, ",\"start\":\"") || dp_buf_puts(&p->extra, a) ||
        dp_buf_puts(&p->extra, "\",\"end\":\"") || dp_buf_puts(&p->extra, b) ||
        dp_buf_puts(&p->extra, "\""))
        return -1;
    c.extra = p->extra.data;
    if (push_pct(p, achars, uchars, (uint32_t)cp->n)) return -1;
    if (val)
        p->st.conv_val++;
    else
        p->st.conv_train++;
    p->st.persona_messages += persona_msgs;
    return p->sink ? p->sink(p->sink_ctx, &c, val) : 0;
}

/* @mentions of other known authors become @userN under --anonymize. */
static int user_number(dp_prep *p, author_t *a) {
    if (!a->anon) a->anon = ++p->next_anon;
    return a->anon;
}

static const char *anon_text(dp_prep *p, const char *s, size_t n, size_t *out_n) {
    if (!p->o.anonymize || !memchr(s, '@', n)) {
        *out_n = n;
        return s;
    }
    p->tmp.len = 0;
    size_t i = 0;
    while (i < n) {
        const char *at = memchr(s + i, '@', n - i);
        size_t upto = at ? (size_t)(at - s) : n;
        dp_buf_append(&p->tmp, s + i, upto - i);
        if (!at) break;
        i = upto + 1;
        bool done = false;
        for (size_t k = 0; k < p->n_mention && !done; k++) {
            uint32_t ni = p->mention[k];
            size_t l = p->nm_len[ni];
            if (l > n - i || memcmp(s + i, p->nm[ni], l)) continue;
            unsigned char next = i + l < n ? (unsigned char)s[i + l] : ' ';
            if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') ||
                (next >= '0' && next <= '9') || next == '_')
                continue;
            /* the author who used this name (the first such id) */
            for (size_t q = 0; q < p->n_au && !done; q++) {
                author_t *a = &p->au[q];
                for (int m = 0; m < a->n_names && !done; m++)
                    if (a->names[m] == ni && !a->persona) {
                        dp_buf_printf(&p->tmp, "@user%d", user_number(p, a));
                        i += l;
                        done = true;
                    }
            }
        }
        if (!done) dp_buf_append(&p->tmp, "@", 1);
    }
    *out_n = p->tmp.len;
    return p->tmp.data ? p->tmp.data : "";
}

/* Appends "[Label]: text" (user) or "text" (assistant) as one line of the session. */
static int add_line(dp_prep *p, const tl_msg *m, bool user) {
    if (p->n_lines == p->cap_lines) {
        size_t nc = p->cap_lines ? p->cap_lines * 2 : 256;
        size_t *no = dp_realloc(p->line_off, (nc + 1) * sizeof *no);
        if (!no) return -1;
        p->line_off = no;
        p->cap_lines = nc;
    }
    if (p->n_lines == 0) p->lines.len = 0;
    p->line_off[p->n_lines] = p->lines.len;
    int rc = 0;
    if (user) { /* the label first: an author is numbered before the people they mention */
        author_t *a = &p->au[m->author];
        if (p->o.anonymize && !a->persona)
            rc = dp_buf_printf(&p->lines, "[user%d]: ", user_number(p, a));
        else
            rc = dp_buf_append(&p->lines, "[", 1) ||
                 dp_buf_append(&p->lines, p->nm[m->name], p->nm_len[m->name]) ||
                 dp_buf_append(&p->lines, "]: ", 3);
    }
    size_t tn;
    const char *t = anon_text(p, m->text, m->len, &tn);
    if (rc || dp_buf_append(&p->lines, t, tn)) return -1;
    p->n_lines++;
    p->line_off[p->n_lines] = p->lines.len;
    return 0;
}

/* lines [a, b) joined with '\n' into p->run */
static int join_lines(dp_prep *p, size_t a, size_t b) {
    p->run.len = 0;
    for (size_t i = a; i < b; i++) {
        if (i > a && dp_buf_append(&p->run, "\n", 1)) return -1;
        if (dp_buf_append(&p->run, p->lines.data + p->line_off[i],
                          p->line_off[i + 1] - p->line_off[i]))
            return -1;
    }
    if (!p->run.data && dp_buf_append(&p->run, "", 0)) return -1;
    return 0;
}

/* Adds lines [a, b) joined with '\n' as one part, straight into p->conv_text. */
static int part_lines(dp_prep *p, conv_parts *cp, dp_role role, size_t a, size_t b) {
    cp->role[cp->n] = role;
    cp->off[cp->n] = p->conv_text.len;
    for (size_t i = a; i < b; i++) {
        if (i > a && dp_buf_append(&p->conv_text, "\n", 1)) return -1;
        if (dp_buf_append(&p->conv_text, p->lines.data + p->line_off[i],
                          p->line_off[i + 1] - p->line_off[i]))
            return -1;
    }
    cp->len[cp->n] = p->conv_text.len - cp->off[cp->n];
    cp->n++;
    return dp_buf_append(&p->conv_text, "", 1);
}

static bool is_persona_msg(const dp_prep *p, const tl_msg *m) {
    return p->au[m->author].persona && !(m->flags & F_SYSTEM);
}

static bool session_is_val(const dp_prep *p) {
    if (p->o.val_fraction <= 0) return false;
    const tl_msg *f = &p->sess.v[0];
    /* a seeded draw per session (the generator's mixer, so a seed keeps its split) */
    uint64_t h = dp_mix64(p->o.seed ^ dp_mix64((uint64_t)f->t ^ dp_mix64(p->au[f->author].id)));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0) < p->o.val_fraction;
}

/* The reply rule: other people's lines accumulate; a persona run closes one sample. */
static int session_reply(dp_prep *p, bool val) {
    int run_msgs = 0;
    int64_t t0 = 0, t1 = 0;
    size_t run_first = 0; /* lines [0, run_first) are context, [run_first, n_lines) the run */
    p->n_lines = 0;
    for (size_t i = 0; i <= p->sess.n; i++) {
        const tl_msg *m = i < p->sess.n ? &p->sess.v[i] : NULL;
        bool persona = m && is_persona_msg(p, m);
        if (run_msgs && !persona) { /* the run ends: one sample, if it had context */
            if (run_first == 0) {
                p->st.persona_runs_no_context++;
            } else {
                size_t a = 0;
                if (p->o.max_context_lines > 0 && run_first > (size_t)p->o.max_context_lines)
                    a = run_first - (size_t)p->o.max_context_lines;
                conv_parts cp;
                cp.n = 0;
                p->conv_text.len = 0;
                if (p->o.system &&
                    part_add(p, &cp, DP_ROLE_SYSTEM, p->o.system, strlen(p->o.system)))
                    return -1;
                if (part_lines(p, &cp, DP_ROLE_USER, a, run_first) ||
                    part_lines(p, &cp, DP_ROLE_ASSISTANT, run_first, p->n_lines))
                    return -1;
                if (p->o.min_reply_chars > 0 && utf8_chars(p->conv_text.data + cp.off[cp.n - 1],
                                                           cp.len[cp.n - 1]) < p->o.min_reply_chars)
                    p->st.dropped_short++;
                else if (emit(p, &cp, val, t0, t1, run_msgs))
                    return -1;
            }
            run_msgs = 0;
            p->n_lines = 0;
        }
        if (!m) break;
        if (p->n_lines == 0) t0 = m->t;
        if (persona) {
            if (!run_msgs) run_first = p->n_lines;
            run_msgs++;
            t1 = m->t;
        }
        if (add_line(p, m, !persona)) return -1;
    }
    if (p->n_lines > 0) p->st.contexts_no_reply++;
    return 0;
}

/* Multi mode: alternating user turns (other people's lines) and assistant turns (persona runs),
 * cut into windows of at most max_turns turns. */
static int session_multi(dp_prep *p, bool val) {
    typedef struct {
        size_t a, b; /* lines [a, b) */
        int64_t t0, t1;
        int msgs;
    } turn;
    size_t cap = p->sess.n + 1, nt = 0;
    turn *tv = dp_malloc(cap * sizeof *tv);
    if (!tv) return -1;
    p->n_lines = 0;
    bool cur_persona = false;
    for (size_t i = 0; i < p->sess.n; i++) {
        const tl_msg *m = &p->sess.v[i];
        bool persona = is_persona_msg(p, m);
        if (nt == 0 || persona != cur_persona) {
            tv[nt++] = (turn){p->n_lines, p->n_lines, m->t, m->t, 0};
            cur_persona = persona;
        }
        if (add_line(p, m, !persona)) goto fail;
        tv[nt - 1].b = p->n_lines;
        tv[nt - 1].t1 = m->t;
        tv[nt - 1].msgs++;
    }
    size_t first = 0;
    if (nt && is_persona_msg(p, &p->sess.v[0])) { /* a leading persona run has no context */
        p->st.persona_runs_no_context++;
        first = 1;
    }
    if (nt > first && (nt - first) % 2 == 1) { /* trailing user lines with no reply */
        p->st.contexts_no_reply++;
        nt--;
    }
    size_t pairs_per = (size_t)p->o.max_turns / 2, k = first;
    while (k + 1 < nt) { /* one window */
        conv_parts cp;
        cp.n = 0;
        p->conv_text.len = 0;
        int persona_msgs = 0;
        int64_t t0 = 0, t1 = 0;
        size_t pairs = 0;
        if (p->o.system && part_add(p, &cp, DP_ROLE_SYSTEM, p->o.system, strlen(p->o.system)))
            goto fail;
        while (k + 1 < nt && pairs < pairs_per) {
            turn *u = &tv[k], *as = &tv[k + 1];
            k += 2;
            if (join_lines(p, as->a, as->b)) goto fail;
            if (p->o.min_reply_chars > 0 &&
                utf8_chars(p->run.data, p->run.len) < p->o.min_reply_chars) {
                p->st.dropped_short++;
                continue;
            }
            size_t a = u->a;
            if (p->o.max_context_lines > 0 && u->b - u->a > (size_t)p->o.max_context_lines)
                a = u->b - (size_t)p->o.max_context_lines;
            if (!pairs) t0 = u->t0;
            if (part_lines(p, &cp, DP_ROLE_USER, a, u->b) ||
                part_lines(p, &cp, DP_ROLE_ASSISTANT, as->a, as->b))
                goto fail;
            persona_msgs += as->msgs;
            t1 = as->t1;
            pairs++;
        }
        if (pairs && emit(p, &cp, val, t0, t1, persona_msgs)) goto fail;
    }
    free(tv);
    return 0;
fail:
    free(tv);
    return -1;
}

static int close_session(dp_prep *p) {
    if (p->sess.n == 0) return 0;
    p->st.sessions++;
    bool val = session_is_val(p);
    int rc = p->o.mode == DP_CHUNK_MULTI ? session_multi(p, val) : session_reply(p, val);
    p->session_index++;
    p->sess.n = 0;
    arena_reset(&p->sess_arena);
    return rc;
}

/* A message in timeline order (layer 3): excluded authors go, gaps cut sessions. */
static int feed(dp_prep *p, const tl_msg *m) {
    author_t *a = &p->au[m->author];
    if (a->excluded) {
        p->st.dropped_excluded++;
        return 0;
    }
    p->st.kept++;
    if (p->have_fed && m->t - p->last_fed_t >= p->o.gap_seconds * DP_TICKS_PER_SECOND)
        if (close_session(p)) return -1;
    p->last_fed_t = m->t;
    p->have_fed = true;
    a->fed++;
    tl_msg c = *m;
    if (!(c.text = arena_put(&p->sess_arena, m->text, m->len))) return -1;
    return vec_push(&p->sess, &c);
}

/* ------------------------------------------------------------------ order (layer 2) */

static int store(dp_prep *p, const tl_msg *m) {
    tl_msg c = *m;
    if (!(c.text = arena_put(&p->buf_arena, m->text, m->len))) return -1;
    return vec_push(&p->buf, &c);
}

static int spill_chunk(dp_prep *p) {
    if (p->buf.n == 0) return 0;
    if (!p->spill && !(p->spill = tmpfile()))
        return dp_fail("cannot create a temporary file for a newest-first export");
    if (p->n_chunks == p->cap_chunks) {
        size_t nc = p->cap_chunks ? p->cap_chunks * 2 : 256;
        struct spill_chunk *n = dp_realloc(p->chunks, nc * sizeof *n);
        if (!n) return -1;
        p->chunks = n;
        p->cap_chunks = nc;
    }
    int64_t off = ftello(p->spill), bytes = 0;
    for (size_t i = 0; i < p->buf.n; i++) {
        tl_msg *m = &p->buf.v[i];
        if (fwrite(m, sizeof *m, 1, p->spill) != 1 ||
            fwrite(m->text, 1, m->len, p->spill) != m->len)
            return dp_fail("cannot write the temporary file (disk full?)");
        bytes += (int64_t)(sizeof *m + m->len);
    }
    p->chunks[p->n_chunks++] = (struct spill_chunk){off, bytes, (int64_t)p->buf.n};
    p->buf.n = 0;
    arena_reset(&p->buf_arena);
    return 0;
}

static int cmp_msg(const void *a, const void *b) {
    const tl_msg *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static int replay_spill(dp_prep *p) {
    for (size_t c = p->n_chunks; c-- > 0;) {
        struct spill_chunk *ch = &p->chunks[c];
        p->spill_buf.len = 0;
        if (dp_buf_append(&p->spill_buf, NULL, 0) || fseeko(p->spill, ch->off, SEEK_SET))
            return dp_fail("cannot read back the temporary file");
        if (p->spill_buf.cap < (size_t)ch->bytes + 1) {
            char *nd = dp_realloc(p->spill_buf.data, (size_t)ch->bytes + 1);
            if (!nd) return -1;
            p->spill_buf.data = nd;
            p->spill_buf.cap = (size_t)ch->bytes + 1;
        }
        if (fread(p->spill_buf.data, 1, (size_t)ch->bytes, p->spill) != (size_t)ch->bytes)
            return dp_fail("cannot read back the temporary file");
        p->buf.n = 0;
        char *q = p->spill_buf.data;
        for (int64_t i = 0; i < ch->n; i++) {
            tl_msg m;
            memcpy(&m, q, sizeof m);
            q += sizeof m;
            m.text = q;
            q += m.len;
            if (vec_push(&p->buf, &m)) return -1;
        }
        /* the texts are not NUL-terminated here: feed copies by length */
        qsort(p->buf.v, p->buf.n, sizeof *p->buf.v, cmp_msg);
        for (size_t i = 0; i < p->buf.n; i++)
            if (feed(p, &p->buf.v[i])) return -1;
    }
    p->buf.n = 0;
    return 0;
}

static int order_push(dp_prep *p, const tl_msg *m) {
    if (p->mode == M_UNDECIDED && p->have_stored && m->t != p->first_t) {
        if (m->t > p->first_t) {
            p->mode = M_FORWARD;
            for (size_t i = 0; i < p->buf.n; i++)
                if (feed(p, &p->buf.v[i])) return -1;
            p->buf.n = 0;
            arena_reset(&p->buf_arena);
        } else {
            p->mode = M_REVERSE;
        }
    }
    int64_t gap = p->o.gap_seconds * DP_TICKS_PER_SECOND;
    switch (p->mode) {
    case M_UNDECIDED:
        if (!p->have_stored) p->first_t = m->t;
        if (store(p, m)) return -1;
        break;
    case M_FORWARD:
        if (m->t < p->last_t) {
            p->restart = true;
            return 0;
        }
        if (feed(p, m)) return -1;
        break;
    case M_REVERSE:
        if (m->t > p->last_t) {
            p->restart = true;
            return 0;
        }
        if (p->last_t - m->t >= gap && spill_chunk(p)) return -1;
        if (store(p, m)) return -1;
        break;
    case M_SORT:
        if (store(p, m)) return -1;
        break;
    }
    p->last_t = m->t;
    p->have_stored = true;
    return 0;
}

/* ------------------------------------------------------------------ ingest (layer 1) */

static bool is_space_at(const unsigned char *s, size_t n, size_t *k) {
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return *k = 1, true;
    if (c == 0xC2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xA0)) return *k = 2, true;
    if (n >= 3 && ((c == 0xE1 && s[1] == 0x9A && s[2] == 0x80) ||
                   (c == 0xE2 && s[1] == 0x80 &&
                    (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) ||
                   (c == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) ||
                   (c == 0xE3 && s[1] == 0x80 && s[2] == 0x80)))
        return *k = 3, true;
    return false;
}

/* Trims Unicode white space at both ends (as Python's str.strip) and turns CRLF into LF. */
static int normalize(dp_prep *p, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, b = n, k;
    while (a < b && is_space_at(u + a, b - a, &k)) a += k;
    while (a < b) { /* trailing: step back over one UTF-8 character */
        size_t st = b - 1;
        while (st > a && (u[st] & 0xC0) == 0x80) st--;
        if (!is_space_at(u + st, b - st, &k) || st + k != b) break;
        b = st;
    }
    p->norm.len = 0;
    if (dp_buf_append(&p->norm, s + a, b - a)) return -1;
    char *d = p->norm.data, *cr = memchr(d, '\r', p->norm.len);
    if (!cr) return 0;
    size_t j = (size_t)(cr - d);
    for (size_t i = j; i < p->norm.len; i++)
        if (!(d[i] == '\r' && i + 1 < p->norm.len && d[i + 1] == '\n')) d[j++] = d[i];
    d[j] = 0;
    p->norm.len = j;
    return 0;
}

static int ingest(dp_prep *p, const dp_dce_msg *m) {
    p->st.rows++;
    uint32_t ai = author_get(p, m->author_id);
    uint32_t ni = ai == NONE ? NONE : name_get(p, m->author, m->author_len);
    if (ni == NONE) return -1;
    author_t *a = &p->au[ai];
    if (a->count == 0 || m->t < a->first) a->first = m->t;
    if (a->count == 0 || m->t > a->last) a->last = m->t;
    a->count++;
    if (author_add_name(p, a, ni)) return -1;
    if (p->mode == M_SCAN) return 0;
    if (m->system && !p->o.keep_system) {
        p->st.dropped_system++;
        return 0;
    }
    if (normalize(p, m->content, m->content_len)) return -1;
    if (p->norm.len == 0) {
        p->st.dropped_empty++;
        return 0;
    }
    if (p->norm.len > UINT32_MAX / 2) return dp_fail("a message longer than 2 GB");
    tl_msg x = {.t = m->t,
                .seq = p->seq++,
                .author = ai,
                .name = ni,
                .len = (uint32_t)p->norm.len,
                .flags = m->system ? F_SYSTEM : 0,
                .text = p->norm.data};
    return order_push(p, &x);
}

static void reset_pass(dp_prep *p, int mode) {
    p->mode = mode;
    p->restart = false;
    p->seq = 0;
    p->have_stored = p->have_fed = false;
    p->buf.n = p->sess.n = 0;
    arena_reset(&p->buf_arena);
    arena_reset(&p->sess_arena);
    clear_chunks(p);
    p->session_index = 0;
    p->next_anon = 0;
    p->dedupe_n = 0;
    if (p->dedupe) memset(p->dedupe, 0, p->dedupe_cap * sizeof *p->dedupe);
    p->n_pct = 0;
    for (size_t i = 0; i < p->n_au; i++) {
        author_t *a = &p->au[i];
        a->count = a->fed = 0;
        a->anon = 0;
    }
    for (int i = 0; i < p->n_bad; i++) free(p->bad[i]);
    p->n_bad = 0;
    p->st = (dp_prep_stats){0};
    p->bytes_done = 0;
}

/* ------------------------------------------------------------------ reader thread
 * Parsing (libcsv, UTF-8 and date checks) runs on a second thread, a few batches ahead of the
 * timeline: the two halves cost about the same, so a second core nearly halves the wall time.
 * Records travel in 1 MiB batches through a ring of four; errors travel as records, since
 * dp_last_error() is per thread. */

enum { R_MSG, R_BAD, R_FATAL, R_FILE_END };
#define BATCH_BYTES (1u << 20)
#define NBATCH      4

typedef struct {
    int64_t t, line;
    uint64_t id, pos; /* pos: bytes of the file consumed (R_FILE_END: the file's size) */
    uint32_t alen, clen;
    uint32_t kind, system;
} rec_hdr; /* then author + NUL, content (or the error message) + NUL, padded to 8 */

typedef struct {
    dp_buf b[NBATCH];
    int head, count;
    bool cancel, done;
    pthread_mutex_t mu;
    pthread_cond_t can_put, can_get;
    const char *const *paths;
    int n;
    double cpu_seconds; /* the reader thread's CPU time */
} prefetch;

static double thread_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int rec_put(dp_buf *b, uint32_t kind, const dp_dce_msg *m, const char *text, uint64_t pos) {
    rec_hdr h = {.pos = pos, .kind = kind};
    const char *author = "";
    size_t tlen = text ? strlen(text) : 0;
    if (m) {
        h.t = m->t;
        h.line = m->line;
        h.id = m->author_id;
        h.alen = (uint32_t)m->author_len;
        h.clen = (uint32_t)m->content_len;
        h.system = m->system;
        author = m->author;
        text = m->content;
        tlen = m->content_len;
        if (m->author_len > UINT32_MAX / 2 || m->content_len > UINT32_MAX / 2)
            return rec_put(b, R_BAD, NULL, "a field longer than 2 GB", pos);
    } else {
        h.clen = (uint32_t)tlen;
    }
    static const char zeros[8] = {0};
    size_t total = sizeof h + h.alen + 1 + tlen + 1;
    if (dp_buf_append(b, &h, sizeof h) || dp_buf_append(b, author, h.alen) ||
        dp_buf_append(b, zeros, 1) || dp_buf_append(b, text ? text : "", tlen) ||
        dp_buf_append(b, zeros, 1) || dp_buf_append(b, zeros, (8 - total % 8) % 8))
        return -1;
    return 0;
}

/* Hands a filled batch to the consumer (swapping buffers, no copy); -1 when cancelled. */
static int batch_push(prefetch *q, dp_buf *cur) {
    pthread_mutex_lock(&q->mu);
    while (q->count == NBATCH && !q->cancel) pthread_cond_wait(&q->can_put, &q->mu);
    int rc = -1;
    if (!q->cancel) {
        int tail = (q->head + q->count) % NBATCH;
        dp_buf t = q->b[tail];
        q->b[tail] = *cur;
        *cur = t;
        cur->len = 0;
        q->count++;
        pthread_cond_signal(&q->can_get);
        rc = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

static void *producer(void *arg) {
    prefetch *q = arg;
    dp_buf cur = {0};
    for (int f = 0; f < q->n; f++) {
        dp_dce_reader *r = dp_dce_open(q->paths[f]);
        if (!r) {
            rec_put(&cur, R_FATAL, NULL, dp_last_error(), 0);
            break;
        }
        dp_dce_msg m;
        int rc;
        bool stop = false;
        while ((rc = dp_dce_next(r, &m)) != DP_DCE_END) {
            uint64_t pos = dp_dce_file_pos(r);
            if (rc == DP_DCE_MSG ? rec_put(&cur, R_MSG, &m, NULL, pos)
                                 : rec_put(&cur, rc == DP_DCE_BAD ? R_BAD : R_FATAL, NULL,
                                           dp_last_error(), pos)) {
                rec_put(&cur, R_FATAL, NULL, "out of memory", pos);
                stop = true;
            }
            if (rc == DP_DCE_FATAL || stop) {
                stop = true;
                break;
            }
            if (cur.len >= BATCH_BYTES && batch_push(q, &cur)) {
                stop = true;
                break;
            }
        }
        if (!stop) rec_put(&cur, R_FILE_END, NULL, NULL, dp_dce_file_size(r));
        dp_dce_close(r);
        if (stop) break;
    }
    if (cur.len) batch_push(q, &cur);
    dp_buf_free(&cur);
    pthread_mutex_lock(&q->mu);
    q->cpu_seconds = thread_cpu_seconds();
    q->done = true;
    pthread_cond_signal(&q->can_get);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Reads every input once; 0, PASS_RESTART, or -1. */
static int read_inputs(dp_prep *p, const char *const *paths, int n) {
    prefetch q = {.paths = paths, .n = n};
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.can_put, NULL);
    pthread_cond_init(&q.can_get, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, producer, &q)) {
        pthread_mutex_destroy(&q.mu);
        pthread_cond_destroy(&q.can_put);
        pthread_cond_destroy(&q.can_get);
        return dp_fail("cannot start the reader thread");
    }
    uint64_t base = 0;
    int64_t count = 0;
    int rc = 0;
    double cpu0 = thread_cpu_seconds();
    for (;;) {
        pthread_mutex_lock(&q.mu);
        while (q.count == 0 && !q.done) pthread_cond_wait(&q.can_get, &q.mu);
        bool end = q.count == 0;
        pthread_mutex_unlock(&q.mu);
        if (end) break;
        dp_buf *b = &q.b[q.head]; /* ours until released below */
        for (size_t off = 0; off < b->len && rc == 0;) {
            rec_hdr h;
            memcpy(&h, b->data + off, sizeof h);
            const char *author = b->data + off + sizeof h, *text = author + h.alen + 1;
            size_t total = sizeof h + h.alen + 1 + h.clen + 1;
            off += total + (8 - total % 8) % 8;
            if (h.kind == R_MSG) {
                dp_dce_msg m = {.author_id = h.id,
                                .author = author,
                                .author_len = h.alen,
                                .content = text,
                                .content_len = h.clen,
                                .t = h.t,
                                .system = h.system,
                                .line = h.line};
                if (ingest(p, &m))
                    rc = -1;
                else if (p->restart)
                    rc = PASS_RESTART;
                else if (p->progress && (++count & 4095) == 0)
                    p->progress(p->progress_ctx, base + h.pos);
            } else if (h.kind == R_BAD && p->o.lenient) {
                p->st.malformed++;
                p->st.rows++;
                if (p->n_bad < 10) p->bad[p->n_bad++] = dp_strdup(text);
            } else if (h.kind == R_BAD || h.kind == R_FATAL) {
                rc = dp_fail("%s", text);
            } else { /* R_FILE_END */
                p->st.files++;
                p->st.input_bytes += (int64_t)h.pos;
                base += h.pos;
                if (p->progress) p->progress(p->progress_ctx, base);
            }
        }
        pthread_mutex_lock(&q.mu);
        q.head = (q.head + 1) % NBATCH;
        q.count--;
        if (rc) q.cancel = true; /* the producer stops at its next batch */
        pthread_cond_broadcast(&q.can_put);
        pthread_mutex_unlock(&q.mu);
        if (rc) break;
    }
    pthread_join(th, NULL);
    p->st.reader_cpu_seconds += q.cpu_seconds;
    p->st.timeline_cpu_seconds += thread_cpu_seconds() - cpu0;
    for (int i = 0; i < NBATCH; i++) dp_buf_free(&q.b[i]);
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.can_put);
    pthread_cond_destroy(&q.can_get);
    return rc;
}

static int cmp_author_activity(const void *a, const void *b) {
    const dp_author_info *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int dp_prep_authors(dp_prep *p, const dp_author_info **list) {
    free(p->info);
    free(p->info_names);
    size_t nn = 0;
    for (size_t i = 0; i < p->n_au; i++) nn += (size_t)p->au[i].n_names;
    p->info = dp_calloc(p->n_au + 1, sizeof *p->info);
    p->info_names = dp_calloc(nn + 1, sizeof *p->info_names);
    if (!p->info || !p->info_names) return -1;
    size_t k = 0, n = 0;
    for (size_t i = 0; i < p->n_au; i++) {
        author_t *a = &p->au[i];
        if (a->count == 0) continue;
        dp_author_info *in = &p->info[n++];
        in->id = a->id;
        in->names = p->info_names + k;
        in->n_names = a->n_names;
        for (int j = 0; j < a->n_names; j++) p->info_names[k++] = p->nm[a->names[j]];
        in->count = a->count;
        in->first = a->first;
        in->last = a->last;
    }
    qsort(p->info, n, sizeof *p->info, cmp_author_activity);
    *list = p->info;
    return (int)n;
}

static int no_messages_error(dp_prep *p, const char *const *paths, int n) {
    if (p->st.malformed > 0)
        return dp_fail("%s%s: every one of the %lld records is malformed (first: %s)", paths[0],
                       n > 1 ? " ..." : "", (long long)p->st.malformed, p->n_bad ? p->bad[0] : "?");
    return dp_fail("%s%s: the export has no messages (only a header); check the channel and "
                   "the date range used when exporting",
                   paths[0], n > 1 ? " ..." : "");
}

int dp_prep_scan_authors(dp_prep *p, const char *const *paths, int n) {
    reset_pass(p, M_SCAN);
    int rc = read_inputs(p, paths, n);
    if (rc < 0) return -1;
    if (p->st.rows - p->st.malformed == 0) return no_messages_error(p, paths, n);
    return 0;
}

static int persona_missing(dp_prep *p) {
    const dp_author_info *list;
    int n = dp_prep_authors(p, &list);
    if (n < 0) return -1;
    dp_buf b = {0};
    dp_buf_printf(&b, "persona \"%s\" not found among the %d authors; the most active:",
                  p->o.persona ? p->o.persona : "", n);
    for (int i = 0; i < n && i < 10; i++) {
        dp_buf_printf(&b, "\n  %20llu  %6lld messages  ", (unsigned long long)list[i].id,
                      (long long)list[i].count);
        for (int j = 0; j < list[i].n_names; j++)
            dp_buf_printf(&b, "%s%s", j ? ", " : "", list[i].names[j]);
    }
    dp_buf_puts(&b,
                "\n(pass --persona NAME or --persona ID; `doppel prep --list-authors` lists all)");
    dp_fail("%s", b.data ? b.data : "persona not found");
    dp_buf_free(&b);
    return -1;
}

/* k-th smallest (0-based) by quickselect: the order of v is changed */
static uint32_t select_kth(uint32_t *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t pivot = v[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                uint32_t t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    return v[k];
}

static void percentiles(uint32_t *v, size_t n, double out[4]) {
    if (n == 0) {
        out[0] = out[1] = out[2] = out[3] = 0;
        return;
    }
    const double q[4] = {0.50, 0.90, 0.99, 1.0};
    for (int i = 0; i < 4; i++) out[i] = select_kth(v, n, (size_t)(q[i] * (double)(n - 1) + 0.5));
}

static int cmp_mention(const void *a, const void *b) { /* longest name first */
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

static int main_pass(dp_prep *p, const char *const *paths, int n, int mode) {
    reset_pass(p, mode);
    int rc = read_inputs(p, paths, n);
    if (rc) return rc;
    if (p->st.rows - p->st.malformed == 0) return no_messages_error(p, paths, n);
    size_t np = 0;
    for (size_t i = 0; i < p->n_au; i++) np += p->au[i].persona && p->au[i].count > 0;
    p->st.persona_ids = (int64_t)np;
    if (np == 0) return persona_missing(p);
    double cpu0 = thread_cpu_seconds();
    switch (p->mode) {
    case M_UNDECIDED: /* at most one distinct instant */
        p->st.order = "time order (streamed)";
        for (size_t i = 0; i < p->buf.n; i++)
            if (feed(p, &p->buf.v[i])) return -1;
        break;
    case M_FORWARD:
        p->st.order = "time order (streamed)";
        break;
    case M_REVERSE:
        p->st.order = "newest first (streamed backwards through a temporary file)";
        if (spill_chunk(p) || replay_spill(p)) return -1;
        break;
    case M_SORT:
        p->st.order = "not in time order (sorted in memory)";
        qsort(p->buf.v, p->buf.n, sizeof *p->buf.v, cmp_msg);
        for (size_t i = 0; i < p->buf.n; i++)
            if (feed(p, &p->buf.v[i])) return -1;
        break;
    }
    if (close_session(p)) return -1;
    p->st.timeline_cpu_seconds += thread_cpu_seconds() - cpu0;
    percentiles(p->pct[0], p->n_pct, p->st.assistant_chars);
    percentiles(p->pct[1], p->n_pct, p->st.user_chars);
    percentiles(p->pct[2], p->n_pct, p->st.turns);
    return 0;
}

int dp_prep_run(dp_prep *p, const char *const *paths, int n, dp_conv_sink sink, dp_conv_reset reset,
                void *ctx) {
    if (!p->o.persona || !*p->o.persona) return dp_fail("no persona given (--persona NAME_OR_ID)");
    p->sink = sink;
    p->sink_ctx = ctx;
    p->resolved = false;
    if (p->o.anonymize) {
        /* every author's names must be known before the first @mention is rewritten */
        if (dp_prep_scan_authors(p, paths, n)) return -1;
        p->resolved = true;
        free(p->mention);
        p->n_mention = 0;
        p->mention = dp_malloc((p->n_nm + 1) * sizeof *p->mention);
        if (!p->mention) return -1;
        /* (length << 32 | index), sorted descending: longest names are tried first */
        uint64_t *key = dp_malloc((p->n_nm + 1) * sizeof *key);
        if (!key) return -1;
        for (size_t i = 0; i < p->n_nm; i++) key[i] = (uint64_t)p->nm_len[i] << 32 | i;
        qsort(key, p->n_nm, sizeof *key, cmp_mention);
        for (size_t i = 0; i < p->n_nm; i++) p->mention[p->n_mention++] = (uint32_t)key[i];
        free(key);
    }
    int rc = main_pass(p, paths, n, p->o.force_sort ? M_SORT : M_UNDECIDED);
    if (rc == PASS_RESTART) {
        if (reset && reset(ctx)) return -1;
        rc = main_pass(p, paths, n, M_SORT);
        p->st.restarts = 1;
    }
    return rc ? -1 : 0;
}

const dp_prep_stats *dp_prep_get_stats(const dp_prep *p) {
    return &p->st;
}

int dp_prep_malformed_examples(const dp_prep *p, const char *const **list) {
    *list = (const char *const *)p->bad;
    return p->n_bad;
}
