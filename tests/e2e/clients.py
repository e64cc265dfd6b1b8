"""Real callback clients: in which interpreter do their callbacks run?

usage: clients.py CLIENT PLACE DIR
  CLIENT  one of CLIENTS below
  PLACE   main: the client runs in the main interpreter
          sub:  the client runs in a sub-interpreter (own GIL on 3.13 where
                the client's modules allow it, else a legacy one)
  DIR     folder with libcbthread.so (and cyclient*.so for cython-*)
Prints "CLIENT PLACE: WHERE", WHERE being the interpreters the callbacks
ran in ("main", "sub", "main+sub"), or "none" if no callback ran. Any
failure inside the client prints "CLIENT PLACE: error ..." and exits 1.
"""
import os
import sys
import tempfile

from subinterp import run_in_sub

CDEF = "int cb_on_new_thread(int (*)(int), int); int cb_sync(int (*)(int), int);" \
       "int cb_many_threads(int (*)(int), int, int, int);"

# Each body runs where PLACE says, with where() and LIB defined; where()
# records the interpreter it runs in and returns 1.
CLIENTS = {
    # ctypes: a thread the C library creates; synchronous with the GIL
    # released; 8 threads x 50 callbacks, then the threads exit
    "ctypes-thread": "lib().cb_on_new_thread(CB(where), 0) == 1",
    "ctypes-sync": "lib().cb_sync(CB(where), 0) == 1",
    "ctypes-threads": "lib().cb_many_threads(CB(where), 0, 8, 50) == 400",
    # sqlite3 runs every callback with the GIL released around sqlite3_step
    "sqlite3-function": "sql().create_function('w', 0, where) or "
                        "sql().execute('select w()').fetchone()[0] == 1",
    "sqlite3-aggregate": "sql().create_aggregate('agg', 1, Agg) or "
                         "sql().execute('select agg(x) from (select 1 x union select 2)').fetchone()[0] == 2",
    "sqlite3-progress": "sql().set_progress_handler(lambda: where() - 1, 1) or "
                        "sql().execute(COUNT).fetchone()[0] == 5050",
    "sqlite3-authorizer": "sql().set_authorizer(lambda *a: where() - 1) or "
                          "sql().execute('select 7').fetchone()[0] == 7",
    # GNU readline calls the completer from inside PyOS_Readline, GIL released
    "readline-completer": "readline_tab()",
    # cffi (ABI mode): its own gil_ensure keeps a foreign thread's state
    # alive with a "canary" (src/c/misc_thread_common.h)
    "cffi-thread": "ffi_lib().cb_on_new_thread(ffi_cb(), 0) == 1",
    "cffi-sync": "ffi_lib().cb_sync(ffi_cb(), 0) == 1",
    # rounds of short-lived threads: cffi frees the states of exited
    # threads from the next callback, racing with gilshim's own cleanup
    "cffi-threads": "all(ffi_lib().cb_many_threads(ffi_cb(), 0, 16, 2) == 32 for _ in range(60))",
    # Cython: `with gil` in a function a nogil thread runs (cyclient.pyx)
    "cython-thread": "cython_call()",
}
# Modules with a single-phase init cannot be imported into an own-GIL
# interpreter (3.12+); these clients run in a legacy one there.
LEGACY = ("readline", "cffi", "cython")

PRELUDE = """
import os, sys
DIR = {dir!r}
OUT = {out!r}
COUNT = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 100) select sum(x) from c"

def where(*_):
    import sys  # the running interpreter's sys
    with open(OUT, "a") as f:
        f.write(getattr(sys, "_gilshim_marker", "?") + "\\n")
    return 1

def lib():
    import ctypes
    return ctypes.CDLL(os.path.join(DIR, "libcbthread.so"))

def _cb_type():
    import ctypes
    return ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)

CB = lambda fn: _keep(_cb_type()(fn))
_kept = []
def _keep(x):
    _kept.append(x)
    return x

_con = []
def sql():
    import sqlite3
    if not _con:
        _con.append(sqlite3.connect(":memory:"))
    return _con[0]

class Agg:
    def __init__(self):
        self.n = 0
    def step(self, x):
        self.n += where()
    def finalize(self):
        return self.n + where() - 1

_ffi = []
def ffi_lib():
    import cffi
    if not _ffi:
        ffi = cffi.FFI()
        ffi.cdef({cdef!r})
        _ffi.extend([ffi, ffi.dlopen(os.path.join(DIR, "libcbthread.so"))])
    return _ffi[1]

def ffi_cb():
    ffi_lib()
    return _keep(_ffi[0].callback("int(int)", where))

def readline_tab():
    import readline
    readline.parse_and_bind("tab: complete")
    readline.set_completer(lambda text, state: where() and None)
    # "ab\t": stdio's line reader, which 3.12+ uses outside the main
    # interpreter (Parser/myreadline.c); the completer never runs there
    return input("> ") in ("ab", "ab\t")

def cython_call():
    sys.path.insert(0, DIR)
    import cyclient
    return cyclient.call_on_new_thread(where) == 1
"""


def run_here(client, place, d, out):
    """Run CLIENT in PLACE of this process; the markers go to OUT."""
    code = PRELUDE.format(dir=d, out=out, cdef=CDEF) + f"""
sys._gilshim_marker = {place!r}
if not ({CLIENTS[client]}):
    raise SystemExit("the client's own result was wrong")
"""
    sys._gilshim_marker = "main"
    if place == "main":
        exec(compile(code, "<client>", "exec"), {"__name__": "__client__"})
        return
    run_in_sub(code, legacy=client.split("-")[0] in LEGACY)


def under_pty(client, place, d, out):
    """readline only completes on a terminal: run the client in a child on
    a pseudo-terminal and press Tab there."""
    import pty
    import select
    import time
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="dumb", INPUTRC="/dev/null", GILSHIM_CLIENT_CHILD="1")
        os.execv(sys.executable, [sys.executable, __file__, client, place, d, out])
    buf, typed, deadline = b"", False, time.monotonic() + 20
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
        if not typed and b"> " in buf:
            os.write(fd, b"ab\t\r")
            typed = True
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise RuntimeError(f"killed by signal {os.WTERMSIG(status)}")
    if os.WEXITSTATUS(status):
        tail = buf.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"the child on the terminal failed: {tail}")


def main():
    client, place, d = sys.argv[1:4]
    if os.environ.get("GILSHIM_CLIENT_CHILD"):
        run_here(client, place, d, sys.argv[4])
        return
    fd, out = tempfile.mkstemp(prefix="gilshim-client-")
    os.close(fd)
    try:
        if client.startswith("readline"):
            under_pty(client, place, d, out)
        else:
            run_here(client, place, d, out)
    except BaseException as e:  # noqa: B902 - report anything, then fail
        print(f"{client} {place}: error {type(e).__name__}: {e}".splitlines()[0], flush=True)
        sys.exit(1)
    finally:
        with open(out) as f:
            seen = sorted(set(f.read().split()))
        os.unlink(out)
    print(f"{client} {place}: {'+'.join(seen) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
