#!/usr/bin/env python3
"""Plots a distilld job's metrics as a PNG: training loss (and each loss term) and test accuracy
over iterations, with the teacher's accuracy as a reference line.

  plot_metrics.py OUTPUT_DIR/metrics.jsonl -o curves.png [--title NAME]

The metrics file has one JSON object per line (docs/formats.md): "train" records (iter, loss,
ce_loss, kd_loss, hint*_loss, lr, img_per_s, ...), "test" records (iter, accuracy, loss, ...), a
"teacher" record (accuracy) and "snapshot" records.
Needs matplotlib (Debian: python3-matplotlib); when the python3 running this lacks it, the
script re-runs itself with /usr/bin/python3.
"""
import argparse
import json
import os
import sys


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", help="a job's metrics.jsonl")
    ap.add_argument("-o", "--output", required=True, help="the PNG to write")
    ap.add_argument("--title", default=None)
    ap.add_argument("--teacher-accuracy", type=float, default=None,
                    help="draw this as the teacher's line (when the metrics have no teacher record)")
    a = ap.parse_args()
    try:
        import matplotlib
    except ImportError:
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        sys.exit("plot_metrics.py: needs matplotlib (apt-get install python3-matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = load_jsonl(a.metrics)
    train = [r for r in recs if r.get("type") == "train"]
    test = [r for r in recs if r.get("type") == "test"]
    teacher = [r for r in recs if r.get("type") == "teacher"]
    if not train and not test:
        sys.exit("plot_metrics.py: no train or test records in the metrics")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    terms = sorted({k for r in train for k in r if k.endswith("_loss") and k != "loss"})
    its = [r["iter"] for r in train]
    ax1.plot(its, [r.get("loss") for r in train], label="loss (smoothed, weighted sum)", color="black")
    for k in terms:
        ax1.plot(its, [r.get(k) for r in train], label=k, linewidth=1)
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    if test:
        ax2.plot([r["iter"] for r in test], [r.get("accuracy") for r in test], marker="o", label="student test accuracy")
    t_acc = teacher[-1].get("accuracy") if teacher else a.teacher_accuracy
    if t_acc is not None:
        ax2.axhline(t_acc, color="tab:red", linestyle="--", label="teacher %.4f" % t_acc)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("accuracy")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.output, dpi=100)
    print("wrote %s (%d train, %d test records)" % (a.output, len(train), len(test)))


if __name__ == "__main__":
    main()
