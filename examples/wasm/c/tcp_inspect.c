/* tcp_inspect: a network (TCP) filter that logs every callback and upper-cases client data.
 *
 * root_id "tcp_inspect". Logs (INFO) the new connection, each downstream and upstream data
 * callback with its size, end-of-stream flag and bytes, the connection-close callbacks with the
 * peer type, and on_done / on_log / on_delete. Client bytes are upper-cased in place. */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

enum { DOWNSTREAM_DATA = 2, UPSTREAM_DATA = 3 };

IMPORT(proxy_set_buffer_bytes)
uint32_t proxy_set_buffer_bytes(uint32_t type, uint32_t start, uint32_t size, const char *d, size_t ds);

static void log_data(const char *tag, uint32_t type, uint32_t size, uint32_t eos, int upper) {
  size_t len;
  char *data = read_buffer(type, size, &len);
  char line[256];
  snprintf(line, sizeof line, "%s size=%u eos=%u data=%.*s", tag, size, eos, (int)len, data);
  for (char *p = line; *p; p++)
    if (*p == '\n') *p = '|';
  log_str(LOG_INFO, line);
  if (upper && len) {
    for (size_t i = 0; i < len; i++)
      if (data[i] >= 'a' && data[i] <= 'z') data[i] -= 32;
    proxy_set_buffer_bytes(type, 0, len, data, len);
  }
  free(data);
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

EXPORT(proxy_on_new_connection) uint32_t proxy_on_new_connection(uint32_t id) {
  log_str(LOG_INFO, "new connection");
  return CONTINUE;
}

EXPORT(proxy_on_downstream_data) uint32_t proxy_on_downstream_data(uint32_t id, uint32_t size, uint32_t eos) {
  log_data("downstream", DOWNSTREAM_DATA, size, eos, 1);
  return CONTINUE;
}

EXPORT(proxy_on_upstream_data) uint32_t proxy_on_upstream_data(uint32_t id, uint32_t size, uint32_t eos) {
  log_data("upstream", UPSTREAM_DATA, size, eos, 0);
  return CONTINUE;
}

static void log_peer(const char *tag, uint32_t peer) {
  char line[64];
  snprintf(line, sizeof line, "%s close peer=%u", tag, peer);
  log_str(LOG_INFO, line);
}

EXPORT(proxy_on_downstream_connection_close) void proxy_on_downstream_connection_close(uint32_t id, uint32_t peer) {
  log_peer("downstream", peer);
}

EXPORT(proxy_on_upstream_connection_close) void proxy_on_upstream_connection_close(uint32_t id, uint32_t peer) {
  log_peer("upstream", peer);
}

EXPORT(proxy_on_done) uint32_t proxy_on_done(uint32_t id) {
  log_str(LOG_INFO, "done");
  return 1;
}

EXPORT(proxy_on_log) void proxy_on_log(uint32_t id) { log_str(LOG_INFO, "log"); }

EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t id) { log_str(LOG_INFO, "delete"); }
