# SPDX-License-Identifier: MIT
# A library whose atexit function stops its thread and joins it; the thread
# calls back once more on its way out (tests/lifecycle/ticker.c lib_start,
# lib_stop). Usage: atexit_lib.py LIBTICKER WHERE ORDER
#   WHERE  main; sub (a legacy sub-interpreter, destroyed); close (3.14+:
#          concurrent.interpreters, Interpreter.close()); pool (3.14+: an
#          InterpreterPoolExecutor's worker, at shutdown)
#   ORDER  before/after: the atexit function is registered before or after
#          the thread's first callback
# Prints where each callback ran and whether the join returned.
import sys

lib_path, where, order = sys.argv[1:4]

LIBRARY = f"""
import atexit, ctypes, os, time
try:
    from concurrent import interpreters as _i
    def _here():
        return _i.get_current().id
except ImportError:
    try:
        import _interpreters as _i
    except ImportError:
        import _xxsubinterpreters as _i
    def _here():
        me = _i.get_current()
        return int(me[0] if isinstance(me, tuple) else me)
CB = ctypes.CFUNCTYPE(None, ctypes.c_int)
_first = []
def _cb(n):
    print("callback", n, "runs in", "main" if _here() == 0 else "sub", flush=True)
    _first.append(n)
_keep = CB(_cb)
_lib = ctypes.CDLL({lib_path!r})
_lib.lib_start.argtypes = [CB]
def _stop():
    print("atexit: joined the library thread" if _lib.lib_stop() == 0
          else "atexit: the library thread is still blocked", flush=True)
if {order == "before"}:
    atexit.register(_stop)
_lib.lib_start(_keep)
while not _first:
    time.sleep(0.001)
if {order == "after"}:
    atexit.register(_stop)
"""

if where == "main":
    exec(LIBRARY)
elif where == "sub":
    try:
        import _interpreters as interpreters  # 3.13+

        sub = interpreters.create("legacy")
        err = interpreters.exec(sub, LIBRARY)
        if err is not None:
            sys.exit(f"{err.type.__name__}: {err.msg}")
    except ImportError:
        import _xxsubinterpreters as interpreters  # 3.9-3.12

        try:
            sub = interpreters.create(isolated=False)
        except TypeError:
            sub = interpreters.create()
        interpreters.run_string(sub, LIBRARY)
    interpreters.destroy(sub)
    print("main: destroyed", flush=True)
elif where == "close":
    from concurrent import interpreters

    interp = interpreters.create()
    interp.exec(LIBRARY)
    interp.close()
    print("main: closed", flush=True)
elif where == "pool":
    from concurrent.futures import InterpreterPoolExecutor

    with InterpreterPoolExecutor(1) as ex:
        ex.submit(exec, LIBRARY, {"__name__": "library"}).result()
    print("main: shut down", flush=True)
print("main: exit", flush=True)
