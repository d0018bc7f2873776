/* What `distilld help`, `distilld VERB --help` and a usage error print (cli/cli.h): one table,
 * one entry per verb with its synopsis, what it does, its options (one line each, with the
 * default) and its exit status. `distilld help` is the synopses and summaries of every entry;
 * `VERB --help` is one entry in full; a usage error is the entry's synopsis on stderr. Nothing
 * here calls a verb. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/cli_util.h"

typedef struct {
  const char *verb;
  const char *synopsis;        /* lines after "distilld ", '\n' between forms */
  const char *summary;         /* what the verb does, lines of text */
  const char *const *options;  /* {flag, text} pairs, NULL-terminated */
  const char *exit_status;     /* one line */
  int client;                  /* takes the client verbs' --config, --redis, --prefix */
} verb_help;

#define NET_STATE_OPTIONS                                                                                  \
  "--stage S", "a stage of the NetState (Caffe's -stage), repeatable, at most 16 (default: the net's own)", \
  "--level N", "the NetState's level (Caffe's -level) (default: the net's own, 0)"
#define ENGINE_OPTIONS                                                                                     \
  "--input NAME=F", "fill the Input blob NAME from the .binaryproto F once and hold it; repeatable, at most 16", \
  "--seed N", "the seed of the fillers (default 1)",                                                        \
  "--device D", "cpu or cuda:N (default cpu)",                                                              \
  "--threads N", "CPU worker threads (default: one per core)"

static const char *const check_opts[] = {
    "--weights W[,W2...]", "check that the .caffemodel files fit the net, layer by layer (default: none)",
    "--solver S.prototxt", "check a solver too; its net is checked when no NET is given (default: none)",
    "--phase TRAIN|TEST", "the phase to build (default TRAIN)",
    "--stage S", "a NetState stage, repeatable, at most 16 (default: the net's own; with --solver: its state merged in)",
    "--level N", "the NetState's level (default: the net's own)",
    "--upgrade OUT", "write the net (the solver, given alone) in the current form, as upgrade_net_proto_text (default: none)",
    "-q, --quiet", "one summary line instead of one per layer (default: one per layer)",
    "--job JOB.prototxt", "validate a job, then check its student and teacher nets (takes no other option)",
    NULL};

static const char *const train_opts[] = {
    "--solver S.prototxt", "a Caffe solver (text); trains its net, net_param, train_net or train_net_param",
    "--weights W[,W2...]", "with --solver: .caffemodel files copied in by layer name first (default: the fillers)",
    "--snapshot F", "with --solver: resume from the .solverstate F, bit-identically (default: iteration 0)",
    "--input NAME=F", "with --solver: fill the Input blob NAME from the .binaryproto F once; repeatable, at most 16",
    "--seed N", "with --solver: the fillers' seed when the solver has no random_seed (default: the time)",
    "--job JOB.prototxt", "run a DistillJob (text) in the foreground: its nets, data, solver and output_dir",
    "--resume", "with --job: go on from the newest snapshot in OUTPUT_DIR/snapshots (default: from scratch)",
    "--node K", "with --job: this process's node, 0 to N-1, of a job with nodes: N (default: none)",
    "--config FILE", "with --node: the daemon config whose Redis the nodes meet through (default: $DISTILLD_CONFIG)",
    "--advertise HOST", "with --node 0: the address node 0 publishes to the others (default: this host's name)",
    "--device D", "cpu or cuda:N (default: the job's device; with --solver: cpu)",
    "--threads N", "CPU worker threads (default: one per core)",
    NULL};

static const char *const test_opts[] = {
    "--model M.prototxt", "the net, built in phase TEST (required)",
    "--weights W[,W2...]", ".caffemodel files copied in by layer name (required)",
    "--iterations N", "forward passes averaged (default 50)",
    NET_STATE_OPTIONS,
    ENGINE_OPTIONS,
    NULL};

static const char *const time_opts[] = {
    "--model M.prototxt", "the net (required)",
    "--weights W[,W2...]", ".caffemodel files copied in by layer name (default: the fillers)",
    "--iterations N", "timed forward and backward passes, after one untimed (default 10)",
    "--phase TRAIN|TEST", "the phase to build (default TRAIN)",
    NET_STATE_OPTIONS,
    ENGINE_OPTIONS,
    NULL};

static const char *const forward_opts[] = {
    "--model M.prototxt", "the net (required)",
    "--dump DIR", "where each blob and parameter goes, as NAME.binaryproto; made when missing (required)",
    "--weights W[,W2...]", ".caffemodel files copied in by layer name (default: the fillers)",
    "--phase TRAIN|TEST", "the phase to build (default TRAIN)",
    "--backward", "also one backward pass; the files hold the diffs too (default: forward only)",
    NET_STATE_OPTIONS,
    ENGINE_OPTIONS,
    NULL};

static const char *const convert_opts[] = {
    "--shuffle", "write the records in a shuffled order (default: the list's order)",
    "--seed N", "the shuffle's seed (default 0)",
    "--resize_height H", "with --resize_width: every image resized to H x W, bilinear (default 0: each image's size)",
    "--resize_width W", "with --resize_height (default 0)",
    "--gray", "decode to one grey channel (default: colour, B, G, R)",
    "--encoded", "store the image file's bytes, re-encoded when it must be (default: raw uint8 C, H, W)",
    "--encode_type png|jpg", "the encoding of --encoded; implies --encoded (default: the file's extension)",
    "--check_size", "every raw record must have the first one's size (default: off)",
    "--skip_errors", "skip an unreadable image with a warning, as Caffe does (default: fail, naming the line)",
    "--backend lmdb|leveldb", "the database to write (default lmdb)",
    "--progress N", "a progress line every N records (default 1000)",
    NULL};

static const char *const submit_opts[] = {
    "JOB.prototxt", "the DistillJob (text), at most 1 MiB, parsed here first; \"-\": standard input",
    "--id ID", "the job's id, 1 to 64 of A-Z a-z 0-9 _ . - (default: j<N>, N from INCR PREFIX:seq)",
    NULL};

static const char *const status_opts[] = {
    "ID", "the job (as submit printed it)",
    "--json", "the job's whole hash as one JSON object (default: a readable block)",
    NULL};

static const char *const cancel_opts[] = {"ID", "the job (as submit printed it)", NULL};

static const char *const list_opts[] = {
    "-n N", "the newest N jobs (default 20)",
    "--all", "every job still kept (default: the newest 20)",
    NULL};

static const char *const watch_opts[] = {
    "ID", "one job: its status block, last metrics and events (default: the job table and the workers)",
    "--interval S", "seconds between frames, 0.05 to 86400 (default 1)",
    "--count N", "stop after N frames (default: until SIGINT, or until the watched job ends)",
    "-n N", "rows of the job table (default 20)",
    NULL};

static const char *const web_opts[] = {
    "--listen ADDR:PORT", "where to serve: 127.0.0.1:PORT, localhost:PORT, [::1]:PORT, 0.0.0.0:PORT; 0: a free port (default 127.0.0.1:8080)",
    "--allow-cancel", "show the cancel button and take POST /api/job/ID/cancel (default: read-only, 403)",
    NULL};

static const char *const daemon_opts[] = {
    "FILE", "the DaemonConfig (text): Redis, devices, data and output roots (configs/distilld.prototxt)",
    NULL};

static const char *const help_opts[] = {"VERB", "one verb's options, as VERB --help (default: every verb)", NULL};
static const char *const no_opts[] = {NULL};

static const char *const client_opts_help[] = {
    "--config FILE", "the daemon config naming Redis and the key prefix (default: $DISTILLD_CONFIG, else built in)",
    "--redis HOST:PORT", "the Redis server (default: the config's, 127.0.0.1:6379)",
    "--prefix P", "the prefix of every key (default: the config's key_prefix, distilld)",
    NULL};

static const char ok_fail_usage[] = "0 ok, 1 failure, 2 usage";

static const verb_help verbs[] = {
    {"check",
     "check NET.prototxt [--weights W[,W2...]] [--solver S.prototxt] [--phase TRAIN|TEST]\n"
     "      [--stage S]... [--level N] [-q|--quiet] [--upgrade OUT.prototxt]\n"
     "check --job JOB.prototxt",
     "parse a net (or a solver and its net, or a job and its nets), print a per-layer summary and lint\n"
     "it. Old Caffe forms (V0 and V1 layers, net-level input fields, data_param's transform fields,\n"
     "BatchNorm's three param specs, solver_type) are upgraded as Caffe upgrades them, and said so.",
     check_opts, "0 clean, 1 warnings only, 2 errors or usage", 0},
    {"train",
     "train --solver S.prototxt [--weights W[,W2...] | --snapshot S.solverstate] [--input NAME=F]...\n"
     "train --job JOB.prototxt [--resume] [--device cpu|cuda:N] [--threads N]\n"
     "train --job JOB.prototxt --node K [--config C] [--advertise HOST] [--resume]",
     "train a net with a Caffe solver (snapshots resume bit-identically), or run a distillation (or\n"
     "plain training) job in the foreground; a job with nodes: N runs as one process per machine.",
     train_opts, "0 done (also when SIGINT or SIGTERM stopped it), 1 failure, 2 usage or a file that does not read", 0},
    {"test", "test --model M.prototxt --weights W [--iterations N] [--input NAME=F]...",
     "TEST-phase forwards; prints each scalar output averaged over the iterations.", test_opts, ok_fail_usage, 0},
    {"time", "time --model M.prototxt [--iterations N] [--phase TRAIN|TEST] [--input NAME=F]...",
     "per-layer forward and backward times, and how each convolution runs.", time_opts, ok_fail_usage, 0},
    {"forward",
     "forward --model M.prototxt [--weights W] [--phase TRAIN|TEST] --input NAME=F... [--backward]\n"
     "      --dump DIR",
     "one forward (and backward); every blob and parameter to DIR/NAME.binaryproto.", forward_opts, ok_fail_usage, 0},
    {"convert-imageset",
     "convert-imageset [--shuffle [--seed N]] [--resize_height H --resize_width W] [--gray]\n"
     "      [--encoded [--encode_type png|jpg]] [--check_size] [--skip_errors]\n"
     "      [--backend lmdb|leveldb] [--progress N] ROOT/ LISTFILE DB_NAME",
     "Caffe's convert_imageset: the images of a \"PATH LABEL\" list (ROOT/PATH each) into a new LMDB or\n"
     "LevelDB DB_NAME of Datum records for the Data layer, keys %08d_PATH. Flags may be --flag=VALUE.",
     convert_opts, ok_fail_usage, 0},
    {"submit", "submit JOB.prototxt [--id ID]", "queue a job on Redis; prints its id alone.", submit_opts,
     "0 queued, 1 failure (Redis unreachable, the id taken), 2 usage or a job file that does not parse", 1},
    {"status", "status ID [--json]", "a queued job's state, progress, losses, accuracies and ETA.", status_opts,
     "0 ok, 1 failure (no such job, Redis unreachable), 2 usage", 1},
    {"cancel", "cancel ID", "cancel a queued job, or stop a running one at its next iteration (with a snapshot).",
     cancel_opts, "0 cancelled, asked to stop or final already, 1 failure (no such job, Redis unreachable), 2 usage",
     1},
    {"list", "list [--all] [-n N]", "the newest jobs, newest first.", list_opts,
     "0 ok, 1 failure (Redis unreachable), 2 usage", 1},
    {"watch", "watch [ID] [--interval S] [--count N] [-n N]",
     "a live view of the jobs and workers, or of one job, redrawn every S seconds; it rides out a Redis\n"
     "outage and ends on SIGINT.",
     watch_opts, "0 ended (SIGINT, --count, the watched job final), 1 failure (no such job, Redis), 2 usage", 1},
    {"web", "web [--listen ADDR:PORT] [--allow-cancel]",
     "serve a live dashboard of the queue, the jobs, the workers and each job's curves and events, read from\n"
     "Redis, until SIGINT or SIGTERM (docs/monitoring.md). Read-only unless --allow-cancel.",
     web_opts, "0 after SIGINT or SIGTERM, 1 cannot serve at the address, 2 usage or a bad config", 1},
    {"--config", "--config FILE",
     "run the service: take jobs from the Redis queue, run them, publish their progress (docs/redis.md).",
     daemon_opts, "0 after SIGTERM or SIGINT and a clean drain, 1 start-up failed or the drain timed out, "
                  "2 usage or a bad config", 0},
    {"--version", "--version", "the version (also: distilld version).", no_opts, "0", 0},
    {"help", "help [VERB]", "what each verb does; with VERB, its options.", help_opts, "0, 2 for an unknown VERB", 0},
};

int dd_cli_is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

static const verb_help *find(const char *verb) {
  if (!strcmp(verb, "version")) verb = "--version";
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
    if (!strcmp(verbs[i].verb, verb)) return &verbs[i];
  return NULL;
}

static const char client_synopsis[] = " [--config FILE] [--redis HOST:PORT] [--prefix P]";

/* The synopsis, each form after `first` (the first line) or `next` (the others) and "distilld ";
 * a continuation line (one starting with spaces) goes under the arguments of the line above it.
 * `first` and `next` are as long as each other. With `common`, a client verb's last line ends
 * with the options every client verb takes. */
static void print_synopsis(FILE *f, const verb_help *v, const char *first, const char *next, int common) {
  const char *p = v->synopsis;
  int indent = (int)strlen(next) + (int)strlen("distilld ") + (int)strlen(v->verb) + 1;
  for (int line = 0; *p; line++) {
    const char *e = strchr(p, '\n');
    int n = e ? (int)(e - p) : (int)strlen(p);
    if (p[0] == ' ') {
      int sp = (int)strspn(p, " ");
      fprintf(f, "%*s%.*s", indent, "", n - sp, p + sp);
    } else {
      fprintf(f, "%sdistilld %.*s", line ? next : first, n, p);
    }
    p += n + (e != NULL);
    fprintf(f, "%s\n", common && v->client && !*p ? client_synopsis : "");
  }
}

static void print_text(FILE *f, const char *indent, const char *text) {
  for (const char *p = text; *p;) {
    const char *e = strchr(p, '\n');
    int n = e ? (int)(e - p) : (int)strlen(p);
    fprintf(f, "%s%.*s\n", indent, n, p);
    p += n + (e != NULL);
  }
}

static void print_options(FILE *f, const char *const *o) {
  for (; o[0]; o += 2) fprintf(f, "  %-22s %s\n", o[0], o[1]);
}

int dd_cli_help(const char *verb) {
  const verb_help *v = find(verb);
  if (!v) {
    dd_cli_error("no verb \"%s\" (distilld help: every verb)", verb);
    return 2;
  }
  print_synopsis(stdout, v, "usage: ", "       ", 1);
  printf("\n");
  print_text(stdout, "", v->summary);
  printf("\noptions:\n");
  print_options(stdout, v->options);
  if (v->client) print_options(stdout, client_opts_help);
  print_options(stdout, (const char *const[]){"-h, --help", "this help", NULL});
  printf("\nexit status: %s\n", v->exit_status);
  return 0;
}

int dd_cli_usage(const char *verb) {
  const verb_help *v = find(verb);
  if (v) {
    print_synopsis(stderr, v, "usage: ", "       ", 1);
    fprintf(stderr, "(distilld %s --help: every option, with its default)\n", v->verb);
  }
  return 2;
}

int dd_cli_bad_arg(const char *verb, const char *arg) {
  dd_cli_error("%s: %s \"%s\"", verb, arg[0] == '-' && arg[1] ? "unknown option" : "unexpected argument", arg);
  return dd_cli_usage(verb);
}

void dd_cli_overview(FILE *f) {
  fprintf(f, "distilld %s: knowledge distillation from a frozen Caffe teacher into a student net\n\nusage:\n",
          DD_VERSION);
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
    print_synopsis(f, &verbs[i], "  ", "  ", 0);
    print_text(f, "      ", verbs[i].summary);
  }
  fprintf(f,
          "  the client verbs (submit, status, cancel, list, watch, web) take [--config FILE] [--redis HOST:PORT]\n"
          "  [--prefix P]; the config defaults to $DISTILLD_CONFIG, else the built-in defaults (Redis at\n"
          "  127.0.0.1:6379). distilld VERB --help (or -h): VERB's options, with their defaults.\n"
          "\n"
          "Environment (the CPU engine; defaults chosen by measurement, docs/performance.md):\n"
          "  DD_BF16=amx|avx512_bf16|off   which bf16 units bf16 convolutions use (default: the best\n"
          "                                the CPU has; off: bf16 asked runs FP32)\n"
          "  DD_DNNL=0|own|all             oneDNN off / FP32 convolutions on the own kernels / on\n"
          "                                oneDNN (default: oneDNN where its kernels are AVX-512)\n"
          "  DD_BLOCKED_TRAIN=0            the student's activations and gradients in NCHW FP32 instead\n"
          "                                of oneDNN's blocked layout (bf16 in a bf16 student)\n"
          "  DD_FUSE=0                     every layer its own step, no fused or blocked plans (with\n"
          "                                DD_DNNL=0: the FP32 reference every other path is tested against)\n"
          "Environment (the CUDA backend):\n"
          "  DD_CUDNN_ALGO=measure         cuDNN's deterministic FP32 convolution algorithms timed once\n"
          "                                per shape and kept for the process (not yet run on a GPU;\n"
          "                                default: its heuristics' first); `distilld time` lists them\n"
          "  DD_CUDA_FUSE=1                the fused BatchNorm+Scale+ReLU step on the GPU (not yet\n"
          "                                run on a GPU: off by default)\n");
}
