"""`capwarden revoke`: sign a RevocationStatement."""

import time

from capwarden.cli._common import formatter

HELP = """\
Sign a RevocationStatement for a descriptor id (or a ticket's jti) with the key of the issuer
that issued it; terminals accept it only from that issuer. Import it on a terminal with
'capwarden revocations import'.

examples:
  capwarden revoke --key keys/acme.key --descriptor-id 0192a1b2-... --reason compromised --out r.cbor
"""


def register(sub):
    p = sub.add_parser("revoke", help="sign a revocation statement", description=HELP, formatter_class=formatter())
    p.add_argument("--key", required=True, metavar="PREFIX.key", help="the original issuer's signing key")
    p.add_argument("--descriptor-id", required=True, help="the descriptor id (or ticket jti) to revoke")
    p.add_argument("--reason", choices=["unspecified", "compromised", "superseded", "no_longer_needed"], default=None)
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=main)


def main(args):
    from capwarden.credentials.ids import UUID_RE
    from capwarden.credentials.issue import SigningKey, ensure_parent, sign_revocation
    from capwarden.credentials.store import write_atomic
    from capwarden.errors import UsageError

    if not UUID_RE.match(args.descriptor_id):
        raise UsageError("--descriptor-id must be a lowercase UUIDv7")
    key = SigningKey.load(args.key)
    data = sign_revocation(key, args.descriptor_id, int(time.time()), args.reason)
    ensure_parent(args.out)
    write_atomic(args.out, data)
    print("wrote revocation of %s to %s" % (args.descriptor_id, args.out))
    return 0
