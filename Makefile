# gilshim: see README.md. `make` builds build/libgilshim.so; `make test`
# runs every tier; `make demo` shows one wrong-interpreter callback fixed.
CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
WERROR  ?=
CFLAGS  ?= -O2 -g
SONAME  := libgilshim.so.0
BUILD   := build

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(if $(WERROR),-Werror)
LIB_FLAGS := -std=c11 -fPIC -fvisibility=hidden -pthread $(WARN)
LIB_LDFLAGS := -shared -Wl,-soname,$(SONAME) -Wl,-z,defs -Wl,--version-script=src/shim/exports.map

REGISTRY_SRC := $(wildcard src/registry/*.c)
SHIM_SRC     := $(wildcard src/shim/*.c)
HEADERS      := $(wildcard src/*/*.h include/*.h include/gilshim/*.h)

LIB := $(BUILD)/libgilshim.so

.PHONY: all test unit embed e2e check demo clean install uninstall
all: $(LIB)

$(LIB): $(REGISTRY_SRC) $(SHIM_SRC) $(HEADERS) src/shim/exports.map
	@mkdir -p $(BUILD)
	$(CC) $(LIB_FLAGS) $(CFLAGS) $(REGISTRY_SRC) $(SHIM_SRC) -o $@ $(LIB_LDFLAGS) -ldl $(LDFLAGS)
	ln -sf libgilshim.so $(BUILD)/$(SONAME)

# Registry unit tests: linked directly, no Python, no preload.
$(BUILD)/test_registry: tests/unit/test_registry.c $(REGISTRY_SRC) src/registry/registry.h
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -pthread $(WARN) $(CFLAGS) -Isrc $< $(REGISTRY_SRC) -o $@ -lcriterion

unit: $(BUILD)/test_registry
	$(BUILD)/test_registry --jobs 2

# Embedding tests and end-to-end runs against every installed CPython.
embed: $(LIB)
	WERROR=$(WERROR) tests/run-embed.sh

e2e: $(LIB)
	tests/run-e2e.sh

check: $(LIB)
	tests/check-exports.sh $(LIB)
	tests/check-inert.sh $(LIB)

test: tools/deps.sh
	tools/deps.sh test
	$(MAKE) all
	$(MAKE) check unit embed e2e
	@echo "make test: all tiers passed"

demo: tools/deps.sh
	tools/deps.sh demo
	$(MAKE) all
	demo/run.sh

install: $(LIB)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/gilshim
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libgilshim.so
	install -m 0644 include/gilshim.h $(DESTDIR)$(PREFIX)/include/gilshim.h

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/$(SONAME) $(DESTDIR)$(PREFIX)/lib/libgilshim.so \
	      $(DESTDIR)$(PREFIX)/include/gilshim.h

clean:
	rm -rf $(BUILD)
