/* shared_state: count hits in shared data (compare-and-swap) and report them.
 *
 * root_id "shared_state". Each request increments the shared-data key "hits" (a decimal string)
 * with a CAS retry loop; each response gets "x-hits: <value>". State is shared by every VM with
 * the same vm_id, across worker threads. */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

enum { CAS_MISMATCH = 8 };

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

static long read_hits(uint32_t *cas) {
  char *ptr = NULL;
  size_t len = 0;
  *cas = 0;
  if (proxy_get_shared_data("hits", 4, &ptr, &len, cas) != OK) return 0;
  char buf[24] = {0};
  memcpy(buf, ptr, len < 23 ? len : 23);
  free(ptr);
  return atol(buf);
}

EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  for (int attempt = 0; attempt < 10; attempt++) {
    uint32_t cas;
    long hits = read_hits(&cas) + 1;
    char value[24];
    snprintf(value, sizeof value, "%ld", hits);
    if (proxy_set_shared_data("hits", 4, value, strlen(value), cas) != CAS_MISMATCH) break;
  }
  return CONTINUE;
}

EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  uint32_t cas;
  char value[24];
  snprintf(value, sizeof value, "%ld", read_hits(&cas));
  proxy_add_header_map_value(RESPONSE_HEADERS, "x-hits", 6, value, strlen(value));
  return CONTINUE;
}
