# SPDX-License-Identifier: MIT
"""A C library calls back from a thread it created, during a call made in a
sub-interpreter. Which interpreter runs the Python callback?"""
import sys

lib = sys.argv[1]
sys._where = "the MAIN interpreter"

code = f"""
import ctypes, sys
sys._where = "the SUB-interpreter that registered it"

def callback(_):
    import sys  # the sys of whichever interpreter runs this
    print("    callback ran in", sys._where, flush=True)
    return 0

CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
print("    sub-interpreter: calling cb_on_new_thread() in a C library", flush=True)
ctypes.CDLL({lib!r}).cb_on_new_thread(CB(callback), 0)
"""
try:
    import _interpreters as interpreters  # 3.13

    iid = interpreters.create()
    interpreters.exec(iid, code)
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.9-3.12

    try:
        iid = interpreters.create(isolated=False)
    except TypeError:
        iid = interpreters.create()
    interpreters.run_string(iid, code)
interpreters.destroy(iid)
