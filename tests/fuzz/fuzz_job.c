/* libFuzzer target for a queued job's text, as the daemon takes it from a stream entry: parsed as a
 * DistillJob (core/format/textformat.c) and checked by dd_job_validate (core/train/job_validate.c),
 * with and without a device registry. Whatever the input: 0 or an error code of core/base/dd_error.h
 * with a non-empty message, never a crash, a leak (ASan) or undefined behaviour (UBSan). Paths the
 * job names are only stat()ed, so arbitrary names are harmless.
 *
 * Build: CC=clang cmake -DDD_FUZZ=ON -DDD_SANITIZE=ON; run:
 *   ./fuzz_job -max_total_time=60 -max_len=4096 SCRATCH_DIR tests/fuzz/corpus/job */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "devices/devices.h"
#include "distill.pb-c.h"
#include "format/textformat.h"
#include "train/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_job: %s: %s\n", what, detail ? detail : "");
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  Distilld__DistillJob *job = NULL;
  err[0] = '\0';
  int r = dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, (const char *)data, size,
                        "job", err, sizeof err);
  if (r) {
    if (job) fail("a job after a parse error", err);
    if (!err[0]) fail("a parse error without a message", NULL);
    return 0;
  }
  for (int k = 0; k < 2; k++) {
    err[0] = '\0';
    r = dd_job_validate(job, NULL, k ? dd_devices_builtin() : NULL, err, sizeof err);
    if (r && !err[0]) fail("a refusal without a message", NULL);
    if (r && (r > 0 || !strcmp(dd_strerror(r), "unknown error"))) fail("an error code outside dd_error.h", err);
  }
  distilld__distill_job__free_unpacked(job, NULL);
  return 0;
}
