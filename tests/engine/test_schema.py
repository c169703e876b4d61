"""The shipped schema (shared/schema/v1/schema.json) and the compiled validator that enforces it.

protocol.validate runs the schema compiled by jsonschema-rs (capwarden.runtimeapi); the
jsonschema package's validator of the same file is the reference. They must agree on every
message, valid or not (except `$` before a final newline, where jsonschema-rs follows ECMA-262).
"""

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

import jsonschema

from capwarden.engine import protocol
from capwarden.runtimeapi import schema
from hypo import examples

U = "01927b34-7e21-7c4d-a89f-1234567890ab"
FAY = "fay:" + U
RES = "terminal:" + U + "/sim/gps"
CRED = {"type": "descriptor_ref", "descriptor_id": U}
AUTH = {"result": "granted", "resource_id": RES, "access_mode": "read", "session_id": U, "granted_modes": ["read"],
        "expires_at": 1800000000, "heartbeat_interval_ms": 1000, "heartbeat_timeout_ms": 5000}
SESSION = {"session_id": U, "fay_id": FAY, "resource_id": RES, "access_mode": "read", "granted_modes": ["read"],
           "state": "active", "suspended": False, "created_at": 1, "last_heartbeat_at": 2, "expires_at": 3,
           "credential_ref": {"type": "descriptor", "id": U, "not_after": 3}}
SAMPLES = {
    "AuthRequest": {"fay_id": FAY, "resource_id": RES, "access_mode": "read", "credential": CRED, "wait_ms": 10},
    "AuthResult": AUTH,
    "Error": {"error_code": "E_INTERNAL", "error_message": "x"},
    "FayTerminated": {"fay_id": FAY},
    "HandoverOffered": {"handover_id": U, "session_id": U, "resource_id": RES, "to_fay_id": FAY,
                        "access_mode": "write", "timeout_ms": 500},
    "HandoverRequest": {"resource_id": RES, "to_fay_id": FAY, "access_mode": "write",
                        "credential": {"type": "ticket", "ticket": "a.b.c"}, "timeout_ms": 500},
    "HandoverResponse": {"handover_id": U, "accept": True},
    "HandoverResponseAck": {"handover_id": U},
    "HandoverResult": {k: v for k, v in dict(AUTH, result="completed", handover_id=U).items() if k != "access_mode"},
    "Heartbeat": {"session_ids": [U, U]},
    "HeartbeatAck": {"alive": [U], "unknown": ["anything"]},
    "ResourceCommand": {"session_id": U, "op": 1, "args": "AAE"},
    "ResourceCommandResult": {"session_id": U, "op": 1, "data": "AAE"},
    "SessionList": {"sessions": [SESSION]},
    "SessionQuery": {"session_id": U},
    "SessionRelease": {"session_id": U},
    "SessionReleased": {"session_id": U},
    "SessionStateChanged": {"session_id": U, "state": "terminated", "previous_state": "terminating",
                            "reason": "released", "suspended": False},
    "SessionsReleased": {"session_ids": [U]},
}


def message(mtype):
    return protocol.make(mtype, copy.deepcopy(SAMPLES[mtype]), "rtA", U)


FULL = jsonschema.Draft202012Validator(schema())


def verdicts(msg):
    full = FULL
    try:
        protocol.validate(msg)
        ours = True
    except protocol.BadMessage:
        ours = False
    return ours, full.is_valid(msg)


def test_every_message_type_has_a_valid_sample():
    assert set(SAMPLES) == set(protocol.message_types())
    for mtype in SAMPLES:
        assert verdicts(message(mtype)) == (True, True), mtype


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2 ** 54), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=70),
                    st.sampled_from([U, FAY, RES, "read", "write", "active", "E_X", "", "ticket", "descriptor_ref",
                                     1, 0, -1, 1.0, 2.5, 600001, True]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.sampled_from(
                                                            ["type", "ticket", "descriptor_id", "x", "session_id"]),
                                                            inner, max_size=3)), max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=examples(600), deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_compiled_checks_agree_with_jsonschema(mtype, data):
    msg = message(mtype)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(msg) if p]
        path = data.draw(st.sampled_from(paths))
        parent = msg
        for k in path[:-1]:
            parent = parent[k]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["extra", "session_id", "wait_ms", "args", "version"]))] = data.draw(values)
        if not isinstance(msg, dict) or "message_type" not in msg or "body" not in msg:
            break
    msg = json.loads(json.dumps(msg))
    ours, reference = verdicts(msg)
    assert ours == reference, msg


def test_pattern_dollar_is_the_end_of_input():
    msg = message("SessionRelease")
    msg["body"]["session_id"] = U + "\n"
    assert FULL.is_valid(msg)                  # Python's re lets $ match before a final newline...
    assert verdicts(msg)[0] is False           # ...ECMA-262, and jsonschema-rs, do not


def _edit(mtype, fn):
    msg = message(mtype)
    fn(msg)
    return msg


EDGES = [
    ("Heartbeat", lambda m: m["body"].update(session_ids=[U] * 1024)),
    ("Heartbeat", lambda m: m["body"].update(session_ids=[U] * 1025)),
    ("ResourceCommand", lambda m: m["body"].update(args="A" * 200)),
    ("ResourceCommand", lambda m: m["body"].update(args="A" * 201)),
    ("ResourceCommand", lambda m: m["body"].update(op=True)),
    ("ResourceCommand", lambda m: m["body"].update(op=1.0)),
    ("ResourceCommand", lambda m: m["body"].update(op=255)),
    ("ResourceCommand", lambda m: m["body"].update(op=256)),
    ("AuthRequest", lambda m: m["body"].update(wait_ms=600000)),
    ("AuthRequest", lambda m: m["body"].update(wait_ms=600001)),
    ("AuthRequest", lambda m: m["body"].update(resource_id=RES + "x" * (256 - len(RES)))),
    ("AuthRequest", lambda m: m["body"].update(resource_id=RES + "x" * (257 - len(RES)))),
    ("AuthRequest", lambda m: m["body"]["credential"].update(descriptor_id="d" * 64)),
    ("AuthRequest", lambda m: m["body"]["credential"].update(descriptor_id="d" * 65)),
    ("AuthRequest", lambda m: m["body"].update(credential={"type": "ticket", "descriptor_id": U})),
    ("HandoverRequest", lambda m: m["body"].update(timeout_ms=99)),
    ("HandoverRequest", lambda m: m["body"].update(timeout_ms=100)),
    ("SessionQuery", lambda m: m.update(timestamp=2 ** 53 - 1)),
    ("SessionQuery", lambda m: m.update(timestamp=2 ** 53)),
    ("SessionQuery", lambda m: m.update(sender_id="")),
    ("SessionQuery", lambda m: m.update(sender_id="r" * 257)),
    ("SessionQuery", lambda m: m.update(version=True)),
    ("SessionStateChanged", lambda m: m["body"].update(state="paused")),
    ("SessionStateChanged", lambda m: m["body"].update(reason="Not A Reason")),
]


def test_edges_agree_with_jsonschema():
    for mtype, fn in EDGES:
        msg = json.loads(json.dumps(_edit(mtype, fn)))
        ours, reference = verdicts(msg)
        assert ours == reference, (mtype, msg["body"])
