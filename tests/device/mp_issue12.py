# Issue 12 on the agent itself (docs/link-auth.md): a board without a key refuses everything and
# says so; frames replayed, altered or from another session are dropped before any handler and
# counted; a refused HELLO is answered with an ANNOUNCE naming the board's key id.
from agent_rig import Rig
from capshared import wire as W
from capshared.limits import MODE_WRITE

_KEY_ID = 13   # ANNOUNCE's key_id, a payload offset


def _feed(r, saved, n):
    line = r.line
    for k in range(n):
        line.buf[k] = saved[k]
    line.i = 0
    line.n = n
    r.agent.step(0)


def test_a_board_without_a_key_refuses_every_frame_and_announces_it():
    r = Rig(key=None)
    r.agent._hello(W.ANNOUNCE, 0)                 # what announce() sends after its delimiter
    assert r.line.last_mid == W.ANNOUNCE
    assert [r.line.u8(_KEY_ID + i) for i in range(4)] == [0, 0, 0, 0]
    frames = r.line.frames
    e = r.begin(W.PING)
    e.u32(5)
    r.send()
    ml = [x.name for x in r.agent.resources].index("motor_left")
    r.acquire(ml, MODE_WRITE, 5)
    assert r.line.frames == frames and r.agent.control.g.count() == 0     # no answer, no grant
    r.begin(W.HELLO)
    assert r.send() == W.ANNOUNCE                  # a HELLO is refused: the board says why
    a = r.agent.link.auth
    assert a.no_key == 3 and r.agent.link.frames_rx == 0


def test_replayed_and_altered_frames_are_dropped_and_counted():
    r = Rig()
    ml = [x.name for x in r.agent.resources].index("motor_left")
    e = r.begin(W.ACQUIRE)
    e.u8(ml)
    e.u8(MODE_WRITE)
    e.u32(5)
    e.u32(60000)
    e.u32(0)
    n = r.wire()
    saved = bytearray(r.enc.wire[:n])
    _feed(r, saved, n)
    assert r.line.last_mid == W.ACQUIRE_R
    r.release(ml, 5)
    assert r.agent.control.g.count() == 0
    a = r.agent.link.auth
    _feed(r, saved, n)                             # the ACQUIRE again, after the release
    assert r.agent.control.g.count() == 0 and a.replay == 1
    # The same frame with a payload bit flipped and its CRC made good: the tag fails.
    e = r.begin(W.HEARTBEAT)
    e.u32(3)
    raw = e.raw
    nraw = e.n
    n = r.wire()                                   # sealed: raw now holds header..tag
    raw[5] ^= 0x01
    e.n = nraw + 12
    n = e.finish()
    _feed(r, e.wire, n)
    assert a.bad_tag == 1 and r.line.errors == 0


def test_an_old_session_is_refused_after_a_new_hello():
    r = Rig()
    e = r.begin(W.PING)                            # the first session, taken
    e.u32(0)
    assert r.send() == W.PING_R
    e = r.begin(W.PING)
    e.u32(1)
    n = r.wire()
    saved = bytearray(r.enc.wire[:n])
    r.begin(W.HELLO)
    assert r.send() == W.HELLO_R
    e = r.begin(W.PING)                            # the new session is taken by its first frame
    e.u32(2)
    assert r.send() == W.PING_R
    a = r.agent.link.auth
    _feed(r, saved, n)                             # a frame of the old session, never sent before
    assert a.bad_tag == 1 and a.sessions == 2
