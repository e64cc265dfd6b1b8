# SPDX-License-Identifier: MIT
"""Run a Python program as the main code of a fresh sub-interpreter.

    python -m gilshim._subinterp legacy|own-gil -- (script.py | -m module) ARGS

(`python -m gilshim --subinterpreter` runs this under the shim.) The main
interpreter creates the sub-interpreter and runs _inner() in it; _inner
sets sys.argv, sys.path[0] and __main__ as `python script.py` or
`python -m module` would, runs the program, prints an uncaught exception
through sys.excepthook with the traceback from the program's first frame,
turns SystemExit into a status as Py_Exit does, flushes the sub-
interpreter's own sys.stdout/sys.stderr, and sends the status back through
a pipe. The main interpreter then ends the sub-interpreter (which waits for
its non-daemon threads and runs its atexit handlers, as Py_FinalizeEx does)
and exits with that status.
"""
import os
import sys

# legacy: Py_NewInterpreter()'s configuration (shared GIL, single-phase
# extensions allowed, fork/exec/threads/daemon threads allowed); own-gil:
# its own GIL and obmalloc, multi-phase extensions only.
CONFIG_313 = {"legacy": "legacy", "own-gil": "isolated"}


def _create(kind):
    if sys.version_info >= (3, 13):
        import _interpreters as mod
        return mod, mod.create(CONFIG_313[kind])
    import _xxsubinterpreters as mod
    # 3.12: isolated picks own-GIL or legacy; 3.10-3.11: isolated (the
    # default) forbids threads, fork and exec, which Py_NewInterpreter's
    # allow; 3.9 takes the keyword and ignores it.
    return mod, mod.create(isolated=(kind == "own-gil"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] not in ("legacy", "own-gil") or argv[1] != "--":
        sys.stderr.write("usage: python -m gilshim --subinterpreter[=legacy|own-gil] (script.py | -m module) [ARGS...]\n")
        return 2
    kind, program = argv[0], argv[2:]
    if kind == "own-gil" and sys.version_info < (3, 12):
        sys.stderr.write("gilshim: --subinterpreter=own-gil needs CPython 3.12 or later\n")
        return 2
    # This module's own directory (or the current one, for -m) was put first
    # on sys.path by `python -m`; the program's is set by _inner.
    path = list(sys.path[1:])
    mod, interp = _create(kind)
    r, w = os.pipe()
    code = "import sys\nsys.path[:] = %r\nimport gilshim._subinterp\ngilshim._subinterp._inner(%r, %d, %r)\n" % (
        path, program, w, sys.executable)
    try:
        failed = mod.run_string(interp, code)
    except Exception as e:  # 3.9-3.12: RunFailedError, only if _inner itself broke
        failed = e
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read().decode()
    if failed is not None or not reply:
        sys.stderr.write("gilshim: the sub-interpreter runner failed: %s\n" % (failed,))
        return 1
    kind, value, daemons = (reply.split(":") + [""])[:3]
    status = int(value) if kind == "exit" else 128 + int(value)
    if daemons:
        # A program run directly exits with its daemon threads running;
        # no CPython can end an interpreter that still has them.
        _exit_now(status)
    mod.destroy(interp)
    if kind == "signal":
        import signal
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(int(value), signal.SIG_DFL)
        os.kill(os.getpid(), int(value))
    return int(value)


def _exit_now(status):
    """exit(status) as C sees it (its atexit handlers, gilshim's exit summary
    among them, then stdio), without finalizing CPython."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        import ctypes
        ctypes.PyDLL(None).exit(status)
    except Exception:
        pass
    os._exit(status)


def _frames_to_skip():
    return {_inner.__code__, _run.__code__}


_daemons_left = False


def _inner(program, fd, executable):
    """In the sub-interpreter: run the program, send back "exit:N" or "signal:N"."""
    # The program finds sys.modules as a fresh interpreter has it (and
    # pytest can still rewrite the asserts of this package's plugin).
    for name in [m for m in sys.modules if m == "gilshim" or m.startswith("gilshim.")]:
        del sys.modules[name]
    try:
        reply = "exit:%d" % _run(program, executable)
        if _daemons_left:
            reply += ":daemons"
    except KeyboardInterrupt:
        import signal
        reply = "signal:%d" % signal.SIGINT
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    # The main interpreter closes fd: closed here, its number could be
    # reused by a thread of the program before main knew.
    os.write(fd, reply.encode())


def _run(program, executable):
    import __main__
    import builtins
    import runpy
    g = __main__.__dict__
    g.clear()
    g.update(__name__="__main__", __doc__=None, __package__=None, __spec__=None,
             __builtins__=builtins, __annotations__={})
    try:
        if program[0] == "-m":
            sys.argv[:] = ["-m"] + program[2:]
            sys.path.insert(0, os.getcwd())
            runpy._run_module_as_main(program[1], True)
        else:
            script = program[0]
            sys.argv[:] = program
            sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
            try:
                import io
                with io.open_code(script) as f:
                    source = f.read()
            except OSError as e:
                sys.stderr.write("%s: can't open file %r: [Errno %d] %s\n"
                                 % (executable, os.path.abspath(script), e.errno, e.strerror))
                return 2
            # As 3.9+, which makes the script's path absolute (not argv[0]).
            script = os.path.abspath(script)
            from importlib.machinery import SourceFileLoader
            g.update(__file__=script, __cached__=None, __loader__=SourceFileLoader("__main__", script))
            exec(compile(source, script, "exec"), g)
        status = 0
    except SystemExit as e:
        status = _exit_status(e)
    except KeyboardInterrupt as e:
        _excepthook(e)
        raise
    except BaseException as e:
        _excepthook(e)
        status = 1
    # Non-daemon threads, then atexit handlers, as Py_FinalizeEx, done here
    # rather than left to Py_EndInterpreter: with a daemon thread still
    # running, 3.9-3.11's destroy refuses the interpreter and 3.12+'s
    # Py_EndInterpreter aborts ("not the last thread"), so main must then
    # exit without ending it, after both.
    threading = sys.modules.get("threading")
    if threading is not None:
        if sys.version_info < (3, 12):
            threading._shutdown()
        else:  # there, a second _shutdown (Py_EndInterpreter's) fails an assert
            while True:
                left = [t for t in threading.enumerate()
                        if t is not threading.main_thread() and not t.daemon and t.is_alive()]
                if not left:
                    break
                for t in left:
                    t.join()
    import atexit
    atexit._run_exitfuncs()
    global _daemons_left
    _daemons_left = threading is not None and any(
        t.daemon and t.is_alive() for t in threading.enumerate() if t is not threading.main_thread())
    return status


def _excepthook(e):
    skip = _frames_to_skip()
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code in skip:
        tb = tb.tb_next
    e.__traceback__ = tb
    sys.excepthook(type(e), e, tb)


def _exit_status(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        sys.stderr.write("%s\n" % (code,))
    except Exception:
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
