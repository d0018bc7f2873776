/* Device names (see device.h). */
#include "base/device.h"

#include <string.h>

#include "base/dd_error.h"

int dd_device_parse(const char *name, int *kind, int *index, const char *what, char *err, size_t errlen) {
  int k = DD_DEVICE_CPU, n = 0;
  if (name && name[0] && strcmp(name, "cpu")) {
    const char *e = name + 5;
    size_t len = strlen(e);
    if (strncmp(name, "cuda:", 5) || len == 0 || len > 3 || strspn(e, "0123456789") != len)
      return dd_errorf(DD_EINVAL, err, errlen, "%s: \"%s\": expected \"cpu\" or \"cuda:N\" with N a device number",
                       what, name);
    k = DD_DEVICE_CUDA;
    for (; *e; e++) n = n * 10 + (*e - '0');
  }
  if (kind) *kind = k;
  if (index) *index = n;
  return 0;
}
