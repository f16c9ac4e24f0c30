/* inspect: log everything the filter can see, and upper-case request bodies.
 *
 * root_id "inspect". Logs (INFO) every request and response header pair, the maps' byte sizes,
 * properties (plugin_root_id, request.path), the end-of-stream flags, the body once buffered
 * (the filter PAUSEs body callbacks until the end of the stream), and the order of the end of
 * stream callbacks (on_log with the final :status, on_done, on_delete). The request body is
 * upper-cased in place (same length). On response headers it also writes a line to stdout and
 * one to stderr (WASI). Used by the differential tests to pin Envoy's exact maps. */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

IMPORT(proxy_get_header_map_pairs) uint32_t proxy_get_header_map_pairs(uint32_t map, char **ptr, size_t *size);
IMPORT(proxy_get_header_map_size) uint32_t proxy_get_header_map_size(uint32_t map, uint32_t *size);
IMPORT(proxy_get_property) uint32_t proxy_get_property(const char *p, size_t ps, char **v, size_t *vs);
IMPORT(proxy_set_buffer_bytes)
uint32_t proxy_set_buffer_bytes(uint32_t type, uint32_t start, uint32_t size, const char *d, size_t ds);

static void logf_(const char *fmt, const char *a, const char *b) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, a, b);
  log_str(LOG_INFO, msg);
}

static void log_map(uint32_t map, const char *tag) {
  char *buf = NULL;
  size_t len = 0;
  proxy_get_header_map_pairs(map, &buf, &len);
  if (len >= 4) {
    uint32_t n = *(uint32_t *)buf;
    char *p = buf + 4 + 8 * n;
    for (uint32_t i = 0; i < n; i++) {
      uint32_t k = ((uint32_t *)buf)[1 + 2 * i], v = ((uint32_t *)buf)[2 + 2 * i];
      char line[512];
      snprintf(line, sizeof line, "%s %.*s=%.*s", tag, (int)k, p, (int)v, p + k + 1);
      log_str(LOG_INFO, line);
      p += k + v + 2;
    }
  }
  free(buf);
  uint32_t size = 0;
  uint32_t rc = proxy_get_header_map_size(map, &size);
  char line[64];
  snprintf(line, sizeof line, "%s size=%u rc=%u", tag, size, rc);
  log_str(LOG_INFO, line);
}

static void log_property(const char *path, size_t path_len, const char *label) {
  char *v = NULL;
  size_t vs = 0;
  uint32_t rc = proxy_get_property(path, path_len, &v, &vs);
  char line[256];
  snprintf(line, sizeof line, "property %s rc=%u value=%.*s", label, rc, (int)vs, v ? v : "");
  log_str(LOG_INFO, line);
  free(v);
}

/* Binary properties (integers are 8 bytes little-endian in Envoy): log them as hex. */
static void log_property_hex(const char *path, size_t path_len, const char *label) {
  char *v = NULL;
  size_t vs = 0;
  uint32_t rc = proxy_get_property(path, path_len, &v, &vs);
  char line[256];
  int n = snprintf(line, sizeof line, "property %s rc=%u size=%zu hex=", label, rc, vs);
  for (size_t i = 0; i < vs && n < (int)sizeof line - 3; i++) n += snprintf(line + n, sizeof line - n, "%02x", (unsigned char)v[i]);
  log_str(LOG_INFO, line);
  free(v);
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {
  char line[64];
  snprintf(line, sizeof line, "create %u parent %u", id, parent);
  log_str(LOG_INFO, line);
}

EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t id, uint32_t n, uint32_t eos) {
  char line[64];
  snprintf(line, sizeof line, "request headers n=%u eos=%u", n, eos);
  log_str(LOG_INFO, line);
  log_map(REQUEST_HEADERS, "req");
  log_property("plugin_root_id", 14, "plugin_root_id");
  log_property("plugin_name", 11, "plugin_name");
  log_property("plugin_vm_id", 12, "plugin_vm_id");
  log_property("request\0path", 12, "request.path");
  log_property("request\0url_path", 16, "request.url_path");
  log_property("request\0query", 13, "request.query");
  log_property("request\0method", 14, "request.method");
  log_property("request\0host", 12, "request.host");
  log_property("request\0scheme", 14, "request.scheme");
  log_property("request\0useragent", 17, "request.useragent");
  log_property("request\0protocol", 16, "request.protocol");
  log_property("request\0headers\0x-r", 19, "request.headers.x-r");
  log_property("no_such_attribute", 17, "no_such_attribute");
  return CONTINUE;
}

EXPORT(proxy_on_request_body) uint32_t proxy_on_request_body(uint32_t id, uint32_t size, uint32_t eos) {
  char line[64];
  snprintf(line, sizeof line, "request body size=%u eos=%u", size, eos);
  log_str(LOG_INFO, line);
  if (!eos) return PAUSE;
  size_t len;
  char *body = read_buffer(REQUEST_BODY, size, &len);
  logf_("request body %s%s", body, "");
  for (size_t i = 0; i < len; i++)
    if (body[i] >= 'a' && body[i] <= 'z') body[i] -= 32;
  proxy_set_buffer_bytes(REQUEST_BODY, 0, len, body, len);
  free(body);
  return CONTINUE;
}

EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t n, uint32_t eos) {
  char line[64];
  snprintf(line, sizeof line, "response headers n=%u eos=%u", n, eos);
  log_str(LOG_INFO, line);
  log_map(RESPONSE_HEADERS, "resp");
  log_property_hex("response\0code", 13, "response.code");
  log_property("request\0path", 12, "request.path (response side)");
  /* stdout and stderr go through WASI fd_write: Envoy logs them at INFO and ERROR. */
  printf("inspect: stdout says %u headers\n", n);
  fflush(stdout);
  fprintf(stderr, "inspect: stderr line\n");
  /* Request headers are gone once the request went upstream (Envoy getMap returns null). */
  uint32_t size = 0;
  snprintf(line, sizeof line, "request headers now rc=%u", proxy_get_header_map_size(REQUEST_HEADERS, &size));
  log_str(LOG_INFO, line);
  return CONTINUE;
}

EXPORT(proxy_on_response_body) uint32_t proxy_on_response_body(uint32_t id, uint32_t size, uint32_t eos) {
  char line[64];
  snprintf(line, sizeof line, "response body size=%u eos=%u", size, eos);
  log_str(LOG_INFO, line);
  return eos ? CONTINUE : PAUSE;
}

EXPORT(proxy_on_log) void proxy_on_log(uint32_t id) {
  char *status = get_header(RESPONSE_HEADERS, ":status");
  uint32_t rc = proxy_add_header_map_value(RESPONSE_HEADERS, "x-late", 6, "1", 1);
  char line[96];
  snprintf(line, sizeof line, "log status=%s add_rc=%u", status ? status : "-", rc);
  log_str(LOG_INFO, line);
  free(status);
  log_property("request\0path", 12, "request.path (log)");
  log_property_hex("response\0code", 13, "response.code (log)");
}

EXPORT(proxy_on_done) uint32_t proxy_on_done(uint32_t id) {
  log_str(LOG_INFO, "done");
  return 1;
}

EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t id) { log_str(LOG_INFO, "delete"); }
