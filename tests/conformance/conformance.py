# SPDX-License-Identifier: MIT
"""CPython's own regression suites, stock and under gilshim, compared test by test.

    conformance.py run --mode full|ci --tag TAG --out DIR [--expected FILE] [--required]
    conformance.py table SUMMARY.json...

`run` is started with the CPython under test (sys.executable) and runs its
`-m test` twice, side by side with the same flags: stock, and through
tools/inject.sh. Outcomes are compared per test id (from regrtest's
--junit-xml, completed by the FAIL/ERROR blocks of -v, which name failed
subtests and class/module fixtures that junit leaves out) and per test file
(regrtest's progress line: passed, failed, crashed, timed out, env changed...).
Every difference is rerun alone (-m) in both configurations, then classified:

  flaky       stock itself gave more than one outcome, or the difference did
              not come back (not alone, nor in a rerun of its whole test file)
  expected    consistent, and listed in expected.txt
  unexpected  anything else: consistent, or intermittent under gilshim only

Exit status: 0 no unexpected difference, 1 unexpected differences,
2 usage or setup error, 3 this CPython's test package is incomplete (skipped).
`table` prints the per-version summary of several runs. Standard library only;
runs on CPython 3.9-3.13.
"""
import argparse
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
INJECT = os.path.join(ROOT, 'tools', 'inject.sh')

# Test files of the full run, in this order, where this CPython has them.
# Alternatives (a|b): the first present is used (test_sqlite3 was test_sqlite
# before 3.11).
SUITES = [
    'test_threading', 'test_thread', 'test_capi', 'test_sqlite3|test_sqlite',
    'test_ctypes', 'test_embed', 'test_atexit',
    # sub-interpreters: 3.9-3.12 / 3.13
    'test__xxsubinterpreters', 'test__xxinterpchannels',
    'test__interpreters', 'test__interpchannels', 'test_interpreters',
]

# The ci subset: whole test files, and the parts of test_capi (by -m pattern)
# that go through PyGILState_*, foreign threads, thread states or
# sub-interpreters. No -u cpu, no stock hangs (stock-hangs.txt).
CI_WHOLE = ['test_threading', 'test_thread', 'test_sqlite3|test_sqlite', 'test_ctypes',
            'test_atexit', 'test__xxsubinterpreters', 'test__xxinterpchannels',
            'test__interpreters', 'test__interpchannels', 'test_interpreters']
CI_SELECTED = {
    'test_capi': [
        '*.TestThreadState.*',            # PyGILState_Ensure from new threads; gh-96071 (tracemalloc)
        '*.SubinterpreterTest.*',
        '*.TestPendingCalls.*',
        '*.Test_testcapi.*',              # _testcapi's C self-tests (thread states among them)
        '*test_subinterps*',
        '*.TestStaticTypes.*', '*.Test_ModuleStateAccess.*',
    ],
}

FULL_RESOURCES = ['-u', 'cpu']  # interpreters stress tests, trashcan tests


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- regrtest runs

PROGRESS = re.compile(r'^(?:\d+:\d\d:\d\d )?(?:load avg: [\d.]+ )?'
                      r'\[\s*\d+/\d+(?:/\d+)?\]\s+(test_\w+(?:\.\w+)*)\s*(.*)$')
SEP = '=' * 70
BLOCK = re.compile(r'^(FAIL|ERROR|UNEXPECTED SUCCESS): (.*)$')
# -v: "test_x (test.mod.Cls.test_x) ... ok", or a docstring line before " ... ok"
STARTED = re.compile(r'^(\w+) \(([\w.]+)\)')
FINISHED = re.compile(r' \.\.\. (ok|FAIL|ERROR|skipped|expected failure|unexpected success)')
FRAME = re.compile(r'File "[^"]*/test/[^"]*", line \d+,? in test')
TIMEOUT = re.compile(r'Timeout \(\d+:\d\d:\d\d\)!')
FIXTURES = ('setUpClass', 'tearDownClass', 'setUpModule', 'tearDownModule')


def file_status(text):
    """regrtest's result text for a test file -> one word."""
    text = text.split(' -- ')[0]
    for key, word in (('timed out', 'timeout'), ('crashed', 'crashed'),
                      ('non-zero exit', 'crashed'), ('Exit code', 'crashed'),
                      ('resource denied', 'resource_denied'), ('env changed', 'env_changed'),
                      ('run no tests', 'no_tests'), ('interrupted', 'interrupted'),
                      ('failed', 'failed'), ('skipped', 'skipped'), ('passed', 'passed')):
        if key in text:
            return word
    return 'unknown'


def describe_to_id(desc):
    """'test_x (test.mod.Cls.test_x) [sub] (i=1)' (3.11+) or 'test_x (test.mod.Cls) ...'
    (3.9-3.10) -> (test id, subtest suffix or '')."""
    m = re.match(r'^(\w+) \(([\w.]+)\)(?: (.*))?$', desc.strip())
    if not m:
        return desc.strip(), ''
    meth, cls, rest = m.group(1), m.group(2), (m.group(3) or '').strip()
    if meth in FIXTURES:
        base = '%s [%s]' % (cls, meth)
    elif cls.endswith('.' + meth):
        base = cls
    else:
        base = cls + '.' + meth
    return base, rest


def junit_outcome(tc):
    tags = {c.tag for c in tc}
    if 'error' in tags:
        return 'error'
    if 'failure' in tags:
        return 'fail'
    if 'skipped' in tags:
        return 'skip'
    if 'outcome' in tags:
        return 'xpass'
    if 'output' in tags:
        return 'xfail'
    return 'pass'


def module_of(test_id, modules):
    """The test file (as given to regrtest) a test id belongs to."""
    if test_id.startswith('test.'):
        name = test_id.split('.')[1].split(' ')[0]
        if name in modules:
            return name
    for m in modules:      # 3.9-3.11: ctypes.test.*, 3.9-3.10: sqlite3.test.*
        stem = m.replace('test_', '', 1).rstrip('3')
        if test_id.startswith(stem) and '.test' in test_id:
            return m
    return None


class Result:
    """One regrtest run: per test file and per test id."""

    def __init__(self):
        self.files = {}       # test file -> status word
        self.tests = {}       # test id -> outcome
        self.test_file = {}   # test id -> test file
        self.notes = {}       # test file -> evidence for a crash/timeout
        self.culprits = {}    # test file -> the test it crashed or hung in
        self.unresolved = set()   # broken test files whose culprit is unknown
        self.seconds = 0.0
        self.killed = False
        self.left_behind = []


def parse_run(log_path, xml_path, modules):
    r = Result()
    try:
        with open(log_path, errors='replace') as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    chunks = {}
    cur = None
    for i, line in enumerate(lines):
        m = PROGRESS.match(line)
        if m and m.group(1) in modules:
            cur = m.group(1)
            r.files[cur] = file_status(m.group(2))
            chunks.setdefault(cur, [])
            continue
        if cur is not None:
            chunks[cur].append(line)
    blocks = []
    for mod, chunk in chunks.items():
        for i, line in enumerate(chunk):
            if line == SEP and i + 1 < len(chunk):
                b = BLOCK.match(chunk[i + 1])
                if b:
                    kind = {'FAIL': 'fail', 'ERROR': 'error'}.get(b.group(1), 'xpass')
                    base, sub = describe_to_id(b.group(2))
                    blocks.append((mod, kind, base, sub))
        if r.files.get(mod) == 'crashed' and any(TIMEOUT.search(l) for l in chunk):
            r.files[mod] = 'timeout'    # regrtest --timeout: faulthandler ended the worker
        if r.files.get(mod) in BROKEN:
            # The test it stopped in: the last one -v shows started and not finished.
            last, done = None, False
            for line in chunk:
                m = STARTED.match(line)
                if m:
                    last, done = describe_to_id(m.group(0))[0], False
                if last and FINISHED.search(line):
                    done = True
            frames = [l.strip() for l in chunk if FRAME.search(l)]
            note = []
            if last and not done:
                r.culprits[mod] = last
                note.append('stopped in ' + last)
            if frames:
                note.append('at ' + frames[0])
            r.notes[mod] = '; '.join(note)
    if xml_path and os.path.exists(xml_path):
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError:
            root = None
        if root is not None:
            suites = root.findall('testsuite') if root.tag == 'testsuites' else [root]
            order = list(chunks)    # test files in the order they ran (-j1)
            for k, suite in enumerate(suites):
                mod = order[k] if len(suites) == len(order) else None
                cases = suite.findall('testcase')
                started = [describe_to_id(m.group(0))[0]
                           for m in map(STARTED.match, chunks.get(mod, ())) if m]
                for j, tc in enumerate(cases):
                    name = tc.get('name')
                    if not name:
                        continue   # a test whose subtests failed: from the blocks
                    if '.' not in name:
                        # junit names a test by test.id(), which some tests
                        # shadow (test_interpreters: self.id = an interpreter id);
                        # -v names it by class and method
                        name = (started[j] if len(started) == len(cases)
                                else '%s#%d' % (mod, j))
                    r.tests[name] = junit_outcome(tc)
                    if mod:
                        r.test_file[name] = mod
    for mod, kind, base, sub in blocks:
        if sub:
            r.tests[base + ' ' + sub] = kind
            r.test_file[base + ' ' + sub] = mod
            r.tests.setdefault(base, 'subtest_' + kind)
        else:
            r.tests.setdefault(base, kind)
        r.test_file.setdefault(base, mod)
    for mod, c in r.culprits.items():
        r.tests.setdefault(c, r.files[mod])     # the test never finished: timeout, crashed
        r.test_file.setdefault(c, mod)
    for t in r.tests:
        if t not in r.test_file:
            r.test_file[t] = module_of(t, modules)
    return r


def stock_env():
    env = dict(os.environ)
    pre = [p for p in re.split(r'[: ]', env.get('LD_PRELOAD', '')) if p and 'libgilshim' not in p]
    if pre:
        env['LD_PRELOAD'] = ':'.join(pre)
    else:
        env.pop('LD_PRELOAD', None)
    return env


def start(cmd, log_path, cwd, env):
    os.makedirs(cwd, exist_ok=True)
    f = open(log_path, 'w')
    f.write('$ ' + ' '.join(cmd) + '\n')
    f.flush()
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                         start_new_session=True)
    return p, f


def reap(marker):
    """Kills what a run left behind: processes carrying its marker in their
    environment (regrtest puts workers in their own process groups, so a test's
    child that outlives its killed worker escapes killpg). Returns their pids."""
    pids = []
    tag = ('CONFORMANCE_RUN=' + marker).encode() + b'\0'
    for name in os.listdir('/proc'):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open('/proc/%s/environ' % name, 'rb') as f:
                if tag not in f.read() + b'\0':
                    continue
            os.kill(int(name), signal.SIGKILL)
            pids.append(int(name))
        except OSError:
            pass
    return pids


_runs = [0]


def run_pair(d, modules, patterns, timeout, resources, ignore=()):
    """Runs `-m test` on `modules` stock and under gilshim at the same time,
    in d/stock and d/shim. Returns (stock Result, shim Result)."""
    procs = {}
    # regrtest stops a test file at `timeout` (its worker at 1.5x); this bounds
    # the whole run in case regrtest itself hangs.
    bound = int(timeout * 1.5 + 30) * len(modules) + 60
    _runs[0] += 1
    t0 = time.time()
    for side in ('stock', 'shim'):
        sd = os.path.join(d, side)
        os.makedirs(sd, exist_ok=True)
        xml = os.path.join(sd, 'junit.xml')
        if os.path.exists(xml):
            os.unlink(xml)
        cmd = [sys.executable, '-m', 'test', '-j1', '-v', '--timeout', str(timeout),
               '--junit-xml', xml] + resources
        for p in patterns or ():
            cmd += ['-m', p]
        for p in ignore:
            cmd += ['-i', p]
        cmd += modules
        if side == 'shim':
            cmd = [INJECT] + cmd
        env = stock_env()
        env['CONFORMANCE_RUN'] = '%d.%d.%s' % (os.getpid(), _runs[0], side)
        procs[side] = start(cmd, os.path.join(sd, 'log.txt'), sd, env) + (env['CONFORMANCE_RUN'],)
    results = {}
    for side in ('stock', 'shim'):
        p, f, marker = procs[side]
        left = max(1.0, bound - (time.time() - t0))
        killed = False
        try:
            p.wait(left)
        except subprocess.TimeoutExpired:
            killed = True
            p.kill()
            p.wait()
        left_behind = reap(marker)
        f.write('\n[conformance] exit status %s%s after %.1f s\n'
                % (p.returncode, ' (killed: the run exceeded %d s)' % bound if killed else '',
                   time.time() - t0))
        if left_behind:
            f.write('[conformance] killed %d process(es) left behind: %s\n'
                    % (len(left_behind), ' '.join(map(str, left_behind))))
        f.close()
        sd = os.path.join(d, side)
        r = parse_run(os.path.join(sd, 'log.txt'), os.path.join(sd, 'junit.xml'), modules)
        r.killed = killed
        r.left_behind = left_behind
        r.seconds = time.time() - t0
        for m in modules:
            r.files.setdefault(m, 'killed' if killed else 'absent')
        results[side] = r
    return results['stock'], results['shim']


def run_set(d, modules, patterns, timeout, resources, most=5, ignore=()):
    """run_pair, continued past crashes and hangs: when a test file crashed or
    timed out on either side in test X, X gets that outcome there, and the
    file runs again on both sides without X (-i X), up to `most` times, so
    that the tests after X are compared too."""
    s, g = run_pair(d, modules, patterns, timeout, resources, ignore)
    last = (s, g)
    ignored = list(ignore)
    for k in range(most):
        broken = [m for m in modules
                  if last[0].files.get(m) in BROKEN or last[1].files.get(m) in BROKEN]
        if not broken:
            break
        new = []
        for m in broken:
            for r, acc in zip(last, (s, g)):
                if r.files.get(m) not in BROKEN:
                    continue
                c = r.culprits.get(m)
                if not c:
                    acc.unresolved.add(m)
                    continue
                acc.tests.setdefault(c, r.files[m])
                acc.test_file.setdefault(c, m)
                if c not in ignored and c not in new:
                    new.append(c)
        again = [m for m in broken if m not in s.unresolved and m not in g.unresolved]
        if not new or not again:
            break
        if patterns and all('.' in p and '*' not in p for p in patterns) \
                and set(patterns) <= set(ignored + new):
            break       # every selected test has been run
        ignored += new
        log('  %s stopped in %s; running %s again without %s'
            % ('/'.join(sorted(set(broken))), ', '.join(new), ' '.join(again),
               'it' if len(new) == 1 else 'them'))
        last = run_pair(os.path.join(d, 'cont%d' % (k + 1)), again, patterns, timeout,
                        resources, ignore=ignored)
        for acc, r in zip((s, g), last):
            for t, o in r.tests.items():
                acc.tests.setdefault(t, o)
                acc.test_file.setdefault(t, r.test_file.get(t))
            acc.left_behind += r.left_behind
            for m, n in r.notes.items():
                if n:
                    acc.notes[m] = (acc.notes.get(m, '') + '; then ' + n).lstrip('; ')
    return s, g


# ---------------------------------------------------------------- comparison

BROKEN = ('timeout', 'crashed', 'interrupted', 'absent', 'killed')


class Unit:
    """One difference: a test id, or a whole test file."""

    def __init__(self, kind, key, module, stock, shim):
        self.kind, self.key, self.module = kind, key, module   # kind: 'test' or 'file'
        self.stock, self.shim = [stock], [shim]
        self.context = None      # (stock, shim) of a rerun of the whole file
        self.cls = None
        self.why = ''
        self.reason = ''
        self.folded = 0          # test ids folded into a file unit
        self.notes = []

    def as_dict(self):
        return dict(kind=self.kind, id=self.key, module=self.module, stock=self.stock,
                    shim=self.shim, context=self.context, classification=self.cls,
                    why=self.why, reason=self.reason, folded=self.folded, notes=self.notes)


def differences(stock, shim, modules):
    units = []
    by_file = {}
    for t in sorted(set(stock.tests) | set(shim.tests)):
        a, b = stock.tests.get(t, 'absent'), shim.tests.get(t, 'absent')
        if a != b:
            mod = stock.test_file.get(t) or shim.test_file.get(t)
            by_file.setdefault(mod, []).append((t, a, b))
    for mod in modules:
        a, b = stock.files.get(mod, 'absent'), shim.files.get(mod, 'absent')
        diffs = by_file.pop(mod, [])
        unresolved = mod in stock.unresolved or mod in shim.unresolved
        if a != b and (unresolved or not diffs):
            u = Unit('file', mod, mod, a, b)
            u.folded = len(diffs)
            for side, r in (('stock', stock), ('shim', shim)):
                if mod in r.notes and r.notes[mod]:
                    u.notes.append('%s: %s' % (side, r.notes[mod]))
            units.append(u)
            continue
        for t, x, y in diffs:
            u = Unit('test', t, mod, x, y)
            for side, r, o in (('stock', stock, x), ('shim', shim, y)):
                if o in BROKEN and r.notes.get(mod):
                    u.notes.append('%s: %s' % (side, r.notes[mod]))
            units.append(u)
    for mod, diffs in by_file.items():   # ids whose file could not be told
        for t, x, y in diffs:
            units.append(Unit('test', t, mod, x, y))
    return units


def load_expected(path, fields=('version', 'id', 'stock', 'shim', 'reason')):
    out = []
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.split(None, len(fields) - 1)
            if len(parts) < len(fields):
                raise SystemExit('%s:%d: want %s' % (path, n, ' '.join(f.upper() for f in fields)))
            e = dict(zip(fields, parts))
            e.update(line=n, seen=False)
            out.append(e)
    return out


def match_expected(expected, tag, unit):
    for e in expected:
        if (fnmatch.fnmatchcase(tag, e['version']) and fnmatch.fnmatchcase(unit.key, e['id'])
                and fnmatch.fnmatchcase(unit.stock[0], e['stock'])
                and fnmatch.fnmatchcase(unit.shim[0], e['shim'])):
            e['seen'] = True
            return e
    return None


def rerun_pattern(test_id):
    base = test_id.split(' ', 1)[0]
    if ' [' in test_id and test_id.split(' [', 1)[1].rstrip(']') in FIXTURES:
        return base + '.*'
    return base


def classify(unit, tag):
    s, g = unit.stock, unit.shim
    if len(set(s)) > 1:
        unit.cls, unit.why = 'flaky', 'stock gave %s' % '/'.join(sorted(set(s)))
        return
    s0 = s[0]
    differ = [x for x in g if x != s0]
    if len(differ) == len(g):
        unit.cls = 'unexpected'
        unit.why = 'consistent: stock %s in %d runs, gilshim %s in %d' % (
            s0, len(s), '/'.join(sorted(set(g))), len(g))
        return
    if len(differ) == 1 and g[0] != s0:
        # only the first run differed
        if unit.context is not None and unit.context[1] != unit.context[0]:
            unit.cls = 'unexpected'
            unit.why = ('differs in a run of the whole test file (stock %s, gilshim %s), '
                        'not alone: order-dependent' % unit.context)
        else:
            unit.cls = 'flaky'
            unit.why = 'not reproduced in %d reruns%s' % (
                len(g) - 1, ' nor in a rerun of the whole file' if unit.context else '')
        return
    unit.cls = 'unexpected'
    unit.why = 'intermittent under gilshim only: %d of %d runs differ, stock %s in all %d' % (
        len(differ), len(g), s0, len(s))


def cmd_run(args):
    t_start = time.time()
    tag = args.tag
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    summary = dict(tag=tag, python=sys.executable, version=sys.version.split()[0],
                   mode=args.mode, status='error', units=[], notes=[], files={})
    summary_path = os.path.join(out, 'summary.json')

    def finish(status, code):
        summary['status'] = status
        summary['seconds'] = round(time.time() - t_start, 1)
        with open(summary_path, 'w') as f:
            json.dump(summary, f, indent=1)
        return code

    # Is the test package there?
    try:
        import test
        import test.libregrtest  # noqa: F401
        testdir = os.path.dirname(test.__file__)
    except ImportError:
        testdir = None
    def present(name):
        return testdir and (os.path.exists(os.path.join(testdir, name + '.py'))
                            or os.path.exists(os.path.join(testdir, name, '__init__.py')))
    if testdir is None or not present('test_threading') or not present('test_thread'):
        msg = ('SKIP %s (%s): its test package is incomplete (%s); %s' % (
            tag, sys.executable, 'no test.libregrtest' if testdir is None else
            '%s has %d entries, no test_threading' % (testdir, len(os.listdir(testdir))),
            'a pyenv CPython is required: FAIL' if args.required else
            'on Debian, install libpython%d.%d-testsuite to include it' % sys.version_info[:2]))
        log(msg)
        summary['notes'].append(msg)
        return finish('skipped', 2 if args.required else 3)

    def pick(entry):
        for name in entry.split('|'):
            if present(name):
                return name
        return None
    only = os.environ.get('CONFORMANCE_TESTS', '').split()
    timeout = int(os.environ.get('CONFORMANCE_TIMEOUT', '180' if args.mode == 'full' else '90'))
    reruns = int(os.environ.get('CONFORMANCE_RERUNS', '3'))
    # a test rerun alone needs less than a whole file
    rerun_timeout = min(timeout, int(os.environ.get(
        'CONFORMANCE_RERUN_TIMEOUT', '60' if args.mode == 'full' else '30')))
    hang_timeout = int(os.environ.get('CONFORMANCE_HANG_TIMEOUT', '30'))
    resources = FULL_RESOURCES if args.mode == 'full' else []
    expected = load_expected(args.expected)
    hangs = [e for e in load_expected(args.hangs, fields=('version', 'id', 'reason'))
             if fnmatch.fnmatchcase(tag, e['version'])]

    plan = []     # dict(mods, patterns, timeout, ignore)
    missing = []
    if args.mode == 'full':
        mods = []
        for e in SUITES:
            n = pick(e)
            if n:
                mods.append(n)
            elif e.split('|')[0] in ('test_threading', 'test_thread', 'test_capi', 'test_sqlite3',
                                     'test_ctypes', 'test_embed', 'test_atexit'):
                missing.append(e.replace('|', ' or '))
        if only:
            mods = [m for m in mods if m in only]
        plan.append((mods, None))
    else:
        whole = [n for n in map(pick, CI_WHOLE) if n]
        sel = [n for n in CI_SELECTED if present(n)]
        missing = [n for n in CI_SELECTED if not present(n)]
        if only:
            whole = [m for m in whole if m in only]
            sel = [m for m in sel if m in only]
        if whole:
            plan.append((whole, None))
        if sel:
            plan.append((sel, [p for n in sel for p in CI_SELECTED[n]]))
    in_plan = {m for mods, _ in plan for m in mods}
    hangs = [e for e in hangs if module_of(e['id'], in_plan)]
    hang_ids = [e['id'] for e in hangs]
    plan = [dict(mods=m, patterns=p, timeout=timeout, ignore=hang_ids) for m, p in plan]
    if hangs and args.mode == 'full':
        hmods = [m for m in in_plan if any(module_of(h, [m]) for h in hang_ids)]
        plan.append(dict(mods=sorted(hmods), patterns=hang_ids, timeout=hang_timeout, ignore=[]))
    elif hangs:
        note = '%s: %d test(s) that hang in stock CPython not run (stock-hangs.txt)' % (tag, len(hangs))
        log('note: ' + note)
        summary['notes'].append(note)
    for m in missing:
        note = '%s: %s is not in %s' % (tag, m, testdir)
        log('note: ' + note)
        summary['notes'].append(note)

    # The shim side must really run with the shim.
    chk = subprocess.run([INJECT, '--check', sys.executable], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, env=stock_env())
    log('%s: %s' % (tag, chk.stdout.strip()))
    summary['shim'] = chk.stdout.strip()
    if chk.returncode != 0:
        log('%s: tools/inject.sh --check failed (exit %d)' % (tag, chk.returncode))
        return finish('error', 2)

    all_modules = []
    units = []
    n_tests, n_same = 0, 0
    t_main = time.time()
    for i, step in enumerate(plan):
        mods, patterns = step['mods'], step['patterns']
        all_modules += [m for m in mods if m not in all_modules]
        d = os.path.join(out, 'run%d' % (i + 1))
        log('%s: %s%s%s' % (tag, ' '.join(mods),
                            ' (-m %s)' % ' '.join(patterns) if patterns else '',
                            ', %d s per file' % step['timeout'] if step['timeout'] != timeout else ''))
        s, g = run_set(d, mods, patterns, step['timeout'], resources, ignore=step['ignore'])
        for side, r in (('stock', s), ('gilshim', g)):
            if r.left_behind:
                log('  %s: killed %d process(es) left behind' % (side, len(r.left_behind)))
        ids = set(s.tests) | set(g.tests)
        n_tests += len(ids)
        n_same += sum(1 for t in ids if s.tests.get(t, 'absent') == g.tests.get(t, 'absent'))
        for m in mods:
            skipped = sum(1 for t, o in s.tests.items() if s.test_file.get(t) == m and o == 'skip')
            total = sum(1 for t in s.tests if s.test_file.get(t) == m)
            summary['files']['%s/run%d' % (m, i + 1)] = dict(
                stock=s.files.get(m), shim=g.files.get(m), tests=total, skipped=skipped)
            log('  %-26s stock %-12s gilshim %-12s %5d tests, %d skipped' % (
                m, s.files.get(m), g.files.get(m), total, skipped))
        for u in differences(s, g, mods):
            u.patterns = patterns
            u.timeout = step['timeout']
            units.append(u)
    summary['main_seconds'] = round(time.time() - t_main, 1)

    # Reruns
    todo = []
    for u in units:
        e = match_expected(expected, tag, u)
        if e:
            u.cls, u.reason = 'expected', e['reason']
            u.why = 'expected.txt line %d' % e['line']
        else:
            todo.append(u)
    if todo:
        log('%s: %d difference(s); rerunning each %d time(s) in both configurations'
            % (tag, len(todo), reruns))
    rdir = os.path.join(out, 'reruns')
    by_mod = {}
    for u in todo:
        by_mod.setdefault((u.kind, u.module, tuple(u.patterns or ()), u.timeout), []).append(u)
    n = 0
    for (kind, mod, plan_pat, t_unit), us in sorted(by_mod.items(), key=lambda kv: str(kv[0])):
        if mod is None:
            for u in us:
                u.notes.append('test file unknown: not rerun')
            continue
        # a file: as in the first run; a test: that test alone
        patterns = list(plan_pat) if kind == 'file' else sorted({rerun_pattern(u.key) for u in us})
        for k in range(reruns):
            n += 1
            d = os.path.join(rdir, '%03d-%s' % (n, mod))
            if kind == 'file':
                s, g = run_pair(d, [mod], patterns, t_unit, resources, ignore=hang_ids)
            else:
                s, g = run_set(d, [mod], patterns, min(t_unit, rerun_timeout), resources)
            for u in us:
                src = (s.files, g.files) if kind == 'file' else (s.tests, g.tests)
                u.stock.append(src[0].get(u.key, 'absent'))
                u.shim.append(src[1].get(u.key, 'absent'))
                u.notes.append('rerun %d: %s' % (k + 1, d))
            if all(len(set(u.stock)) > 1 for u in us):
                break        # stock varies for all: flaky, no need to go on
            if all(u.shim[0] == u.shim[-1] == 'timeout' and 'timeout' not in u.stock
                   for u in us):
                for u in us:
                    u.notes.append('reruns stopped: hung again')
                break        # hung twice, never under stock: a rerun costs the timeout
        # Differences seen only in the first run: once more with the whole file
        again = [u for u in us if u.kind == 'test' and len(set(u.stock)) == 1
                 and u.shim[0] != u.stock[0] and all(x == u.stock[0] for x in u.shim[1:])]
        if again:
            n += 1
            d = os.path.join(rdir, '%03d-%s-whole' % (n, mod))
            s, g = run_pair(d, [mod], list(plan_pat), t_unit, resources,
                            ignore=[h for h in hang_ids if h not in plan_pat])
            for u in again:
                u.context = (s.tests.get(u.key, 'absent'), g.tests.get(u.key, 'absent'))
                u.notes.append('whole-file rerun: %s' % d)
    for u in todo:
        classify(u, tag)

    summary['units'] = [u.as_dict() for u in units]
    counts = dict(tests=n_tests, identical=n_same, files=len(all_modules))
    for c in ('flaky', 'expected', 'unexpected'):
        counts[c] = sum(1 for u in units if u.cls == c)
    summary.update(counts)
    summary['expected_unseen'] = [
        '%s %s' % (e['version'], e['id']) for e in expected
        if not e['seen'] and fnmatch.fnmatchcase(tag, e['version'])
        and any(e['id'].startswith('test.' + m) or fnmatch.fnmatchcase(e['id'], m + '*')
                for m in all_modules)]
    report(summary, out)
    return finish('fail' if counts['unexpected'] else 'ok', 1 if counts['unexpected'] else 0)


def report(summary, out):
    units = summary['units']
    if not units:
        log('%s: %d tests in %d files, outcomes identical' % (
            summary['tag'], summary['tests'], summary['files']))
    for u in units:
        head = '%s %s: %s %s: stock %s, gilshim %s' % (
            summary['tag'], u['classification'].upper(), u['kind'], u['id'],
            ' '.join(u['stock']), ' '.join(u['shim']))
        log(head)
        log('    ' + u['why'] + (' -- ' + u['reason'] if u['reason'] else ''))
        if u['folded']:
            log('    %d test ids of this file differ with it (not listed)' % u['folded'])
        for note in u['notes']:
            if not note.startswith('rerun ') or u['classification'] == 'unexpected':
                log('    ' + note)
    for e in summary.get('expected_unseen', []):
        log('%s note: expected difference not seen this run: %s' % (summary['tag'], e))
    log('%s: logs in %s' % (summary['tag'], out))


def cmd_table(args):
    rows = []
    worst = 0
    for p in args.summaries:
        try:
            with open(p) as f:
                rows.append(json.load(f))
        except (OSError, ValueError) as e:
            log('conformance: %s: %s' % (p, e))
            worst = 2
    hdr = ('CPython', 'mode', 'files', 'tests', 'identical', 'flaky', 'expected',
           'unexpected', 'seconds', 'result')
    table = [hdr]
    for r in rows:
        if r['status'] == 'skipped':
            table.append((r['tag'], r['mode'], '-', '-', '-', '-', '-', '-',
                          str(r.get('seconds', '')), 'SKIPPED (test package incomplete)'))
            continue
        table.append((r['tag'] + (' (%s)' % r['version'] if r['version'] else ''), r['mode'],
                      str(r.get('files', '-')), str(r.get('tests', '-')),
                      str(r.get('identical', '-')), str(r.get('flaky', '-')),
                      str(r.get('expected', '-')), str(r.get('unexpected', '-')),
                      str(r.get('seconds', '-')), r['status'].upper()))
    w = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    for i, row in enumerate(table):
        log('  '.join(c.ljust(w[j]) for j, c in enumerate(row)).rstrip())
        if i == 0:
            log('  '.join('-' * x for x in w))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd')
    r = sub.add_parser('run')
    r.add_argument('--mode', choices=('full', 'ci'), default='full')
    r.add_argument('--tag', required=True)
    r.add_argument('--out', required=True)
    r.add_argument('--expected')
    r.add_argument('--hangs', help='tests that hang in stock CPython (stock-hangs.txt)')
    r.add_argument('--required', action='store_true',
                   help='an incomplete test package is an error (exit 2), not a skip (3)')
    t = sub.add_parser('table')
    t.add_argument('summaries', nargs='+')
    args = ap.parse_args(argv)
    if args.cmd == 'run':
        return cmd_run(args)
    if args.cmd == 'table':
        return cmd_table(args)
    ap.print_usage()
    return 2


if __name__ == '__main__':
    sys.exit(main())
