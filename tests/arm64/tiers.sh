#!/bin/sh
# SPDX-License-Identifier: MIT
# The tiers named on the command line, inside tests/arm64/run.sh's
# namespace: cc and the binutils are the cross ones, build/ is the root's
# own, binfmt_misc runs aarch64 binaries. Each tier prints its seconds.
set -eu
cd "$(dirname "$0")/../.."
status=0
make -s all WERROR="${WERROR:-}" >/dev/null
for tier; do
    start=$(date +%s)
    echo "== arm64 tier $tier"
    case $tier in
        # a patched GLOB_DAT slot and a JUMP_SLOT one (the log's count),
        # .data still writable: tests/arm64/gotexe.c; and relro.h's rounding
        relro)
            cc -std=c11 -Wall -Wextra -Werror -Isrc tests/arm64/test_relro.c -o build/test_relro -lcriterion &&
            build/test_relro &&
            cc -shared -fPIC -O2 tests/arm64/gotlib.c -Wl,-z,relro,-z,now -o build/libgotlib.so &&
            cc -O2 tests/arm64/gotexe.c -rdynamic -o build/gotexe -Lbuild -Wl,-rpath,"$PWD/build" -lgotlib &&
            rm -f build/gotexe.log &&
            LD_PRELOAD=$PWD/build/libgilshim.so GILSHIM_LOG=$PWD/build/gotexe.log GILSHIM_LOG_LEVEL=debug \
                build/gotexe && grep 'GOT patching' build/gotexe.log &&
            grep -q 'GOT patching: 2 call slot(s) redirected' build/gotexe.log || {
                echo "[FAIL] relro: GOT patching of libgotlib (log: build/arm64/.../gotexe.log)"; false; } ;;
        unit) make -s unit ;;
        check) tests/check-exports.sh build/libgilshim.so ;;
        embed) tests/run-embed.sh ;;
        lifecycle) tests/run-lifecycle.sh ;;
        # memcheck cannot run under qemu-user
        faults) FAULTS_VALGRIND=0 tests/run-faults.sh ;;
        pep788) tests/run-pep788.sh ;;
        legacy) tests/run-legacy.sh ;;
        e2e) tests/run-e2e.sh ;;
        stress) tests/run-stress.sh plain "${STRESS_SECONDS:-1}" ;;
        *) echo "arm64: unknown tier $tier" >&2; false ;;
    esac || { status=1; echo "[FAIL] arm64 tier $tier"; }
    echo "== arm64 tier $tier: $(( $(date +%s) - start )) s"
done
exit $status
