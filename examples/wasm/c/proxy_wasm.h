/* The raw Proxy-Wasm ABI (0.2.1) for envoykit's C example filters: host imports, callback
 * export helper, and a few small helpers. Numbers are the spec's (proxy-wasm/spec
 * abi-versions/v0.2.1). Build: clang --target=wasm32-wasi -mexec-model=reactor (see
 * envoykit.wasmbuild.build). */
#pragma once
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CRITICAL };
enum { OK = 0, NOT_FOUND = 1 };
enum { CONTINUE = 0, PAUSE = 1 };
enum { REQUEST_HEADERS = 0, REQUEST_TRAILERS = 1, RESPONSE_HEADERS = 2, RESPONSE_TRAILERS = 3,
       HTTP_CALL_RESPONSE_HEADERS = 6 };
enum { REQUEST_BODY = 0, RESPONSE_BODY = 1, HTTP_CALL_RESPONSE_BODY = 4, VM_CONFIGURATION = 6,
       PLUGIN_CONFIGURATION = 7 };
enum { STREAM_REQUEST = 0, STREAM_RESPONSE = 1 };
enum { METRIC_COUNTER = 0, METRIC_GAUGE = 1, METRIC_HISTOGRAM = 2 };

IMPORT(proxy_log) uint32_t proxy_log(uint32_t level, const char *msg, size_t size);
IMPORT(proxy_get_buffer_bytes)
uint32_t proxy_get_buffer_bytes(uint32_t type, uint32_t start, uint32_t max, char **ptr, size_t *size);
IMPORT(proxy_add_header_map_value)
uint32_t proxy_add_header_map_value(uint32_t map, const char *k, size_t ks, const char *v, size_t vs);
IMPORT(proxy_replace_header_map_value)
uint32_t proxy_replace_header_map_value(uint32_t map, const char *k, size_t ks, const char *v, size_t vs);
IMPORT(proxy_get_header_map_value)
uint32_t proxy_get_header_map_value(uint32_t map, const char *k, size_t ks, char **v, size_t *vs);
IMPORT(proxy_send_local_response)
uint32_t proxy_send_local_response(uint32_t status, const char *details, size_t ds, const char *body,
                                   size_t bs, const char *headers, size_t hs, int32_t grpc_status);
IMPORT(proxy_define_metric)
uint32_t proxy_define_metric(uint32_t type, const char *name, size_t size, uint32_t *id);
IMPORT(proxy_increment_metric) uint32_t proxy_increment_metric(uint32_t id, int64_t delta);
IMPORT(proxy_http_call)
uint32_t proxy_http_call(const char *up, size_t us, const char *hdrs, size_t hs, const char *body,
                         size_t bs, const char *trl, size_t ts, uint32_t timeout_ms, uint32_t *token);
IMPORT(proxy_continue_stream) uint32_t proxy_continue_stream(uint32_t stream_type);
IMPORT(proxy_set_effective_context) uint32_t proxy_set_effective_context(uint32_t context_id);
IMPORT(proxy_get_shared_data)
uint32_t proxy_get_shared_data(const char *k, size_t ks, char **v, size_t *vs, uint32_t *cas);
IMPORT(proxy_set_shared_data)
uint32_t proxy_set_shared_data(const char *k, size_t ks, const char *v, size_t vs, uint32_t cas);

/* Every module names its ABI version with an empty exported function. */
#define PROXY_ABI_VERSION_0_2_1 \
  EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

static inline void log_str(uint32_t level, const char *s) { proxy_log(level, s, strlen(s)); }

/* Read a whole buffer (configuration, body...) into a NUL-terminated malloc'd string; "" if empty. */
static inline char *read_buffer(uint32_t type, size_t size, size_t *out_len) {
  char *ptr = NULL;
  size_t len = 0;
  if (proxy_get_buffer_bytes(type, 0, size, &ptr, &len) != OK || ptr == NULL) len = 0;
  char *s = malloc(len + 1);
  if (len) memcpy(s, ptr, len);
  s[len] = 0;
  free(ptr);
  if (out_len) *out_len = len;
  return s;
}

/* Serialize n header pairs (Proxy-Wasm pairs format) into a malloc'd buffer; *len gets its size. */
static inline char *pairs(const char **kv, int n, size_t *len) {
  size_t size = 4 + 8 * n;
  for (int i = 0; i < 2 * n; i++) size += strlen(kv[i]) + 1;
  char *buf = malloc(size), *p = buf + 4 + 8 * n;
  uint32_t *head = (uint32_t *)buf;
  head[0] = n;
  for (int i = 0; i < n; i++) {
    size_t k = strlen(kv[2 * i]), v = strlen(kv[2 * i + 1]);
    head[1 + 2 * i] = k;
    head[2 + 2 * i] = v;
    memcpy(p, kv[2 * i], k + 1);
    p += k + 1;
    memcpy(p, kv[2 * i + 1], v + 1);
    p += v + 1;
  }
  *len = size;
  return buf;
}

/* The first value of a header as a NUL-terminated malloc'd string, or NULL if absent. */
static inline char *get_header(uint32_t map, const char *name) {
  char *ptr = NULL;
  size_t len = 0;
  if (proxy_get_header_map_value(map, name, strlen(name), &ptr, &len) != OK) return NULL;
  char *s = malloc(len + 1);
  if (len) memcpy(s, ptr, len);
  s[len] = 0;
  free(ptr);
  return s;
}
