# SPDX-License-Identifier: MIT
"""tools/gilshim_report.py on logs made up here: several processes in one
log and across logs, a pid that comes again after its summary, a last line
cut off by a kill, lines that are not events, a log of before the counts
event, and the exit statuses. Run by tests/run-server.sh:
  python3 tests/server/test_report.py"""
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gilshim_report  # noqa: E402

SITE = {"object": "_ctypes.so", "symbol": None, "offset": 90291}
SQL = {"object": "_sqlite3.so", "symbol": "fn", "offset": 12}


def finding(n, site, rule, count, kind="legacy"):
    return {"finding": n, "site": site, "rule": rule, "owner": 1, "owner_kind": kind,
            "stock": 0, "count": count}


def ev(pid, event, t=None, **members):
    e = {"gilshim": 1, "event": event, "level": "warn", "pid": pid, "tid": pid, **members,
         "message": event}
    if t is not None:
        e["time"] = t
    return json.dumps(e)


def wrong(pid, n, site, rule, t):
    return ev(pid, "wrong_interpreter", t, finding=n, thread={"tid": pid, "name": "x"},
              stock=0, owner=1, owner_kind="legacy", rule=rule, rule_name="?", site=site)


class Report(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def log(self, name, lines, tail=""):
        p = os.path.join(self.dir.name, name)
        with open(p, "w") as f:
            f.write("".join(ln + "\n" for ln in lines) + tail)
        return p

    def test_processes_logs_and_a_killed_one(self):
        a = self.log("a.jsonl", [
            # pid 10: killed, counted from its counts lines; the same site by two rules
            wrong(10, 1, SITE, 2, 100.0),
            ev(10, "counts", 100.0, findings=[finding(1, SITE, 2, 1)]),
            wrong(10, 2, SITE, 4, 101.0),
            ev(10, "counts", 102.0, findings=[finding(1, SITE, 2, 3), finding(2, SITE, 4, 5)]),
            # pid 11: exits normally: its summary is its account
            wrong(11, 1, SITE, 4, 103.0),
            ev(11, "counts", 103.0, findings=[finding(1, SITE, 4, 1)]),
            ev(11, "summary", 104.0, callbacks=7, lost=0, sites=[finding(1, SITE, 4, 7)]),
            # pid 11 again, a new process after its summary
            ev(11, "counts", 200.0, findings=[finding(1, SQL, 2, 2)]),
            "gilshim[11:11]: a text line",
            ev(12, "ensure_after_finalize", site=SITE),
        ], tail='{"gilshim":1,"event":"counts","pid":13,"fin')  # cut off by a kill
        b = self.log("b.jsonl", [ev(20, "counts", 150.0, findings=[finding(1, SITE, 4, 8)])])
        r = gilshim_report.read([a, b, a])
        got = {(f["where"], f["rule"]): (f["callbacks"], f["processes"], f["first_seen"],
                                         f["last_seen"]) for f in r["findings"]}
        self.assertEqual(got, {
            ("_ctypes.so(+0x160b3)", 2): (4, 1, 100.0, 102.0),
            ("_ctypes.so(+0x160b3)", 4): (5 + 7 + 8, 3, 101.0, 150.0),
            ("_sqlite3.so(fn+0xc)", 2): (2, 1, 200.0, 200.0),
        })
        self.assertEqual(r["callbacks"], 4 + 20 + 2)
        self.assertEqual(r["processes"], 4)
        self.assertEqual(r["logs"], [a, b])
        self.assertEqual(r["skipped_lines"], 1)
        self.assertEqual(r["cut_off"], [a])
        self.assertEqual(r["other_events"], {"ensure_after_finalize": 1})
        self.assertEqual(r["findings"][0]["rule"], 4)  # by callbacks
        text = gilshim_report.table(r)
        self.assertIn("_ctypes.so(+0x160b3)  4 creating thread", text)
        self.assertIn("26 wrong-interpreter callback(s) in 4 process(es), 2 log(s)", text)

    def test_a_log_of_before_counts(self):
        # schema 1 as it was: no time, finding, owner_kind or counts
        old = self.log("old.jsonl", [
            ev(5, "wrong_interpreter", thread={"tid": 5, "name": "x"}, stock=0, owner=1,
               rule=4, rule_name="creating thread", site=SITE),
            ev(5, "summary", callbacks=5, lost=0,
               sites=[{"site": SITE, "count": 5, "owner": 1, "stock": 0, "rule": 4}]),
        ])
        r = gilshim_report.read([old])
        self.assertEqual([(f["callbacks"], f["owner_kind"], f["first_seen"]) for f in r["findings"]],
                         [(5, None, None)])
        self.assertIn(" - ", gilshim_report.table(r))

    def status(self, *args):
        with redirect_stdout(io.StringIO()) as out:
            rc = gilshim_report.main(list(args))
        return rc, out.getvalue()

    def test_exit_status_and_json(self):
        clean = self.log("clean.jsonl", [ev(1, "message")])
        dirty = self.log("dirty.jsonl", [ev(2, "counts", 1.0, findings=[finding(1, SITE, 2, 1)])])
        self.assertEqual(self.status(clean)[0], 0)
        rc, out = self.status("--json", clean, dirty)
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out)["callbacks"], 1)
        self.assertEqual(self.status()[0], 2)
        self.assertEqual(self.status(os.path.join(self.dir.name, "none"))[0], 2)
        self.assertEqual(self.status("--bogus", clean)[0], 2)
        # as the command runs it
        r = subprocess.run([os.path.join(ROOT, "tools", "inject.sh"), "report", dirty],
                           stdout=subprocess.PIPE, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("1 finding(s)", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=1)
