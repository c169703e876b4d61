"""Priority rules (blueprint 2.4, policy type 1): a CEL expression computes a candidate's score.

A rule is one CEL (Common Expression Language) expression over these variables, and nothing
else (a rule naming another is refused when the configuration is read):

    role           string  the Fay's role, from the engine configuration (policyconfig.py)
    urgency        int     0..URGENCY_MAX: what the runtime claimed, capped per Fay by configuration
    resource_type  string  the resource's class as the board reports it (motor, camera, led, ...)
    resource       string  the resource's name on its board (motor_left)
    mode           string  the access mode asked for (read, write, execute, configure)
    holder         bool    true for the party holding the resource now

It must yield a number: the score. Highest wins; a tie keeps the holder (policy.py).

Safe to evaluate: CEL has no file, network or process access, no loops and no user functions.
We evaluate it with `cel` (common-expression-language, a Rust interpreter; docs/engine.md
DECISIONS for the figures against cel-python) and add what the library does not bound itself:

- size: at most MAX_RULE_CHARS characters, and only the functions in FUNCTIONS (arithmetic,
  comparison, logic, the conditional, a few string tests);
- cost: no comprehension macros (map, filter, all, exists, exists_one): without them the work
  of an evaluation is bounded by the expression's size, and so is its memory (the inputs are
  scalars of bounded size);
- time: each evaluation's CPU time (the thread's clock: another process taking the core does
  not count against the rule) is measured; one over its budget (default BUDGET_US) counts as
  deny, as does one that fails (division by zero, a type error, a result that is not a number).
  The budget is a backstop: the static limits already bound the work. A Rust evaluation
  cannot be interrupted, so an over-budget rule is denied after it ran, not stopped.

A rule that breaks any of the static limits is refused when the configuration is read
(RuleError, a UsageError); one that fails when evaluated answers None: deny, holder kept
(faults.md 58).
"""

import math
import re
import time

from capwarden.errors import UsageError

URGENCY_MAX = 10
MAX_RULE_CHARS = 1024
BUDGET_US = 1000           # CPU time; an evaluation over it counts as deny (p99 here is ~5 us)
VARIABLES = ("role", "urgency", "resource_type", "resource", "mode", "holder")
# Operators (as CEL names their overloads) and the few functions a score needs.
FUNCTIONS = frozenset((
    "_+_", "_-_", "_*_", "_/_", "_%_", "-_", "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "_&&_", "_||_",
    "!_", "_?_:_", "_[_]", "@in", "in", "size", "startsWith", "endsWith", "contains", "int", "double"))
_MACRO = re.compile(r"\b(map|filter|all|exists|exists_one)\s*\(")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


class RuleError(UsageError):
    """A rule that cannot be used: not CEL, too large, a forbidden function or variable."""


def _engine():
    try:
        import cel     # common-expression-language; imported when a rule is first read
    except ImportError as exc:
        raise RuleError("priority rules need the common-expression-language package (pip install "
                        "common-expression-language): %s" % exc) from None
    return cel


class Rule:
    """A compiled priority rule. `score(inputs)` -> (number, "") or (None, why): deny."""

    def __init__(self, source, name="rule", budget_us=BUDGET_US, clock=time.thread_time_ns):
        if not isinstance(source, str) or not source.strip():
            raise RuleError("rule %s: a CEL expression (a non-empty string)" % name)
        if len(source) > MAX_RULE_CHARS:
            raise RuleError("rule %s: %d characters, the limit is %d" % (name, len(source), MAX_RULE_CHARS))
        if _MACRO.search(_STRING.sub('""', source)):
            raise RuleError("rule %s: comprehension macros (map, filter, all, exists) are not allowed: their "
                            "cost is not bounded by the rule's size" % name)
        try:
            self.program = _engine().compile(source)
        except (ValueError, RuntimeError) as exc:
            raise RuleError("rule %s is not a valid CEL expression: %s" % (name, exc)) from None
        refs = self.program.references()
        bad_fn = sorted(set(refs["functions"]) - FUNCTIONS)
        if bad_fn:
            raise RuleError("rule %s uses %s; allowed: arithmetic, comparison, logic, ?:, in, size, startsWith, "
                            "endsWith, contains, int, double" % (name, ", ".join(bad_fn)))
        bad_var = sorted(set(refs["variables"]) - set(VARIABLES))
        if bad_var:
            raise RuleError("rule %s names %s; a rule sees only %s" % (name, ", ".join(bad_var), ", ".join(VARIABLES)))
        if not isinstance(budget_us, (int, float)) or not 0 < budget_us <= 100000:
            raise RuleError("rule %s: the evaluation budget is 1..100000 us" % name)
        self.source = source
        self.name = name
        self.budget_ns = int(budget_us * 1000)
        self.clock = clock
        try:
            # The first run's set-up, so that it is not timed against the budget later.
            self.program.execute(inputs("default", 0, "other", "r", "read", False))
        except Exception:  # the library raises several types; the rule is judged when it is used
            pass

    def score(self, inputs):
        """(score, "") or (None, why) for one candidate; never raises."""
        t0 = self.clock()
        try:
            value = self.program.execute(inputs)
        except Exception as exc:  # the library raises several types; any failure is a deny
            return None, "rule %s failed: %s" % (self.name, str(exc)[:120])
        spent = self.clock() - t0
        if spent > self.budget_ns:
            return None, "rule %s ran %d us, over its budget of %d us" % (self.name, spent // 1000,
                                                                        self.budget_ns // 1000)
        if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
            return None, "rule %s gave %s, not a number" % (self.name, type(value).__name__)
        return value, ""


def inputs(role, urgency, resource_type, resource, mode, holder):
    """The variables of one candidate (the one place that builds them: rules, ranker, bench)."""
    return {"role": role, "urgency": urgency, "resource_type": resource_type, "resource": resource,
            "mode": mode, "holder": holder}


def cap_urgency(claimed, cap):
    """A runtime's claimed urgency is input, not authority: clamped to 0..min(cap, URGENCY_MAX)."""
    if type(claimed) is not int:
        claimed = 0
    return max(0, min(claimed, cap, URGENCY_MAX))
