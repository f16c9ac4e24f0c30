/* deny: refuse requests that carry a given header, with a local 403.
 *
 * root_id "deny". Configuration: the header name to deny on (default "x-deny"). A request with
 * it gets 403, body "denied by wasm\n", header "x-denied-by: wasm", details "denied by header";
 * the filter logs "deny: <path>" at WARN. Others pass untouched. Every response, the local
 * reply included, is logged at INFO as "deny: response <status> n=<headers> eos=<0/1>"; an
 * upstream response carrying the header is replaced by a local 502 "upstream denied\n". */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

static char *header_name;

EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root_id, uint32_t size) {
  size_t len;
  header_name = read_buffer(PLUGIN_CONFIGURATION, size, &len);
  if (len == 0) header_name = "x-deny";
  return 1;
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  char *value = get_header(REQUEST_HEADERS, header_name);
  if (!value) return CONTINUE;
  free(value);
  char *path = get_header(REQUEST_HEADERS, ":path");
  char msg[256];
  snprintf(msg, sizeof msg, "deny: %s", path ? path : "?");
  log_str(LOG_WARN, msg);
  free(path);
  const char *kv[] = {"x-denied-by", "wasm"};
  size_t hlen;
  char *hdrs = pairs(kv, 1, &hlen);
  const char *details = "denied by header", *body = "denied by wasm\n";
  proxy_send_local_response(403, details, strlen(details), body, strlen(body), hdrs, hlen, -1);
  free(hdrs);
  return PAUSE;
}

/* The local reply runs through this filter's response side too (Envoy's filter manager). An
 * upstream response carrying the configured header is replaced by a local 502. */
EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  char *status = get_header(RESPONSE_HEADERS, ":status");
  char msg[64];
  snprintf(msg, sizeof msg, "deny: response %s n=%u eos=%u", status ? status : "-", n, end_of_stream);
  log_str(LOG_INFO, msg);
  free(status);
  char *value = get_header(RESPONSE_HEADERS, header_name);
  if (!value) return CONTINUE;
  free(value);
  const char *body = "upstream denied\n";
  proxy_send_local_response(502, "upstream denied", 15, body, strlen(body), NULL, 0, -1);
  return PAUSE;
}
