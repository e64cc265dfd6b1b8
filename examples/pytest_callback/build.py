# SPDX-License-Identifier: MIT
"""Build the ticker extension for the Python that runs this:
    python build.py [--single-phase] [OUTDIR]
(no setuptools needed: the compiler line from sysconfig)."""
import os
import subprocess
import sys
import sysconfig

here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
single = "--single-phase" in args
args = [a for a in args if a != "--single-phase"]
out = os.path.abspath(args[0] if args else here)
os.makedirs(out, exist_ok=True)
target = os.path.join(out, "ticker" + sysconfig.get_config_var("EXT_SUFFIX"))
cmd = [os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-pthread", "-Wall",
       "-I" + sysconfig.get_paths()["include"], "-I" + here,
       os.path.join(here, "ticker.c"), os.path.join(here, "tickermod.c"), "-o", target]
if single:
    cmd.insert(1, "-DTICKER_SINGLE_PHASE")
subprocess.run(cmd, check=True)
print(target)
