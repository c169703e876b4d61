"""The "handover" section of the engine's config file: a handover policy per resource
(blueprint 2.4), the Fays' roles and urgency caps, the priority rules and the ranking model.

    "handover": {
      "policies": [
        {"resource": "sim/motor_left", "policy": "priority", "rule": "medical", "timeout_ms": 2000,
         "retry": {"strategy": "auto", "attempts": 2, "backoff_ms": 50}},
        {"resource": "sim/camera", "policy": "human", "timeout_ms": 10000, "retry": {"strategy": "person"}},
        {"resource": "sim/gps", "policy": "model", "rule": "medical"},
        {"resource": "**", "policy": "consent"}
      ],
      "rules": {"medical": "(role == 'emergency' ? 100 : 10) + urgency"},
      "fays": {"fay:0192...": {"role": "emergency", "max_urgency": 8}},
      "default_role": "default", "default_max_urgency": 0,
      "model": {"path": "ranker.onnx", "deadline_ms": 2}
    }

`resource` is a resource pattern (supplement S2) without the Terminal_ID ("BOARD/RESOURCE",
"*" one segment, "**" last), or with it. The first policy whose pattern matches decides; a
resource no policy names gets `consent` (the behaviour before issue 15). `rule` is a name in
"rules" or a CEL expression itself (rules.py). Roles come from this file only (docs/engine.md
"Handover policies"): a Fay not listed has `default_role` and may claim no more urgency than
`default_max_urgency`.
"""

import os
from collections import namedtuple

from capwarden.credentials import patterns
from capwarden.credentials.ids import FAY_RE
from capwarden.engine import rules
from capwarden.engine.decisions import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS
from capwarden.errors import UsageError

POLICIES = ("consent", "priority", "model", "human")
STRATEGIES = ("none", "auto", "person")
DEFAULT_TIMEOUT = {"consent": None, "priority": 2000, "model": 2000, "human": DEFAULT_TIMEOUT_MS}
MAX_ATTEMPTS = 10                  # automatic retries after the first try
MAX_BACKOFF_MS = 10000
DEFAULT_RULE = "urgency"           # the score when a policy names no rule: the capped urgency
DEFAULT_DEADLINE_MS = 2.0          # the model's hard deadline (issue 15 item 3)
_ANY_TERMINAL = "terminal:00000000-0000-7000-8000-000000000000"

Retry = namedtuple("Retry", "strategy attempts backoff_ms")
Policy = namedtuple("Policy", "pattern kind timeout_ms retry rule rule_name")
Settings = namedtuple("Settings", "policies fays default_role default_max_urgency model_path deadline_ms")
FayPolicy = namedtuple("FayPolicy", "role max_urgency")

NO_RETRY = Retry("none", 0, 0)
CONSENT = Policy(None, "consent", None, NO_RETRY, None, None)


def default():
    """The settings of no "handover" section: consent everywhere."""
    return Settings((), {}, "default", 0, None, DEFAULT_DEADLINE_MS)


def _need(cond, where, what):
    if not cond:
        raise UsageError("%s: %s" % (where, what))


def _int(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def parse(obj, where="\"handover\"", base_dir=None, clock=None):
    """Settings from the section's JSON object. Raises UsageError (a RuleError is one) saying
    what is wrong and where."""
    if obj is None:
        return default()
    keys = {"policies", "rules", "fays", "default_role", "default_max_urgency", "model"}
    _need(isinstance(obj, dict) and not set(obj) - keys, where, "an object with only " + ", ".join(sorted(keys)))
    named = obj.get("rules", {})
    _need(isinstance(named, dict) and all(isinstance(v, str) for v in named.values()), where,
          "\"rules\" maps a rule name to a CEL expression")
    compiled = {}

    def rule(ref, at):
        source = named.get(ref, ref)
        if source not in compiled:
            kw = {"clock": clock} if clock is not None else {}
            compiled[source] = rules.Rule(source, ref if ref in named else at, **kw)
        return compiled[source]

    fays = {}
    raw_fays = obj.get("fays", {})
    _need(isinstance(raw_fays, dict), where, "\"fays\" maps Fay ids to {\"role\", \"max_urgency\"}")
    for fay, f in raw_fays.items():
        at = "%s: fay %s" % (where, fay)
        _need(FAY_RE.match(fay), at, "not a Fay id (fay: + UUID)")
        _need(isinstance(f, dict) and not set(f) - {"role", "max_urgency"}, at, "{\"role\", \"max_urgency\"}")
        role = f.get("role", "default")
        _need(isinstance(role, str) and 0 < len(role) <= 64, at, "\"role\" is a name of 1..64 characters")
        cap = f.get("max_urgency", rules.URGENCY_MAX)
        _need(_int(cap, 0, rules.URGENCY_MAX), at, "\"max_urgency\" is 0..%d" % rules.URGENCY_MAX)
        fays[fay] = FayPolicy(role, cap)
    default_role = obj.get("default_role", "default")
    _need(isinstance(default_role, str) and 0 < len(default_role) <= 64, where, "\"default_role\" is a name")
    default_cap = obj.get("default_max_urgency", 0)
    _need(_int(default_cap, 0, rules.URGENCY_MAX), where, "\"default_max_urgency\" is 0..%d" % rules.URGENCY_MAX)
    model = obj.get("model", {})
    _need(isinstance(model, dict) and not set(model) - {"path", "deadline_ms"}, where,
          "\"model\" is {\"path\", \"deadline_ms\"}")
    path = model.get("path")
    _need(path is None or isinstance(path, str), where, "\"model\": \"path\" is a file name")
    if path is not None and base_dir and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    deadline = model.get("deadline_ms", DEFAULT_DEADLINE_MS)
    _need(type(deadline) in (int, float) and 0 < deadline <= 1000, where, "\"model\": \"deadline_ms\" is 0..1000")
    policies = []
    raw = obj.get("policies", [])
    _need(isinstance(raw, list), where, "\"policies\" is a list of {\"resource\", \"policy\", ...}")
    for i, p in enumerate(raw):
        at = "%s: policies[%d]" % (where, i)
        _need(isinstance(p, dict) and not set(p) - {"resource", "policy", "timeout_ms", "retry", "rule"}, at,
              "an object with resource, policy, and optionally timeout_ms, retry, rule")
        policies.append(_policy(p, at, rule))
    return Settings(tuple(policies), fays, default_role, default_cap, path, float(deadline))


def _policy(p, at, rule):
    kind = p.get("policy")
    _need(kind in POLICIES, at, "\"policy\" is one of " + ", ".join(POLICIES))
    res = p.get("resource")
    _need(isinstance(res, str), at, "\"resource\" is a resource pattern")
    full = res if res.startswith("terminal:") else _ANY_TERMINAL + "/" + res
    try:
        terminal, segments = patterns.parse(full)
    except patterns.PatternError as exc:
        raise UsageError("%s: resource pattern %r: %s" % (at, res, exc)) from None
    pattern = (terminal if res.startswith("terminal:") else None, segments)
    timeout = p.get("timeout_ms", DEFAULT_TIMEOUT[kind])
    _need(timeout is None or _int(timeout, 1, MAX_TIMEOUT_MS), at, "\"timeout_ms\" is 1..%d" % MAX_TIMEOUT_MS)
    r = p.get("retry", {"strategy": "none"})
    _need(isinstance(r, dict) and not set(r) - {"strategy", "attempts", "backoff_ms"}
          and r.get("strategy") in STRATEGIES, at,
          "\"retry\" is {\"strategy\": none|auto|person, \"attempts\", \"backoff_ms\"}")
    attempts = r.get("attempts", 3 if r["strategy"] == "auto" else 0)
    backoff = r.get("backoff_ms", 50)
    _need(_int(attempts, 0, MAX_ATTEMPTS) and _int(backoff, 0, MAX_BACKOFF_MS), at,
          "\"retry\": attempts 0..%d, backoff_ms 0..%d" % (MAX_ATTEMPTS, MAX_BACKOFF_MS))
    _need(kind != "consent" or r["strategy"] == "none", at,
          "a consent policy asks the holder: its refusal is final, so it takes no retry strategy")
    retry = Retry(r["strategy"], attempts if r["strategy"] == "auto" else 0, backoff)
    name = p.get("rule", DEFAULT_RULE)
    _need(isinstance(name, str), at, "\"rule\" names a rule or is a CEL expression")
    compiled = rule(name, "%s rule" % at) if kind in ("priority", "model") else None
    return Policy(pattern, kind, timeout, retry, compiled, name if compiled else None)


def matches(policy, terminal_id, resource_id):
    """Whether `policy`'s pattern covers `resource_id` on this terminal."""
    terminal, segments = policy.pattern
    rt, rsegs = patterns.split_resource(resource_id)
    return patterns.matches((terminal or terminal_id, segments), rt, rsegs)
