/* doppel serve's request side without a model: the OpenAI body parser (fields, errors naming
 * them, the group-chat mapping that prep's format fixes), \u0000 refusal, stop-string scanning
 * for streams, OpenAI's penalties and logprobs against values computed by hand / in double. */
#include "check.h"
#include "infer/server_request.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static int parse(const char *body, dp_chat_request *r, dp_api_error *e) {
    return dp_chat_request_parse(body, strlen(body), r, e);
}

/* a body that must be refused with this status and param */
static void expect_error(const char *body, int status, const char *param) {
    dp_chat_request r;
    dp_api_error e = {0};
    int rc = parse(body, &r, &e);
    CHECK_REPORT(rc == -1, "accepted: %s", body);
    if (rc) {
        CHECK_REPORT(e.status == status && !strcmp(e.param, param),
                     "%s\n  expected %d param '%s', got %d param '%s' (%s)", body, status, param,
                     e.status, e.param, e.message);
        CHECK(e.message[0] && e.type);
    } else {
        dp_chat_request_free(&r);
    }
}

static void test_fields(void) {
    dp_chat_request r;
    dp_api_error e;
    const char *body =
        "{\"model\":\"kaiaku\",\"messages\":[{\"role\":\"system\",\"content\":\"be kaiaku\"},"
        "{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0.5,\"top_p\":0.8,"
        "\"max_tokens\":7,\"max_completion_tokens\":9,\"stop\":[\"\\n\\n\",\"END\"],\"seed\":42,"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-1,\"top_k\":5,\"min_p\":0.1,"
        "\"repeat_penalty\":1.2,\"logprobs\":true,\"top_logprobs\":3,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u1\",\"unknown\":[1,2]}";
    CHECK_EQ_INT(0, parse(body, &r, &e));
    CHECK_EQ_STR("kaiaku", r.model);
    CHECK_EQ_INT(2, r.n_msgs);
    CHECK(r.has_system);
    CHECK_NEAR(0.5, r.temperature, 0, 0);
    CHECK_NEAR(0.8, r.top_p, 1e-7, 0);
    CHECK_EQ_INT(9, r.max_tokens); /* max_completion_tokens wins */
    CHECK_EQ_INT(2, r.n_stop);
    CHECK_EQ_STR("\n\n", r.stop[0]);
    CHECK(r.has_seed && r.seed == 42);
    CHECK_NEAR(0.5, r.presence_penalty, 0, 0);
    CHECK_NEAR(-1, r.frequency_penalty, 0, 0);
    CHECK_EQ_INT(5, r.top_k);
    CHECK_NEAR(0.1, r.min_p, 1e-7, 0);
    CHECK_NEAR(1.2, r.repeat_penalty, 1e-6, 0);
    CHECK(r.logprobs && r.top_logprobs == 3 && r.stream && r.include_usage);
    dp_chat_request_free(&r);

    /* defaults: NAN / -1 for the server to fill; a single stop string */
    CHECK_EQ_INT(0, parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                          "\"stop\":\"bye\",\"max_tokens\":null}",
                          &r, &e));
    CHECK(isnan(r.temperature) && r.top_k == -1 && r.max_tokens == -1 && !r.has_seed);
    CHECK(!r.stream && !r.logprobs && !r.has_system);
    CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "bye"));
    dp_chat_request_free(&r);
}

/* the group chat: `name` -> `[name]: `, a run of user messages -> one user turn of lines joined
 * with "\n", exactly as tests/fixtures/sample-export.expected.jsonl shows prep writing them */
static void test_group_chat(void) {
    dp_chat_request r;
    dp_api_error e;
    const char *body =
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"user\",\"name\":\"Ana\",\"content\":\"anyone up?\"},"
        "{\"role\":\"user\",\"name\":\"Bo\",\"content\":\"me\\nsort of\"},"
        "{\"role\":\"assistant\",\"content\":\"yo\"},"
        "{\"role\":\"user\",\"content\":\"plain\"},"
        "{\"role\":\"user\",\"name\":\"Ana\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"text\",\"text\":\"b\"}]}]}";
    CHECK_EQ_INT(0, parse(body, &r, &e));
    CHECK_EQ_INT(3, r.n_msgs);
    if (r.n_msgs == 3) {
        CHECK(r.msgs[0].role == DP_ROLE_USER && r.msgs[1].role == DP_ROLE_ASSISTANT &&
              r.msgs[2].role == DP_ROLE_USER);
        CHECK_EQ_STR("[Ana]: anyone up?\n[Bo]: me\nsort of", r.msgs[0].content);
        CHECK_EQ_INT(strlen(r.msgs[0].content), r.msgs[0].len);
        CHECK_EQ_STR("yo", r.msgs[1].content);
        CHECK_EQ_STR("plain\n[Ana]: a\nb", r.msgs[2].content);
    }
    dp_chat_request_free(&r);
}

static void test_errors(void) {
    expect_error("", 400, "");
    expect_error("[1]", 400, "");
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}", 400, "");
    expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "model");
    expect_error("{\"model\":3,\"messages\":[]}", 400, "model");
    expect_error("{\"model\":\"m\"}", 400, "messages");
    expect_error("{\"model\":\"m\",\"messages\":[]}", 400, "messages");
    expect_error("{\"model\":\"m\",\"messages\":[3]}", 400, "messages[0]");
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                 "{\"role\":\"tool\",\"content\":\"x\"}]}",
                 400, "messages[1].role");
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400,
                 "messages[0].content");
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                 "\"image_url\"}]}]}",
                 400, "messages[0].content[0]");
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"name\":\"a\\nb\","
                 "\"content\":\"x\"}]}",
                 400, "messages[0].name");
    const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char b[512];
#define FIELD(json, param)                                                                         \
    snprintf(b, sizeof b, "{\"model\":\"m\",%s,%s}", msgs, json);                                  \
    expect_error(b, 400, param);
    FIELD("\"temperature\":\"hot\"", "temperature")
    FIELD("\"temperature\":3", "temperature")
    FIELD("\"top_p\":0", "top_p")
    FIELD("\"max_tokens\":0", "max_tokens")
    FIELD("\"max_tokens\":1.5", "max_tokens")
    FIELD("\"max_completion_tokens\":-4", "max_completion_tokens")
    FIELD("\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop")
    FIELD("\"stop\":[\"a\",7]", "stop[1]")
    FIELD("\"stop\":{}", "stop")
    FIELD("\"seed\":\"x\"", "seed")
    FIELD("\"presence_penalty\":2.5", "presence_penalty")
    FIELD("\"top_k\":-1", "top_k")
    FIELD("\"min_p\":2", "min_p")
    FIELD("\"repeat_penalty\":0", "repeat_penalty")
    FIELD("\"logprobs\":1", "logprobs")
    FIELD("\"top_logprobs\":21,\"logprobs\":true", "top_logprobs")
    FIELD("\"top_logprobs\":2", "top_logprobs")
    FIELD("\"stream\":\"yes\"", "stream")
    FIELD("\"stream_options\":{\"include_usage\":1}", "stream_options.include_usage")
    FIELD("\"n\":2", "n")
    FIELD("\"tools\":[{\"type\":\"function\"}]", "tools")
#undef FIELD
}

/* \u0000 would cut a C string silently: refused, naming the field; a raw NUL byte too; an
 * escaped backslash before u0000 is ordinary text */
static void test_nul(void) {
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"ok\"},"
                 "{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}",
                 400, "messages[1].content");
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"name\":\"x\\u0000\","
                 "\"content\":\"a\"}]}",
                 400, "messages[0].name");
    expect_error("{\"model\":\"m\\u0000x\",\"messages\":[]}", 400, "model");
    expect_error("{\"model\":\"m\",\"stop\":[\"a\",\"\\u0000\"],\"messages\":[{\"role\":\"user\","
                 "\"content\":\"a\"}]}",
                 400, "stop[1]");
    const char raw[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}]}";
    dp_chat_request r;
    dp_api_error e;
    CHECK_EQ_INT(-1, dp_chat_request_parse(raw, sizeof raw - 1, &r, &e));
    CHECK_EQ_INT(0, parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                          "\"a\\\\u0000b\"}]}",
                          &r, &e));
    if (r.n_msgs) CHECK_EQ_STR("a\\u0000b", r.msgs[0].content);
    dp_chat_request_free(&r);
    /* invalid UTF-8 in a string */
    expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", 400,
                 "messages[0].content");
}

static void test_stop_scan(void) {
    char *stops[] = {"END", "\n\n"};
    bool hit;
    /* a stop string inside: cut there */
    CHECK_EQ_INT(6, dp_stop_scan("hello END more", 14, 0, stops, 2, &hit));
    CHECK(hit);
    /* a tail that may grow into "END" is held back */
    CHECK_EQ_INT(6, dp_stop_scan("hello EN", 8, 0, stops, 2, &hit));
    CHECK(!hit);
    CHECK_EQ_INT(6, dp_stop_scan("hello E", 7, 0, stops, 2, &hit));
    CHECK_EQ_INT(5, dp_stop_scan("hello\n", 6, 0, stops, 2, &hit));
    /* nothing held when no stop can start: everything goes */
    CHECK_EQ_INT(8, dp_stop_scan("hello Ex", 8, 0, stops, 2, &hit));
    CHECK(!hit);
    /* the earliest of two stops wins; the search starts at `from` */
    CHECK_EQ_INT(1, dp_stop_scan("a\n\nEND", 6, 0, stops, 2, &hit));
    CHECK(hit);
    CHECK_EQ_INT(4, dp_stop_scan("abcdEND", 7, 4, stops, 2, &hit));
    CHECK(hit);
    CHECK_EQ_INT(3, dp_stop_scan("abc", 3, 0, NULL, 0, &hit));
    /* never split a UTF-8 character: "é" (C3 A9) then a held "E" */
    char *multi[] = {"\xc3\xa9X"};
    CHECK_EQ_INT(1, dp_stop_scan("a\xc3\xa9", 3, 0, multi, 1, &hit));
    CHECK(!hit);
}

/* OpenAI's rule: logit -= count * frequency + (count > 0) * presence, checked against counts
 * taken by a plain double loop */
static void test_penalties(void) {
    enum { V = 6 };
    float logits[V] = {1, 2, 3, -1, 0.5f, 4}, ref[V];
    const int32_t gen[] = {2, 5, 2, 2, 0, 7 /* out of range: ignored */, -1};
    const int n = 7;
    const float presence = 0.25f, frequency = 0.5f;
    for (int v = 0; v < V; v++) {
        int c = 0;
        for (int i = 0; i < n; i++) c += gen[i] == v;
        ref[v] = (float)(logits[v] - (double)c * frequency - (c > 0 ? presence : 0.0));
    }
    uint8_t seen[V] = {0};
    dp_apply_openai_penalties(logits, V, gen, n, presence, frequency, seen);
    check_arrays_near("openai penalties", ref, logits, V, 1e-6, 0);
    int dirty = 0;
    for (int v = 0; v < V; v++) dirty += seen[v];
    CHECK_EQ_INT(0, dirty); /* the scratch is left zeroed */
}

/* log-softmax at temperature 1 against the closed form for logits (1, 2, 3, 3): with
 * Z = e + e^2 + 2e^3, log p(3) = 3 - log Z; ties keep the lower id first */
static void test_logprobs(void) {
    const float logits[] = {1, 2, 3, 3, 99 /* beyond n_valid: never counted */};
    double Z = exp(1.0) + exp(2.0) + 2 * exp(3.0);
    float lp, top[3];
    int32_t ids[3];
    int k = dp_logprobs(logits, 4, 1, &lp, 3, ids, top);
    CHECK_EQ_INT(3, k);
    CHECK_NEAR(2 - log(Z), lp, 1e-6, 0);
    CHECK(ids[0] == 2 && ids[1] == 3 && ids[2] == 1);
    CHECK_NEAR(3 - log(Z), top[0], 1e-6, 0);
    CHECK_NEAR(3 - log(Z), top[1], 1e-6, 0);
    CHECK_NEAR(2 - log(Z), top[2], 1e-6, 0);
    CHECK_EQ_INT(0, dp_logprobs(logits, 4, 0, &lp, 0, ids, top));
    CHECK_NEAR(1 - log(Z), lp, 1e-6, 0);
}

int main(void) {
    test_fields();
    test_group_chat();
    test_errors();
    test_nul();
    test_stop_scan();
    test_penalties();
    test_logprobs();
    return check_done();
}
