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
lib.ticker_start.argtypes = [ctypes.CFUNCTYPE(None)]
if lib.ticker_start(callback) != 0:
    sys.exit("ticker_start failed")
time.sleep(0.3)
if ticks == 0:
    sys.exit("no callback in 0.3 s")
