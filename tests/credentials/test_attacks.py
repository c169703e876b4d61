"""attacks.md sections A-H, one test each, numbered as in the catalogue.

Not applicable here (no online status service, no policy engine): F50-F52, F55-F58 (status
lists and their caches), E48 (there is no deny rule). D39 is the engine's (sessions use
monotonic clocks); validation takes `now` explicitly.
"""

import json
import os

import cbor2
import pytest

from capwarden.credentials import cbor, jws, keys
from capwarden.credentials.ids import new_terminal_id
from capwarden.credentials.issue import SigningKey, sign_descriptor, sign_revocation, sign_ticket
from capwarden.credentials.validate import parse_descriptor
from capwarden.errors import CapError
from capwarden.credentials.b64 import b64u_encode as b64u
from credrig import NOW, World

L = 2 ** 252 + 27742317777372353535851937790883648493
N = keys.P256_N


def wrap(w, payload_bytes, key=None, sig=None):
    """A descriptor whose payload is given as raw CBOR bytes, signed over exactly those bytes."""
    key = key or w.ed
    sig = key.private.sign(payload_bytes) if sig is None else sig
    head = cbor2.dumps({"version": 1}, canonical=True)[1:]
    sig_map = cbor2.dumps({"signature": {"algorithm": key.algorithm, "key_id": key.key_id, "signature_value": sig}},
                          canonical=True)[1:]
    # keys in canonical order: "payload" (7), "version" (7, 'v' > 'p'), "signature" (9)
    return b"\xa3" + cbor2.dumps("payload") + payload_bytes + head + sig_map


def malformed(w, data):
    return w.check_d(data).error_code == "E_DESCRIPTOR_MALFORMED"


# ---- A. Deterministic CBOR -------------------------------------------------------------------
def test_A01_noncanonical_key_order_with_valid_signature(w):
    p = w.payload()
    raw = cbor2.dumps(dict(reversed(list(p.items()))))      # valid CBOR, keys out of order
    assert raw != cbor.encode(p)
    assert malformed(w, wrap(w, raw))


def test_A02_one_pinned_ordering(w):
    assert list(cbor2.loads(cbor.encode({"aa": 1, "b": 2, "a": 3}))) == ["a", "b", "aa"]


def test_A03_duplicate_key(w):
    payload = w.payload()
    p = cbor.encode(payload)
    # The same map with one more entry: "issuer_id" a second time, with another value.
    dup = bytes([0xA0 + len(payload) + 1]) + p[1:] + cbor2.dumps("issuer_id") + cbor2.dumps("issuer:evil")
    assert cbor2.loads(dup)["issuer_id"] == "issuer:evil"   # cbor2 alone would keep the last one
    assert malformed(w, wrap(w, dup))


def test_A04_nonminimal_integer(w):
    p = w.payload()
    p["issued_at"] = 11
    p["not_before"] = 12
    raw = cbor.encode(p).replace(cbor2.dumps("issued_at") + b"\x0b", cbor2.dumps("issued_at") + bytes.fromhex("1b000000000000000b"))
    assert malformed(w, wrap(w, raw))


def test_A05_indefinite_length(w):
    p = w.payload()
    raw = cbor.encode(p)
    s = cbor2.dumps(p["issuer_id"])
    indef = b"\x7f" + s + b"\xff"
    assert malformed(w, wrap(w, raw.replace(s, indef, 1)))


def test_A06_truncated_indefinite_map(w):
    assert malformed(w, wrap(w, b"\xbf\x61\x61\xff"))


def test_A07_trailing_bytes(w):
    assert malformed(w, w.descriptor() + b"\x00")


def test_A08_tags(w):
    p = w.payload()
    raw = cbor.encode(p).replace(cbor2.dumps(p["descriptor_id"]), b"\xd8\x25" + cbor2.dumps(p["descriptor_id"]))
    assert malformed(w, wrap(w, raw))
    assert malformed(w, b"\xd8\x18" + w.descriptor())


def test_A09_floats_nan_inf(w):
    for v in (1.5, float("nan"), float("inf")):
        p = w.payload()
        raw = cbor.encode(p).replace(cbor2.dumps("not_after") + cbor2.dumps(p["not_after"]),
                                     cbor2.dumps("not_after") + cbor2.dumps(v))
        assert malformed(w, wrap(w, raw))


def test_A10_reencode_and_compare(w):
    p = w.payload()
    # The same map with its head in a 2-byte length: decodes to the same value, so only
    # re-encoding and comparing bytes catches it (and a signature over these bytes is valid).
    raw = bytes([0xB9, 0, len(p)]) + cbor.encode(p)[1:]
    assert cbor2.loads(raw) == p
    assert malformed(w, wrap(w, raw))


def test_A11_nesting_bomb_and_huge_lengths(w):
    assert malformed(w, b"\x81" * 100000)
    assert malformed(w, b"\xa1\x67payload\x5b\x00\x00\x00\x01\x00\x00\x00\x00")


@pytest.mark.parametrize("value", [-1, 2 ** 53, 2 ** 64 - 1])
def test_A12_integers_out_of_range(w, value):
    p = w.payload()
    p["not_after"] = value
    assert malformed(w, sign_descriptor(w.ed, p))


def test_A13_invalid_utf8_and_lookalike_names(w):
    p = w.payload()
    raw = cbor.encode(p)
    s = cbor2.dumps(p["issuer_id"])
    bad = bytes([s[0]]) + b"\xff" * (len(s) - 1)
    assert malformed(w, wrap(w, raw.replace(s, bad, 1)))
    assert malformed(w, w.descriptor(grants=w.grants("sim/c\u0430mera")))  # Cyrillic a


# ---- B. Signatures and keys ------------------------------------------------------------------
def test_B14_ed25519_s_plus_l(w):
    obj = cbor.decode(w.descriptor(), 4096)
    sig = obj["signature"]["signature_value"]
    s = int.from_bytes(sig[32:], "little") + L
    obj["signature"]["signature_value"] = sig[:32] + s.to_bytes(32, "little")
    assert w.check_d(cbor.encode(obj)).error_code == "E_INVALID_SIGNATURE"


def test_B15_small_order_ed25519_key_refused_at_import(w):
    identity = bytes([1]) + bytes(31)
    with pytest.raises(CapError) as exc:
        w.t.import_key({"key_id": "evil", "algorithm": "ed25519", "key_material": b64u(identity),
                        "issuer_id": "issuer:acme", "valid_from": 0, "source": "ra-distributed"})
    assert exc.value.code == "E_VERIFICATION_KEY_INVALID"
    # And the forgery it would allow (R = identity, S = 0) never verifies.
    with pytest.raises(keys.KeyError_):
        keys.load("ed25519", identity)


def test_B16_noncanonical_ed25519_encodings(w):
    p = 2 ** 255 - 19
    noncanon = (p + 1).to_bytes(32, "little")                  # y >= p
    with pytest.raises(keys.KeyError_):
        keys.load("ed25519", noncanon)
    obj = cbor.decode(w.descriptor(), 4096)
    sig = obj["signature"]["signature_value"]
    obj["signature"]["signature_value"] = noncanon + sig[32:]   # non-canonical R
    assert w.check_d(cbor.encode(obj)).error_code == "E_INVALID_SIGNATURE"


def _high_s(sig):
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    return r + (N - s).to_bytes(32, "big")


def test_B17_p256_high_s_is_accepted_so_nothing_is_keyed_on_signatures(w):
    data = w.descriptor(w.p256)
    obj = cbor.decode(data, 4096)
    obj["signature"]["signature_value"] = _high_s(obj["signature"]["signature_value"])
    twin = cbor.encode(obj)
    assert twin != data and w.check_d(twin).granted
    w.t.import_revocation(sign_revocation(w.p256, parse_descriptor(data).credential_id, NOW), NOW)
    assert w.check_d(twin).error_code == "E_DESCRIPTOR_REVOKED"


@pytest.mark.parametrize("sig", [bytes(64), bytes(32) + (1).to_bytes(32, "big"), (1).to_bytes(32, "big") + bytes(32),
                                 N.to_bytes(32, "big") + (1).to_bytes(32, "big"), b"\x01" * 63, b"\x30\x44" + b"\x01" * 70])
def test_B18_bad_ecdsa_signatures(w, sig):
    obj = cbor.decode(w.descriptor(w.p256), 4096)
    obj["signature"]["signature_value"] = sig
    assert w.check_d(cbor.encode(obj)).error_code in ("E_INVALID_SIGNATURE", "E_DESCRIPTOR_MALFORMED")


def test_B19_key_of_the_wrong_curve(w):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with pytest.raises(CapError):
        w.t.import_key({"key_id": "p384", "algorithm": "ecdsa-p256-sha256", "key_material": b64u(p384),
                        "issuer_id": "issuer:acme", "valid_from": 0, "source": "ra-distributed"})
    off_curve = b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
    with pytest.raises(keys.KeyError_):
        keys.load("ecdsa-p256-sha256", off_curve)


def test_B20_key_not_issued_retired_revoked_or_not_started(w):
    k = SigningKey.generate("ed25519", "k20", "issuer:acme")
    assert w.check_d(w.descriptor(k)).error_code == "E_VERIFICATION_KEY_INVALID"
    w.t.import_key(k.public_json(valid_from=NOW + 5))
    assert w.check_d(w.descriptor(k)).error_code == "E_VERIFICATION_KEY_INVALID"
    w.t.keys.revoke("k20")
    assert w.check_d(w.descriptor(k), now=NOW + 10).error_code == "E_VERIFICATION_KEY_INVALID"


def test_B21_splice_and_swap(w):
    a = cbor.decode(w.descriptor(), 4096)
    b = cbor.decode(w.descriptor(grants=w.grants("sim/**", ("read", "write", "execute", "configure"))), 4096)
    a["signature"], b["signature"] = b["signature"], a["signature"]
    assert w.check_d(cbor.encode(a)).error_code == "E_INVALID_SIGNATURE"
    assert w.check_d(cbor.encode(b)).error_code == "E_INVALID_SIGNATURE"


def test_B22_truncated_empty_or_appended_signature(w):
    for sig in (b"", b"\x01" * 32, b"\x01" * 65):
        obj = cbor.decode(w.descriptor(), 4096)
        obj["signature"]["signature_value"] = sig
        assert malformed(w, cbor.encode(obj))
    assert malformed(w, w.descriptor() + b"\x40")


def test_B23_domain_separation(w):
    did = parse_descriptor(w.descriptor()).credential_id
    rev = sign_revocation(w.ed, did, NOW)
    assert malformed(w, rev)                                    # a revocation is not a descriptor
    with pytest.raises(CapError):
        w.t.import_revocation(w.descriptor(), NOW)              # nor a descriptor a revocation
    assert w.check_t(w.descriptor()).error_code == "E_TICKET_MALFORMED"


# ---- C. JWS header and alg -------------------------------------------------------------------
def forge(w, header, claims=None, sig=None, key=None):
    key = key or w.tix
    h = b64u(json.dumps(header).encode() if isinstance(header, dict) else header)
    p = b64u(json.dumps(claims or w.claims()).encode())
    s = key.private.sign((h + "." + p).encode()) if sig is None else sig
    return h + "." + p + "." + b64u(s)


def t_malformed(w, token):
    return w.check_t(token).error_code == "E_TICKET_MALFORMED"


def test_C24_alg_none(w):
    assert t_malformed(w, forge(w, {"alg": "none", "typ": "cap-ticket+jws", "kid": "tix-1"}, sig=b""))


def test_C25_hs256_with_public_key(w):
    import hashlib
    import hmac

    h = b64u(json.dumps({"alg": "HS256", "typ": "cap-ticket+jws", "kid": "tix-1"}).encode())
    p = b64u(json.dumps(w.claims()).encode())
    mac = hmac.new(w.tix.private.public, (h + "." + p).encode(), hashlib.sha256).digest()
    assert t_malformed(w, h + "." + p + "." + b64u(mac))


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES384", "Ed25519", "eddsa", "es256"])
def test_C26_alg_outside_the_allow_list(w, alg):
    assert t_malformed(w, forge(w, {"alg": alg, "typ": "cap-ticket+jws", "kid": "tix-1"}))


def test_C26b_alg_mismatching_the_kids_algorithm(w):
    tok = forge(w, {"alg": "EdDSA", "typ": "cap-ticket+jws", "kid": "tix-1"}, key=w.tix_ed)
    assert w.check_t(tok).error_code == "E_VERIFICATION_KEY_INVALID"


def test_C27_missing_alg_duplicate_keys_non_string_kid(w):
    assert t_malformed(w, forge(w, {"typ": "cap-ticket+jws", "kid": "tix-1"}))
    assert t_malformed(w, forge(w, b'{"alg":"ES256","alg":"none","typ":"cap-ticket+jws","kid":"tix-1"}'))
    assert t_malformed(w, forge(w, {"alg": "ES256", "typ": "cap-ticket+jws", "kid": 7}))


@pytest.mark.parametrize("extra", [{"crit": ["exp"]}, {"crit": []}])
def test_C28_crit(w, extra):
    assert t_malformed(w, forge(w, dict({"alg": "ES256", "typ": "cap-ticket+jws", "kid": "tix-1"}, **extra)))


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_C29_embedded_keys(w, member):
    assert t_malformed(w, forge(w, {"alg": "ES256", "typ": "cap-ticket+jws", "kid": "tix-1", member: "x"}))


@pytest.mark.parametrize("typ", ["CAP-TICKET+JWS", "application/cap-ticket+jws", "JWT", None, "cap-ticket+jwt"])
def test_C30_typ_exact(w, typ):
    h = {"alg": "ES256", "kid": "tix-1"}
    if typ is not None:
        h["typ"] = typ
    assert t_malformed(w, forge(w, h))


def test_C31_b64_false(w):
    assert t_malformed(w, forge(w, {"alg": "ES256", "typ": "cap-ticket+jws", "kid": "tix-1", "b64": False}))


def test_C32_json_serialization(w):
    tok = w.ticket()
    h, p, s = tok.split(".")
    assert t_malformed(w, json.dumps({"payload": p, "signatures": []}))
    assert t_malformed(w, json.dumps({"payload": p, "protected": h, "signature": s}))


@pytest.mark.parametrize("change", [
    lambda t: t + ".", lambda t: t + ".x", lambda t: t.replace(".", "..", 1), lambda t: t + "=",
    lambda t: " " + t, lambda t: t + "\n", lambda t: t[:5] + "+" + t[6:], lambda t: "a" * 70000,
])
def test_C33_shape_checked_before_decoding(w, change):
    assert t_malformed(w, change(w.ticket()))


def test_C34_cross_token_confusion(w):
    assert w.check_t(w.descriptor()).error_code == "E_TICKET_MALFORMED"
    assert w.check_d(w.ticket().encode()).error_code == "E_DESCRIPTOR_MALFORMED"
    jwt_typ = forge(w, {"alg": "ES256", "typ": "JWT", "kid": "tix-1"})
    assert t_malformed(w, jwt_typ)


# ---- D. Claims and time ------------------------------------------------------------------------
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_D35_missing_time_claims(w, claim):
    c = w.claims()
    del c[claim]
    assert w.check_t(sign_ticket(w.tix, c)).error_code == "E_TICKET_MALFORMED"


def test_D36_lifetimes(w):
    assert w.check_t(w.ticket(iat=NOW - 60, nbf=NOW - 60, exp=NOW + 7 * 86400)).error_code == "E_TICKET_VALIDITY_TOO_LONG"
    assert w.check_d(w.descriptor(not_after=NOW + 91 * 86400)).error_code == "E_DESCRIPTOR_VALIDITY_TOO_LONG"
    assert w.check_t(w.ticket(iat=NOW + 3600, nbf=NOW + 3600, exp=NOW + 7200)).error_code == "E_TICKET_NOT_YET_VALID"


def test_D37_exact_boundaries(w):
    tok = w.ticket(nbf=NOW - 60, exp=NOW + 100)
    assert w.check_t(tok, now=NOW + 159).granted and not w.check_t(tok, now=NOW + 160).granted
    tok = w.ticket(nbf=NOW + 60, iat=NOW, exp=NOW + 1000)
    assert w.check_t(tok, now=NOW).granted and not w.check_t(w.ticket(nbf=NOW + 61, iat=NOW, exp=NOW + 1000)).granted


def test_D38_leeway_bounds_at_configuration(w):
    from capwarden.credentials.validate import Validator

    with pytest.raises(ValueError):
        Validator(w.tid, w.t.keys, w.t.revocations, leeway=301)


def test_D40_issuer_substring_and_list_claims(w):
    c = w.claims(issuer_id="tickets:acm")
    assert w.check_t(sign_ticket(w.tix, c)).error_code == "E_VERIFICATION_KEY_INVALID"
    c = w.claims()
    c["aud"] = [w.tid]
    assert w.check_t(sign_ticket(w.tix, c)).error_code == "E_TICKET_MALFORMED"
    c = w.claims()
    c["iss"] = ["tickets:acme"]
    assert w.check_t(sign_ticket(w.tix, c)).error_code == "E_TICKET_MALFORMED"


def test_D41_token_for_another_terminal(w):
    assert w.check_t(w.ticket(terminal=new_terminal_id())).error_code == "E_TICKET_TERMINAL_MISMATCH"


@pytest.mark.parametrize("claim,value", [("exp", "1790003600"), ("exp", 1790003600.5), ("grants", True),
                                         ("nbf", None), ("iat", True), ("extra_claim", 1)])
def test_D42_wrong_types_and_unknown_claims(w, claim, value):
    h = b64u(json.dumps({"alg": "ES256", "typ": "cap-ticket+jws", "kid": "tix-1"}).encode())
    c = w.claims()
    c[claim] = value
    p = b64u(json.dumps(c).encode())
    tok = h + "." + p + "." + b64u(w.tix.private.sign((h + "." + p).encode()))
    assert w.check_t(tok).error_code == "E_TICKET_MALFORMED"


# ---- E. Grants and patterns --------------------------------------------------------------------
def test_E43_empty_grants_grant_nothing(w):
    assert malformed(w, w.descriptor(grants=[]))
    assert w.check_t(w.ticket(grants=[])).error_code == "E_TICKET_MALFORMED"


@pytest.mark.parametrize("pattern", ["sim/\\*", "sim/camera/", "sim/..", "sim/%2e%2e", "sim//cam", "sim/CAMERA"])
def test_E44_pattern_edge_cases(w, pattern):
    d = w.check_d(w.descriptor(grants=w.grants(pattern, ("read",))))
    assert not d.granted


def test_E45_no_mode_implication(w):
    d = w.check_d(w.descriptor(grants=w.grants(modes=("configure",))), mode="write")
    assert d.error_code == "E_DESCRIPTOR_MODE_NOT_GRANTED"


@pytest.mark.parametrize("mode", ["admin", "READ", "Write", ""])
def test_E46_unknown_mode(w, mode):
    assert malformed(w, w.descriptor(grants=w.grants(modes=("read", mode))))


def test_E47_grant_explosion_bounded(w):
    many = [{"resource_pattern": w.res("sim/r%d" % i), "modes": ["read"]} for i in range(257)]
    assert malformed(w, w.descriptor(grants=many))
    long = [{"resource_pattern": w.tid + "/" + "/".join(["*"] * 100), "modes": ["read"]}] * 256
    d = w.check_d(w.descriptor(grants=long))     # 256 grants with 100 segments: a bounded scan
    assert d.error_code in ("E_DESCRIPTOR_MALFORMED", "E_DESCRIPTOR_RESOURCE_NOT_GRANTED")


# ---- F. Revocation ---------------------------------------------------------------------------
def test_F49_revoked_whatever_the_bytes(w):
    data = w.descriptor(w.p256)
    did = parse_descriptor(data).credential_id
    w.t.import_revocation(sign_revocation(w.p256, did, NOW), NOW)
    obj = cbor.decode(data, 4096)
    obj["signature"]["signature_value"] = _high_s(obj["signature"]["signature_value"])
    assert w.check_d(cbor.encode(obj)).error_code == "E_DESCRIPTOR_REVOKED"
    resigned = SigningKey.generate("ed25519", "acme-ed-9", "issuer:acme")
    w.t.import_key(resigned.public_json(valid_from=NOW - 10))
    obj["signature"] = {"algorithm": "ed25519", "key_id": "acme-ed-9",
                        "signature_value": resigned.private.sign(cbor.encode(obj["payload"]))}
    assert w.check_d(cbor.encode(obj)).error_code == "E_DESCRIPTOR_REVOKED"


def test_F49b_revocation_by_another_issuer_is_not_a_revocation(w):
    other = SigningKey.generate("ed25519", "other-1", "issuer:other")
    w.t.import_key(other.public_json(valid_from=NOW - 10))
    data = w.descriptor()
    w.t.import_revocation(sign_revocation(other, parse_descriptor(data).credential_id, NOW), NOW)
    assert w.check_d(data).granted


def test_F53_F54_offline_path_never_allows_because_unknown(w):
    w.t.validator.degraded = True
    assert w.check_t(w.ticket()).error_code == "E_TICKET_OFFLINE_REJECTED"
    data = w.descriptor()
    w.t.import_revocation(sign_revocation(w.ed, parse_descriptor(data).credential_id, NOW), NOW)
    assert w.check_d(data).error_code == "E_DESCRIPTOR_REVOKED"   # the local list still applies


def test_F59_ticket_revocation_kills_converted_descriptors(w):
    tok = w.ticket()
    did = w.t.convert_ticket(tok, NOW)
    assert w.t.decide_descriptor(did, w.fay, w.res(), "read", NOW).granted
    w.t.import_revocation(sign_revocation(w.tix, jws.parse(tok).credential_id, NOW), NOW)
    assert not w.t.decide_descriptor(did, w.fay, w.res(), "read", NOW).granted
    assert did not in w.t.stored_ids()


def test_forged_revocation_is_refused(w):
    data = w.descriptor()
    stmt = cbor.decode(sign_revocation(w.ed, parse_descriptor(data).credential_id, NOW), 4096)
    stmt["reason"] = "compromised"   # changed after signing
    with pytest.raises(CapError) as exc:
        w.t.import_revocation(cbor.encode(stmt), NOW)
    assert exc.value.code == "E_INVALID_SIGNATURE"
    assert w.check_d(data).granted


# ---- G. Keys and rotation ----------------------------------------------------------------------
def test_G60_retired_and_not_yet_active_keys(w):
    old = SigningKey.generate("ed25519", "g60-old", "issuer:acme")
    new = SigningKey.generate("ed25519", "g60-new", "issuer:acme")
    w.t.import_key(old.public_json(valid_from=NOW - 1000, valid_until=NOW - 1))
    w.t.import_key(new.public_json(valid_from=NOW + 1))
    assert w.check_d(w.descriptor(old)).error_code == "E_VERIFICATION_KEY_INVALID"
    assert w.check_d(w.descriptor(new)).error_code == "E_VERIFICATION_KEY_INVALID"
    assert w.check_d(w.descriptor(new), now=NOW + 2).granted


def test_G61_kid_collision_refused(w):
    evil = SigningKey.generate("ed25519", "acme-ed-1", "issuer:acme")   # same kid, other material
    with pytest.raises(CapError) as exc:
        w.t.import_key(evil.public_json(valid_from=0))
    assert exc.value.code == "E_VERIFICATION_KEY_INVALID"
    assert w.check_d(w.descriptor(evil)).error_code == "E_INVALID_SIGNATURE"


def test_G62_key_distribution_with_small_order_key(w):
    with pytest.raises(CapError):
        w.t.import_key({"key_id": "g62", "algorithm": "ed25519", "key_material": b64u(bytes(32)),
                        "issuer_id": "issuer:acme", "valid_from": 0, "source": "ra-distributed"})
    assert "g62" not in w.t.keys.records


def test_G63_unknown_key_distinguished_from_tampered(w):
    stranger = SigningKey.generate("ed25519", "g63", "issuer:acme")
    assert w.check_d(w.descriptor(stranger)).error_code == "E_VERIFICATION_KEY_INVALID"
    obj = cbor.decode(w.descriptor(), 4096)
    obj["payload"]["issued_at"] -= 1
    assert w.check_d(cbor.encode(obj)).error_code == "E_INVALID_SIGNATURE"


# ---- H. Conversion and degradation -------------------------------------------------------------
def test_H64_converted_lifetime_never_extended(w):
    tok = w.ticket(iat=NOW - 60, nbf=NOW - 60, exp=NOW + 6 * 86400)
    d = w.t.load_descriptor(w.t.convert_ticket(tok, NOW + 86400))
    assert d.not_after <= NOW + 6 * 86400 and d.not_after <= NOW - 60 + 7 * 86400


def test_H65_converted_grants_never_wider_and_binding_kept(w):
    tok = w.ticket(grants=w.grants("sim/gps", ("read",)))
    d = w.t.load_descriptor(w.t.convert_ticket(tok, NOW))
    assert [g.to_obj() for g in d.grants] == w.grants("sim/gps", ("read",))
    assert d.terminal_id == w.tid and d.subject == w.fay
    assert d.issuer_id == "local-conversion:" + w.tid
    assert d.metadata["origin"] == "converted_from_ticket" and d.metadata["origin_kid"] == "tix-1"
    assert d.metadata["origin_jti"] == jws.parse(tok).credential_id
    assert not w.t.decide_descriptor(d.credential_id, w.fay, w.res("sim/gps"), "write", NOW).granted


def test_H66_revoked_or_offline_ticket_not_converted(w):
    tok = w.ticket()
    w.t.import_revocation(sign_revocation(w.tix, jws.parse(tok).credential_id, NOW), NOW)
    with pytest.raises(CapError) as exc:
        w.t.convert_ticket(tok, NOW)
    assert exc.value.code == "E_TICKET_REVOKED"
    w.t.validator.degraded = True
    with pytest.raises(CapError) as exc:
        w.t.convert_ticket(w.ticket(), NOW)
    assert exc.value.code == "E_TICKET_OFFLINE_REJECTED"


def test_H67_one_conversion_per_ticket(w):
    tok = w.ticket()
    a = w.t.convert_ticket(tok, NOW)
    b = w.t.convert_ticket(tok, NOW + 10)
    assert a == b and len(w.t.stored_ids()) == 1


def test_H68_other_terminal_does_not_trust_local_conversions(w, tmp_path):
    did = w.t.convert_ticket(w.ticket(), NOW)
    blob = w.t.sealer.open(open(os.path.join(w.t.folder, "descriptors", did + ".cap"), "rb").read(), did.encode())
    other = World(str(tmp_path / "other"))
    d = other.t.validator.check_descriptor(blob, w.fay, w.res(), "read", NOW)
    assert d.error_code == "E_VERIFICATION_KEY_INVALID"


def test_converted_descriptors_purged_24h_after_expiry(w):
    did = w.t.convert_ticket(w.ticket(exp=NOW + 3600), NOW)
    assert w.t.purge(NOW + 3600 + 86399) == [] and did in w.t.stored_ids()
    assert len(w.t.purge(NOW + 3600 + 86400)) == 1 and did not in w.t.stored_ids()


def test_non_convertible_ticket_is_not_converted(w):
    with pytest.raises(CapError):
        w.t.convert_ticket(w.ticket(convertible=False), NOW)
