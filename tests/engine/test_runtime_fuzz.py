"""Issue 9 defect 6 (runtime part): the runtime JSON parser and the engine behind it refuse, they
never crash.

Deeply nested JSON used to raise RecursionError and drop the runtime's connection with no
answer. Now every frame is either a valid ProtocolMessage or a BadMessage with an S2 code, and
every parsed request gets one final answer that matches the shipped schema and is not
E_INTERNAL. Random text, byte-level mutations and structural mutations of valid messages, with
hypothesis (the project's profile sets how many).
"""

import asyncio
import copy
import json
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from capshared.errors import CODE
from capwarden.engine import invariants, protocol
from capwarden.engine.routes import ROUTES
from tableboard import Rig

S2_CODES = {n for n in CODE if not n.startswith("E_DEV_")} - {"E_INTERNAL"}
U = "01927b34-7e21-7c4d-a89f-1234567890ab"
FINAL = {t: route.response for t, route in ROUTES.items()}

_LOOP = asyncio.new_event_loop()
_RIG = []


def rig():
    """One engine for every example (a World per example would be slow), on one event loop."""
    if not _RIG:
        _RIG.append(Rig(tempfile.mkdtemp(prefix="capwarden-fuzz-")))
    return _RIG[0]


def samples(r):
    w = r.w
    sid = U
    return [
        {"fay_id": w.A, "resource_id": w.res("gps"), "access_mode": "read", "credential": w.cred(w.dA), "wait_ms": 0},
        {"session_ids": [sid]},
        {"session_id": sid},
        {"fay_id": w.A},
        {},
        {"resource_id": w.res("motor_left"), "to_fay_id": w.B, "access_mode": "write",
         "credential": {"type": "ticket", "ticket": "a.b.c"}, "timeout_ms": 50},
        {"handover_id": sid, "accept": True},
        {"session_id": sid, "op": 1, "args": "AAE"},
    ], ["AuthRequest", "Heartbeat", "SessionRelease", "FayTerminated", "SessionQuery", "HandoverRequest",
        "HandoverResponse", "ResourceCommand"]


def sample_frame(which):
    """The frame of valid request number `which` (0 to 7) of samples()."""
    bodies, types = samples(rig())
    return protocol.dumps(protocol.make(types[which], bodies[which], "rtA"))


def check_frame(text):
    """Parse one frame; a parsed request is handled by the engine. Only defined outcomes."""
    try:
        msg = protocol.parse(text)
    except protocol.BadMessage as exc:
        assert exc.code in ("E_MALFORMED_REQUEST", "E_UNSUPPORTED_VERSION"), exc
        return None
    r = rig()
    reply = _LOOP.run_until_complete(asyncio.wait_for(r.e.handle("rtA", msg), 30))
    protocol.validate(reply)                                # every answer matches the shipped schema
    if msg["message_type"] in FINAL and msg["sender_id"] == "rtA":
        assert reply["message_type"] in (FINAL[msg["message_type"]], "Error"), reply
    else:
        assert reply["message_type"] == "Error", reply
    assert reply["correlation_id"] == msg["message_id"]
    if reply["message_type"] == "Error":
        assert reply["body"]["error_code"] in S2_CODES, reply
    return reply


@settings(deadline=None)
@given(st.text())
def test_issue9_6_random_text_is_refused_or_served(text):
    check_frame(text)


@settings(deadline=None)
@given(st.integers(0, 7), st.data())
def test_issue9_6_byte_mutations_of_valid_requests(which, data):
    text = sample_frame(which)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "nest"]))
        if op == "nest":
            n = data.draw(st.sampled_from([1, 100, 1000, 5000, 100000]))
            text = text[:i] + data.draw(st.sampled_from(["[", "{\"a\":"])) * n + text[i:]
        elif op == "insert":
            text = text[:i] + data.draw(st.text(min_size=1, max_size=4)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + data.draw(st.integers(1, 8)):]
        else:
            text = text[:i] + data.draw(st.sampled_from(list('{}[]",:0-e.\\ntfu'))) + text[i + 1:]
    check_frame(text)


@settings(deadline=None)
@given(st.integers(0, 7), st.data())
def test_issue9_6_nesting_at_a_value_position(which, data):
    text = sample_frame(which)
    at = [i + 1 for i, ch in enumerate(text) if ch in ":,["]          # where a value starts (or inside a string)
    i = data.draw(st.sampled_from(at))
    depth = data.draw(st.sampled_from([2, 500, 990, 1010, 5000, 100000]))
    opener = data.draw(st.sampled_from(["[", '{"k":', "[{\"a\":"]))
    closer = {"[": "]", '{"k":': "}", "[{\"a\":": "}]"}[opener] * depth if data.draw(st.booleans()) else ""
    check_frame(text[:i] + opener * depth + data.draw(st.sampled_from(["0", '""', "null"])) + closer + text[i:])


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 64, 2 ** 64), st.floats(), st.text(max_size=40),
                    st.sampled_from([U, "read", "write", "ticket", "descriptor_ref", "rtA", 1, 0, -1, 1e308]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=10)


@settings(deadline=None)
@given(st.integers(0, 7), st.data())
def test_issue9_6_structural_mutations_of_valid_requests(which, data):
    bodies, types = samples(rig())
    msg = copy.deepcopy(protocol.make(types[which], bodies[which], "rtA"))
    target = data.draw(st.sampled_from(["envelope", "body"]))
    obj = msg if target == "envelope" else msg["body"]
    key = data.draw(st.sampled_from(sorted(obj) + ["extra"]))
    action = data.draw(st.sampled_from(["replace", "delete", "deep"]))
    if action == "delete":
        obj.pop(key, None)
    elif action == "replace":
        obj[key] = data.draw(values)
    else:
        deep = data.draw(scalars)
        for _ in range(data.draw(st.sampled_from([10, 500, 950, 2000]))):
            deep = [deep]
        obj[key] = deep
    try:
        text = json.dumps(msg, allow_nan=data.draw(st.booleans()))
    except (ValueError, RecursionError):
        return                                             # not a frame anyone can send
    check_frame(text)


def test_issue9_6_deep_nesting_gets_an_error_and_keeps_the_connection(world, served, client, run):
    from capwarden.engine import audit
    import os

    a = client("rtA")

    async def scenario():
        await a.send_raw("[" * 100000)
        await a.send_raw('{"version": 1, "body": ' + "[" * 3000 + "]" * 3000 + "}")
        for _ in range(200):
            if len([p for p in a.pushes if p["message_type"] == "Error"]) >= 2:
                break
            await asyncio.sleep(0.05)
        errors = [p for p in a.pushes if p["message_type"] == "Error"]
        assert [e["body"]["error_code"] for e in errors] == ["E_MALFORMED_REQUEST"] * 2, a.pushes
        assert (await a.request("SessionQuery", {}))["sessions"] == []   # the connection still serves

    run(scenario())
    entries, problem = audit.read(os.path.join(world.store, "audit.log"))
    assert problem is None
    assert len([e for e in entries if e["action"] == "deny" and e["reason"] == "E_MALFORMED_REQUEST"]) >= 2


def teardown_module():
    if _RIG:
        assert invariants.check_engine(_RIG[0].e) == []
        assert invariants.check_audit(_RIG[0].audit_path) == []
    _LOOP.close()
