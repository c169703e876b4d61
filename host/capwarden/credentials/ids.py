"""Identifiers of chapter 2: UUIDv7, Fay_ID, Terminal_ID (supplement S1 encodings)."""

import os
import re
import time
import uuid

UUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
UUID_RE = re.compile(UUID_TEXT + r"\Z")
FAY_RE = re.compile(r"fay:" + UUID_TEXT + r"\Z")
TERMINAL_RE = re.compile(r"terminal:" + UUID_TEXT + r"\Z")


def uuid7_bytes_ok(b):
    """16 bytes with version 7 and the RFC 9562 variant."""
    return type(b) is bytes and len(b) == 16 and b[6] >> 4 == 7 and b[8] >> 6 == 2


def uuid_text(b):
    """The RFC 9562 text form of 16 bytes: str(uuid.UUID(bytes=b)) at a third of its cost."""
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_bytes(text):
    return uuid.UUID(text).bytes


def new_uuid7(now_ms=None):
    """A fresh UUIDv7 (RFC 9562): 48-bit millisecond time, version, random, variant."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    r = bytearray(os.urandom(10))
    b = ms.to_bytes(6, "big") + bytes(r)
    b = bytearray(b)
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)


def new_fay_id():
    return "fay:" + uuid_text(new_uuid7())


def new_terminal_id():
    return "terminal:" + uuid_text(new_uuid7())
