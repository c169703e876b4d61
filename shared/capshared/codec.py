"""Whole-message encode and decode from the table: for the host and for tests.

The device does not use this module on its frame path (it allocates dicts); it reads fields
in place with FrameDecoder.u8/u16/u32 at messages.OFFSETS and writes with FrameEncoder.
Both derive from the same table, and the shared vectors check that they agree.
"""

import binascii

from capshared import messages
from capshared.limits import (
    AUTH_SIZE, CTRL_C, DELIMITER, ESC, ESC_XOR, HEADER_SIZE, MAX_COBS, MAX_PAYLOAD, MAX_WIRE, MIN_RAW, U32_LIMIT,
)

# The escape bytes as bytes, for bytes.replace and find (limits defines them once).
_ESC = bytes([ESC])
_CTRL_C = bytes([CTRL_C])
_DELIMITER = bytes([DELIMITER])
_ESCAPED_ESC = bytes([ESC, ESC ^ ESC_XOR])
_ESCAPED_CTRL_C = bytes([ESC, CTRL_C ^ ESC_XOR])


class CodecError(ValueError):
    """A message that does not match the table (unknown id, wrong sizes, bad field value)."""


def encode_payload(name, fields):
    """The payload bytes of message `name` with `fields` (a dict). Raises CodecError."""
    if name not in messages.ID:
        raise CodecError("unknown message %r" % (name,))
    mid = messages.ID[name]
    out = bytearray()
    known = set()
    for fname, ftype in messages.FIELDS[mid]:
        known.add(fname)
        if fname not in fields:
            if ftype == "s":
                v = b""
            else:
                raise CodecError("%s: missing field %r" % (name, fname))
        else:
            v = fields[fname]
        if ftype == "s":
            if isinstance(v, str):
                v = v.encode("utf-8")
            out += bytes(v)
        elif ftype in messages.RAW:
            if not isinstance(v, (bytes, bytearray)) or len(v) != messages.SIZES[ftype]:
                raise CodecError("%s.%s: %d raw bytes expected" % (name, fname, messages.SIZES[ftype]))
            out += bytes(v)
        else:
            size = messages.SIZES[ftype]
            limit = U32_LIMIT if ftype == "I" else (1 << (8 * size))
            if not isinstance(v, int) or v < 0 or v >= limit:
                raise CodecError("%s.%s: %r is not an integer in 0..%d" % (name, fname, v, limit - 1))
            out += v.to_bytes(size, "little")
    extra = set(fields) - known
    if extra:
        raise CodecError("%s: unknown fields %s" % (name, ", ".join(sorted(extra))))
    if len(out) > MAX_PAYLOAD:
        raise CodecError("%s: payload of %d bytes exceeds %d" % (name, len(out), MAX_PAYLOAD))
    return bytes(out)


def decode_payload(mid, payload):
    """(name, fields) for a payload. Raises CodecError for an unknown id or wrong size."""
    if mid not in messages.NAME:
        raise CodecError("unknown message id 0x%02x" % mid)
    fixed = messages.FIXED[mid]
    n = len(payload)
    if n < fixed or (n != fixed and not messages.HAS_TAIL[mid]):
        raise CodecError("%s: payload of %d bytes, expected %d" % (messages.NAME[mid], n, fixed))
    fields = {}
    off = 0
    for fname, ftype in messages.FIELDS[mid]:
        if ftype == "s":
            fields[fname] = bytes(payload[off:])
        elif ftype in messages.RAW:
            fields[fname] = bytes(payload[off:off + messages.SIZES[ftype]])
            off += messages.SIZES[ftype]
        else:
            size = messages.SIZES[ftype]
            fields[fname] = int.from_bytes(payload[off:off + size], "little")
            off += size
    return messages.NAME[mid], fields


def encode_frame(name, rid, fields, seq=0):
    """Wire bytes of one frame (delimiter included). Raises CodecError for bad fields."""
    return frame_bytes(messages.ID[name] if name in messages.ID else _unknown(name), rid,
                       encode_payload(name, fields), seq)


def frame_bytes(mid, rid, payload, seq=0):
    """Wire bytes for an already encoded payload (retries re-frame it with a new seq).

    Host fast path: the same wire form as framing.FrameEncoder (the vectors check both), built
    with bytes operations and binascii.crc_hqx, which is CRC-16/CCITT-FALSE with init 0xFFFF.
    """
    return raw_frame_bytes(bytes((seq & 0xFF, mid, rid & 0xFF, (rid >> 8) & 0xFF)) + payload)


def raw_frame_bytes(raw):
    """Wire bytes of a raw frame (header, payload and, on an authenticated link, its trailer):
    the CRC over all of it, COBS, escaping, the delimiter."""
    crc = binascii.crc_hqx(raw, 0xFFFF)
    return _escape(_cobs(raw + bytes((crc >> 8, crc & 0xFF)))) + _DELIMITER


def _unknown(name):
    raise CodecError("unknown message %r" % (name,))


def _cobs(data):
    out = bytearray()
    blocks = data.split(b"\x00")
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        # Runs of 254 non-zero bytes are sent as full blocks (code 0xFF) with no implied zero.
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
            if not block and i == last:
                return bytes(out)  # a full block at the very end needs no further code byte
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def _escape(data):
    if _ESC in data:
        data = data.replace(_ESC, _ESCAPED_ESC)
    if _CTRL_C in data:
        data = data.replace(_CTRL_C, _ESCAPED_CTRL_C)
    return data


class Frame:
    """A received frame, decoded: seq, rid, name, fields."""

    __slots__ = ("seq", "rid", "mid", "name", "fields", "auth")

    def __init__(self, seq, rid, mid, name, fields, auth=None):
        self.auth = auth    # on an authenticated link: (header and payload, counter, tag)
        self.seq = seq
        self.rid = rid
        self.mid = mid
        self.name = name
        self.fields = fields

    def __repr__(self):
        return "Frame(%s rid=%d seq=%d %r)" % (self.name, self.rid, self.seq, self.fields)


class StreamDecoder:
    """Bytes in, Frames out (host side). Garbage and bad frames are counted, never raised.

    Host fast path: frames are cut at 0x00 and decoded with bytes operations; the result is
    the same as framing.FrameDecoder's (tests/shared compares them on random streams).
    """

    def __init__(self, trailer=False):
        # trailer: every frame ends in the link's counter and tag (limits.AUTH_SIZE bytes),
        # handed on in Frame.auth for the link to verify (capwarden.link.requests).
        self.trailer = trailer
        self._partial = b""
        self._dropping = False
        self.bad_crc = 0
        self.bad_frame = 0
        self.overrun = 0
        self.unknown = 0
        self.interrupts = 0

    def feed(self, data):
        """Feed bytes; returns a list of Frame."""
        if _CTRL_C in data:
            # A bare Ctrl-C is never inside a frame: it ends any partial frame (as on the device,
            # which also hears it while discarding a bad frame).
            out = []
            parts = data.split(_CTRL_C)
            self.interrupts += len(parts) - 1
            for i, part in enumerate(parts):
                if i:
                    self._settle(self._partial)  # what the device counted of it before the 0x03
                    self._partial = b""
                    self._dropping = False
                out += self._feed(part)
            return out
        return self._feed(data)

    def _feed(self, data):
        out = []
        if self._dropping:
            # The rest of a frame already counted as bad: discarded up to its delimiter.
            k = data.find(_DELIMITER)
            if k < 0:
                return out
            data = data[k + 1:]
            self._dropping = False
        chunks = (self._partial + data).split(_DELIMITER)
        partial = chunks.pop()
        # The complete frames first: an over-long partial after them must not cost them.
        for chunk in chunks:
            if chunk:
                f = self._decode(chunk)
                if f is not None:
                    out.append(f)
        if len(partial) > MAX_WIRE and self._settle(partial):
            # Decided (the device is discarding it too): keep nothing of it, so a line that
            # never sends a delimiter cannot grow the partial.
            partial = b""
            self._dropping = True
        self._partial = partial
        return out

    def _settle(self, partial):
        """Count an unfinished frame's error once it is decided; True if it was."""
        if not partial:
            return False
        kind, _data = _unescape(partial[:MAX_WIRE + 1], False)
        if kind == _BAD:
            self.bad_frame += 1
        elif kind == _OVER:
            self.overrun += 1
        else:
            return False
        return True

    def _decode(self, chunk):
        kind, chunk = _unescape(chunk, True)
        if kind == _BAD:
            self.bad_frame += 1
            return None
        if kind == _OVER:
            self.overrun += 1
            return None
        raw = _uncobs(chunk)
        if raw is None or len(raw) < MIN_RAW:
            self.bad_frame += 1
            return None
        body = raw[:-2]
        if binascii.crc_hqx(body, 0xFFFF) != (raw[-2] << 8 | raw[-1]):
            self.bad_crc += 1
            return None
        auth = None
        if self.trailer:
            if len(body) < HEADER_SIZE + AUTH_SIZE:
                self.bad_frame += 1
                return None
            auth = (body[:-AUTH_SIZE], int.from_bytes(body[-AUTH_SIZE:-8], "little"), body[-8:])
            body = auth[0]
        mid = body[1]
        try:
            name, fields = decode_payload(mid, body[HEADER_SIZE:])
        except CodecError:
            self.unknown += 1
            return None
        return Frame(body[0], body[2] | (body[3] << 8), mid, name, fields, auth)


# _unescape results, in the order framing.FrameDecoder meets them byte by byte.
_OK = 0
_BAD = 1       # a bad escape (or one cut by the delimiter): bad_frame
_OVER = 2      # more than MAX_COBS bytes before any bad escape: overrun
_PENDING = 3   # an unfinished frame whose fate its next bytes decide


def _unescape(chunk, final):
    """(kind, unescaped bytes) of one frame's bytes between delimiters, deciding as the device
    does: whichever of a bad escape or the (MAX_COBS + 1)th byte comes first. `final`: the
    delimiter followed (else an escape at the end is still open)."""
    if _ESC not in chunk:
        if len(chunk) > MAX_COBS:
            return _OVER, None
        return (_OK if final else _PENDING), chunk
    out = bytearray()
    i = 0
    n = len(chunk)
    while True:
        j = chunk.find(_ESC, i)
        if j < 0:
            out += chunk[i:]
            break
        out += chunk[i:j]
        if len(out) > MAX_COBS:
            return _OVER, None
        if j + 1 >= n:
            return (_BAD if final else _PENDING), None
        b = chunk[j + 1] ^ ESC_XOR
        if b != CTRL_C and b != ESC:
            return _BAD, None
        out.append(b)
        i = j + 2
    if len(out) > MAX_COBS:
        return _OVER, None
    return (_OK if final else _PENDING), bytes(out)


def _uncobs(data):
    """COBS-decode a whole frame; None if malformed (same rules as framing.cobs_decode)."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        block = data[i + 1:end]
        if 0 in block:
            return None
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
