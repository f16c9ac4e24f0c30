/* callout: ask an HTTP service before letting a request through.
 *
 * root_id "callout". Configuration: the cluster to call (default "auth"). Each request pauses
 * while GET /check (with the request's x-user header, if any) goes to that cluster; on a 200
 * the request continues with "x-auth: <response body>" added, on any other status the client
 * gets a local 403 "forbidden\n", and if the call fails a local 503 (a timeout is an answer:
 * Envoy's 504). Each answer is logged with its status and sizes. Responses are delivered to
 * the root context; the filter switches to the stream with proxy_set_effective_context. */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

static char *cluster;
#define MAX_CALLS 64
static uint32_t tokens[MAX_CALLS], contexts[MAX_CALLS];

EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root_id, uint32_t size) {
  size_t len;
  cluster = read_buffer(PLUGIN_CONFIGURATION, size, &len);
  if (len == 0) cluster = "auth";
  return 1;
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  char *user = get_header(REQUEST_HEADERS, "x-user");
  const char *kv[] = {":method", "GET", ":path", "/check", ":authority", cluster, "x-user", user ? user : ""};
  size_t hlen;
  char *hdrs = pairs(kv, user ? 4 : 3, &hlen);
  uint32_t token = 0;
  uint32_t rc = proxy_http_call(cluster, strlen(cluster), hdrs, hlen, NULL, 0, NULL, 0, 1000, &token);
  free(hdrs);
  free(user);
  if (rc != OK) {
    log_str(LOG_ERROR, "callout: dispatch failed");
    return CONTINUE;
  }
  for (int i = 0; i < MAX_CALLS; i++)
    if (!tokens[i]) {
      tokens[i] = token;
      contexts[i] = id;
      break;
    }
  log_str(LOG_INFO, "callout: waiting");
  return PAUSE;
}

static void local(uint32_t status, const char *body) {
  proxy_send_local_response(status, "callout", 7, body, strlen(body), NULL, 0, -1);
}

EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t root, uint32_t token, uint32_t nh, uint32_t body_size, uint32_t nt) {
  uint32_t ctx = 0;
  for (int i = 0; i < MAX_CALLS; i++)
    if (tokens[i] == token) {
      ctx = contexts[i];
      tokens[i] = 0;
    }
  if (!ctx) return;
  proxy_set_effective_context(ctx);
  if (nh == 0) {
    log_str(LOG_WARN, "callout: call failed");
    local(503, "auth unavailable\n");
    return;
  }
  char *status = get_header(HTTP_CALL_RESPONSE_HEADERS, ":status");
  int ok = status && strcmp(status, "200") == 0;
  char line[96];
  snprintf(line, sizeof line, "callout: answer %s, %u header(s), %u body byte(s)", status ? status : "-", nh, body_size);
  log_str(LOG_INFO, line);
  free(status);
  if (!ok) {
    log_str(LOG_INFO, "callout: denied");
    local(403, "forbidden\n");
    return;
  }
  char *body = read_buffer(HTTP_CALL_RESPONSE_BODY, body_size, NULL);
  proxy_add_header_map_value(REQUEST_HEADERS, "x-auth", 6, body, strlen(body));
  free(body);
  log_str(LOG_INFO, "callout: allowed");
  proxy_continue_stream(STREAM_REQUEST);
}
