/* The daemon's log (service/log.h). */
#include "service/log.h"

#include <stdarg.h>
#include <stdio.h>

static int g_log_level = 2, g_journal;

void dlog_setup(int level, int journal) {
  g_log_level = level;
  g_journal = journal;
}

void dlog(int level, const char *job, const char *fmt, ...) {
  if (level > g_log_level) return;
  static const char *names[] = {"error", "warning", "info", "debug"};
  static const int prio[] = {3, 4, 6, 7};
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* journald reads "<N>" as the priority; a terminal gets the level as a word */
  if (g_journal)
    fprintf(stderr, "<%d>%s%s%s%s\n", prio[level], job ? "job " : "", job ? job : "", job ? ": " : "", msg);
  else
    fprintf(stderr, "distilld: %s: %s%s%s%s\n", names[level], job ? "job " : "", job ? job : "", job ? ": " : "", msg);
}
