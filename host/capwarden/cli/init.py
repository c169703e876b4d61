"""`capwarden init`: create a terminal's store."""

from capwarden.cli._common import add_json, add_store, formatter, print_json, store_path

HELP = """\
Create a terminal's store: its identity (Terminal_ID), the storage key that seals stored
descriptors, and the local key that signs descriptors converted from tickets. Secrets are
written owner-only (0600); an existing identity is never overwritten.

examples:
  capwarden init --store ./store
  capwarden init --store ./store --terminal-id "$(capwarden id new terminal)" --json
"""


def register(sub):
    p = sub.add_parser("init", help="create a terminal's store (identity and keys)", description=HELP,
                       formatter_class=formatter())
    add_store(p)
    p.add_argument("--terminal-id", default=None, help="use this Terminal_ID instead of a new one")
    add_json(p)
    p.set_defaults(func=main)


def main(args):
    import os

    from capwarden.cli._common import check_id
    from capwarden.credentials import Terminal
    from capwarden.errors import UsageError

    store = store_path(args)
    if args.terminal_id is not None:
        check_id(args.terminal_id, "terminal", "--terminal-id")
    if os.path.exists(store) and not os.path.isdir(store):
        raise UsageError("--store %s is a file; a store is a folder (give a new or empty folder)" % store)
    try:
        t = Terminal.init(store, args.terminal_id)
    except OSError as exc:
        raise UsageError("cannot create the store %s: %s" % (store, exc.strerror or exc)) from None
    if args.json:
        print_json({"terminal_id": t.terminal_id, "store": t.folder, "conversion_key_id": t.conversion_key.key_id})
    else:
        print("terminal %s" % t.terminal_id)
        print("store %s (local conversion key %s)" % (t.folder, t.conversion_key.key_id))
    return 0
