"""Property-based: random and mutated credentials never raise anything but defined errors."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from capshared.errors import CODE
from capwarden.credentials import cbor
from credrig import World

SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck))   # counts: the profile (tests/conftest.py)

cbor_values = st.recursive(
    st.one_of(st.integers(-2 ** 64, 2 ** 64 - 1), st.text(max_size=20), st.binary(max_size=20),
              st.booleans(), st.none(), st.floats()),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), children, max_size=5)),
    max_leaves=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(str(tmp_path_factory.mktemp("prop")))


def assert_defined(d):
    assert d.granted is False
    assert d.error_code in CODE, d.error_code
    assert isinstance(d.message, str)


@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes_as_descriptor(world, data):
    assert_defined(world.check_d(data))


@SETTINGS
@given(value=cbor_values)
def test_random_cbor_values_as_descriptor(world, value):
    import cbor2

    assert_defined(world.check_d(cbor2.dumps(value)))


def granted_only_unchanged(decision, changed):
    """A signed credential changed in any way is refused with a defined code; unchanged, granted."""
    if changed:
        assert not decision.granted and decision.error_code in CODE
    else:
        assert decision.granted


@SETTINGS
@given(pos=st.integers(0, 10 ** 6), byte=st.integers(0, 255), cut=st.integers(0, 10 ** 6))
def test_no_change_to_a_signed_descriptor_is_accepted(world, pos, byte, cut):
    original = world.descriptor()
    good = bytearray(original)
    good[pos % len(good)] = byte
    mutated = bytes(good[: cut % len(good)]) if cut % 3 == 0 else bytes(good)
    granted_only_unchanged(world.check_d(mutated), mutated != original)


@SETTINGS
@given(field=st.sampled_from(["descriptor_id", "issuer_id", "subject_fay_id", "terminal_id", "grants", "issued_at",
                              "not_before", "not_after", "metadata", "grantor_id", "extra"]),
       value=cbor_values)
def test_payload_field_replaced_by_anything(world, field, value):
    p = world.payload()
    p[field] = value
    try:
        raw = cbor.encode(p)
    except cbor.CborError:
        return  # not representable as deterministic CBOR of allowed types
    sig = world.ed.private.sign(raw)
    data = cbor.encode({"version": 1, "payload": p, "signature": {
        "algorithm": "ed25519", "key_id": world.ed.key_id, "signature_value": sig}})
    d = world.check_d(data)
    if not d.granted:
        assert d.error_code in CODE


@SETTINGS
@given(token=st.text(max_size=300))
def test_random_text_as_ticket(world, token):
    assert_defined(world.check_t(token))


@SETTINGS
@given(pos=st.integers(0, 10 ** 6), char=st.characters(min_codepoint=32, max_codepoint=126))
def test_no_change_to_a_signed_ticket_is_accepted(world, pos, char):
    tok = world.ticket()
    i = pos % len(tok)
    mutated = tok[:i] + char + tok[i + 1:]
    granted_only_unchanged(world.check_t(mutated), mutated != tok)


@SETTINGS
@given(claims=st.dictionaries(st.sampled_from(["jti", "iss", "sub", "aud", "iat", "nbf", "exp", "grants",
                                               "convertible", "x"]), cbor_values.filter(lambda v: True), max_size=9))
def test_random_claims(world, claims):
    import json

    from capwarden.credentials.b64 import b64u_encode

    try:
        body = json.dumps(claims)
    except (TypeError, ValueError):
        return
    h = b64u_encode(b'{"alg":"ES256","typ":"cap-ticket+jws","kid":"tix-1"}')
    p = b64u_encode(body.encode())
    tok = h + "." + p + "." + b64u_encode(world.tix.private.sign((h + "." + p).encode()))
    d = world.check_t(tok)
    if not d.granted:
        assert d.error_code in CODE


@SETTINGS
@given(pattern=st.text(alphabet="ab*./-_%\\", max_size=30), resource=st.text(alphabet="ab./-_", max_size=30))
def test_random_patterns_and_resources(world, pattern, resource):
    g = [{"resource_pattern": world.tid + "/" + pattern, "modes": ["read"]}]
    p = world.payload(grants=g)
    d = world.check_d(cbor.encode({"version": 1, "payload": p, "signature": {
        "algorithm": "ed25519", "key_id": world.ed.key_id, "signature_value": world.ed.private.sign(cbor.encode(p))}}),
        resource=world.tid + "/" + resource)
    if not d.granted:
        assert d.error_code in CODE
    else:
        assert "*" in pattern or pattern == resource
