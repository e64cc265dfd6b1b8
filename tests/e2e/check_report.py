"""Check a GILSHIM_LOG_FORMAT=json log against the schema in README.md.

usage: check_report.py LOG CALLBACKS OBJECT
  CALLBACKS  how many wrong-interpreter callbacks the program fired
  OBJECT     a substring of the object expected at the reported call site
Prints "ok", or what is wrong, one line each.
"""
import json
import sys

SCHEMA = 1
EVENTS = {"message", "wrong_interpreter", "summary", "route", "fail_safe", "release_mismatch",
          "unbalanced_exit", "ended_in_flight", "ensure_after_finalize",
          "ensure_while_finalizing", "token_misuse", "suppressed"}
problems = []


def need(cond, what):
    if not cond:
        problems.append(what)
    return cond


def is_site(s):
    return (isinstance(s, dict) and set(s) == {"object", "symbol", "offset"}
            and isinstance(s["offset"], int)
            and (s["object"] is None or isinstance(s["object"], str))
            and (s["symbol"] is None or isinstance(s["symbol"], str)))


log, expected, obj = sys.argv[1], int(sys.argv[2]), sys.argv[3]
events = []
with open(log) as f:
    for n, line in enumerate(f, 1):
        try:
            e = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {n}: not JSON ({exc})")
            continue
        events.append(e)
        need(isinstance(e, dict), f"line {n}: not an object")
        need(e.get("gilshim") == SCHEMA, f"line {n}: schema version {e.get('gilshim')!r}")
        need(e.get("event") in EVENTS, f"line {n}: unknown event {e.get('event')!r}")
        need(e.get("level") in ("warn", "info", "debug"), f"line {n}: level {e.get('level')!r}")
        need(isinstance(e.get("pid"), int), f"line {n}: pid")
        need(e.get("event") == "suppressed" or isinstance(e.get("tid"), int), f"line {n}: tid")
        need(isinstance(e.get("message"), str) and e["message"], f"line {n}: message")

wrong = [e for e in events if e.get("event") == "wrong_interpreter"]
summary = [e for e in events if e.get("event") == "summary"]
if need(len(wrong) == 1, f"{len(wrong)} wrong_interpreter events, expected 1 (one call site)"):
    w = wrong[0]
    need(is_site(w.get("site")) and obj in (w["site"]["object"] or ""),
         f"site {w.get('site')!r} does not name {obj}")
    t = w.get("thread", {})
    need(isinstance(t.get("tid"), int) and isinstance(t.get("name"), str), f"thread {t!r}")
    need(isinstance(w.get("stock"), int) and isinstance(w.get("owner"), int)
         and w["stock"] != w["owner"], f"stock {w.get('stock')!r} owner {w.get('owner')!r}")
    need(w.get("rule") == 4 and w.get("rule_name") == "creating thread",
         f"rule {w.get('rule')!r} {w.get('rule_name')!r}")
    c = w.get("creator", {})
    need(isinstance(c.get("tid"), int) and isinstance(c.get("name"), str)
         and is_site(c.get("site")) and "libcbthread" in (c["site"]["object"] or ""),
         f"creator {c!r}")
if need(len(summary) == 1, f"{len(summary)} summary events, expected 1"):
    s = summary[0]
    sites = s.get("sites", [])
    need(s.get("callbacks") == expected, f"summary counts {s.get('callbacks')!r}, fired {expected}")
    need(sum(x.get("count", 0) for x in sites) + s.get("lost", -1) == expected,
         "site counts do not add up")
    need(all(is_site(x.get("site")) for x in sites), "a summary site is malformed")
print("\n".join(problems) if problems else "ok")
