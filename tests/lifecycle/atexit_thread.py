# SPDX-License-Identifier: MIT
# An atexit function starts a thread that, after the atexit run, calls a C
# function (libc's qsort) that calls back with the GIL released: CPython
# 3.15 joins such a thread in a further round of Py_FinalizeEx, after
# gilshim's exit hook, and stock runs the callback; earlier versions never
# join it (the runtime finalizes first, and the thread is stopped before it
# calls back). A foreign thread's callback first, so that gilshim has a
# cached state and its exit hook. Usage: atexit_thread.py [LIBTICKER]
# (ignored). Prints "late thread sorted" where the callback ran.
import atexit
import ctypes
import threading
import time

libc = ctypes.CDLL(None)
START = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
start = START(lambda arg: None)
tid = ctypes.c_ulong()
if libc.pthread_create(ctypes.byref(tid), None, start, None) != 0:
    raise SystemExit("pthread_create failed")
libc.pthread_join(tid, None)

CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
compare = CMP(lambda a, b: a[0] - b[0])


def late():
    time.sleep(0.3)
    arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    libc.qsort(arr, 5, ctypes.sizeof(ctypes.c_int), compare)
    print("late thread sorted", list(arr), flush=True)


atexit.register(lambda: threading.Thread(target=late).start())
print("main returns", flush=True)
