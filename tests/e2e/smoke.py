# SPDX-License-Identifier: MIT
"""The main interpreter alone: what worked before works the same."""
import ctypes
import sqlite3
import sys
import threading

lib = ctypes.CDLL(sys.argv[1])
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
seen = []


def cb(x):
    seen.append(threading.get_ident())
    return x + 1


def work():
    for i in range(200):
        assert lib.cb_on_new_thread(CB(cb), i) == i + 1
        assert lib.cb_sync(CB(cb), i) == i + 1


threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
con = sqlite3.connect(":memory:")
con.create_function("inc", 1, lambda x: x + 1)
assert con.execute("select inc(41)").fetchone()[0] == 42
assert len(seen) == 1600
print("ok")
