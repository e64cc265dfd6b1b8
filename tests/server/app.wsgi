# SPDX-License-Identifier: MIT
"""The WSGI application of tests/run-server.sh, in mod_wsgi's default
application group (a sub-interpreter). Each request makes three callbacks
that belong to this interpreter and answers, as JSON, where each ran:
"sub" (here) or "main" (any other interpreter).
  /       a sqlite3 user function, a synchronous ctypes callback, and a
          ctypes callback from a thread libcbthread.so creates
  /slow   / three times, 0.1 s apart: a request that is in flight when
          Apache restarts or stops
"""
import ctypes
import json
import os
import sqlite3
import sys
import time

TOKEN = object()
sys._gilshim_server_app = TOKEN
LIB = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libcbthread.so"))
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)


def where(_=0):
    import sys  # the running interpreter's sys, not this module's global
    return 2 if getattr(sys, "_gilshim_server_app", None) is TOKEN else 1


CALLBACK = CB(where)
NAMES = {1: "main", 2: "sub"}


def callbacks():
    con = sqlite3.connect(":memory:")
    con.create_function("where_", 0, where)
    r = {"sqlite3": con.execute("select where_()").fetchone()[0]}
    con.close()
    r["sync"] = LIB.cb_sync(CALLBACK, 0)
    r["thread"] = LIB.cb_on_new_thread(CALLBACK, 0)
    return {k: NAMES.get(v, "error %d" % v) for k, v in r.items()}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    r = callbacks()
    if path == "/slow":
        for _ in range(2):
            time.sleep(0.1)
            r = callbacks()
    r["pid"] = os.getpid()
    body = json.dumps(r).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
