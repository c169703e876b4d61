"""Resource_IDs and resource patterns (chapter 2 sections 2.2.3 and 2.3.5, supplement S2).

A pattern is a Terminal_ID, "/", then segments split on "/". A segment is a literal
([A-Za-z0-9._-], but never "." or ".."), "*" (exactly one segment) or "**" (only last: one or
more segments). Anything else, empty segments included, makes the pattern malformed. Matching
is exact and anchored: no case folding, no percent-decoding, no Unicode normalisation.
"""

import re

from capwarden.credentials.ids import TERMINAL_RE

MAX_LEN = 256
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")
_PATH = re.compile(r"[A-Za-z0-9._\-/]+\Z")


class PatternError(ValueError):
    pass


def parse(pattern):
    """(terminal_id, segments) of a valid pattern. Raises PatternError saying what is wrong."""
    if type(pattern) is not str:
        raise PatternError("not a string")
    if not pattern or len(pattern) > MAX_LEN:
        raise PatternError("length must be 1..%d" % MAX_LEN)
    terminal, sep, rest = pattern.partition("/")
    if not sep or not TERMINAL_RE.match(terminal):
        raise PatternError("must start with a Terminal_ID and '/'")
    segments = rest.split("/")
    for i, s in enumerate(segments):
        if s == "**":
            if i != len(segments) - 1:
                raise PatternError("'**' may only be the last segment")
        elif s == "*":
            pass
        elif not s:
            raise PatternError("empty segment")
        elif s in (".", ".."):
            raise PatternError("segment %r is not allowed" % s)
        elif not _SEGMENT.match(s):
            raise PatternError("segment %r has characters outside [A-Za-z0-9._-] or a misplaced '*'" % s)
    return terminal, tuple(segments)


def valid_resource_id(resource_id):
    """True for terminal_id + "/" + resource_path (at most 256 characters)."""
    if type(resource_id) is not str or len(resource_id) > MAX_LEN:
        return False
    terminal, sep, path = resource_id.partition("/")
    if not sep or not TERMINAL_RE.match(terminal) or not _PATH.match(path):
        return False
    return all(s and s not in (".", "..") for s in path.split("/"))


def split_resource(resource_id):
    terminal, _, path = resource_id.partition("/")
    return terminal, tuple(path.split("/"))


def matches(parsed, terminal, segments):
    """Whether a parsed pattern matches a resource given as (terminal, segments)."""
    pt, ps = parsed
    if pt != terminal:
        return False
    if ps and ps[-1] == "**":
        head = ps[:-1]
        if len(segments) < len(head) + 1:
            return False
    elif len(segments) != len(ps):
        return False
    else:
        head = ps
    for p, s in zip(head, segments):
        if p != "*" and p != s:
            return False
    return True
