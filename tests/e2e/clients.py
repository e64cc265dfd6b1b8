# SPDX-License-Identifier: MIT
"""Real callback clients: in which interpreter do their callbacks run?

usage: clients.py CLIENT PLACE DIR
  CLIENT  one of CLIENTS below
  PLACE   main: the client runs in the main interpreter
          sub:  the client runs in a sub-interpreter (own GIL on 3.13+ where
                the client's modules allow it, else a legacy one)
  DIR     folder with libcbthread.so (and cyclient*.so for cython-*,
          pbclient*.so for pybind11-*, nbclient*.so for nanobind-*)
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
    # a library thread that lives on after the call (a thread pool's worker)
    "ctypes-pool": "lib().cb_pool_call(CB(where), 0) == 1",
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
    # apsw: every callback is PyGILState_Ensure on the thread that runs
    # sqlite3_step, GIL released around it; sqlite3's sorter compares rows
    # on worker threads of its own (PRAGMA threads), so a collation there
    # is called from a library thread
    "apsw-function": "apsw_api('create_scalar_function')('w', where, 0) or "
                     "apsw_con().execute('select w()').fetchall() == [(1,)]",
    "apsw-collation": "apsw_api('create_collation')('c', collate) or "
                      "apsw_con().execute(\"select x from (select 'b' x union all select 'a') "
                      "order by x collate c\").fetchall() == [('a',), ('b',)]",
    "apsw-sorter": "apsw_sorter() > 0",
    "apsw-busy": "apsw_busy()",
    "apsw-update-hook": "apsw_api('set_update_hook')(lambda *a: where() and None) or "
                        "apsw_con().execute('create table t(x); insert into t values (1)') or True",
    "apsw-commit-hook": "apsw_api('set_commit_hook')(lambda: where() - 1) or "
                        "apsw_con().execute('create table t(x); insert into t values (1)') or True",
    # pybind11 3.x and nanobind: a std::thread calls back with the library's
    # own gil_scoped_acquire; pybind11's subinterpreter_scoped_activate
    # enters the interpreter it was given instead (pbclient.cpp, nbclient.cpp)
    "pybind11-thread": "ext('pbclient').call_on_new_thread(where) == 1",
    "pybind11-activate": "ext('pbclient').activate_on_new_thread(where) == 1",
    "nanobind-thread": "ext('nbclient').call_on_new_thread(where) == 1",
    # PyGObject: a function GLib runs on a thread it creates (g_thread_new),
    # and a GTask's function on a worker of GLib's thread pool
    "gi-thread": "gi_thread()",
    "gi-task": "gi_task()",
    # grpcio: a future's done-callback, a connectivity subscription and a
    # call-credentials plugin, each run by grpc on a threading.Thread it
    # starts in the interpreter that made the channel
    "grpc-done": "grpc_client('done')",
    "grpc-connectivity": "grpc_client('connectivity')",
    "grpc-metadata": "grpc_client('metadata')",
}
# Modules with a single-phase init, or a multi-phase one that says it
# supports no other interpreter, cannot be imported into an own-GIL
# interpreter (3.12+): "module X does not support loading in
# subinterpreters". These clients run in a legacy one there.
LEGACY = ("readline", "cffi", "cython", "apsw", "nanobind", "gi", "grpc")

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

def ext(name):
    import importlib
    sys.path.insert(0, DIR)
    return importlib.import_module(name)

_apsw = []
def apsw_con():
    import apsw
    if not _apsw:
        _apsw.append(apsw.Connection(":memory:"))
    return _apsw[0]

def apsw_api(name, con=None):
    # apsw 3.41 renamed its methods (create_scalar_function was
    # createscalarfunction, and so on) and keeps the old names; Debian 12
    # ships 3.40, which has only those: take whichever this apsw has
    con = con or apsw_con()
    return getattr(con, name, None) or getattr(con, name.replace("_", ""))

def collate(a, b):
    return where() and (a > b) - (a < b)

def apsw_sorter():
    # Sort enough rows with a Python collation that sqlite3 spills them and
    # merges on worker threads; returns how many comparisons ran on a thread
    # other than the caller's. where() is called once per thread.
    import threading
    me, seen = threading.get_native_id(), {{}}
    def cmp(a, b):
        t = threading.get_native_id()
        if t not in seen:
            seen[t] = 0
            where()
        seen[t] += 1
        return (a > b) - (a < b)
    con = apsw_con()
    apsw_api("create_collation")("c", cmp)
    # small pages and cache: a few thousand rows spill (past 250 pages)
    for sql in ("pragma page_size=512", "pragma threads=4", "pragma cache_size=10",
                "create table big(x text)"):
        con.execute(sql).fetchall()
    with con:
        con.executemany("insert into big values (?)", ((str(i * 7919 % 100003),) for i in range(6000)))
    rows = con.execute("select x from big order by x collate c").fetchall()
    if len(rows) != 6000:
        return 0
    return sum(n for t, n in seen.items() if t != me)

def apsw_busy():
    # A second connection meets the first one's exclusive lock: its busy
    # handler runs, and is told to give up after three calls.
    import apsw, os, tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "db")
        a, b = apsw.Connection(path), apsw.Connection(path)
        a.execute("create table t(x); begin exclusive")
        apsw_api("set_busy_handler", b)(lambda n: where() and n < 2)
        try:
            b.execute("select * from t").fetchall()
        except apsw.BusyError:
            return True
        finally:
            a.execute("rollback")
            a.close()
            b.close()
    return False

def gi_thread():
    from gi.repository import GLib
    GLib.Thread.new("gilshim-client", lambda *_: where(), None).join()
    return True

def gi_task():
    from gi.repository import GLib, Gio
    loop, done = GLib.MainLoop(), []
    def work(task, source, data, cancellable):
        task.return_int(where())
    def finished(source, result, data):
        done.append(result.propagate_int())
        loop.quit()
    Gio.Task.new(None, None, finished, None).run_in_thread(work)
    loop.run()
    return done == [1]

def grpc_client(which):
    # An echo server on a Unix socket (local credentials, which carry call
    # credentials), a channel to it, and one of three callbacks.
    import grpc, os, tempfile, threading
    from concurrent import futures
    class Echo(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
    class Plugin(grpc.AuthMetadataPlugin):
        def __call__(self, context, callback):
            where()
            callback((("gilshim", "1"),), None)
    with tempfile.TemporaryDirectory() as d:
        addr = "unix:" + os.path.join(d, "sock")
        server = grpc.server(futures.ThreadPoolExecutor(1))
        server.add_generic_rpc_handlers((Echo(),))
        server.add_secure_port(addr, grpc.local_server_credentials(grpc.LocalConnectionType.UDS))
        server.start()
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
        if which == "metadata":
            creds = grpc.composite_channel_credentials(creds, grpc.metadata_call_credentials(Plugin()))
        channel = grpc.secure_channel(addr, creds)
        ready = threading.Event()
        def state(c):
            if c == grpc.ChannelConnectivity.READY and not ready.is_set():
                where()
                ready.set()
        try:
            if which == "connectivity":
                channel.subscribe(state, try_to_connect=True)
                ok = ready.wait(10)
                channel.unsubscribe(state)
                return ok
            fut = channel.unary_unary("/gilshim/Echo").future(b"ping", timeout=10)
            if which == "done":
                fut.add_done_callback(lambda f: where() and ready.set())
                return fut.result() == b"ping" and ready.wait(10)
            return fut.result() == b"ping"
        finally:
            channel.close()
            server.stop(None).wait()
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
