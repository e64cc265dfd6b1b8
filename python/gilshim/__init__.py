# SPDX-License-Identifier: MIT
"""gilshim from Python: the library shipped in this package, and what is
loaded in this process.

    gilshim.__version__    the version of this package (= include/gilshim.h)
    gilshim.library_path   libgilshim.so inside this package
    gilshim.status()       whether libgilshim is loaded in this process, and
                           its version, mode and redirection method

status() never loads the library: it only asks one that the dynamic linker
already mapped (preloaded, or linked by an extension) through
RTLD_NOLOAD. `python -m gilshim` and the `gilshim` command run a program
with it preloaded (docs/python.md).
"""
import collections
import os

try:
    from ._version import version as __version__  # written by setup.py
except ImportError:  # run from the source tree, unbuilt
    def _tree_version():
        import re
        h = os.path.join(os.path.dirname(__file__), "..", "..", "include", "gilshim.h")
        try:
            with open(h) as f:
                return ".".join(re.findall(r"^#define GILSHIM_VERSION_[A-Z]+ (\d+)", f.read(), re.M))
        except OSError:
            return "unknown"
    __version__ = _tree_version()

__all__ = ["__version__", "library_path", "status", "Status"]

library_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libgilshim.so")

Status = collections.namedtuple("Status", "loaded version mode redirection library")
Status.__doc__ = """What status() found: loaded is a bool; the rest are str, or None when not loaded.
mode is "route" or "diagnose"; redirection is "symbol interposition", "GOT patching",
"explicit linking" or "none (no CPython when loaded)"; library is the path mapped.
Where ctypes cannot be imported (an own-GIL sub-interpreter of 3.12), only loaded and
library are known; the others are None."""


def _mapped_library():
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    path = fields[5].strip()
                    if os.path.basename(path).startswith("libgilshim.so"):
                        return path
    except OSError:
        pass
    return None


def status():
    """Status(loaded, version, mode, redirection, library) of the libgilshim in this process."""
    path = _mapped_library()
    if path is None:
        return Status(False, None, None, None, None)
    try:
        # Here, not at import: the sub-interpreter runner imports this
        # package, and 3.12's _ctypes does not load in an own-GIL one.
        import ctypes
    except ImportError:
        return Status(True, None, None, None, path)
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return Status(False, None, None, None, None)
    values = []
    for name in ("gilshim_version", "gilshim_mode", "gilshim_redirection"):
        f = getattr(lib, name)
        f.restype = ctypes.c_char_p
        f.argtypes = []
        values.append(f().decode())
    return Status(True, values[0], values[1], values[2], path)
