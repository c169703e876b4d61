"""Minting credentials: descriptors (CBOR), tickets (JWS) and revocation statements.

What an issuer runs; the terminal itself uses it only for ticket conversion. Signing keys are
files written by `capwarden keys generate` (PREFIX.key, owner-only) beside PREFIX.pub.json.
"""

import json
import os

from capwarden.credentials import cbor, keys, strictjson
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.ids import new_uuid7, uuid_bytes
from capwarden.credentials.revocation import statement_signed_bytes
from capwarden.credentials.store import read_secret, write_atomic, write_json
from capwarden.errors import UsageError


class SigningKey:
    def __init__(self, key_id, issuer_id, private):
        self.key_id = key_id
        self.issuer_id = issuer_id
        self.private = private
        self.algorithm = private.algorithm

    def public_json(self, valid_from, valid_until=None, source="ra-distributed"):
        return {"key_id": self.key_id, "algorithm": self.algorithm, "issuer_id": self.issuer_id,
                "key_material": b64u_encode(self.private.public), "valid_from": valid_from,
                "valid_until": valid_until, "source": source}

    def save(self, prefix, valid_from, valid_until=None):
        secret = {"key_id": self.key_id, "issuer_id": self.issuer_id, "algorithm": self.algorithm,
                  "secret": b64u_encode(self.private.secret)}
        write_atomic(prefix + ".key", (json.dumps(secret) + "\n").encode(), mode=0o600)
        write_json(prefix + ".pub.json", self.public_json(valid_from, valid_until))

    @classmethod
    def generate(cls, algorithm, key_id, issuer_id):
        return cls(key_id, issuer_id, keys.PrivateKey.generate(algorithm))

    @classmethod
    def load(cls, path):
        try:
            obj = strictjson.loads(read_secret(path))
            return cls(obj["key_id"], obj["issuer_id"], keys.PrivateKey(obj["algorithm"], b64u_decode(obj["secret"])))
        except (ValueError, KeyError, TypeError, keys.KeyError_):
            raise UsageError("%s is not a capwarden signing key file" % path) from None


def descriptor_payload(fay, terminal, grants, issuer_id, not_before, not_after, issued_at=None,
                       descriptor_id=None, metadata=None, grantor_id=None):
    p = {
        "descriptor_id": descriptor_id or new_uuid7(),
        "issuer_id": issuer_id,
        "subject_fay_id": fay,
        "terminal_id": terminal,
        "grants": [dict(g) for g in grants],
        "issued_at": not_before if issued_at is None else issued_at,
        "not_before": not_before,
        "not_after": not_after,
    }
    if metadata:
        p["metadata"] = dict(metadata)
    if grantor_id:
        p["grantor_id"] = grantor_id
    return p


def sign_descriptor(key, payload):
    """The descriptor file bytes: {"version", "payload", "signature"} in deterministic CBOR."""
    sig = key.private.sign(cbor.encode(payload))
    return cbor.encode({"version": 1, "payload": payload, "signature": {
        "algorithm": key.algorithm, "key_id": key.key_id, "signature_value": sig}})


def sign_ticket(key, claims):
    header = {"alg": keys.JWS_ALG[key.algorithm], "typ": "cap-ticket+jws", "kid": key.key_id}
    h = b64u_encode(json.dumps(header, separators=(",", ":")).encode())
    p = b64u_encode(json.dumps(claims, separators=(",", ":")).encode())
    sig = key.private.sign((h + "." + p).encode("ascii"))
    return h + "." + p + "." + b64u_encode(sig)


def ticket_claims(fay, terminal, grants, issuer_id, nbf, exp, iat=None, jti=None, convertible=None):
    from capwarden.credentials.ids import uuid_text

    c = {"jti": jti or uuid_text(new_uuid7()), "iss": issuer_id, "sub": fay, "aud": terminal,
         "iat": nbf if iat is None else iat, "nbf": nbf, "exp": exp, "grants": [dict(g) for g in grants]}
    if convertible is not None:
        c["convertible"] = convertible
    return c


def sign_revocation(key, target_id, revoked_at, reason=None):
    stmt = {"version": 1, "revocation_id": new_uuid7(), "target_descriptor_id": uuid_bytes(target_id),
            "issuer_id": key.issuer_id, "revoked_at": revoked_at}
    if reason:
        stmt["reason"] = reason
    sig = key.private.sign(statement_signed_bytes(stmt))
    stmt["signature"] = {"algorithm": key.algorithm, "key_id": key.key_id, "signature_value": sig}
    return cbor.encode(stmt)


def parse_grant_arg(text, terminal):
    """'PATTERN=read,write' (PATTERN may omit the terminal: 'sim/camera') -> grant dict."""
    pattern, sep, modes = text.rpartition("=")
    if not sep or not pattern or not modes:
        raise UsageError("--grant must be PATTERN=MODE[,MODE...], e.g. 'sim/camera=read,execute'")
    if not pattern.startswith("terminal:"):
        pattern = terminal + "/" + pattern.lstrip("/")
    return {"resource_pattern": pattern, "modes": [m.strip() for m in modes.split(",") if m.strip()]}


def ensure_parent(path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
