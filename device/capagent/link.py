# The device end of the host link: reads bytes with select.poll, decodes frames in place,
# sends responses and events, and replays the response to a retried request.
#
# Late copies (issue 9, defect 3): the replay cache holds the last _REPLAY_SLOTS answers only,
# so a copy of a request delayed past the host's retry could otherwise be executed again after
# the cache moved on (a second grant nobody owns, a motor command replayed). The link keeps a
# window of the request ids it accepted: host ids grow by one per request, so an id already
# seen, or one more than _RID_WINDOW behind the newest, is marked stale and never executed
# again (Control.stale answers it). HELLO is outside the window (idempotent, and how a new host
# learns the newest id, rid_hw, to number its requests on from there).
#
# Link authentication (issue 12, docs/link-auth.md): every frame carries a counter and a tag
# after its payload. A frame is verified (capshared.linkauth) before anything else looks at it
# but the line-duplicate check: one without a valid tag, or replayed, is dropped and counted
# (STATS_R bad_tag, replay, no_key) and reaches no handler. Without a key file the board
# accepts nothing and its ANNOUNCE says so (key id zero). A refused HELLO is answered with
# an ANNOUNCE (which carries nothing a stranger can use), so a host with the wrong key or none
# learns why it gets no HELLO_R.
#
# Nothing here allocates per frame: the decoder and encoder work in buffers made at start-up,
# stream writes use write(buf, n), and reads use readinto(buf, 1) while poll says ready.
#
# Where the line is the board's own stdin and a POSIX terminal (the unix port: the virtual
# board; main() says so with terminal=True) the link sets it to
# return what is there at once (VMIN 0) and reads it into a preallocated chunk, one call per
# burst instead of a poll and a read per byte: those two calls were the largest part of the
# board's cost per byte, which is what the signed link's 12-byte trailer paid for (issue 12).
# close() puts the terminal back before the REPL reads from it again. A blocking readinto of
# more than one byte is never made: a cut frame must not stall the leases' fail-safe.
import select

from micropython import const

from capshared.framing import FRAME, INTERRUPT, FrameDecoder, FrameEncoder, crc16
from capshared.limits import AUTH_SIZE, HEADER_SIZE, MAX_RAW, RID_MAX
from capshared.linkauth import CURRENT, DIR_TO_HOST, OK, REPLAY, LinkAuth
from capshared.wire import ANNOUNCE as _ANNOUNCE, ERROR as _ERROR, HELLO as _HELLO

_REPLAY_SLOTS = const(4)
_CHUNK = const(64)         # bytes read at once from a terminal line
_RID_WINDOW = const(256)   # request ids remembered behind the newest (a power of two)
EOF = 9  # read() result: the input stream ended
KEY_FILE = "link.key"   # the board's link key, 16 raw bytes (capwarden flash writes it)


class Link:
    def __init__(self, rd, wr, pollable, key_file=KEY_FILE, terminal=False):
        self.auth = a = LinkAuth(DIR_TO_HOST)
        self.key_file = key_file
        try:
            with open(key_file, "rb") as f:
                a.set_key(f.read())
        except (OSError, ValueError):
            pass                # no key (or not one): every frame is refused, ANNOUNCE says so
        self.hello_refused = False
        self.rd = rd
        self.wr = wr
        self.poller = select.poll()
        self.poller.register(pollable, select.POLLIN)
        self.dec = FrameDecoder()
        self.enc = FrameEncoder()
        self.b1 = bytearray(1)
        self.chunk = None       # a terminal set to VMIN 0: bytes read, position, count
        self.ci = self.cn = 0
        self._tty = None
        try:
            if not terminal:    # the line is not the board's own stdin (a test's rig, a UART)
                raise OSError
            import termios

            fd = pollable.fileno()
            t = termios.tcgetattr(fd)
            self._tty = (fd, t[6][6], t[6][5])   # kept small: the REPL's VMIN and VTIME
            t[6][6] = 0         # VMIN (Linux index 6): a read returns what is there, or 0
            t[6][5] = 0         # VTIME: and does not wait for more
            termios.tcsetattr(fd, termios.TCSANOW, t)
            self.chunk = bytearray(_CHUNK)
        except Exception:
            pass                # no termios (a real board's port), or not a terminal: byte by byte
        self.frames_rx = 0
        self.frames_tx = 0
        self.lost = 0
        self.dup = 0
        self.replayed = 0
        self._last_seq = -1
        self._last_key = -1
        # Replay cache: request key (crc of mid, rid and payload) -> the frame answered, kept
        # raw (header and payload, MAX_RAW bytes a slot) and sealed again when replayed.
        self._keys = [-1] * _REPLAY_SLOTS
        self._rids = [-1] * _REPLAY_SLOTS
        self._lens = [0] * _REPLAY_SLOTS
        self._bufs = [bytearray(MAX_RAW) for _ in range(_REPLAY_SLOTS)]
        self._next_slot = 0
        self._req_key = -1
        self._req_rid = -1
        self.rid_hw = 0                       # the newest request id accepted (0: none yet)
        # Answered request ids, rid % _RID_WINDOW -> rid, as low and high bytes (small blocks:
        # a board's heap is fragmented by the time the agent starts).
        self._seen_lo = bytearray(_RID_WINDOW)
        self._seen_hi = bytearray(_RID_WINDOW)
        self.stale = False                    # the frame just read is a late copy
        self.stale_n = 0

    def close(self):
        # The terminal as it was (the REPL reads it byte by byte, blocking).
        if self._tty is not None:
            fd, vmin, vtime = self._tty
            self._tty = None
            try:
                import termios

                t = termios.tcgetattr(fd)
                t[6][6] = vmin
                t[6][5] = vtime
                termios.tcsetattr(fd, termios.TCSANOW, t)
            except Exception:
                pass

    def wait(self, timeout_ms):
        # Block until the line is readable or timeout. True if readable (or bytes read before
        # are still to be decoded).
        if self.ci < self.cn:
            return True
        for _ in self.poller.ipoll(timeout_ms):
            return True
        return False

    def read(self):
        # Consume available bytes until a frame, an interrupt, or nothing left.
        # Returns FRAME, INTERRUPT or 0 (nothing complete).
        dec = self.dec
        c = self.chunk
        if c is not None:
            while True:
                i = self.ci
                n = self.cn
                if i >= n:
                    if not self.wait(0):
                        return 0
                    n = self.rd.readinto(c)
                    if not n:
                        return EOF      # readable but empty: the line was hung up
                    self.cn = n
                    i = 0
                while i < n:
                    r = dec.feed(c[i])
                    i += 1
                    if r == FRAME:
                        self.ci = i
                        if self._accept():
                            return FRAME
                    elif r == INTERRUPT:
                        self.ci = i
                        return INTERRUPT
                self.ci = i
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
        b = dec.buf
        n = dec.n - AUTH_SIZE
        if n < HEADER_SIZE:
            self.auth.bad_tag += 1      # too short to carry a tag: an unsigned frame
            return False
        seq = b[0]
        key = crc16(b, 1, n)
        if seq == self._last_seq and key == self._last_key:
            self.dup += 1  # the same frame twice on the wire
            return False
        a = self.auth
        hello = b[1] == _HELLO
        if b[n + 3] & 0xC0:     # a counter this large is never sent (and would allocate)
            a.bad_tag += 1
            r = 1
        else:
            ctr = b[n] | (b[n + 1] << 8) | (b[n + 2] << 16) | (b[n + 3] << 24)
            r = a.verify(b, 0, n, ctr, b, n + 4, hello)
        if r != OK:
            self.hello_refused = hello
            if r == REPLAY and 0 < b[1] < 0x40:   # a request replayed: a late copy too (STATS stale)
                self.stale_n += 1
            return False
        dec.n = n               # from here on the frame is its header and payload
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
        for i in range(_REPLAY_SLOTS):
            if self._rids[i] == rid and self._keys[i] == key:
                self.replayed += 1
                e = self.enc
                n = self._lens[i]
                b = self._bufs[i]
                for j in range(n):
                    e.raw[j] = b[j]
                e.n = n
                self.write()    # sealed again: a fresh counter
                return False
        self.stale = rid != 0 and dec.mid() != _HELLO and not self._admit(rid)
        if self.stale:
            self.stale_n += 1
        return True

    def _admit(self, rid):
        # True for a request id not answered before and not too old. An id is marked answered
        # when its final answer is sent (send()), so a retry of a queued ACQUIRE still reaches
        # the queue.
        h = self.rid_hw
        if h == 0 or 0 < (rid - h) % RID_MAX < RID_MAX // 2:
            self.rid_hw = rid
            return True
        if (h - rid) % RID_MAX >= _RID_WINDOW:
            return False          # older than the window: whether it was answered is unknown
        k = rid % _RID_WINDOW
        return self._seen_lo[k] != rid & 0xFF or self._seen_hi[k] != rid >> 8

    def write(self, s=CURRENT):
        # Seal the frame built in self.enc (header and payload) in session s and write it; a
        # board without a session sends nothing but ANNOUNCE (seal() says -1: no counter,
        # zero tag). self.enc.n is the frame's length again afterwards.
        e = self.enc
        r = e.raw
        n = e.n
        c = self.auth.seal(r, 0, n, r, n + 4, s)
        if c < 0:
            if r[1] != _ANNOUNCE:
                return
            c = 0
            for i in range(8):
                r[n + 4 + i] = 0
        r[n] = c & 0xFF
        r[n + 1] = (c >> 8) & 0xFF
        r[n + 2] = (c >> 16) & 0xFF
        r[n + 3] = c >> 24
        e.n = n + AUTH_SIZE
        self.wr.write(e.wire, e.finish())
        e.n = n
        self.frames_tx += 1

    def send(self, remember=True, s=CURRENT):
        # Seal the frame built in self.enc and write it. A final response to the current
        # request is remembered for replay; events and QUEUED are not (remember=False).
        e = self.enc
        n = e.n
        self.write(s)
        rid = self._req_rid
        if remember and rid > 0:
            i = self._next_slot
            self._next_slot = (i + 1) % _REPLAY_SLOTS
            b = self._bufs[i]
            r = e.raw
            for j in range(n):
                b[j] = r[j]
            self._lens[i] = n
            self._rids[i] = rid
            self._keys[i] = self._req_key
            if (self.rid_hw - rid) % RID_MAX < _RID_WINDOW:
                k = rid % _RID_WINDOW                 # answered: a later copy is stale
                self._seen_lo[k] = rid & 0xFF
                self._seen_hi[k] = rid >> 8

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
