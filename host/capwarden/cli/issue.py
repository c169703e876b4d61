"""`capwarden issue descriptor|ticket`: mint credentials with an issuer key."""

import time

from capwarden.cli._common import needs_action, add_json, formatter, int_range, positive_float
from capwarden.credentials.validate import DESCRIPTOR_MAX_DAYS, TICKET_MAX_DAYS

HELP = """\
Mint an Authorization_Descriptor (deterministic CBOR, signed over its payload) or a
Trusted_Ticket (JWS compact). Grants are PATTERN=MODES; a PATTERN without a Terminal_ID is
taken under --terminal (so 'sim/camera' means TERMINAL/sim/camera). Patterns: '*' matches one
segment, '**' (last only) one or more.

--fay and --terminal are ids in the spec's format ('capwarden id new fay' makes one); the
terminal's id is what 'capwarden init' printed.

examples:
  capwarden issue descriptor --key keys/acme.key --fay "$FAY" --terminal "$TERMINAL" \\
      --grant 'sim/camera=read,execute' --grant 'sim/motor_left=write' --days 30 --out cam.cap
  capwarden issue ticket --key keys/tix.key --fay "$FAY" --terminal "$TERMINAL" \\
      --grant 'sim/gps=read' --hours 2 --out gps.jws --json
where FAY=$(capwarden id new fay) and TERMINAL=terminal:... as 'capwarden init' printed it.
"""


def register(sub):
    p = sub.add_parser("issue", help="mint a descriptor or a ticket", description=HELP, formatter_class=formatter())
    s = p.add_subparsers(dest="issue_command", metavar="KIND")
    for kind in ("descriptor", "ticket"):
        q = s.add_parser(kind, help="mint a %s" % kind, description=HELP, formatter_class=formatter())
        q.add_argument("--key", required=True, metavar="PREFIX.key", help="the issuer's signing key file")
        q.add_argument("--fay", required=True, help="the Fay_ID it is issued to")
        q.add_argument("--terminal", required=True, help="the Terminal_ID it is valid on")
        q.add_argument("--grant", required=True, action="append", metavar="PATTERN=MODES",
                       help="a grant, e.g. 'sim/camera=read,execute' (repeatable)")
        q.add_argument("--not-before", type=int_range(0, None, "--not-before"), default=None, metavar="TS",
                       help="valid from (default: now; a descriptor at most 24 h ahead)")
        if kind == "descriptor":
            q.add_argument("--days", type=positive_float("--days"), default=30,
                           help="validity in days (default 30, at most %d)" % DESCRIPTOR_MAX_DAYS)
        else:
            q.add_argument("--hours", type=positive_float("--hours"), default=24,
                           help="validity in hours (default 24, at most %d)" % (TICKET_MAX_DAYS * 24))
        q.add_argument("--out", required=True, metavar="FILE", help="the file to write (its folder must exist)")
        add_json(q)
        q.set_defaults(func=main, kind=kind)
    p.set_defaults(func=needs_action(p))


def main(args):
    from capwarden.cli._common import check_id, check_output, human_time, load_signing_key, print_json, write_output
    from capwarden.credentials import model
    from capwarden.credentials.issue import (descriptor_payload, parse_grant_arg, sign_descriptor, sign_ticket,
                                             ticket_claims)
    from capwarden.credentials.jws import parse as parse_ticket
    from capwarden.credentials.validate import PREDATE_LIMIT, parse_descriptor
    from capwarden.errors import CapError, UsageError

    check_id(args.fay, "fay", "--fay")
    check_id(args.terminal, "terminal", "--terminal")
    grants = [parse_grant_arg(g, args.terminal) for g in args.grant]
    check_output(args.out, args.kind)
    key = load_signing_key(args.key)
    now = int(time.time())
    nbf = now if args.not_before is None else args.not_before
    try:
        if args.kind == "descriptor":
            if not 0 < args.days <= DESCRIPTOR_MAX_DAYS:
                raise UsageError("--days must be more than 0 and at most %d" % DESCRIPTOR_MAX_DAYS)
            if nbf > now + PREDATE_LIMIT:
                raise UsageError("--not-before is more than 24 h ahead: pre-issued descriptors are refused by "
                                 "every terminal (chapter 2 section 2.3.2); issue it within 24 h of its start")
            # issued_at is when it is issued (now), or its start if that is earlier.
            payload = descriptor_payload(args.fay, args.terminal, grants, key.issuer_id, nbf,
                                         nbf + int(args.days * model.DAY), issued_at=min(now, nbf))
            data = sign_descriptor(key, payload)
            c = parse_descriptor(data)   # what we write must parse: a bad --grant fails here, clearly
        else:
            if not 0 < args.hours <= TICKET_MAX_DAYS * 24:
                raise UsageError("--hours must be more than 0 and at most %d" % (TICKET_MAX_DAYS * 24))
            token = sign_ticket(key, ticket_claims(args.fay, args.terminal, grants, key.issuer_id, nbf,
                                                   nbf + int(args.hours * 3600)))
            c = parse_ticket(token)
            data = (token + "\n").encode()
    except CapError as exc:
        # Everything in it came from the command line (and the key's own ids): a usage error.
        raise UsageError("the %s would be invalid: %s%s" % (
            args.kind, exc.message, " (field %s)" % exc.field if exc.field else "")) from None
    write_output(args.out, data, what=args.kind)
    if args.json:
        print_json({"written": args.out, "kind": args.kind, "id": c.credential_id, "issuer_id": c.issuer_id,
                    "subject": c.subject, "terminal_id": c.terminal_id, "not_before": c.not_before,
                    "not_after": c.not_after, "grants": [g.to_obj() for g in c.grants]})
    else:
        print("wrote %s %s to %s, valid from %s until %s" % (args.kind, c.credential_id, args.out,
                                                            human_time(c.not_before), human_time(c.not_after)))
    return 0
