# SPDX-License-Identifier: MIT
"""Check a GILSHIM_LOG_FORMAT=json log against the schema in docs/messages.md.

usage: check_report.py LOG CALLBACKS OBJECT
         the log of tests/e2e's five wrong-interpreter callbacks (written
         with GILSHIM_COUNT_INTERVAL_MS=0, so that the counts lines, summed,
         must give them all):
         CALLBACKS  how many wrong-interpreter callbacks the program fired
         OBJECT     a substring of the object expected at the reported call site
       check_report.py --events LOG EVENT...
         the log holds each EVENT at least once, and no other event
         (counts, diagnose mode's account, may come with wrong_interpreter)
Either way every line must be one event of the schema, with exactly the
members its event has. Prints "ok", or what is wrong, one line each (and
exits 1).
"""
import json
import sys

SCHEMA = 1
COMMON = {"gilshim", "event", "level", "pid", "tid", "message"}
# The members each event has besides COMMON (docs/messages.md); "creator"
# only in a wrong_interpreter of rule 4.
MEMBERS = {
    "message": set(),
    "wrong_interpreter": {"time", "finding", "thread", "stock", "owner", "owner_kind", "rule",
                          "rule_name", "site"},
    "summary": {"time", "callbacks", "lost", "sites"},
    "counts": {"time", "findings"},
    "route": {"interpreter", "rule", "site"},
    "fail_safe": {"policy", "site"},
    "release_mismatch": {"site"},
    "unbalanced_exit": {"open", "site"},
    "ended_in_flight": {"interpreter", "in_flight"},
    "guard_wait": {"interpreter", "guards"},
    "ensure_after_finalize": {"site"},
    "ensure_while_finalizing": {"site"},
    "token_misuse": set(),
    "suppressed": set(),
}
EVENTS = set(MEMBERS)
RULES = {2: "GIL-released region", 3: "thread binding", 4: "creating thread", 5: "main"}
KINDS = ("main", "legacy", "own_gil", "unknown")
# A finding as "sites" of summary and "findings" of counts list it.
FINDING = {"finding", "site", "rule", "owner", "owner_kind", "stock", "count"}
problems = []


def need(cond, what):
    if not cond:
        problems.append(what)
    return cond


def is_int(x, least=None):
    return isinstance(x, int) and not isinstance(x, bool) and (least is None or x >= least)


def is_site(s):
    return (isinstance(s, dict) and set(s) == {"object", "symbol", "offset"}
            and is_int(s["offset"], 0)
            and (s["object"] is None or isinstance(s["object"], str))
            and (s["symbol"] is None or isinstance(s["symbol"], str)))


def is_thread(t, keys):
    return (isinstance(t, dict) and set(t) == keys and is_int(t["tid"], 0)
            and isinstance(t["name"], str))


def is_finding(f):
    return (isinstance(f, dict) and set(f) == FINDING and is_int(f["finding"], 1)
            and is_site(f["site"]) and is_int(f["count"], 1) and is_int(f["owner"], 0)
            and f["owner_kind"] in KINDS and is_int(f["stock"], 0) and f["rule"] in RULES)


def check_event(n, e):
    """One line: the members common to all, then those of its event."""
    if not need(isinstance(e, dict), f"line {n}: not an object"):
        return
    ev = e.get("event")
    if not need(ev in EVENTS, f"line {n}: unknown event {ev!r}"):
        return
    need(e.get("gilshim") == SCHEMA, f"line {n}: schema version {e.get('gilshim')!r}")
    # fail_safe: info where stock stops the thread too (docs/messages.md#levels)
    want = {"route": ("debug",), "message": ("warn", "info", "debug"),
            "fail_safe": ("warn", "info")}.get(ev, ("warn",))
    need(e.get("level") in want, f"line {n}: {ev} at level {e.get('level')!r}")
    need(is_int(e.get("pid"), 1), f"line {n}: pid")
    need(ev == "suppressed" or is_int(e.get("tid"), 1), f"line {n}: tid")
    need(isinstance(e.get("message"), str) and e["message"], f"line {n}: message")
    keys = (COMMON | MEMBERS[ev]) - ({"tid"} if ev == "suppressed" else set())
    if ev == "wrong_interpreter" and e.get("rule") == 4:
        keys = keys | {"creator"}
    need(set(e) == keys, f"line {n}: {ev} has members {sorted(set(e))}, expected {sorted(keys)}")
    if "time" in MEMBERS[ev]:
        need(isinstance(e.get("time"), (int, float)) and e["time"] > 1e9,
             f"line {n}: time {e.get('time')!r}")
    if "site" in MEMBERS[ev]:
        need(is_site(e.get("site")), f"line {n}: {ev} site {e.get('site')!r}")
    if ev == "wrong_interpreter":
        need(is_thread(e.get("thread"), {"tid", "name"}), f"line {n}: thread {e.get('thread')!r}")
        need(is_int(e.get("stock"), 0) and is_int(e.get("owner"), 0)
             and e["stock"] != e["owner"], f"line {n}: stock {e.get('stock')!r} owner {e.get('owner')!r}")
        need(e.get("rule") in RULES and e.get("rule_name") == RULES[e["rule"]],
             f"line {n}: rule {e.get('rule')!r} {e.get('rule_name')!r}")
        need(is_int(e.get("finding"), 1) and e.get("owner_kind") in KINDS,
             f"line {n}: finding {e.get('finding')!r} owner_kind {e.get('owner_kind')!r}")
        c = e.get("creator")
        need(c is None or (is_thread(c, {"tid", "name", "site"}) and is_site(c["site"])),
             f"line {n}: creator {c!r}")
    elif ev == "summary":
        sites = e.get("sites")
        need(is_int(e.get("callbacks"), 1) and is_int(e.get("lost"), 0),
             f"line {n}: callbacks {e.get('callbacks')!r} lost {e.get('lost')!r}")
        if need(isinstance(sites, list) and sites, f"line {n}: sites {sites!r}"):
            for s in sites:
                need(is_finding(s), f"line {n}: summary site {s!r}")
    elif ev == "counts":
        fs = e.get("findings")
        if need(isinstance(fs, list) and fs, f"line {n}: findings {fs!r}"):
            for f in fs:
                need(is_finding(f), f"line {n}: counts finding {f!r}")
    elif ev == "route":
        need(is_int(e.get("interpreter"), 0), f"line {n}: interpreter {e.get('interpreter')!r}")
        need(e.get("rule") in RULES, f"line {n}: rule {e.get('rule')!r}")
    elif ev == "fail_safe":
        need(e.get("policy") in ("park", "exit", "abort"), f"line {n}: policy {e.get('policy')!r}")
    elif ev == "unbalanced_exit":
        need(is_int(e.get("open"), 1), f"line {n}: open {e.get('open')!r}")
    elif ev == "ended_in_flight":
        need(is_int(e.get("interpreter"), 0) and is_int(e.get("in_flight"), 1),
             f"line {n}: interpreter {e.get('interpreter')!r} in_flight {e.get('in_flight')!r}")
    elif ev == "guard_wait":
        need(is_int(e.get("interpreter"), 0) and is_int(e.get("guards"), 1),
             f"line {n}: interpreter {e.get('interpreter')!r} guards {e.get('guards')!r}")


def read(log):
    events = []
    with open(log) as f:
        for n, line in enumerate(f, 1):
            try:
                e = json.loads(line)
            except ValueError as exc:
                problems.append(f"line {n}: not JSON ({exc})")
                continue
            check_event(n, e)
            events.append(e)
    return events


def object_of(site):
    return site.get("object") if isinstance(site, dict) else None


def check_callbacks(events, expected, obj):
    wrong = [e for e in events if e.get("event") == "wrong_interpreter"]
    summary = [e for e in events if e.get("event") == "summary"]
    if need(len(wrong) == 1, f"{len(wrong)} wrong_interpreter events, expected 1 (one call site)"):
        w = wrong[0]
        need(obj in (object_of(w.get("site")) or ""), f"site {w.get('site')!r} does not name {obj}")
        need(w.get("rule") == 4, f"rule {w.get('rule')!r}, expected 4")
        c = w.get("creator")
        need(isinstance(c, dict) and "libcbthread" in (object_of(c.get("site")) or ""),
             f"creator {c!r}")
    if need(len(summary) == 1, f"{len(summary)} summary events, expected 1"):
        s = summary[0]
        sites = s.get("sites", [])
        need(s.get("callbacks") == expected, f"summary counts {s.get('callbacks')!r}, fired {expected}")
        need(sum(x.get("count", 0) for x in sites) + s.get("lost", -1) == expected,
             "site counts do not add up")
    # The counts lines, summed, are the account without the summary.
    counted = sum(f.get("count", 0) for e in events if e.get("event") == "counts"
                  for f in e.get("findings", []))
    need(counted == expected, f"counts lines sum to {counted}, fired {expected}")


def check_events(events, wanted):
    seen = {e.get("event") for e in events if isinstance(e, dict)}
    for ev in wanted:
        need(ev in EVENTS, f"{ev}: not an event of the schema")
        need(ev in seen, f"no {ev} event")
    # diagnose mode's counts come with its wrong_interpreter events
    allowed = set(wanted) | ({"counts"} if "wrong_interpreter" in wanted else set())
    for ev in sorted(seen - allowed, key=str):
        need(False, f"unexpected {ev} event")


if len(sys.argv) >= 3 and sys.argv[1] == "--events":
    check_events(read(sys.argv[2]), sys.argv[3:])
elif len(sys.argv) == 4 and sys.argv[1] != "--events":
    check_callbacks(read(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
else:
    sys.exit(__doc__.strip())
print("\n".join(problems) if problems else "ok")
sys.exit(1 if problems else 0)
