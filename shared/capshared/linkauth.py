"""Link authentication: AES-128-CMAC tags (RFC 4493) on every frame, per-session counters.

Runs on the board (MicroPython: cryptolib.aes in ECB mode) and on CPython, where the host
injects an AES block function (capwarden.link.linkauth.ecb). The design and why it is so:
docs/link-auth.md.

A tag is CMAC_K(P_s | dir | ctr | frame) cut to TAG_SIZE bytes, where P_s is the session
prefix (label, host nonce, board nonce, boot id: two blocks). CBC-MAC's state after P_s is
computed once per session (a 16-byte "midstate"); each tag continues from it. That is CMAC over
the whole string, so the host checks it with any CMAC (cryptography's), while the board keeps
one AES key schedule for its life and allocates nothing per session or per frame.

Nothing here allocates after construction and set_key(): tags, compares, counters and nonces
work in buffers made at start-up, so the agent can run them under micropython.heap_lock().
"""

KEY_SIZE = 16
TAG_SIZE = 8            # 64 bits: a forgery is one chance in 2**64 per try
CTR_SIZE = 4            # u32 little-endian on the wire
NONCE_SIZE = 8
KEY_ID_SIZE = 4
CTR_LIMIT = 1 << 30     # counters stay MicroPython small ints on 32-bit boards; then a new session

# Direction byte inside every tag: a frame the board sent can never be taken for one the host sent.
DIR_TO_BOARD = 1
DIR_TO_HOST = 2

# verify() results; refusals are counted per reason (LinkAuth.bad_tag, .replay, .no_key).
OK = 0
BAD_TAG = 1     # not made with this key in this session (forged, flipped bit, other key, old session)
REPLAY = 2      # authentic, but its counter does not pass the last one accepted
NO_KEY = 3      # this side has no key (or no session): it accepts nothing

# Domain labels, one block each with what follows: no input to one use can be input to another.
L_SESSION = b"capwSESS"
L_HELLO = b"capwHELO"
L_NONCE = b"capwNONC"
L_KEYID = b"capwKYID"

try:
    from os import urandom
except ImportError:  # pragma: no cover - every port we target has it
    urandom = None


def equal(a, ao, b, bo, n):
    """a[ao:ao+n] == b[bo:bo+n], reading every byte whatever differs first (no early exit, so
    the time taken says nothing about where a forged tag went wrong)."""
    d = 0
    for i in range(n):
        d |= a[ao + i] ^ b[bo + i]
    return d == 0


def _double(src, dst):
    # dst = src * x in GF(2^128) (RFC 4493 subkey generation), big-endian bit order.
    c = 0
    for i in range(15, -1, -1):
        v = src[i]
        dst[i] = ((v << 1) | c) & 0xFF
        c = v >> 7
    if src[0] & 0x80:
        dst[15] ^= 0x87


class Cmac:
    """AES-128-CMAC with one key schedule and fixed buffers.

    `aes`: a factory aes(key) -> object with encrypt(src, dst) on 16-byte buffers (in place
    allowed). Default: cryptolib.aes(key, 1), MicroPython's ECB mode.
    """

    def __init__(self, aes=None):
        self._aes = aes
        self._enc = None
        self.x = bytearray(16)       # CBC chaining value
        self.k1 = bytearray(16)
        self.k2 = bytearray(16)

    def set_key(self, key):
        """Take a 16-byte key: one AES key schedule and the subkeys K1, K2 (RFC 4493 2.3).
        Allocates (once per key, never per tag). Raises ValueError for another length."""
        if len(key) != KEY_SIZE:
            raise ValueError("a link key is 16 bytes")
        aes = self._aes
        if aes is None:
            import cryptolib

            self._enc = cryptolib.aes(bytes(key), 1).encrypt
        else:
            self._enc = aes(bytes(key)).encrypt
        x = self.x
        for i in range(16):
            x[i] = 0
        self._enc(x, x)              # L = AES_K(0^128)
        _double(x, self.k1)
        _double(self.k1, self.k2)
        for i in range(16):
            x[i] = 0

    def clear(self):
        self._enc = None
        for b in (self.x, self.k1, self.k2):
            for i in range(16):
                b[i] = 0

    def ready(self):
        return self._enc is not None

    def start(self, state=None):
        """Begin a message: from zero, or from a saved midstate (a whole number of blocks
        absorbed and encrypted). Returns the fill of the current block (0)."""
        x = self.x
        for i in range(16):
            x[i] = 0 if state is None else state[i]
        return 0

    def absorb(self, buf, start, end, k):
        """XOR buf[start:end] into the state; a full block is encrypted only when more data
        follows it (CMAC treats the last block apart). k: bytes already in the current block
        (16 after a full one). Returns the new k."""
        x = self.x
        enc = self._enc
        for i in range(start, end):
            if k == 16:
                enc(x, x)
                k = 0
            x[k] ^= buf[i]
            k += 1
        return k

    def seal_state(self, k):
        # After whole blocks only (k == 16): encrypt the last one; the state is a midstate.
        self._enc(self.x, self.x)

    def finish(self, k, out, off, n):
        """End the message with k bytes in its last block; write the first n tag bytes to
        out[off:off+n]."""
        x = self.x
        sub = self.k1
        if k != 16:
            x[k] ^= 0x80          # pad 10*, and the other subkey
            sub = self.k2
        for i in range(16):
            x[i] ^= sub[i]
        self._enc(x, x)
        for i in range(n):
            out[off + i] = x[i]

    def mac(self, buf, start, end, out, off, n=16):
        """The plain CMAC of buf[start:end] (RFC 4493 vectors), n bytes into out[off:]."""
        self.finish(self.absorb(buf, start, end, self.start()), out, off, n)


class LinkAuth:
    """One side of an authenticated link: its key, the current session, and on a board a
    pending one (proposed by a HELLO, taken only when a frame authenticated under it arrives,
    so a replayed HELLO changes nothing the engine relies on).

    `tx_dir`: DIR_TO_HOST on a board, DIR_TO_BOARD on a host. Counters: bad_tag, replay,
    no_key (refusals by reason), sessions (sessions taken).
    """

    def __init__(self, tx_dir, aes=None):
        self.cmac = Cmac(aes)
        self.tx_dir = tx_dir
        self.rx_dir = DIR_TO_HOST if tx_dir == DIR_TO_BOARD else DIR_TO_BOARD
        # Sessions: midstate, valid, last counter sent, last counter accepted. [0] current,
        # [1] pending.
        self._st = [bytearray(16), bytearray(16)]
        self._ok = [False, False]
        self._tx = [0, 0]
        self._rx = [0, 0]
        self._hdr = bytearray(1 + CTR_SIZE)
        self._blk = bytearray(32)             # prefix scratch (two blocks)
        self._t = bytearray(16)               # tag scratch
        self.key_id = bytearray(KEY_ID_SIZE)
        # Board nonces: PRF_K(label | boot nonce | count): never the same twice for one key
        # (a fresh boot nonce each start, a count within it), made without allocating.
        self._boot_nonce = bytearray(urandom(NONCE_SIZE)) if urandom else bytearray(NONCE_SIZE)
        self._nonces = 0
        self.bad_tag = 0
        self.replay = 0
        self.no_key = 0
        self.sessions = 0

    # -- key -------------------------------------------------------------------------------
    def set_key(self, key):
        """Install the link key (16 bytes); every session ends. Raises ValueError."""
        self.cmac.set_key(key)
        self._ok[0] = self._ok[1] = False
        b = self._blk
        self._label(L_KEYID, b)
        self.cmac.mac(b, 0, 16, self.key_id, 0, KEY_ID_SIZE)

    def clear_key(self):
        self.cmac.clear()
        self._ok[0] = self._ok[1] = False
        for i in range(KEY_ID_SIZE):
            self.key_id[i] = 0

    def has_key(self):
        return self.cmac.ready()

    def has_session(self):
        return self._ok[0]

    @staticmethod
    def _label(label, b):
        for i in range(32):
            b[i] = 0
        for i in range(8):
            b[i] = label[i]

    # -- sessions --------------------------------------------------------------------------
    def board_nonce(self, out, off):
        """A new board nonce (NONCE_SIZE bytes) into out[off:]. Needs the key."""
        b = self._blk
        self._label(L_NONCE, b)
        n = self._boot_nonce
        for i in range(NONCE_SIZE):
            b[8 + i] = n[i]
        c = self._nonces
        self._nonces = c + 1
        for i in range(4):
            b[16 + i] = (c >> (8 * i)) & 0xFF
        self.cmac.mac(b, 0, 20, out, off, NONCE_SIZE)

    def begin(self, nh, nh_off, nb, nb_off, boot_id, pending):
        """Derive the session of host nonce nh[nh_off:+8], board nonce nb[nb_off:+8] and the
        board's boot id; counters from 0. pending=True (a board answering HELLO): kept apart
        until a frame authenticated under it arrives. Returns False without a key."""
        if not self.cmac.ready():
            return False
        b = self._blk
        self._label(L_SESSION, b)
        for i in range(NONCE_SIZE):
            b[8 + i] = nh[nh_off + i]
            b[16 + i] = nb[nb_off + i]
        for i in range(4):
            b[24 + i] = (boot_id >> (8 * i)) & 0xFF
        c = self.cmac
        c.seal_state(c.absorb(b, 0, 32, c.start()))
        s = 1 if pending else 0
        st = self._st[s]
        x = c.x
        for i in range(16):
            st[i] = x[i]
        self._ok[s] = True
        self._tx[s] = 0
        self._rx[s] = 0
        if not pending:
            self.sessions += 1
        return True

    def end(self):
        """Forget every session (the link went down)."""
        self._ok[0] = self._ok[1] = False

    # -- tags ------------------------------------------------------------------------------
    def _tag(self, state, d, ctr, buf, start, end, out, off):
        c = self.cmac
        h = self._hdr
        h[0] = d
        for i in range(CTR_SIZE):
            h[1 + i] = (ctr >> (8 * i)) & 0xFF
        k = c.absorb(h, 0, 1 + CTR_SIZE, c.start(state))
        c.finish(c.absorb(buf, start, end, k), out, off, TAG_SIZE)

    def _hello_state(self):
        # HELLO has no session yet: the state after one label block.
        b = self._blk
        self._label(L_HELLO, b)
        c = self.cmac
        c.seal_state(c.absorb(b, 0, 16, c.start()))
        t = self._t
        x = c.x
        for i in range(16):
            t[i] = x[i]
        return t

    def seal(self, buf, start, end, out, off, pending=False):
        """Tag buf[start:end] (header and payload) as this side's next frame: TAG_SIZE bytes into
        out[off:]. Returns the counter to send with it (covered by the tag), or 0 when there is
        no key or session, or the session's counters are spent (then a new HELLO)."""
        s = 1 if pending else 0
        if not (self.cmac.ready() and self._ok[s]):
            return 0
        ctr = self._tx[s] + 1
        if ctr >= CTR_LIMIT:
            return 0
        self._tx[s] = ctr
        self._tag(self._st[s], self.tx_dir, ctr, buf, start, end, out, off)
        return ctr

    def verify(self, buf, start, end, ctr, tag, toff):
        """Check a received frame: buf[start:end] with counter ctr and tag tag[toff:+TAG_SIZE].
        Tries the current session, then a pending one, which it then makes current. Returns
        OK, BAD_TAG, REPLAY or NO_KEY; every refusal is counted."""
        if not (self.cmac.ready() and (self._ok[0] or self._ok[1])):
            self.no_key += 1
            return NO_KEY
        t = self._t
        for s in (0, 1):
            if not self._ok[s]:
                continue
            self._tag(self._st[s], self.rx_dir, ctr, buf, start, end, t, 0)
            if equal(t, 0, tag, toff, TAG_SIZE):
                if ctr <= self._rx[s] or ctr >= CTR_LIMIT:
                    self.replay += 1
                    return REPLAY
                self._rx[s] = ctr
                if s == 1:
                    self._promote()
                return OK
        self.bad_tag += 1
        return BAD_TAG

    def _promote(self):
        a = self._st[0]
        b = self._st[1]
        for i in range(16):
            a[i] = b[i]
        self._ok[0] = True
        self._ok[1] = False
        self._tx[0] = self._tx[1]
        self._rx[0] = self._rx[1]
        self.sessions += 1

    def seal_hello(self, buf, start, end, out, off):
        """Tag a HELLO (which carries the host nonce) under the key alone. Returns False
        without a key. A recorded HELLO can be replayed; all it can do is propose a session
        that only a holder of the key can take."""
        if not self.cmac.ready():
            return False
        self._tag(self._hello_state(), DIR_TO_BOARD, 0, buf, start, end, out, off)
        return True

    def verify_hello(self, buf, start, end, tag, toff):
        """OK or BAD_TAG / NO_KEY (counted) for a HELLO's tag."""
        if not self.cmac.ready():
            self.no_key += 1
            return NO_KEY
        st = self._hello_state()
        self._tag(st, DIR_TO_BOARD, 0, buf, start, end, st, 0)
        if equal(st, 0, tag, toff, TAG_SIZE):
            return OK
        self.bad_tag += 1
        return BAD_TAG
