"""`capwarden revocations import|list`: the terminal's local revocation list."""

import time

from capwarden.cli._common import import_and_report, open_store, print_json, read_input, register_import_list

HELP = """\
import: verify a RevocationStatement against its issuer's keys and add it to the store's
revocation list; from then on the credential is refused with *_REVOKED, and descriptors
converted from a revoked ticket are removed. list: what is revoked.

examples:
  capwarden revocations import --store ./store r.cbor
  capwarden revocations list --store ./store
"""


def register(sub):
    register_import_list(sub, "revocations", HELP,
                         ("import or list revocations", "import a revocation statement", "list revoked credentials"),
                         import_, list_, 'print one JSON object: {"revocations": [...]}')


def import_(args):
    from capwarden.credentials.revocation import MAX_STATEMENT

    t = open_store(args)
    return import_and_report(
        args, "revocation", lambda: t.import_revocation(
            read_input(args.file, "revocation statement", MAX_STATEMENT, "E_MALFORMED_REQUEST"), int(time.time())),
        lambda e: {"target": e["target"], "issuer_id": e["issuer_id"]},
        lambda e: "revoked %s (issuer %s, reason %s)" % (e["target"], e["issuer_id"], e["reason"]))


def list_(args):
    from capwarden.cli._common import human_time

    entries = list(open_store(args).revocations.entries.values())
    if args.json:
        print_json({"revocations": [{k: e[k] for k in ("target", "issuer_id", "revoked_at", "reason",
                                                       "revocation_id")} for e in entries]})
    else:
        if not entries:
            print("nothing revoked")
        for e in entries:
            print("%s  issuer %s  revoked %s  reason %s" % (e["target"], e["issuer_id"], human_time(e["revoked_at"]),
                                                           e["reason"]))
    return 0
