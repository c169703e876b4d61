"""Issue 12 on the virtual board: the board obeys only its engine. A stranger on the line (a
second process on the port, a replay of captured frames, a flipped bit, another board's key)
changes nothing on the board and is counted; a reboot of the board, a restart of the engine,
and both, keep replay protection and never refuse the legitimate engine.

Frames the engine sent are captured from its transport; the stranger's bytes go in through the
virtual cable (the line itself), so they reach the board exactly as the engine's do.
"""

import asyncio
import subprocess
import sys

from capshared import codec
from capshared.limits import AUTH_SIZE
from capwarden.errors import DeviceError, LinkTimeout
from capwarden.link import Board, linkauth, open_board, opens_session, rekey
from capwarden.link.linkauth import generate
from capwarden.sim import TO_BOARD
from hil.helpers import LONG, W, speed


def _capture(board):
    """Every frame the engine writes from now on, as wire bytes (delimiter included)."""
    sent = []
    write = board.transport.write

    def spy(data):
        sent.append(bytes(data))
        write(data)

    board.transport.write = spy
    return sent


def _frames(sent):
    out = []
    for chunk in sent:
        out += [c + b"\x00" for c in chunk.split(b"\x00") if c]
    return out


def _raw(wire):
    # The raw frame (header, payload, counter, tag) of one wire frame.
    _kind, data = codec._unescape(wire[:-1], True)
    raw = codec._uncobs(data)
    return raw[:-2]


async def _settle(board):
    await asyncio.sleep(0.3)
    return await board.stats()


def _refused(before, after):
    return {k: after[k] - before[k] for k in ("bad_tag", "replay", "no_key")}


def test_replay_of_captured_frames_changes_nothing(vboard, board, run):
    ml = board.resource_index("motor_left")

    async def scenario():
        sent = _capture(board)
        g = await board.acquire(ml, W, 7, LONG)
        await board.actuate(ml, 7, g.epoch, 1, speed(200))
        await board.release(ml, 7, g.epoch)
        frames = _frames(sent)
        before = await board.stats()
        for f in frames:                                    # the whole conversation, again
            vboard.cable.inject_bytes(TO_BOARD, f)
        after = await _settle(board)
        return before, after, await board.grants(ml)

    before, after, grants = run(scenario())
    assert grants == []                                      # no grant came back
    assert _refused(before, after)["replay"] == 3 and _refused(before, after)["bad_tag"] == 0


def test_flipped_bit_with_a_good_crc_is_refused(vboard, board, run):
    ml = board.resource_index("motor_left")

    async def scenario():
        sent = _capture(board)
        g = await board.acquire(ml, W, 7, LONG)
        await board.release(ml, 7, g.epoch)
        acquire = _raw(_frames(sent)[0])
        before = await board.stats()
        for bit in (8 * 5, 8 * 6 + 3, 8 * (len(acquire) - 1)):   # the resource, the session, the tag
            raw = bytearray(acquire)
            raw[bit // 8] ^= 1 << (bit % 8)
            raw[-AUTH_SIZE] += 50                                # a fresh counter: not a replay
            vboard.cable.inject_bytes(TO_BOARD, codec.raw_frame_bytes(bytes(raw)))
        after = await _settle(board)
        return before, after, [await board.grants(r.index) for r in board.info.resources]

    before, after, grants = run(scenario())
    assert all(g == [] for g in grants)
    assert _refused(before, after)["bad_tag"] == 3 and after["bad_crc"] == before["bad_crc"]


def test_frames_without_a_key_or_under_another_boards_key_change_nothing(vboard, board, run):
    ml = board.resource_index("motor_left")

    async def scenario():
        g = await board.acquire(ml, W, 7, LONG)
        before = await board.stats()
        # Unsigned frames, as a pre-issue-12 host writes them: ACQUIRE, RELEASE of the grant.
        vboard.cable.inject_bytes(TO_BOARD, codec.encode_frame("RELEASE", 60001, {"res": ml, "session": 7,
                                                                                    "epoch": g.epoch}))
        vboard.cable.inject_bytes(TO_BOARD, codec.encode_frame("ACQUIRE", 60002, {
            "res": other, "modes": W, "session": 9, "lease_ms": LONG, "wait_ms": 0}))
        # A whole engine with another board's key: its HELLO is refused, it never gets a session.
        stranger = Board(_Injected(vboard), timeout=0.3, retries=1, key=generate())
        stranger.transport.set_receiver(stranger._on_bytes, stranger._on_lost)
        try:
            await stranger._hello()
            took = True
        except LinkTimeout:
            took = False
        after = await _settle(board)
        return g, before, after, took, await board.grants(ml), await board.grants(other)

    other = next(r.index for r in board.info.resources if r.index != ml)
    g, before, after, took, held, held_other = run(scenario())
    assert not took
    assert held == [(7, g.epoch, W)] and held_other == []        # the grant stands, nothing new
    refused = _refused(before, after)
    assert refused["bad_tag"] >= 4                          # 2 unsigned frames + 2 HELLOs


class _Injected:
    # A transport that writes through the virtual cable onto the line, and hears the board's
    # answers nowhere but in the ANNOUNCE the board sends when a HELLO is refused (delivered
    # to the engine's Board, not to this one): enough for a stranger that only talks.
    def __init__(self, vboard):
        self.vboard = vboard

    def set_receiver(self, on_bytes, on_lost):
        pass

    def write(self, data):
        self.vboard.cable.inject_bytes(TO_BOARD, data)


def test_a_second_process_writing_to_the_port_changes_nothing(vboard, board, run):
    ml = board.resource_index("motor_left")
    g = run(board.acquire(ml, W, 7, LONG))
    before = run(board.stats())
    frames = codec.encode_frame("RELEASE", 60001, {"res": ml, "session": 7, "epoch": g.epoch}) + \
        codec.encode_frame("END_SESSION", 60002, {"session": 7})
    code = ("import os, sys\n"
            "try:\n    fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)\n"
            "except OSError as e:\n    print('REFUSED', e.errno); sys.exit(0)\n"
            "os.write(fd, bytes.fromhex(sys.argv[2])); print('WROTE')\n")
    proc = subprocess.run([sys.executable, "-c", code, vboard.port, frames.hex()], capture_output=True, text=True,
                          timeout=30)
    after = run(_settle(board))
    assert proc.returncode == 0 and proc.stdout.split()[0] in ("WROTE", "REFUSED"), proc.stdout + proc.stderr
    assert run(board.grants(ml)) == [(7, g.epoch, W)]
    if proc.stdout.startswith("WROTE"):
        assert sum(_refused(before, after).values()) == 2


def test_engine_restart_old_frames_refused_new_engine_served(vboard, run):
    async def scenario():
        old = await open_board(vboard.port, timeout=0.5, retries=3)
        ml = old.resource_index("motor_left")
        sent = _capture(old)
        g = await old.acquire(ml, W, 7, LONG)
        await old.release(ml, 7, g.epoch)
        captured = _frames(sent)
        await old.close()
        new = await open_board(vboard.port, timeout=0.5, retries=3)
        try:
            before = await new.stats()
            for f in captured:
                vboard.cable.inject_bytes(TO_BOARD, f)
            after = await _settle(new)
            g2 = await new.acquire(ml, W, 8, LONG)           # no false refusal
            return before, after, await new.grants(ml), g2
        finally:
            await new.close()

    before, after, grants, g2 = run(scenario())
    assert grants == [(8, g2.epoch, W)]
    assert _refused(before, after)["bad_tag"] == 2


def test_board_reboot_old_frames_refused_engine_reconnects(vboard, run):
    async def scenario():
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        ml = b.resource_index("motor_left")
        sent = _capture(b)
        g = await b.acquire(ml, W, 7, LONG)
        captured = _frames(sent)
        await b.close()
        vboard.restart()                                     # new process, boot id, board nonce
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        try:
            before = await b.stats()
            for f in captured:
                vboard.cable.inject_bytes(TO_BOARD, f)
            after = await _settle(b)
            g2 = await b.acquire(ml, W, 9, LONG)
            return before, after, await b.grants(ml), g2
        finally:
            await b.close()

    before, after, grants, g2 = run(scenario())
    assert grants == [(9, g2.epoch, W)]                       # the old ACQUIRE made no grant
    assert _refused(before, after)["bad_tag"] == 1


def test_board_reboot_and_engine_restart_together(vboard, run):
    async def scenario():
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        ml = b.resource_index("motor_left")
        sent = _capture(b)
        await b.acquire(ml, W, 7, LONG)
        captured = _frames(sent)
        vboard.restart()
        await b.close()
        b = await open_board(vboard.port, timeout=0.5, retries=3)   # a new engine, a new board
        try:
            for f in captured:
                vboard.cable.inject_bytes(TO_BOARD, f)
            await _settle(b)
            g = await b.acquire(ml, W, 3, LONG)
            return await b.grants(ml), g, await b.stats()
        finally:
            await b.close()

    grants, g, stats = run(scenario())
    assert grants == [(3, g.epoch, W)] and stats["bad_tag"] >= 1


# ---- rekey (capwarden link rekey) -----------------------------------------------------------

def test_rekey_old_engines_frames_refused_new_key_served(vboard, run):
    # An old engine keeps the old key and what it sent: after the rekey neither its HELLO nor
    # its recorded frames reach any handler, and the new key is served at once.
    async def scenario():
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        ml = b.resource_index("motor_left")
        sent = _capture(b)
        g = await b.acquire(ml, W, 7, LONG)
        await b.release(ml, 7, g.epoch)
        captured = _frames(sent)
        old, new = await rekey(b, vboard.port)
        try:
            before = await b.stats()
            for f in captured:
                vboard.cable.inject_bytes(TO_BOARD, f)
            after = await _settle(b)
            g2 = await b.acquire(ml, W, 8, LONG)             # the new key's session works
            grants = await b.grants(ml)
        finally:
            await b.close()
        opened = await opens_session(vboard.port, old)
        check = await open_board(vboard.port, timeout=0.5, retries=3)    # the new key, again
        try:
            probed = await check.stats()
        finally:
            await check.close()
        return before, after, grants, g2, opened, old, new, probed

    before, after, grants, g2, opened, old, new, probed = run(scenario())
    assert old != new and linkauth.key_for(vboard.port) == new
    assert grants == [(8, g2.epoch, W)]
    assert _refused(before, after)["bad_tag"] == 2            # the recorded ACQUIRE and RELEASE
    assert not opened                                          # the old key gets no session:
    assert probed["bad_tag"] > after["bad_tag"]                # its HELLOs were heard and refused


def test_rekey_survives_a_board_reboot(vboard, run):
    async def scenario():
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        _old, new = await rekey(b, vboard.port)
        await b.close()
        vboard.restart()                                      # the key file is on its flash
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        try:
            return new, b.auth.key, await b.ping()
        finally:
            await b.close()

    new, used, ping = run(scenario())
    assert used == new and ping["mem_free"] > 0


def test_rekey_with_a_lost_answer_the_next_open_takes_the_staged_key(vboard, run):
    # The engine died after REKEY went out and before it promoted the new key: the store has
    # the old key and the staged one; the board announces which it holds.
    async def scenario():
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        old = b.auth.key
        new = generate()
        linkauth.stage(vboard.port, new)
        await b.rekey(new)
        await b.close()                                       # no promote()
        assert linkauth.key_for(vboard.port) == old
        b = await open_board(vboard.port, timeout=0.3, retries=1)
        try:
            return new, b.auth.key, await b.ping(), linkauth.staged(vboard.port)
        finally:
            await b.close()

    new, used, ping, left = run(scenario())
    assert used == new and linkauth.key_for(vboard.port) == new and left is None


def test_rekey_refuses_a_wrapped_key_of_the_wrong_size(board, run):
    async def scenario():
        try:
            await board.request("REKEY", {"wrapped": bytes(15)}, retries=0)
        except DeviceError as exc:
            return exc
        return None

    exc = run(scenario())
    assert exc is not None and exc.code == "E_DEV_BAD_MESSAGE"         # refused, not taken
    assert run(board.ping())["mem_free"] > 0                            # same key, same session


def test_the_signed_agents_heap_stays_flat_on_the_board(board, run):
    # On the deployed agent (not the rig): 1,000 signed acquire/heartbeat/release cycles leave
    # its heap exactly where it was. A board input that allocated now and then (the sim's
    # override switch looking for a missing file) showed here as growth.
    ml = board.resource_index("motor_left")

    async def scenario():
        for k in range(50):
            g = await board.acquire(ml, W, 7, LONG)
            await board.heartbeat(k + 1)
            await board.release(ml, 7, g.epoch)
        before = await board.ping()
        for k in range(50, 1050):
            g = await board.acquire(ml, W, 7, LONG)
            await board.heartbeat(k + 1)
            await board.release(ml, 7, g.epoch)
        return before, await board.ping()

    before, after = run(scenario())
    assert after["mem_alloc"] == before["mem_alloc"], (before, after)


def test_sixteen_requests_at_once_are_sealed_in_the_order_they_go_out(board, run):
    # Many requests waiting for flow-control credit at once: each is numbered and sealed only
    # when it is written, so none reaches the board with a counter below the newest (refused as
    # a replay, then retried after a timeout) or a request id far behind (refused as stale).
    from capshared.limits import MODE_READ

    gps = board.resource_index("gps")

    async def scenario():
        before = await board.stats()
        errors = []

        async def loop(i):
            for _ in range(40):
                try:
                    g = await board.acquire(gps, MODE_READ, 500 + i, LONG)
                    await board.release(gps, 500 + i, g.epoch)
                except Exception as exc:
                    errors.append(repr(exc))

        await asyncio.gather(*(loop(i) for i in range(16)))
        return errors, before, await board.stats()

    errors, before, after = run(scenario())
    assert errors == []
    assert after["replay"] == before["replay"] and after["stale"] == before["stale"]
