"""`capwarden audit`: read and verify the engine's hash-chained audit log."""

import json
import os

from capwarden.cli._common import add_store, formatter, print_json, store_path

# The entry's own bookkeeping, not shown on the human lines.
CHAIN_KEYS = ("seq", "ts", "action", "outcome", "reason", "prev", "hash", "mac")

HELP = """\
Print the audit log (every decision: who, what, which credential and grant, outcome, reason)
and verify its hash chain. Every entry up to the first line that does not verify is printed;
an edited, removed or reordered line, or a torn last line (a crash during a write), is
reported with its line number, and the exit code is 1.

--repair moves a torn last line aside into AUDIT.torn-TIMESTAMP (it was never acknowledged:
an answer waits for its entry to be on disk) and records the repair in the chain, so that
`capwarden serve` starts again. A chain broken anywhere else is evidence and is not repaired.
Run it while no engine is serving that log.

examples:
  capwarden audit --store ./store
  capwarden audit --file ./store/audit.log --json
  capwarden audit --store ./store --repair
"""


def register(sub):
    p = sub.add_parser("audit", help="print and verify the audit log", description=HELP, formatter_class=formatter())
    add_store(p)
    p.add_argument("--file", default=None, help="the log (default STORE/audit.log)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per entry, then a summary object")
    p.add_argument("--repair", action="store_true", help="move a torn last line aside and continue the chain")
    p.set_defaults(func=main)


def main(args):
    from capwarden.cli._common import check_input
    from capwarden.engine.audit import TORN, AuditLog, verify
    from capwarden.errors import StoreError, UsageError

    path = args.file or os.path.join(store_path(args), "audit.log")
    if not os.path.exists(path):
        raise UsageError("no audit log at %s%s" % (path, "" if args.file else " (give --file or --store)"))
    check_input(path, "audit log", "--file" if args.file else None)
    repaired = None
    if args.repair:
        log = AuditLog(path, repair=True)     # moves a torn tail aside and records it; refuses a broken chain
        log.close()
        repaired = log.last_repair
    try:
        c = verify(path)
    except OSError as exc:
        raise StoreError("cannot read the audit log %s: %s" % (path, exc.strerror or exc)) from None
    if args.json:
        for e in c.entries:
            print(json.dumps(e, sort_keys=True))
    else:
        print_entries(c.entries)
    if args.json:
        summary = {"entries": len(c.entries), "intact": c.problem is None, "problem": c.problem}
        if c.problem is not None:
            summary.update(line=c.line, torn=c.kind == TORN)
        if repaired:
            summary["repaired"] = {"moved_to": repaired[0], "bytes": repaired[1]}
        print_json(summary)
    else:
        if repaired:
            print("moved a torn last line (%d bytes) to %s" % (repaired[1], repaired[0]))
        if c.problem is None:
            print("%d entries; chain intact" % len(c.entries))
        elif c.kind == TORN:
            print("%d entries verified; chain TORN at line %d: %s. Run with --repair to move it aside" % (
                len(c.entries), c.line, c.problem))
        else:
            print("%d entries verified; chain BROKEN at line %d: %s" % (len(c.entries), c.line, c.problem))
    return 0 if c.problem is None else 1


def print_entries(entries):
    """A header, then per entry one line (when, what, outcome, who, why) and one indented line
    with the rest of its fields (resource, session, credential...)."""
    import datetime

    print("%5s  %-20s  %-10s %-10s %-12s %s" % ("SEQ", "TIME (UTC)", "ACTION", "OUTCOME", "RUNTIME", "REASON"))
    for e in entries:
        try:
            when = datetime.datetime.fromtimestamp(e["ts"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (TypeError, ValueError, OverflowError, OSError):
            when = str(e.get("ts"))
        print("%5s  %-20s  %-10s %-10s %-12s %s" % (e.get("seq"), when, e.get("action"), e.get("outcome"),
                                                  e.get("runtime", "-"), e.get("reason") or ""))
        rest = ["%s=%s" % (k, e[k]) for k in sorted(e) if k not in CHAIN_KEYS and k != "runtime"]
        if rest:
            print("       " + "  ".join(rest))
