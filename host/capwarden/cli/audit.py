"""`capwarden audit`: read and verify the engine's hash-chained audit log."""

import json
import os

from capwarden.cli._common import add_store, formatter, store_path

HELP = """\
Print the audit log (every decision: who, what, which credential and grant, outcome, reason)
and verify its hash chain: an edited, removed or reordered line, or a torn last line, is
reported with its line number, and the exit code is 1.

examples:
  capwarden audit --store ./store
  capwarden audit --file ./store/audit.log --json
"""


def register(sub):
    p = sub.add_parser("audit", help="print and verify the audit log", description=HELP, formatter_class=formatter())
    add_store(p)
    p.add_argument("--file", default=None, help="the log (default STORE/audit.log)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, then a summary object")
    p.set_defaults(func=main)


def main(args):
    from capwarden.engine.audit import read
    from capwarden.errors import UsageError

    path = args.file or os.path.join(store_path(args), "audit.log")
    if not os.path.exists(path):
        raise UsageError("no audit log at %s" % path)
    entries, problem = read(path)
    for e in entries:
        if args.json:
            print(json.dumps(e, sort_keys=True))
        else:
            who = e.get("runtime", "-")
            what = " ".join(str(e[k]) for k in ("resource", "mode", "session", "credential") if k in e)
            print("%5d %d %-9s %-8s %-12s %s %s" % (e["seq"], e["ts"], e["action"], e["outcome"], who, what,
                                                 e.get("reason", "")))
    if args.json:
        print(json.dumps({"entries": len(entries), "intact": problem is None, "problem": problem}))
    else:
        print("%d entries; chain %s" % (len(entries), "intact" if problem is None else "BROKEN: " + problem))
    return 0 if problem is None else 1
