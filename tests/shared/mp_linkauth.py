# capshared.linkauth under both interpreters: test_linkauth.py runs each test_ here in-process
# (CPython, with the host's AES-ECB block function injected) and under the MicroPython unix port
# (cryptolib). The heap tests lock the heap on MicroPython only (CPython has no heap lock).
import gc

from capshared.linkauth import (
    BAD_TAG, CTR_LIMIT, CURRENT, DIR_TO_BOARD, DIR_TO_HOST, HELLO, NO_KEY, OK, PENDING, REPLAY, TAG_SIZE,
    LinkAuth, equal,
)

try:
    import micropython
    import cryptolib  # noqa: F401

    AES = None          # capshared.linkauth's default: cryptolib.aes(key, 1)
except ImportError:
    micropython = None
    from capwarden.link.linkauth import ecb as AES

K = bytes(range(16))
K_OTHER = bytes(range(1, 17))
RFC_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
RFC_MSG = ("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
           "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
# RFC 4493 section 4: subkeys, then (message length, tag).
RFC_K1 = "fbeed618357133667c85e08f7236a8de"
RFC_K2 = "f7ddac306ae266ccf90bc11ee46d513b"
RFC_TAGS = ((0, "bb1d6929e95937287fa37d129b756746"), (16, "070a16b46b4d4144f79bdd9dd04a287c"),
            (40, "dfa66747de9ae63030ca32611497c827"), (64, "51f0bebf7e3b9d92fc49741779363cfe"))


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def _hex(b):
    return "".join("%02x" % x for x in b)


class Pair:
    # A board and a host, both capshared.linkauth, after a handshake: HELLO (the host's nonce,
    # tagged under the key), HELLO_R (the board's nonce and boot id, tagged in the proposed
    # session), the host's first frame (which makes that session the board's).
    def __init__(self, board_key=K, host_key=K, boot_id=0x1234567):
        self.board = LinkAuth(DIR_TO_HOST, AES)
        self.host = LinkAuth(DIR_TO_BOARD, AES)
        self.board.set_key(board_key)
        self.host.set_key(host_key)
        self.boot_id = boot_id
        self.tag = bytearray(TAG_SIZE)
        self.nh = bytearray(8)
        self.nb = bytearray(8)

    def handshake(self, nh_seed=7):
        for i in range(8):
            self.nh[i] = (nh_seed * 31 + i) & 0xFF
        hello = b"\x00\x01\x05\x00" + bytes(self.nh)
        assert self.host.seal(hello, 0, len(hello), self.tag, 0, HELLO) == 0
        assert self.board.verify(hello, 0, len(hello), 0, self.tag, 0, True) == OK
        self.board.board_nonce(self.nb, 0)
        assert self.board.begin(self.nh, 0, self.nb, 0, self.boot_id, PENDING)
        hello_r = b"\x00\x81\x05\x00" + bytes(self.nb)
        ctr = self.board.seal(hello_r, 0, len(hello_r), self.tag, 0, PENDING)
        assert ctr == 1
        self.host.begin(self.nh, 0, self.nb, 0, self.boot_id, CURRENT)
        assert self.host.verify(hello_r, 0, len(hello_r), ctr, self.tag, 0) == OK
        return self.to_board(b"\x01\x03\x06\x00ping")

    def to_board(self, frame):
        ctr = self.host.seal(frame, 0, len(frame), self.tag, 0)
        return self.board.verify(frame, 0, len(frame), ctr, self.tag, 0), ctr, bytes(self.tag)

    def to_host(self, frame):
        ctr = self.board.seal(frame, 0, len(frame), self.tag, 0)
        return self.host.verify(frame, 0, len(frame), ctr, self.tag, 0), ctr, bytes(self.tag)


def test_rfc4493_subkeys_and_tags():
    c = LinkAuth(DIR_TO_HOST, AES)
    c.set_key(_unhex(RFC_KEY))
    assert _hex(c.k[:16]) == RFC_K1 and _hex(c.k[16:]) == RFC_K2
    msg = _unhex(RFC_MSG)
    out = bytearray(16)
    for n, want in RFC_TAGS:
        c.mac(-1, -1, 0, msg, 0, n, out, 0, 16)
        assert _hex(out) == want, (n, _hex(out))
    # A slice in the middle of a buffer, and a short tag: the same bytes.
    big = b"xyz" + msg[:40] + b"tail"
    t8 = bytearray(10)
    c.mac(-1, -1, 0, big, 3, 43, t8, 2, 8)
    assert _hex(t8[2:]) == RFC_TAGS[2][1][:16]


class Reads:
    # A tag buffer that records which bytes were read: a compare that stops at the first
    # difference reads fewer of them.
    def __init__(self, data):
        self.data = data
        self.seen = []

    def __getitem__(self, i):
        self.seen.append(i)
        return self.data[i]


def test_constant_time_compare_reads_every_byte_whatever_differs():
    a = bytes(range(8))
    for at in range(8):
        b = bytearray(a)
        b[at] ^= 0x40
        r = Reads(b)
        assert not equal(a, 0, r, 0, 8)
        assert r.seen == list(range(8)), (at, r.seen)
    r = Reads(bytes(a))
    assert equal(a, 0, r, 0, 8) and r.seen == list(range(8))


def test_verify_reads_the_whole_tag_of_a_forgery():
    p = Pair()
    p.handshake()
    frame = b"\x02\x10\x07\x00abc"
    for first_wrong in (0, 3, 7):
        tag = bytearray(TAG_SIZE)
        ctr = p.host.seal(frame, 0, len(frame), tag, 0)
        tag[first_wrong] ^= 1
        r = Reads(b"ZZ" + bytes(tag))
        assert p.board.verify(frame, 0, len(frame), ctr, r, 2) == BAD_TAG
        # Current and pending both tried (none pending here): every byte of the tag is read.
        assert r.seen == list(range(2, 2 + TAG_SIZE)), r.seen


def test_handshake_then_frames_both_ways():
    p = Pair()
    assert p.handshake()[0] == OK
    assert p.board.ok[CURRENT] and p.board.sessions == 1 and p.host.sessions == 1
    for i in range(20):
        assert p.to_board(b"\x03\x11\x08\x00" + bytes([i]) * i)[0] == OK
        assert p.to_host(b"\x04\x91\x08\x00" + bytes([i]) * i)[0] == OK
    assert p.board.bad_tag == p.board.replay == p.board.no_key == 0


def test_replayed_frame_refused_and_counted():
    p = Pair()
    p.handshake()
    frame = b"\x05\x12\x09\x00\x01\x02"
    r, ctr, tag = p.to_board(frame)
    assert r == OK
    assert p.board.verify(frame, 0, len(frame), ctr, tag, 0) == REPLAY
    # An older authentic frame after a newer one: also a replay (the window only moves on).
    old = b"\x06\x12\x0a\x00"
    _r, c1, t1 = p.to_board(old)
    assert p.to_board(b"\x07\x12\x0b\x00")[0] == OK
    assert p.board.verify(old, 0, len(old), c1, t1, 0) == REPLAY
    assert p.board.replay == 2 and p.board.bad_tag == 0
    # The host refuses the board's replays the same way.
    r, ctr, tag = p.to_host(frame)
    assert p.host.verify(frame, 0, len(frame), ctr, tag, 0) == REPLAY and p.host.replay == 1


def test_a_flipped_bit_anywhere_is_refused():
    p = Pair()
    p.handshake()
    frame = bytearray(b"\x08\x13\x0c\x00payload!")
    tag = bytearray(TAG_SIZE)
    ctr = p.host.seal(frame, 0, len(frame), tag, 0)
    refused = 0
    for i in range(len(frame)):
        for bit in range(8):
            frame[i] ^= 1 << bit
            refused += p.board.verify(frame, 0, len(frame), ctr, tag, 0) == BAD_TAG
            frame[i] ^= 1 << bit
    for i in range(TAG_SIZE):
        for bit in range(8):
            tag[i] ^= 1 << bit
            refused += p.board.verify(frame, 0, len(frame), ctr, tag, 0) == BAD_TAG
            tag[i] ^= 1 << bit
    for bit in range(30):
        refused += p.board.verify(frame, 0, len(frame), ctr ^ (1 << bit), tag, 0) == BAD_TAG
    total = 8 * len(frame) + 8 * TAG_SIZE + 30
    assert refused == total and p.board.bad_tag == total
    assert p.board.verify(frame, 0, len(frame), ctr, tag, 0) == OK  # the frame itself still passes


def test_direction_is_covered_a_board_frame_sent_back_is_refused():
    p = Pair()
    p.handshake()
    frame = b"\x09\x14\x0d\x00"
    tag = bytearray(TAG_SIZE)
    ctr = p.board.seal(frame, 0, len(frame), tag, 0)
    assert p.board.verify(frame, 0, len(frame), ctr, tag, 0) == BAD_TAG  # reflected to the board


def test_another_boards_key_is_refused():
    p = Pair(board_key=K, host_key=K_OTHER)
    hello = b"\x00\x01\x05\x00" + bytes(8)
    assert p.host.seal(hello, 0, len(hello), p.tag, 0, HELLO) == 0
    assert p.board.verify(hello, 0, len(hello), 0, p.tag, 0, True) == BAD_TAG
    assert p.board.key_id != p.host.key_id
    # Even with the session set up on both sides, its frames do not pass.
    p.board.begin(p.nh, 0, p.nb, 0, p.boot_id, CURRENT)
    p.host.begin(p.nh, 0, p.nb, 0, p.boot_id, CURRENT)
    assert p.to_board(b"\x0a\x15\x0e\x00")[0] == BAD_TAG
    assert p.to_host(b"\x0a\x95\x0e\x00")[0] == BAD_TAG
    assert p.board.bad_tag == 2 and p.host.bad_tag == 1


def test_old_session_refused_once_a_new_one_is_taken():
    # An engine restart: the new engine's HELLO proposes a session; its first frame takes it;
    # every frame of the old engine is refused from then on, counted as not authentic here.
    p = Pair()
    p.handshake(nh_seed=1)
    old_frame = b"\x0b\x16\x0f\x00old"
    old_tag = bytearray(TAG_SIZE)
    old_ctr = p.host.seal(old_frame, 0, len(old_frame), old_tag, 0)  # captured, not delivered
    old_host = p.host
    p.host = LinkAuth(DIR_TO_BOARD, AES)
    p.host.set_key(K)
    assert p.handshake(nh_seed=2)[0] == OK and p.board.sessions == 2
    assert p.board.verify(old_frame, 0, len(old_frame), old_ctr, old_tag, 0) == BAD_TAG
    later = b"\x0c\x16\x10\x00"
    c = old_host.seal(later, 0, len(later), old_tag, 0)
    assert p.board.verify(later, 0, len(later), c, old_tag, 0) == BAD_TAG
    assert p.to_board(b"\x0d\x16\x11\x00new")[0] == OK
    assert p.board.bad_tag == 2


def test_a_hello_changes_nothing_until_a_frame_under_it_arrives():
    p = Pair()
    p.handshake(nh_seed=3)
    # A stranger's HELLO (no key): refused, counted, no session proposed.
    hello = b"\x00\x01\x05\x00" + bytes(8)
    assert p.board.verify(hello, 0, len(hello), 0, bytes(TAG_SIZE), 0, True) == BAD_TAG
    # A replayed HELLO (authentic, old): the board proposes a session nobody takes, and the
    # engine's current session goes on working, its counters intact.
    p.board.board_nonce(p.nb, 0)
    p.board.begin(p.nh, 0, p.nb, 0, p.boot_id, PENDING)
    for i in range(5):
        assert p.to_board(b"\x0e\x17\x12\x00" + bytes([i]))[0] == OK
        assert p.to_host(b"\x0e\x97\x12\x00" + bytes([i]))[0] == OK
    assert p.board.sessions == 1 and p.board.bad_tag == 1


def test_board_reboot_makes_old_frames_fail_and_the_engine_reconnects():
    p = Pair(boot_id=11)
    p.handshake(nh_seed=4)
    frame = b"\x0f\x18\x13\x00"
    tag = bytearray(TAG_SIZE)
    ctr = p.host.seal(frame, 0, len(frame), tag, 0)
    # Reboot: a new agent, same key, new boot id and boot nonce, no session.
    p.board = LinkAuth(DIR_TO_HOST, AES)
    p.board.set_key(K)
    p.boot_id = 12
    assert p.board.verify(frame, 0, len(frame), ctr, tag, 0) == NO_KEY   # no session yet
    # Even the same host nonce makes another session (another board nonce, boot id).
    assert p.handshake(nh_seed=4)[0] == OK
    assert p.board.verify(frame, 0, len(frame), ctr, tag, 0) == BAD_TAG
    assert p.to_board(frame)[0] == OK


def test_no_key_refuses_everything_and_counts_it():
    b = LinkAuth(DIR_TO_HOST, AES)
    t = bytearray(TAG_SIZE)
    f = b"\x00\x01\x05\x00"
    assert b.enc is None and b.seal(f, 0, 4, t, 0) == -1 and b.seal(f, 0, 4, t, 0, HELLO) == -1
    assert b.verify(f, 0, 4, 0, t, 0, True) == NO_KEY and b.verify(f, 0, 4, 1, t, 0) == NO_KEY
    assert not b.begin(t, 0, t, 0, 1, PENDING)
    assert b.no_key == 2
    p = Pair()
    p.handshake()
    p.board.set_key(None)
    assert p.board.key_id == bytearray(4)
    assert p.to_board(f)[0] == NO_KEY and p.board.no_key == 1


def test_spent_counters_stop_sealing():
    p = Pair()
    p.handshake()
    p.host.tx[CURRENT] = CTR_LIMIT - 2
    assert p.to_board(b"\x10\x19\x14\x00")[0] == OK
    assert p.host.seal(b"abcd", 0, 4, p.tag, 0) == -1  # a new HELLO is needed
    # A counter at the limit is refused even with a good tag (seal never makes one).
    p.host.mac(CURRENT, DIR_TO_BOARD, CTR_LIMIT, b"abcd", 0, 4, p.tag, 0, TAG_SIZE)
    assert p.board.verify(b"abcd", 0, 4, CTR_LIMIT, p.tag, 0) == REPLAY


def test_board_nonces_never_repeat():
    b = LinkAuth(DIR_TO_HOST, AES)
    b.set_key(K)
    seen = {}
    out = bytearray(8)
    for _ in range(500):
        b.board_nonce(out, 0)
        seen[bytes(out)] = 1
    other = LinkAuth(DIR_TO_HOST, AES)   # another boot: another boot nonce
    other.set_key(K)
    other.board_nonce(out, 0)
    seen[bytes(out)] = 1
    assert len(seen) == 501


def _lock():
    if micropython:
        micropython.heap_lock()


def _unlock():
    if micropython:
        micropython.heap_unlock()


def test_seal_and_verify_10000_frames_allocate_nothing():
    p = Pair()
    p.handshake()
    frame = bytearray(32)
    tag = bytearray(TAG_SIZE)
    host, board = p.host, p.board
    for i in range(10):
        c = host.seal(frame, 0, 32, tag, 0)
        board.verify(frame, 0, 32, c, tag, 0)
    gc.collect()
    before = gc.mem_alloc() if micropython else 0
    ok = 0
    _lock()
    try:
        for i in range(10000):
            frame[4] = i & 0xFF
            c = host.seal(frame, 0, 32, tag, 0)
            ok += board.verify(frame, 0, 32, c, tag, 0) == OK
            c = board.seal(frame, 0, 32, tag, 0)
            ok += host.verify(frame, 0, 32, c, tag, 0) == OK
            tag[0] ^= 1
            ok += board.verify(frame, 0, 32, c, tag, 0) == OK   # a forgery: refused, no allocation
    finally:
        _unlock()
    after = gc.mem_alloc() if micropython else 0
    assert ok == 20000 and board.bad_tag == 10000
    print("mem_alloc before", before, "after", after)
    assert after == before


def test_hello_and_session_set_up_allocate_nothing():
    p = Pair()
    p.handshake()
    hello = bytearray(b"\x00\x01\x05\x00" + bytes(8))
    gc.collect()
    _lock()
    try:
        for i in range(200):
            hello[4] = i & 0xFF
            p.host.seal(hello, 0, 12, p.tag, 0, HELLO)
            r = p.board.verify(hello, 0, 12, 0, p.tag, 0, True)
            p.board.board_nonce(p.nb, 0)
            p.board.begin(hello, 4, p.nb, 0, p.boot_id, PENDING)
            c = p.board.seal(hello, 0, 12, p.tag, 0, PENDING)
            p.host.begin(hello, 4, p.nb, 0, p.boot_id, CURRENT)
            r2 = p.host.verify(hello, 0, 12, c, p.tag, 0)
            c = p.host.seal(hello, 0, 12, p.tag, 0)
            r3 = p.board.verify(hello, 0, 12, c, p.tag, 0)
            if r or r2 or r3:
                break
    finally:
        _unlock()
    assert r == r2 == r3 == OK and p.board.sessions == 201
