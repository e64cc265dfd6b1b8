# SPDX-License-Identifier: MIT
"""A fresh sub-interpreter on 3.9-3.13, for the e2e probes (probe.py,
clients.py); tests/common/subinterp.h is its C counterpart."""


def run_in_sub(code, legacy=False):
    """Run CODE in a new sub-interpreter, then destroy it. 3.13: one with
    its own GIL unless LEGACY; 3.12: a legacy one, always; 3.9-3.11: the
    only kind there is. A failure inside
    raises RuntimeError (3.13) or the module's RunFailedError (3.9-3.12)."""
    try:
        import _interpreters as interpreters  # 3.13
    except ImportError:
        import _xxsubinterpreters as interpreters  # 3.9-3.12

        try:
            iid = interpreters.create(isolated=False)
        except TypeError:
            iid = interpreters.create()
        interpreters.run_string(iid, code)
    else:
        iid = interpreters.create("legacy" if legacy else "isolated")
        err = interpreters.exec(iid, code)
        if err is not None:
            raise RuntimeError(f"{err.type.__name__}: {err.msg}")
    interpreters.destroy(iid)
