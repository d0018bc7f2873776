/* distilld: the entry point. It only dispatches: each verb lives in a file of its own (cli/cmd_*.c,
 * the service in service/), the help of every verb in cli/help.c, and no file calls back into
 * this one. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/cli_util.h"
#include "cpu/cpu_blas.h"
#include "service/daemon.h"
#include "web/web.h"

int main(int argc, char **argv) {
  /* Before any thread exists: OpenBLAS gets the kernels for this CPU (core/cpu_blas.h). A failure
   * is reported when a CPU backend is created; verbs that need none work without OpenBLAS. */
  (void)dd_cpu_ensure_fast_blas(NULL, 0);
  if (argc < 2) {
    dd_cli_overview(stderr);
    return 2;
  }
  const char *verb = argv[1];
  if (!strcmp(verb, "--config")) {
    for (int i = 2; i < argc; i++)
      if (dd_cli_is_help(argv[i])) return dd_cli_help("--config");
    if (argc != 3) {
      dd_cli_error("--config takes one file");
      return dd_cli_usage("--config");
    }
    return dd_cmd_daemon(argv[2]);
  }
  /* each verb answers --help and -h itself, where its options stand */
  if (!strcmp(verb, "check")) return dd_cmd_check(argc - 2, argv + 2);
  if (!strcmp(verb, "train")) return dd_cmd_train(argc - 2, argv + 2);
  if (!strcmp(verb, "test")) return dd_cmd_test(argc - 2, argv + 2);
  if (!strcmp(verb, "time")) return dd_cmd_time(argc - 2, argv + 2);
  if (!strcmp(verb, "forward")) return dd_cmd_forward(argc - 2, argv + 2);
  if (!strcmp(verb, "convert-imageset")) return dd_cmd_convert_imageset(argc - 2, argv + 2);
  if (!strcmp(verb, "submit")) return dd_cmd_submit(argc - 2, argv + 2);
  if (!strcmp(verb, "status")) return dd_cmd_status(argc - 2, argv + 2);
  if (!strcmp(verb, "cancel")) return dd_cmd_cancel(argc - 2, argv + 2);
  if (!strcmp(verb, "list")) return dd_cmd_list(argc - 2, argv + 2);
  if (!strcmp(verb, "watch")) return dd_cmd_watch(argc - 2, argv + 2);
  if (!strcmp(verb, "web")) return dd_cmd_web(argc - 2, argv + 2);
  if (!strcmp(verb, "--version") || !strcmp(verb, "version")) {
    if (argc >= 3 && dd_cli_is_help(argv[2])) return dd_cli_help("--version");
    if (argc >= 3) {
      dd_cli_error("%s takes no argument", verb);
      return dd_cli_usage("--version");
    }
    printf("distilld %s\n", DD_VERSION);
    return 0;
  }
  if (!strcmp(verb, "help") || dd_cli_is_help(verb)) {
    if (argc >= 3 && !dd_cli_is_help(argv[2])) return dd_cli_help(argv[2]); /* help VERB */
    if (argc >= 3 && !strcmp(verb, "help")) return dd_cli_help("help");   /* help --help */
    dd_cli_overview(stdout);
    return 0;
  }
  dd_cli_error("unknown command \"%s\" (distilld help: every verb)", verb);
  return 2;
}
