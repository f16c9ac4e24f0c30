/* add_header: add response headers given in the plugin configuration.
 *
 * root_id "add_header". Configuration: one header per line, "name: value" (names lowercased
 * by Envoy); an empty configuration adds nothing. Logs "add_header: <n> header(s)" at INFO on
 * configure, and each added header at DEBUG. */
#include "proxy_wasm.h"

PROXY_ABI_VERSION_0_2_1

#define MAX_HEADERS 16
static char *names[MAX_HEADERS], *values[MAX_HEADERS];
static int count;

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
  return s;
}

EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root_id, uint32_t size) {
  char *conf = read_buffer(PLUGIN_CONFIGURATION, size, NULL);
  count = 0;
  for (char *line = strtok(conf, "\n"); line && count < MAX_HEADERS; line = strtok(NULL, "\n")) {
    char *colon = strchr(line, ':');
    if (!colon) continue;
    *colon = 0;
    names[count] = strdup(trim(line));
    values[count] = strdup(trim(colon + 1));
    if (*names[count]) count++;
  }
  free(conf);
  char msg[64];
  snprintf(msg, sizeof msg, "add_header: %d header(s)", count);
  log_str(LOG_INFO, msg);
  return 1;
}

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t n, uint32_t end_of_stream) {
  for (int i = 0; i < count; i++) {
    proxy_add_header_map_value(RESPONSE_HEADERS, names[i], strlen(names[i]), values[i], strlen(values[i]));
    char msg[160];
    snprintf(msg, sizeof msg, "added %s", names[i]);
    log_str(LOG_DEBUG, msg);
  }
  return CONTINUE;
}
