"""Link authentication (issue 12, the cryptographic core; docs/link-auth.md).

- mp_linkauth.py under CPython (in-process, the host's AES-ECB injected) and under the
  MicroPython unix port (cryptolib): RFC 4493, sessions, refusals, no allocation.
- mp_linkauth_64k.py: the module's RAM in a 64 KB heap, as deployed.
- The board's implementation against the host's (cryptography's CMAC), byte for byte, on
  random keys and frames: in-process, and under the real MicroPython.
- The host's side: refusals, key files (0600, atomic), a key never shown.
"""

import os
import pickle
import stat
import struct
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

import mpharness

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(mpharness.ROOT, "shared"))
sys.path.insert(0, HERE)

import mp_linkauth  # noqa: E402
import mp_linkauth_diff  # noqa: E402
from capshared import linkauth as la  # noqa: E402
from capwarden.errors import LinkError, StoreError  # noqa: E402
from capwarden.link import linkauth as hl  # noqa: E402

NAMES = mpharness.collect(os.path.join(HERE, "mp_linkauth.py"))
SMALL = mpharness.collect(os.path.join(HERE, "mp_linkauth_64k.py"))
RFC_KEY = bytes.fromhex(mp_linkauth.RFC_KEY)


@pytest.mark.parametrize("name", NAMES)
def test_under_cpython(name):
    getattr(mp_linkauth, name)()


@pytest.mark.micropython
@pytest.mark.parametrize("name", NAMES)
def test_under_micropython(name):
    failure = mpharness.run(os.path.join(HERE, "mp_linkauth.py"), name, paths=mpharness.SHARED_PATH, timeout=120)
    assert failure is None, failure


def _agent_rig():
    # The device tests' rig, built as those tests build it (folded, precompiled).
    return mpharness._compiled_test(os.path.join(mpharness.ROOT, "tests", "device", "mp_agent.py"))


@pytest.mark.micropython
@pytest.mark.parametrize("name", SMALL)
def test_64k_under_micropython(name):
    # Beside the agent: 64 KB plus what the device tests' rig occupies (mpharness.budget_heap).
    path = os.path.join(HERE, "mp_linkauth_64k.py")
    extra = [_agent_rig()]
    heap = mpharness.budget_heap(path, extra_path=extra) if "beside_the_agent" in name else "64K"
    failure = mpharness.run(path, name, heapsize=heap, compiled=True, extra_path=extra, timeout=120)
    assert failure is None, failure


def test_rfc4493_vectors_with_the_hosts_cmac():
    msg = bytes.fromhex(mp_linkauth.RFC_MSG)
    for n, want in mp_linkauth.RFC_TAGS:
        assert hl._cmac(RFC_KEY, msg[:n]).hex() == want


# ---- the board's implementation against the host's ------------------------------------------

case = st.tuples(
    st.binary(min_size=16, max_size=16),                 # key
    st.binary(min_size=8, max_size=8),                   # host nonce
    st.binary(min_size=8, max_size=8),                   # board nonce
    st.integers(0, (1 << 30) - 1),                       # boot id
    st.sampled_from([la.DIR_TO_BOARD, la.DIR_TO_HOST]),
    st.integers(1, la.CTR_LIMIT - 1),                    # counter
    st.binary(max_size=120),                             # a raw frame, every length up to MAX_RAW
)


def _line(c):
    key, nh, nb, boot_id, d, ctr, frame = c
    return "%s %s %s %d %d %d %s" % (key.hex(), nh.hex(), nb.hex(), boot_id, d, ctr, frame.hex() or "")


def _expected(c):
    # What the host computes, with cryptography's CMAC over the whole string.
    key, nh, nb, boot_id, d, ctr, frame = c
    host = hl.HostAuth(hl.LinkKey(key))
    host.nh = nh
    host.begin(nb, boot_id)
    tag = host._mac(host._prefix, d, ctr, frame)
    hello = host.hello_tag(frame)
    nonce = hl._cmac(key, la._L_NONCE + nb + struct.pack("<I", ctr))[:8]
    return " ".join((hl._cmac(key, frame).hex(), tag.hex(), hello.hex(), host.key.key_id.hex(), nonce.hex()))


def _write(tmp_path, cases):
    path = tmp_path / "cases.txt"
    # An empty frame still needs a field: "" is written as "-" and read back empty.
    path.write_text("".join(_line(c).rstrip() + (" -" if not c[6] else "") + "\n" for c in cases))
    return str(path)


@given(st.lists(case, min_size=1, max_size=8))
def test_the_hosts_continued_cmac_is_one_cmac_over_the_whole_string(cases):
    """HostAuth continues each tag from a saved state after the session prefix: the same tag as
    one CMAC over prefix, direction, counter and frame, whatever came before it, and a key
    changed under it is the key used."""
    host = hl.HostAuth(hl.LinkKey(cases[0][0]))
    for key, nh, nb, boot_id, d, ctr, frame in cases:
        host.key = hl.LinkKey(key)
        host.nh = nh
        host.begin(nb, boot_id)
        for _ in range(2):
            whole = host._prefix + bytes((d,)) + struct.pack("<I", ctr) + frame
            assert host._mac(host._prefix, d, ctr, frame) == hl._cmac(key, whole, la.TAG_SIZE)
            assert host.hello_tag(frame) == hl._cmac(key, la.L_HELLO + bytes(24) + bytes((1,)) + bytes(4) + frame,
                                                     la.TAG_SIZE)


@given(st.lists(case, min_size=1, max_size=20))
def test_board_code_agrees_with_the_host_in_process(tmp_path_factory, cases):
    path = _write(tmp_path_factory.mktemp("la"), cases)
    assert mp_linkauth_diff.compute(path) == [_expected(c) for c in cases]


@pytest.mark.micropython
@given(st.lists(case, min_size=1, max_size=40))
def test_board_code_under_micropython_agrees_with_the_host(tmp_path_factory, cases):
    path = _write(tmp_path_factory.mktemp("la"), cases)
    code = "import sys\nsys.path[:0] = %r\nimport mp_linkauth_diff\nmp_linkauth_diff.main(%r)\n" % (
        [HERE] + mpharness.SHARED_PATH, path)
    proc = subprocess.run([mpharness.MICROPYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    got = [ln[3:] for ln in proc.stdout.splitlines() if ln.startswith("LA ")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert got == [_expected(c) for c in cases]


# ---- a host and a board: the host's side with cryptography, the board's capshared ----------

class Link:
    def __init__(self, board_key=b"K" * 16, host_key=b"K" * 16, boot_id=77):
        self.board = la.LinkAuth(la.DIR_TO_HOST, hl.ecb)
        self.board.set_key(board_key)
        self.host = hl.HostAuth(hl.LinkKey(host_key))
        self.boot_id = boot_id

    def handshake(self):
        hello = b"\x00\x01\x05\x00"
        nh = self.host.hello()
        frame = hello + nh
        tag = self.host.hello_tag(frame)
        if self.board.verify(frame, 0, len(frame), 0, tag, 0, True) != la.OK:
            return False
        nb = bytearray(8)
        self.board.board_nonce(nb, 0)
        self.board.begin(nh, 0, nb, 0, self.boot_id, la.PENDING)
        hello_r = b"\x00\x81\x05\x00" + bytes(nb)
        t = bytearray(8)
        ctr = self.board.seal(hello_r, 0, len(hello_r), t, 0, la.PENDING)
        self.host.begin(nb, self.boot_id)
        if self.host.verify(hello_r, ctr, t) != la.OK:
            self.host.end()
            return False
        return self.to_board(b"\x01\x03\x06\x00")[0] == la.OK

    def to_board(self, frame):
        ctr, tag = self.host.seal(frame)
        return self.board.verify(frame, 0, len(frame), ctr, tag, 0), ctr, tag

    def to_host(self, frame):
        t = bytearray(8)
        ctr = self.board.seal(frame, 0, len(frame), t, 0)
        return self.host.verify(frame, ctr, bytes(t)), ctr, bytes(t)


def test_host_and_board_talk_and_refuse_replays_flips_and_strangers():
    link = Link()
    assert link.handshake()
    assert link.board.sessions == 1 and link.host.sessions == 1
    frame = b"\x02\x10\x07\x00abc"
    r, ctr, tag = link.to_board(frame)
    assert r == la.OK
    assert link.board.verify(frame, 0, len(frame), ctr, tag, 0) == la.REPLAY          # replayed
    flipped = bytes([frame[0] ^ 4]) + frame[1:]
    assert link.board.verify(flipped, 0, len(flipped), ctr + 1, tag, 0) == la.BAD_TAG  # flipped bit
    r, ctr, tag = link.to_host(b"\x03\x90\x07\x00")
    assert r == la.OK and link.host.verify(b"\x03\x90\x07\x00", ctr, tag) == la.REPLAY
    assert link.host.verify(b"\x03\x90\x07\x01", ctr + 1, tag) == la.BAD_TAG
    assert (link.board.replay, link.board.bad_tag, link.host.replay, link.host.bad_tag) == (1, 1, 1, 1)


def test_another_boards_key_fails_the_handshake():
    link = Link(board_key=b"A" * 16, host_key=b"B" * 16)
    assert not link.handshake()
    assert link.board.bad_tag == 1 and not link.board.ok[la.CURRENT]


def test_engine_restart_and_board_reboot_keep_replay_protection():
    link = Link()
    assert link.handshake()
    old_frames = [(f, *link.host.seal(f)) for f in (b"\x04\x11\x08\x00", b"\x05\x11\x09\x00")]
    # Engine restart: a new HostAuth with the same key; the old engine's frames are refused.
    link.host = hl.HostAuth(link.host.key)
    assert link.handshake() and link.board.sessions == 2
    for f, ctr, tag in old_frames:
        assert link.board.verify(f, 0, len(f), ctr, tag, 0) == la.BAD_TAG
    assert link.to_board(b"\x06\x11\x0a\x00")[0] == la.OK
    # Board reboot: a new board state; the host finds out (refusals, or the new boot id) and
    # says HELLO again. Frames of before are refused; the legitimate engine is not.
    f, ctr, tag = (b"\x07\x11\x0b\x00", *link.host.seal(b"\x07\x11\x0b\x00"))
    link.board = la.LinkAuth(la.DIR_TO_HOST, hl.ecb)
    link.board.set_key(b"K" * 16)
    link.boot_id = 78
    assert link.board.verify(f, 0, len(f), ctr, tag, 0) == la.NO_KEY
    assert link.handshake()
    assert link.board.verify(f, 0, len(f), ctr, tag, 0) == la.BAD_TAG
    for i in range(50):
        assert link.to_board(b"\x08\x11\x0c\x00" + bytes([i]))[0] == la.OK
        assert link.to_host(b"\x08\x91\x0c\x00" + bytes([i]))[0] == la.OK


def test_a_hello_from_the_old_engine_replayed_leaves_the_current_session_working():
    link = Link()
    assert link.handshake()
    frame = b"\x00\x01\x05\x00" + link.host.nh
    tag = link.host.hello_tag(frame)                  # recorded by a stranger
    assert link.board.verify(frame, 0, len(frame), 0, tag, 0, True) == la.OK
    nb = bytearray(8)
    link.board.board_nonce(nb, 0)
    link.board.begin(link.host.nh, 0, nb, 0, link.boot_id, la.PENDING)
    assert link.to_board(b"\x09\x12\x0d\x00")[0] == la.OK and link.board.sessions == 1


def test_host_without_session_or_key_refuses():
    host = hl.HostAuth()
    with pytest.raises(LinkError):
        host.hello()
    host = hl.HostAuth(hl.generate())
    assert host.verify(b"abcd", 1, bytes(8)) == la.NO_KEY and host.no_key == 1
    with pytest.raises(LinkError):
        host.seal(b"abcd")
    with pytest.raises(LinkError):
        host.begin(bytes(8), 1)        # no HELLO sent
    host.hello()
    host.begin(bytes(8), 1)
    host._tx = la.CTR_LIMIT - 2
    host.seal(b"abcd")
    with pytest.raises(LinkError, match="HELLO again"):
        host.seal(b"abcd")


# ---- link keys: generated, stored owner-only, never shown -----------------------------------

def test_generated_keys_are_random_and_hidden(capsys):
    a, b = hl.generate(), hl.generate()
    assert a != b and len(a.material()) == 16
    for shown in (repr(a), str(a), "%s %r" % (a, a), repr(hl.HostAuth(a))):
        assert a.material().hex() not in shown and a.key_id.hex() in shown
    with pytest.raises(TypeError):
        pickle.dumps(a)
    with pytest.raises(ValueError):
        hl.LinkKey(b"short")
    # The key id is the board's (capshared computes the same bytes).
    board = la.LinkAuth(la.DIR_TO_HOST, hl.ecb)
    board.set_key(a.material())
    assert bytes(board.key_id) == a.key_id


def test_key_file_is_written_owner_only_and_atomically(tmp_path):
    path = str(tmp_path / "board.key")
    old = hl.generate()
    hl.write_key(path, old)
    os.chmod(path, 0o644)          # an old file with a lax mode is replaced, not reused
    key = hl.generate()
    hl.write_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path, "rb").read() == key.material()
    assert hl.read_key(path) == key
    assert sorted(os.listdir(tmp_path)) == ["board.key"]      # no temporary file left


def test_key_file_refused_when_others_can_read_it_or_it_is_not_a_key(tmp_path):
    path = str(tmp_path / "board.key")
    key = hl.generate()
    hl.write_key(path, key)
    os.chmod(path, 0o640)
    with pytest.raises(StoreError, match="readable by others") as exc:
        hl.read_key(path)
    assert key.material().hex() not in str(exc.value)
    os.chmod(path, 0o600)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(StoreError, match="not a link key"):
        hl.read_key(path)
    with pytest.raises(StoreError, match="capwarden flash"):
        hl.read_key(str(tmp_path / "missing.key"))


def test_a_failed_write_keeps_the_old_key(tmp_path, monkeypatch):
    path = str(tmp_path / "board.key")
    key = hl.generate()
    hl.write_key(path, key)

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(StoreError, match="No space left"):
        hl.write_key(path, hl.generate())
    assert hl.read_key(path) == key and sorted(os.listdir(tmp_path)) == ["board.key"]
