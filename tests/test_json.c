/* data/base/json: strings holding NUL are kept whole (with their length) or refused naming
 * FILE:LINE, never cut; the dataset and DCE JSON readers refuse them; the string writers.
 * Expected bytes are written out by hand from RFC 8259's escapes and UTF-8. */
#include "check.h"
#include "data/base/error.h"
#include "data/base/json.h"
#include "data/dataset.h"
#include "data/dce.h"
#include "infer/config.h"
#include "infer/generate.h"
#include "infer/safetensors.h"

#include <unistd.h>

static bool bytes_are(const cJSON *item, const char *want, size_t want_len) {
    size_t n = 0;
    const char *b = dp_json_bytes(item, &n);
    return b && n == want_len && !memcmp(b, want, n);
}

#define BYTES_ARE(item, lit) bytes_are((item), (lit), sizeof(lit) - 1)

static void test_keep(void) {
    const char *text =
        "{\"a\":\"x\\u0000y\",\"b\":[\"\\u0000\",{\"c\":\"ok\"}],\"d\":\"\\\\u0000\","
        "\"e\":\"\\uD83D\\uDE00\\u0000\\u00e9\\n\\\"\\\\\\/\\b\\f\\r\\t\"}";
    cJSON *j = NULL;
    CHECK_EQ_INT(0, dp_json_parse(text, strlen(text), DP_JSON_KEEP_NUL, "t", 1, &j));
    CHECK(j != NULL);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "b");
    CHECK(BYTES_ARE(cJSON_GetObjectItemCaseSensitive(j, "a"), "x\0y"));
    CHECK(BYTES_ARE(cJSON_GetArrayItem(b, 0), "\0"));
    CHECK(BYTES_ARE(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(b, 1), "c"), "ok"));
    /* an escaped backslash before "u0000" is six plain characters */
    CHECK(BYTES_ARE(cJSON_GetObjectItemCaseSensitive(j, "d"), "\\u0000"));
    CHECK(BYTES_ARE(cJSON_GetObjectItemCaseSensitive(j, "e"),
                    "\xF0\x9F\x98\x80\0\xC3\xA9\n\"\\/\b\f\r\t"));
    size_t n = 99;
    CHECK(dp_json_bytes(b, &n) == NULL); /* not a string */
    cJSON_Delete(j);

    /* a raw 0 byte inside a string (invalid JSON, but cJSON takes it): kept too */
    const char raw[] = "{\"t\":\"p\0q\"}";
    CHECK_EQ_INT(0, dp_json_parse(raw, sizeof raw - 1, DP_JSON_KEEP_NUL, "t", 1, &j));
    CHECK(BYTES_ARE(cJSON_GetObjectItemCaseSensitive(j, "t"), "p\0q"));
    cJSON_Delete(j);

    /* no NUL: the plain cJSON tree, strings read by strlen */
    CHECK_EQ_INT(0, dp_json_parse("[\"abc\"]", 7, DP_JSON_KEEP_NUL, "t", 1, &j));
    CHECK(BYTES_ARE(cJSON_GetArrayItem(j, 0), "abc"));
    cJSON_Delete(j);

    /* not JSON: no tree and no failure; the caller words the error */
    j = (cJSON *)1;
    CHECK_EQ_INT(0, dp_json_parse("{oops", 5, DP_JSON_KEEP_NUL, "t", 1, &j));
    CHECK(j == NULL);
}

static void test_refuse(void) {
    /* the line of the string holding the NUL, counted from first_line */
    const char *text =
        "{\"a\":\"fine\",\n \"b\":\"also\\\\u0000 fine\",\n\n \"c\":\"cut\\u0000here\"}";
    cJSON *j = (cJSON *)1;
    CHECK_EQ_INT(-1, dp_json_parse(text, strlen(text), DP_JSON_REFUSE_NUL, "x.json", 10, &j));
    CHECK(j == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "x.json:13: a JSON string holds a NUL character") != NULL,
                 "message: %s", dp_last_error());
    /* an object key holding NUL is refused even when values may keep theirs */
    const char *key = "{\"text\":\"a\",\n\"te\\u0000xt\":\"b\"}";
    CHECK_EQ_INT(-1, dp_json_parse(key, strlen(key), DP_JSON_KEEP_NUL, "k", 1, &j));
    CHECK_REPORT(strstr(dp_last_error(), "k:2: a JSON object key holds a NUL") != NULL,
                 "message: %s", dp_last_error());
    /* without a NUL, refusing mode parses as usual */
    CHECK_EQ_INT(0, dp_json_parse(text, 20, DP_JSON_REFUSE_NUL, "x.json", 1, &j));
    CHECK(j == NULL); /* 20 bytes are not a whole object */
    CHECK_EQ_INT(0, dp_json_parse("{\"a\":\"\\\\u0000\"}", 15, DP_JSON_REFUSE_NUL, "x", 1, &j));
    CHECK(j && BYTES_ARE(cJSON_GetObjectItemCaseSensitive(j, "a"), "\\u0000"));
    cJSON_Delete(j);
}

static void test_writers(void) {
    dp_buf b = {0};
    CHECK_EQ_INT(0, dp_json_append_string(&b, "a\0b\"\\\n\x1f\xC3\xA9", 9));
    CHECK(b.len == 24 && !memcmp(b.data, "\"a\\u0000b\\\"\\\\\\n\\u001f\xC3\xA9\"", 24));
    /* and back, byte for byte */
    cJSON *j;
    CHECK_EQ_INT(0, dp_json_parse(b.data, b.len, DP_JSON_KEEP_NUL, "w", 1, &j));
    CHECK(j && BYTES_ARE(j, "a\0b\"\\\n\x1f\xC3\xA9"));
    cJSON_Delete(j);
    /* a token's bytes for people: fragments of a character as \xNN */
    b.len = 0;
    CHECK_EQ_INT(0, dp_json_append_piece(&b, "\xE2\x82", 2));
    CHECK_EQ_INT(0, dp_buf_append(&b, "", 1));
    CHECK_EQ_STR("\"\\xE2\\x82\"", b.data);
    b.len = 0;
    CHECK_EQ_INT(0, dp_json_append_piece(&b, "\xAC \xE2\x82\xAC\"\n\0\x7F", 9));
    CHECK_EQ_INT(0, dp_buf_append(&b, "", 1));
    CHECK_EQ_STR("\"\\xAC \xE2\x82\xAC\\\"\\n\\u0000\\u007F\"", b.data);
    dp_buf_free(&b);
}

/* A dataset line holding \u0000 fails naming FILE:LINE instead of training on cut text. */
static void test_dataset(void) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/doppel-test-json-%d.jsonl", (int)getpid());
    const char *data = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n\n"
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}\n";
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(data, f);
    fclose(f);
    dp_dataset_reader *r = dp_dataset_open(path);
    CHECK(r != NULL);
    dp_conversation c;
    CHECK_EQ_INT(1, dp_dataset_next(r, &c));
    CHECK_EQ_INT(-1, dp_dataset_next(r, &c));
    char want[300];
    snprintf(want, sizeof want, "%s:3: a JSON string holds a NUL character", path);
    CHECK_REPORT(strstr(dp_last_error(), want) != NULL, "message: %s", dp_last_error());
    dp_dataset_close(r);
    unlink(path);
}

/* A DCE JSON message holding \u0000 is a bad record named by the line of the string; the
 * reader goes on to the next message (prep's leniency can skip and count it). */
static void test_dce_json(void) {
    const char *json =
        "{\"messages\":[\n"
        "{\"timestamp\":\"2025-03-01T10:00:00Z\",\n"
        "\"content\":\"before\\u0000after\",\"author\":{\"id\":\"1\",\"name\":\"a\"}},\n"
        "{\"timestamp\":\"2025-03-01T10:00:01Z\",\"content\":\"next\",\"author\":{\"id\":\"2\","
        "\"name\":\"b\"}}]}";
    dp_dce_reader *r = dp_dce_open_mem("export.json", json, strlen(json));
    CHECK(r != NULL);
    if (!r) return;
    dp_dce_msg m;
    CHECK_EQ_INT(DP_DCE_BAD, dp_dce_next(r, &m));
    CHECK_REPORT(strstr(dp_last_error(), "export.json:3: a JSON string holds a NUL") != NULL,
                 "message: %s", dp_last_error());
    CHECK_EQ_INT(DP_DCE_MSG, dp_dce_next(r, &m));
    CHECK(m.content_len == 4 && !memcmp(m.content, "next", 4));
    CHECK_EQ_INT(DP_DCE_END, dp_dce_next(r, &m));
    dp_dce_close(r);
}

/* The other readers of JSON text refuse a NUL too, naming where: a model config, a chat
 * session (/load), a safetensors header (a tensor name cut at its NUL could alias another). */
static void test_other_readers(void) {
    dp_model_config cfg;
    const char *config = "{\"model_type\": \"llama\",\n \"name\": \"a\\u0000b\"}";
    CHECK_EQ_INT(-1, dp_config_from_json(&cfg, config, strlen(config), "config.json"));
    CHECK_REPORT(strstr(dp_last_error(), "config.json:2: a JSON string holds a NUL") != NULL,
                 "message: %s", dp_last_error());

    char path[256];
    snprintf(path, sizeof path, "/tmp/doppel-test-json-%d.session", (int)getpid());
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs("{\"system\": null, \"messages\": [{\"role\": \"user\", \"content\": \"hi\\u0000\"}]}",
              f);
        fclose(f);
        dp_session s;
        dp_session_init(&s, NULL);
        CHECK_EQ_INT(-1, dp_session_load(&s, path));
        CHECK_REPORT(strstr(dp_last_error(), ":1: a JSON string holds a NUL") != NULL,
                     "message: %s", dp_last_error());
        dp_session_free(&s);
        unlink(path);
    }

    /* {"a\u0000x": F32 [1] at 0..4} with 4 data bytes */
    const char *hdr = "{\"a\\u0000x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    size_t hn = strlen(hdr);
    unsigned char buf[256] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((hn >> (8 * i)) & 0xff);
    memcpy(buf + 8, hdr, hn);
    CHECK(dp_safetensors_open_memory(buf, 8 + hn + 4, "hostile.safetensors") == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "hostile.safetensors:1: a JSON string holds a NUL") != NULL,
                 "message: %s", dp_last_error());
}

/* the path of the first string holding a NUL, as doppel serve's 400s name the field */
static void test_find_nul_path(void) {
    char path[96];
    const struct {
        const char *text, *path; /* NULL: none */
    } cases[] = {
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"},{\"name\":\"x\\u0000\"}]}",
         "messages[1].name"},
        {"{\"stop\":[\"a\",\"\\u0000\"]}", "stop[1]"},
        {"{\"a\":{\"k\\u0000\":1}}", "a.k\\u0000"}, /* the key itself */
        {"{\"a\":\"\\\\u0000\",\"b\":[[1],{\"c\":\"d\"}]}", NULL}, /* an escaped backslash */
        {"{\"x\":[{\"y\":1},{\"z\":[\"\",\"a\\u0000\"]}]}", "x[1].z[1]"},
        {"[\"fine\"]", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool found = dp_json_find_nul(cases[i].text, strlen(cases[i].text), path, sizeof path);
        CHECK_REPORT(found == (cases[i].path != NULL), "case %zu: found %d", i, found);
        if (found && cases[i].path) CHECK_EQ_STR(cases[i].path, path);
    }
    /* a raw 0 byte inside a string counts too; 70 levels deep is scanned (path cut there) */
    const char raw[] = "{\"a\":\"x\0y\"}";
    CHECK(dp_json_find_nul(raw, sizeof raw - 1, path, sizeof path));
    CHECK_EQ_STR("a", path);
    char deep[400];
    size_t n = 0;
    for (int i = 0; i < 70; i++) deep[n++] = '[';
    n += (size_t)sprintf(deep + n, "\"\\u0000\"");
    for (int i = 0; i < 70; i++) deep[n++] = ']';
    CHECK(dp_json_find_nul(deep, n, path, sizeof path));
    CHECK(dp_json_find_nul(raw, sizeof raw - 1, NULL, 0)); /* no room for a path: none written */
}

int main(void) {
    test_keep();
    test_refuse();
    test_find_nul_path();
    test_writers();
    test_dataset();
    test_dce_json();
    test_other_readers();
    return check_done();
}
