# SPDX-License-Identifier: MIT
"""Which interpreter runs a callback that belongs to a sub-interpreter?

usage: probe.py SCENARIO [LIBCBTHREAD]
  ctypes-thread  ctypes callback from a thread the C library creates
  ctypes-thread-x5  the same, five times (five threads, one call site)
  ctypes-sync    ctypes callback called synchronously (GIL released)
  sqlite3        sqlite3 user function
  ext-thread     a freshly built extension (cbext) calling back from its own
                 thread; LIBCBTHREAD is then the folder holding it
  ext-relro      the same, built with full RELRO (cbext_relro)
  legacy         examples/legacy_ext, linked with libgilshim, no preload
Prints "SCENARIO: main" or "SCENARIO: sub" from inside the sub-interpreter,
as soon as the callback has run. GILSHIM_PROBE_LEGACY=1: a sub-interpreter
that shares main's GIL and allocator (on 3.13+, where the default has its
own), in which stock's wrong-interpreter callback does not crash.
"""
import os
import sys
import tempfile

from subinterp import run_in_sub

scenario = sys.argv[1]
lib = sys.argv[2] if len(sys.argv) > 2 else ""
sys._gilshim_marker = "main"
fd, out = tempfile.mkstemp(prefix="gilshim-probe-")
os.close(fd)

BODY = {
    "ctypes-thread": "ctypes.CDLL(LIB).cb_on_new_thread(CB(where), 0)",
    "ctypes-thread-x5": "[ctypes.CDLL(LIB).cb_on_new_thread(CB(where), 0) for _ in range(5)][-1]",
    "ctypes-sync": "ctypes.CDLL(LIB).cb_sync(CB(where), 0)",
    "sqlite3": "sqlite3_where()",
    "ext-thread": "ext_where('cbext')",
    "ext-relro": "ext_where('cbext_relro')",
    "legacy": "ext_where('legacy')",
}[scenario]

code = f"""
import sys
sys._gilshim_marker = "sub"
LIB = {lib!r}

def where(_=0):
    import sys  # the running interpreter's sys
    return {{"main": 1, "sub": 2}}.get(getattr(sys, "_gilshim_marker", None), 3)

if {scenario.startswith("ctypes")!r}:
    import ctypes
    CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)

_keep = []

def sqlite3_where():
    import sqlite3
    con = sqlite3.connect(":memory:")
    _keep.append(con)  # torn down with the interpreter, after the print
    con.create_function("where_", 0, where)
    return con.execute("select where_()").fetchone()[0]

def ext_where(name):
    import importlib
    sys.path.insert(0, LIB)
    return importlib.import_module(name).call_on_new_thread(where)

r = {BODY}
print("{scenario}: " + {{1: "main", 2: "sub"}}.get(r, "unknown %r" % r), flush=True)
with open({out!r}, "w") as f:
    f.write(str(r))
"""

try:
    run_in_sub(code, legacy=os.environ.get("GILSHIM_PROBE_LEGACY") == "1")
except RuntimeError as e:
    sys.exit(f"probe: the sub-interpreter failed: {e}")

with open(out) as f:
    r = f.read()
os.unlink(out)
if r not in ("1", "2"):
    sys.exit(f"probe: no result ({r!r})")
