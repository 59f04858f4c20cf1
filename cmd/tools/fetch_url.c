/* fetch_url: a doppel chat tool. HTTP(S) GET through libcurl; text only (text/any, JSON, XML,
 * JavaScript in UTF-8), redirects followed within http/https. Limits from the environment:
 * DOPPEL_FETCH_MAX_BYTES (default 262144: a bigger body is cut there) and
 * DOPPEL_FETCH_TIMEOUT seconds (default 15). */
#define _GNU_SOURCE /* strcasestr */
#include "data/base/utf8.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    char *data;
    size_t len, max;
    int cut;
} body;

static size_t on_data(char *p, size_t size, size_t n, void *ctx) {
    body *b = ctx;
    size_t len = size * n, take = len;
    if (b->len + take > b->max) {
        take = b->max - b->len;
        b->cut = 1;
    }
    memcpy(b->data + b->len, p, take);
    b->len += take;
    return b->cut ? 0 : len; /* 0 stops the transfer: enough */
}

/* text/..., application/json, application/xml, ...+json, ...+xml, javascript */
static int text_type(const char *ct) {
    if (!ct) return 0;
    char t[128];
    size_t n = strcspn(ct, ";");
    if (n >= sizeof t) return 0;
    memcpy(t, ct, n);
    t[n] = 0;
    while (n && t[n - 1] == ' ') t[--n] = 0;
    if (!strncasecmp(t, "text/", 5)) return 1;
    const char *ok[] = {"application/json", "application/xml", "application/javascript",
                        "application/x-javascript", "application/ecmascript"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!strcasecmp(t, ok[i])) return 1;
    return n > 5 && (!strcasecmp(t + n - 5, "+json") || !strcasecmp(t + n - 4, "+xml"));
}

/* a charset other than UTF-8 (or its ASCII subset) is refused rather than shown garbled */
static int utf8_charset(const char *ct) {
    const char *cs = ct ? strcasestr(ct, "charset=") : NULL;
    if (!cs) return 1;
    cs += 8;
    if (*cs == '"') cs++;
    return !strncasecmp(cs, "utf-8", 5) || !strncasecmp(cs, "utf8", 4) ||
           !strncasecmp(cs, "us-ascii", 8) || !strncasecmp(cs, "ascii", 5);
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--describe")) {
        puts("downloads a web page or text file (http or https): FETCH_URL url");
        return 0;
    }
    if (argc != 2 || !argv[1][0]) {
        fprintf(stderr, "fetch_url: expected one argument, an http:// or https:// URL\n");
        return 2;
    }
    const char *url = argv[1];
    if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8)) {
        fprintf(stderr, "fetch_url: %s: only http:// and https:// URLs can be fetched\n", url);
        return 2;
    }
    long max = 262144, timeout = 15;
    const char *e = getenv("DOPPEL_FETCH_MAX_BYTES");
    if (e && atol(e) > 0) max = atol(e);
    e = getenv("DOPPEL_FETCH_TIMEOUT");
    if (e && atol(e) > 0) timeout = atol(e);

    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "fetch_url: libcurl could not start\n");
        return 1;
    }
    CURL *c = curl_easy_init();
    body b = {malloc((size_t)max + 1), 0, (size_t)max, 0};
    if (!c || !b.data) {
        fprintf(stderr, "fetch_url: out of memory\n");
        return 1;
    }
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, timeout < 10 ? timeout : 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "doppel-fetch_url/1");
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* gzip etc., decoded by curl */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    int ret = 0;
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && b.cut)) {
        fprintf(stderr, "fetch_url: %s: %s\n", url, err[0] ? err : curl_easy_strerror(rc));
        ret = 1;
    } else if (status >= 400) {
        fprintf(stderr, "fetch_url: %s: HTTP status %ld\n", url, status);
        ret = 1;
    } else if (!text_type(ct) || !utf8_charset(ct)) {
        fprintf(stderr,
                "fetch_url: %s: not text (Content-Type: %s); only UTF-8 text, JSON and "
                "XML are fetched\n",
                url, ct ? ct : "none");
        ret = 1;
    } else {
        size_t shown = b.len, valid = dp_utf8_valid_prefix(b.data, b.len);
        if (b.cut && b.len - valid < 4) shown = valid; /* a character cut by the cap */
        if (memchr(b.data, 0, shown) || dp_utf8_valid_prefix(b.data, shown) != shown) {
            fprintf(stderr, "fetch_url: %s: the body is not UTF-8 text\n", url);
            ret = 1;
        } else {
            fwrite(b.data, 1, shown, stdout);
            if (b.cut) printf("\n[fetch_url: cut at %zu bytes]\n", shown);
        }
    }
    free(b.data);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    return ret;
}
