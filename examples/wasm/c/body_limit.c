/* body_limit: refuse request bodies larger than a limit with a local 413.
 *
 * root_id "body_limit". Configuration: the limit in bytes (default 16). The body is buffered
 * (PAUSE) until the end of the stream; once it exceeds the limit the client gets 413 "payload too
 * large\n" from the body callback, and the request never reaches the upstream. Logs the body size
 * seen at each callback at DEBUG and the refusal at WARN. */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

static long limit = 16;

EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root_id, uint32_t size) {
  size_t len;
  char *conf = read_buffer(PLUGIN_CONFIGURATION, size, &len);
  if (len) limit = atol(conf);
  free(conf);
  return 1;
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

EXPORT(proxy_on_request_body) uint32_t proxy_on_request_body(uint32_t id, uint32_t size, uint32_t eos) {
  char msg[64];
  snprintf(msg, sizeof msg, "body_limit: %u bytes eos=%u", size, eos);
  log_str(LOG_DEBUG, msg);
  if ((long)size > limit) {
    log_str(LOG_WARN, "body_limit: too large");
    const char *body = "payload too large\n";
    proxy_send_local_response(413, "body limit", 10, body, strlen(body), NULL, 0, -1);
    return PAUSE;
  }
  return eos ? CONTINUE : PAUSE;
}

EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  char *status = get_header(RESPONSE_HEADERS, ":status");
  char msg[64];
  snprintf(msg, sizeof msg, "body_limit: response %s", status ? status : "-");
  log_str(LOG_INFO, msg);
  free(status);
  return CONTINUE;
}
