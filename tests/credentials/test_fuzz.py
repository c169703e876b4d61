"""Issue 9 harness: fuzzing every credential parser that takes outside bytes.

Descriptors (the compiled and the source scanner, the fast path and the reference parser),
tickets (JWS compact), revocation statements, the store's revocation list and key list, and
Verification_Key JSON get random bytes and mutated valid inputs: bit flips, truncation,
insertion, deletion, overwrites, splices of two valid inputs, and type swaps in the decoded
structure, re-encoded (with and without a fresh signature). The only acceptable outcomes:

- a defined refusal: a Decision with an S2 code of that credential's kind, a CapError with one,
  or, for the store's own files, a StoreError naming the file; never another exception;
- never a grant (or an import) of a signed input that differs from what was signed.

The number of examples is the project's hypothesis profile (tests/conftest.py): bounded in
`make test`, many more under `make chaos`. Names carry the attacks.md numbers they cover.
"""

import json
import os

import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from capshared.errors import CODE
from capwarden.credentials import fastparse, jws
from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.issue import sign_revocation
from capwarden.credentials.keystore import KeyStore
from capwarden.credentials.model import decode_key_file
from capwarden.credentials.revocation import RevocationList
from capwarden.credentials.store import KEYS, REVOCATIONS, StoreError, write_json
from capwarden.credentials.validate import parse_descriptor_reference
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.errors import CapError
from credrig import NOW, World

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])

STEP2 = {"E_VERIFICATION_KEY_INVALID", "E_INVALID_SIGNATURE"}


def s2_codes(kind):
    p = "E_%s_" % kind.upper()
    codes = {p + s for s in ("MALFORMED", "NOT_YET_VALID", "EXPIRED", "VALIDITY_TOO_LONG", "SUBJECT_MISMATCH",
                            "TERMINAL_MISMATCH", "RESOURCE_NOT_GRANTED", "MODE_NOT_GRANTED", "REVOKED")} | STEP2
    if kind == "descriptor":
        codes.add("E_DESCRIPTOR_NOT_FOUND")
    else:
        codes |= {"E_REVOCATION_QUERY_TIMEOUT", "E_TICKET_OFFLINE_REJECTED"}
    return codes


DESCRIPTOR_CODES = s2_codes("descriptor")
TICKET_CODES = s2_codes("ticket")
REVOCATION_CODES = {"E_MALFORMED_REQUEST"} | STEP2
KEY_CODES = {"E_MALFORMED_REQUEST", "E_VERIFICATION_KEY_INVALID"}
assert (DESCRIPTOR_CODES | TICKET_CODES | REVOCATION_CODES) <= set(CODE)

SOURCE = fastparse.load_source(fastparse.cborscan.__file__.rsplit("/", 1)[0] + "/cborscan.py")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    return World(str(tmp_path_factory.mktemp("fuzz")))


@pytest.fixture(scope="module")
def originals(w):
    """Valid inputs of every kind and common shape, each granted (or accepted) as it is."""
    descriptors = [w.descriptor(), w.descriptor(key=w.p256),
                   w.descriptor(grantor_id="owner:alice", metadata={"note": "x", "origin": "y"}),
                   w.descriptor(grants=w.grants() + w.grants("sim/**", ("read", "write")))]
    tickets = [w.ticket(), w.ticket(key=w.tix_ed), w.ticket(grants=w.grants() + w.grants("sim/*", ("read",)))]
    for d in descriptors:
        assert w.check_d(d).granted
    for t in tickets:
        assert w.check_t(t).granted
    statement = sign_revocation(w.ed, "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", NOW)
    key = json.dumps(w.ed.public_json(valid_from=NOW - 10)).encode()
    return {"descriptor": descriptors, "ticket": tickets, "statement": statement, "key": key}


# ---- mutations ------------------------------------------------------------------------------------
@st.composite
def mutated_bytes(draw, originals):
    """One of `originals`, changed by one to three byte-level operations."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "splice", "repeat"]))
        i = draw(st.integers(0, max(0, n - 1)))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[i:i + len(chunk)] = chunk
        elif op == "splice":
            other = draw(st.sampled_from(originals))
            data = data[:i] + other[draw(st.integers(0, len(other))):]
        elif op == "repeat":
            data[i:i] = data[i:i + draw(st.integers(1, 32))]
    return bytes(data)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _get(value, path):
    for p in path:
        value = value[p]
    return value


def _set(root, path, new):
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


CBOR_ANY = st.one_of(st.integers(-2 ** 63, 2 ** 64 - 1), st.integers(2 ** 64, 2 ** 70), st.text(max_size=8),
                     st.binary(max_size=8), st.booleans(), st.none(), st.floats(), st.just([]), st.just({}),
                     st.lists(st.integers(0, 3), min_size=1, max_size=3), st.just({5: "x"}), st.just({b"k": "x"}))
JSON_ANY = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.text(max_size=8), st.booleans(), st.none(),
                     st.floats(allow_nan=False), st.just([]), st.just({}), st.lists(st.integers(0, 3), min_size=1),
                     st.just({"a": 1}))
CBOR_KEYS = st.one_of(st.integers(-5, 30), st.binary(max_size=4), st.floats(allow_nan=False), st.booleans(),
                      st.tuples(st.integers(0, 3)))    # keys of every type but text


@st.composite
def type_swapped(draw, value, anything, keys=None):
    """`value` (decoded) with one node replaced by a value of another type, or (CBOR, with
    `keys`) one map entry moved under a key that is not text. Returns the changed copy."""
    value = json.loads(json.dumps(value)) if keys is None else cbor2.loads(cbor2.dumps(value))
    paths = list(_paths(value))
    path = draw(st.sampled_from(paths))
    old = _get(value, path)
    if keys is not None and isinstance(old, dict) and old and draw(st.booleans()):
        k = draw(st.sampled_from(sorted(old)))
        new_key = draw(keys.filter(lambda x: x != k))
        old[new_key] = old.pop(k)
        return value
    new = draw(anything.filter(lambda x: type(x) is not type(old)))
    return _set(value, path, new)


# ---- descriptors ----------------------------------------------------------------------------------
def descriptor_outcome(w, data, original=None):
    """Every parser on `data`; asserts the properties, returns the Decision."""
    installed = fastparse.cborscan.scan_descriptor(data)
    assert installed == SOURCE.scan_descriptor(data), "the compiled and the source scanner disagree"
    fast = fastparse.descriptor(data)
    try:
        ref = parse_descriptor_reference(data)
    except CapError as exc:
        assert exc.code == "E_DESCRIPTOR_MALFORMED"
        ref = None
    if fast is not None:
        assert ref is not None, "the fast path accepted what the reference parser refuses"
        assert (fast.credential_id, fast.signed_bytes, fast.signature, fast.not_before) == \
            (ref.credential_id, ref.signed_bytes, ref.signature, ref.not_before)
    d = w.check_d(data)
    assert d.granted or d.error_code in DESCRIPTOR_CODES, d.error_code
    if d.granted:
        assert data == original, "a changed descriptor was granted"
    return d


@FUZZ
@given(data=st.one_of(st.binary(max_size=1024),
                      st.builds(lambda head, tail: head + tail, st.sampled_from([b"\xa3gpayload", b"\xa3"]),
                                st.binary(max_size=512))))
def test_A01_A13_fuzz_random_bytes_as_descriptor(w, data):
    descriptor_outcome(w, data)


@FUZZ
@given(depth=st.integers(1, 20000), head=st.sampled_from([b"\x81", b"\xa1\x61a", b"\x9f", b"\xbf\x61a", b"\xd8\x18"]))
def test_A11_fuzz_nesting_bombs_as_descriptor(w, depth, head):
    descriptor_outcome(w, head * depth + b"\x00")


@FUZZ
@given(st.data())
def test_A10_B21_B22_fuzz_mutated_descriptors_never_granted(w, originals, data):
    pool = originals["descriptor"]
    mutated = data.draw(mutated_bytes(pool))
    descriptor_outcome(w, mutated, original=mutated if mutated in pool else None)


@FUZZ
@given(st.data())
def test_A09_A13_fuzz_type_swapped_descriptors(w, originals, data):
    """A node of the decoded file given another type (or a map key another type), re-encoded in
    cbor2's canonical form: unsigned it is never granted; signed afresh it is refused at step 1,
    since every field of a descriptor has exactly one type."""
    original = data.draw(st.sampled_from(originals["descriptor"]))
    obj = data.draw(type_swapped(cbor2.loads(original), CBOR_ANY, CBOR_KEYS))
    mutated = cbor2.dumps(obj, canonical=True)
    assume(mutated != original)
    descriptor_outcome(w, mutated)
    if type(obj) is dict and "payload" in obj and type(obj.get("signature")) is dict:
        obj["signature"]["signature_value"] = w.ed.private.sign(cbor2.dumps(obj["payload"], canonical=True))
        obj["signature"]["algorithm"], obj["signature"]["key_id"] = "ed25519", w.ed.key_id
        resigned = cbor2.dumps(obj, canonical=True)
        # Signed afresh by the issuer's key: a grant is no forgery, but only an unchanged payload
        # may be granted.
        d = descriptor_outcome(w, resigned, original=resigned)
        if cbor2.loads(original)["payload"] != obj["payload"]:
            assert d.error_code == "E_DESCRIPTOR_MALFORMED", (d.error_code, d.message)


# ---- tickets --------------------------------------------------------------------------------------
def ticket_outcome(w, token, original=None):
    try:
        jws.parse(token)
    except CapError as exc:
        assert exc.code == "E_TICKET_MALFORMED"
    d = w.check_t(token)
    assert d.granted or d.error_code in TICKET_CODES, d.error_code
    if d.granted:
        assert token == original, "a changed ticket was granted"
    return d


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@FUZZ
@given(token=st.one_of(st.text(max_size=400), st.text(alphabet=B64 + ".=", max_size=400), st.binary(max_size=400),
                       st.builds(lambda a, b, c: a + "." + b + "." + c, *[st.text(alphabet=B64, max_size=120)] * 3)))
def test_C33_fuzz_random_text_as_ticket(w, token):
    ticket_outcome(w, token)


@FUZZ
@given(st.data())
def test_C24_C34_fuzz_mutated_tickets_never_granted(w, originals, data):
    pool = [t.encode() for t in originals["ticket"]]
    mutated = data.draw(mutated_bytes(pool))
    try:
        token = mutated.decode("ascii")
    except UnicodeDecodeError:
        token = mutated     # bytes: the parser must refuse non-ASCII itself
    ticket_outcome(w, token, original=token if mutated in pool else None)


def _b64json(value):
    return b64u_encode(json.dumps(value).encode())


@FUZZ
@given(st.data())
def test_C27_D42_fuzz_type_swapped_ticket_headers_and_claims(w, originals, data):
    original = data.draw(st.sampled_from(originals["ticket"]))
    h64, p64, s64 = original.split(".")
    header = json.loads(jws.b64u_decode(h64))
    claims = json.loads(jws.b64u_decode(p64))
    if data.draw(st.booleans()):
        header = data.draw(type_swapped(header, JSON_ANY))
    else:
        claims = data.draw(type_swapped(claims, JSON_ANY))
    signed = _b64json(header) + "." + _b64json(claims)
    unsigned = signed + "." + s64
    assume(unsigned != original)
    ticket_outcome(w, unsigned)
    key = w.tix_ed if type(header) is dict and header.get("alg") == "EdDSA" else w.tix
    resigned = signed + "." + b64u_encode(key.private.sign(signed.encode()))
    d = ticket_outcome(w, resigned)
    assert d.error_code == "E_TICKET_MALFORMED", (d.error_code, d.message)


# ---- what the engine asks -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth(w):
    return StoreAuthorizer(w.t.folder, opener=lambda folder, leeway: w.t)


@FUZZ
@given(kind=st.sampled_from(["ticket", "descriptor_ref"]), value=st.one_of(JSON_ANY, st.text(alphabet=B64 + ".")),
       fay=JSON_ANY, resource=st.one_of(JSON_ANY, st.just("x")), mode=st.one_of(JSON_ANY, st.just("read")))
def test_fuzz_the_engines_decision_path_always_decides(auth, kind, value, fay, resource, mode):
    """StoreAuthorizer.check, as the engine calls it, with any JSON in every argument: always a
    Decision with an S2 code (the engine audits it), never an exception (E_INTERNAL)."""
    field = "ticket" if kind == "ticket" else "descriptor_id"
    d = auth.check({"type": kind, field: value}, fay, resource, mode, NOW)
    assert not d.granted and d.error_code in (TICKET_CODES if kind == "ticket" else DESCRIPTOR_CODES)


# ---- revocation statements --------------------------------------------------------------------------
def statement_outcome(w, data, original):
    before = dict(w.t.revocations.entries)
    try:
        w.t.import_revocation(data, NOW)
    except CapError as exc:
        assert exc.code in REVOCATION_CODES, exc.code
    else:
        assert data == original, "a changed revocation statement was accepted"
    assert data == original or w.t.revocations.entries == before


@FUZZ
@given(st.data())
def test_F49_fuzz_revocation_statements(w, originals, data):
    original = originals["statement"]
    choice = data.draw(st.sampled_from(["random", "mutated", "swapped"]))
    if choice == "random":
        mutated = data.draw(st.binary(max_size=600))
    elif choice == "mutated":
        mutated = data.draw(mutated_bytes([original]))
    else:
        obj = data.draw(type_swapped(cbor2.loads(original), CBOR_ANY, CBOR_KEYS))
        mutated = cbor2.dumps(obj, canonical=True)
    assume(mutated != original)
    statement_outcome(w, mutated, original)


# ---- Verification_Key JSON --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyfolder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("keys"))


def key_outcome(folder, data):
    ks = KeyStore(folder)
    try:
        ks.add(decode_key_file(data))
    except CapError as exc:
        assert exc.code in KEY_CODES, exc.code


@FUZZ
@given(st.data())
def test_G62_fuzz_verification_key_json(keyfolder, originals, data):
    """Key files are not signed: a changed one may be imported (a key_id is then bound to it and
    never rebound); anything else is E_MALFORMED_REQUEST or E_VERIFICATION_KEY_INVALID."""
    original = originals["key"]
    choice = data.draw(st.sampled_from(["random", "mutated", "swapped", "deep"]))
    if choice == "random":
        raw = data.draw(st.binary(max_size=400))
    elif choice == "mutated":
        raw = data.draw(mutated_bytes([original]))
    elif choice == "swapped":
        raw = json.dumps(data.draw(type_swapped(json.loads(original), JSON_ANY))).encode()
    else:
        n = data.draw(st.integers(500, 5000))
        raw = b'{"key_id":' + b"[" * n + b"]" * n + b"}"
    key_outcome(keyfolder, raw)


# ---- the store's own JSON files ---------------------------------------------------------------------
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                           lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=12), c,
                                                                                        max_size=4)),
                           max_leaves=15)


@FUZZ
@given(st.data())
def test_fuzz_store_key_and_revocation_lists(w, tmp_path_factory, data):
    """keys.json and revocations.json (written by capwarden, but read back from disk) holding
    anything: read, or refused with a StoreError naming the file."""
    folder = str(tmp_path_factory.mktemp("store"))
    write_json(os.path.join(folder, KEYS), [w.ed.public_json(valid_from=0)])
    sample = RevocationList(folder, KeyStore(folder))
    assert sample.entries == {}
    name = data.draw(st.sampled_from([KEYS, REVOCATIONS]))
    path = os.path.join(folder, name)
    choice = data.draw(st.sampled_from(["value", "entry", "bytes", "deep"]))
    if choice == "value":
        raw = json.dumps(data.draw(JSON_VALUES)).encode()
    elif choice == "entry":
        raw = json.dumps([data.draw(JSON_VALUES)]).encode()
    elif choice == "bytes":
        raw = open(path, "rb").read() if os.path.exists(path) else b"[]"
        raw = data.draw(mutated_bytes([raw]))
    else:
        n = data.draw(st.integers(500, 5000))
        raw = b"[" * n + b"]" * n
    with open(path, "wb") as f:
        f.write(raw)
    try:
        RevocationList(folder, KeyStore(folder))
    except StoreError as exc:
        assert name in str(exc)
