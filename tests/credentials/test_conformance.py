"""Supplement S2 row by row, and the MUSTs of chapter 2 and chapter 4, for both credentials."""

import pytest

from capwarden.credentials import cbor
from capwarden.credentials.issue import SigningKey, sign_descriptor, sign_revocation
from credrig import NOW

DAY = 86400


# ---- step 1: parse and structure -----------------------------------------------------------
@pytest.mark.parametrize("mutate,field", [
    (lambda p: p.pop("descriptor_id"), "payload.descriptor_id"),
    (lambda p: p.__setitem__("descriptor_id", b"\x00" * 16), "payload.descriptor_id"),   # not v7
    (lambda p: p.pop("issuer_id"), "payload.issuer_id"),
    (lambda p: p.__setitem__("subject_fay_id", "fay:not-a-uuid"), "payload.subject_fay_id"),
    (lambda p: p.__setitem__("terminal_id", "terminal:01927B34-7E21-7C4D-A89F-1234567890AB"), "payload.terminal_id"),
    (lambda p: p.__setitem__("grants", []), "payload.grants"),
    (lambda p: p.__setitem__("grants", [{"resource_pattern": "x", "modes": ["read"]}] * 257), "payload.grants"),
    (lambda p: p["grants"][0].__setitem__("modes", []), "payload.grants[0].modes"),
    (lambda p: p["grants"][0].__setitem__("modes", ["admin"]), "payload.grants[0].modes"),
    (lambda p: p["grants"][0].__setitem__("modes", ["READ"]), "payload.grants[0].modes"),
    (lambda p: p["grants"][0].__setitem__("modes", ["read", "read"]), "payload.grants[0].modes"),
    (lambda p: p.pop("not_after"), "payload.not_after"),
    (lambda p: p.__setitem__("not_before", p["issued_at"] - 1), "payload.not_before"),
    (lambda p: p.__setitem__("not_after", p["not_before"]), "payload.not_after"),
    (lambda p: p.__setitem__("issued_at", -1), "payload.issued_at"),
    (lambda p: p.__setitem__("issued_at", 2 ** 60), "payload.issued_at"),
    (lambda p: p.__setitem__("metadata", {"k": 1}), "payload.metadata"),
    (lambda p: p.__setitem__("surprise", "x"), "payload.surprise"),
    (lambda p: p["grants"][0].__setitem__("resource_pattern", "terminal:x/sim"), "payload.grants[0].resource_pattern"),
])
def test_step1_descriptor_malformed_names_the_field(w, mutate, field):
    p = w.payload()
    mutate(p)
    d = w.check_d(sign_descriptor(w.ed, p))
    assert (d.granted, d.error_code, d.field) == (False, "E_DESCRIPTOR_MALFORMED", field)


def test_step1_descriptor_version_must_be_1(w):
    obj = cbor.decode(w.descriptor(), 4096)
    obj["version"] = 2
    d = w.check_d(cbor.encode(obj))
    assert d.error_code == "E_DESCRIPTOR_MALFORMED" and d.field == "version"


def test_step1_unknown_descriptor_ref_is_not_found(w):
    d = w.t.decide_descriptor("01927b34-7e21-7c4d-a89f-1234567890ab", w.fay, w.res(), "read", NOW)
    assert d.error_code == "E_DESCRIPTOR_NOT_FOUND"


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.pop("jti"), "jti"),
    (lambda c: c.__setitem__("jti", "not-a-uuid"), "jti"),
    (lambda c: c.pop("exp"), "exp"),
    (lambda c: c.__setitem__("exp", "1790003600"), "exp"),
    (lambda c: c.__setitem__("aud", [c["aud"]]), "aud"),
    (lambda c: c.__setitem__("sub", "fay:" + "0" * 36), "sub"),
    (lambda c: c.__setitem__("grants", []), "grants"),
    (lambda c: c.__setitem__("grants", True), "grants"),
    (lambda c: c.__setitem__("convertible", "yes"), "convertible"),
    (lambda c: c.__setitem__("scope", "all"), "scope"),
])
def test_step1_ticket_malformed_names_the_field(w, mutate, field):
    from capwarden.credentials.issue import sign_ticket

    c = w.claims()
    mutate(c)
    d = w.check_t(sign_ticket(w.tix, c))
    assert (d.error_code, d.field) == ("E_TICKET_MALFORMED", field)


# ---- step 2: key and signature -------------------------------------------------------------
def test_step2_unknown_key(w):
    stranger = SigningKey.generate("ed25519", "nobody", "issuer:acme")
    assert w.check_d(w.descriptor(stranger)).error_code == "E_VERIFICATION_KEY_INVALID"
    assert w.check_t(w.ticket(SigningKey.generate("ecdsa-p256-sha256", "nobody", "tickets:acme"))).error_code \
        == "E_VERIFICATION_KEY_INVALID"


def test_step2_key_not_yet_valid_and_expired(w):
    k = SigningKey.generate("ed25519", "future", "issuer:acme")
    w.t.import_key(k.public_json(valid_from=NOW + 100))
    assert w.check_d(w.descriptor(k)).error_code == "E_VERIFICATION_KEY_INVALID"
    old = SigningKey.generate("ed25519", "old", "issuer:acme")
    w.t.import_key(old.public_json(valid_from=NOW - 1000, valid_until=NOW - 10))
    assert w.check_d(w.descriptor(old)).error_code == "E_VERIFICATION_KEY_INVALID"


def test_step2_revoked_key(w):
    w.t.keys.revoke("acme-ed-1")
    assert w.check_d(w.descriptor()).error_code == "E_VERIFICATION_KEY_INVALID"


def test_step2_key_of_another_issuer(w):
    d = w.check_d(w.descriptor(issuer_id="issuer:other"))
    assert d.error_code == "E_VERIFICATION_KEY_INVALID"


def test_step2_algorithm_mismatch(w):
    obj = cbor.decode(w.descriptor(w.p256), 4096)
    obj["signature"]["algorithm"] = "ed25519"   # claims ed25519 for a P-256 key id
    assert w.check_d(cbor.encode(obj)).error_code == "E_VERIFICATION_KEY_INVALID"


def test_step2_bad_signature(w):
    obj = cbor.decode(w.descriptor(), 4096)
    obj["payload"]["not_after"] += 1
    assert w.check_d(cbor.encode(obj)).error_code == "E_INVALID_SIGNATURE"


def test_step2_rotation_overlap_each_checked_against_its_own_key(w):
    new = SigningKey.generate("ed25519", "acme-ed-2", "issuer:acme")
    w.t.import_key(new.public_json(valid_from=NOW - 10))
    assert w.check_d(w.descriptor(w.ed)).granted and w.check_d(w.descriptor(new)).granted
    obj = cbor.decode(w.descriptor(new), 4096)
    obj["signature"]["key_id"] = "acme-ed-1"   # new key's signature under the old key's id
    assert w.check_d(cbor.encode(obj)).error_code == "E_INVALID_SIGNATURE"


# ---- step 3: validity ------------------------------------------------------------------------
def test_step3_descriptor_not_yet_valid_with_and_without_leeway(w):
    data = w.descriptor(not_before=NOW + 30, issued_at=NOW + 30, not_after=NOW + DAY)
    assert w.check_d(data).granted                       # within the 60 s leeway
    data = w.descriptor(not_before=NOW + 61, issued_at=NOW + 61, not_after=NOW + DAY)
    assert w.check_d(data).error_code == "E_DESCRIPTOR_NOT_YET_VALID"


def test_step3_not_before_more_than_24h_ahead(w):
    data = w.descriptor(not_before=NOW + DAY + 1, issued_at=NOW, not_after=NOW + 2 * DAY)
    assert w.check_d(data, now=NOW).error_code == "E_DESCRIPTOR_NOT_YET_VALID"


def test_step3_expired_boundary_with_leeway(w):
    data = w.descriptor(not_after=NOW + 100)
    assert w.check_d(data, now=NOW + 159).granted
    assert w.check_d(data, now=NOW + 160).error_code == "E_DESCRIPTOR_EXPIRED"


def test_step3_leeway_zero_and_bounds(w):
    from capwarden.credentials.validate import Validator

    v = Validator(w.tid, w.t.keys, w.t.revocations, leeway=0)
    data = w.descriptor(not_after=NOW + 100)
    assert v.check_descriptor(data, w.fay, w.res(), "read", NOW + 100).error_code == "E_DESCRIPTOR_EXPIRED"
    for bad in (-1, 301):
        with pytest.raises(ValueError):
            Validator(w.tid, w.t.keys, w.t.revocations, leeway=bad)


def test_step3_descriptor_longer_than_90_days(w):
    assert w.check_d(w.descriptor(not_after=NOW - 60 + 90 * DAY)).granted
    assert w.check_d(w.descriptor(not_after=NOW - 60 + 90 * DAY + 1)).error_code == "E_DESCRIPTOR_VALIDITY_TOO_LONG"


def test_step3_ticket_rows(w):
    assert w.check_t(w.ticket(nbf=NOW + 61, iat=NOW + 61, exp=NOW + 3600)).error_code == "E_TICKET_NOT_YET_VALID"
    assert w.check_t(w.ticket(nbf=NOW - 3600, exp=NOW - 61)).error_code == "E_TICKET_EXPIRED"
    assert w.check_t(w.ticket(nbf=NOW - 60, exp=NOW - 60 + 7 * DAY + 1)).error_code == "E_TICKET_VALIDITY_TOO_LONG"
    assert w.check_t(w.ticket(nbf=NOW - 60, exp=NOW - 60 + 7 * DAY)).granted
    assert w.check_t(w.ticket(iat=NOW - 8 * DAY, nbf=NOW - 60, exp=NOW + 3600)).error_code == "E_TICKET_VALIDITY_TOO_LONG"


# ---- step 4: subject, terminal, resource, mode -----------------------------------------------
def test_step4_rows_for_both_credentials(w):
    from capwarden.credentials.ids import new_fay_id, new_terminal_id

    for check, make, p in ((w.check_d, w.descriptor, "E_DESCRIPTOR_"), (w.check_t, w.ticket, "E_TICKET_")):
        assert check(make(), fay=new_fay_id()).error_code == p + "SUBJECT_MISMATCH"
        assert check(make(terminal=new_terminal_id())).error_code == p + "TERMINAL_MISMATCH"
        assert check(make(), resource=w.res("sim/gps")).error_code == p + "RESOURCE_NOT_GRANTED"
        assert check(make(), mode="write").error_code == p + "MODE_NOT_GRANTED"
        assert check(make()).granted


@pytest.mark.parametrize("granted_modes,asked,ok", [
    (("configure",), "write", False), (("configure",), "read", False), (("write",), "read", False),
    (("execute",), "write", False), (("read",), "write", False), (("write",), "write", True),
    (("read", "write", "execute", "configure"), "configure", True),
])
def test_modes_never_imply_each_other(w, granted_modes, asked, ok):
    d = w.check_d(w.descriptor(grants=w.grants(modes=granted_modes)), mode=asked)
    assert d.granted is ok and (ok or d.error_code == "E_DESCRIPTOR_MODE_NOT_GRANTED")


# ---- step 5: revocation ----------------------------------------------------------------------
def test_step5_descriptor_revoked(w):
    from capwarden.credentials.validate import parse_descriptor

    data = w.descriptor()
    w.t.import_revocation(sign_revocation(w.ed, parse_descriptor(data).credential_id, NOW), NOW)
    assert w.check_d(data).error_code == "E_DESCRIPTOR_REVOKED"


def test_step5_ticket_revoked_and_degraded(w):
    from capwarden.credentials import jws

    tok = w.ticket()
    w.t.validator.degraded = True
    assert w.check_t(tok).error_code == "E_TICKET_OFFLINE_REJECTED"
    w.t.validator.degraded = False
    w.t.import_revocation(sign_revocation(w.tix, jws.parse(tok).credential_id, NOW), NOW)
    assert w.check_t(tok).error_code == "E_TICKET_REVOKED"


def test_order_first_failing_step_answers(w):
    """Expired AND for another Fay AND revoked: the earliest step (3, expiry) answers."""
    from capwarden.credentials.ids import new_fay_id
    from capwarden.credentials.validate import parse_descriptor

    data = w.descriptor(not_after=NOW - 100, not_before=NOW - 200, issued_at=NOW - 200)
    w.t.import_revocation(sign_revocation(w.ed, parse_descriptor(data).credential_id, NOW), NOW)
    assert w.check_d(data, fay=new_fay_id()).error_code == "E_DESCRIPTOR_EXPIRED"


# ---- patterns (S2 grammar, table-driven) -----------------------------------------------------
PATTERN_CASES = [
    # (pattern suffix, resource suffix, matches)
    ("sim/camera", "sim/camera", True),
    ("sim/camera", "sim/camera/front", False),
    ("sim/*", "sim/camera", True),
    ("sim/*", "sim/camera/front", False),
    ("sim/*", "sim", False),
    ("sim/**", "sim/camera", True),
    ("sim/**", "sim/camera/front/left", True),
    ("sim/**", "sim", False),
    ("*/camera", "sim/camera", True),
    ("*/camera", "pico/camera", True),
    ("sim/Camera", "sim/camera", False),
    ("**", "sim/camera", True),
]


@pytest.mark.parametrize("pattern,resource,ok", PATTERN_CASES)
def test_pattern_table(w, pattern, resource, ok):
    d = w.check_d(w.descriptor(grants=w.grants(pattern, ("read",))), resource=w.res(resource))
    assert d.granted is ok, (pattern, resource, d.error_code)


@pytest.mark.parametrize("pattern", [
    "sim/**/x", "sim/c*", "sim/*a", "sim//camera", "sim/", "sim/./camera", "sim/../camera", "sim/***",
    "sim/%2e%2e", "sim/\\*", "sim/caméra", "sim/cam era",
])
def test_malformed_patterns(w, pattern):
    assert w.check_d(w.descriptor(grants=w.grants(pattern, ("read",)))).error_code == "E_DESCRIPTOR_MALFORMED"


def test_pattern_for_another_terminal_grants_nothing_here(w):
    from capwarden.credentials.ids import new_terminal_id

    g = [{"resource_pattern": new_terminal_id() + "/sim/camera", "modes": ["read"]}]
    assert w.check_d(w.descriptor(grants=g)).error_code == "E_DESCRIPTOR_RESOURCE_NOT_GRANTED"


def test_grant_with_constraints_is_not_honoured(w):
    g = [{"resource_pattern": w.res(), "modes": ["read"], "constraints": {"geofence": "home"}}]
    assert w.check_d(w.descriptor(grants=g)).error_code == "E_DESCRIPTOR_RESOURCE_NOT_GRANTED"
