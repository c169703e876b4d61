"""Issue 9, the credential part: pre-issued descriptors (defect 5), inputs that crashed instead
of being refused (defect 6) and oversize inputs (defect 12), through the library, the engine's
authorizer and the command line. Each test failed on the code before the fix (see the report).
"""

import json
import os

import cbor2
import pytest

from capwarden.cli import main
from capwarden.credentials import Terminal, fastparse, jws, model
from capwarden.credentials.issue import sign_descriptor, sign_ticket
from capwarden.credentials.model import DAY, MAX_DESCRIPTOR
from capwarden.credentials.revocation import MAX_STATEMENT
from capwarden.credentials.store import CONVERSIONS, KEYS, REVOCATIONS, TERMINAL, StoreError
from capwarden.credentials.validate import parse_descriptor_reference
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.errors import CapError
from capwarden.credentials.b64 import b64u_encode as b64u
from credrig import NOW
from test_cli_store import flow, run  # noqa: F401  (the S4 fixture: store, keys, a Fay)

DEEP = 5000   # far past the interpreter's recursion limit


def resign(w, obj, key=None):
    """A descriptor file for a decoded descriptor map, its payload signed as encoded: cbor2's
    canonical form, which is deterministic whatever types it holds."""
    key = key or w.ed
    obj["signature"]["signature_value"] = key.private.sign(cbor2.dumps(obj["payload"], canonical=True))
    return cbor2.dumps(obj, canonical=True)


def authorizer(w):
    return StoreAuthorizer(w.t.folder, opener=lambda folder, leeway: w.t)


# ---- defect 5: pre-issued descriptors ----------------------------------------------------------
def test_issue9_5_pre_issued_descriptor_refused_at_import(w):
    for issued_at in (NOW, NOW + 2 * DAY):   # an honest issued_at, and one that claims the future
        data = w.descriptor(issued_at=issued_at, not_before=NOW + 2 * DAY, not_after=NOW + 3 * DAY)
        with pytest.raises(CapError) as e:
            w.t.import_descriptor(data, now=NOW)
        assert e.value.code == "E_DESCRIPTOR_NOT_YET_VALID" and e.value.field == "not_before"
    assert w.t.stored_ids() == []


def test_issue9_5_descriptor_valid_within_24h_may_be_imported_early(w):
    data = w.descriptor(issued_at=NOW, not_before=NOW + DAY - 1, not_after=NOW + 2 * DAY)
    did = w.t.import_descriptor(data, now=NOW)
    assert w.t.decide_descriptor(did, w.fay, w.res(), "read", NOW).error_code == "E_DESCRIPTOR_NOT_YET_VALID"
    assert w.t.decide_descriptor(did, w.fay, w.res(), "read", NOW + DAY).granted


def test_issue9_5_pre_issued_descriptor_never_granted_later(w):
    """Issued at NOW, valid from NOW + 2 days: when its day comes it is still refused, presented
    as a file (verify) or found in the store (decision time), by the fast and reference parsers."""
    data = w.descriptor(issued_at=NOW, not_before=NOW + 2 * DAY, not_after=NOW + 3 * DAY)
    later = NOW + 2 * DAY + 10
    d = w.check_d(data, now=later)
    assert d.error_code == "E_DESCRIPTOR_NOT_YET_VALID" and d.field == "not_before" and "pre-issued" in d.message
    # Both step-1 parsers read it with the same fields, and the decision is the same.
    fast, ref = fastparse.descriptor(data), parse_descriptor_reference(data)
    assert fast is not None
    assert (fast.issued_at, fast.not_before, fast.not_after) == (ref.issued_at, ref.not_before, ref.not_after)
    assert w.t.validator.check(ref, w.fay, w.res(), "read", later).error_code == "E_DESCRIPTOR_NOT_YET_VALID"
    # Stored as an older capwarden would have stored it (sealed, without the import check).
    did = fast.credential_id
    with open(w.t._path(did), "wb") as f:
        f.write(w.t.sealer.seal(data, did.encode()))
    assert w.t.decide_descriptor(did, w.fay, w.res(), "read", later).error_code == "E_DESCRIPTOR_NOT_YET_VALID"
    assert authorizer(w).check({"type": "descriptor_ref", "descriptor_id": did}, w.fay, w.res(), "read",
                               later).error_code == "E_DESCRIPTOR_NOT_YET_VALID"


def test_issue9_5_pre_issued_ticket_not_converted(w):
    token = w.ticket(iat=NOW, nbf=NOW + DAY + 100, exp=NOW + 2 * DAY)
    with pytest.raises(CapError) as e:
        w.t.convert_ticket(token, NOW)
    assert e.value.code == "E_TICKET_NOT_YET_VALID"
    assert w.t.stored_ids() == []


def test_issue9_5_ticket_issued_long_before_it_starts_still_converts(w):
    """The converted descriptor is issued by the terminal now: it is not pre-issued because
    the ticket was minted two days before its start."""
    token = w.ticket(iat=NOW - 2 * DAY, nbf=NOW - 60, exp=NOW + 3600)
    did = w.t.convert_ticket(token, NOW)
    assert w.t.decide_descriptor(did, w.fay, w.res(), "read", NOW).granted


def test_issue9_5_cli_import_and_verify_refuse_pre_issued(flow, capsys):
    import time

    f = flow
    from capwarden.credentials.issue import SigningKey, descriptor_payload

    key = SigningKey.load("k/acme.key")
    now = int(time.time())
    data = sign_descriptor(key, descriptor_payload(f["fay"], f["tid"], [{"resource_pattern": f["res"], "modes": ["read"]}],
                                                   key.issuer_id, now + 3 * DAY, now + 4 * DAY, issued_at=now))
    open("pre.cap", "wb").write(data)
    code, out, _ = run(capsys, "descriptors", "import", "--store", "st", "pre.cap", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_NOT_YET_VALID"
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--descriptor", "pre.cap", "--at", str(now + 3 * DAY + 5), "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_NOT_YET_VALID"
    # The issuer's side refuses to mint one (a usage error), and dates what it mints honestly.
    code, _, err = run(capsys, "issue", "descriptor", "--key", "k/acme.key", "--fay", f["fay"], "--terminal", f["tid"],
                       "--grant", "sim/camera=read", "--not-before", str(now + 2 * DAY), "--out", "x.cap")
    assert code == 2 and "24 h" in err and not os.path.exists("x.cap")
    code, _, _ = run(capsys, "issue", "descriptor", "--key", "k/acme.key", "--fay", f["fay"], "--terminal", f["tid"],
                     "--grant", "sim/camera=read", "--not-before", str(now + 3600), "--out", "soon.cap")
    assert code == 0
    soon = parse_descriptor_reference(open("soon.cap", "rb").read())
    assert soon.issued_at <= int(time.time()) and soon.not_before == now + 3600
    assert run(capsys, "descriptors", "import", "--store", "st", "soon.cap")[0] == 0


# ---- defect 6: inputs that crashed ---------------------------------------------------------------
NON_TEXT_KEYS = [5, -1, b"k", (1, 2), 1.5]


def _with_key(path, key):
    def change(obj):
        target = obj
        for p in path:
            target = target[p]
        target[key] = "x"
    return change


PLACES = {"top": (), "payload": ("payload",), "signature": ("signature",), "grant": ("payload", "grants", 0)}


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("key", NON_TEXT_KEYS, ids=repr)
def test_issue9_6_non_text_map_keys_refused_not_crashed(w, place, key):
    obj = cbor2.loads(w.descriptor())
    _with_key(PLACES[place], key)(obj)
    data = resign(w, obj)
    assert fastparse.descriptor(data) is None
    with pytest.raises(CapError) as e:
        parse_descriptor_reference(data)
    assert e.value.code == "E_DESCRIPTOR_MALFORMED"
    assert w.check_d(data).error_code == "E_DESCRIPTOR_MALFORMED"
    with pytest.raises(CapError) as e:
        w.t.import_descriptor(data, now=NOW)
    assert e.value.code == "E_DESCRIPTOR_MALFORMED"


@pytest.mark.parametrize("metadata", [{5: "x"}, {"a": 5}, {"a": ["x"]}, {"a": {"b": "c"}}, {b"k": "v"}, ["a"], 7],
                         ids=repr)
def test_issue9_6_wrong_types_in_metadata_and_constraints(w, metadata):
    for field in ("metadata", "constraints"):
        obj = cbor2.loads(w.descriptor())
        if field == "metadata":
            obj["payload"]["metadata"] = metadata
        else:
            obj["payload"]["grants"][0]["constraints"] = metadata
        d = w.check_d(resign(w, obj))
        assert d.error_code == "E_DESCRIPTOR_MALFORMED" and d.field.endswith(field)


@pytest.mark.parametrize("member", ["alg", "typ", "kid"])
@pytest.mark.parametrize("value", [["EdDSA"], {"a": 1}, [], {}, None, 1, True], ids=repr)
def test_issue9_6_C27_header_members_of_any_type_refused_as_malformed(w, member, value):
    header = {"alg": "ES256", "typ": "cap-ticket+jws", "kid": "tix-1"}
    header[member] = value
    h = b64u(json.dumps(header).encode())
    p = b64u(json.dumps(w.claims()).encode())
    token = h + "." + p + "." + b64u(w.tix.private.sign((h + "." + p).encode()))
    d = w.check_t(token)
    assert d.error_code == "E_TICKET_MALFORMED" and d.field == "header." + member
    # What the engine asks: a Decision it audits as a deny, not an exception (E_INTERNAL).
    d = authorizer(w).check({"type": "ticket", "ticket": token}, w.fay, w.res(), "read", NOW)
    assert not d.granted and d.error_code == "E_TICKET_MALFORMED"


@pytest.mark.parametrize("ref", [["x"], {"a": 1}, 5, None, "../../terminal", "0" * 36], ids=repr)
def test_issue9_6_descriptor_ref_of_any_type_is_not_found(w, ref):
    d = authorizer(w).check({"type": "descriptor_ref", "descriptor_id": ref}, w.fay, w.res(), "read", NOW)
    assert not d.granted and d.error_code == "E_DESCRIPTOR_NOT_FOUND"


@pytest.mark.parametrize("mode", [["read"], {"read": 1}, None, 3], ids=repr)
def test_issue9_6_access_mode_of_any_type_is_not_granted(w, mode):
    assert w.check_d(w.descriptor(), mode=mode).error_code == "E_DESCRIPTOR_MODE_NOT_GRANTED"
    assert w.check_t(w.ticket(), mode=mode).error_code == "E_TICKET_MODE_NOT_GRANTED"


def test_issue9_6_tampered_stored_descriptor_is_a_refusal(w):
    did = w.t.import_descriptor(w.descriptor(), now=NOW)
    w.t._cache.clear()
    blob = bytearray(open(w.t._path(did), "rb").read())
    blob[-1] ^= 1
    open(w.t._path(did), "wb").write(bytes(blob))
    d = authorizer(w).check({"type": "descriptor_ref", "descriptor_id": did}, w.fay, w.res(), "read", NOW)
    assert not d.granted and d.error_code == "E_DESCRIPTOR_MALFORMED"


def test_issue9_6_A11_deeply_nested_ticket_json_is_malformed(w):
    for segment in ("header", "payload"):
        nested = b"[" * DEEP + b"]" * DEEP
        h = b64u(nested) if segment == "header" else w.ticket().split(".")[0]
        p = b64u(nested) if segment == "payload" else w.ticket().split(".")[1]
        d = w.check_t(h + "." + p + "." + b64u(b"\x00" * 64))
        assert d.error_code == "E_TICKET_MALFORMED" and d.field == segment


def _deep_json(depth=1500):
    """JSON nested past the recursion limit, and smaller than any file limit (4 KiB)."""
    return (b"[" * depth) + (b"]" * depth)


def test_issue9_6_deeply_nested_key_file_cli_refuses_without_traceback(flow, capsys):
    open("deep.pub.json", "wb").write(_deep_json())
    code, out, err = run(capsys, "keys", "import", "--store", "st", "deep.pub.json", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_MALFORMED_REQUEST"
    code, out, err = run(capsys, "keys", "import", "--store", "st", "deep.pub.json")
    assert code == 1 and "not JSON" in err and "Traceback" not in err


def test_issue9_6_key_file_with_a_member_twice_is_refused(flow, capsys):
    pub = json.load(open("k/acme.pub.json"))
    text = json.dumps(pub)[:-1] + ', "key_material": "%s"}' % b64u(b"\x01" * 32)
    open("dup.pub.json", "w").write(text)
    code, out, _ = run(capsys, "keys", "import", "--store", "st", "dup.pub.json", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_MALFORMED_REQUEST" and "twice" in json.loads(out)["message"]


def test_issue9_6_deeply_nested_signing_key_file_is_a_clear_error(flow, capsys):
    open("k/deep.key", "wb").write(_deep_json())
    os.chmod("k/deep.key", 0o600)
    f = flow
    code, _, err = run(capsys, "issue", "descriptor", "--key", "k/deep.key", "--fay", f["fay"], "--terminal", f["tid"],
                       "--grant", "sim/camera=read", "--out", "x.cap")
    assert code == 1 and "not a capwarden signing key file" in err


@pytest.mark.parametrize("name,content", [
    (KEYS, None), (REVOCATIONS, None), (CONVERSIONS, None), (TERMINAL, None),
    (KEYS, b"{}"), (KEYS, b"5"), (KEYS, b"[5]"), (REVOCATIONS, b"{}"), (REVOCATIONS, b"[[1]]"),
    (REVOCATIONS, b'[{"target": 1}]'), (CONVERSIONS, b"[]"), (CONVERSIONS, b'{"a": 5}'),
    (CONVERSIONS, b'{"a": {"descriptor_id": []}}'), (TERMINAL, b"[]"), (TERMINAL, b'{"terminal_id": 5}'),
    (KEYS, b"[1.5]"), (KEYS, b"[NaN]"), (KEYS, b"\xff"),
])
def test_issue9_6_corrupt_store_files_are_store_errors(w, name, content):
    """Every JSON file of the store, deeply nested or of the wrong shape: a StoreError saying
    which file (the CLI prints it, exit 1), never a TypeError, KeyError or RecursionError."""
    path = os.path.join(w.t.folder, name)
    open(path, "wb").write(_deep_json() if content is None else content)
    with pytest.raises(StoreError) as e:
        t = Terminal.open(w.t.folder)
        t.convert_ticket(w.ticket(), NOW)   # the one path that reads conversions.json
    assert name in str(e.value)


def test_issue9_6_corrupt_store_cli_prints_a_message(flow, capsys):
    open("st/" + REVOCATIONS, "wb").write(_deep_json())
    code, _, err = run(capsys, "revocations", "list", "--store", "st")
    assert code == 1 and "revocations.json is corrupt" in err and "Traceback" not in err


def test_issue9_6_non_text_keys_cli_verify_and_inspect(flow, capsys):
    f = flow
    from capwarden.credentials.issue import SigningKey, descriptor_payload

    key = SigningKey.load("k/acme.key")
    obj = cbor2.loads(sign_descriptor(key, descriptor_payload(
        f["fay"], f["tid"], [{"resource_pattern": f["res"], "modes": ["read"]}], key.issuer_id, NOW, NOW + DAY)))
    obj["payload"][7] = "x"
    obj["signature"]["signature_value"] = key.private.sign(cbor2.dumps(obj["payload"], canonical=True))
    open("odd.cap", "wb").write(cbor2.dumps(obj, canonical=True))
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--descriptor", "odd.cap", "--at", str(NOW + 10), "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_MALFORMED"
    code, out, _ = run(capsys, "descriptors", "import", "--store", "st", "odd.cap", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_MALFORMED"
    code, _, err = run(capsys, "inspect", "odd.cap")
    assert code == 1 and "is not text" in err and "Traceback" not in err


# ---- defect 12: oversize inputs are invalid input ----------------------------------------------------
def _verify(capsys, f, *cred):
    return run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read", *cred,
               "--json")


def test_issue9_12_J74_oversize_descriptor_verify_json(flow, capsys):
    f = flow
    with open("big.cap", "wb") as fh:
        fh.truncate(10 * 1024 * 1024)
    code, out, _ = _verify(capsys, f, "--descriptor", "big.cap")
    d = json.loads(out)     # one object
    assert code == 1 and d["granted"] is False and d["error_code"] == "E_DESCRIPTOR_MALFORMED"
    assert str(MAX_DESCRIPTOR) in d["message"]


def test_issue9_12_J74_oversize_ticket_verify_json(flow, capsys):
    f = flow
    open("big.jws", "wb").write(b"e" * (1024 * 1024 + 1))   # "a 1 MB ticket": over the old 1 MiB usage limit
    code, out, _ = _verify(capsys, f, "--ticket", "big.jws")
    d = json.loads(out)
    assert code == 1 and d["granted"] is False and d["error_code"] == "E_TICKET_MALFORMED"


def test_issue9_12_the_limits_are_the_credential_layers(flow, capsys):
    """A file of exactly the limit reaches the parser; one byte more is refused by size. A
    ticket file may end with a line break."""
    f = flow
    open("edge.cap", "wb").write(b"\xa0" * MAX_DESCRIPTOR)
    d = json.loads(_verify(capsys, f, "--descriptor", "edge.cap")[1])
    assert d["error_code"] == "E_DESCRIPTOR_MALFORMED" and str(MAX_DESCRIPTOR) not in d["message"]
    open("edge.cap", "wb").write(b"\xa0" * (MAX_DESCRIPTOR + 1))
    d = json.loads(_verify(capsys, f, "--descriptor", "edge.cap")[1])
    assert d["error_code"] == "E_DESCRIPTOR_MALFORMED" and str(MAX_DESCRIPTOR) in d["message"]
    open("edge.jws", "wb").write(b"e" * jws.MAX_TICKET + b"\r\n")
    d = json.loads(_verify(capsys, f, "--ticket", "edge.jws")[1])
    assert d["error_code"] == "E_TICKET_MALFORMED" and "not a JWS" in d["message"]


def test_issue9_12_size_is_checked_before_the_file_is_read_whole(flow, capsys):
    """/dev/zero has no size and no end: it is read only up to the limit, then refused."""
    f = flow
    code, out, _ = _verify(capsys, f, "--descriptor", "/dev/zero")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_MALFORMED"
    code, out, _ = _verify(capsys, f, "--ticket", "/dev/zero")
    assert code == 1 and json.loads(out)["error_code"] == "E_TICKET_MALFORMED"


@pytest.mark.parametrize("argv,code_name", [
    (("descriptors", "import", "--store", "st"), "E_DESCRIPTOR_MALFORMED"),
    (("revocations", "import", "--store", "st"), "E_MALFORMED_REQUEST"),
    (("keys", "import", "--store", "st"), "E_MALFORMED_REQUEST"),
])
def test_issue9_12_oversize_imports_are_invalid_input(flow, capsys, argv, code_name):
    with open("big.bin", "wb") as fh:
        fh.truncate(11 * 1024 * 1024)
    code, out, _ = run(capsys, *argv, "big.bin", "--json")
    d = json.loads(out)
    assert code == 1 and d["imported"] is False and d["error_code"] == code_name
    code, _, err = run(capsys, *argv, "big.bin")
    assert code == 1 and code_name in err


def test_issue9_12_oversize_inspect_is_invalid_input(flow, capsys):
    with open("big.bin", "wb") as fh:
        fh.truncate(11 * 1024 * 1024)
    code, _, err = run(capsys, "inspect", "big.bin")
    assert code == 1 and "E_MALFORMED_REQUEST" in err


def test_issue9_12_statement_limit_is_the_revocation_layers(w):
    from capwarden.credentials import cbor

    with pytest.raises(CapError) as e:
        w.t.import_revocation(b"\xa0" * (MAX_STATEMENT + 1), NOW)
    assert e.value.code == "E_MALFORMED_REQUEST" and str(MAX_STATEMENT) in e.value.message
    assert cbor.decode(b"\xa0", MAX_STATEMENT) == {}


def test_issue9_12_key_file_limit(w):
    with pytest.raises(CapError) as e:
        model.decode_key_file(b" " * (model.MAX_KEY_FILE + 1))
    assert e.value.code == "E_MALFORMED_REQUEST"


@pytest.mark.parametrize("field", ["grantor_id", "metadata", "constraints"])
def test_issue9_6_null_for_an_optional_field_is_malformed(w, field):
    """Found by the fuzzer: a null grantor_id was read as an absent one and granted, two
    encodings of one descriptor. Every present field must have its one type."""
    obj = cbor2.loads(w.descriptor())
    if field == "constraints":
        obj["payload"]["grants"][0]["constraints"] = None
    else:
        obj["payload"][field] = None
    data = resign(w, obj)
    assert fastparse.descriptor(data) is None
    d = w.check_d(data)
    assert d.error_code == "E_DESCRIPTOR_MALFORMED" and d.field.endswith(field)


def test_issue9_12_J75_refusals_never_echo_oversize_input(w):
    """A refusal's message and field stay short whatever the input carried (they reach the
    audit log and the runtime): a 100 kB unknown key, Resource_ID, mode or header member."""
    huge = "x" * 100_000
    obj = cbor2.loads(w.descriptor())
    obj["payload"][huge] = "v"
    decisions = [w.check_d(resign(w, obj)), w.check_d(w.descriptor(), resource=huge),
                 w.check_d(w.descriptor(), mode=huge)]
    header = b64u(json.dumps({"alg": "ES256", "typ": "cap-ticket+jws", "kid": "tix-1", huge[:700]: 1}).encode())
    decisions.append(w.check_t(header + "." + w.ticket().split(".", 1)[1]))
    for d in decisions:
        assert not d.granted and len(d.message) < 300 and len(d.field or "") < 100, d.error_code
