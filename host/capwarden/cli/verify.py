"""`capwarden verify`: decide whether a Fay may use a resource in a mode."""

from capwarden.cli._common import LINE_END, add_store, formatter, now_arg, print_json, read_input, store_path
from capwarden.credentials.validate import MAX_LEEWAY

HELP = """\
Decide, offline, whether a credential lets a Fay use a resource in one mode, following the
validation order of cap-supplement S2; the first failing step gives the error code.
Exit 0 granted, 1 denied (an oversize or malformed file included), 2 usage error.

examples:
  capwarden verify --store ./store --fay fay:0192... --resource terminal:0192.../sim/camera \\
      --mode read --descriptor cam.cap --json
  capwarden verify --store ./store --fay fay:0192... --resource terminal:0192.../sim/gps \\
      --mode read --ticket gps.jws --at 1790000000
"""


def register(sub):
    p = sub.add_parser("verify", help="decide a credential for a Fay, resource and mode", description=HELP,
                       formatter_class=formatter())
    add_store(p)
    p.add_argument("--fay", required=True)
    p.add_argument("--resource", required=True, metavar="RESOURCE_ID")
    p.add_argument("--mode", required=True, choices=["read", "write", "execute", "configure"])
    c = p.add_mutually_exclusive_group(required=True)
    c.add_argument("--descriptor", metavar="FILE", help="a descriptor file")
    c.add_argument("--descriptor-id", metavar="ID", help="a descriptor stored in the store")
    c.add_argument("--ticket", metavar="FILE", help="a ticket file (JWS compact)")
    p.add_argument("--at", type=int, default=None, metavar="UNIX_TIME", help="decide at this time (default: now)")
    p.add_argument("--leeway", type=int, default=60,
                   help="clock-skew leeway in seconds, 0..%d (default 60)" % MAX_LEEWAY)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args):
    from capwarden.credentials import Decision, Terminal
    from capwarden.credentials.jws import MAX_TICKET
    from capwarden.credentials.model import MAX_DESCRIPTOR
    from capwarden.errors import CapError, UsageError

    if not 0 <= args.leeway <= MAX_LEEWAY:
        raise UsageError("--leeway must be 0..%d seconds" % MAX_LEEWAY)
    t = Terminal.open(store_path(args), leeway=args.leeway)
    now = now_arg(args.at)
    try:
        if args.descriptor:
            data = read_input(args.descriptor, "descriptor", MAX_DESCRIPTOR, "E_DESCRIPTOR_MALFORMED")
            d = t.validator.check_descriptor(data, args.fay, args.resource, args.mode, now)
        elif args.descriptor_id:
            d = t.decide_descriptor(args.descriptor_id, args.fay, args.resource, args.mode, now)
        else:
            text = read_input(args.ticket, "ticket", MAX_TICKET + LINE_END, "E_TICKET_MALFORMED").strip()
            d = t.validator.check_ticket(text, args.fay, args.resource, args.mode, now)
    except CapError as exc:   # an oversize file: refused at step 1, and reported like any decision
        d = Decision(False, exc.code, exc.message, exc.field, kind="ticket" if args.ticket else "descriptor")
    if args.json:
        print_json(d.to_json())
    elif d.granted:
        print("granted: %s may %s %s (%s %s, until %d)" % (args.fay, args.mode, args.resource, d.kind, d.credential_id,
                                                          d.not_after))
    else:
        print("denied: %s: %s" % (d.error_code, d.message))
    return 0 if d.granted else 1
