# SPDX-License-Identifier: MIT
"""The real-server tier: Apache with mod_wsgi, stock and with gilshim.

usage: server.py MOD_WSGI LIBGILSHIM LIBCBTHREAD
Runs tests/server/app.wsgi in mod_wsgi's default application group (a
sub-interpreter), in embedded and in daemon mode, once stock and once with
LIBGILSHIM in the LD_PRELOAD of the apache2 process, and for each:
  probe     20 requests at concurrency 4: where each callback ran
  graceful  `apache2 -k graceful` with /slow requests in flight, then 20 more
  load      SERVER_REQUESTS (2000) requests at concurrency 8, in 4 rounds
            alternating between the two
  stop      `apache2 -k stop` with /slow requests in flight, timed
then, with GILSHIM_MODE=diagnose and a JSON log, 20 requests, every child
killed (SIGKILL) and Apache stopped, and `gilshim report` over the log.
Apache runs from a config of its own in a temporary folder (nothing in
/etc/apache2 is read or changed), on 127.0.0.1 and a free port only.
Prints one line per check ("ok ..." or "FAIL ...") and the numbers side by
side; exits 1 if any check failed.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODULES = "/usr/lib/apache2/modules"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
REQUESTS = int(os.environ.get("SERVER_REQUESTS", "2000"))
KINDS = ("sqlite3", "sync", "thread")
SIDES = ("stock", "gilshim")
# What a crashed or aborted process leaves in Apache's error log.
CRASH = ("Fatal Python error", "exit signal", "Segmentation fault", "Aborted",
         "core dumped", "has died")
failed = []


def check(ok, what, detail=""):
    print(("  ok   " if ok else "  FAIL ") + what + (": " + detail if detail and not ok else ""),
          flush=True)
    if not ok:
        failed.append(what)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """\
ServerRoot "{d}"
PidFile "{d}/httpd.pid"
ErrorLog "{d}/error.log"
DefaultRuntimeDir "{d}"
LogLevel info
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
User www-data
Group www-data
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule wsgi_module {wsgi}
StartServers 2
ServerLimit 6
ThreadsPerChild 8
MaxRequestWorkers 16
MinSpareThreads 4
MaxSpareThreads 16
GracefulShutdownTimeout 10
WSGISocketPrefix "{d}/wsgi"
WSGIScriptAlias / "{d}/app.wsgi"
{daemon}
<Directory "{d}">
    Require all granted
</Directory>
"""
DAEMON = """WSGIDaemonProcess app processes=2 threads=8
WSGIProcessGroup app"""


class Apache:
    """One Apache, in folder d, with env added to apache2's environment."""

    def __init__(self, d, wsgi, daemon, env):
        self.d, self.port = d, free_port()
        self.conf = os.path.join(d, "httpd.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(d=d, port=self.port, m=MODULES, wsgi=wsgi,
                                daemon=DAEMON if daemon else ""))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("GILSHIM_") and k != "LD_PRELOAD"}
        self.env.update(env)

    def ctl(self, what):
        return subprocess.run([APACHE, "-f", self.conf, "-k", what], env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        r = self.ctl("start")
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        print(r.stdout, self.log(), sep="\n")
        return False

    def pid(self):
        try:
            with open(os.path.join(self.d, "httpd.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def stop(self, timeout=60):
        """-k stop; seconds until the parent is gone, or None (a hang)."""
        pid, t0 = self.pid(), time.time()
        self.ctl("stop")
        while pid and os.path.exists(f"/proc/{pid}") and time.time() - t0 < timeout:
            try:  # a zombie of ours is gone too
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ")[-1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.02)
        if pid and os.path.exists(f"/proc/{pid}") and time.time() - t0 >= timeout:
            os.kill(pid, signal.SIGKILL)
            return None
        return time.time() - t0

    def log(self):
        try:
            with open(os.path.join(self.d, "error.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def requests(port, path, n, conc, stop=None):
    """n requests (or, with stop, until stop is set) on conc threads, each
    with its own keep-alive connection. Returns (answers, errors, seconds,
    retries).

    A request whose reused keep-alive connection the server closed before any
    answer is sent once more on a new connection, as HTTP clients do (RFC
    9112, 9.3.1) and as retries counts: Apache's event MPM closes idle
    keep-alive connections whenever all of a child's workers are busy, which
    on a loaded machine happens to stock as to gilshim. A child that dies
    under its requests is seen by children_lost and the crash lines instead."""
    answers, errors, lock = [], [], threading.Lock()
    left, retries = [n], [0]

    def worker():
        conn, used, again = None, 0, False
        while True:
            if not again:
                with lock:
                    if (stop is not None and stop.is_set()) or (stop is None and left[0] <= 0):
                        break
                    left[0] -= 1
            try:
                if conn is None:
                    conn, used = http.client.HTTPConnection("127.0.0.1", port, timeout=30), 0
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                a = json.loads(body)
                used, again = used + 1, False
                with lock:
                    answers.append(a)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                if conn:
                    conn.close()
                conn = None
                if used and not again and isinstance(e, (ConnectionResetError, BrokenPipeError)):
                    again = True
                    with lock:
                        retries[0] += 1
                    continue
                again = False
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.02)  # a stopped server refuses at once: no busy loop
        if conn:
            conn.close()

    t0 = time.time()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return answers, errors, time.time() - t0, retries[0]


def children_lost(ap, pids):
    """The pids among those that answered which are gone without mod_wsgi's
    orderly exit in the error log: a child that died silently (an exit, not a
    signal, is not in Apache's log)."""
    log = ap.log()
    return sorted(p for p in pids if not os.path.exists(f"/proc/{p}")
                  and f"mod_wsgi (pid={p}): Destroying interpreters." not in log)


def tally(answers):
    """{kind: number of answers where that callback ran in the sub}"""
    return {k: sum(1 for a in answers if a.get(k) == "sub") for k in KINDS}


def in_flight(port, action, n_threads=4, before=0.4, after=0.6):
    """/slow requests on n_threads while action() runs; their outcome."""
    stop = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.update(r=requests(port, "/slow", 0, n_threads, stop)))
    t.start()
    time.sleep(before)
    res = action()
    time.sleep(after)
    stop.set()
    t.join(60)
    answers, errors, _, _ = out.get("r", ([], ["client hung"], 0, 0))
    return res, answers, errors


def run_pair(base, wsgi, daemon, lib):
    """Stock's Apache and gilshim's, both up, put through each phase in turn;
    the load alternates between them in rounds, so that the machine's other
    work weighs on both alike. Returns {side: results}."""
    aps, res = {}, {}
    for side in SIDES:
        d = tempfile.mkdtemp(prefix=f"{side}-", dir=base)
        os.chmod(d, 0o777)  # the children (www-data) create mod_wsgi's sockets here
        shutil.copy(os.path.join(HERE, "app.wsgi"), d)
        shutil.copy(os.path.join(base, "libcbthread.so"), d)
        aps[side] = Apache(d, wsgi, daemon, {"LD_PRELOAD": lib} if side == "gilshim" else {})
        res[side] = {"side": side}
        if not check(aps[side].start(), f"{side}: Apache starts"):
            for ap in aps.values():
                ap.stop()
            return res
    for side, ap in aps.items():
        answers, errors, _, _ = requests(ap.port, "/", 20, 4)
        res[side]["probe"], res[side]["probe_errors"] = tally(answers), len(errors)
    for side, ap in aps.items():
        _, a, e = in_flight(ap.port, lambda: ap.ctl("graceful"))
        res[side]["graceful_inflight"] = (len(a), len(e))
        time.sleep(0.5)
        answers, errors, _, _ = requests(ap.port, "/", 20, 4)
        res[side]["after_graceful"], res[side]["after_graceful_errors"] = tally(answers), len(errors)
    rounds = 4
    load = {side: [0, [], 0.0, 0, set()] for side in SIDES}
    for i in range(rounds):
        for side in (SIDES if i % 2 == 0 else SIDES[::-1]):
            answers, errors, secs, again = requests(aps[side].port, "/", REQUESTS // rounds, 8)
            load[side][0] += len(answers)
            load[side][1] += errors
            load[side][2] += secs
            load[side][3] += again
            load[side][4].update(a["pid"] for a in answers)
    for side, (ok, errors, secs, again, pids) in load.items():
        res[side]["load"] = (ok, len(errors), ok / secs if secs else 0, again)
        res[side]["load_errors"] = errors[:3]
        res[side]["load_lost"] = children_lost(aps[side], pids)
    for side, ap in aps.items():
        stop_secs, a, e = in_flight(ap.port, ap.stop, after=0.2)
        res[side]["stop"], res[side]["stop_inflight"] = stop_secs, (len(a), len(e))
        res[side]["crash_lines"] = [ln for ln in ap.log().splitlines()
                                    if any(c in ln for c in CRASH)]
    return res


def descendants(pid):
    """Every process under pid (Apache's children, mod_wsgi's daemons)."""
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def run_diagnose(base, wsgi, daemon, lib, mode):
    """Diagnose mode on the server: 20 requests, every child killed as Apache
    kills those that do not exit in time, then `gilshim report` over the log
    all processes wrote. Its counts must be those of the callbacks that the
    answers say stock ran in main."""
    d = tempfile.mkdtemp(prefix="diagnose-", dir=base)
    os.chmod(d, 0o777)
    shutil.copy(os.path.join(HERE, "app.wsgi"), d)
    shutil.copy(os.path.join(base, "libcbthread.so"), d)
    log = os.path.join(d, "diagnose.jsonl")
    # Every change written: the account is exact up to the kill.
    ap = Apache(d, wsgi, daemon, {"LD_PRELOAD": lib, "GILSHIM_MODE": "diagnose",
                                  "GILSHIM_LOG_FORMAT": "json", "GILSHIM_LOG": log,
                                  "GILSHIM_COUNT_INTERVAL_MS": "0"})
    if not check(ap.start(), f"{mode}: diagnose: Apache starts"):
        return
    answers, errors, _, _ = requests(ap.port, "/", 20, 4)
    in_main = {k: sum(1 for a in answers if a.get(k) == "main") for k in KINDS}
    pids = {a["pid"] for a in answers}
    for pid in descendants(ap.pid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    ap.stop()
    r = subprocess.run([os.path.join(ROOT, "tools", "inject.sh"), "report", "--json", log],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    text = subprocess.run([os.path.join(ROOT, "tools", "inject.sh"), "report", log],
                          stdout=subprocess.PIPE, text=True).stdout
    print(f"  {mode}: diagnose mode, 20 requests, stock ran in main: "
          + " ".join(f"{k} {in_main[k]}" for k in KINDS) + f"; {len(pids)} process(es) answered")
    print("    " + text.rstrip().replace("\n", "\n    "))
    try:
        rep = json.loads(r.stdout)
    except ValueError:
        check(False, f"{mode}: diagnose: gilshim report --json gives one JSON document",
              r.stdout[:200] + r.stderr[:200])
        return
    check(not errors, f"{mode}: diagnose: 20 requests answered", "; ".join(errors[:3]))
    check(r.returncode == (1 if any(in_main.values()) else 0),
          f"{mode}: diagnose: gilshim report's exit status says wrong-interpreter callbacks "
          "were found", f"exit {r.returncode}")
    found = rep.get("findings", [])

    def callbacks(obj, rule):
        fs = [f for f in found if obj in ((f.get("site") or {}).get("object") or "")
              and f.get("rule") == rule]
        return sum(f["callbacks"] for f in fs), fs

    n, fs = callbacks("_ctypes", 4)
    check(n == in_main["thread"] and all(f["processes"] == len(pids) for f in fs),
          f"{mode}: diagnose: the library thread's callbacks, rule 4 at _ctypes, "
          f"{in_main['thread']} from {len(pids)} process(es)", f"{n} in {fs}")
    n, fs = callbacks("_ctypes", 2)
    check(n == in_main["sync"], f"{mode}: diagnose: the synchronous ctypes callbacks, rule 2 "
          f"at _ctypes, {in_main['sync']}", f"{n} in {fs}")
    n, fs = callbacks("_sqlite3", 2)
    # The user function's site; its connection's close makes one more
    # (the function's destructor) on the same thread, in the same place.
    check(any(f["callbacks"] == in_main["sqlite3"] for f in fs) if in_main["sqlite3"] else not fs,
          f"{mode}: diagnose: the sqlite3 user function, rule 2 at _sqlite3, "
          f"{in_main['sqlite3']}", f"{fs}")
    check(not rep.get("other_events"), f"{mode}: diagnose: nothing else reported",
          str(rep.get("other_events")))
    schema = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "e2e", "check_report.py"),
                             "--events", log, "wrong_interpreter"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(schema.returncode == 0, f"{mode}: diagnose: every line of the log follows the schema",
          schema.stdout.strip().replace("\n", "; ")[:300])


def show(mode, s, g):
    def fmt(p):
        return " ".join(f"{k} {p.get(k, 0)}/20" for k in KINDS)
    print(f"  {mode}: callbacks in the sub, of 20 requests (stock | gilshim)")
    print(f"    first 20:          {fmt(s.get('probe', {}))} | {fmt(g.get('probe', {}))}")
    print(f"    after graceful:    {fmt(s.get('after_graceful', {}))} | "
          f"{fmt(g.get('after_graceful', {}))}")
    if "load" in s and "load" in g:
        ratio = g["load"][2] / s["load"][2] if s["load"][2] else float("nan")
        print(f"    load: {REQUESTS} requests at concurrency 8 (4 rounds, alternating): "
              f"stock {s['load'][0]} ok {s['load'][1]} errors {s['load'][2]:.0f}/s | "
              f"gilshim {g['load'][0]} ok {g['load'][1]} errors {g['load'][2]:.0f}/s; "
              f"throughput gilshim/stock {ratio:.2f}; sent again on a new connection "
              f"(keep-alive closed): stock {s['load'][3]} | gilshim {g['load'][3]}")
    for k, name in (("graceful_inflight", "graceful"), ("stop_inflight", "stop")):
        if k in s and k in g:
            print(f"    /slow in flight over {name}: stock {s[k][0]} ok {s[k][1]} failed | "
                  f"gilshim {g[k][0]} ok {g[k][1]} failed")
    if "stop" in s and "stop" in g:
        st = "hung" if s["stop"] is None else f"{s['stop']:.2f} s"
        gt = "hung" if g["stop"] is None else f"{g['stop']:.2f} s"
        print(f"    stop: stock {st} | gilshim {gt}")
    if s.get("crash_lines"):
        print(f"    stock's error log: {len(s['crash_lines'])} crash line(s), e.g. "
              f"{s['crash_lines'][0][-120:]}")


def judge(mode, s, g):
    full = {k: 20 for k in KINDS}
    check(g.get("probe") == full and g.get("probe_errors") == 0,
          f"{mode}: gilshim runs all 3 callbacks of 20 requests in the sub",
          f"{g.get('probe')} errors {g.get('probe_errors')}")
    check(g.get("after_graceful") == full and g.get("after_graceful_errors") == 0,
          f"{mode}: the same after a graceful restart with requests in flight",
          f"{g.get('after_graceful')} errors {g.get('after_graceful_errors')}")
    if "load" in g:
        check(g["load"][1] == 0 and g["load"][0] == REQUESTS,
              f"{mode}: gilshim serves {REQUESTS} requests at concurrency 8 without an error",
              f"{g['load'][1]} errors, e.g. {g['load_errors']}")
        check(not g["load_lost"], f"{mode}: no child of gilshim's Apache died under the load",
              f"gone without mod_wsgi's exit: {g['load_lost']}")
    if "stop" in g:
        check(g["stop"] is not None, f"{mode}: gilshim's Apache stops (no hang)")
        if g["stop"] is not None and s.get("stop") is not None:
            check(g["stop"] <= max(2 * s["stop"], s["stop"] + 2),
                  f"{mode}: gilshim's stop time is stock's",
                  f"{g['stop']:.2f} s against {s['stop']:.2f} s")
    check(not g.get("crash_lines"), f"{mode}: gilshim's error log has no crash and no "
          "'Fatal Python error'", "; ".join(g.get("crash_lines", [])[:3]))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip())
    wsgi, lib, cbthread = sys.argv[1:]
    base = tempfile.mkdtemp(prefix="gilshim-server-")
    os.chmod(base, 0o755)
    shutil.copy(cbthread, os.path.join(base, "libcbthread.so"))
    try:
        for mode, daemon in (("embedded", False), ("daemon", True)):
            r = run_pair(base, wsgi, daemon, lib)
            s, g = r["stock"], r["gilshim"]
            show(mode, s, g)
            judge(mode, s, g)
            run_diagnose(base, wsgi, daemon, lib, mode)
    finally:
        if not failed:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"  (logs kept in {base})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
