# SPDX-License-Identifier: MIT
# The parts of the wheel pyproject.toml cannot say: libgilshim is built with
# the Makefile's own compiler line (`make`) and copied into the package with
# the gilshim command (tools/inject.sh, filled in as `make install` does), and
# the wheel is tagged py3-none-<platform>: the library never links libpython,
# so one wheel serves every CPython, and <platform> is the oldest glibc that
# has every symbol version the library needs (docs/python.md#the-wheel).
import os
import re
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from wheel.bdist_wheel import bdist_wheel

TOP = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(TOP, "include", "gilshim.h")) as f:
        parts = dict(re.findall(r"^#define GILSHIM_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read(), re.M))
    return "%s.%s.%s" % (parts["MAJOR"], parts["MINOR"], parts["PATCH"])


def glibc_needed(lib):
    """The newest GLIBC_x.y among the symbol versions lib imports."""
    out = subprocess.run(["objdump", "-T", lib], check=True, capture_output=True, text=True).stdout
    found = {tuple(map(int, v.split("."))) for v in re.findall(r"\bGLIBC_(\d+\.\d+)\b", out)}
    return max(found)


class Build(build_py):
    def run(self):
        super().run()
        subprocess.run(["make", "-C", TOP, "build/libgilshim.so"], check=True)
        pkg = os.path.join(self.build_lib, "gilshim")
        self.copy_file(os.path.join(TOP, "build", "libgilshim.so"), os.path.join(pkg, "libgilshim.so"))
        with open(os.path.join(TOP, "tools", "inject.sh")) as f:
            script = f.read()
        # As the Makefile's build/gilshim, except that the library is the
        # one beside the script, wherever pip put it.
        script, n = re.subn(r"^me=inject\.sh$", "me=gilshim", script, flags=re.M)
        script, m = re.subn(r"^version=$", "version=" + version(), script, flags=re.M)
        script, k = re.subn(r"^installed=$", lambda _: 'installed="$(cd "$(dirname "$0")" && pwd)/libgilshim.so"',
                            script, flags=re.M)
        if (n, m, k) != (1, 1, 1):
            raise SystemExit("setup.py: tools/inject.sh no longer has its me=, version=, installed= lines")
        # `gilshim report` (inject.sh looks for it beside itself), once the
        # tree has it.
        report = os.path.join(TOP, "tools", "gilshim_report.py")
        if os.path.exists(report):
            self.copy_file(report, os.path.join(pkg, "gilshim_report.py"))
        out = os.path.join(pkg, "gilshim.sh")
        with open(out, "w") as f:
            f.write(script)
        os.chmod(out, 0o755)
        with open(os.path.join(pkg, "_version.py"), "w") as f:
            f.write("# SPDX-License-Identifier: MIT\n# Written by setup.py from include/gilshim.h.\n"
                    "version = %r\n" % version())


class Binary(Distribution):
    """Not pure: the package goes to platlib, at the wheel's root."""

    def has_ext_modules(self):
        return True


class Wheel(bdist_wheel):
    def get_tag(self):
        major, minor = glibc_needed(os.path.join(TOP, "build", "libgilshim.so"))
        return "py3", "none", "manylinux_%d_%d_%s" % (major, minor, os.uname().machine)


os.makedirs(os.path.join(TOP, "build", "python"), exist_ok=True)
setup(
    version=version(),
    distclass=Binary,
    cmdclass={"build_py": Build, "bdist_wheel": Wheel},
    options={"build": {"build_base": "build/python"}, "egg_info": {"egg_base": "build/python"}},
)
