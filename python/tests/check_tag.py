# SPDX-License-Identifier: MIT
"""The wheel's platform tag is honest: every GLIBC_x.y symbol version the
shipped library needs (readelf --version-info, read independently of the
objdump that setup.py uses) is at most the tag's manylinux_x_y, and the
library needs nothing but the C library and the dynamic linker."""
import re
import subprocess
import sys
import tempfile
import zipfile

wheel = sys.argv[1]
m = re.search(r"-py3-none-manylinux_(\d+)_(\d+)_(\w+)\.whl$", wheel)
if not m:
    sys.exit("check_tag: %s is not tagged py3-none-manylinux_X_Y_ARCH" % wheel)
tag = (int(m.group(1)), int(m.group(2)))
with tempfile.TemporaryDirectory() as d, zipfile.ZipFile(wheel) as z:
    lib = z.extract("gilshim/libgilshim.so", d)
    info = subprocess.run(["readelf", "--version-info", "--dynamic", "-W", lib], check=True,
                          capture_output=True, text=True).stdout
    meta = z.read([n for n in z.namelist() if n.endswith(".dist-info/METADATA")][0]).decode()
    names = z.namelist()
needed = sorted({tuple(map(int, v.split("."))) for v in re.findall(r"Name: GLIBC_(\d+\.\d+)", info)})
libs = sorted(set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", info)))
print("check_tag: %s: needs GLIBC %s, libraries %s" % (
    wheel.rsplit("/", 1)[-1], ", ".join("%d.%d" % v for v in needed), ", ".join(libs)))
bad = []
if not needed or max(needed) > tag:
    bad.append("needs GLIBC_%d.%d, tag says %d.%d" % (max(needed) + tag))
if max(needed) < tag:
    bad.append("tag %d.%d is newer than the GLIBC_%d.%d needed: it refuses systems that could load it" % (tag + max(needed)))
if not set(libs) <= {"libc.so.6", "libdl.so.2", "libpthread.so.0", "ld-linux-x86-64.so.2"}:
    bad.append("needs libraries outside glibc: %s" % libs)
if "License: MIT" not in meta:
    bad.append("no License: MIT in METADATA")
for f in ("gilshim/gilshim.sh", "gilshim/_version.py", "gilshim/pytest_plugin.py"):
    if f not in names:
        bad.append("missing " + f)
for b in bad:
    print("check_tag: FAIL: " + b)
sys.exit(1 if bad else 0)
