# SPDX-License-Identifier: MIT
"""PEP 788's API used by an extension's own threads (examples/pep788_ext),
the same checks on every CPython: through <gilshim/pep788.h> and libgilshim
on 3.9-3.14, through CPython's own API on 3.15, which holds the test itself
to 3.15's behaviour.

usage: test_pep788.py EXT_DIR
Prints one line per check and "N passed, M failed"; exits 1 on a failure.
"""
import ast
import os
import subprocess
import sys
import tempfile

ext_dir = sys.argv[1]
sys.path.insert(0, ext_dir)
sys._pep788_marker = "main"
import pep788_ext as ext  # noqa: E402

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok   {name}", flush=True)
    else:
        failed += 1
        print(f"  FAIL {name}: {detail}", flush=True)


class Sub:
    """A sub-interpreter: one with its own GIL on 3.13+, a legacy one
    (main's GIL) on 3.9-3.12, as tests/e2e/subinterp.py makes them."""

    def __init__(self):
        try:
            import _interpreters as interpreters  # 3.13+
        except ImportError:
            import _xxsubinterpreters as interpreters  # 3.9-3.12

            try:
                self.iid = interpreters.create(isolated=False)
            except TypeError:
                self.iid = interpreters.create()
            self._run = lambda code: interpreters.run_string(self.iid, code)
        else:
            self.iid = interpreters.create("isolated")

            def run(code):
                err = interpreters.exec(self.iid, code)
                if err is not None:
                    raise RuntimeError(f"{err.type.__name__}: {err.msg}")

            self._run = run
        self._destroy = lambda: interpreters.destroy(self.iid)
        fd, self.results = tempfile.mkstemp(prefix="gilshim-pep788-")
        os.close(fd)
        self.run(f"""
import sys
sys._pep788_marker = "sub"
sys.path.insert(0, {ext_dir!r})
import pep788_ext as ext

def fn():
    import sys  # the running interpreter's
    return sys._pep788_marker

def out(**kw):
    with open({self.results!r}, "a") as f:
        f.write(repr(kw) + "\\n")
""")

    def run(self, code):
        """Run code there; what it passed to out(...), merged."""
        self._run(code)
        got = {}
        with open(self.results) as f:
            for line in f:
                got.update(ast.literal_eval(line))
        open(self.results, "w").close()
        return got

    def destroy(self):
        self._destroy()
        os.unlink(self.results)


def fn_main():
    return sys._pep788_marker


# Slots of the extension: views 0 (sub), 1 (main, FromCurrent), 2 (main,
# FromMain); guards 0 (sub), 1 (main), 2 (sub, handed to a worker).
ext.keep_view(1)
ext.keep_main_view(2)
ext.keep_guard(1)
sub = Sub()

# 1. Callbacks from the extension's own threads run in the interpreter
#    whose view or guard they were given.
got = sub.run("""
ext.keep_view(0)
ext.keep_guard(0)
out(view=ext.call_on_thread("view", 0, fn), guard=ext.call_on_thread("guard", 0, fn))
ext.close_guard(0)
""")
check("a thread's callback through a view of the sub-interpreter runs there",
      got.get("view") == ("sub", "sub"), got.get("view"))
check("a thread's callback through a guard on the sub-interpreter runs there",
      got.get("guard") == ("sub", "sub"), got.get("guard"))
r = ext.call_on_thread("view", 1, fn_main)
check("through a view of main (PyInterpreterView_FromCurrent), in main", r == ("main", "main"), r)
r = ext.call_on_thread("view", 2, fn_main)
check("through a view from PyInterpreterView_FromMain, in main", r == ("main", "main"), r)

# 2. Nesting and switching: each Ensure attaches where it says, each Release
#    restores what its Ensure found, the very thread state included.
got = sub.run("""
out(trace=ext.nest_and_switch(0, 1), here=ext.switch_here(1))
""")
want = "view:sub guard:main nested:main view:sub release:main release:main release:sub"
check("nested Ensures on one thread: sub, switch to main, nest, back to sub, then unwound",
      got.get("trace") == want, f"{got.get('trace')!r}, want {want!r}")
check("Ensure through main's guard on a thread attached to the sub-interpreter, then Release",
      got.get("here") == "main sub", got.get("here"))
ext.close_guard(1)

# 3. An interpreter's end waits for a guard a worker holds, and the worker
#    can still call in while it waits.
sub.run("""
ext.keep_guard(2)
ext.hold_guard(2, 300, fn)
""")
ext.events()
ext.mark("main: the end begins")
sub.destroy()
ext.mark("main: the end returned")
ev = ext.events()
texts = [t for _, t in ev]
want = ["main: the end begins", "worker: a callback through the guard ran in sub",
        "worker: closing the guard", "main: the end returned"]
check("Py_EndInterpreter waits for the worker's guard; the worker calls in meanwhile",
      texts == want, texts)
waited = ev[-1][0] - ev[0][0] if len(ev) == 4 else 0
check("the end took at least the worker's 300 ms", waited >= 250, f"{waited:.0f} ms")

# 4. A view kept after its interpreter ended is refused: NULL, no exception.
r = ext.probe_view(0)
check("a view of the ended interpreter: FromView and EnsureFromView give NULL, no exception",
      r == (False, False, False, False),
      "guard %s, exception %s, token %s, exception %s" % r)

# 5. A thread that keeps calling in while main finalizes is refused, cleanly.
code = (f"import sys; sys.path.insert(0, {ext_dir!r}); import pep788_ext as e; "
        "e.keep_main_view(0); e.race_finalize(0)")
try:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    rc, err = p.returncode, p.stderr
except subprocess.TimeoutExpired as e:
    rc, err = "timeout", (e.stderr or b"").decode(errors="replace")
line = next((ln for ln in err.splitlines() if ln.startswith("race:")), "")
ok = rc == 0 and "gave NULL while the runtime finalized" in line
check("a thread calling in while main finalizes gets NULL, no crash, no hang", ok,
      f"exit {rc}, {line or err.strip()[-300:]!r}")

print(f"pep788: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
