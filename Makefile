# SPDX-License-Identifier: MIT
# gilshim: see README.md. `make` builds build/libgilshim.so; `make test`
# runs every tier; `make demo` shows one wrong-interpreter callback fixed.
CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
MANDIR  ?= $(PREFIX)/share/man
# gilshim_report.py, run by `gilshim report`
REPORTDIR ?= $(PREFIX)/share/gilshim
WERROR  ?=
CFLAGS  ?= -O2 -g
SONAME  := libgilshim.so.0
BUILD   := build

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(if $(WERROR),-Werror)
LIB_FLAGS := -std=c11 -fPIC -fvisibility=hidden -pthread $(WARN)
LIB_LDFLAGS := -shared -Wl,-soname,$(SONAME) -Wl,-z,defs -Wl,--version-script=src/shim/exports.map

REGISTRY_SRC := $(wildcard src/registry/*.c)
SHIM_SRC     := $(wildcard src/shim/*/*.c)
HEADERS      := $(wildcard src/*/*.h src/*/*/*.h src/*/*/*/*.h include/*.h include/gilshim/*.h)

LIB := $(BUILD)/libgilshim.so

.PHONY: FORCE all test test-arm64 bench unit debug embed e2e lifecycle faults stress asan tsan valgrind sanitize legacy pep788 server python check demo clean install uninstall conformance conformance-ci packages model
all: $(LIB)
FORCE:

$(LIB): $(REGISTRY_SRC) $(SHIM_SRC) $(HEADERS) src/shim/exports.map
	@mkdir -p $(BUILD)
	$(CC) $(LIB_FLAGS) $(CFLAGS) $(REGISTRY_SRC) $(SHIM_SRC) -o $@ $(LIB_LDFLAGS) -ldl $(LDFLAGS)
	ln -sf libgilshim.so $(BUILD)/$(SONAME)

# Registry unit tests: linked directly, no Python, no preload.
$(BUILD)/test_registry: tests/unit/test_registry.c $(REGISTRY_SRC) src/registry/registry.h
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -pthread $(WARN) $(CFLAGS) -Isrc $< $(REGISTRY_SRC) -o $@ -lcriterion

# The port's pure functions (version strings), the same way.
$(BUILD)/test_port: tests/unit/test_port.c src/shim/port/versions.c src/shim/port/versions.h
	@mkdir -p $(BUILD)
	$(CC) -std=c11 $(WARN) $(CFLAGS) $< src/shim/port/versions.c -o $@ -lcriterion

unit: $(BUILD)/test_registry $(BUILD)/test_port
	$(BUILD)/test_registry --jobs 2
	$(BUILD)/test_port --jobs 2

# Every tier runs on the host's CPythons (pyenv's 3.9-3.13, Debian's 3.11),
# then inside the Debian sid root on 3.14 and 3.15 (tests/sid.sh;
# GILSHIM_SID=0 skips those).
SID := tests/sid.sh

# Embedding tests and end-to-end runs against every installed CPython.
embed: $(LIB)
	WERROR=$(WERROR) tests/run-embed.sh
	WERROR=$(WERROR) $(SID) tests/run-embed.sh

e2e: $(LIB)
	tests/run-e2e.sh
	$(SID) tests/run-e2e.sh

# Interpreter end, finalization, re-initialisation, thread exit, fork and
# misuse: each scenario run as stock CPython and with gilshim.
lifecycle: $(LIB)
	WERROR=$(WERROR) tests/run-lifecycle.sh
	WERROR=$(WERROR) $(SID) tests/run-lifecycle.sh

# Every allocation of the shim failed in turn, and PyThreadState_New failing
# for it: tests/faults/faults.c against a fault-injection build of the shim
# (build/fault/, never the shipped library), plain and under valgrind
# (tests/run-faults.sh; FAULTS_VALGRIND=0 leaves valgrind out).
faults:
	WERROR=$(WERROR) tests/run-faults.sh
	WERROR=$(WERROR) $(SID) tests/run-faults.sh

# 32 foreign threads x 4 sub-interpreters + main while the interpreters are
# ended and re-created and the runtime finalized (tests/stress/stress.c).
# STRESS_SECONDS per CPython; make test runs 1 s of the plain build.
STRESS_SECONDS ?= 10
stress: $(LIB)
	WERROR=$(WERROR) tests/run-stress.sh plain $(STRESS_SECONDS)
	WERROR=$(WERROR) $(SID) tests/run-stress.sh plain $(STRESS_SECONDS)
asan:
	WERROR=$(WERROR) tests/run-stress.sh asan $(STRESS_SECONDS)
	WERROR=$(WERROR) $(SID) tests/run-stress.sh asan $(STRESS_SECONDS)
tsan:
	WERROR=$(WERROR) tests/run-stress.sh tsan $(STRESS_SECONDS)
	WERROR=$(WERROR) $(SID) tests/run-stress.sh tsan $(STRESS_SECONDS)
# VALGRIND_SID=0: the host's CPythons only
VALGRIND_SID ?= 1
valgrind: $(LIB)
	WERROR=$(WERROR) tests/run-stress.sh valgrind $(STRESS_SECONDS)
	$(if $(filter 0,$(VALGRIND_SID)),@echo "valgrind: 3.14/3.15 not run (VALGRIND_SID=0)",WERROR=$(WERROR) $(SID) tests/run-stress.sh valgrind $(STRESS_SECONDS))
# Issue 6's ratios per CPython, measured side by side, then callgrind
# instruction counts (tests/run-bench.sh); then CPython 3.15's own PEP 788
# cycle against gilshim's (tests/run-bench-pep788.sh, docs/pep788.md). About
# 5 minutes; BENCH_RUNS processes per side, BENCH_IR=0 skips callgrind.
BENCH_RUNS ?= 3
bench: $(LIB)
	tests/run-bench.sh $(BENCH_RUNS)
	$(SID) tests/run-bench.sh $(BENCH_RUNS)
	$(SID) tests/run-bench-pep788.sh $(BENCH_RUNS)
# All four, briefly, on every version: what CI runs after make test.
sanitize:
	$(MAKE) asan tsan valgrind STRESS_SECONDS=2

# CPython's debug builds (--with-pydebug, its own asserts on): the tiers in
# short form on python3.11d here and 3.13d-3.15d in sid (tests/run-debug.sh),
# then the release builds' key e2e programs under -X dev and
# PYTHONMALLOC=debug (tests/run-e2e-key.sh). No CPython assertion or fatal
# error that stock does not also give.
DEV_E2E := KEY_SET=short KEY_PYFLAGS="-X dev" KEY_ENV=PYTHONMALLOC=debug KEY_LABEL="e2e -X dev"
debug: $(LIB)
	tests/run-debug.sh
	$(SID) tests/run-debug.sh
	$(DEV_E2E) tests/run-e2e-key.sh
	$(DEV_E2E) $(SID) tests/run-e2e-key.sh

# CPython's own regression suites (test_threading, test_capi, the
# sub-interpreter suites...) stock and with the shim preloaded, compared test
# by test (tests/run-conformance.sh). CONFORMANCE=full: every suite, about
# 6 minutes here; ci: a subset, about 2 minutes (make test runs it).
CONFORMANCE ?= full
conformance: $(LIB)
	tests/run-conformance.sh $(CONFORMANCE)
	$(SID) tests/run-conformance.sh $(CONFORMANCE)
conformance-ci: $(LIB)
	tests/run-conformance.sh ci
	$(SID) tests/run-conformance.sh ci

# The explicitly linked path: install into a scratch prefix, build the
# example legacy extension with pkg-config, run it without LD_PRELOAD.
legacy: $(LIB)
	tests/run-legacy.sh
	$(SID) tests/run-legacy.sh

# PEP 788's API from an extension's own threads: examples/pep788_ext through
# <gilshim/pep788.h> on 3.9-3.14 (installed into a scratch prefix, explicit
# linking, then also preloaded), and on CPython 3.15's own API with no
# gilshim, which checks the test (tests/run-pep788.sh).
pep788: $(LIB)
	WERROR=$(WERROR) tests/run-pep788.sh
	WERROR=$(WERROR) $(SID) tests/run-pep788.sh

# A real server: Apache with mod_wsgi, the application in its default
# application group (a sub-interpreter), embedded and daemon mode, stock and
# with gilshim preloaded into apache2: where each callback runs, a graceful
# restart and a stop with requests in flight, 2,000 requests at concurrency
# 8 (tests/run-server.sh). Debian's mod_wsgi for 3.11 here, sid's for
# 3.14 and 3.15. About 3 minutes.
server: $(LIB)
	tests/run-server.sh
	$(SID) tests/run-server.sh

# The wheel (pyproject.toml, setup.py, python/): built offline with
# python3 -m build --no-isolation, its platform tag checked against the
# library's glibc symbol versions, installed with pip --no-index into a
# fresh venv of every CPython and tested there: the command, python -m
# gilshim, the sub-interpreter runner, and the pytest plugin on
# examples/pytest_callback (python/tests/run.sh, docs/python.md).
python: $(LIB)
	python/tests/run.sh
	$(SID) sh -c 'python/tests/run.sh build/python/dist/gilshim-*.whl'

check: $(LIB) $(BUILD)/gilshim
	tests/check-exports.sh $(LIB)
	tests/check-inert.sh $(LIB)
	tests/check-layers.sh
	tests/check-secure.sh $(LIB)
	tests/check-man.sh $(BUILD)/gilshim $(LIB)
	tests/check-licence.sh

# Debian packages built from a copy of the tree, checked with lintian,
# installed on this host and used without the tree, then removed
# (tests/run-packages.sh; GILSHIM_PKG_SID=1 also in a fresh sid root).
packages:
	tests/run-packages.sh

# The row protocol (src/registry/registry.h) model-checked with spin: the
# model must verify, and each seeded bug must be caught, so a pass cannot be
# vacuous (docs/row-protocol-model.md). About a minute (1m00s in make test).
model:
	tests/run-model.sh

# The tiers on arm64, cross-built and run under qemu-user against Debian
# 12's CPython 3.11 and sid's 3.14/3.15 for arm64 (tests/arm64/run.sh; the
# roots from tools/deps.sh arm64; GILSHIM_ARM64=0 skips). ARM64_TIERS: the
# subset; empty: the default set (docs/testing.md#arm64).
ARM64_TIERS ?=
test-arm64: tools/deps.sh
	tools/deps.sh arm64
	WERROR=$(WERROR) tests/arm64/run.sh $(ARM64_TIERS)
	tests/arm64/packages.sh

# make test's tiers, run two at a time by tests/run-tiers.sh (TIERS_JOBS=1:
# one after the other); each tier's output is kept in build/tiers/TIER.log
# and printed whole when it ends. One name per line, the longest first.
# Targets joined by + run one after the other in one job, for tiers that
# write the same files: check, legacy and pep788 all rewrite build/gilshim,
# and legacy and pep788 both install into build/prefix.
TEST_TIERS := \
	test-arm64 \
	check+legacy+pep788+debug \
	conformance-ci \
	e2e \
	faults \
	lifecycle \
	python \
	server \
	embed \
	stress \
	unit \
	model

test: tools/deps.sh
	tools/deps.sh test
	$(MAKE) all
	MAKE="$(MAKE)" tests/run-tiers.sh STRESS_SECONDS=1 $(TEST_TIERS)
	@echo "make test: all tiers passed"

demo: tools/deps.sh
	tools/deps.sh demo
	$(MAKE) all
	demo/run.sh

VERSION := $(shell sed -n 's/^#define GILSHIM_VERSION_\(MAJOR\|MINOR\|PATCH\) //p' include/gilshim.h | paste -sd.)

# Remade every time: it depends on PREFIX, which make cannot see change.
$(BUILD)/gilshim.pc: gilshim.pc.in include/gilshim.h FORCE
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# The gilshim command: tools/inject.sh with its name, its version and the
# installed library filled in. Remade every time, as gilshim.pc.
$(BUILD)/gilshim: tools/inject.sh include/gilshim.h FORCE
	@mkdir -p $(BUILD)
	sed -e 's|^me=inject\.sh$$|me=gilshim|' -e 's|^version=$$|version=$(VERSION)|' \
	    -e "s|^installed=$$|installed='$(LIBDIR)/$(SONAME)'|" \
	    -e "s|^reporter=$$|reporter='$(REPORTDIR)/gilshim_report.py'|" $< > $@
	chmod 0755 $@

install: $(LIB) $(BUILD)/gilshim.pc $(BUILD)/gilshim
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include/gilshim $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(REPORTDIR)
	install -m 0755 $(LIB) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libgilshim.so
	install -m 0644 include/gilshim.h $(DESTDIR)$(PREFIX)/include/gilshim.h
	install -m 0644 include/gilshim/redirect.h $(DESTDIR)$(PREFIX)/include/gilshim/redirect.h
	install -m 0644 include/gilshim/pep788.h $(DESTDIR)$(PREFIX)/include/gilshim/pep788.h
	install -m 0644 $(BUILD)/gilshim.pc $(DESTDIR)$(LIBDIR)/pkgconfig/gilshim.pc
	install -m 0755 $(BUILD)/gilshim $(DESTDIR)$(BINDIR)/gilshim
	install -m 0644 tools/gilshim_report.py $(DESTDIR)$(REPORTDIR)/gilshim_report.py
	install -m 0644 man/gilshim.1 $(DESTDIR)$(MANDIR)/man1/gilshim.1
	install -m 0644 man/gilshim.3 $(DESTDIR)$(MANDIR)/man3/gilshim.3

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libgilshim.so \
	      $(DESTDIR)$(PREFIX)/include/gilshim.h $(DESTDIR)$(PREFIX)/include/gilshim/redirect.h \
	      $(DESTDIR)$(PREFIX)/include/gilshim/pep788.h \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/gilshim.pc $(DESTDIR)$(BINDIR)/gilshim \
	      $(DESTDIR)$(MANDIR)/man1/gilshim.1 $(DESTDIR)$(MANDIR)/man3/gilshim.3 \
	      $(DESTDIR)$(REPORTDIR)/gilshim_report.py
	-rmdir $(DESTDIR)$(PREFIX)/include/gilshim $(DESTDIR)$(REPORTDIR)

clean:
	rm -rf $(BUILD)
