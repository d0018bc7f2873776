/* The distilld command line: one binary, several verbs, each a function taking the arguments after
 * its name and returning the process exit status; cli/main.c dispatches to them. The service
 * (`distilld --config FILE`) is service/daemon.h's dd_cmd_daemon. */
#ifndef DD_CLI_H
#define DD_CLI_H

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
