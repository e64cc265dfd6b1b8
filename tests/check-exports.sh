#!/bin/bash
# SPDX-License-Identifier: MIT
# libgilshim exports exactly the interposed names and the gilshim_ API, and
# links no libpython.
set -eu
lib=${1:-build/libgilshim.so}
expected="PyEval_RestoreThread PyEval_SaveThread PyGILState_Check PyGILState_Ensure
PyGILState_GetThisThreadState PyGILState_Release gilshim_PyEval_RestoreThread
gilshim_PyEval_SaveThread gilshim_PyGILState_Check gilshim_PyGILState_Ensure
gilshim_PyGILState_GetThisThreadState gilshim_PyGILState_Release gilshim_bind_thread
gilshim_ensure gilshim_get_stats gilshim_last_error gilshim_pthread_create gilshim_release gilshim_strerror
gilshim_unbind_thread gilshim_version gilshim_view_alive gilshim_view_current
gilshim_view_main pthread_create dlopen gilshim_redirection gilshim_mode
PyThreadState_Delete gilshim_PyThreadState_Delete PyInterpreterState_ThreadHead gilshim_guard_current gilshim_guard_from_view
gilshim_guard_close gilshim_guard_ensure gilshim_ensure_guarded"
want=$(echo $expected | tr ' ' '\n' | sort)
have=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort)
if [ "$want" != "$have" ]; then
    echo "check-exports: FAIL, exported set differs (< expected, > actual):"
    diff <(echo "$want") <(echo "$have")
    exit 1
fi
if ldd "$lib" | grep -q libpython; then
    echo "check-exports: FAIL, $lib links libpython"; exit 1
fi
if ! readelf -d "$lib" | grep -q 'SONAME.*libgilshim.so.0'; then
    echo "check-exports: FAIL, no soname"; exit 1
fi
# dlopen must reach glibc as a tail call on its pass-through path, or a bare
# name would be looked up with libgilshim's RUNPATH instead of the caller's.
# An indirect jump, as each architecture spells it (tests/arm64/run.sh puts
# the target's binutils first on PATH).
case $(readelf -h "$lib" | sed -n 's/^ *Machine: *//p') in
    AArch64) tailcall='br[[:space:]]+x[0-9]+' ;;
    *) tailcall='jmp +\*' ;;
esac
if ! objdump -d --no-show-raw-insn "$lib" | awk '/<dlopen>:/{f=1;next} f&&/^$/{exit} f' | grep -Eq "$tailcall"; then
    echo "check-exports: FAIL, dlopen does not tail-call the real one"; exit 1
fi
echo "check-exports: ok ($(echo "$have" | wc -l) symbols, no libpython)"
