/* counter: count requests in a metric and tell the client the count.
 *
 * root_id "counter". Defines counter "requests_total" (Envoy shows it as
 * wasmcustom.requests_total) and gauge "last_status"; each request increments the counter, each
 * response sets the gauge to its status and gets "x-request-count: <counter>". */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

IMPORT(proxy_get_metric) uint32_t proxy_get_metric(uint32_t id, uint64_t *value);
IMPORT(proxy_record_metric) uint32_t proxy_record_metric(uint32_t id, uint64_t value);

static uint32_t requests, last_status;

EXPORT(proxy_on_vm_start) uint32_t proxy_on_vm_start(uint32_t root_id, uint32_t size) {
  proxy_define_metric(METRIC_COUNTER, "requests_total", 14, &requests);
  proxy_define_metric(METRIC_GAUGE, "last_status", 11, &last_status);
  return 1;
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  proxy_increment_metric(requests, 1);
  return CONTINUE;
}

EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  char *status = get_header(RESPONSE_HEADERS, ":status");
  if (status) proxy_record_metric(last_status, (uint64_t)atoi(status));
  free(status);
  uint64_t count = 0;
  proxy_get_metric(requests, &count);
  char value[24];
  snprintf(value, sizeof value, "%llu", (unsigned long long)count);
  proxy_add_header_map_value(RESPONSE_HEADERS, "x-request-count", 15, value, strlen(value));
  char msg[64];
  snprintf(msg, sizeof msg, "counter: request %s", value);
  log_str(LOG_INFO, msg);
  return CONTINUE;
}
