#!/usr/bin/env python3
"""Runs other people's Caffe nets through distilld: every net prototxt under the given folders
(a BVLC Caffe checkout's models/ and examples/, third-party model repositories) is checked with
`distilld check` and run through one forward and backward with `distilld time --iterations 1`
(random weights from the nets' own fillers), in each phase it has.

The public files are read where they are and never copied into the project. Data layers get
small stand-in data in a scratch folder: an LMDB or LevelDB of a few Datums (written with
`distilld convert-imageset` from generated PNG images), HDF5 files (h5py), image lists, mean
files; their sources in a scratch copy of the prototxt point there, and batch sizes over
--max-batch are lowered to it (the layers' arithmetic does not depend on the batch). The data
shape of a database is guessed from its path: mnist 1x28x28 (siamese pairs 2x28x28), cifar
3x32x32, anything else 3x256x256 (ImageNet-style, cropped by the net).

Prints one line per net and phase and a summary; exit status 0 when every net passed or was
refused by name as the project documents (Python and WindowData layers, and the layer types of
Caffe forks, which distilld names as not BVLC Caffe's).

usage: scripts/check_public_nets.py [--distilld build/distilld] [--max-batch 8] [--keep DIR] ROOT...
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

REFUSED_BY_DESIGN = ("Python", "WindowData")
# Debian's interpreter, which has python3-lmdb and python3-h5py (scripts/install-deps.sh), even
# when another python3 comes first on PATH.
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def png(path, w, h, channels, seed):
    """Writes a deterministic 8-bit grey or RGB PNG (zlib, no library needed)."""
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            for c in range(channels):
                row.append((37 * seed + 11 * x + 7 * y + 53 * c) % 256)
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows))
    ctype = 0 if channels == 1 else 2

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)) +
                chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def mean_binaryproto(path, c, h, w):
    """A BlobProto (num 1, channels, height, width; packed float data) of value 100."""
    data = struct.pack("<%df" % (c * h * w), *([100.0] * (c * h * w)))
    msg = b"\x08" + varint(1) + b"\x10" + varint(c) + b"\x18" + varint(h) + b"\x20" + varint(w)
    msg += b"\x2a" + varint(len(data)) + data
    with open(path, "wb") as f:
        f.write(msg)


def blocks(text):
    """Top-level `layer {...}` / `layers {...}` blocks: (start, end, body)."""
    out = []
    for m in re.finditer(r"(^|\n)\s*(layers?)\s*\{", text):
        i = m.end()
        depth = 1
        j = i
        in_str = False
        while j < len(text) and depth:
            ch = text[j]
            if ch == '"' and text[j - 1] != "\\":
                in_str = not in_str
            elif not in_str and ch == "{":
                depth += 1
            elif not in_str and ch == "}":
                depth -= 1
            elif not in_str and ch == "#":
                k = text.find("\n", j)
                j = len(text) if k < 0 else k
                continue
            j += 1
        out.append((m.start(), j, text[i:j - 1]))
    return out


def field(body, name):
    m = re.search(r"\b%s\s*:\s*\"?([^\"\s}]+)\"?" % name, body)
    return m.group(1) if m else None


def guess_shape(src):
    s = src.lower()
    if "siamese" in s:
        return 2, 28, 28
    if "mnist" in s:
        return 1, 28, 28
    if "cifar" in s:
        return 3, 32, 32
    return 3, 256, 256


class Net:
    def __init__(self, path):
        self.path = path
        self.text = open(path, encoding="utf-8", errors="replace").read()

    def is_solver(self):
        return re.search(r"^\s*(base_lr|train_net|test_iter|net)\s*:", self.text, re.M) is not None

    def phases(self):
        has_train = re.search(r"phase\s*:\s*TRAIN", self.text) is not None
        has_test = re.search(r"phase\s*:\s*TEST", self.text) is not None
        if has_train or has_test:
            return [p for p, h in (("TRAIN", has_train), ("TEST", has_test)) if h]
        return ["TEST"]

    def stages(self):
        """The stages the net's include rules name (a Caffe solver's test_state picks one; each is
        checked on its own, as `--stage S`), or [None] when it names none."""
        st = sorted(set(re.findall(r"\bstage\s*:\s*[\"']([^\"']+)[\"']", self.text)))
        return st or [None]


def prepare(net, scratch, exe, max_batch, log):
    """A scratch copy of the net with its data sources replaced by stand-ins."""
    text = net.text
    edits = []
    for k, (s, e, body) in enumerate(blocks(text)):
        typ = field(body, "type") or ""
        new = body
        src = field(body, "source")
        if typ in ("Data", "DATA") and src:
            c, h, w = guess_shape(src)
            backend = "leveldb" if re.search(r"backend\s*:\s*LEVELDB", body) or "leveldb" in src.lower() else "lmdb"
            if re.search(r"\bbackend\s*:", body) is None:
                backend = "leveldb"  # Caffe's default
            if re.search(r"backend\s*:\s*LMDB", body):
                backend = "lmdb"
            d = os.path.join(scratch, "db%d" % k)
            imgs = os.path.join(scratch, "img%d" % k)
            os.makedirs(imgs, exist_ok=True)
            with open(os.path.join(scratch, "list%d.txt" % k), "w") as lf:
                for i in range(6):
                    png(os.path.join(imgs, "%d.png" % i), w, h, 1 if c == 1 else 3, i)
                    lf.write("%d.png %d\n" % (i, i % 3))
            args = [exe, "convert-imageset", "--backend", backend]
            if c == 1:
                args.append("--gray")
            args += [imgs + "/", os.path.join(scratch, "list%d.txt" % k), d]
            if c == 2:  # Siamese pairs: two grey images stacked; a grey LMDB with 2 channels
                args = [PY, "-c", SIAMESE_WRITER, d, str(h), str(w)]
                backend = "lmdb"
                new = re.sub(r"\bbackend\s*:\s*\w+", "backend: LMDB", new)
                if re.search(r"\bbackend\s*:", new) is None:
                    new = re.sub(r"(data_param\s*\{)", r"\1 backend: LMDB", new, count=1)
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode:
                log.append("stand-in database: %s" % first_line(r.stderr or r.stdout))
            new = new.replace('"%s"' % src, '"%s"' % d, 1)
        elif typ in ("HDF5Data", "HDF5_DATA") and src:
            lst = os.path.join(scratch, "h5list%d.txt" % k)
            h5 = os.path.join(scratch, "h5_%d.h5" % k)
            tops = re.findall(r"\btop\s*:\s*\"([^\"]+)\"", body)
            code = ("import h5py, numpy as np, sys\nf = h5py.File(sys.argv[1], 'w')\n"
                    "for t in sys.argv[2:]:\n"
                    "  f[t] = (np.arange(10*4, dtype=np.float32).reshape(10, 4) % 3) if 'label' not in t else (np.arange(10, dtype=np.float32) % 2)\n")
            subprocess.run([PY, "-c", code, h5] + tops, check=False)
            open(lst, "w").write(h5 + "\n")
            new = new.replace('"%s"' % src, '"%s"' % lst, 1)
        elif typ in ("ImageData", "IMAGE_DATA") and src:
            imgs = os.path.join(scratch, "img%d" % k)
            os.makedirs(imgs, exist_ok=True)
            lst = os.path.join(scratch, "list%d.txt" % k)
            with open(lst, "w") as lf:
                for i in range(6):
                    png(os.path.join(imgs, "%d.png" % i), 256, 256, 3, i)
                    lf.write("%s %d\n" % (os.path.join(imgs, "%d.png" % i), i % 3))
            new = new.replace('"%s"' % src, '"%s"' % lst, 1)
            new = re.sub(r"root_folder\s*:\s*\"[^\"]*\"", 'root_folder: ""', new)
        mf = field(new, "mean_file")
        if mf and typ not in ("Python",):
            c, h, w = guess_shape(src or "")
            mp = os.path.join(scratch, "mean%d.binaryproto" % k)
            mean_binaryproto(mp, c, h, w)
            new = new.replace('"%s"' % mf, '"%s"' % mp)
        new = re.sub(r"\b(batch_size|batchsize)\s*:\s*(\d+)",
                     lambda m: "%s: %d" % (m.group(1), min(int(m.group(2)), max_batch)), new)
        if new != body:
            edits.append((s, e, body, new))
    for s, e, body, new in reversed(edits):
        text = text[:s] + text[s:e].replace(body, new, 1) + text[e:]
    out = os.path.join(scratch, "net.prototxt")
    open(out, "w").write(text)
    return out


SIAMESE_WRITER = r"""
import lmdb, struct, sys
def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f; v >>= 7
        if v: out.append(b | 0x80)
        else: out.append(b); return bytes(out)
path, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = lmdb.open(path, map_size=1 << 26)
with env.begin(write=True) as t:
    for i in range(6):
        px = bytes((37 * i + 11 * j) % 256 for j in range(2 * h * w))
        m = b'\x08' + varint(2) + b'\x10' + varint(h) + b'\x18' + varint(w)
        m += b'\x22' + varint(len(px)) + px + b'\x28' + varint(i % 2)
        t.put(b'%08d' % i, m)
"""


def run(args, cwd, timeout=900):
    try:
        r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        return r.returncode, (r.stdout + r.stderr)
    except subprocess.TimeoutExpired:
        return 124, "timed out after %d s" % timeout


def first_line(s):
    lines = [l for l in s.strip().splitlines() if l.strip()]
    return lines[0][:220] if lines else ""


def first_error(s):
    for l in s.splitlines():
        if "error" in l.lower() and not l.lower().startswith("check:"):
            return l.strip()[:260]
    return last_line(s)


def last_line(s):
    lines = [l for l in s.strip().splitlines() if l.strip()]
    return lines[-1][:220] if lines else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distilld", default=os.path.join(os.path.dirname(__file__), "..", "build", "distilld"))
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--keep", help="keep the scratch folders under DIR")
    ap.add_argument("roots", nargs="+")
    a = ap.parse_args()
    exe = os.path.abspath(a.distilld)
    nets = []
    for root in a.roots:
        if os.path.isfile(root):
            nets.append(root)
            continue
        for d, _, files in os.walk(root):
            nets += [os.path.join(d, f) for f in files if f.endswith(".prototxt")]
    nets.sort()
    base = a.keep or tempfile.mkdtemp(prefix="dd-public-")
    counts = {"pass": 0, "refused by design": 0, "FAIL": 0}
    for i, p in enumerate(nets):
        n = Net(p)
        if n.is_solver():
            continue
        scratch = os.path.join(base, "n%03d" % i)
        os.makedirs(scratch, exist_ok=True)
        log = []
        q = prepare(n, scratch, exe, a.max_batch, log)
        for ph, stage in [(ph, st) for ph in n.phases() for st in n.stages()]:
            sa = ["--stage", stage] if stage else []
            rc, out = run([exe, "check", q, "--phase", ph] + sa, cwd=os.path.dirname(os.path.abspath(p)))
            verdict, why = "pass", ""
            if rc == 2:
                verdict, why = "FAIL", "check: " + first_error(out)
            else:
                rt, tout = run([exe, "time", "--model", q, "--iterations", "1", "--phase", ph] + sa, cwd=os.path.dirname(os.path.abspath(p)))
                if rt:
                    verdict, why = "FAIL", "forward: " + last_line(tout)
                else:
                    why = last_line(tout)
            if verdict == "FAIL" and any(('"%s"' % t) in out and "refuse" in out.lower() or
                                         ("type %s" % t) in out for t in REFUSED_BY_DESIGN) \
                    or "not a layer type of BVLC Caffe" in out:
                verdict = "refused by design"
            if log and verdict == "FAIL":
                why += " [" + "; ".join(log) + "]"
            counts[verdict] += 1
            print("%-18s %-5s %s%s  %s" % (verdict, ph, p, " --stage " + stage if stage else "", why), flush=True)
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print("summary: %d pass, %d refused by design (Python, WindowData, fork layer types), %d FAIL" %
          (counts["pass"], counts["refused by design"], counts["FAIL"]))
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
