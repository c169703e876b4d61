"""The "handover" section of the engine's config file (policyconfig.py): the example in
docs/engine.md loads as written, mistakes are refused with what is wrong, and `capwarden serve`
applies it (STORE/engine.json)."""

import json
import os
import re

import pytest

from capwarden.engine import config, policyconfig
from capwarden.engine.policy import PolicyTable
from capwarden.errors import UsageError
from enginerig import Served, refusal, runtime
from policyrig import take

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TERMINAL = "terminal:01920000-0000-7000-8000-00000000000a"


def doc_example():
    with open(os.path.join(ROOT, "docs", "engine.md")) as f:
        text = f.read()
    section = text[text.index("## Handover policies"):]
    return json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))


def write(tmp_path, obj):
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(obj))
    os.chmod(path, 0o600)
    return str(path)


def test_the_documented_example_loads_and_maps_resources(tmp_path):
    conf = config.load(write(tmp_path, doc_example()))
    table = PolicyTable(conf.handover, TERMINAL)
    kinds = {name: table.for_resource(TERMINAL + "/sim/" + name).kind
             for name in ("motor_left", "gps", "camera", "led")}
    assert kinds == {"motor_left": "priority", "gps": "model", "camera": "human", "led": "consent"}
    p = table.for_resource(TERMINAL + "/sim/motor_left")
    assert p.retry == policyconfig.Retry("auto", 2, 50) and p.timeout_ms == 2000 and p.rule_name == "medical"
    assert table.urgency("fay:01920000-0000-7000-8000-000000000002", 10) == 3       # capped
    assert table.urgency("fay:01920000-0000-7000-8000-00000000000f", 10) == 0       # not listed
    assert table.fay("fay:01920000-0000-7000-8000-000000000001").role == "emergency"


def test_no_section_is_consent_everywhere(tmp_path):
    conf = config.load(write(tmp_path, {}))
    assert PolicyTable(conf.handover, TERMINAL).for_resource(TERMINAL + "/sim/motor_left").kind == "consent"


def test_a_pattern_of_another_terminal_does_not_match():
    s = policyconfig.parse({"policies": [{"resource": "terminal:01920000-0000-7000-8000-00000000000b/**",
                                          "policy": "priority"}]})
    assert PolicyTable(s, TERMINAL).for_resource(TERMINAL + "/sim/gps").kind == "consent"


@pytest.mark.parametrize("bad, says", [
    ({"policies": [{"resource": "sim/motor_*", "policy": "priority"}]}, "misplaced '*'"),
    ({"policies": [{"resource": "**/x", "policy": "priority"}]}, "'**' may only be the last"),
    ({"policies": [{"resource": "sim/gps", "policy": "vote"}]}, "one of consent, priority, model, human"),
    ({"policies": [{"resource": "sim/gps", "policy": "priority", "rule": "[1].map(x, x)[0]"}]}, "macros"),
    ({"policies": [{"resource": "sim/gps", "policy": "priority", "rule": "secret + 1"}]}, "names secret"),
    ({"policies": [{"resource": "sim/gps", "policy": "priority", "rule": "role.matches('x') ? 1 : 0"}]},
     "uses matches"),
    ({"policies": [{"resource": "sim/gps", "policy": "priority", "rule": "urgency +"}]}, "not a valid CEL"),
    ({"policies": [{"resource": "sim/gps", "policy": "priority", "rule": "1 + " * 300 + "1"}]}, "the limit is 1024"),
    ({"policies": [{"resource": "sim/gps", "policy": "consent", "retry": {"strategy": "auto"}}]}, "no retry"),
    ({"policies": [{"resource": "sim/gps", "policy": "priority", "retry": {"strategy": "auto", "attempts": 99}}]},
     "attempts 0..10"),
    ({"policies": [{"resource": "sim/gps", "policy": "human", "timeout_ms": 0}]}, "timeout_ms"),
    ({"fays": {"fay:nope": {"role": "x"}}}, "not a Fay id"),
    ({"fays": {"fay:01920000-0000-7000-8000-000000000001": {"max_urgency": 11}}}, "max_urgency"),
    ({"model": {"deadline_ms": 0}}, "deadline_ms"),
    ({"colour": "red"}, "an object with only"),
])
def test_mistakes_are_refused_with_what_is_wrong(tmp_path, bad, says):
    with pytest.raises(UsageError) as exc:
        config.load(write(tmp_path, {"handover": bad}))
    assert says in str(exc.value) and "\"handover\"" in str(exc.value)


def test_serve_applies_the_section_from_the_store(world, run):
    with open(os.path.join(world.store, "engine.json"), "w") as f:
        json.dump({"handover": {"fays": {world.B: {"role": "emergency"}},
                                "policies": [{"resource": "sim/motor_left", "policy": "priority",
                                              "rule": "role == 'emergency' ? 10 : 1"}]}}, f)
    os.chmod(os.path.join(world.store, "engine.json"), 0o600)
    served = Served(world)

    async def scenario():
        a, b = await runtime(served, "rtA"), await runtime(served, "rtB")
        sa = await take(world, a, "motor_left", "write", "A")
        sb = await take(world, b, "motor_left", "write", "B")
        assert await sa.ended(5) == "preempted" and sb.state == "active"
        assert await refusal(take(world, a, "motor_left", "write", "A")) == "E_RESOURCE_BUSY"
        await a.close()
        await b.close()

    try:
        run(scenario())
    finally:
        served.stop()
