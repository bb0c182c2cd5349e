#!/usr/bin/env python3
"""Mutation run over the WGSL shaders: plants one small change at a time in a copy of shaders/ and runs the GPU
test binaries against it (through VAE_TEST_SHADER_DIR, so nothing is rebuilt). A mutant is killed when a test
fails, invalid when naga refuses it (tests/shaders.rs), and survives when every test passes.

    python3 tests/mutants/mutate.py                  # every mutant
    python3 tests/mutants/mutate.py --every 3        # every third (a quicker sample)
    python3 tests/mutants/mutate.py --file loss.wgsl --list

Mutation operators, each at one site of code (never in comments): an arithmetic operator swapped (+ -, * /), a
comparison flipped or loosened (< <=, > >=, == !=), min and max swapped, an integer literal off by one, a float
literal halved, and a barrier removed. Prints one line per mutant and a summary; exits 0.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHADERS = os.path.join(ROOT, "shaders")
BINARIES = ["kernels", "step", "iwae", "shaders"]

OPERATORS = [
    ("arith", re.compile(r"(?<=\s)\+(?=\s)"), "-"),
    ("arith", re.compile(r"(?<=\s)-(?=\s)"), "+"),
    ("arith", re.compile(r"(?<=\s)\*(?=\s)"), "/"),
    ("arith", re.compile(r"(?<=\s)/(?=\s)"), "*"),
    ("compare", re.compile(r"(?<=\s)<(?=\s)"), "<="),
    ("compare", re.compile(r"(?<=\s)<=(?=\s)"), "<"),
    ("compare", re.compile(r"(?<=\s)>(?=\s)"), ">="),
    ("compare", re.compile(r"(?<=\s)>=(?=\s)"), ">"),
    ("compare", re.compile(r"(?<=\s)==(?=\s)"), "!="),
    ("compare", re.compile(r"(?<=\s)!=(?=\s)"), "=="),
    ("minmax", re.compile(r"\bmax\("), "min("),
    ("minmax", re.compile(r"\bmin\("), "max("),
    ("int", re.compile(r"(?<![\w.])(\d+)u\b"), lambda m: f"{int(m.group(1)) + 1}u"),
    ("float", re.compile(r"(?<![\w.x])(\d+\.\d+)(?![\w.])"), lambda m: repr(float(m.group(1)) / 2)),
    ("barrier", re.compile(r"^\s*workgroupBarrier\(\);"), ""),
]


def code_part(line):
    """The part of a line before any // comment."""
    at = line.find("//")
    return line if at < 0 else line[:at]


def mutants(files):
    """(file, line number, operator, original line, mutated line) for every site."""
    for name in files:
        with open(os.path.join(SHADERS, name)) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            code = code_part(line)
            if not code.strip() or code.lstrip().startswith(("struct ", "@group", "override ", "const ")):
                continue
            for kind, pattern, repl in OPERATORS:
                for m in pattern.finditer(code):
                    new = repl(m) if callable(repl) else repl
                    mutated = code[: m.start()] + new + code[m.end() :] + line[len(code) :]
                    yield name, i + 1, kind, line, mutated


def test_binaries():
    out = subprocess.run(
        ["cargo", "test", "--release", "--no-run", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in BINARIES:
            found[m["target"]["name"]] = m["executable"]
    missing = set(BINARIES) - set(found)
    if missing:
        sys.exit(f"test binaries not built: {missing}")
    return found


def run(binaries, shader_dir, timeout):
    """'killed', 'invalid' (naga refuses the module) or 'survived'."""
    env = dict(os.environ, VAE_TEST_SHADER_DIR=shader_dir)
    shaders = subprocess.run([binaries["shaders"], "every_family_validates"], env=env, capture_output=True,
                             timeout=timeout)
    if shaders.returncode != 0:
        return "invalid"
    for name in BINARIES:
        if name == "shaders":
            continue
        try:
            p = subprocess.run([binaries[name], "--test-threads", "2"], env=env, capture_output=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed"  # a hang is a detected change too
        if p.returncode != 0:
            return "killed"
    return "survived"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", action="append", help="only these shader files (repeatable)")
    ap.add_argument("--every", type=int, default=1, help="take every Nth mutant (a deterministic sample)")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per test binary")
    args = ap.parse_args()
    files = args.file or sorted(f for f in os.listdir(SHADERS) if f.endswith(".wgsl"))
    planted = list(mutants(files))[:: args.every]
    if args.list:
        for m in planted:
            print(f"{m[0]}:{m[1]} {m[2]}: {m[3].strip()}  =>  {m[4].strip()}")
        print(f"{len(planted)} mutants")
        return
    binaries = test_binaries()
    counts = {"killed": 0, "survived": 0, "invalid": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for name, line, kind, before, after in planted:
            for f in os.listdir(SHADERS):
                shutil.copy(os.path.join(SHADERS, f), tmp)
            with open(os.path.join(SHADERS, name)) as f:
                lines = f.read().split("\n")
            lines[line - 1] = after
            with open(os.path.join(tmp, name), "w") as f:
                f.write("\n".join(lines))
            result = run(binaries, tmp, args.timeout)
            counts[result] += 1
            print(f"{result:<9} {name}:{line} {kind}: {before.strip()}  =>  {after.strip()}", flush=True)
    valid = counts["killed"] + counts["survived"]
    print(
        f"\n{len(planted)} mutants planted: {counts['invalid']} refused by naga, {valid} valid; "
        f"{counts['killed']} of {valid} killed, {counts['survived']} survived"
    )


if __name__ == "__main__":
    main()
