# SPDX-License-Identifier: MIT
"""The standard library's sub-interpreters (3.14+) running code whose C
library calls back. Prints one line "SCENARIO: RESULT"; RESULT is "own"
when every callback ran in the interpreter that made it, else a count.

usage: stdlib.py SCENARIO LIBCBTHREAD   (tests/e2e on PYTHONPATH)
  pool        InterpreterPoolExecutor(4), 16 tasks, each a callback from a
              thread the C library creates
  call-thread Interpreter.call: a callback from the library's thread
  call-sync   Interpreter.call: a synchronous callback
  call-sqlite Interpreter.call: a sqlite3 user function
  exec-thread Interpreter.exec of source that does call-thread
"""
import sys

scenario, lib = sys.argv[1], sys.argv[2]

from concurrent import interpreters  # noqa: E402

import stdlib_tasks  # noqa: E402

if scenario == "pool":
    from concurrent.futures import InterpreterPoolExecutor
    with InterpreterPoolExecutor(max_workers=4) as pool:
        res = list(pool.map(stdlib_tasks.callback, [lib] * 16))
    wrong = sum(1 for own, cb in res if own != cb)
    print(f"pool: {'own' if not wrong else f'{wrong}/16 elsewhere'}", flush=True)
elif scenario.startswith("call-"):
    interp = interpreters.create()
    fn, how = {
        "call-thread": (stdlib_tasks.callback, "cb_on_new_thread"),
        "call-sync": (stdlib_tasks.callback, "cb_sync"),
        "call-sqlite": (stdlib_tasks.sqlite3_function, None),
    }[scenario]
    own, cb = interp.call(fn, lib, how) if how else interp.call(fn, lib)
    print(f"{scenario}: {'own' if own == cb else f'ran in {cb}, not {own}'}", flush=True)
    interp.close()
elif scenario == "exec-thread":
    interp = interpreters.create()
    interp.exec(f"import stdlib_tasks; own, cb = stdlib_tasks.callback({lib!r}); "
                f"print('exec-thread: ' + ('own' if own == cb else 'ran in %d, not %d' % (cb, own)), flush=True)")
    interp.close()
else:
    sys.exit(f"stdlib.py: unknown scenario {scenario}")
