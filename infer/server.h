/* doppel serve's HTTP side on libmicrohttpd (one thread per connection): routing, API keys,
 * body limits, the OpenAI chat-completions responses (JSON and SSE), /v1/models, /health,
 * /metrics, /tokenize and the page at /. Connection threads only parse, render, submit to the
 * engine and stream what its scheduler produces. */
#ifndef DOPPEL_SERVER_H
#define DOPPEL_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "infer/server_engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *host;            /* address to bind ("127.0.0.1", "::1", "0.0.0.0") */
    int port;                    /* 0 = any free port (dp_server_port says which) */
    const char *const *api_keys; /* accepted `Authorization: Bearer KEY`s; none = no check */
    int n_api_keys;
    size_t max_body; /* request bodies beyond this get 413 */
    int timeout_s;   /* an idle or stalled client is dropped after this */
    int max_connections;
} dp_http_config;

typedef struct dp_server dp_server;

/* Binds and starts serving: /health answers 503 until dp_server_set_engine. NULL with
 * dp_last_error() (address in use, bad host). */
dp_server *dp_server_start(const dp_http_config *cfg);
int dp_server_port(const dp_server *s);
/* The engine is loaded: requests are served from now on (the server borrows it). */
void dp_server_set_engine(dp_server *s, dp_engine *e);
/* New requests get 503 from now on (the engine is draining). */
void dp_server_begin_drain(dp_server *s);
/* Closes every connection and joins their threads; call before freeing the engine. */
void dp_server_stop(dp_server *s);

#ifdef __cplusplus
}
#endif
#endif
