"""`capwarden id new fay|terminal`: make a Fay_ID or a Terminal_ID."""

from capwarden.cli._common import needs_action, add_json, formatter, print_json

HELP = """\
Make a fresh identifier in the format the spec fixes (supplement S1): a Fay_ID is 'fay:' and a
lowercase UUIDv7, a Terminal_ID is 'terminal:' and a lowercase UUIDv7, for example
fay:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b. A UUIDv7 begins with the time it was made, so ids
sort by age; the rest is random.

examples:
  capwarden id new fay
  capwarden id new terminal --json
  capwarden init --store ./store --terminal-id "$(capwarden id new terminal)"
"""


def register(sub):
    p = sub.add_parser("id", help="make a Fay_ID or Terminal_ID", description=HELP, formatter_class=formatter())
    s = p.add_subparsers(dest="id_command", metavar="ACTION")
    n = s.add_parser("new", help="print a new id", description=HELP, formatter_class=formatter())
    n.add_argument("kind", choices=["fay", "terminal"], help="fay or terminal")
    add_json(n)
    n.set_defaults(func=main)
    p.set_defaults(func=needs_action(p))


def main(args):
    from capwarden.credentials.ids import new_fay_id, new_terminal_id

    value = new_fay_id() if args.kind == "fay" else new_terminal_id()
    if args.json:
        print_json({"kind": args.kind, "id": value})
    else:
        print(value)
    return 0
