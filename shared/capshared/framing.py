"""Link framing: CRC-16, COBS, Ctrl-C escaping, and a resynchronising stream decoder.

Wire form of a frame:  ESC-stuff( COBS( header | payload | crc16 ) ) 0x00

- COBS (Cheshire & Baker) removes every 0x00, so 0x00 delimits frames and a receiver that
  lost its place resynchronises at the next 0x00.
- ESC-stuffing then removes 0x03 (Ctrl-C, which a board's USB REPL turns into
  KeyboardInterrupt) by sending ESC, b ^ 0x20 for b in (0x03, ESC).
- CRC-16/CCITT-FALSE over header and payload catches corruption that COBS does not.

Both classes work in buffers allocated once at construction: encoding and decoding a frame
allocate nothing, so the device agent can run them under micropython.heap_lock().
"""

from capshared.limits import (
    AUTH_SIZE, CRC_SIZE, CTRL_C, DELIMITER, ESC, ESC_XOR, HEADER_SIZE, MAX_COBS, MAX_RAW, MAX_WIRE,
    MIN_RAW,
)

try:
    from array import array
except ImportError:  # pragma: no cover
    array = None


def _crc_table():
    t = array("H", [0] * 256)
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t[i] = c & 0xFFFF
    return t


CRC_TABLE = _crc_table()
del _crc_table  # its bytecode is not needed after import (board RAM)


def crc16(buf, start, end, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of buf[start:end]. Allocates nothing."""
    t = CRC_TABLE
    for i in range(start, end):
        crc = ((crc << 8) & 0xFF00) ^ t[((crc >> 8) ^ buf[i]) & 0xFF]
    return crc


def cobs_encode(src, n, dst):
    """COBS-encode src[0:n] into dst (len >= n + n // 254 + 1). Returns the encoded length."""
    code_at = 0
    out = 1
    code = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_at] = code
            code_at = out
            out += 1
            code = 1
        else:
            dst[out] = b
            out += 1
            code += 1
            if code == 0xFF:
                dst[code_at] = code
                if i == n - 1:
                    return out  # a full block at the very end needs no further code byte
                code_at = out
                out += 1
                code = 1
    dst[code_at] = code
    return out


def cobs_decode(buf, n):
    """COBS-decode buf[0:n] in place. Returns the decoded length, or -1 if malformed."""
    i = 0
    out = 0
    while i < n:
        code = buf[i]
        if code == 0:
            return -1
        i += 1
        end = i + code - 1
        if end > n:
            return -1
        while i < end:
            b = buf[i]
            if b == 0:
                return -1
            buf[out] = b
            out += 1
            i += 1
        if code != 0xFF and i < n:
            buf[out] = 0
            out += 1
    return out


class FrameEncoder:
    """Builds frames field by field in a preallocated buffer.

    Use: begin(mid, rid); u8/u16/u32/tail ...; n = finish(); then send wire[0:n].
    The link sequence number (one per direction) increments with every frame.
    """

    def __init__(self):
        self.raw = bytearray(MAX_RAW)
        self.cobs = bytearray(MAX_COBS)
        self.wire = bytearray(MAX_WIRE)
        self.n = 0
        self.seq = 0

    def begin(self, mid, rid):
        r = self.raw
        r[0] = self.seq
        self.seq = (self.seq + 1) & 0xFF
        r[1] = mid
        r[2] = rid & 0xFF
        r[3] = (rid >> 8) & 0xFF
        self.n = HEADER_SIZE

    def u8(self, v):
        self.raw[self.n] = v & 0xFF
        self.n += 1

    def u16(self, v):
        r = self.raw
        n = self.n
        r[n] = v & 0xFF
        r[n + 1] = (v >> 8) & 0xFF
        self.n = n + 2

    def u32(self, v):
        r = self.raw
        n = self.n
        r[n] = v & 0xFF
        r[n + 1] = (v >> 8) & 0xFF
        r[n + 2] = (v >> 16) & 0xFF
        r[n + 3] = (v >> 24) & 0xFF
        self.n = n + 4

    def tail(self, src, start, end):
        """Append src[start:end]; truncated to what fits (callers size their data first)."""
        r = self.raw
        n = self.n
        room = MAX_RAW - AUTH_SIZE - CRC_SIZE - n   # the link's trailer goes after the payload
        if end - start > room:
            end = start + room
        for i in range(start, end):
            r[n] = src[i]
            n += 1
        self.n = n

    def room(self):
        """Payload bytes still free in this frame."""
        return MAX_RAW - AUTH_SIZE - CRC_SIZE - self.n

    def finish(self):
        """Seal the frame; returns the number of wire bytes in self.wire."""
        r = self.raw
        n = self.n
        c = crc16(r, 0, n)
        r[n] = c >> 8
        r[n + 1] = c & 0xFF
        m = cobs_encode(r, n + 2, self.cobs)
        return escape(self.cobs, m, self.wire)


def escape(src, n, dst):
    """ESC-stuff src[0:n] into dst and append the delimiter. Returns the length written."""
    out = 0
    for i in range(n):
        b = src[i]
        if b == CTRL_C or b == ESC:
            dst[out] = ESC
            dst[out + 1] = b ^ ESC_XOR
            out += 2
        else:
            dst[out] = b
            out += 1
    dst[out] = DELIMITER
    return out + 1


# Results of FrameDecoder.feed()
NONE = 0        # byte absorbed, no frame yet
FRAME = 1       # a good frame is in .raw[0:.n]
BAD = 2         # a delimiter ended a frame that failed COBS, length or CRC (counted)
INTERRUPT = 3   # a bare 0x03 (never inside a frame): the user wants the REPL


class FrameDecoder:
    """Feeds bytes one at a time; reports whole frames. Never raises on line garbage.

    Counters: bad_crc, bad_frame (COBS, escape or length), overrun (longer than MAX_WIRE,
    discarded up to the next delimiter).
    """

    def __init__(self):
        self.buf = bytearray(MAX_COBS)
        self.raw = self.buf  # decoded in place
        self.i = 0
        self.n = 0
        self.esc = False
        self.dropping = False
        self.bad_crc = 0
        self.bad_frame = 0
        self.overrun = 0

    def reset(self):
        self.i = 0
        self.esc = False
        self.dropping = False

    def feed(self, b):
        """Take one byte. Returns NONE, FRAME, BAD or INTERRUPT."""
        if b == DELIMITER:
            i = self.i
            was_esc = self.esc
            dropping = self.dropping
            self.i = 0
            self.esc = False
            self.dropping = False
            if dropping:
                return BAD
            if was_esc:
                self.bad_frame += 1  # an escape cut by the delimiter, even a lone one
                return BAD
            if i == 0:
                return NONE  # idle delimiters are allowed between frames
            return self._finish(i)
        if b == CTRL_C:
            # Never part of a frame: an interrupt request, heard even while a bad or over-long
            # frame is being discarded. Whatever partial frame there was is gone.
            self.i = 0
            self.esc = False
            self.dropping = False
            return INTERRUPT
        if self.dropping:
            return NONE
        if self.esc:
            self.esc = False
            b ^= ESC_XOR
            if b != CTRL_C and b != ESC:
                self.bad_frame += 1
                self.dropping = True
                return NONE
        elif b == ESC:
            self.esc = True
            return NONE
        if self.i >= MAX_COBS:
            self.overrun += 1
            self.dropping = True
            return NONE
        self.buf[self.i] = b
        self.i += 1
        return NONE

    def _finish(self, i):
        n = cobs_decode(self.buf, i)
        if n < MIN_RAW:
            self.bad_frame += 1
            return BAD
        c = crc16(self.buf, 0, n - 2)
        if (c >> 8) != self.buf[n - 2] or (c & 0xFF) != self.buf[n - 1]:
            self.bad_crc += 1
            return BAD
        self.n = n - 2  # header + payload
        return FRAME

    # Header accessors for the frame in raw[0:n].
    def seq(self):
        return self.buf[0]

    def mid(self):
        return self.buf[1]

    def rid(self):
        return self.buf[2] | (self.buf[3] << 8)

    def payload_len(self):
        return self.n - HEADER_SIZE

    # Payload readers: offsets are relative to the payload (messages.OFFSETS).
    def u8(self, off):
        return self.buf[HEADER_SIZE + off]

    def u16(self, off):
        o = HEADER_SIZE + off
        return self.buf[o] | (self.buf[o + 1] << 8)

    def u32(self, off):
        o = HEADER_SIZE + off
        b = self.buf
        return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)
