"""Every part of the shipped schema (the envelope and each message body), compiled by
jsonschema-rs as capwarden.runtimeapi compiles the whole, against the jsonschema package on the
same part: the same verdict on random values, on mutated messages and at every bound of every
node. The reference here reads `pattern` as ECMA-262 does (`$` is the end of the input), as
jsonschema-rs does; test_schema.py shows the one place where plain jsonschema differs."""

import json
import math
import re

import jsonschema
import jsonschema_rs
from hypothesis import given, settings
from hypothesis import strategies as st

from capwarden import resources
from capwarden.engine import protocol
from capwarden.runtimeapi import schema
from hypo import examples

U = "01927b34-7e21-7c4d-a89f-1234567890ab"


def _ecma_pattern(validator, pattern, instance, _schema):
    ecma = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
    if validator.is_type(instance, "string") and not re.search(ecma, instance):
        yield jsonschema.ValidationError("%r does not match %r" % (instance, pattern))


Reference = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def _parts():
    s = schema()
    defs = s["$defs"]
    envelope = {k: v for k, v in s.items() if k not in ("allOf", "$defs")}
    return dict(defs, _envelope=envelope), defs


PARTS, DEFS = _parts()


def _pair(node):
    whole = dict(node, **{"$defs": DEFS})
    return jsonschema_rs.Draft202012Validator(whole), Reference(whole)


CHECKS = {name: _pair(node) for name, node in PARTS.items()}


def _agree(pair, value):
    compiled, reference = pair
    return compiled.is_valid(value) == reference.is_valid(value)


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


@settings(max_examples=examples(1500), deadline=None)
@given(st.sampled_from(sorted(PARTS)), values)
def test_compiled_and_reference_agree_on_random_values(part, value):
    assert _agree(CHECKS[part], value), (part, value)


SAMPLE = {"fay_id": "fay:" + U, "resource_id": "terminal:%s/sim/gps" % U, "access_mode": "read",
          "credential": {"type": "descriptor_ref", "descriptor_id": U}, "wait_ms": 10}


@settings(max_examples=examples(800), deadline=None)
@given(st.data())
def test_compiled_and_reference_agree_on_mutated_messages(data):
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
        assert _agree(CHECKS[part], value), (part, value)


def test_edges_the_random_values_may_miss():
    for wait in (0, 600000, 600001, -1, 1.0, 2.5, math.nan, math.inf, True, "1"):
        assert _agree(CHECKS["AuthRequest"], dict(SAMPLE, wait_ms=wait)), wait
    for version in (1, 1.0, True, 2, "1"):
        v = protocol.make("SessionQuery", {}, "rtA")
        v["version"] = version
        assert _agree(CHECKS["_envelope"], v), version


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


def test_compiled_and_reference_agree_at_every_bound_of_every_node():
    checked = 0
    for part in PARTS.values():
        for node in _nodes(part):
            pair = _pair(node)
            for v in _boundaries(node):
                assert _agree(pair, v), (node, v)
                checked += 1
    assert checked > 500


def test_the_validator_is_the_whole_schema_compiled_once():
    # What the engine and the SDK run is the shipped file itself, not a copy of parts of it.
    assert protocol.validator() is protocol.validator()
    with open(resources.schema_path()) as f:
        assert json.load(f) == schema()
