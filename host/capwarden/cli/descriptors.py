"""`capwarden descriptors import|list`: store descriptors on the terminal."""

from capwarden.cli._common import add_store, formatter, import_and_report, read_input, store_path

HELP = """\
import: check a descriptor's structure, key and signature, then store it sealed (authenticated
encryption) in the store. Validity, subject and resources are checked when it is used.
list: the stored descriptor ids.

examples:
  capwarden descriptors import --store ./store cam.cap
  capwarden descriptors list --store ./store
"""


def register(sub):
    p = sub.add_parser("descriptors", help="import or list stored descriptors", description=HELP,
                       formatter_class=formatter())
    s = p.add_subparsers(dest="descriptors_command", metavar="ACTION")
    i = s.add_parser("import", help="import a descriptor file", description=HELP, formatter_class=formatter())
    add_store(i)
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=import_)
    ls = s.add_parser("list", help="list stored descriptor ids", description=HELP, formatter_class=formatter())
    add_store(ls)
    ls.set_defaults(func=list_)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def import_(args):
    from capwarden.credentials import Terminal
    from capwarden.credentials.model import MAX_DESCRIPTOR

    t = Terminal.open(store_path(args))
    return import_and_report(args, "descriptor", lambda: t.import_descriptor(
                                 read_input(args.file, "descriptor", MAX_DESCRIPTOR, "E_DESCRIPTOR_MALFORMED")),
                             lambda did: {"descriptor_id": did}, lambda did: "imported descriptor %s" % did)


def list_(args):
    from capwarden.credentials import Terminal

    for did in Terminal.open(store_path(args)).stored_ids():
        print(did)
    return 0
