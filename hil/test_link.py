"""The link through the virtual cable: framing, retries, flow control, resets, the way back."""

import asyncio
import subprocess
import time

import pytest

from capshared import codec
from capshared.limits import PROTOCOL_VERSION, U32_LIMIT
from capwarden.errors import DeviceError, LinkTimeout
from capwarden.link import LinkDown, LinkUp, Reset, open_board
from capwarden.sim import TO_BOARD, TO_HOST, firmware
from hil.helpers import of_type, wait_until


def test_announce_and_resource_table(board):
    info = board.info
    assert info.protocol == PROTOCOL_VERSION and info.boot_id > 0
    names = [r.name for r in info.resources]
    assert len(names) == len(set(names)) and names
    assert all(r.state == "present" for r in info.resources)


def test_sim_board_has_the_required_resources(vboard, board):
    classes = [r.cls for r in board.info.resources]
    assert classes.count("motor") >= 2
    for c in ("camera", "gps", "storage"):
        assert c in classes


def test_ping_reports_heap_and_uptime(board, run):
    a = run(board.ping())
    time.sleep(0.05)
    b = run(board.ping())
    assert a["mem_free"] > 0 and a["mem_alloc"] > 0
    assert b["uptime_ms"] >= a["uptime_ms"] + 40


def test_garbage_on_the_line_is_counted_and_survived(vboard, board, run):
    vboard.cable.inject_bytes(TO_BOARD, b"\x7e\x11\x22\x00\xff\xfe\x00" + bytes(range(4, 250)) + b"\x00")
    r = run(board.ping())
    assert r["mem_free"] > 0
    st = run(board.stats())
    assert st["bad_frame"] + st["bad_crc"] + st["overrun"] >= 2


@pytest.mark.parametrize("direction,fault,counter,frames", [
    (TO_BOARD, "corrupt", "bad_crc", 2),   # the board drops it; the host's retry is answered
    (TO_HOST, "drop", "replayed", 2),      # faults.md 31: the retry carries the same request id; the agent replays its answer
    (TO_BOARD, "duplicate", "dup", 1),     # the copy is dropped by its sequence number, no retry needed
    (TO_BOARD, "drop", "lost", 2),         # the retry's sequence number shows the gap
], ids=["corrupted_request_retried", "lost_answer_replayed_not_reexecuted", "duplicate_dropped_by_sequence",
        "lost_request_counts_a_gap"])
def test_one_faulty_frame_is_survived_and_counted(vboard, board, run, direction, fault, counter, frames):
    """One frame hit by a cable fault: the ping is still answered, the board counts the fault
    once, and the host sent the ping `frames` times (2: one retry)."""
    before = run(board.stats())
    sent = board.tx_frames
    vboard.cable.inject(direction, fault)
    run(board.ping())
    assert board.tx_frames - sent == frames
    after = run(board.stats())
    if counter == "bad_crc":   # a flipped bit breaks the CRC, or the COBS structure first
        assert after["bad_crc"] + after["bad_frame"] == before["bad_crc"] + before["bad_frame"] + 1
    else:
        assert after[counter] == before[counter] + 1


def test_dead_link_times_out_then_recovers(vboard, board, run, events):
    vboard.cable.disconnect()
    with pytest.raises(LinkTimeout):
        run(board.ping())
    assert any(isinstance(e, LinkDown) for e in events)
    vboard.cable.reconnect()
    run(board.ping())
    assert any(isinstance(e, LinkUp) for e in events)


def test_power_cycle_drops_the_link_and_the_board_comes_back_with_a_new_boot_id(vboard, run):
    async def scenario():
        b = await open_board(vboard.port, timeout=0.5, retries=3)
        events = []
        b.subscribe(events.append)
        old = b.info.boot_id
        vboard.restart()
        await wait_until(lambda: events)   # the old line ends with the process: its end of file
        return b, events, old

    # restart() replaces the pty (the board's USB port re-enumerates): the old handle hears no
    # announcement, only the end of its line. The new boot id is seen on the new port. The
    # Reset event of a new boot id on the same line is the next test's.
    b, events, old = run(scenario())
    run(b.close())
    assert [type(e) for e in events] == [LinkDown] and not b.up
    b2 = run(open_board(vboard.port, timeout=0.5, retries=3))
    try:
        assert b2.info.boot_id != old
    finally:
        run(b2.close())


def test_agent_restarted_on_the_same_line_is_a_reset(vboard, board, run, events):
    """The agent stops (REPL) and starts again on the same line, as after a watchdog reset on a
    UART board: its new boot id must reach the host as a Reset (every grant on it is gone)."""
    old = board.info.boot_id

    async def restart_agent():
        await board.to_repl()
        await asyncio.sleep(0.3)
        board.transport.write(b"import main\x04")   # the raw REPL the agent was started from
        return await wait_until(lambda: of_type(events, Reset), 5.0)

    assert run(restart_agent())
    assert of_type(events, Reset)[0].old_boot_id == old


def test_announce_of_new_boot_from_a_stranger_is_checked_not_believed(vboard, board, run, events):
    """ANNOUNCE is the one frame a board sends unauthenticated. Before issue 12 a fake one with a
    new boot id made the host drop its pending requests and report a Reset; with signing on it
    only makes the host say HELLO, and the board's authenticated HELLO_R (same boot id: it
    did not reboot) decides: no Reset, the pending ping is answered, the link stays in session."""
    old = board.info.boot_id
    payload = codec.encode_payload("ANNOUNCE", {
        "proto": 3, "boot_id": (old + 1) % U32_LIMIT, "rx_buf": 256, "max_raw": 120,
        "n_res": len(board.info.resources), "uptime_ms": 0, "key_id": bytes(4), "info": b"0.1.0 sim"})
    fake = codec.raw_frame_bytes(bytes((0, 0x40, 0, 0)) + payload + bytes(12))   # no counter, no tag

    async def pending_ping_then_fake():
        ping = asyncio.ensure_future(board.request("PING", {"nonce": 1}, timeout=2))
        await asyncio.sleep(0)
        vboard.cable.inject_bytes(TO_HOST, fake)
        r = await ping
        await asyncio.sleep(0.3)               # the HELLO the fake caused is answered
        return r, await board.ping()

    r, _ping = run(pending_ping_then_fake())
    assert r["nonce"] == 1
    assert not of_type(events, Reset) and board.info.boot_id == old



def test_flow_control_never_overruns_the_board(vboard, board, run):
    """Many concurrent requests: the host holds back so the 256-byte buffer never overflows."""
    async def burst():
        return await asyncio.gather(*[board.ping() for _ in range(40)])

    res = run(burst())
    assert len(res) == 40
    assert 0 < board.max_inflight <= board.info.rx_buf
    st = run(board.stats())
    assert st["overrun"] == 0 and st["bad_crc"] == 0


def test_unknown_request_is_refused_with_an_error(board, run):
    with pytest.raises(DeviceError) as exc:
        run(board.request("GRANTS_R", {"res": 0, "total": 0, "start": 0, "entries": b""}))
    assert exc.value.code == "E_DEV_BAD_MESSAGE"


def test_bare_ctrl_c_returns_to_the_repl_for_reflashing(vboard, board, run):
    """The documented way back: a bare 0x03 stops the agent; mpremote then works (no power cycle),
    once the engine has let go of the port (it holds it exclusively, as mpremote does)."""
    vboard.cable.inject_bytes(TO_BOARD, b"\x03")
    time.sleep(0.3)
    taken = subprocess.run([firmware.mpremote(), "connect", vboard.port, "resume", "exec", "print(6*7)"],
                           capture_output=True, text=True, timeout=30)
    assert taken.returncode != 0 and "42" not in taken.stdout, taken
    run(board.close())
    out = subprocess.run([firmware.mpremote(), "connect", vboard.port, "resume", "exec", "print(6*7)"],
                         capture_output=True, text=True, timeout=30)
    assert "42" in out.stdout, out


def test_delayed_answer_past_the_timeout_is_retried_and_the_late_copy_ignored(vboard, board, run):
    before = run(board.stats())
    vboard.cable.inject(TO_HOST, "delay", arg=0.8)   # longer than the 0.5 s request timeout
    r = run(board.ping(nonce=4242))
    assert r["mem_free"] > 0
    time.sleep(1.0)                                   # the late original arrives now: ignored
    after = run(board.stats())
    assert after["replayed"] == before["replayed"] + 1
    run(board.ping())


def test_cable_paces_at_the_configured_baud_rate(vboard, board, run):
    """At 9600 baud a ping and its answer take at least their bytes' line time."""
    vboard.cable.baud = 9600
    try:
        sent0, got0 = board.tx_bytes, board.rx_bytes
        t0 = time.monotonic()
        run(board.ping())
        elapsed = time.monotonic() - t0
        line_time = ((board.tx_bytes - sent0) + (board.rx_bytes - got0)) * 10 / 9600
        assert elapsed >= line_time * 0.95
    finally:
        vboard.cable.baud = None


def test_trace_shows_every_frame(board_port, run, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="capwarden.link")
    b = run(open_board(board_port))
    try:
        run(b.ping(nonce=99))
    finally:
        run(b.close())
    text = caplog.text
    assert "-> HELLO" in text and "<- HELLO_R" in text
    assert "-> PING" in text and "'nonce': 99" in text and "<- PING_R" in text
