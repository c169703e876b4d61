"""Strict JSON for everything the credential layer reads from outside: ticket headers and
claims, Verification_Key files, signing key files and the store's own JSON files.

Refused, always with the caller's error (never another exception): bytes that are not UTF-8,
text that is not JSON, a member twice in one object (Python's json keeps the last one, so a
second "alg" or "key_material" would silently win), non-integer numbers, NaN and Infinity, and
nesting deeper than the interpreter's recursion limit (the C decoder raises RecursionError for
it, which answers the same refusal).
"""

import json

class JsonError(ValueError):
    """Input that is not strict JSON; the message says what is wrong ("has the member 'alg' twice")."""


def _pairs(items):
    out = dict(items)
    if len(out) != len(items):
        seen = set()
        for k, _ in items:
            if k in seen:
                raise JsonError("has the member %r twice" % k[:40])
            seen.add(k)
    return out


def _no_float(_):
    raise JsonError("has a non-integer number")


# One decoder for all: duplicate members and non-integer numbers are refused.
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=_no_float, parse_constant=_no_float)


def loads(data):
    """The value of strict JSON `data` (bytes or str). Raises JsonError saying why not."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8", "strict")
        except UnicodeDecodeError:
            raise JsonError("is not UTF-8") from None
    if type(data) is not str:
        raise JsonError("is not text")
    try:
        return _DECODER.decode(data)
    except JsonError:
        raise
    except (ValueError, RecursionError):
        raise JsonError("is not JSON") from None
