"""`capwarden init`: create a terminal's store."""

from capwarden.cli._common import add_store, formatter, print_json, store_path

HELP = """\
Create a terminal's store: its identity (Terminal_ID), the storage key that seals stored
descriptors, and the local key that signs descriptors converted from tickets. Secrets are
written owner-only (0600); an existing identity is never overwritten.

examples:
  capwarden init --store ./store
  capwarden init --store ./store --terminal-id terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b
"""


def register(sub):
    p = sub.add_parser("init", help="create a terminal's store (identity and keys)", description=HELP,
                       formatter_class=formatter())
    add_store(p)
    p.add_argument("--terminal-id", default=None, help="use this Terminal_ID instead of a new one")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args):
    from capwarden.credentials import Terminal

    t = Terminal.init(store_path(args), args.terminal_id)
    if args.json:
        print_json({"terminal_id": t.terminal_id, "store": t.folder, "conversion_key_id": t.conversion_key.key_id})
    else:
        print("terminal %s" % t.terminal_id)
        print("store %s (local conversion key %s)" % (t.folder, t.conversion_key.key_id))
    return 0
