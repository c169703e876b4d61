"""Link authentication: AES-128-CMAC tags (RFC 4493) on every frame, per-session counters.

Runs on the board (MicroPython: cryptolib.aes in ECB mode) and on CPython, where the host
injects an AES block function (capwarden.link.linkauth.ecb). Design and reasons:
docs/link-auth.md.

A tag is CMAC_K(P | dir | ctr | frame) cut to TAG_SIZE bytes. P is two blocks: for a session,
label, host nonce, board nonce, boot id; for a HELLO (no session yet), its label and zeros. CBC-MAC's
state after P (a 16-byte midstate) is computed once per session and each tag continues from it:
that is CMAC over the whole string, so the host checks it with any CMAC (cryptography's), while
the board keeps one AES key schedule for its life.

After set_key() nothing here allocates: tags, compares, counters, nonces and session set-up
work in buffers made at construction, so the agent can run them under micropython.heap_lock().
The module is small on purpose (board RAM, measured in tests/shared/test_linkauth.py).
"""

import sys

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from os import urandom
except ImportError:  # pragma: no cover - every port we target has it
    urandom = None

TAG_SIZE = const(8)          # 64 bits: a forgery is one chance in 2**64 per try
CTR_SIZE = const(4)          # u32 little-endian on the wire
NONCE_SIZE = const(8)
CTR_LIMIT = const(1 << 30)   # counters stay small ints on 32-bit boards; then a new HELLO

# Direction byte inside every tag: a frame the board sent is never taken for one the host sent.
DIR_TO_BOARD = const(1)
DIR_TO_HOST = const(2)

# verify() results; each refusal is counted per reason (LinkAuth.bad_tag, .replay, .no_key).
OK = const(0)
BAD_TAG = const(1)   # not made with this key in this session: forged, flipped, other key, old session
REPLAY = const(2)    # authentic, but its counter does not pass the last one accepted
NO_KEY = const(3)    # this side has no key, or no session: it accepts nothing

# Which midstate seal() and verify() use.
CURRENT = const(0)
PENDING = const(1)   # a board's proposed session (its HELLO_R), taken by the first frame under it
HELLO = const(2)     # a HELLO: the key alone (ctr 0)

# Domain labels, one per use of the key: no input to one use can be input to another.
_L_SESSION = const(b"capwSESS")
_L_HELLO = const(b"capwHELO")
_L_NONCE = const(b"capwNONC")
_L_KEYID = const(b"capwKYID")
_KEY = const(16)
_KEY_ID = const(4)

if sys.implementation.name != "micropython":
    # The host's copies (capwarden.link.linkauth); a board needs none of these names.
    KEY_SIZE, KEY_ID_SIZE = _KEY, _KEY_ID
    L_SESSION, L_HELLO, L_KEYID = _L_SESSION, _L_HELLO, _L_KEYID


def equal(a, ao, b, bo, n):
    """a[ao:ao+n] == b[bo:bo+n], reading every byte whatever differs first (no early exit: the
    time taken says nothing about where a forged tag went wrong)."""
    d = 0
    for i in range(n):
        d |= a[ao + i] ^ b[bo + i]
    return d == 0


def _double(src, dst, o):
    # dst[o:o+16] = src[0:16] * x in GF(2^128), RFC 4493 subkey generation.
    msb = src[0] & 0x80
    c = 0
    for i in range(15, -1, -1):
        v = src[i]
        dst[o + i] = ((v << 1) | c) & 0xFF
        c = v >> 7
    if msb:
        dst[o + 15] ^= 0x87


class LinkAuth:
    """One side of an authenticated link: key, current session, and on a board a pending one
    (proposed in answer to a HELLO, taken only when a frame authenticated under it arrives, so
    a replayed HELLO changes nothing the engine relies on).

    `tx_dir`: DIR_TO_HOST on a board, DIR_TO_BOARD on a host. `aes`: a factory aes(key) ->
    object with encrypt(src, dst) on 16-byte buffers, in place allowed; default cryptolib.aes
    (ECB). `enc` is None without a key; `ok[CURRENT]` says a session is up. Counters: bad_tag,
    replay, no_key (refusals), sessions (sessions taken). Few methods and attributes on purpose:
    each costs board RAM.
    """

    def __init__(self, tx_dir, aes=None):
        self.aes = aes
        self.enc = None
        self.key = None
        self.tx_dir = tx_dir
        self.rx_dir = DIR_TO_HOST if tx_dir == DIR_TO_BOARD else DIR_TO_BOARD
        self.x = bytearray(16)      # CBC chaining value
        self.k = bytearray(32)      # CMAC subkeys K1 | K2
        self.st = bytearray(48)     # midstates CURRENT | PENDING | HELLO
        self.ok = bytearray(3)      # which midstates hold a session
        self.tx = [0, 0, 0]         # last counter sent, per session
        self.rx = [0, 0, 0]         # last counter accepted
        self.b = bytearray(32)      # scratch: a message prefix, a tag
        self.key_id = bytearray(_KEY_ID)
        # Board nonces are PRF_K(label | boot nonce | count): never the same twice for one key
        # (a fresh boot nonce each start, a count within it), and made without allocating.
        self.boot_nonce = bytearray(urandom(NONCE_SIZE)) if urandom else bytearray(NONCE_SIZE)
        self.nonces = 0
        self.bad_tag = 0
        self.replay = 0
        self.no_key = 0
        self.sessions = 0

    def set_key(self, key):
        """Install the 16-byte link key (None: forget it): one AES key schedule, the subkeys,
        the HELLO midstate, the key id; every session ends. Allocates (once per key). Raises
        ValueError for another length."""
        ok = self.ok
        ok[CURRENT] = ok[PENDING] = ok[HELLO] = 0
        self.enc = None
        b = self.b
        for i in range(32):
            b[i] = 0
        if key is None:
            for i in range(_KEY_ID):
                self.key_id[i] = 0
            self.key = None
            return
        if len(key) != _KEY:
            raise ValueError("a link key is 16 bytes")
        self.key = key = bytes(key)     # a rekey decrypts under it (capagent.rekey)
        if self.aes is None:
            import cryptolib

            self.enc = cryptolib.aes(key, 1).encrypt
        else:
            self.enc = self.aes(key).encrypt
        x = self.x
        for i in range(16):
            x[i] = 0
        self.enc(x, x)              # L = AES_K(0^128); K1 = L.x, K2 = L.x^2 in GF(2^128)
        k = self.k
        _double(x, k, 0)
        _double(k, k, 16)
        self._prefix(_L_HELLO, HELLO)
        ok[HELLO] = 1
        self._prefix(_L_KEYID, -1)
        self.mac(-1, -1, 0, b, 0, 16, self.key_id, 0, _KEY_ID)   # CMAC_K(L_KEYID | 0^64)

    def _prefix(self, label, s):
        # b[0:8] := label (the caller fills b[8:32]); with s >= 0, midstate s := the CBC-MAC
        # state after the two blocks of b.
        b = self.b
        for i in range(8):
            b[i] = label[i]
        if s >= 0:
            x = self.x
            for i in range(16):
                x[i] = 0
            _absorb(x, self.enc, b, 0, 32, 0)
            self.enc(x, x)
            st = self.st
            for i in range(16):
                st[16 * s + i] = x[i]

    def mac(self, s, d, ctr, buf, start, end, out, off, n):
        """CMAC tag, first n bytes into out[off:]: of buf[start:end] alone (s = -1, d = -1: plain
        RFC 4493), or continuing midstate s with direction d and counter ctr first."""
        x = self.x
        enc = self.enc
        st = self.st
        for i in range(16):
            x[i] = st[16 * s + i] if s >= 0 else 0
        if d >= 0:
            x[0] ^= d
            for i in range(CTR_SIZE):
                x[1 + i] ^= (ctr >> (8 * i)) & 0xFF
            k = _absorb(x, enc, buf, start, end, 1 + CTR_SIZE)
        else:
            k = _absorb(x, enc, buf, start, end, 0)
        o = 0
        if k != 16:
            x[k] ^= 0x80          # pad 10*, and the other subkey
            o = 16
        sub = self.k
        for i in range(16):
            x[i] ^= sub[o + i]
        enc(x, x)
        for i in range(n):
            out[off + i] = x[i]

    def board_nonce(self, out, off):
        """A new board nonce (NONCE_SIZE bytes) into out[off:]. Needs the key."""
        b = self.b
        n = self.boot_nonce
        c = self.nonces
        self.nonces = c + 1
        for i in range(24):
            b[8 + i] = n[i] if i < NONCE_SIZE else ((c >> (8 * (i - 8))) & 0xFF if i < 12 else 0)
        self._prefix(_L_NONCE, -1)
        self.mac(-1, -1, 0, b, 0, 20, out, off, NONCE_SIZE)

    def begin(self, nh, nh_off, nb, nb_off, boot_id, s):
        """Derive the session of host nonce nh[nh_off:+8], board nonce nb[nb_off:+8] and the
        board's boot id, counters from 0, as CURRENT (a host, once HELLO_R arrives; s=CURRENT
        also ends a pending one) or PENDING (a board answering a HELLO). Returns False without a
        key."""
        if self.enc is None:
            return False
        b = self.b
        for i in range(NONCE_SIZE):
            b[8 + i] = nh[nh_off + i]
            b[16 + i] = nb[nb_off + i]
        for i in range(4):
            b[24 + i] = (boot_id >> (8 * i)) & 0xFF
            b[28 + i] = 0
        self._prefix(_L_SESSION, s)
        self.ok[s] = 1
        self.tx[s] = 0
        self.rx[s] = 0
        if s == CURRENT:
            self.ok[PENDING] = 0
            self.sessions += 1
        return True

    def seal(self, buf, start, end, out, off, s=CURRENT):
        """Tag buf[start:end] (header and payload) as this side's next frame in session s
        (HELLO: a host's HELLO, counter 0): TAG_SIZE bytes into out[off:]. Returns the counter
        to send with it, or -1 without key or session, or when the session's counters are spent
        (then a new HELLO)."""
        if self.enc is None or not self.ok[s]:
            return -1
        ctr = 0
        if s != HELLO:
            ctr = self.tx[s] + 1
            if ctr >= CTR_LIMIT:
                return -1
            self.tx[s] = ctr
        self.mac(s, self.tx_dir, ctr, buf, start, end, out, off, TAG_SIZE)
        return ctr

    def verify(self, buf, start, end, ctr, tag, toff, hello=False):
        """Check a received frame buf[start:end] with counter ctr and tag tag[toff:+TAG_SIZE]:
        under the current session, then a pending one (which it then makes current); with
        hello=True, as a HELLO (counter 0). Returns OK, BAD_TAG, REPLAY or NO_KEY; every
        refusal is counted."""
        ok = self.ok
        if self.enc is None or not (hello or ok[CURRENT] or ok[PENDING]):
            self.no_key += 1
            return NO_KEY
        t = self.b
        for s in (HELLO, CURRENT, PENDING):
            if (s == HELLO) != hello or not ok[s]:
                continue
            self.mac(s, self.rx_dir, ctr, buf, start, end, t, 0, TAG_SIZE)
            if equal(t, 0, tag, toff, TAG_SIZE):
                if s == HELLO:
                    if ctr == 0:
                        return OK
                elif self.rx[s] < ctr < CTR_LIMIT:
                    self.rx[s] = ctr
                    if s == PENDING:   # taken: it becomes the current session
                        st = self.st
                        for i in range(16):
                            st[i] = st[16 + i]
                        ok[CURRENT] = 1
                        ok[PENDING] = 0
                        self.tx[CURRENT] = self.tx[PENDING]
                        self.rx[CURRENT] = ctr
                        self.sessions += 1
                    return OK
                self.replay += 1
                return REPLAY
        self.bad_tag += 1
        return BAD_TAG


def _absorb(x, enc, buf, start, end, k):
    # XOR buf[start:end] into the CBC state x; a full block is encrypted only when more data
    # follows it (CMAC treats the last block apart). k: bytes already in the current block.
    for i in range(start, end):
        if k == 16:
            enc(x, x)
            k = 0
        x[k] ^= buf[i]
        k += 1
    return k
