"""`capwarden keys generate|import`: issuer keys and the terminal's Verification_Keys."""

import time

from capwarden.cli._common import (needs_action, add_json, add_store, formatter, import_and_report, int_range, print_json,
                                   read_input)

HELP = """\
generate: make a signing key pair for an issuer: PREFIX.key (secret, 0600) and PREFIX.pub.json
(the Verification_Key, key material in base64url). import: add a Verification_Key to a
terminal's store. A key_id is never rebound to different key material.

examples:
  mkdir -p keys
  capwarden keys generate --algorithm ed25519 --key-id acme-2026 --issuer issuer:acme --out keys/acme
  capwarden keys import --store ./store keys/acme.pub.json --source ra-distributed
"""


def register(sub):
    p = sub.add_parser("keys", help="generate issuer keys, import Verification_Keys", description=HELP,
                       formatter_class=formatter())
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION")
    g = ks.add_parser("generate", help="generate a signing key pair", description=HELP, formatter_class=formatter())
    g.add_argument("--algorithm", required=True, choices=["ed25519", "ecdsa-p256-sha256"])
    g.add_argument("--key-id", required=True, help="the key's identifier (key_id / kid)")
    g.add_argument("--issuer", required=True, help="the issuer this key signs for (issuer_id / iss)")
    g.add_argument("--out", required=True, metavar="PREFIX",
                   help="write PREFIX.key and PREFIX.pub.json (the folder must exist)")
    g.add_argument("--valid-from", type=int_range(0, None, "--valid-from"), default=None,
                   help="unix time the key becomes valid (default: now)")
    g.add_argument("--valid-until", type=int_range(0, None, "--valid-until"), default=None,
                   help="unix time the key expires (default: never)")
    add_json(g)
    g.set_defaults(func=generate)
    i = ks.add_parser("import", help="add a Verification_Key to a store", description=HELP, formatter_class=formatter())
    add_store(i)
    i.add_argument("file", metavar="PREFIX.pub.json")
    i.add_argument("--source", choices=["pre-installed", "ra-distributed"], default=None,
                   help="override the key's source")
    add_json(i)
    i.set_defaults(func=import_)
    p.set_defaults(func=needs_action(p))


def generate(args):
    import os

    from capwarden.cli._common import check_output, human_time
    from capwarden.credentials.issue import SigningKey
    from capwarden.errors import UsageError

    secret, public = args.out + ".key", args.out + ".pub.json"
    if os.path.exists(secret):
        raise UsageError("%s exists; refusing to overwrite a secret key" % secret)
    check_output(secret, "the secret key")
    check_output(public, "the public key")
    valid_from = int(time.time()) if args.valid_from is None else args.valid_from
    if args.valid_until is not None and args.valid_until <= valid_from:
        raise UsageError("--valid-until must be after --valid-from (%d)" % valid_from)
    key = SigningKey.generate(args.algorithm, args.key_id, args.issuer)
    try:
        key.save(args.out, valid_from, args.valid_until)
    except OSError as exc:
        raise UsageError("--out %s: cannot write the key files: %s" % (args.out, exc.strerror or exc)) from None
    if args.json:
        print_json({"secret_key": secret, "public_key": public, "key_id": args.key_id, "issuer_id": args.issuer,
                    "algorithm": args.algorithm, "valid_from": valid_from, "valid_until": args.valid_until})
    else:
        print("wrote %s (secret, keep it) and %s (give it to terminals: 'capwarden keys import')" % (secret, public))
        print("key %s for %s, valid from %s until %s" % (args.key_id, args.issuer, human_time(valid_from),
                                                        human_time(args.valid_until)))
    return 0


def import_(args):
    from capwarden.cli._common import open_store
    from capwarden.credentials.model import MAX_KEY_FILE, decode_key_file

    t = open_store(args)

    def do():
        obj = decode_key_file(read_input(args.file, "key file", MAX_KEY_FILE, "E_MALFORMED_REQUEST"))
        if args.source and isinstance(obj, dict):
            obj["source"] = args.source
        return t.import_key(obj)

    return import_and_report(args, "key", do,
                             lambda rec: {"key_id": rec["key_id"], "issuer_id": rec["issuer_id"],
                                          "algorithm": rec["algorithm"]},
                             lambda rec: "imported key %s (%s, issuer %s)" % (rec["key_id"], rec["algorithm"],
                                                                            rec["issuer_id"]))
