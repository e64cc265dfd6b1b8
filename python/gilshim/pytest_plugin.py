# SPDX-License-Identifier: MIT
"""pytest plugin (entry point pytest11 "gilshim"); does nothing unless asked.

  --gilshim=diagnose|route       run the session with libgilshim preloaded: the
                                 process re-executes itself once, with the same
                                 arguments, under gilshim.sh
  --gilshim-subinterpreter[=legacy|own-gil]
                                 run the whole session as the main code of a fresh
                                 sub-interpreter (python -m gilshim --subinterpreter),
                                 stock CPython unless --gilshim is given too
  --gilshim-strict               a test with a finding fails
  --gilshim-log FILE             keep the shim's JSON log there (default: a
                                 temporary file, removed at the end)
  @pytest.mark.gilshim_ok(*sites) exempts a test's findings (or those whose call site
                                 contains one of sites) from --gilshim-strict

The shim writes JSON lines to GILSHIM_LOG with GILSHIM_COUNT_INTERVAL_MS=0, so
each wrong-interpreter callback is in the log by the time the test that made it
returns: the plugin reads the lines that are new at each phase of each test and
attributes them to that test (docs/python.md#the-pytest-plugin).
"""
import json
import os
import sys
import tempfile

import pytest

INNER = "GILSHIM_PYTEST_INNER"   # set in the re-executed process
LOG = "GILSHIM_PYTEST_LOG"       # the log that process reads
TEMP = "GILSHIM_PYTEST_LOG_TEMP"  # 1: the plugin made it, and removes it
KINDS = ("legacy", "own-gil")
RULES = {2: "GIL-released region", 3: "thread binding", 4: "creating thread", 5: "main"}


def pytest_addoption(parser):
    group = parser.getgroup("gilshim", "gilshim: callbacks in the wrong interpreter")
    group.addoption("--gilshim", choices=("diagnose", "route"), default=None,
                    help="run the session with libgilshim preloaded, in this mode")
    # No argparse choices: a bare --gilshim-subinterpreter followed by a
    # test path takes the path as its value; _reexec gives it back.
    group.addoption("--gilshim-subinterpreter", nargs="?", const="legacy", default=None,
                    metavar="legacy|own-gil",
                    help="run the whole session in a fresh sub-interpreter (default legacy)")
    group.addoption("--gilshim-strict", action="store_true", default=False,
                    help="a test with a wrong-interpreter finding fails (see the gilshim_ok marker)")
    group.addoption("--gilshim-log", default=None, metavar="FILE",
                    help="write the shim's JSON log to FILE and keep it")


def _reexec(config):
    import gilshim
    from gilshim import _cli

    mode = config.option.gilshim
    kind = config.option.gilshim_subinterpreter
    if kind and kind not in KINDS:  # the bare option took a test path
        kind = "legacy"
    env = dict(os.environ)
    env[INNER] = "1"
    opts = []
    if mode:
        log = config.option.gilshim_log
        if log:
            log = os.path.abspath(log)
            open(log, "w").close()
        else:
            fd, log = tempfile.mkstemp(prefix="gilshim-pytest-", suffix=".jsonl")
            os.close(fd)
            env[TEMP] = "1"
        env[LOG] = log
        env["GILSHIM_COUNT_INTERVAL_MS"] = "0"
        opts = (["--diagnose"] if mode == "diagnose" else []) + ["--json", "--log", log]
    args = []
    for a in config.invocation_params.args:
        if args[-1:] == ["--gilshim-subinterpreter"] and a not in KINDS:
            args[-1] = "--gilshim-subinterpreter=legacy"
        args.append(a)
    pytest_cmd = ["-m", "pytest"] + args
    if kind:
        argv = [sys.executable, "-m", "gilshim"] + (opts if mode else ["--no-shim"]) + \
            ["--subinterpreter=" + kind] + pytest_cmd
    else:
        argv = ["/bin/sh", _cli.SCRIPT] + opts + ["--", sys.executable] + \
            _cli._interpreter_flags() + pytest_cmd
    if mode == "route":
        env.pop("GILSHIM_MODE", None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(str(config.invocation_params.dir))
    os.execve(argv[0], argv, env)
    del gilshim


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    mode = config.option.gilshim
    kind = config.option.gilshim_subinterpreter
    if not mode and not kind:
        return None
    if kind and kind not in KINDS and "--gilshim-subinterpreter=" + kind in config.invocation_params.args:
        raise pytest.UsageError("--gilshim-subinterpreter: unknown kind '%s' (legacy or own-gil)" % kind)
    if os.environ.get(INNER) != "1":
        _reexec(config)  # does not return
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "gilshim_ok(*sites): under --gilshim-strict, this test's wrong-interpreter findings "
        "(or only those whose call site contains one of sites) do not fail it")
    mode = config.option.gilshim
    if not mode or os.environ.get(INNER) != "1":
        return
    import gilshim
    st = gilshim.status()
    if not st.loaded:
        raise pytest.UsageError("gilshim: libgilshim is not loaded after re-executing under it "
                                "(LD_PRELOAD=%s)" % os.environ.get("LD_PRELOAD", ""))
    if st.mode is not None and st.mode != mode:
        raise pytest.UsageError("gilshim: the shim runs in mode %s, not %s" % (st.mode, mode))
    config.pluginmanager.register(Tracker(config, os.environ[LOG]), "gilshim-tracker")


def site_text(site):
    if not isinstance(site, dict):
        return str(site)
    obj = site.get("object") or "?"
    off = site.get("offset")
    off = "%#x" % off if isinstance(off, int) else str(off)
    return "%s(%s+%s)" % (obj, site.get("symbol") or "", off)


class Finding:
    def __init__(self, key, site, rule, owner, stock, owner_kind=None):
        self.key, self.site, self.rule = key, site, rule
        self.owner, self.stock, self.owner_kind = owner, stock, owner_kind

    def rule_text(self):
        return "rule %s (%s)" % (self.rule, RULES.get(self.rule, "?"))


class Tracker:
    """Reads the log as it grows and charges each finding's callbacks to the running test."""

    def __init__(self, config, path):
        self.config = config
        self.path = path
        self.offset = 0
        self.partial = b""
        self.findings = {}   # key -> Finding
        self.counted = False  # a `counts` line was seen: counts carry the numbers
        self.by_test = {}    # nodeid -> {key: count}
        self.order = []      # nodeids in the order they got findings
        self.exit_summary = None

    # -- the log ---------------------------------------------------------
    def _events(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        events = []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                events.append(ev)
        return events

    def _finding(self, d):
        key = d.get("finding")
        site = site_text(d.get("site"))
        if key is None:  # a shim before the `counts` event: no finding ids
            key = (site, d.get("rule"), d.get("owner"), d.get("stock"))
        if key not in self.findings:
            self.findings[key] = Finding(key, site, d.get("rule"), d.get("owner"), d.get("stock"),
                                         d.get("owner_kind"))
        return key

    def collect(self, nodeid):
        """Charge the callbacks logged since the last call to nodeid; returns {key: count} added."""
        added = {}
        for ev in self._events():
            kind = ev.get("event")
            if kind == "wrong_interpreter":
                key = self._finding(ev)
                if not self.counted and "finding" not in ev:
                    # Without `counts`, only a site's first callback is logged.
                    added[key] = added.get(key, 0) + 1
            elif kind == "counts":
                if not self.counted:
                    self.counted = True
                    added.clear()  # the counts lines carry every callback, the first too
                for f in ev.get("findings") or []:
                    key = self._finding(f)
                    added[key] = added.get(key, 0) + int(f.get("count") or 0)
            elif kind == "summary":
                self.exit_summary = ev
        if added:
            tally = self.by_test.setdefault(nodeid, {})
            if nodeid not in self.order:
                self.order.append(nodeid)
            for key, n in added.items():
                tally[key] = tally.get(key, 0) + n
        return added

    # -- hooks -----------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        added = self.collect(item.nodeid)
        outcome = yield
        rep = outcome.get_result()
        tally = self.by_test.get(item.nodeid, {})
        if call.when == "teardown":
            for key, n in tally.items():
                f = self.findings[key]
                prop = "site=%s; %s; owner=%s; stock=%s; count=%d" % (
                    f.site, f.rule_text(), f.owner, f.stock, n)
                item.user_properties.append(("gilshim_finding", prop))
                if rep.user_properties is not item.user_properties:
                    rep.user_properties.append(("gilshim_finding", prop))
        if not self.config.option.gilshim_strict or rep.failed:
            return
        # Setup's and call's findings fail the call; teardown's, the teardown.
        judged = tally if call.when == "call" else added if call.when == "teardown" else {}
        bad = self._not_exempt(item, judged)
        if bad:
            rep.outcome = "failed"
            rep.longrepr = "gilshim: callbacks in the wrong interpreter (--gilshim-strict):\n" + \
                "\n".join("  %s  %s  owner %s, stock ran it in %s  x%d" % (
                    self.findings[k].site, self.findings[k].rule_text(),
                    self.findings[k].owner, self.findings[k].stock, n) for k, n in bad)

    def _not_exempt(self, item, tally):
        marks = list(item.iter_markers("gilshim_ok"))
        bad = []
        for key, n in tally.items():
            site = self.findings[key].site
            if any(not m.args or any(str(s) in site for s in m.args) for m in marks):
                continue
            bad.append((key, n))
        return bad

    def pytest_sessionfinish(self, session):
        self.collect("(outside any test)")

    def pytest_terminal_summary(self, terminalreporter):
        self.collect("(outside any test)")
        tr = terminalreporter
        tr.section("gilshim")
        if not self.order:
            tr.write_line("no callback ran in the wrong interpreter (mode %s)" % self.config.option.gilshim)
        for nodeid in self.order:
            tr.write_line(nodeid)
            for key, n in sorted(self.by_test[nodeid].items(), key=lambda kv: -kv[1]):
                f = self.findings[key]
                tr.write_line("    %-60s %s  owner %s, stock %s  x%d" % (
                    f.site, f.rule_text(), f.owner, f.stock, n))
        if not self.counted and self.order:
            tr.write_line("(this libgilshim logs no `counts` lines: each count is a site's first "
                          "callback only; the exit summary has the totals)")
        tr.write_line("log: %s" % (self.path if os.environ.get(TEMP) != "1" else "(temporary, removed)"))

    def pytest_unconfigure(self, config):
        if os.environ.get(TEMP) == "1":
            try:
                os.unlink(self.path)
            except OSError:
                pass
