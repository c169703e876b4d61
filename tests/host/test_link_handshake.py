"""Issue 12, the host's side of the handshake (docs/link-auth.md "The handshake on the host").

- After a new HELLO the board keeps speaking its current session until the host's first frame
  in the new one: the host takes those frames (with that session's own replay counter) until a
  board frame verifies in the new session, never a session older than that.
- Every HELLO of a Board goes through one handshake task: concurrent callers share it and end
  in one session; its failure, with its reason, is every caller's.

The HostAuth tests pair it with the board's own capshared LinkAuth in process; the Board tests
run against the real virtual board.
"""

import asyncio

import pytest

from capshared import linkauth as la
from capshared.limits import MODE_WRITE
from capwarden.errors import LinkTimeout
from capwarden.link import GrantEnded, open_board
from capwarden.link import linkauth as hl
from capwarden.sim import VirtualBoard
from eventloop import loop_runner, wait_until

K = b"K" * 16
BOOT = 7

run = pytest.fixture(loop_runner, name="run")


# ---- HostAuth against the board's LinkAuth -------------------------------------------------

class Pair:
    def __init__(self):
        self.board = la.LinkAuth(la.DIR_TO_HOST, hl.ecb)
        self.board.set_key(K)
        self.host = hl.HostAuth(hl.LinkKey(K))

    def hello(self):
        """HELLO and HELLO_R, as the agent does them: the board proposes (PENDING) and keeps
        its current session; the host begins the proposed one and checks HELLO_R in it."""
        nh = self.host.hello()
        frame = b"\x00\x01\x05\x00" + nh
        assert self.board.verify(frame, 0, len(frame), 0, self.host.hello_tag(frame), 0, True) == la.OK
        nb = bytearray(8)
        self.board.board_nonce(nb, 0)
        self.board.begin(nh, 0, nb, 0, BOOT, la.PENDING)
        self.host.begin(nb, BOOT)
        assert self.host.verify(*self.sealed(b"\x00\x81\x05\x00" + bytes(nb), la.PENDING)) == la.OK

    def sealed(self, frame, s=la.CURRENT):
        """A board frame: (frame, ctr, tag), sealed in the board's session s."""
        t = bytearray(8)
        ctr = self.board.seal(frame, 0, len(frame), t, 0, s)
        assert ctr > 0
        return frame, ctr, bytes(t)

    def to_board(self, frame):
        ctr, tag = self.host.seal(frame)
        return self.board.verify(frame, 0, len(frame), ctr, tag, 0)


def test_the_boards_frames_of_the_old_session_after_hello_r_are_taken_until_it_speaks_the_new():
    p = Pair()
    p.hello()
    assert p.to_board(b"\x01\x03\x06\x00") == la.OK          # the board takes session 1
    p.hello()                                                # session 2 proposed, HELLO_R heard
    early = p.sealed(b"\x02\x82\x07\x00")                    # the board still speaks session 1
    assert p.host.verify(*early) == la.OK                    # was dropped as bad_tag
    assert p.host.verify(*early) == la.REPLAY                # session 1's own counter
    late = p.sealed(b"\x03\x82\x08\x00")                     # session 1, held back on the line
    assert p.to_board(b"\x04\x03\x09\x00") == la.OK          # the host's first frame in 2 (never 1)
    assert p.board.sessions == 2
    assert p.host.verify(*p.sealed(b"\x05\x83\x0a\x00")) == la.OK   # the board speaks 2
    assert p.host.verify(*late) == la.BAD_TAG                # and session 1 is gone for good
    assert (p.host.bad_tag, p.host.replay, p.host.no_key) == (1, 1, 0)


def test_never_a_session_older_than_the_previous_one():
    # Two HELLOs before the host sent anything in the first: the board still speaks session 1
    # (it never took 2), so 1 is the one still heard.
    p = Pair()
    p.hello()
    assert p.to_board(b"\x01\x03\x06\x00") == la.OK          # board in 1
    one, one_late = p.sealed(b"\x02\x82\x07\x00"), p.sealed(b"\x03\x82\x08\x00")
    p.hello()                                                # 2 proposed; nothing sent in it
    p.hello()                                                # 3 proposed
    assert p.host.verify(*one) == la.OK
    assert p.to_board(b"\x04\x03\x09\x00") == la.OK          # board in 3
    assert p.host.verify(*p.sealed(b"\x05\x82\x0a\x00")) == la.OK
    assert p.host.verify(*one_late) == la.BAD_TAG
    # A frame sent in 2 before the next HELLO: the board may have taken 2, which is then the
    # one still heard, and 1 (two sessions back) never again.
    q = Pair()
    q.hello()
    assert q.to_board(b"\x01\x03\x06\x00") == la.OK          # board in 1
    first = q.sealed(b"\x02\x82\x07\x00")
    q.hello()
    assert q.to_board(b"\x03\x03\x08\x00") == la.OK          # board in 2 (the host heard nothing in it)
    q.hello()                                                # 3 proposed
    assert q.host.verify(*q.sealed(b"\x04\x82\x09\x00")) == la.OK    # the board's 2
    assert q.host.verify(*first) == la.BAD_TAG
    q.host.hello()                                           # nothing is sent in an old session
    with pytest.raises(hl.LinkError):
        q.host.seal(b"\x05\x03\x0a\x00")


def test_a_failed_hello_r_keeps_the_session_the_board_still_speaks():
    p = Pair()
    p.hello()
    assert p.to_board(b"\x01\x03\x06\x00") == la.OK
    p.host.hello()
    p.host.begin(bytes(8), BOOT)                             # a HELLO_R whose tag fails
    assert p.host.verify(b"\x00\x81\x05\x00" + bytes(8), 1, bytes(8)) == la.BAD_TAG
    p.host.end()
    assert p.host.verify(*p.sealed(b"\x02\x82\x07\x00")) == la.OK


# ---- Board against the virtual board ---------------------------------------------------------

@pytest.fixture(scope="module")
def vb():
    with VirtualBoard() as board:
        yield board


async def _open(vb):
    return await open_board(vb.port, timeout=0.5, retries=2)


def _no_frame_refused(board):
    counts = board.host_counts()
    assert (counts["bad_tag"], counts["replay"], counts["no_key"]) == (0, 0, 0), counts


def test_an_event_the_board_sends_in_the_old_session_after_a_new_hello_is_taken(vb, run):
    async def go():
        board = await _open(vb)
        try:
            seen = []
            board.subscribe(seen.append)
            ml = board.resource_index("motor_left")
            await board.acquire(ml, MODE_WRITE, 5, 1500)
            await board._resync()           # a new HELLO; the host sends nothing in it yet
            # The lease runs out on the board, which still speaks the old session: its
            # EV_GRANT_ENDED comes under it (the old code dropped it as a bad tag).
            assert await wait_until(lambda: any(isinstance(e, GrantEnded) for e in seen), 10)
            ended = [e for e in seen if isinstance(e, GrantEnded)]
            assert ended[0].session == 5 and ended[0].reason == "lease_expired"
            assert (await board.ping())["mem_free"] > 0          # the new session, taken
            _no_frame_refused(board)
        finally:
            await board.close()

    run(go())


def test_concurrent_handshakes_are_one_and_every_caller_gets_it(vb, run):
    async def go():
        board = await _open(vb)
        try:
            before = board.auth.sessions
            a, b = await asyncio.gather(board._read_info(), board._read_info())
            assert board.auth.sessions == before + 1
            assert a.boot_id == b.boot_id and [r.name for r in a.resources] == [r.name for r in b.resources]
            # Requests that find no session (one given up, say) join the same handshake too.
            board.auth.retire()
            out = await asyncio.gather(board.ping(), board.stats(), board._read_info())
            assert board.auth.sessions == before + 2 and out[0]["mem_free"] > 0
            _no_frame_refused(board)
        finally:
            await board.close()

    run(go())


def test_a_failing_handshake_tells_every_caller_why(vb, run):
    async def go():
        board = await _open(vb)
        try:
            # The engine's key is no longer the board's (another process rekeyed it, say):
            # the next request says HELLO, the board refuses it and announces its key id.
            board.auth = hl.HostAuth(hl.generate())
            out = await asyncio.gather(board.ping(), board.stats(), return_exceptions=True)
            for exc in out:
                assert isinstance(exc, LinkTimeout), exc
                assert "holds another link key (key id %s" % vb.link_key.key_id.hex() in str(exc)
            with pytest.raises(LinkTimeout, match="another link key"):
                await board._read_info()
        finally:
            await board.close()

    run(go())
