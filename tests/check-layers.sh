#!/bin/sh
# SPDX-License-Identifier: MIT
# The layers of src/ (docs/architecture.md), checked from the object files:
# file A uses file B when A's object leaves undefined a symbol B's object
# defines. Fails on any cycle, and on any use of a higher layer.
#   tests/check-layers.sh
# The layer of a file is its folder's rank below; files of one folder may
# use each other as long as no cycle forms.
set -eu
cd "$(dirname "$0")/.."
out=build/layers
rm -rf "$out"
mkdir -p "$out"
for f in src/registry/*.c src/shim/*/*.c; do
    ${CC:-cc} -std=c11 -fPIC -fvisibility=hidden -pthread -O1 -c "$f" \
        -o "$out/$(echo "${f#src/}" | tr / :).o"
done
python3 - "$out" <<'PY'
import collections, glob, os, subprocess, sys
# lower ranks first: a file may use its own rank or a lower one
RANK = {"registry": 0, "shim/base": 0, "shim/port": 1, "shim/redirect": 2,
        "shim/policy": 3, "shim/modes": 4, "shim/entry": 5}
defs, uses = {}, collections.defaultdict(set)
files = []
for o in sorted(glob.glob(os.path.join(sys.argv[1], "*.o"))):
    f = "src/" + os.path.basename(o)[:-2].replace(":", "/")
    files.append(f)
    for line in subprocess.run(["nm", o], capture_output=True, text=True, check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "TDBRCVGS":
            defs.setdefault(p[2], f)
        elif len(p) == 2 and p[0] == "U":
            uses[f].add(p[1])
edges = collections.defaultdict(set)
for f, syms in uses.items():
    for s in syms:
        if s in defs and defs[s] != f:
            edges[f].add(defs[s])
bad = 0
def folder(f):
    return os.path.dirname(f)[len("src/"):]
for f in files:
    if folder(f) not in RANK:
        print(f"check-layers: {f}: its folder has no layer (tests/check-layers.sh RANK)")
        bad += 1
for f, to in sorted(edges.items()):
    for t in sorted(to):
        if RANK.get(folder(t), 99) > RANK.get(folder(f), -1):
            print(f"check-layers: {f} uses {t}, a higher layer")
            bad += 1
# cycles: depth-first search, reporting each back edge's circle
state, stack = {}, []
def visit(f):
    global bad
    state[f] = 1
    stack.append(f)
    for t in sorted(edges.get(f, ())):
        if state.get(t) == 1:
            print("check-layers: cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            bad += 1
        elif t not in state:
            visit(t)
    stack.pop()
    state[f] = 2
for f in files:
    if f not in state:
        visit(f)
n = sum(len(t) for t in edges.values())
if bad:
    print(f"check-layers: {bad} problem(s) in {len(files)} files, {n} uses")
    sys.exit(1)
print(f"check-layers: ok ({len(files)} files, {n} file-to-file uses, no cycle, none upward)")
PY
