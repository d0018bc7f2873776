/* The distilld command line: one binary, several verbs, each a function taking the arguments after
 * its name and returning the process exit status; cli/main.c dispatches to them. The service
 * (`distilld --config FILE`) is service/daemon.h's dd_cmd_daemon. */
#ifndef DD_CLI_H
#define DD_CLI_H

#include <stdio.h>

/* ---- help and usage (cli/help.c: one table of every verb's synopsis, options and exit status) ---
 * The conventions: `distilld VERB --help` (or -h, anywhere an option may stand) prints VERB's
 * usage to stdout and exits 0; a usage error prints "distilld: " + what was wrong, then VERB's
 * synopsis, to stderr and exits 2. */

/* 1 when `arg` is "--help" or "-h". */
int dd_cli_is_help(const char *arg);

/* Prints VERB's help to stdout: "usage: distilld VERB ..." (one line per form), what it does, its
 * options one per line with their defaults, and its exit status. `verb` is a verb's name,
 * "--config" (the service), "--version" or "help". Returns 0, or 2 for an unknown verb (printed). */
int dd_cli_help(const char *verb);

/* Prints VERB's synopsis and a pointer to VERB --help to stderr (after the caller's error line);
 * returns 2, the exit status of a usage error. */
int dd_cli_usage(const char *verb);

/* A usage error for an argument VERB does not take: "distilld: VERB: unknown option "ARG"" (ARG
 * starts with '-') or "... unexpected argument "ARG"", then VERB's synopsis. Returns 2. */
int dd_cli_bad_arg(const char *verb, const char *arg);

/* `distilld help`: every verb's synopsis and summary, and the environment settings. */
void dd_cli_overview(FILE *f);

/* `distilld check NET.prototxt [--weights W[,W...]] [--solver S] [--phase TRAIN|TEST] [-q]`.
 * Exit status: 0 clean, 1 warnings only, 2 errors. */
int dd_cmd_check(int argc, char **argv);

/* Caffe-style verbs on the engine (cli/cmd_train.c). Exit status 0 ok, 1 failure, 2 usage. */
int dd_cmd_train(int argc, char **argv);
int dd_cmd_test(int argc, char **argv);
int dd_cmd_time(int argc, char **argv);
int dd_cmd_forward(int argc, char **argv);

/* `distilld train --job JOB [--resume]` (cli/cmd_job.c). */
/* `device`: NULL takes the job's own `device` (default cpu). */
/* Multi-node jobs: this process's node, the daemon config whose Redis the nodes meet through (NULL:
 * $DISTILLD_CONFIG or the defaults) and the address node 0 publishes (NULL: the host's name). */
typedef struct dd_train_nodes {
  int node; /* -1: not given */
  const char *config, *advertise;
} dd_train_nodes;
int dd_cmd_train_job(const char *job_path, int resume, int threads, const char *device, const dd_train_nodes *tn);

/* Client verbs on the Redis queue (cli/cmd_submit.c, cli/cmd_status.c: status, cancel, list;
 * cli/cmd_watch.c; their connection cli/client.c; keys in common/keys.h and docs/redis.md). Each takes
 * [--config FILE] [--redis HOST:PORT] [--prefix P]. Exit status 0 ok, 1 failure, 2 usage. */
int dd_cmd_submit(int argc, char **argv);
int dd_cmd_status(int argc, char **argv);
int dd_cmd_cancel(int argc, char **argv);
int dd_cmd_list(int argc, char **argv);
int dd_cmd_watch(int argc, char **argv);

/* `distilld convert-imageset [flags] ROOT/ LISTFILE DB_NAME`: Caffe's convert_imageset
 * (cli/cmd_convert.c). Exit status 0 ok, 1 failure, 2 usage. */
int dd_cmd_convert_imageset(int argc, char **argv);

#endif
