# SPDX-License-Identifier: MIT
"""Tasks that tests/e2e/stdlib.py runs in the standard library's
sub-interpreters (3.14+). They are imported there by name, so they live in
a module of their own (on PYTHONPATH), not in the script."""
import ctypes
import os


def _me():
    from concurrent import interpreters
    return interpreters.get_current().id


def _where(lib, how):
    """Call back from the C library (cbthread.c) and return the id of the
    interpreter that ran the callback, or -1."""
    seen = []

    def cb(_):
        seen.append(_me())
        return 7
    CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
    c = CB(cb)
    r = getattr(ctypes.CDLL(lib), how)(c, 0)
    return seen[0] if r == 7 and seen else -1


def callback(lib, how="cb_on_new_thread"):
    """(this interpreter's id, the callback's)"""
    return _me(), _where(lib, how)


def sqlite3_function(_lib=None):
    import sqlite3
    con = sqlite3.connect(":memory:")
    con.create_function("where_", 0, _me)
    r = con.execute("select where_()").fetchone()[0]
    con.close()
    return _me(), r


def pid():
    return os.getpid()
