#!/usr/bin/env python3
"""A static check of deploy/Containerfile for machines without a container engine.

    deploy/check_containerfile.py [--context DIR] [--deps scripts/install-deps.sh] [FILE]

FILE defaults to the Containerfile next to this script; the build context defaults to the
repository root (the parent of FILE's folder, as `docker build -f deploy/Containerfile .` has it).
Checks, each failure printed as FILE:LINE: message:

  * parser directives (# syntax=, # escape=) only at the top; the escape character is \\ or `
  * line continuations: none at the end of the file, no blank line inside one, no whitespace after
    the escape character (both are accepted by some builders and silently mean something else)
  * every instruction is a Dockerfile instruction, written in upper case; ARG is the only one
    allowed before the first FROM; variables in FROM are ARGs declared before it
  * FROM names an image (and an optional AS stage); COPY --from= names an earlier stage or an image
  * every COPY/ADD source without --from= exists in the build context, stays inside it, and is
    not excluded by FILE.dockerignore when that file allows only what it lists ("*" then "!path")
  * ENTRYPOINT (and CMD) in exec form: a JSON array of strings
  * the last stage switches to a user other than root (USER)
  * WORKDIR paths are absolute; STOPSIGNAL names a signal; EXPOSE takes ports
  * with --deps: every package scripts/install-deps.sh installs appears in FILE, installed or
    named in a comment that says why it is left out (so the two lists cannot drift apart)

Heredocs (RUN <<EOF) are refused: this checker does not parse them. Exit status 0 when every check
passes, 1 otherwise, 2 on a usage error. Standard library only.
"""
import argparse
import glob
import json
import os
import re
import sys

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
SIGNALS = {
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGCONT", "SIGSTOP",
    "SIGWINCH", "SIGPWR", "SIGRTMIN",
}
DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


class Checker:
    def __init__(self, path, context):
        self.path = path
        self.context = os.path.realpath(context)
        self.errors = []

    def error(self, line, msg):
        self.errors.append("%s:%d: %s" % (self.path, line, msg))

    # ---- lexing: physical lines to (line number, instruction, arguments) ----------------------
    def logical_lines(self, text):
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        escape = "\\"
        i = 0
        # parser directives: only before any other line (comment, blank or instruction)
        seen = set()
        while i < len(lines):
            m = DIRECTIVE.match(lines[i])
            if not m or m.group(1).lower() not in ("syntax", "escape", "check"):
                break
            name = m.group(1).lower()
            if name in seen:
                self.error(i + 1, "parser directive %s given twice" % name)
            seen.add(name)
            if name == "escape":
                if m.group(2) not in ("\\", "`"):
                    self.error(i + 1, "escape directive: %r is not \\ or `" % m.group(2))
                else:
                    escape = m.group(2)
            i += 1
        for j in range(i, len(lines)):
            m = DIRECTIVE.match(lines[j])
            if m and m.group(1).lower() in ("syntax", "escape"):
                self.error(j + 1, "parser directive %s below the top of the file is only a comment" % m.group(1))
        out = []
        while i < len(lines):
            raw = lines[i]
            start = i
            i += 1
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            parts = []
            cur = raw
            while True:
                body = cur.rstrip()
                if body.endswith(escape):
                    if cur != body:
                        self.error(i, "whitespace after the line continuation %r" % escape)
                    parts.append(body[:-1])
                    # continuation: comment lines inside are dropped (as Docker does)
                    while i < len(lines) and lines[i].strip().startswith("#"):
                        i += 1
                    if i >= len(lines):
                        self.error(i, "the file ends inside a line continuation")
                        break
                    if not lines[i].strip():
                        self.error(i + 1, "blank line inside a line continuation")
                        # carry on as Docker would, past blank lines
                        while i < len(lines) and not lines[i].strip():
                            i += 1
                        if i >= len(lines):
                            self.error(i, "the file ends inside a line continuation")
                            break
                    cur = lines[i]
                    i += 1
                    continue
                parts.append(cur)
                break
            logical = " ".join(p.strip() for p in parts).strip()
            m = re.match(r"^(\S+)\s*(.*)$", logical)
            if m:
                out.append((start + 1, m.group(1), m.group(2)))
        return out

    # ---- helpers ------------------------------------------------------------------------------
    @staticmethod
    def split_flags(args):
        """Leading --flag[=value] words, then the rest (a string)."""
        flags = {}
        rest = args
        while True:
            m = re.match(r"^--([A-Za-z-]+)(?:=(\S*))?\s*(.*)$", rest)
            if not m:
                return flags, rest
            flags[m.group(1)] = m.group(2) if m.group(2) is not None else True
            rest = m.group(3)

    def exec_form(self, line, name, args):
        try:
            v = json.loads(args)
        except ValueError as e:
            self.error(line, "%s is not in exec form (a JSON array of strings): %s" % (name, e))
            return None
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            self.error(line, "%s: want a non-empty JSON array of strings, got %s" % (name, args))
            return None
        return v

    def allowlist(self):
        """The paths a '*' then '!path' ignore file lets through; None when there is no such file."""
        ign = self.path + ".dockerignore"
        if not os.path.exists(ign):
            return None
        pats = []
        with open(ign) as f:
            for ln in f:
                ln = ln.strip()
                if ln and not ln.startswith("#"):
                    pats.append(ln)
        if not pats or pats[0] != "*":
            return None
        return [p[1:].strip("/") for p in pats[1:] if p.startswith("!")]

    def check_sources(self, line, srcs, allow):
        for s in srcs:
            if re.match(r"^[a-z]+://", s) or s.startswith("git@"):
                continue  # ADD of a URL
            if VAR.search(s):
                self.error(line, "COPY source %r uses a variable: cannot check it" % s)
                continue
            rel = os.path.normpath(s.lstrip("/"))
            full = os.path.realpath(os.path.join(self.context, rel))
            if full != self.context and not full.startswith(self.context + os.sep):
                self.error(line, "COPY source %r leaves the build context %s" % (s, self.context))
                continue
            matches = glob.glob(os.path.join(self.context, rel)) if any(c in rel for c in "*?[") else (
                [full] if os.path.exists(full) else [])
            if not matches:
                self.error(line, "COPY source %r does not exist in the build context %s" % (s, self.context))
                continue
            if allow is not None and rel != "." and not any(
                    rel == a or rel.startswith(a + "/") for a in allow):
                self.error(line, "COPY source %r is excluded by %s.dockerignore" % (s, os.path.basename(self.path)))

    # ---- the checks ---------------------------------------------------------------------------
    def run(self, text, deps=None):
        insts = self.logical_lines(text)
        if not insts:
            self.error(1, "no instructions")
            return self.errors
        allow = self.allowlist()
        global_args = set()
        stages = []  # names (or None)
        stage_user = None
        stage_args = set()
        entry = None
        for line, word, args in insts:
            up = word.upper()
            if up not in INSTRUCTIONS:
                self.error(line, "unknown instruction %r" % word)
                continue
            if word != up:
                self.error(line, "instruction %r: write it in upper case (%s)" % (word, up))
            if "<<" in args and up in ("RUN", "COPY", "ADD"):
                self.error(line, "%s uses a heredoc, which this checker does not parse" % up)
                continue
            if not stages and up not in ("FROM", "ARG"):
                self.error(line, "%s before the first FROM (only ARG may come first)" % up)
            if up == "FROM":
                flags, rest = self.split_flags(args)
                m = re.match(r"^(\S+)(?:\s+[Aa][Ss]\s+([A-Za-z][A-Za-z0-9_.-]*))?$", rest)
                if not m:
                    self.error(line, "FROM: want IMAGE[:TAG] [AS NAME], got %r" % args)
                    stages.append(None)
                else:
                    for v in VAR.finditer(m.group(1)):
                        name = v.group(1) or v.group(2)
                        if name not in global_args:
                            self.error(line, "FROM uses ${%s}, which no ARG before the first FROM declares" % name)
                    img = VAR.sub("x", m.group(1))
                    if not re.match(r"^[a-z0-9][a-z0-9._/:@-]*$", img, re.I):
                        self.error(line, "FROM: %r is not an image reference" % m.group(1))
                    if m.group(2) and m.group(2).lower() in [s for s in stages if s]:
                        self.error(line, "stage name %r used twice" % m.group(2))
                    stages.append(m.group(2).lower() if m.group(2) else None)
                stage_user = None
                stage_args = set()
                continue
            if up == "ARG":
                m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(=.*)?$", args.strip())
                if not m:
                    self.error(line, "ARG: want NAME[=DEFAULT], got %r" % args)
                elif not stages:
                    global_args.add(m.group(1))
                else:
                    stage_args.add(m.group(1))
                continue
            if not args.strip() and up not in ("HEALTHCHECK",):
                self.error(line, "%s without arguments" % up)
                continue
            if up in ("COPY", "ADD"):
                flags, rest = self.split_flags(args)
                for k in flags:
                    if k not in ("from", "chown", "chmod", "link", "parents", "exclude", "checksum", "keep-git-dir"):
                        self.error(line, "%s: unknown flag --%s" % (up, k))
                if rest.startswith("["):
                    words = self.exec_form(line, up, rest)
                    if words is None:
                        continue
                else:
                    words = rest.split()
                if len(words) < 2:
                    self.error(line, "%s: want SOURCE... DEST, got %r" % (up, rest))
                    continue
                src = flags.get("from")
                if src:
                    if src is True:
                        self.error(line, "%s --from needs a value" % up)
                    elif src.lower() not in [s for s in stages[:-1] if s] and not src.isdigit() and "/" not in src and ":" not in src:
                        self.error(line, "%s --from=%s names no earlier stage" % (up, src))
                    elif src.isdigit() and int(src) >= len(stages) - 1:
                        self.error(line, "%s --from=%s names no earlier stage" % (up, src))
                else:
                    self.check_sources(line, words[:-1], allow)
                continue
            if up in ("ENTRYPOINT", "CMD"):
                v = self.exec_form(line, up, args.strip())
                if up == "ENTRYPOINT":
                    entry = (line, v)
                continue
            if up == "USER":
                stage_user = args.strip().split(":")[0]
                continue
            if up == "WORKDIR":
                if not args.strip().startswith("/") and not args.strip().startswith("$"):
                    self.error(line, "WORKDIR %r is not absolute" % args.strip())
                continue
            if up == "STOPSIGNAL":
                s = args.strip().upper()
                if s not in SIGNALS and not s.isdigit() and not re.match(r"^SIGRTMIN\+\d+$", s):
                    self.error(line, "STOPSIGNAL %r is not a signal" % args.strip())
                continue
            if up == "EXPOSE":
                for p in args.split():
                    if not re.match(r"^\d+(-\d+)?(/(tcp|udp))?$", p):
                        self.error(line, "EXPOSE %r is not a port" % p)
                continue
            if up in ("ENV", "LABEL"):
                if "=" not in args and up == "LABEL":
                    self.error(line, "LABEL: want KEY=VALUE")
                continue
        if not stages:
            self.error(insts[-1][0], "no FROM")
        if entry is None:
            self.error(insts[-1][0], "no ENTRYPOINT")
        if stage_user is None:
            self.error(insts[-1][0], "the last stage never sets USER: the container would run as root")
        elif stage_user in ("root", "0"):
            self.error(insts[-1][0], "the last stage runs as root (USER %s)" % stage_user)
        if deps:
            self.check_deps(text, deps)
        return self.errors

    def check_deps(self, text, deps):
        try:
            with open(deps) as f:
                script = f.read()
        except OSError as e:
            self.error(1, "--deps: %s" % e)
            return
        m = re.search(r"^pkgs=\((.*?)^\)", script, re.S | re.M)
        if not m:
            self.error(1, "--deps: no pkgs=( ... ) list in %s" % deps)
            return
        pkgs = []
        for ln in m.group(1).split("\n"):
            pkgs += ln.split("#")[0].split()
        for p in pkgs:
            if not re.search(r"(?<![A-Za-z0-9.+-])" + re.escape(p) + r"(?![A-Za-z0-9.+-])", text):
                self.error(1, "%s installs %s; the Containerfile neither installs it nor says why it is left out"
                           % (deps, p))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", default=os.path.join(here, "Containerfile"))
    ap.add_argument("--context", help="the build context (default: the parent of FILE's folder)")
    ap.add_argument("--deps", help="scripts/install-deps.sh, whose packages FILE must account for")
    a = ap.parse_args()
    try:
        with open(a.file) as f:
            text = f.read()
    except OSError as e:
        print("check_containerfile: %s" % e, file=sys.stderr)
        return 2
    context = a.context or os.path.dirname(os.path.dirname(os.path.abspath(a.file)))
    if not os.path.isdir(context):
        print("check_containerfile: the context %s is not a folder" % context, file=sys.stderr)
        return 2
    errors = Checker(a.file, context).run(text, a.deps)
    for e in errors:
        print(e)
    if errors:
        print("check_containerfile: %d problem(s) in %s" % (len(errors), a.file))
        return 1
    print("check_containerfile: %s: ok" % a.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
