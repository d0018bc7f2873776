/* The distilld command line: one binary, several verbs (check now; train, test, time, forward,
 * submit, status, ... as they land). Each verb is a function taking the arguments after its name
 * and returning the process exit status. */
#ifndef DD_CLI_H
#define DD_CLI_H

#ifndef DD_VERSION
#define DD_VERSION "0.0.0"
#endif

/* `distilld check NET.prototxt [--weights W[,W...]] [--solver S] [--phase TRAIN|TEST] [-q]`.
 * Exit status: 0 clean, 1 warnings only, 2 errors. */
int dd_cmd_check(int argc, char **argv);

/* Prints "distilld: " + message to stderr. */
void dd_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
