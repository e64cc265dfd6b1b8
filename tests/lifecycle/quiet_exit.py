# SPDX-License-Identifier: MIT
# A program with nothing wrong in it: a library's daemon thread calls back
# every 0.5 ms while the main thread sleeps 0.3 s and returns. Stock exits
# silently (the thread is stopped when it asks for the GIL at the end);
# with gilshim the exit must be as silent. Usage: quiet_exit.py LIBTICKER
import ctypes
import sys
import time

ticks = 0


def tick():
    global ticks
    ticks += 1


lib = ctypes.CDLL(sys.argv[1])
callback = ctypes.CFUNCTYPE(None)(tick)
# Kept forever, as a library that was handed it would need it to be: freed
# at the runtime's end, its trampoline can be called after the memory went,
# a crash of the program's own (stock crashed so in 8 of 10 runs on 3.14)
# that has nothing to do with PyGILState_Ensure, and only made this check
# depend on chance.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(callback))
lib.ticker_start.argtypes = [ctypes.CFUNCTYPE(None)]
if lib.ticker_start(callback) != 0:
    sys.exit("ticker_start failed")
time.sleep(0.3)
if ticks == 0:
    sys.exit("no callback in 0.3 s")
