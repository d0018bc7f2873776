/* The daemon's log: stderr, one line each, with the level and the job id. Under systemd
 * ($JOURNAL_STREAM set) a line starts with journald's "<N>" priority, on a terminal with the level
 * as a word. Called from the loop and from job threads. */
#ifndef DD_LOG_H
#define DD_LOG_H

/* Levels: 0 error, 1 warning, 2 info, 3 debug; lines above `level` are not written. `journal`: 1 to
 * write journald priorities. Call once, before any job thread starts (default: info, terminal). */
void dlog_setup(int level, int journal);

/* One line at `level` about job `job` (NULL: about the worker). */
void dlog(int level, const char *job, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
