"""Credentials made outside capwarden: PyJWT tickets, plain cbor2 + PyNaCl/cryptography descriptors.

Accepted as they are; refused with the right S2 code when any field is tampered with.
"""

import base64
import json

import cbor2
import jwt
import nacl.signing
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from capwarden.credentials.ids import new_uuid7, uuid_text
from credrig import NOW


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Ext:
    """An independent issuer: keys made with the libraries directly, imported into the terminal."""

    def __init__(self, w):
        self.w = w
        self.nacl = nacl.signing.SigningKey.generate()
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        ec_pub = self.ec.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        ed_pub = self.ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for kid, alg, pub, iss in (("x-nacl", "ed25519", bytes(self.nacl.verify_key), "issuer:ext"),
                                   ("x-ec", "ecdsa-p256-sha256", ec_pub, "issuer:ext"),
                                   ("x-jwt-ec", "ecdsa-p256-sha256", ec_pub, "tickets:ext"),
                                   ("x-jwt-ed", "ed25519", ed_pub, "tickets:ext")):
            w.t.import_key({"key_id": kid, "algorithm": alg, "key_material": b64u(pub), "issuer_id": iss,
                            "valid_from": NOW - 1000, "source": "ra-distributed"})

    def payload(self):
        w = self.w
        return {"descriptor_id": new_uuid7(), "issuer_id": "issuer:ext", "subject_fay_id": w.fay,
                "terminal_id": w.tid, "grants": [{"resource_pattern": w.res(), "modes": ["read", "execute"]}],
                "issued_at": NOW - 60, "not_before": NOW - 60, "not_after": NOW + 3600}

    def descriptor_nacl(self, payload):
        sig = self.nacl.sign(cbor2.dumps(payload, canonical=True)).signature
        return cbor2.dumps({"version": 1, "payload": payload, "signature": {
            "algorithm": "ed25519", "key_id": "x-nacl", "signature_value": sig}}, canonical=True)

    def descriptor_ec(self, payload):
        der = self.ec.sign(cbor2.dumps(payload, canonical=True), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return cbor2.dumps({"version": 1, "payload": payload, "signature": {
            "algorithm": "ecdsa-p256-sha256", "key_id": "x-ec",
            "signature_value": r.to_bytes(32, "big") + s.to_bytes(32, "big")}}, canonical=True)

    def claims(self):
        w = self.w
        return {"jti": uuid_text(new_uuid7()), "iss": "tickets:ext", "sub": w.fay, "aud": w.tid, "iat": NOW - 60,
                "nbf": NOW - 60, "exp": NOW + 3600, "grants": [{"resource_pattern": w.res(), "modes": ["read"]}]}

    def ticket(self, claims, alg="ES256"):
        key, kid = (self.ec, "x-jwt-ec") if alg == "ES256" else (self.ed, "x-jwt-ed")
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "cap-ticket+jws"})


@pytest.fixture
def ext(w):
    return Ext(w)


@pytest.mark.parametrize("signer", ["descriptor_nacl", "descriptor_ec"])
def test_external_descriptor_accepted(w, ext, signer):
    d = w.check_d(getattr(ext, signer)(ext.payload()))
    assert d.granted, d.message


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_pyjwt_ticket_accepted(w, ext, alg):
    d = w.check_t(ext.ticket(ext.claims(), alg))
    assert d.granted, d.message


DESCRIPTOR_TAMPER = [
    ("descriptor_id", lambda p: new_uuid7(), "E_INVALID_SIGNATURE"),
    ("issuer_id", lambda p: "issuer:evil", "E_VERIFICATION_KEY_INVALID"),
    ("subject_fay_id", lambda p: "fay:" + uuid_text(new_uuid7()), "E_INVALID_SIGNATURE"),
    ("terminal_id", lambda p: "terminal:" + uuid_text(new_uuid7()), "E_INVALID_SIGNATURE"),
    ("grants", lambda p: [{"resource_pattern": p["grants"][0]["resource_pattern"], "modes": ["read", "write"]}],
     "E_INVALID_SIGNATURE"),
    ("issued_at", lambda p: p["issued_at"] - 1, "E_INVALID_SIGNATURE"),
    ("not_before", lambda p: p["not_before"] + 1, "E_INVALID_SIGNATURE"),
    ("not_after", lambda p: p["not_after"] + 86400, "E_INVALID_SIGNATURE"),
]


@pytest.mark.parametrize("signer", ["descriptor_nacl", "descriptor_ec"])
@pytest.mark.parametrize("field,value,code", DESCRIPTOR_TAMPER, ids=[t[0] for t in DESCRIPTOR_TAMPER])
def test_external_descriptor_tampered(w, ext, signer, field, value, code):
    payload = ext.payload()
    good = getattr(ext, signer)(payload)
    obj = cbor2.loads(good)
    obj["payload"][field] = value(obj["payload"])
    d = w.check_d(cbor2.dumps(obj, canonical=True))
    assert (d.granted, d.error_code) == (False, code)


def test_external_descriptor_signature_and_key_id_tampered(w, ext):
    obj = cbor2.loads(ext.descriptor_nacl(ext.payload()))
    obj["signature"]["signature_value"] = bytes(64)
    assert w.check_d(cbor2.dumps(obj, canonical=True)).error_code == "E_INVALID_SIGNATURE"
    obj = cbor2.loads(ext.descriptor_nacl(ext.payload()))
    obj["signature"]["key_id"] = "x-unknown"
    assert w.check_d(cbor2.dumps(obj, canonical=True)).error_code == "E_VERIFICATION_KEY_INVALID"


TICKET_TAMPER = [
    ("jti", lambda c: uuid_text(new_uuid7())), ("sub", lambda c: "fay:" + uuid_text(new_uuid7())),
    ("aud", lambda c: "terminal:" + uuid_text(new_uuid7())), ("iat", lambda c: c["iat"] + 1),
    ("nbf", lambda c: c["nbf"] - 1), ("exp", lambda c: c["exp"] + 1),
    ("grants", lambda c: [{"resource_pattern": c["grants"][0]["resource_pattern"], "modes": ["read", "write"]}]),
]


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
@pytest.mark.parametrize("field,value", TICKET_TAMPER, ids=[t[0] for t in TICKET_TAMPER])
def test_pyjwt_ticket_tampered_payload(w, ext, alg, field, value):
    h, p, s = ext.ticket(ext.claims(), alg).split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims[field] = value(claims)
    forged = h + "." + b64u(json.dumps(claims).encode()) + "." + s
    assert w.check_t(forged).error_code == "E_INVALID_SIGNATURE"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_pyjwt_ticket_tampered_issuer_and_kid(w, ext, alg):
    c = ext.claims()
    c["iss"] = "tickets:evil"
    assert w.check_t(ext.ticket(c, alg)).error_code == "E_VERIFICATION_KEY_INVALID"
    h, p, s = ext.ticket(ext.claims(), alg).split(".")
    hdr = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    hdr["kid"] = "x-ec" if alg == "EdDSA" else "x-jwt-ed"   # another key's id
    assert w.check_t(b64u(json.dumps(hdr).encode()) + "." + p + "." + s).error_code == "E_VERIFICATION_KEY_INVALID"


def test_our_tickets_verify_with_pyjwt(w):
    """The other direction: PyJWT accepts what capwarden mints (ES256 and EdDSA)."""
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey

    tok = w.ticket(w.tix)
    pub = EllipticCurvePublicKey.from_encoded_point(SECP256R1(), w.tix.private.public)
    no_clock = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}  # tests use a fixed now
    claims = jwt.decode(tok, pub, algorithms=["ES256"], audience=w.tid, options=no_clock)
    assert claims["sub"] == w.fay
    tok = w.ticket(w.tix_ed)
    pub = ed25519.Ed25519PublicKey.from_public_bytes(w.tix_ed.private.public)
    assert jwt.decode(tok, pub, algorithms=["EdDSA"], audience=w.tid, options=no_clock)["sub"] == w.fay
