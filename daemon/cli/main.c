/* distilld: the entry point. It only dispatches: each verb lives in a file of its own (cli/cmd_*.c,
 * the service in service/), and no file calls back into this one. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/cli_util.h"
#include "cpu/cpu_blas.h"
#include "service/daemon.h"

static void usage(FILE *f) {
  fprintf(f,
          "distilld %s: knowledge distillation from a frozen Caffe teacher into a student net\n"
          "\n"
          "usage:\n"
          "  distilld check NET.prototxt [--weights W.caffemodel[,W2...]] [--solver S.prototxt]\n"
          "                 [--phase TRAIN|TEST] [--stage S]... [--level N] [-q|--quiet]\n"
          "                 [--upgrade OUT.prototxt]   (check --help: each option)\n"
          "      parse a net, print a per-layer summary (one line with --quiet) and lint it:\n"
          "      exit 0 clean, 1 warnings, 2 errors. Default phase TRAIN. Old Caffe forms (V0 and\n"
          "      V1 layers, net-level input fields, data_param's transform fields, BatchNorm's\n"
          "      three param specs, solver_type) are upgraded as Caffe upgrades them, and said so;\n"
          "      --upgrade writes the net in the current form to OUT (the solver, with its inline\n"
          "      nets, when only --solver is given), as Caffe's upgrade_net_proto_text does.\n"
          "      --stage and --level set the NetState (Caffe's -stage, -level), also for test,\n"
          "      time and forward; a solver's train_state and test_state are merged as Caffe does.\n"
          "  distilld check --job JOB.prototxt\n"
          "      validate a job and check its nets\n"
          "  distilld train --job JOB.prototxt [--resume] [--device cpu|cuda:N] [--threads N]\n"
          "      run a distillation (or plain training) job in the foreground\n"
          "  distilld train --job JOB.prototxt --node K [--config C] [--advertise HOST] [--resume]\n"
          "      node K of a job with nodes: N (one process per machine); the nodes meet through\n"
          "      the Redis of the daemon config C; node 0 listens on HOST (CPU ranks)\n"
          "  distilld train --solver S.prototxt [--weights W[,W...] | --snapshot S.solverstate]\n"
          "                 [--input NAME=F.binaryproto]... [--device cpu|cuda:N] [--threads N]\n"
          "      train a net with a Caffe solver; snapshots resume bit-identically\n"
          "  distilld test --model M.prototxt --weights W [--iterations N] [--input NAME=F]...\n"
          "      TEST-phase forwards, averaged outputs\n"
          "  distilld time --model M.prototxt [--iterations N] [--phase TRAIN|TEST] [--input NAME=F]...\n"
          "      per-layer forward and backward times\n"
          "  distilld forward --model M.prototxt [--weights W] [--phase TRAIN|TEST] --input NAME=F...\n"
          "                   [--backward] --dump DIR\n"
          "      one forward (and backward); every blob and parameter to DIR/NAME.binaryproto\n"
          "  distilld convert-imageset [--shuffle [--seed N]] [--resize_height H --resize_width W]\n"
          "                 [--gray] [--encoded [--encode_type png|jpg]] [--check_size] [--skip_errors]\n"
          "                 [--backend lmdb|leveldb] [--progress N] ROOT/ LISTFILE DB_NAME\n"
          "      Caffe's convert_imageset: the images of a \"PATH LABEL\" list into a new LMDB or\n"
          "      LevelDB of Datum records for the Data layer\n"
          "  distilld submit JOB.prototxt [--id ID]\n"
          "      queue a job on Redis (\"-\": from standard input); prints its id alone\n"
          "  distilld status ID [--json]\n"
          "      a queued job's state, progress, losses and accuracies\n"
          "  distilld cancel ID\n"
          "      cancel a queued job, or stop a running one at its next iteration (with a snapshot)\n"
          "  distilld list [--all] [-n N]\n"
          "      the newest N jobs (default 20; --all: every job still kept)\n"
          "  distilld watch [ID] [--interval S] [--count N] [-n N]\n"
          "      a live view of the jobs and workers, or of one job, every S seconds (default 1)\n"
          "    client verbs take [--config FILE] [--redis HOST:PORT] [--prefix P]; the config file\n"
          "    defaults to $DISTILLD_CONFIG, else the built-in defaults (Redis at 127.0.0.1:6379)\n"
          "  distilld --config configs/distilld.prototxt\n"
          "      run the service: take jobs from the Redis queue, publish progress (docs/redis.md)\n"
          "  distilld --version\n"
          "  distilld help\n"
          "\n"
          "Environment (the CPU engine; defaults chosen by measurement, docs/performance.md):\n"
          "  DD_BF16=amx|avx512_bf16|off   which bf16 units bf16 convolutions use (default: the best\n"
          "                                the CPU has; off: bf16 asked runs FP32)\n"
          "  DD_DNNL=0|own|all             oneDNN off / FP32 convolutions on the own kernels / on\n"
          "                                oneDNN (default: oneDNN where its kernels are AVX-512)\n"
          "  DD_FUSE=0                     every layer its own step, no fused or blocked plans (with\n"
          "                                DD_DNNL=0: the FP32 reference every other path is tested against)\n"
          "Environment (the CUDA backend):\n"
          "  DD_CUDNN_ALGO=measure         cuDNN's deterministic FP32 convolution algorithms timed once\n"
          "                                per shape and kept for the process (not yet run on a GPU;\n"
          "                                default: its heuristics' first); `distilld time` lists them\n"
          "  DD_CUDA_FUSE=1                the fused BatchNorm+Scale+ReLU step on the GPU (not yet\n"
          "                                run on a GPU: off by default)\n",
          DD_VERSION);
}

int main(int argc, char **argv) {
  /* Before any thread exists: OpenBLAS gets the kernels for this CPU (core/cpu_blas.h). A failure
   * is reported when a CPU backend is created; verbs that need none work without OpenBLAS. */
  (void)dd_cpu_ensure_fast_blas(NULL, 0);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *verb = argv[1];
  if (!strcmp(verb, "--config")) {
    if (argc != 3) {
      dd_cli_error("usage: distilld --config FILE");
      return 2;
    }
    return dd_cmd_daemon(argv[2]);
  }
  /* VERB --help: the usage (check has its own, longer one) */
  if (strcmp(verb, "check") && argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
    usage(stdout);
    return 0;
  }
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
  if (!strcmp(verb, "--version") || !strcmp(verb, "version")) {
    printf("distilld %s\n", DD_VERSION);
    return 0;
  }
  if (!strcmp(verb, "help") || !strcmp(verb, "--help") || !strcmp(verb, "-h")) {
    usage(stdout);
    return 0;
  }
  dd_cli_error("unknown command \"%s\"", verb);
  usage(stderr);
  return 2;
}
