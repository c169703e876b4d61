"""`capwarden inspect`: show what a credential file says, without trusting it."""

from capwarden.cli._common import LINE_END, add_json, formatter, print_json, read_input

HELP = """\
Show a descriptor, ticket or revocation statement as JSON, after the same strict parsing a
terminal does (but without checking any signature: inspect is for reading, not deciding).
The JSON is indented, with the times also as ISO 8601 UTC (the *_utc keys);
--json prints it as one line.

examples:
  capwarden inspect cam.cap
  capwarden inspect gps.jws --json
"""


def register(sub):
    p = sub.add_parser("inspect", help="show a credential file as JSON", description=HELP, formatter_class=formatter())
    p.add_argument("file")
    add_json(p, "print one JSON object on one line (also on failure)")
    p.set_defaults(func=main)


def show(args, obj):
    import json

    from capwarden.cli._common import human_time

    if args.json:
        print_json(obj)
        return
    for k in ("issued_at", "not_before", "not_after", "revoked_at"):
        if isinstance(obj.get(k), int):
            obj[k + "_utc"] = human_time(obj[k])
    print(json.dumps(obj, indent=2, sort_keys=True))


def main(args):
    from capwarden.credentials import cbor, jws
    from capwarden.credentials.b64 import b64u_encode
    from capwarden.credentials.jws import MAX_TICKET
    from capwarden.credentials.model import MAX_DESCRIPTOR, parse_revocation_obj
    from capwarden.credentials.revocation import MAX_STATEMENT
    from capwarden.credentials.validate import parse_descriptor
    from capwarden.errors import CapError

    data = read_input(args.file, "credential", max(MAX_DESCRIPTOR, MAX_TICKET + LINE_END, MAX_STATEMENT),
                      "E_MALFORMED_REQUEST")
    text = data.strip()
    if text[:1] in (b"e",) and text.count(b".") == 2:
        c = jws.parse(text)
        out = {"type": "ticket", "kid": c.key_id, "alg": {"ed25519": "EdDSA"}.get(c.algorithm, "ES256")}
    else:
        try:
            obj = cbor.decode(data, MAX_DESCRIPTOR)
        except cbor.CborError as exc:
            raise CapError("E_MALFORMED_REQUEST", "%s is neither a ticket nor deterministic CBOR: %s" % (args.file, exc))
        if isinstance(obj, dict) and "target_descriptor_id" in obj:
            r = parse_revocation_obj(obj)
            r["signature"] = b64u_encode(r["signature"])
            show(args, dict(r, type="revocation"))
            return 0
        c = parse_descriptor(data)
        out = {"type": "descriptor", "key_id": c.key_id, "algorithm": c.algorithm}
    out.update({"id": c.credential_id, "issuer_id": c.issuer_id, "subject": c.subject, "terminal_id": c.terminal_id,
                "issued_at": c.issued_at, "not_before": c.not_before, "not_after": c.not_after,
                "grants": [g.to_obj() for g in c.grants], "metadata": c.metadata, "signature_checked": False})
    show(args, out)
    return 0
