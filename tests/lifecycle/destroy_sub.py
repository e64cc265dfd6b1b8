# SPDX-License-Identifier: MIT
# A sub-interpreter whose library made a worker thread that outlives the
# call (tests/lifecycle/ticker.c's pool_call): destroy it, then call the
# worker again from main, and exit. Stock destroys it and exits 0; gilshim
# must too, and the worker's next callback (whose owner has ended) gets the
# fail-safe path. With "keep" the sub-interpreter is never destroyed: the
# runtime's end meets it (<= 3.12 ends it from whichever thread state heads
# its list). Usage: destroy_sub.py LIBTICKER [keep]
import ctypes
import sys
import time

try:
    import _interpreters as interpreters  # 3.13+

    def create():
        return interpreters.create("legacy")

    def run(iid, code):
        err = interpreters.exec(iid, code)
        if err is not None:
            raise RuntimeError(f"{err.type.__name__}: {err.msg}")

except ImportError:
    import _xxsubinterpreters as interpreters  # 3.9-3.12

    def create():
        try:
            return interpreters.create(isolated=False)  # 3.12: legacy
        except TypeError:
            return interpreters.create()

    run = interpreters.run_string

lib_path = sys.argv[1]
sub = create()
code = f"""
import ctypes
try:
    import _interpreters as interpreters
except ImportError:
    import _xxsubinterpreters as interpreters
JOB = ctypes.CFUNCTYPE(None, ctypes.c_int)
def job(arg):
    me = interpreters.get_current()
    me = me[0] if isinstance(me, tuple) else me
    print("worker: callback runs in", "main" if int(me) == 0 else "sub", flush=True)
keep = JOB(job)
lib = ctypes.CDLL({lib_path!r})
lib.pool_call.argtypes = [JOB, ctypes.c_int, ctypes.c_int]
lib.pool_call(keep, 1, 0)
"""
run(sub, code)
print("main: the sub-interpreter's call returned", flush=True)
run(sub, "pass")
print("main: run_string again works", flush=True)
if sys.argv[2:] != ["keep"]:
    interpreters.destroy(sub)
    print("main: destroyed", flush=True)

JOB = ctypes.CFUNCTYPE(None, ctypes.c_int)


def job(arg):
    print("worker: callback from main runs", flush=True)


keep = JOB(job)
lib = ctypes.CDLL(lib_path)
lib.pool_call.argtypes = [JOB, ctypes.c_int, ctypes.c_int]
lib.pool_call(keep, 2, 1)
time.sleep(0.3)
print("main: exit", flush=True)
