"""An authorizer's policy: what it may ask the issuers to sign (§4.2.1 items 2 and 3).

    {"fay_ids": ["fay:..."] or ["*"], "terminal_ids": ["terminal:..."] or ["*"],
     "grants": [{"resource_pattern": "PATH PATTERN", "modes": [...]}], "max_validity_s": N}

Policy patterns are resource patterns without their Terminal_ID ("camera/*", "**"): the
terminals are in terminal_ids, so one policy serves a fleet. A requested grant is within the
policy when every resource its pattern can match is matched by a policy pattern that lists the
mode (for each mode it asks). check() names the rule a request breaks.
"""

from capwarden.credentials import patterns
from capwarden.credentials.ids import FAY_RE, TERMINAL_RE
from capwarden.credentials.model import MODES
from capwarden.trust.errors import Forbidden, InvalidRequest

ANY = "*"
MAX_LIST = 10_000


class Policy:
    __slots__ = ("fay_ids", "terminal_ids", "grants", "max_validity_s", "_covered")

    def __init__(self, fay_ids, terminal_ids, grants, max_validity_s):
        self.fay_ids = tuple(fay_ids)
        self.terminal_ids = tuple(terminal_ids)
        self.grants = tuple((tuple(p), tuple(m)) for p, m in grants)   # (segments, modes)
        self.max_validity_s = max_validity_s
        # Grant tuples found within this policy's patterns: the issuers parse each distinct
        # grant list once (trust.issuance._grants), so a fleet's requests hit this. Bounded.
        self._covered = {}

    @classmethod
    def from_json(cls, obj):
        """A Policy from its JSON form. Raises InvalidRequest saying which field is wrong."""
        if type(obj) is not dict or set(obj) != {"fay_ids", "terminal_ids", "grants", "max_validity_s"}:
            raise InvalidRequest("a policy is {\"fay_ids\", \"terminal_ids\", \"grants\", \"max_validity_s\"}")
        fays = _ids(obj["fay_ids"], FAY_RE, "fay_ids")
        terminals = _ids(obj["terminal_ids"], TERMINAL_RE, "terminal_ids")
        grants = obj["grants"]
        if type(grants) is not list or not 1 <= len(grants) <= MAX_LIST:
            raise InvalidRequest("policy grants must be a list of 1..%d grants" % MAX_LIST)
        parsed = []
        for g in grants:
            if type(g) is not dict or set(g) != {"resource_pattern", "modes"}:
                raise InvalidRequest("a policy grant is {\"resource_pattern\", \"modes\"}")
            parsed.append((path_segments(g["resource_pattern"]), _modes(g["modes"])))
        v = obj["max_validity_s"]
        if type(v) is not int or v < 1:
            raise InvalidRequest("policy max_validity_s must be a positive integer")
        return cls(fays, terminals, [(p, m) for p, m in parsed], v)

    def to_json(self):
        return {"fay_ids": list(self.fay_ids), "terminal_ids": list(self.terminal_ids),
                "grants": [{"resource_pattern": "/".join(p), "modes": list(m)} for p, m in self.grants],
                "max_validity_s": self.max_validity_s}

    def check(self, fay_id, terminal_id, grants, valid_for_s):
        """Raise Forbidden naming the first rule the request breaks: the Fay, the terminal,
        each grant's resource and mode (§4.2.1 item 2), then the validity (item 3).
        grants: credentials.model.Grant objects already checked for shape."""
        if ANY not in self.fay_ids and fay_id not in self.fay_ids:
            raise Forbidden("policy rule fay_ids: this authorizer may not grant to %s" % fay_id)
        if ANY not in self.terminal_ids and terminal_id not in self.terminal_ids:
            raise Forbidden("policy rule terminal_ids: this authorizer may not grant on %s" % terminal_id)
        if not (type(grants) is tuple and grants in self._covered):
            for g in grants:
                _terminal, segs = g.parsed
                for mode in g.modes:
                    if not any(mode in modes and covers(p, segs) for p, modes in self.grants):
                        raise Forbidden("policy rule grants: %s with mode %s is beyond this authorizer's "
                                        "resource patterns" % (g.resource_pattern, mode))
            if type(grants) is tuple and len(self._covered) < 1024:
                self._covered[grants] = True
        if valid_for_s > self.max_validity_s:
            raise Forbidden("policy rule max_validity_s: %d s asked, at most %d s allowed"
                            % (valid_for_s, self.max_validity_s))


def path_segments(text):
    """The segments of a policy pattern (a resource pattern's part after the Terminal_ID).
    Raises InvalidRequest when it is not a valid pattern path."""
    if type(text) is not str:
        raise InvalidRequest("a policy resource_pattern is text")
    try:
        _t, segs = patterns.parse("terminal:00000000-0000-7000-8000-000000000000/" + text)
    except patterns.PatternError as exc:
        raise InvalidRequest("policy resource_pattern %r: %s" % (text, exc)) from None
    return segs


def covers(policy, asked):
    """Whether every resource path that segment pattern `asked` matches is matched by segment
    pattern `policy` ("*" one segment, "**" last: one or more)."""
    if policy and policy[-1] == "**":
        head = policy[:-1]
        # asked must always have at least len(head) + 1 segments; "**" in asked counts as one.
        if len(asked) < len(head) + 1:
            return False
    else:
        head = policy
        if len(asked) != len(policy) or (asked and asked[-1] == "**"):
            return False
    return all(p == "*" and a != "**" or p == a for p, a in zip(head, asked))


def _ids(value, regex, name):
    if type(value) is not list or not 1 <= len(value) <= MAX_LIST:
        raise InvalidRequest("policy %s must be a list of 1..%d ids, or [\"*\"]" % (name, MAX_LIST))
    for v in value:
        if v != ANY and (type(v) is not str or not regex.match(v)):
            raise InvalidRequest("policy %s: %r is not an id" % (name, v))
    return value


def _modes(value):
    if type(value) is not list or not value or any(m not in MODES for m in value):
        raise InvalidRequest("policy modes must be a non-empty list of %s" % ", ".join(MODES))
    return value
