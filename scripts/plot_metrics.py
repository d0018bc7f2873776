#!/usr/bin/env python3
"""Plots a distilld job's metrics as a PNG: training loss (and each loss term) and test accuracy
over iterations, with the teacher's accuracy as a reference line.

  plot_metrics.py OUTPUT_DIR/metrics.jsonl -o curves.png [--title NAME]
  plot_metrics.py --redis HOST:PORT [--prefix distilld] [--user U --password-env VAR] --job ID
                  -o curves.png [--title NAME]
  plot_metrics.py A/metrics.jsonl --label "distilled" --compare B/metrics.jsonl --compare-label "alone"
                  -o curves.png          # two jobs' curves on the same axes (loss and test accuracy)

The metrics file has one JSON object per line (docs/formats.md): "train" records (iter, loss,
ce_loss, kd_loss, hint*_loss, lr, img_per_s, ...), "test" records (iter, accuracy, loss, ...), a
"teacher" record (accuracy) and "snapshot" records.

With --redis the same curves come from a daemon's Redis (docs/redis.md), read with `redis-cli`
(no Python Redis module needed): the stream P:job:ID:metrics (iter, loss, each *_loss term; per
iter the entry of the highest attempt), the test entries of P:job:ID:events (iter, accuracy) and
the hash P:job:ID (teacher_acc: the reference line; name: the title). The password, when there is
one, is read from the environment variable that --password-env names and reaches redis-cli as
REDISCLI_AUTH, never on a command line. Only read commands are sent (XRANGE, HMGET), so the
read-only dashboard user will do.

Exit status: 0 the PNG was written; 1 no data (no train or test records; in Redis mode no metrics
entries and no test events for the job); 2 usage, or -o cannot be written; 3 Redis could not be
read (redis-cli missing, connection or authentication failed, an error reply such as NOPERM);
4 matplotlib is missing.
Needs matplotlib (Debian: python3-matplotlib); when the python3 running this lacks it, the
script re-runs itself with /usr/bin/python3.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

EXIT_NO_DATA = 1
EXIT_REDIS = 3
EXIT_NO_MATPLOTLIB = 4

# redis-cli --raw prints the elements of an array reply separated by the -d delimiter; this one
# cannot occur in the daemon's field names or values, so multi-line values stay in one element.
DELIM = "\x1f"
ENTRY_ID = re.compile(r"^(\d+)-(\d+)$")
XRANGE_PAGE = 10000  # entries per XRANGE call


def load_jsonl(path):
    recs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit("plot_metrics.py: %s:%d: not JSON (%s)" % (path, n, e))
    return recs


class RedisError(Exception):
    pass


class RedisCli:
    """Runs single read commands through `redis-cli --raw` and splits the replies."""

    def __init__(self, addr, user, password):
        host, port = parse_addr(addr)
        self.addr = addr
        self.base = ["redis-cli", "-h", host, "-p", str(port), "--raw", "-d", DELIM]
        if user:
            self.base += ["--user", user]
        self.env = dict(os.environ)
        if password is not None:
            self.env["REDISCLI_AUTH"] = password

    def call(self, *args):
        """The reply's elements (a list of strings; [] for an empty array or a nil)."""
        try:
            p = subprocess.run(self.base + list(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=120)
        except OSError as e:
            raise RedisError("cannot run redis-cli: %s" % e)
        except subprocess.TimeoutExpired:
            raise RedisError("redis-cli %s: no answer from %s within 120 s" % (args[0], self.addr))
        err = p.stderr.decode("utf-8", "replace").strip()
        # A failed AUTH is only a message on stderr: redis-cli then runs the command as the default
        # user, which must not pass for "no data".
        if p.returncode != 0 or "AUTH failed" in err or "Could not connect" in err:
            raise RedisError("redis-cli %s at %s: %s" % (args[0], self.addr, err or "exit %d" % p.returncode))
        out = p.stdout.decode("utf-8", "replace")
        if out.endswith("\n"):
            out = out[:-1]
        return out.split(DELIM) if out else []


def parse_addr(addr):
    """HOST:PORT, [V6]:PORT, or HOST (port 6379)."""
    m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", addr) or re.match(r"^([^:]+)(?::(\d+))?$", addr)
    if not m or not m.group(1):
        raise ValueError("--redis %r: want HOST:PORT" % addr)
    port = int(m.group(2)) if m.group(2) else 6379
    if not 0 < port < 65536:
        raise ValueError("--redis %r: bad port" % addr)
    return m.group(1), port


def split_entries(elems, key):
    """[(id, {field: value})] from the flat XRANGE reply. An entry starts at an element shaped
    like a stream id where a field name would be due (field names never look like ids)."""
    entries = []
    i = 0
    while i < len(elems):
        if not ENTRY_ID.match(elems[i]):
            if not entries:  # an error reply (NOPERM, WRONGTYPE, ...) is one plain line
                raise RedisError("XRANGE %s: %s" % (key, " ".join(elems)))
            raise RedisError("XRANGE %s: cannot parse the reply near %r" % (key, elems[i][:60]))
        fields = {}
        j = i + 1
        while j + 1 < len(elems) and not ENTRY_ID.match(elems[j]):
            fields[elems[j]] = elems[j + 1]
            j += 2
        entries.append((elems[i], fields))
        i = j
    return entries


def xrange_all(cli, key):
    """Every entry of a stream, oldest first, read in pages of XRANGE_PAGE."""
    out = []
    start = "-"
    while True:
        page = split_entries(cli.call("XRANGE", key, start, "+", "COUNT", str(XRANGE_PAGE)), key)
        out += page
        if len(page) < XRANGE_PAGE:
            return out
        ms, seq = ENTRY_ID.match(page[-1][0]).groups()
        start = "%s-%d" % (ms, int(seq) + 1)  # exclusive start without "(" (Redis < 6.2)


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def load_redis(a):
    """(train, test, teacher accuracy or None, job name or None) of one job, as records shaped like
    the metrics file's. Raises RedisError."""
    password = None
    if a.password_env:
        password = os.environ.get(a.password_env)
        if password is None:
            raise RedisError("--password-env %s: that variable is not set" % a.password_env)
    cli = RedisCli(a.redis, a.user, password)
    base = "%s:job:%s" % (a.prefix, a.job)
    want = ["teacher_acc", "state", "name"]  # name last: it is the only free-text field
    h = cli.call("HMGET", base, *want)
    if len(h) < len(want):
        raise RedisError("HMGET %s: %s" % (base, " ".join(h)))
    hv = dict(zip(want[:-1], h[:-1]))
    hv["name"] = DELIM.join(h[len(want) - 1:])

    by_iter = {}  # iter -> (attempt, record): docs/redis.md keeps the highest attempt per iter
    for _, f in xrange_all(cli, base + ":metrics"):
        it, attempt = num(f.get("iter")), num(f.get("attempt")) or 0
        if it is None:
            continue
        r = {"type": "train", "iter": int(it)}
        for k, v in f.items():
            if k not in ("iter", "worker", "attempt"):
                x = num(v)
                if x is not None:
                    r[k] = x
        old = by_iter.get(r["iter"])
        if old is None or attempt >= old[0]:
            by_iter[r["iter"]] = (attempt, r)
    train = [by_iter[k][1] for k in sorted(by_iter)]

    tests = {}
    for _, f in xrange_all(cli, base + ":events"):
        if f.get("type") != "test":
            continue
        it, acc = num(f.get("iter")), num(f.get("accuracy"))
        if it is not None:
            tests[int(it)] = {"type": "test", "iter": int(it), "accuracy": acc}  # a later attempt wins
    test = [tests[k] for k in sorted(tests)]
    return train, test, num(hv.get("teacher_acc")), hv["name"] or None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", nargs="?", help="a job's metrics.jsonl (or use --redis)")
    ap.add_argument("-o", "--output", required=True, help="the PNG to write")
    ap.add_argument("--title", default=None)
    ap.add_argument("--teacher-accuracy", type=float, default=None,
                    help="draw this as the teacher's line (when the metrics have no teacher record)")
    ap.add_argument("--label", default=None, help="the job's name in the legends (with --compare)")
    ap.add_argument("--compare", metavar="METRICS", help="a second job's metrics.jsonl, drawn on the same axes")
    ap.add_argument("--compare-label", default="compared", help="its name in the legends")
    g = ap.add_argument_group("reading a job from Redis (docs/redis.md)")
    g.add_argument("--redis", metavar="HOST:PORT", help="the daemons' Redis")
    g.add_argument("--prefix", default="distilld", help="the config's key_prefix (default distilld)")
    g.add_argument("--job", metavar="ID", help="the job id")
    g.add_argument("--user", help="ACL user (e.g. distilld-dashboard)")
    g.add_argument("--password-env", metavar="VAR", help="the environment variable holding the password")
    a = ap.parse_args()
    if (a.metrics is None) == (a.redis is None):
        ap.error("give either a metrics.jsonl file or --redis HOST:PORT --job ID")
    if a.redis is None and (a.job or a.user or a.password_env):
        ap.error("--job, --user and --password-env go with --redis")
    if a.redis is not None:
        if not a.job:
            ap.error("--redis needs --job ID")
        try:
            parse_addr(a.redis)
        except ValueError as e:
            ap.error(str(e))
    try:
        import matplotlib
    except ImportError:
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        print("plot_metrics.py: needs matplotlib (apt-get install python3-matplotlib)", file=sys.stderr)
        sys.exit(EXIT_NO_MATPLOTLIB)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if a.redis is not None:
        if not shutil.which("redis-cli"):
            print("plot_metrics.py: --redis needs redis-cli on PATH (apt-get install redis-tools)", file=sys.stderr)
            sys.exit(EXIT_REDIS)
        try:
            train, test, t_acc, name = load_redis(a)
        except RedisError as e:
            print("plot_metrics.py: %s" % e, file=sys.stderr)
            sys.exit(EXIT_REDIS)
        if not train and not test:
            print("plot_metrics.py: job %s: no metrics entries and no test events in %s:job:%s:metrics / :events"
                  % (a.job, a.prefix, a.job), file=sys.stderr)
            sys.exit(EXIT_NO_DATA)
        if t_acc is None:
            t_acc = a.teacher_accuracy
        title = a.title or ("%s (%s)" % (name, a.job) if name and name != a.job else a.job)
    else:
        recs = load_jsonl(a.metrics)
        train = [r for r in recs if r.get("type") == "train"]
        test = [r for r in recs if r.get("type") == "test"]
        teacher = [r for r in recs if r.get("type") == "teacher"]
        if not train and not test:
            sys.exit("plot_metrics.py: no train or test records in the metrics")
        t_acc = teacher[-1].get("accuracy") if teacher else a.teacher_accuracy
        title = a.title

    other_train, other_test = [], []
    if a.compare:
        recs = load_jsonl(a.compare)
        other_train = [r for r in recs if r.get("type") == "train"]
        other_test = [r for r in recs if r.get("type") == "test"]
        if not other_train and not other_test:
            sys.exit("plot_metrics.py: %s: no train or test records" % a.compare)
    me = (a.label + ": ") if a.compare and a.label else ""

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    terms = sorted({k for r in train for k in r if k.endswith("_loss") and k != "loss"})
    its = [r["iter"] for r in train]
    ax1.plot(its, [r.get("loss") for r in train], label=me + "loss (smoothed, weighted sum)", color="black")
    for k in terms:
        ax1.plot(its, [r.get(k) for r in train], label=me + k, linewidth=1)
    if other_train:
        ax1.plot([r["iter"] for r in other_train], [r.get("loss") for r in other_train],
                 label=a.compare_label + ": loss", color="tab:gray", linestyle=":")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    if test:
        ax2.plot([r["iter"] for r in test], [r.get("accuracy") for r in test], marker="o",
                 label=me + "student test accuracy" if not a.compare else "%s %.4f" % (a.label or "student", test[-1].get("accuracy")))
    if other_test:
        ax2.plot([r["iter"] for r in other_test], [r.get("accuracy") for r in other_test], marker="s",
                 label="%s %.4f" % (a.compare_label, other_test[-1].get("accuracy")), color="tab:gray")
    if t_acc is not None:
        ax2.axhline(t_acc, color="tab:red", linestyle="--", label="teacher %.4f" % t_acc)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("accuracy")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(a.output, dpi=100)
    except OSError as e:
        print("plot_metrics.py: cannot write %s: %s" % (a.output, e.strerror or e), file=sys.stderr)
        sys.exit(2)
    print("wrote %s (%d train, %d test records%s)" % (a.output, len(train), len(test),
                                                    ", and %d, %d compared" % (len(other_train), len(other_test)) if a.compare else ""))


if __name__ == "__main__":
    main()
