# SPDX-License-Identifier: MIT
"""Checks the installed gilshim package in the venv whose python runs this:
    python check_package.py VERSION EXPECTED_REDIRECTION WORKDIR TICKER_DIR
the console script and python -m gilshim (inject.sh's options and exit
statuses), gilshim.status(), and the sub-interpreter runner: each program is
run directly and through the runner, and its stdout, stderr and status must
be the same. Prints one line per check; exit 1 if any failed."""
import os
import subprocess
import sys

version, redirection, work, ticker_dir = sys.argv[1:5]
py = sys.executable
bindir = os.path.dirname(py)
V = sys.version_info[:2]
failed = []


def check(name, ok, detail=""):
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, "" if ok else ": " + str(detail)))
    if not ok:
        failed.append(name)


def run(cmd, stdin=None, env=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=e, cwd=cwd or work, timeout=120)
    return p.returncode, p.stdout, p.stderr


# -- the package from Python ---------------------------------------------
import gilshim  # noqa: E402

check("__version__ is include/gilshim.h's", gilshim.__version__ == version, gilshim.__version__)
check("library_path is inside the package",
      os.path.isfile(gilshim.library_path) and os.path.dirname(gilshim.library_path) == os.path.dirname(gilshim.__file__))
st = gilshim.status()
check("status() without the shim: not loaded", st == (False, None, None, None, None), repr(st))
with open("/proc/self/maps") as f:
    check("status() did not load it", "libgilshim" not in f.read())

probe = "import gilshim; s = gilshim.status(); print(s.loaded, s.version, s.mode, s.library == gilshim.library_path, sep=\"|\"); print(s.redirection)"
rc, out, err = run([py, "-m", "gilshim", "-c"], env={})  # -c is not a program form
check("python -m gilshim -c: usage error 2", rc == 2 and "unknown option -c" in err, (rc, err))
with open(os.path.join(work, "probe.py"), "w") as f:
    f.write(probe + "\n")
rc, out, err = run([py, "-m", "gilshim", "probe.py"])
check("status() under python -m gilshim", rc == 0 and out.splitlines() == ["True|%s|route|True" % version, redirection], (rc, out, err))
rc, out, err = run([py, "-m", "gilshim", "--diagnose", "probe.py"])
check("status() under --diagnose", rc == 0 and out.split("|")[2] == "diagnose", (rc, out, err))
rc, out, err = run([os.path.join(bindir, "gilshim"), py, "probe.py"])
check("status() under the gilshim command", rc == 0 and out.splitlines() == ["True|%s|route|True" % version, redirection], (rc, out, err))

# -- inject.sh's options and exit statuses -------------------------------
cmd = os.path.join(bindir, "gilshim")
rc, out, err = run([cmd, "--version"])
check("gilshim --version", rc == 0 and out.splitlines() == ["gilshim " + version, "library: " + gilshim.library_path], (rc, out, err))
rc, out, err = run([py, "-m", "gilshim", "--version"])
check("python -m gilshim --version", rc == 0 and out.splitlines()[0] == "gilshim " + version, (rc, out, err))
# gilshim report (tools/gilshim_report.py, shipped beside gilshim.sh): a
# finding makes exit status 1, a log without one 0
one = os.path.join(work, "one.log")
with open(one, "w") as f:
    f.write('{"gilshim":1,"event":"counts","pid":5,"time":1.0,"findings":[{"finding":1,'
            '"site":{"object":"x.so","symbol":null,"offset":16},"rule":4,"owner":1,'
            '"owner_kind":"legacy","stock":0,"count":3}]}\n')
empty = os.path.join(work, "empty.log")
open(empty, "w").close()
for argv in ([cmd, "report"], [py, "-m", "gilshim", "report"]):
    rc, out, err = run(argv + [one])
    check(" ".join(os.path.basename(a) for a in argv) + ": one finding, 3 callbacks, exit 1",
          rc == 1 and "x.so(+0x10)" in out and "3 wrong-interpreter callback(s)" in out, (rc, out, err))
    rc, out, err = run(argv + [empty])
    check(" ".join(os.path.basename(a) for a in argv) + ": nothing found, exit 0", rc == 0, (rc, out, err))
rc, out, err = run([cmd, "--check", py])
check("gilshim --check PYTHON", rc == 0 and out.startswith("gilshim %s: mode route, redirection by %s, CPython" % (version, redirection)), (rc, out, err))
rc, out, err = run([py, "-m", "gilshim", "--diagnose", "--check"])
check("python -m gilshim --diagnose --check", rc == 0 and "mode diagnose, redirection by " + redirection in out, (rc, out, err))
rc, out, err = run([py, "-m", "gilshim", "--check"], env={"GILSHIM_LIB": "/lib/x86_64-linux-gnu/libm.so.6"})
check("--check, shim not loaded: 4", rc == 4 and "not loaded" in err, (rc, err))
for argv, status, text in (
        (["--bogus", "true"], 2, "unknown option --bogus"),
        (["--on-finalize", "never", "true"], 2, "unknown policy 'never'"),
        (["--log"], 2, "--log needs a file"),
        ([], 2, "usage:"),
        (["no-such-command-here"], 127, "command not found"),
        (["sh", "-c", "exit 9"], 9, "")):
    rc, out, err = run([cmd] + argv)
    check("gilshim %s: %d" % (" ".join(argv), status), rc == status and text in err, (rc, err))
rc, out, err = run([cmd, "true"], env={"GILSHIM_LIB": "/nonexistent/libgilshim.so"})
check("gilshim, library missing: 127", rc == 127 and "libgilshim not found" in err, (rc, err))
rc, out, err = run([py, "-m", "gilshim", "probe.py"], env={"GILSHIM_LIB": "/nonexistent/libgilshim.so"})
check("python -m gilshim, library missing: 127", rc == 127, (rc, err))
rc, out, err = run([py, "-m", "gilshim", "--subinterpreter=shared", "probe.py"])
check("--subinterpreter=shared: 2", rc == 2 and "unknown kind" in err, (rc, err))
rc, out, err = run([cmd, "--json", "--log", "log.jsonl", "sh", "-c", 'echo "$GILSHIM_LOG_FORMAT $GILSHIM_LOG $LD_PRELOAD"'],
                   env={"LD_PRELOAD": "libfoo.so"})
check("gilshim --json --log, LD_PRELOAD kept after it", rc == 0 and out.split() == ["json", "log.jsonl", gilshim.library_path + ":libfoo.so"], (rc, out))

# -- programs: direct, python -m gilshim, and in sub-interpreters ---------
PROG = r'''
import atexit, os, sys, threading, time
print("argv", sys.argv[1:], "name", __name__, "path0", sys.path[0] == os.path.dirname(os.path.realpath(sys.argv[0])))
line = sys.stdin.readline()
sys.stdout.write("stdin " + line)
sys.stderr.write("to stderr\n")
atexit.register(print, "atexit")
go = threading.Event()
# Prints after the program has ended: the exit must wait for it.
threading.Thread(target=lambda: (go.wait(), time.sleep(0.05), print("thread done"))).start()
what = sys.argv[1]
try:
    if what == "raise":
        def inner():
            raise ValueError("boom")
        inner()
    elif what == "daemon":
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    elif what == "exit":
        arg = sys.argv[2]
        sys.exit(None if arg == "none" else int(arg) if arg.lstrip("-").isdigit() else arg)
    print("end")
finally:
    sys.stdout.flush()
    go.set()
'''
os.makedirs(os.path.join(work, "pkg"), exist_ok=True)
with open(os.path.join(work, "prog.py"), "w") as f:
    f.write(PROG)
with open(os.path.join(work, "pkg", "__init__.py"), "w") as f:
    f.write("")
with open(os.path.join(work, "pkg", "__main__.py"), "w") as f:
    f.write(PROG.replace('sys.path[0] == os.path.dirname(os.path.realpath(sys.argv[0]))', 'sys.path[0] == os.getcwd()'))

# Every case in each kind of sub-interpreter with the shim; the other ways
# in (no sub-interpreter, diagnose, stock, the bare option) on a few cases,
# to keep the tier short.
kinds = [["--subinterpreter=legacy"]] + ([["--subinterpreter=own-gil"]] if V >= (3, 12) else [])
others = [[], ["--diagnose"], ["--subinterpreter"], ["--diagnose", "--subinterpreter"], ["--no-shim", "--subinterpreter"]]
for prog in (["prog.py"], ["-m", "pkg"]):
    for args in (["ok", "x y"], ["raise"], ["exit", "7"], ["exit", "none"], ["exit", "bye"], ["daemon"]):
        ref = run([py] + prog + args, stdin="hello\n")
        for via in kinds + (others if args[0] in ("ok", "raise") else []):
            if args[0] == "daemon" and via == ["--subinterpreter=own-gil"]:
                continue  # its configuration forbids daemon threads
            got = run([py, "-m", "gilshim"] + via + prog + args, stdin="hello\n")
            check("%s as %s: same stdout, stderr, status (%d)" % (" ".join(prog + args), " ".join(via) or "python -m gilshim", ref[0]),
                  got == ref, "\n  direct: %r\n  gilshim: %r" % (ref, got))
if V < (3, 12):
    rc, out, err = run([py, "-m", "gilshim", "--subinterpreter=own-gil", "prog.py"])
    check("--subinterpreter=own-gil before 3.12: 2", rc == 2 and "3.12" in err, (rc, err))
rc, out, err = run([py, "-m", "gilshim", "--subinterpreter", "missing.py"])
ref = run([py, "missing.py"])
check("missing script: as python says", (rc, out, err) == ref, "%r vs %r" % ((rc, out, err), ref))
rc, out, err = run([py, "-m", "gilshim", "--subinterpreter", "-m", "no_such_module_here"])
ref = run([py, "-m", "no_such_module_here"])
check("missing module: status 1 and the message", rc == ref[0] == 1 and "No module named no_such_module_here" in err, (rc, err, ref))

# -- an extension in a sub-interpreter -----------------------------------
CB = "import ticker; seen = []; ticker.run(lambda: seen.append(ticker.interp_id()), 2); print(ticker.interp_id(), seen)\n"
with open(os.path.join(work, "cb.py"), "w") as f:
    f.write(CB)
tick = {"PYTHONPATH": os.path.join(ticker_dir, "multi")}
rc, out, err = run([py, "-m", "gilshim", "--no-shim", "--subinterpreter", "cb.py"], env=tick)
check("stock, legacy sub: the callback runs in main", rc != 0 or out.split(None, 1)[1].strip() == "[0, 0]", (rc, out, err))
rc, out, err = run([py, "-m", "gilshim", "--subinterpreter", "cb.py"], env=tick)
me = out.split(None, 1)[0] if out else "?"
check("route, legacy sub: the callback runs in the sub", rc == 0 and me != "0" and out.split(None, 1)[1].strip() == "[%s, %s]" % (me, me), (rc, out, err))
rc, out, err = run([py, "-m", "gilshim", "--diagnose", "--subinterpreter", "cb.py"], env=tick)
check("diagnose, legacy sub: stock behaviour, reported", rc == 0 and "[0, 0]" in out and "wrong interpreter" in err, (rc, out, err))
if V >= (3, 12):
    rc, out, err = run([py, "-m", "gilshim", "--subinterpreter=own-gil", "cb.py"], env=tick)
    check("route, own-GIL sub: the callback runs in the sub", rc == 0 and "[0, 0]" not in out and me != "0", (rc, out, err))
    single = {"PYTHONPATH": os.path.join(ticker_dir, "single")}
    rc, out, err = run([py, "-m", "gilshim", "--subinterpreter=own-gil", "cb.py"], env=single)
    check("own-GIL sub, single-phase extension: its ImportError, status 1",
          rc == 1 and "ImportError: module ticker does not support loading in subinterpreters" in err
          and 'cb.py", line 1, in <module>' in err, (rc, err))
    rc, out, err = run([py, "-m", "gilshim", "--subinterpreter=legacy", "cb.py"], env=single)
    check("legacy sub, single-phase extension: loads", rc == 0, (rc, err))

print("%d failed" % len(failed))
sys.exit(1 if failed else 0)
