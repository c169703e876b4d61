"""`capwarden revoke`: sign a RevocationStatement."""

import time

from capwarden.cli._common import add_json, formatter

HELP = """\
Sign a RevocationStatement for a descriptor id (or a ticket's jti) with the key of the issuer
that issued it; terminals accept it only from that issuer. Import it on a terminal with
'capwarden revocations import'.

examples:
  capwarden revoke --key keys/acme.key --descriptor-id 0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b \\
      --reason compromised --out r.cbor
  capwarden revocations import --store ./store r.cbor
"""


def register(sub):
    p = sub.add_parser("revoke", help="sign a revocation statement", description=HELP, formatter_class=formatter())
    p.add_argument("--key", required=True, metavar="PREFIX.key", help="the original issuer's signing key")
    p.add_argument("--descriptor-id", required=True, help="the descriptor id (or ticket jti) to revoke")
    p.add_argument("--reason", choices=["unspecified", "compromised", "superseded", "no_longer_needed"], default=None)
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (its folder must exist)")
    add_json(p)
    p.set_defaults(func=main)


def main(args):
    from capwarden.cli._common import check_id, check_output, load_signing_key, print_json, write_output
    from capwarden.credentials.issue import sign_revocation

    check_id(args.descriptor_id, "uuid", "--descriptor-id")
    check_output(args.out, "the revocation statement")
    key = load_signing_key(args.key)
    now = int(time.time())
    data = sign_revocation(key, args.descriptor_id, now, args.reason)
    write_output(args.out, data, what="the revocation statement")
    if args.json:
        print_json({"written": args.out, "target": args.descriptor_id, "issuer_id": key.issuer_id,
                    "reason": args.reason, "revoked_at": now})
    else:
        print("wrote revocation of %s to %s; import it on each terminal with 'capwarden revocations import'"
              % (args.descriptor_id, args.out))
    return 0
