# SPDX-License-Identifier: MIT
"""The `gilshim` command and `python -m gilshim`.

The command is tools/inject.sh itself, shipped as gilshim.sh beside the
library (setup.py fills in its name, version and library as `make install`
does): its options, messages and exit statuses are the one source of truth.
`python -m gilshim` takes the same options, then a Python program instead of
a COMMAND, which it runs with this interpreter (and its -X/-W flags) under
gilshim.sh; --subinterpreter runs that program as the main code of a fresh
sub-interpreter (gilshim._subinterp).
"""
import os
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gilshim.sh")

USAGE = """usage: python -m gilshim [--diagnose] [--log FILE] [--json] [--on-finalize park|exit|abort]
                         [--subinterpreter[=legacy|own-gil]] [--no-shim] [--]
                         (script.py | -m module) [ARGS...]
       python -m gilshim [--check] | --version | --help"""

HELP = USAGE + """
Run a Python program with this interpreter and libgilshim first in
LD_PRELOAD (the process re-executes itself), as `python script.py` or
`python -m module` would, so that a CPython callback made from a foreign
thread runs in the interpreter that owns it.

  --diagnose            keep stock behaviour, report wrong-interpreter
                        callbacks                   (GILSHIM_MODE=diagnose)
  --log FILE            messages to FILE            (GILSHIM_LOG)
  --json                one JSON object per message (GILSHIM_LOG_FORMAT=json)
  --on-finalize POLICY  park | exit | abort         (GILSHIM_ON_FINALIZE)
  --subinterpreter[=legacy|own-gil]
                        run the program as the main code of a fresh
                        sub-interpreter: legacy (shared GIL, single-phase
                        extensions load; 3.9+, the default) or own-gil
                        (its own GIL, 3.12+)
  --no-shim             do not preload libgilshim (stock CPython), to compare
  --check               print the shim's version, mode and redirection
                        method in this Python
  --version             print the version and the library that would be used
  -h, --help            print this help

Exit status: the program's; 2 usage error; 127 library not found;
with --check, 4 the shim is not loaded.
"""

_FLAGS = ("--diagnose", "--json", "--check", "--version")
_WITH_ARG = ("--log", "--on-finalize")
KINDS = ("legacy", "own-gil")


def _usage(message):
    sys.stderr.write("gilshim: %s\n%s\n" % (message, USAGE))
    return 2


def _sh(args):
    """Replace this process with gilshim.sh ARGS."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv("/bin/sh", ["/bin/sh", SCRIPT] + list(args))


def command():
    """The `gilshim` console script: tools/inject.sh's interface."""
    _sh(sys.argv[1:])


def _interpreter_flags():
    try:
        import subprocess
        return subprocess._args_from_interpreter_flags()
    except Exception:
        return []


def parse(argv):
    """(gilshim.sh options, subinterpreter kind or None, shim?, program) or an exit status."""
    opts, kind, shim = [], None, True
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a in ("-h", "--help"):
            sys.stdout.write(HELP)
            return 0
        if a in _FLAGS:
            opts.append(a)
        elif a in _WITH_ARG:
            # gilshim.sh checks the value and says what is wrong with it.
            opts += argv[i:i + 2]
            i += 1
        elif a == "--subinterpreter" or a.startswith("--subinterpreter="):
            kind = a.partition("=")[2] or "legacy"
            if kind not in KINDS:
                return _usage("--subinterpreter: unknown kind '%s' (legacy or own-gil)" % kind)
        elif a == "--no-shim":
            shim = False
        elif a.startswith("-") and a != "-m":
            return _usage("unknown option " + a)
        else:
            break
        i += 1
    program = argv[i:]
    if program[:1] == ["-m"] and len(program) < 2:
        return _usage("-m needs a module")
    return opts, kind, shim, program


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:  # gilshim.sh's own subcommand, where it has one
        _sh(argv)
    parsed = parse(argv)
    if isinstance(parsed, int):
        return parsed
    opts, kind, shim, program = parsed
    if "--version" in opts:
        _sh(["--version"])
    if "--check" in opts:
        _sh(opts + ["--", sys.executable])
    if not program:
        return _usage("no program to run")
    if kind == "own-gil" and sys.version_info < (3, 12):
        return _usage("--subinterpreter=own-gil needs CPython 3.12 or later (this is %d.%d)"
                      % sys.version_info[:2])
    cmd = [sys.executable] + _interpreter_flags()
    if kind:
        cmd += ["-m", "gilshim._subinterp", kind, "--"]
    cmd += program
    if shim:
        _sh(opts + ["--"] + cmd)
    keep = [p for p in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":")
            if p and "libgilshim" not in p]
    env = dict(os.environ)
    if keep:
        env["LD_PRELOAD"] = ":".join(keep)
    else:
        env.pop("LD_PRELOAD", None)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)
