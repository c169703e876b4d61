"""`capwarden issue descriptor|ticket`: mint credentials with an issuer key."""

import time

from capwarden.cli._common import formatter
from capwarden.credentials.validate import DESCRIPTOR_MAX_DAYS, TICKET_MAX_DAYS

HELP = """\
Mint an Authorization_Descriptor (deterministic CBOR, signed over its payload) or a
Trusted_Ticket (JWS compact). Grants are PATTERN=MODES; a PATTERN without a Terminal_ID is
taken under --terminal (so 'sim/camera' means TERMINAL/sim/camera). Patterns: '*' matches one
segment, '**' (last only) one or more.

examples:
  capwarden issue descriptor --key keys/acme.key --fay fay:0192... --terminal terminal:0192... \\
      --grant 'sim/camera=read,execute' --grant 'sim/motor_left=write' --days 30 --out cam.cap
  capwarden issue ticket --key keys/tix.key --fay fay:0192... --terminal terminal:0192... \\
      --grant 'sim/gps=read' --hours 2 --out gps.jws
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
        q.add_argument("--not-before", type=int, default=None, metavar="TS",
                       help="valid from (default: now; a descriptor at most 24 h ahead)")
        if kind == "descriptor":
            q.add_argument("--days", type=float, default=30,
                           help="validity in days (default 30, at most %d)" % DESCRIPTOR_MAX_DAYS)
        else:
            q.add_argument("--hours", type=float, default=24,
                           help="validity in hours (default 24, at most %d)" % (TICKET_MAX_DAYS * 24))
        q.add_argument("--out", required=True, metavar="FILE")
        q.set_defaults(func=main, kind=kind)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def main(args):
    from capwarden.credentials import model
    from capwarden.credentials.issue import (SigningKey, descriptor_payload, ensure_parent, parse_grant_arg,
                                             sign_descriptor, sign_ticket, ticket_claims)
    from capwarden.credentials.jws import parse as parse_ticket
    from capwarden.credentials.store import write_atomic
    from capwarden.credentials.validate import PREDATE_LIMIT, parse_descriptor
    from capwarden.errors import UsageError

    key = SigningKey.load(args.key)
    now = int(time.time())
    nbf = now if args.not_before is None else args.not_before
    grants = [parse_grant_arg(g, args.terminal) for g in args.grant]
    if args.kind == "descriptor":
        if not 0 < args.days <= DESCRIPTOR_MAX_DAYS:
            raise UsageError("--days must be more than 0 and at most %d" % DESCRIPTOR_MAX_DAYS)
        if nbf > now + PREDATE_LIMIT:
            raise UsageError("--not-before is more than 24 h ahead: pre-issued descriptors are refused by every "
                             "terminal (chapter 2 section 2.3.2); issue it within 24 h of its start")
        # issued_at is when it is issued (now), or its start if that is earlier.
        payload = descriptor_payload(args.fay, args.terminal, grants, key.issuer_id, nbf,
                                     nbf + int(args.days * model.DAY), issued_at=min(now, nbf))
        data = sign_descriptor(key, payload)
        parse_descriptor(data)   # what we write must parse: bad --fay or --grant fail here, clearly
        ensure_parent(args.out)
        write_atomic(args.out, data)
        print("wrote descriptor %s to %s" % (parse_descriptor(data).credential_id, args.out))
    else:
        if not 0 < args.hours <= TICKET_MAX_DAYS * 24:
            raise UsageError("--hours must be more than 0 and at most %d" % (TICKET_MAX_DAYS * 24))
        token = sign_ticket(key, ticket_claims(args.fay, args.terminal, grants, key.issuer_id, nbf,
                                               nbf + int(args.hours * 3600)))
        t = parse_ticket(token)
        ensure_parent(args.out)
        write_atomic(args.out, (token + "\n").encode())
        print("wrote ticket %s to %s" % (t.credential_id, args.out))
    return 0
