"""`capwarden revocations import|list`: the terminal's local revocation list."""

import time

from capwarden.cli._common import add_store, formatter, import_and_report, print_json, read_input, store_path

HELP = """\
import: verify a RevocationStatement against its issuer's keys and add it to the store's
revocation list; from then on the credential is refused with *_REVOKED, and descriptors
converted from a revoked ticket are removed. list: what is revoked.

examples:
  capwarden revocations import --store ./store r.cbor
  capwarden revocations list --store ./store
"""


def register(sub):
    p = sub.add_parser("revocations", help="import or list revocations", description=HELP,
                       formatter_class=formatter())
    s = p.add_subparsers(dest="revocations_command", metavar="ACTION")
    i = s.add_parser("import", help="import a revocation statement", description=HELP, formatter_class=formatter())
    add_store(i)
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=import_)
    ls = s.add_parser("list", help="list revoked credentials", description=HELP, formatter_class=formatter())
    add_store(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def import_(args):
    from capwarden.credentials import Terminal
    from capwarden.credentials.revocation import MAX_STATEMENT

    t = Terminal.open(store_path(args))
    return import_and_report(
        args, "revocation", lambda: t.import_revocation(
            read_input(args.file, "revocation statement", MAX_STATEMENT, "E_MALFORMED_REQUEST"), int(time.time())),
        lambda e: {"target": e["target"], "issuer_id": e["issuer_id"]},
        lambda e: "revoked %s (issuer %s, reason %s)" % (e["target"], e["issuer_id"], e["reason"]))


def list_(args):
    from capwarden.credentials import Terminal

    entries = list(Terminal.open(store_path(args)).revocations.entries.values())
    if args.json:
        print_json([{k: e[k] for k in ("target", "issuer_id", "revoked_at", "reason", "revocation_id")} for e in entries])
    else:
        for e in entries:
            print("%s  issuer %s  at %d  %s" % (e["target"], e["issuer_id"], e["revoked_at"], e["reason"]))
    return 0
