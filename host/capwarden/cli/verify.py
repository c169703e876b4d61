"""`capwarden verify`: decide whether a Fay may use a resource in a mode."""

from capwarden.cli._common import (LINE_END, add_json, formatter, add_store, int_range, now_arg, open_store, print_json,
                                   read_input, resource_arg)
from capwarden.credentials.validate import MAX_LEEWAY

HELP = """\
Decide, offline, whether a credential lets a Fay use a resource in one mode, following the
validation order of cap-supplement S2; the first failing step gives the error code.
--resource is a Resource_ID (TERMINAL_ID/BOARD/NAME) or the board shorthand BOARD/NAME, taken
under the store's terminal. Exit 0 granted, 1 denied (an oversize or malformed file included),
2 usage error (a missing file, a bad option).

examples:
  capwarden verify --store ./store --fay "$FAY" --resource sim/camera --mode read --descriptor cam.cap --json
  capwarden verify --store ./store --fay "$FAY" --resource terminal:0192.../sim/gps \\
      --mode read --ticket gps.jws --at 1790000000
"""


def register(sub):
    p = sub.add_parser("verify", help="decide a credential for a Fay, resource and mode", description=HELP,
                       formatter_class=formatter())
    add_store(p)
    p.add_argument("--fay", required=True)
    p.add_argument("--resource", required=True, metavar="RESOURCE_ID",
                   help="TERMINAL_ID/BOARD/NAME, or BOARD/NAME (e.g. sim/camera) for the store's terminal")
    p.add_argument("--mode", required=True, choices=["read", "write", "execute", "configure"])
    c = p.add_mutually_exclusive_group(required=True)
    c.add_argument("--descriptor", metavar="FILE", help="a descriptor file")
    c.add_argument("--descriptor-id", metavar="ID", help="a descriptor stored in the store")
    c.add_argument("--ticket", metavar="FILE", help="a ticket file (JWS compact)")
    p.add_argument("--at", type=int_range(0, None, "--at"), default=None, metavar="UNIX_TIME", help="decide at this time (default: now)")
    p.add_argument("--leeway", type=int_range(0, MAX_LEEWAY, "--leeway"), default=60,
                   help="clock-skew leeway in seconds, 0..%d (default 60)" % MAX_LEEWAY)
    add_json(p, "print one JSON object: granted, error_code, ... (also on failure)")
    p.set_defaults(func=main)


def main(args):
    from capwarden.cli._common import check_input, human_time
    from capwarden.credentials import Decision
    from capwarden.credentials.jws import MAX_TICKET
    from capwarden.credentials.model import MAX_DESCRIPTOR
    from capwarden.errors import CapError

    for path, what, flag in ((args.descriptor, "descriptor", "--descriptor"), (args.ticket, "ticket", "--ticket")):
        if path is not None:
            check_input(path, what, flag)
    t = open_store(args, leeway=args.leeway)
    now = now_arg(args.at)
    args.resource = resource_arg(args.resource, t.terminal_id)
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
        print("granted: %s may %s %s (%s %s, until %s)" % (args.fay, args.mode, args.resource, d.kind,
                                                          d.credential_id, human_time(d.not_after, now)))
    else:
        print("denied: %s: %s" % (d.error_code, d.message))
    return 0 if d.granted else 1
