"""Deterministic CBOR (cap-supplement S1, RFC 8949 section 4.2.1) on top of cbor2.

cbor2 is lenient where a verifier must not be: it ignores trailing bytes, keeps the last of two
duplicate keys, accepts indefinite lengths and non-minimal integers, and turns known tags into
Python objects. So decoding here is strict in three steps:

1. size limit before anything is decoded; decode one item and reject anything after it;
2. walk the result: only unsigned/negative integers, text, bytes, arrays and maps with text keys
   (no tags, floats, booleans, null, bignums beyond 64 bits);
3. re-encode deterministically and compare with the bytes received: any difference (key order,
   duplicate keys, non-minimal heads, indefinite lengths) rejects.

Why cbor2's canonical mode is enough: it sorts map keys length-first (RFC 7049), RFC 8949 sorts
them bytewise by encoding. The two agree for text-string keys (a shorter text has a smaller
head byte, equal lengths compare by content), and the walk admits text keys only. The vectors
in tests/credentials/test_cbor.py pin this, RFC 8949 Appendix A included.
"""

import cbor2

MAX_DEPTH = 16
U64 = (1 << 64) - 1


class CborError(ValueError):
    """Bytes that are not deterministic CBOR of the allowed types. `path` names the place."""

    def __init__(self, message, path=""):
        self.path = path
        super().__init__(message + (" at %s" % path if path else ""))


def encode(value):
    """Deterministic encoding of a value made of ints, str, bytes, lists and str-keyed dicts."""
    check(value)
    return cbor2.dumps(value, canonical=True)


def decode(data, max_size, typed=True):
    """Decode strictly. Raises CborError for anything but deterministic CBOR of allowed types.

    typed=False skips the type walk (step 2) for callers whose own parser type-checks every
    value it accepts and refuses unknown keys in every map (model.parse_descriptor_obj does);
    determinism (step 3) is always checked.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CborError("not bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise CborError("%d bytes, more than the %d allowed" % (len(data), max_size))
    if not data:
        raise CborError("empty")
    try:
        value = cbor2.loads(data, tag_hook=_no_tags)
    except CborError:
        raise
    except Exception:  # cbor2 raises several types for broken input
        raise CborError("not well-formed CBOR") from None
    if typed:
        check(value)
    try:
        again = cbor2.dumps(value, canonical=True)
    except Exception:  # a value cbor2 decodes but cannot encode canonically
        raise CborError("not re-encodable as deterministic CBOR") from None
    if again != data:
        # Also catches trailing bytes (cbor2.loads ignores them; the re-encoding is shorter).
        if len(again) < len(data) and data.startswith(again):
            raise CborError("%d trailing bytes after the CBOR item" % (len(data) - len(again)))
        raise CborError("not in deterministic encoding (key order, duplicate keys, or non-minimal lengths)")
    return value


def _no_tags(decoder, tag):
    raise CborError("CBOR tag %d is not allowed" % tag.tag)


def check(value, path="", depth=0):
    """Raise CborError unless value is made only of the allowed types."""
    if depth > MAX_DEPTH:
        raise CborError("nested deeper than %d" % MAX_DEPTH, path)
    t = type(value)
    if t is int:
        if value > U64 or value < -U64 - 1:
            raise CborError("integer outside 64 bits", path)
    elif t is str or t is bytes:
        pass
    elif t is list:
        for i, v in enumerate(value):
            check(v, "%s[%d]" % (path, i), depth + 1)
    elif t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise CborError("map key %r is not text" % (k,), path)
            check(v, (path + "." + k) if path else k, depth + 1)
    else:
        raise CborError("%s values are not allowed" % t.__name__, path)
