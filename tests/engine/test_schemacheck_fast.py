"""schemacheck's generated predicate against its error-reporting closures: the same verdict on
every value, for every part of the shipped schema. (The closures are held to jsonschema by
test_schema.py; a predicate that wrongly said yes would let a bad message through unnamed.)"""

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from capwarden.engine import protocol, schemacheck

U = "01927b34-7e21-7c4d-a89f-1234567890ab"


def _schema():
    with open(protocol.schema_path()) as f:
        schema = json.load(f)
    defs = schema["$defs"]
    envelope = {k: v for k, v in schema.items() if k not in ("allOf", "$defs")}
    return dict(defs, _envelope=envelope), defs


PARTS, DEFS = _schema()
CHECKS = {name: (schemacheck.compile_predicate(node, DEFS), schemacheck._compile(node, DEFS))
          for name, node in PARTS.items()}


def _slow_verdict(slow, v):
    try:
        slow(v, "")
        return True
    except schemacheck.Invalid:
        return False


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2 ** 54), st.floats(),           # NaN and infinities too
    st.sampled_from([0, 1, -1, 1.0, 0.5, 600000, 600001, 1024, 1025, True, False, "", "read", "execute",
                     "granted", "descriptor_ref", "ticket", "terminated", U, "fay:" + U, "terminal:%s/sim/gps" % U,
                     U + "\n", "fay:" + U.upper(), "E_INTERNAL", "x" * 257, "AuthRequest", "A" * 200]),
    st.text(max_size=40))
keys = st.sampled_from(["type", "ticket", "descriptor_id", "session_id", "session_ids", "fay_id", "resource_id",
                        "access_mode", "credential", "wait_ms", "op", "args", "state", "result", "body", "version",
                        "message_id", "message_type", "timestamp", "sender_id", "extra", "alive", "unknown"])
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(keys, inner, max_size=6)), max_leaves=12)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(PARTS)), values)
def test_predicate_and_closures_agree_on_random_values(part, value):
    fast, slow = CHECKS[part]
    assert fast(value) == _slow_verdict(slow, value), (part, value)


SAMPLE = {"fay_id": "fay:" + U, "resource_id": "terminal:%s/sim/gps" % U, "access_mode": "read",
          "credential": {"type": "descriptor_ref", "descriptor_id": U}, "wait_ms": 10}


@settings(max_examples=800, deadline=None)
@given(st.data())
def test_predicate_and_closures_agree_on_mutated_messages(data):
    msg = protocol.make(data.draw(st.sampled_from(["AuthRequest", "Heartbeat", "ResourceCommand"])), {}, "rtA", U)
    msg["body"] = {"AuthRequest": dict(SAMPLE, credential=dict(SAMPLE["credential"])),
                   "Heartbeat": {"session_ids": [U, U]},
                   "ResourceCommand": {"session_id": U, "op": 1, "args": "AAE"}}[msg["message_type"]]
    mtype = msg["message_type"]
    for _ in range(data.draw(st.integers(0, 3))):
        body = msg.get("body")
        dicts = [msg] + ([body] + [v for v in body.values() if isinstance(v, dict)] if isinstance(body, dict) else [])
        target = data.draw(st.sampled_from(dicts))
        key = data.draw(st.sampled_from(sorted(target) + ["extra"]))
        if data.draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = data.draw(values)
    for part, value in (("_envelope", msg), (mtype, msg.get("body"))):
        fast, slow = CHECKS[part]
        assert fast(value) == _slow_verdict(slow, value), (part, value)


def test_edges_the_random_values_may_miss():
    fast, slow = CHECKS["AuthRequest"]
    for wait in (0, 600000, 600001, -1, 1.0, 2.5, math.nan, math.inf, True, "1"):
        v = dict(SAMPLE, wait_ms=wait)
        assert fast(v) == _slow_verdict(slow, v), wait
    fast, slow = CHECKS["_envelope"]
    for version in (1, 1.0, True, 2, "1"):
        v = protocol.make("SessionQuery", {}, "rtA")
        v["version"] = version
        assert fast(v) == _slow_verdict(slow, v), version


def test_a_recursive_reference_compiles_and_checks_at_every_depth():
    defs = {"T": {"type": "object", "additionalProperties": False,
                  "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}},
                                 "n": {"type": "integer", "minimum": 0}}}}
    valid = schemacheck.compile_predicate({"$ref": "#/$defs/T"}, defs)
    assert valid({"kids": [{"kids": [{"n": 3}]}]})
    assert not valid({"kids": [{"kids": [{"n": -3}]}]}) and not valid({"kids": [{"kids": [{"x": 1}]}]})


def _nodes(node):
    yield node
    for sub in node.get("properties", {}).values():
        yield from _nodes(sub)
    if "items" in node:
        yield from _nodes(node["items"])
    for sub in node.get("oneOf", []):
        yield from _nodes(sub)


def _boundaries(node):
    out = [None, True, 0, "", [], {}]
    prefixes = ["", "terminal:%s/" % U, "fay:" + U]
    for key in ("minLength", "maxLength"):
        if key in node:
            n = node[key]
            out += [p + "a" * (k - len(p)) for p in prefixes for k in (n - 1, n, n + 1) if k >= len(p)]
    for key in ("minimum", "maximum"):
        if key in node:
            m = node[key]
            out += [m - 1, m, m + 1, m - 0.5, m + 0.5, float(m), math.nan, math.inf, -math.inf]
    if "maxItems" in node:
        n = node["maxItems"]
        out += [[U] * n, [U] * (n + 1), [0] * n]
    return out


def test_predicate_and_closures_agree_at_every_bound_of_every_node():
    checked = 0
    for part in PARTS.values():
        for node in _nodes(part):
            fast, slow = schemacheck.compile_predicate(node, DEFS), schemacheck._compile(node, DEFS)
            for v in _boundaries(node):
                assert fast(v) == _slow_verdict(slow, v), (node, v)
                checked += 1
    assert checked > 500
