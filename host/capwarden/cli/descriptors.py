"""`capwarden descriptors import|list`: store descriptors on the terminal."""

from capwarden.cli._common import import_and_report, open_store, print_json, read_input, register_import_list

HELP = """\
import: check a descriptor's structure, key and signature, then store it sealed (authenticated
encryption) in the store. Validity, subject and resources are checked when it is used.
list: the stored descriptors (id, Fay, validity, grants).

examples:
  capwarden descriptors import --store ./store cam.cap
  capwarden descriptors list --store ./store --json
"""


def register(sub):
    register_import_list(sub, "descriptors", HELP,
                         ("import or list stored descriptors", "import a descriptor file", "list stored descriptors"),
                         import_, list_)


def import_(args):
    from capwarden.credentials.model import MAX_DESCRIPTOR

    t = open_store(args)
    return import_and_report(args, "descriptor", lambda: t.import_descriptor(
                                 read_input(args.file, "descriptor", MAX_DESCRIPTOR, "E_DESCRIPTOR_MALFORMED")),
                             lambda did: {"descriptor_id": did}, lambda did: "imported descriptor %s" % did)


def list_(args):
    from capwarden.cli._common import human_time
    from capwarden.errors import CapError

    t = open_store(args)
    rows = []
    for did in t.stored_ids():
        try:
            d = t.load_descriptor(did)
        except CapError as exc:     # tampered or unreadable: listed, and said
            rows.append({"descriptor_id": did, "readable": False, "error_code": exc.code})
            continue
        rows.append({"descriptor_id": did, "readable": True, "subject": d.subject, "issuer_id": d.issuer_id,
                     "not_before": d.not_before, "not_after": d.not_after, "grants": [g.to_obj() for g in d.grants]})
    if args.json:
        print_json({"descriptors": rows})
        return 0
    if not rows:
        print("no descriptors stored in %s (add one with 'capwarden descriptors import')" % t.folder)
    for r in rows:
        if not r["readable"]:
            print("%s  UNREADABLE (%s)" % (r["descriptor_id"], r["error_code"]))
            continue
        print("%s  %s  issuer %s  until %s" % (r["descriptor_id"], r["subject"], r["issuer_id"],
                                              human_time(r["not_after"])))
        for g in r["grants"]:
            print("    %s = %s" % (g["resource_pattern"], ",".join(g["modes"])))
    return 0
