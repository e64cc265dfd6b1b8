# SPDX-License-Identifier: MIT
"""The pytest plugin on examples/pytest_callback, in the venv whose python
runs this (with a pytest importable):
    python check_plugin.py EXAMPLE_DIR TICKER_BUILD_DIR WORKDIR
Stock in a legacy sub-interpreter the callback test fails (its callbacks run
in main); --gilshim=diagnose names that test, and only it, with the call
site, in the terminal summary and in JUnit XML; --gilshim=route makes it
pass; --gilshim-strict fails a test with a finding unless it is marked
gilshim_ok; without the options the plugin does nothing."""
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

example, ticker, work = sys.argv[1:4]
V = sys.version_info[:2]
failed = []
CB = "test_ticker.py::test_callback_runs_in_callers_interpreter"


def check(name, ok, detail=""):
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, "" if ok else ":\n" + str(detail)[-3000:]))
    if not ok:
        failed.append(name)


proj = os.path.join(work, "proj")
shutil.rmtree(proj, ignore_errors=True)
os.makedirs(proj)
shutil.copy(os.path.join(example, "test_ticker.py"), proj)
with open(os.path.join(proj, "test_strict.py"), "w") as f:
    f.write('''# SPDX-License-Identifier: MIT
import os, pytest, ticker, gilshim

def test_lenient():
    ticker.run(lambda: None, 2)

@pytest.mark.gilshim_ok("ticker")
def test_exempt():
    ticker.run(lambda: None, 2)

def test_status():
    s = gilshim.status()
    print("STATUS", s.loaded, s.mode)
''')


def pytest(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ticker] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                        "-rfE"] + list(args), capture_output=True, text=True, cwd=proj, env=env, timeout=300)
    return p.returncode, p.stdout + p.stderr


def section(out):
    """The lines of the plugin's terminal section."""
    lines, on = [], False
    for line in out.splitlines():
        if line.startswith("=") and " gilshim " in line:
            on = True
            continue
        if on and line.startswith("="):
            break
        if on:
            lines.append(line)
    return lines


rc, out = pytest("-s", "test_ticker.py", "test_strict.py")
check("stock, main: all pass, the plugin says nothing", rc == 0 and "6 passed" in out and not section(out)
      and "STATUS False None" in out, out)

rc, out = pytest("--gilshim-subinterpreter", "test_ticker.py")
check("stock, legacy sub-interpreter (bare option before a path): the callback test fails",
      rc != 0 and ("FAILED " + CB in out or "Fatal Python error" in out), out)

xml = os.path.join(work, "junit.xml")
rc, out = pytest("--gilshim=diagnose", "--gilshim-subinterpreter=legacy", "--junitxml=" + xml, "test_ticker.py")
sec = section(out)
check("diagnose, legacy sub: stock behaviour (the callback test fails)", rc == 1 and "FAILED " + CB in out, out)
check("diagnose: the summary names that test, and only it, with the call site and rule",
      len(sec) >= 2 and sec[0] == CB and "ticker" in sec[1] and "rule 4 (creating thread)" in sec[1]
      and not any(l.startswith("test_ticker.py::") and l != CB for l in sec), "\n".join(sec) + "\n" + out)
# This tree's shim writes the contract's `counts` lines: every one of the
# test's 3 callbacks is charged to it, not just the site's first.
check("diagnose: the counts lines charge all 3 callbacks to that test",
      len(sec) >= 2 and sec[1].rstrip().endswith(" x3") and not any("no `counts` lines" in l for l in sec),
      "\n".join(sec))
try:
    cases = {c.get("name"): c for c in ET.parse(xml).iter("testcase")}
    props = {n: [p.get("value") for p in c.iter("property") if p.get("name") == "gilshim_finding"] for n, c in cases.items()}
    check("diagnose: JUnit XML carries the finding on that test only",
          len(props.get("test_callback_runs_in_callers_interpreter", [])) == 1
          and "ticker" in props["test_callback_runs_in_callers_interpreter"][0]
          and not props.get("test_interp_id") and not props.get("test_no_callback"), props)
except (OSError, ET.ParseError) as e:
    check("diagnose: JUnit XML written", False, e)

rc, out = pytest("--gilshim=route", "--gilshim-subinterpreter=legacy", "test_ticker.py")
check("route, legacy sub: all pass, no finding", rc == 0 and "3 passed" in out
      and any("no callback ran in the wrong interpreter" in l for l in section(out)), out)

rc, out = pytest("--gilshim=diagnose", "--gilshim-subinterpreter", "test_strict.py")
check("diagnose, not strict: findings do not fail tests", rc == 0 and "3 passed" in out
      and "test_strict.py::test_lenient" in section(out), out)
rc, out = pytest("--gilshim=diagnose", "--gilshim-strict", "--gilshim-subinterpreter", "test_strict.py")
check("--gilshim-strict: the test with a finding fails, the gilshim_ok one passes",
      rc == 1 and "FAILED test_strict.py::test_lenient" in out and "1 failed, 2 passed" in out
      and "callbacks in the wrong interpreter" in out, out)

rc, out = pytest("-s", "--gilshim=diagnose", "test_strict.py", "-k", "status")
check("--gilshim=diagnose in main: re-executed under the shim", rc == 0 and "STATUS True diagnose" in out, out)
rc, out = pytest("--gilshim=bogus", "test_strict.py")
check("--gilshim=bogus: usage error", rc == 4 and "invalid choice" in out, out)
rc, out = pytest("--gilshim-subinterpreter=shared", "test_strict.py")
check("--gilshim-subinterpreter=shared: usage error", rc == 4 and "unknown kind" in out, out)

# The contract's `counts` lines (docs/messages.md), on a log written here:
# each test gets the callbacks counted while it ran, the first one too.
import json  # noqa: E402
from gilshim.pytest_plugin import Tracker  # noqa: E402

site = {"object": "ext.so", "symbol": None, "offset": 4814}
log = os.path.join(work, "counts.jsonl")


def emit(*events):
    with open(log, "a") as f:
        for e in events:
            f.write(json.dumps(dict(e, gilshim=1)) + "\n")


open(log, "w").close()
t = Tracker(None, log)
emit({"event": "wrong_interpreter", "finding": 1, "site": site, "rule": 4, "owner": 1, "stock": 0, "owner_kind": "legacy"},
     {"event": "counts", "findings": [{"finding": 1, "site": site, "rule": 4, "owner": 1, "owner_kind": "legacy", "stock": 0, "count": 1}]},
     {"event": "counts", "findings": [{"finding": 1, "site": site, "rule": 4, "owner": 1, "owner_kind": "legacy", "stock": 0, "count": 2}]})
a = t.collect("t1")
emit({"event": "counts", "findings": [{"finding": 1, "site": site, "rule": 4, "owner": 1, "owner_kind": "legacy", "stock": 0, "count": 4},
                                      {"finding": 2, "site": dict(site, offset=16), "rule": 2, "owner": 1, "owner_kind": "legacy", "stock": 0, "count": 1}]})
with open(log, "a") as f:
    f.write('{"gilshim":1,"event":"counts","findings":[{"finding":1,"count":')  # a line still being written
b = t.collect("t2")
with open(log, "a") as f:
    f.write('5}]}\n')
c = t.collect("t3")
check("counts lines: callbacks charged to the test that made them",
      a == {1: 3} and b == {1: 4, 2: 1} and c == {1: 5} and t.findings[1].site == "ext.so(+0x12ce)", (a, b, c))
open(log, "w").close()
t = Tracker(None, log)
emit({"event": "wrong_interpreter", "site": site, "rule": 4, "owner": 1, "stock": 0})
a = t.collect("t1")
check("no counts lines (an older shim): a site's first callback, charged once", list(a.values()) == [1] and not t.counted, a)

if V >= (3, 12):
    # 3.12's faulthandler, which pytest's plugin of that name imports, is
    # single-phase: refused in an own-GIL sub-interpreter.
    rc, out = pytest("-p", "no:faulthandler", "--gilshim=route", "--gilshim-subinterpreter=own-gil", "test_ticker.py")
    check("route, own-GIL sub: all pass", rc == 0 and "3 passed" in out, out)

print("%d failed" % len(failed))
sys.exit(1 if failed else 0)
