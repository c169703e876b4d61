# The device end of the host link: reads bytes with select.poll, decodes frames in place,
# sends responses and events, and replays the response to a retried request.
#
# Nothing here allocates per frame: the decoder and encoder work in buffers made at start-up,
# stream writes use write(buf, n), and reads use readinto(buf, 1) while poll says ready.
import select

from capshared.framing import BAD, FRAME, INTERRUPT, FrameDecoder, FrameEncoder, crc16
from capshared.limits import MAX_WIRE
from capshared.wire import ERROR as _ERROR

REPLAY_SLOTS = 4
EOF = 9  # read() result: the input stream ended


class Link:
    def __init__(self, rd, wr, pollable):
        self.rd = rd
        self.wr = wr
        self.poller = select.poll()
        self.poller.register(pollable, select.POLLIN)
        self.dec = FrameDecoder()
        self.enc = FrameEncoder()
        self.b1 = bytearray(1)
        self.frames_rx = 0
        self.frames_tx = 0
        self.lost = 0
        self.dup = 0
        self.replayed = 0
        self._last_seq = -1
        self._last_key = -1
        # Replay cache: request key (crc of mid, rid and payload) -> the wire bytes answered.
        self._keys = [-1] * REPLAY_SLOTS
        self._rids = [-1] * REPLAY_SLOTS
        self._lens = [0] * REPLAY_SLOTS
        self._bufs = [bytearray(MAX_WIRE) for _ in range(REPLAY_SLOTS)]
        self._next_slot = 0
        self._req_key = -1
        self._req_rid = -1

    def wait(self, timeout_ms):
        # Block until the line is readable or timeout. True if readable.
        for _ in self.poller.ipoll(timeout_ms):
            return True
        return False

    def read(self):
        # Consume available bytes until a frame, an interrupt, or nothing left.
        # Returns FRAME, INTERRUPT or 0 (nothing complete).
        dec = self.dec
        b1 = self.b1
        while self.wait(0):
            if not self.rd.readinto(b1, 1):
                # Readable but nothing read: end of file (the line was hung up). Only the
                # virtual board sees this; stop rather than spin on it.
                return EOF
            r = dec.feed(b1[0])
            if r == FRAME:
                if self._accept():
                    return FRAME
            elif r == INTERRUPT:
                return INTERRUPT
        return 0

    def _accept(self):
        dec = self.dec
        seq = dec.seq()
        key = crc16(dec.buf, 1, dec.n)
        if seq == self._last_seq and key == self._last_key:
            self.dup += 1  # the same frame twice on the wire
            return False
        if self._last_seq >= 0:
            gap = (seq - self._last_seq - 1) & 0xFF
            self.lost += gap
        self._last_seq = seq
        self._last_key = key
        self.frames_rx += 1
        rid = dec.rid()
        self._req_key = key
        self._req_rid = rid
        # A retried request (same rid and content) gets the answer already sent: idempotent.
        for i in range(REPLAY_SLOTS):
            if self._rids[i] == rid and self._keys[i] == key:
                self.replayed += 1
                self.wr.write(self._bufs[i], self._lens[i])
                self.frames_tx += 1
                return False
        return True

    def send(self, remember=True):
        # Seal the frame built in self.enc and write it. A final response to the current
        # request is remembered for replay; events and QUEUED are not (remember=False).
        n = self.enc.finish()
        self.wr.write(self.enc.wire, n)
        self.frames_tx += 1
        if remember and self._req_rid > 0:
            i = self._next_slot
            self._next_slot = (i + 1) % REPLAY_SLOTS
            buf = self._bufs[i]
            w = self.enc.wire
            for j in range(n):
                buf[j] = w[j]
            self._lens[i] = n
            self._rids[i] = self._req_rid
            self._keys[i] = self._req_key

    def remember_for(self, rid, key):
        # The final response about to be sent answers request (rid, key), not the current frame
        # (a queued ACQUIRE granted later).
        self._req_rid = rid
        self._req_key = key

    def request_key(self):
        return self._req_key

    def error(self, rid, code, detail=0):
        e = self.enc
        e.begin(_ERROR, rid)
        e.u8(code)
        e.u32(detail)
        self.send()
