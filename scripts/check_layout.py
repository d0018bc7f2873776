#!/usr/bin/env python3
"""The house rules of the source tree (issue 15), checked; ctest runs this as test_layout.

    python3 scripts/check_layout.py [--source DIR] [--build DIR] [--nm NM] [-v]

  --source DIR  the project's root (default: the folder above this script)
  --build DIR   a build folder of the project (its object files and libdd_core.a / libdd_cuda.a);
                without it the checks that read object files are skipped, with a message
  --nm NM       the nm to use (default: nm)
  -v            also list what was exempted and how many files and functions were read

Rules (each offender is listed under its rule; the exit status is 1 when there is any):
  1. no source file (*.c, *.h, *.cu, *.cuh under core/, cuda/, daemon/, tests/, proto/; generated
     files, tests/data and tests/fuzz/corpus aside) over MAX_FILE_LINES lines;
  2. no function over MAX_FUNCTION_LINES lines (from the line naming it to its closing brace),
     except a function whose body is mostly an initializer table and the entries of
     ALLOWED_LONG_FUNCTIONS below;
  3. no include cycle between project files (`#include "x/y.h"` resolved against the including
     file's folder, core/, cuda/, daemon/ and the root);
  4. no call cycle between files: with --build, each object file's defined and undefined global
     symbols (nm) give edges between the source files they were compiled from; any cycle through
     two or more files is an offender (static functions are local symbols and make no edges);
  5. no file tracked by git names the sibling shared folder or an absolute path of this machine
     (the forbidden spellings are in FORBIDDEN_PATHS);
  6. dd_core does not link dd_cuda: the top CMakeLists.txt's target_link_libraries(dd_core ...) does
     not name dd_cuda, and (with --build) no object of libdd_core.a has an undefined symbol that
     only libdd_cuda.a defines.

Standard library only. The C "parser" is rough on purpose: comments, strings and preprocessor
lines are blanked, and a top-level `{` whose header ends in a parameter list (and has no `=`
outside parentheses) opens a function body."""

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict

MAX_FILE_LINES = 900
MAX_FUNCTION_LINES = 150

SOURCE_DIRS = ("core", "cuda", "daemon", "tests", "proto")
SOURCE_EXTS = (".c", ".h", ".cu", ".cuh")
EXCLUDED_DIRS = ("tests/data", "tests/fuzz/corpus")
INCLUDE_ROOTS = ("core", "cuda", "daemon", "")

# Functions allowed over MAX_FUNCTION_LINES: "path:function" -> the reason. Keep it empty.
ALLOWED_LONG_FUNCTIONS = {}

# Spelled in pieces so that this file does not name them itself.
FORBIDDEN_PATHS = (
    ".." + "/shared",
    "/" + "work/",
    "/" + "home/",
    "/" + "Users/",
)


def rel(path, root):
    return os.path.relpath(path, root).replace(os.sep, "/")


def is_generated(relpath):
    return ".pb-c." in os.path.basename(relpath)


def source_files(root):
    """The project's C and CUDA sources and headers on disk (tracked or not), sorted."""
    out = []
    for top in SOURCE_DIRS:
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            r = rel(dirpath, root)
            dirnames[:] = sorted(d for d in dirnames
                                 if not any((r + "/" + d) == e or (r + "/" + d).startswith(e + "/")
                                            for e in EXCLUDED_DIRS))
            for f in sorted(filenames):
                p = r + "/" + f
                if f.endswith(SOURCE_EXTS) and not is_generated(p):
                    out.append(p)
    return sorted(out)


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


# ---- a rough C scanner ------------------------------------------------------------------------------

def blank_comments_and_strings(text):
    """Comments become spaces, string and character literals keep their quotes with their contents
    blanked; every newline stays where it was, so line numbers do not move."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            body = text[i + 1:j - 1]
            out.append(c + re.sub(r"[^\n]", " ", body) + (text[j - 1] if j - 1 > i else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def blank_preprocessor(text, first_branch_only):
    """Preprocessor lines (with their continuations) become blank. With first_branch_only, the
    #elif / #else branches of every conditional are blanked too, so that a function whose header is
    written twice (#ifdef X ... { #else ... { #endif) still has balanced braces."""
    lines = text.split("\n")
    out = []
    cont = False
    depth = 0
    skip_from = None  # the #if depth at which an #else branch is being skipped
    for line in lines:
        stripped = line.lstrip()
        if cont or stripped.startswith("#"):
            if not cont:
                m = re.match(r"#\s*(\w+)", stripped)
                d = m.group(1) if m else ""
                if d in ("if", "ifdef", "ifndef"):
                    depth += 1
                elif d in ("elif", "else") and first_branch_only and skip_from is None:
                    skip_from = depth
                elif d == "endif":
                    if skip_from == depth:
                        skip_from = None
                    depth -= 1
            cont = line.endswith("\\")
            out.append("")
        elif skip_from is not None:
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def matching_open_paren(s, close):
    depth = 0
    for k in range(close, -1, -1):
        if s[k] == ")":
            depth += 1
        elif s[k] == "(":
            depth -= 1
            if depth == 0:
                return k
    return -1


def has_top_level_equals(header):
    depth = 0
    for k, ch in enumerate(header):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "=" and depth == 0:
            prev = header[k - 1] if k else ""
            nxt = header[k + 1] if k + 1 < len(header) else ""
            if prev not in "=!<>" and nxt != "=":
                return True
    return False


def function_name(header):
    """The name of the function a top-level header defines, or None when it defines none."""
    h = header.strip()
    if not h or has_top_level_equals(h):
        return None
    if re.match(r"^(typedef\b|struct\b|union\b|enum\b|class\b)", h) and "(" not in h:
        return None
    # a C++ constructor's initializer list, trailing qualifiers
    h = re.sub(r"\)\s*:\s*[^()]*\(.*$", ")", h, flags=re.S)
    h = re.sub(r"\)\s*(const|noexcept|override|final|\s)*$", ")", h)
    while h.endswith(")"):
        op = matching_open_paren(h, len(h) - 1)
        if op <= 0:
            return None
        m = re.search(r"([A-Za-z_]\w*)\s*$", h[:op])
        if not m:
            return None
        name = m.group(1)
        if name in ("__attribute__", "__declspec", "__launch_bounds__"):
            h = h[:m.start()].rstrip()  # a trailing attribute: the parameter list is before it
            continue
        if name in ("if", "while", "for", "switch", "return", "sizeof"):
            return None
        arg = h[op + 1:-1].strip()
        if name.isupper() and re.match(r"^[A-Za-z_]\w*$", arg):
            return "%s(%s)" % (name, arg)  # a test macro: DTEST(test_x) { ... }
        return name
    return None


def scan_functions(code):
    """Top-level function bodies of blanked code: (name, first line, last line, table lines),
    or None when the braces do not balance. Table lines are the lines of the body's brace
    initializers (`= {` ... `}`), outermost ones only."""
    funcs = []
    line_starts = [0] + [m.end() for m in re.finditer(r"\n", code)]

    def line_of(pos):
        lo, hi = 0, len(line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    ns = 0             # open extern "C" { / namespace x { (transparent)
    opens = []         # the braces open at this point: True for an initializer's
    header_start = 0
    fn = None
    for k, ch in enumerate(code):
        if ch == "{":
            if not opens:
                header = code[header_start:k]
                if re.match(r'^(extern\s*"[^"]*"|namespace(\s+\w+)?)$', header.strip()):
                    ns += 1
                    header_start = k + 1
                    continue
                name = function_name(header)
                fn = None
                if name:
                    m = re.search(r"\b" + re.escape(name.split("(")[0]) + r"\s*\(", header)
                    start = header_start + (m.start() if m else 0)
                    fn = {"name": name, "start": line_of(start), "table": 0}
                opens.append(False)
            else:
                table = code[:k].rstrip().endswith("=")
                if table and not any(opens) and fn is not None:
                    fn["table_open"] = k
                opens.append(table)
        elif ch == "}":
            if not opens:
                if ns:
                    ns -= 1
                    header_start = k + 1
                    continue
                return None
            was_table = opens.pop()
            if was_table and not any(opens) and fn is not None:
                fn["table"] += line_of(k) - line_of(fn["table_open"]) + 1
            if not opens:
                if fn is not None:
                    funcs.append((fn["name"], fn["start"], line_of(k), fn["table"]))
                    fn = None
                header_start = k + 1
        elif ch == ";" and not opens:
            header_start = k + 1
    if opens or ns:
        return None
    return funcs


def functions_of(text):
    code = blank_comments_and_strings(text)
    funcs = scan_functions(blank_preprocessor(code, first_branch_only=False))
    if funcs is None:
        funcs = scan_functions(blank_preprocessor(code, first_branch_only=True))
    return funcs


# ---- the checks -------------------------------------------------------------------------------------

def check_sizes(root, files, findings, notes, verbose):
    exempt = []
    for p in files:
        text = read_text(os.path.join(root, p))
        n = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        if n > MAX_FILE_LINES:
            findings["1. files over %d lines" % MAX_FILE_LINES].append("%s: %d lines" % (p, n))
        funcs = functions_of(text)
        if funcs is None:
            findings["2. functions over %d lines" % MAX_FUNCTION_LINES].append(
                "%s: braces do not balance, functions not measured (a parser limit: split the "
                "#if branches that open a function twice)" % p)
            continue
        for name, a, b, table in funcs:
            length = b - a + 1
            if length <= MAX_FUNCTION_LINES:
                continue
            key = "%s:%s" % (p, name)
            if key in ALLOWED_LONG_FUNCTIONS:
                exempt.append("%s:%d: %s, %d lines (allowed: %s)" % (p, a, name, length,
                                                                     ALLOWED_LONG_FUNCTIONS[key]))
            elif table * 2 >= length:
                exempt.append("%s:%d: %s, %d lines (%d of them an initializer table)" %
                              (p, a, name, length, table))
            else:
                findings["2. functions over %d lines" % MAX_FUNCTION_LINES].append(
                    "%s:%d: %s: %d lines" % (p, a, name, length))
    if verbose:
        for e in exempt:
            notes.append("exempt: " + e)
    for key in ALLOWED_LONG_FUNCTIONS:
        path = key.split(":")[0]
        if path not in files:
            notes.append("ALLOWED_LONG_FUNCTIONS names %s, which no longer exists" % key)


def strongly_connected(nodes, edges):
    """Tarjan's algorithm (iterative): the components of the graph, each a sorted list."""
    index, low, on, st, comps = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        st.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    st.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                elif w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = st.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def a_cycle(comp, edges):
    """One cycle through the component's first node, as a list of nodes (first repeated last)."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [start]


def check_includes(root, files, findings):
    fileset = set(files)
    edges = defaultdict(set)
    for p in files:
        text = read_text(os.path.join(root, p))
        for m in re.finditer(r'^\s*#\s*include\s*"([^"]+)"', text, flags=re.M):
            inc = m.group(1)
            cands = [os.path.normpath(os.path.join(os.path.dirname(p), inc))]
            cands += [os.path.normpath(os.path.join(r, inc)) for r in INCLUDE_ROOTS]
            for c in cands:
                c = c.replace(os.sep, "/")
                if c in fileset:
                    edges[p].add(c)
                    break
    for comp in strongly_connected(files, edges):
        if len(comp) > 1:
            findings["3. include cycles"].append(" -> ".join(a_cycle(comp, edges)))
    for p in files:
        if p in edges[p]:
            findings["3. include cycles"].append("%s includes itself" % p)


def run_nm(nm, paths):
    """{path: [(name, type)]} for object files or archives (an archive's members are merged)."""
    out = defaultdict(list)
    for k in range(0, len(paths), 200):
        batch = paths[k:k + 200]
        try:
            res = subprocess.run([nm, "-P", "-A"] + batch, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, universal_newlines=True, check=False)
        except OSError as e:
            raise SystemExit("check_layout: cannot run %s: %s" % (nm, e))
        for line in res.stdout.splitlines():
            # "path: name type [value size]" or "archive[member.o]: name type ..."
            head, sep, rest = line.partition(": ")
            if not sep:
                continue
            fields = rest.split()
            if len(fields) < 2:
                continue
            path = re.sub(r"\[[^\]]*\]$", "", head)
            out[path].append((fields[0], fields[1]))
    return out


def is_defined_global(t):
    return t in "ABCDGIRSTVWiu" and t not in "Uvw" and (t.isupper() or t in "iu")


def is_undefined(t):
    return t in "Uvw"


def object_sources(root, build):
    """{object file: source file relative to root} for the project's objects in the build folder;
    objects whose source no longer exists (a stale build) are left out and counted, and the sources
    edited since their object was built are listed."""
    objs, stale, older = {}, 0, []
    for dirpath, dirnames, filenames in os.walk(build):
        dirnames.sort()
        m = re.search(r"^(.*?)/?CMakeFiles/[^/]+\.dir(/.*)?$", rel(dirpath, build))
        if not m:
            continue
        sub = m.group(1)
        inner = (m.group(2) or "").lstrip("/")
        for f in filenames:
            if not f.endswith(".o") or f.startswith("cmake_device_link"):
                continue
            src_rel = (inner + "/" + f[:-2]).lstrip("/")
            if not src_rel.endswith(SOURCE_EXTS):
                continue
            found = None
            for cand_root, prefix in ((root, sub), (build, sub), (root, "")):
                cand = os.path.normpath(os.path.join(cand_root, prefix, src_rel))
                if os.path.isfile(cand):
                    found = rel(cand, root) if cand_root == root else \
                        "<build>/" + rel(cand, build)
                    break
            if found is None:
                stale += 1
                continue
            obj = os.path.join(dirpath, f)
            objs[obj] = found
            if not found.startswith("<build>/") and os.path.getmtime(obj) < os.path.getmtime(os.path.join(root, found)):
                older.append(found)
    return objs, stale, older


def check_calls(root, build, nm, findings, notes):
    objs, stale, older = object_sources(root, build)
    if not objs:
        notes.append("4. call cycles: no object files under %s: skipped" % build)
        return
    if stale:
        notes.append("4. call cycles: %d object files whose source is gone were ignored" % stale)
    if older:
        notes.append("4. call cycles: %d sources changed since the build (rebuild for exact results), e.g. %s"
                     % (len(older), ", ".join(sorted(older)[:3])))
    syms = run_nm(nm, sorted(objs))
    defined = defaultdict(set)
    undefined = defaultdict(set)
    for obj, src in objs.items():
        for name, t in syms.get(obj, ()):
            if is_defined_global(t):
                defined[name].add(src)
            elif is_undefined(t):
                undefined[src].add(name)
    edges = defaultdict(set)
    why = defaultdict(set)
    for src, names in undefined.items():
        for name in names:
            for d in defined.get(name, ()):
                if d != src:
                    edges[src].add(d)
                    why[(src, d)].add(name)
    nodes = set(objs.values())
    for comp in strongly_connected(nodes, edges):
        if len(comp) > 1:
            cyc = a_cycle(comp, edges)
            steps = []
            for a, b in zip(cyc, cyc[1:]):
                names = sorted(why[(a, b)])
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                steps.append("%s -> %s (%s)" % (a, b, shown))
            findings["4. call cycles between files"].append(
                "%d files: %s\n      %s" % (len(comp), " ".join(comp), "\n      ".join(steps)))
    notes.append("4. call cycles: %d object files read" % len(objs))


def check_forbidden_paths(root, findings, notes):
    try:
        res = subprocess.run(["git", "-C", root, "ls-files", "-z"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=False)
    except OSError:
        notes.append("5. paths outside the repository: git not found: skipped")
        return
    if res.returncode != 0:
        notes.append("5. paths outside the repository: not a git checkout: skipped")
        return
    pats = [p.encode() for p in FORBIDDEN_PATHS]
    for p in sorted(x.decode("utf-8", "replace") for x in res.stdout.split(b"\0") if x):
        full = os.path.join(root, p)
        if not os.path.isfile(full) or os.path.islink(full):
            continue
        with open(full, "rb") as f:
            data = f.read()
        if b"\0" in data[:8192]:
            continue  # binary
        for lineno, line in enumerate(data.split(b"\n"), 1):
            hit = [pat.decode() for pat in pats if pat in line]
            if hit:
                findings["5. files naming a path outside the repository"].append(
                    "%s:%d: names %s" % (p, lineno, ", ".join(hit)))


def cmake_calls(text, command, target):
    """The arguments of every `command(target ...)` in a CMakeLists text (comments removed)."""
    text = re.sub(r"#[^\n]*", "", text)
    out = []
    for m in re.finditer(r"\b%s\s*\(\s*%s\b([^)]*)\)" % (command, re.escape(target)), text):
        out.append(m.group(1).split())
    return out


def check_core_cuda(root, build, nm, findings, notes):
    top = os.path.join(root, "CMakeLists.txt")
    if os.path.isfile(top):
        for args in cmake_calls(read_text(top), "target_link_libraries", "dd_core"):
            if "dd_cuda" in args:
                findings["6. dd_core links dd_cuda"].append(
                    "CMakeLists.txt: target_link_libraries(dd_core %s)" % " ".join(args))
    if build is None:
        return
    libs = {}
    for dirpath, dirnames, filenames in os.walk(build):
        for name in ("libdd_core.a", "libdd_cuda.a"):
            if name in filenames and name not in libs:
                libs[name] = os.path.join(dirpath, name)
    if "libdd_core.a" not in libs:
        notes.append("6. no libdd_core.a under %s: the symbol check is skipped" % build)
        return
    if "libdd_cuda.a" not in libs:
        notes.append("6. no libdd_cuda.a under %s (a build without CUDA): the symbol check is skipped"
                     % build)
        return
    core = run_nm(nm, [libs["libdd_core.a"]])[libs["libdd_core.a"]]
    cuda = run_nm(nm, [libs["libdd_cuda.a"]])[libs["libdd_cuda.a"]]
    core_def = {n for n, t in core if is_defined_global(t)}
    cuda_def = {n for n, t in cuda if is_defined_global(t)}
    for name in sorted({n for n, t in core if is_undefined(t)}):
        if name in cuda_def and name not in core_def:
            findings["6. dd_core links dd_cuda"].append(
                "libdd_core.a needs %s, which only libdd_cuda.a defines" % name)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--build", default=None)
    ap.add_argument("--nm", default="nm")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    root = os.path.abspath(args.source)
    build = os.path.abspath(args.build) if args.build else None

    findings = defaultdict(list)
    notes = []
    files = source_files(root)
    check_sizes(root, files, findings, notes, args.verbose)
    check_includes(root, files, findings)
    if build is None:
        notes.append("4. call cycles: no build folder given (--build): skipped")
    elif not os.path.isdir(build):
        raise SystemExit("check_layout: no build folder %s" % build)
    else:
        check_calls(root, build, args.nm, findings, notes)
    check_forbidden_paths(root, findings, notes)
    check_core_cuda(root, build, args.nm, findings, notes)

    notes.insert(0, "%d source files read under %s" % (len(files), ", ".join(SOURCE_DIRS)))
    for n in notes:
        print("check_layout: " + n)
    total = sum(len(v) for v in findings.values())
    for rule in sorted(findings):
        print("\n%s: %d" % (rule, len(findings[rule])))
        for f in findings[rule]:
            print("  " + f)
    if total:
        print("\ncheck_layout: FAILED, %d offenders" % total)
        return 1
    print("check_layout: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
