# SPDX-License-Identifier: MIT
"""gilshim report: one table of the wrong-interpreter callbacks that
diagnose mode found, from the JSON logs of any number of processes and runs.

usage: gilshim report [--json] LOG...
       python3 gilshim_report.py [--json] LOG...

Each LOG is a GILSHIM_LOG written with GILSHIM_MODE=diagnose and
GILSHIM_LOG_FORMAT=json (docs/messages.md), by one process or many (Apache's
children all append to the same one). A process is told apart by its pid
within a log, and a pid whose process ended (its summary) and came again is
a new process. Its callbacks are its summary's counts if it reached a normal
exit, else the sum of its counts lines (written as they change, so a process
killed with SIGKILL still has them, up to GILSHIM_COUNT_INTERVAL_MS before
its end). A line cut off by a kill, or anything that is not a gilshim JSON
event, is skipped and counted.

One row per finding (call site, rule, owner's kind, stock's interpreter),
summed over every process: callbacks, the processes it was seen in, and when
it was first and last seen (UTC).

--json prints one JSON document instead (its members are in
docs/messages.md, "One report for many processes").

Exit status: 0 no wrong-interpreter callback found; 1 at least one found;
2 usage error, or a LOG that cannot be read.

Also importable: read(paths) returns the report as the dict --json prints,
and table(report) its text. Python 3.9+, standard library only.
"""
import json
import os
import sys
import time

__all__ = ["read", "table", "main"]

RULES = {2: "GIL-released region", 3: "thread binding", 4: "creating thread", 5: "main"}
REPORT_VERSION = 1


def describe(site):
    """A site object as gilshim's text form: object(symbol+0xoff)."""
    if not isinstance(site, dict):
        return "?"
    obj, sym, off = site.get("object"), site.get("symbol"), site.get("offset") or 0
    if obj is None:
        return hex(off)
    return f"{obj}({sym}+{off:#x})" if sym else f"{obj}(+{off:#x})"


def _site_key(site):
    if not isinstance(site, dict):
        return (None, None, None)
    return (site.get("object"), site.get("symbol"), site.get("offset"))


def _key(e):
    """A finding's identity across processes."""
    return (_site_key(e.get("site")), e.get("rule"), e.get("owner_kind"), e.get("stock"))


def _lines(path, stats):
    """The gilshim events of one log; a last line without its newline (a
    process killed while writing) and lines that are not events are counted."""
    with open(path, "rb") as f:
        data = f.read()
    parts = data.split(b"\n")
    if parts and parts[-1]:
        stats["cut_off"].append(path)
    for raw in parts[:-1]:
        if not raw.strip():
            continue
        try:
            e = json.loads(raw)
        except ValueError:
            stats["skipped"] += 1
            continue
        if isinstance(e, dict) and "gilshim" in e and "event" in e:
            yield e
        else:
            stats["skipped"] += 1


class _Process:
    def __init__(self):
        self.counted = {}   # key -> callbacks from counts lines
        self.summary = None  # key -> callbacks from the summary
        self.first = {}      # key -> wrong_interpreter events
        self.lost = 0


class _Finding:
    def __init__(self, key, e):
        self.key = key
        self.site = e.get("site")
        self.rule = e.get("rule")
        self.owner_kind = e.get("owner_kind")
        self.stock = e.get("stock")
        self.owners = set()
        self.creator = None
        self.first_seen = self.last_seen = None
        self.callbacks = 0
        self.processes = 0

    def seen(self, t):
        if isinstance(t, (int, float)):
            self.first_seen = t if self.first_seen is None else min(self.first_seen, t)
            self.last_seen = t if self.last_seen is None else max(self.last_seen, t)


def read(paths):
    """The report of the logs at paths, as a dict (the --json document)."""
    stats = {"skipped": 0, "cut_off": []}
    findings, processes, other = {}, [], {}
    seen_files, logs = set(), []

    def finding(e):
        k = _key(e)
        f = findings.get(k)
        if f is None:
            f = findings[k] = _Finding(k, e)
        if isinstance(e.get("owner"), int):
            f.owners.add(e["owner"])
        return k, f

    for path in paths:
        real = os.path.realpath(path)
        if real in seen_files:
            continue
        seen_files.add(real)
        logs.append(path)
        live = {}  # pid -> its current _Process in this log
        for e in _lines(path, stats):
            ev, pid = e.get("event"), e.get("pid")
            p = live.get(pid)
            if p is None:
                p = live[pid] = _Process()
                processes.append(p)
            if ev == "wrong_interpreter":
                k, f = finding(e)
                p.first[k] = p.first.get(k, 0) + 1
                f.seen(e.get("time"))
                if e.get("creator") and f.creator is None:
                    f.creator = e["creator"].get("site")
            elif ev == "counts":
                for c in e.get("findings") or []:
                    k, f = finding(c)
                    n = c.get("count") or 0
                    p.counted[k] = p.counted.get(k, 0) + n
                    if n:
                        f.seen(e.get("time"))
            elif ev == "summary":
                p.summary = {}
                for c in e.get("sites") or []:
                    k, f = finding(c)
                    p.summary[k] = p.summary.get(k, 0) + (c.get("count") or 0)
                p.lost += e.get("lost") or 0
                live.pop(pid, None)  # the process ended: its pid may come again
            else:
                other[ev] = other.get(ev, 0) + 1

    lost = 0
    for p in processes:
        keys = set(p.counted) | set(p.first) | set(p.summary or {})
        for k in keys:
            # The summary is complete; without one, the counts lines; a
            # finding reported in full was called back at least once.
            n = max((p.summary or {}).get(k, 0), p.counted.get(k, 0), p.first.get(k, 0))
            if n:
                findings[k].callbacks += n
                findings[k].processes += 1
        lost += p.lost

    rows = sorted(findings.values(), key=lambda f: (-f.callbacks, describe(f.site), f.rule or 0))
    return {
        "gilshim_report": REPORT_VERSION,
        "logs": logs,
        "processes": len([p for p in processes
                          if p.counted or p.first or p.summary or p.lost]),
        "callbacks": sum(f.callbacks for f in rows) + lost,
        "lost": lost,
        "findings": [{
            "site": f.site,
            "where": describe(f.site),
            "rule": f.rule,
            "rule_name": RULES.get(f.rule, "?"),
            "owner": sorted(f.owners),
            "owner_kind": f.owner_kind,
            "stock": f.stock,
            "creator": f.creator,
            "callbacks": f.callbacks,
            "processes": f.processes,
            "first_seen": f.first_seen,
            "last_seen": f.last_seen,
        } for f in rows],
        "other_events": dict(sorted(other.items(), key=lambda kv: str(kv[0]))),
        "skipped_lines": stats["skipped"],
        "cut_off": stats["cut_off"],
    }


def _when(t):
    if not isinstance(t, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def table(report):
    """The report as the text gilshim report prints."""
    rows = [("CALL SITE", "RULE", "OWNER", "STOCK", "CALLBACKS", "PROCESSES", "FIRST SEEN (UTC)",
             "LAST SEEN")]
    for f in report["findings"]:
        owner = ",".join(str(o) for o in f["owner"]) or "?"
        if f["owner_kind"]:
            owner += f" ({f['owner_kind']})"
        first, last = _when(f["first_seen"]), _when(f["last_seen"])
        if first[:10] == last[:10] and last != "-":
            last = last[11:]
        rows.append((f["where"], f"{f['rule']} {f['rule_name']}", owner, str(f["stock"]),
                     str(f["callbacks"]), str(f["processes"]), first, last))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {3, 4, 5}
    out = [f"gilshim report: {len(report['findings'])} finding(s), {report['callbacks']} "
           f"wrong-interpreter callback(s) in {report['processes']} process(es), "
           f"{len(report['logs'])} log(s)"]
    if report["findings"]:
        for n, r in enumerate(rows):
            out.append("  ".join(c.rjust(w) if i in right and n else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            f = report["findings"][n - 1] if n else None
            if f and f["creator"]:
                out.append(f"  (thread created at {describe(f['creator'])})")
    if report["lost"]:
        out.append(f"{report['lost']} callback(s) past a process's table of 256 findings")
    if report["other_events"]:
        out.append("other events: " + ", ".join(f"{v} {k}" for k, v in
                                                report["other_events"].items()))
    if report["skipped_lines"] or report["cut_off"]:
        out.append(f"skipped: {report['skipped_lines']} line(s) that are not gilshim JSON events"
                   + (f"; a last line cut off in {', '.join(report['cut_off'])}"
                      if report["cut_off"] else ""))
    return "\n".join(out)


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    me = os.environ.get("GILSHIM_REPORT_NAME", "gilshim report")
    as_json = False
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if args and args[0] == "--json":
        as_json = True
        args = args[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args or any(a.startswith("-") and a != "-" for a in args):
        sys.stderr.write(f"usage: {me} [--json] LOG...\n")
        return 2
    for a in args:
        if not os.path.isfile(a) or not os.access(a, os.R_OK):
            sys.stderr.write(f"{me}: {a}: cannot read it\n")
            return 2
    try:
        report = read(args)
    except OSError as e:
        sys.stderr.write(f"{me}: {e}\n")
        return 2
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        print(table(report))
    return 1 if report["callbacks"] else 0


if __name__ == "__main__":
    sys.exit(main())
