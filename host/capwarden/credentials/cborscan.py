"""A strict byte-level recogniser for the common layout of an Authorization_Descriptor file.

`scan_descriptor(data)` reads a descriptor file that is deterministic CBOR (S1) in the one
layout chapter 2 allows for its fields, and returns the raw field values; for anything else,
valid or not, it returns None, and the caller (fastparse) hands the file to the reference
parser, which names the failing field. It never decides that a file is bad; it only recognises
files that are exactly right.

Why a recogniser and not cbor2: decoding with cbor2 and re-encoding to check determinism cost
about 5 microseconds a descriptor, a tenth of an Ed25519 verify, before any field is checked.
Here determinism is checked as the bytes are read: every key is compared with its exact
encoding in its one deterministic position, every head must be the shortest form of its value,
no tag, float, indefinite length or other type has a branch that accepts it, and the file must
end exactly where the signature does. Nothing is decoded twice.

This module is self-contained (it imports nothing from the project) so that mypyc can compile
it when the package is built (setup.py); the same source runs interpreted where no compiler
was available. fastparse notices a compiled copy older than this source and runs the source.
tests/credentials/test_fastparse.py runs both against the reference parser.
"""

from typing import Dict, List, Optional, Tuple


def _key(name: str) -> bytes:
    # A text key of fewer than 24 bytes: one head byte, then the UTF-8 bytes.
    raw = name.encode()
    return bytes([0x60 + len(raw)]) + raw


# The file: a3 "payload" PAYLOAD "version" 01 "signature" a3 "key_id" T "algorithm" T
# "signature_value" 58 40 SIG. Map keys in deterministic order (shorter first, then bytewise).
FILE_HEAD: bytes = b"\xa3" + _key("payload")
ENVELOPE: bytes = _key("version") + b"\x01" + _key("signature") + b"\xa3" + _key("key_id")
ALGORITHM_KEY: bytes = _key("algorithm")
SIGNATURE_KEY: bytes = _key("signature_value") + b"\x58\x40"
ALGORITHMS: Tuple[Tuple[bytes, str], ...] = (
    (_key("ed25519"), "ed25519"), (_key("ecdsa-p256-sha256"), "ecdsa-p256-sha256"))
# Payload keys in deterministic order; metadata (8) and grantor_id (10) are optional.
GRANTS: bytes = _key("grants")
METADATA: bytes = _key("metadata")
ISSUED_AT: bytes = _key("issued_at")
ISSUER_ID: bytes = _key("issuer_id")
NOT_AFTER: bytes = _key("not_after")
GRANTOR_ID: bytes = _key("grantor_id")
NOT_BEFORE: bytes = _key("not_before")
TERMINAL_ID: bytes = _key("terminal_id")
DESCRIPTOR_ID: bytes = _key("descriptor_id") + b"\x50"      # always a 16-byte string
SUBJECT: bytes = _key("subject_fay_id")
GRANT_MODES: bytes = b"\xa2" + _key("modes")                 # a grant without constraints
RESOURCE_PATTERN: bytes = _key("resource_pattern")

MAX_FILE = 128 * 1024
MAX_GRANTS = 256


class _Decline(Exception):
    """Not a layout this recogniser accepts (the reference parser decides)."""


def _text(data: bytes, i: int) -> Tuple[str, int]:
    """The text string at i, whose head must be minimal; and the index after it."""
    h = data[i]
    if 0x60 <= h <= 0x77:
        start = i + 1
        end = start + h - 0x60
    elif h == 0x78:
        n = data[i + 1]
        if n < 24:
            raise _Decline()
        start = i + 2
        end = start + n
    elif h == 0x79:
        n = (data[i + 1] << 8) | data[i + 2]
        if n < 256:
            raise _Decline()
        start = i + 3
        end = start + n
    else:
        raise _Decline()
    if end > len(data):
        raise _Decline()
    return data[start:end].decode("utf-8"), end


def _uint(data: bytes, i: int) -> Tuple[int, int]:
    """The unsigned integer at i, whose head must be minimal; and the index after it."""
    h = data[i]
    if h < 24:
        return h, i + 1
    if h == 0x18:
        v = data[i + 1]
        if v < 24:
            raise _Decline()
        return v, i + 2
    if h == 0x19:
        v = (data[i + 1] << 8) | data[i + 2]
        if v < 0x100:
            raise _Decline()
        return v, i + 3
    if h == 0x1a:
        v = (data[i + 1] << 24) | (data[i + 2] << 16) | (data[i + 3] << 8) | data[i + 4]
        if v < 0x10000:
            raise _Decline()
        return v, i + 5
    if h == 0x1b:
        v = 0
        for k in range(1, 9):
            v = (v << 8) | data[i + k]
        if v < 0x100000000:
            raise _Decline()
        return v, i + 9
    raise _Decline()


def _count(data: bytes, i: int, major: int) -> Tuple[int, int]:
    """The item count of an array (major 4) or map (major 5) head at i, minimal, definite."""
    h = data[i]
    base = major << 5
    if base <= h < base + 24:
        return h - base, i + 1
    if h == base + 24:
        n = data[i + 1]
        if n < 24:
            raise _Decline()
        return n, i + 2
    if h == base + 25:
        n = (data[i + 1] << 8) | data[i + 2]
        if n < 0x100:
            raise _Decline()
        return n, i + 3
    raise _Decline()   # longer counts, indefinite lengths, other types


def _at(data: bytes, i: int, what: bytes) -> bool:
    # A slice comparison, not startswith(what, i): mypyc compiles it to C, and it is no slower
    # interpreted.
    return data[i:i + len(what)] == what


def _expect(data: bytes, i: int, what: bytes) -> int:
    end = i + len(what)
    if data[i:end] != what:
        raise _Decline()
    return end


def _order_key(raw: bytes) -> Tuple[int, bytes]:
    return len(raw), raw


def scan_descriptor(data: bytes) -> Optional[tuple]:
    """(algorithm, key_id, signature, descriptor_id bytes, issuer_id, subject_fay_id,
    terminal_id, [(resource_pattern, (modes...)), ...], issued_at, not_before, not_after,
    grantor_id or None, metadata dict or None, payload_end), or None when not recognised.

    The payload's bytes are data[len(FILE_HEAD):payload_end]: what the signature covers."""
    if len(data) > MAX_FILE or not _at(data, 0, FILE_HEAD):
        return None
    try:
        return _scan(data)
    except (_Decline, IndexError, UnicodeDecodeError):
        return None


def _scan(data: bytes) -> tuple:
    i = len(FILE_HEAD)
    fields, i = _count(data, i, 5)
    if fields < 8 or fields > 10:
        raise _Decline()
    i = _expect(data, i, GRANTS)
    n, i = _count(data, i, 4)
    if n < 1 or n > MAX_GRANTS:
        raise _Decline()
    grants: List[Tuple[str, Tuple[str, ...]]] = []
    for _ in range(n):
        i = _expect(data, i, GRANT_MODES)
        m, i = _count(data, i, 4)
        if m < 1 or m > 4:
            raise _Decline()
        modes: List[str] = []
        for _ in range(m):
            mode, i = _text(data, i)
            modes.append(mode)
        i = _expect(data, i, RESOURCE_PATTERN)
        pattern, i = _text(data, i)
        grants.append((pattern, tuple(modes)))
    metadata: Optional[Dict[str, str]] = None
    seen = 8
    if _at(data, i, METADATA):
        seen += 1
        entries, i = _count(data, i + len(METADATA), 5)
        metadata = {}
        last = (0, b"")
        for _ in range(entries):
            start = i
            key, i = _text(data, i)
            here = _order_key(data[start:i])
            if here <= last:          # out of deterministic order, or a duplicate key
                raise _Decline()
            last = here
            value, i = _text(data, i)
            metadata[key] = value
    i = _expect(data, i, ISSUED_AT)
    issued_at, i = _uint(data, i)
    i = _expect(data, i, ISSUER_ID)
    issuer_id, i = _text(data, i)
    i = _expect(data, i, NOT_AFTER)
    not_after, i = _uint(data, i)
    grantor_id: Optional[str] = None
    if _at(data, i, GRANTOR_ID):
        seen += 1
        grantor_id, i = _text(data, i + len(GRANTOR_ID))
    if seen != fields:
        raise _Decline()
    i = _expect(data, i, NOT_BEFORE)
    not_before, i = _uint(data, i)
    i = _expect(data, i, TERMINAL_ID)
    terminal_id, i = _text(data, i)
    i = _expect(data, i, DESCRIPTOR_ID)
    descriptor_id = data[i:i + 16]
    i += 16
    i = _expect(data, i, SUBJECT)
    subject, i = _text(data, i)
    payload_end = i
    i = _expect(data, i, ENVELOPE)
    key_id, i = _text(data, i)
    i = _expect(data, i, ALGORITHM_KEY)
    algorithm = ""
    for encoded, name in ALGORITHMS:
        if _at(data, i, encoded):
            algorithm = name
            i += len(encoded)
            break
    if not algorithm:
        raise _Decline()
    i = _expect(data, i, SIGNATURE_KEY)
    if len(data) != i + 64:           # a short signature, or bytes after the file
        raise _Decline()
    signature = data[i:]
    return (algorithm, key_id, signature, descriptor_id, issuer_id, subject, terminal_id, grants, issued_at,
            not_before, not_after, grantor_id, metadata, payload_end)
