# SPDX-License-Identifier: MIT
"""What entering a sub-interpreter from a C++ thread costs, per enter+leave:
pybind11's own answer (subinterpreter_scoped_activate, a new thread state
each time or one reused) against PyGILState_Ensure/Release, which gilshim
routes there, and pybind11's default gil_scoped_acquire. All measured in
one process, on one std::thread pbclient starts (tests/e2e/pbclient.cpp).

usage: cycle.py DIR [N]   (DIR holds pbclient*.so; best of 3 runs of N)
Prints one line: ns per cycle of each, and each one's ratio to PyGILState;
"wrong interpreter" for a way that did not enter the sub-interpreter (stock
PyGILState_Ensure enters main).
"""
import sys

from subinterp import run_in_sub

CODE = """
import sys
sys.path.insert(0, {dir!r})
import pbclient
best = {{}}
for _ in range(3):
    for k, v in pbclient.cycles({n}).items():
        best[k] = min(best.get(k, v), v) if v else 0.0
base = best["PyGILState"]
parts = []
for k in ("subinterpreter_scoped_activate", "subinterpreter_scoped_activate_reuse",
          "PyGILState", "gil_scoped_acquire"):
    v = best[k]
    if not v:
        parts.append(f"{{k}} wrong interpreter")
    elif base:
        parts.append(f"{{k}} {{v:.0f}} ns ({{v / base:.2f}}x)")
    else:
        parts.append(f"{{k}} {{v:.0f}} ns")
print("; ".join(parts), flush=True)
"""


def main():
    d = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    run_in_sub(CODE.format(dir=d, n=n))


if __name__ == "__main__":
    main()
