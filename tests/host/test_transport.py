"""Transports chosen by URL, and the Board client over pyserial's loop:// (no board needed)."""

import asyncio
import sys

import pytest

from capshared import codec
from capshared.limits import PROTOCOL_VERSION
from capwarden.errors import DeviceError, LinkError, LinkTimeout
from capwarden.link import Board, SerialTransport, open_transport


def test_url_selects_backend():
    from capwarden.link.ble import BleTransport

    assert isinstance(open_transport("loop://"), SerialTransport)
    assert isinstance(open_transport("/dev/ttyACM0"), SerialTransport)
    ble = open_transport("ble://AA:BB:CC:DD:EE:FF")
    assert isinstance(ble, BleTransport) and ble.address == "AA:BB:CC:DD:EE:FF"
    with pytest.raises(LinkError):
        open_transport("")


def test_ble_without_bleak_is_a_clear_error_whether_or_not_bleak_is_installed(monkeypatch):
    # sys.modules[name] = None makes `import bleak` raise ImportError, so the check runs on
    # every machine instead of passing silently where bleak is installed.
    monkeypatch.setitem(sys.modules, "bleak", None)
    with pytest.raises(LinkError, match="bleak"):
        asyncio.run(open_transport("ble://AA:BB:CC:DD:EE:FF").open())


class FakeBoardTransport:
    """An in-process board that answers from a script: enough to test the client's logic."""

    def __init__(self, answer):
        self.answer = answer  # callable(frame) -> list of wire bytes
        self.sent = []
        self.dec = codec.StreamDecoder()

    def set_receiver(self, cb, on_lost=None):
        self.cb = cb

    async def open(self):
        pass

    def write(self, data):
        self.sent.append(data)
        for f in self.dec.feed(data):
            for out in self.answer(f):
                asyncio.get_running_loop().call_soon(self.cb, out)

    async def close(self):
        pass


def _hello(rid, boot=7, hb_seq=0, rid_hw=0, proto=PROTOCOL_VERSION):
    return codec.encode_frame("HELLO_R", rid, {"proto": proto, "boot_id": boot, "rx_buf": 64, "max_raw": 120,
                                               "n_res": 0, "uptime_ms": 1, "hb_seq": hb_seq, "rid_hw": rid_hw, "nb": bytes(8),
                                               "info": b"0.1.0 fake"})


def test_retry_reuses_the_request_id_and_times_out_cleanly():
    seen = []

    def answer(f):
        seen.append((f.name, f.rid))
        return [_hello(f.rid)] if f.name == "HELLO" else []  # pings are never answered

    async def go():
        b = Board(FakeBoardTransport(answer), timeout=0.05, retries=2)
        await b.open()
        with pytest.raises(LinkTimeout):
            await b.ping()
        return b

    b = asyncio.run(go())
    pings = [rid for name, rid in seen if name == "PING"]
    assert len(pings) == 3 and len(set(pings)) == 1
    assert not b.up


def test_device_error_carries_the_code_name():
    def answer(f):
        if f.name == "HELLO":
            return [_hello(f.rid)]
        return [codec.encode_frame("ERROR", f.rid, {"code": 64, "detail": 0})]

    async def go():
        b = Board(FakeBoardTransport(answer), timeout=0.2)
        await b.open()
        await b.release(0, 5, 1)

    with pytest.raises(DeviceError) as exc:
        asyncio.run(go())
    assert exc.value.code == "E_DEV_STALE_EPOCH"


def test_flow_control_holds_bytes_in_flight_under_the_announced_buffer():
    pending = []

    def answer(f):
        if f.name == "HELLO":
            return [_hello(f.rid)]
        pending.append(f)
        return []

    async def go():
        t = FakeBoardTransport(answer)
        b = Board(t, timeout=2)
        await b.open()
        tasks = [asyncio.ensure_future(b.ping(nonce=i)) for i in range(10)]
        await asyncio.sleep(0.05)
        held = len(pending)  # 64-byte buffer: only a few 16-byte pings may be out at once
        while pending:
            f = pending.pop(0)
            b._on_bytes(codec.encode_frame("PING_R", f.rid, {"nonce": f.fields["nonce"], "mem_free": 1,
                                                              "mem_alloc": 1, "uptime_ms": 1}))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        return held, b.max_inflight

    held, peak = asyncio.run(go())
    assert 1 <= held <= 4
    assert peak <= 64


def test_defect_1_heartbeats_count_on_from_the_boards_high_water_mark():
    # A restarted engine counts from 1 again; the board last accepted 500 from the old one.
    sent = []

    def answer(f):
        if f.name == "HELLO":
            return [_hello(f.rid, hb_seq=500, rid_hw=4000)]
        sent.append((f.name, f.rid, f.fields))
        return [codec.encode_frame("HEARTBEAT_R", f.rid, {"hb_seq": f.fields["hb_seq"], "grants": 2, "failsafes": 0, "override": 0})]

    async def go():
        b = Board(FakeBoardTransport(answer), timeout=0.2)
        await b.open()
        r1 = await b.heartbeat(1)
        r2 = await b.heartbeat(2)
        return r1, r2

    r1, r2 = asyncio.run(go())
    assert [s[2]["hb_seq"] for s in sent] == [501, 502]      # above the board's mark
    assert r1["hb_seq"] == 1 and r2["hb_seq"] == 2 and r2["grants"] == 2
    assert [s[1] for s in sent] == [4001, 4002]              # request ids follow the board's newest


def test_defect_3_grant_for_a_request_no_longer_pending_is_an_orphan():
    from capwarden.link import OrphanGrant

    held = []

    def answer(f):
        if f.name == "HELLO":
            return [_hello(f.rid)]
        if f.name == "ACQUIRE" and f.fields["session"] == 9:
            held.append(f)        # answered only after the host gave up
            return []
        return [codec.encode_frame("ACQUIRE_R", f.rid, {"res": 0, "modes": 2, "session": f.fields["session"],
                                                        "epoch": 3, "lease_ms": 1000})]

    async def go():
        b = Board(FakeBoardTransport(answer), timeout=0.05, retries=1)
        events = []
        b.subscribe(events.append)
        await b.open()
        g = await b.acquire(0, 2, 5, 1000)
        # A replayed copy of the answer this host took is no orphan.
        b._on_bytes(codec.encode_frame("ACQUIRE_R", 1 + (b._rid - 1) % 65535, {
            "res": 0, "modes": 2, "session": 5, "epoch": g.epoch, "lease_ms": 1000}))
        with pytest.raises(LinkTimeout):
            await b.acquire(0, 2, 9, 1000)
        f = held[-1]
        b._on_bytes(codec.encode_frame("ACQUIRE_R", f.rid, {"res": 0, "modes": 2, "session": 9, "epoch": 4,
                                                            "lease_ms": 1000}))
        b._on_bytes(codec.encode_frame("HANDOVER_R", 777, {"res": 0, "to_session": 11, "epoch": 5}))
        return events

    events = [e for e in asyncio.run(go()) if isinstance(e, OrphanGrant)]
    assert [(e.res, e.session, e.epoch) for e in events] == [(0, 9, 4), (0, 11, 5)]


def test_an_answer_just_after_the_attempts_timer_is_taken_not_called_an_orphan():
    from capwarden.link import OrphanGrant
    from capwarden.link import board as board_mod

    def answer(f):
        return [_hello(f.rid)] if f.name == "HELLO" else []   # ACQUIRE: answered by hand below

    async def go():
        b = Board(FakeBoardTransport(answer), timeout=5, retries=0)
        events = []
        b.subscribe(events.append)
        await b.open()
        task = asyncio.ensure_future(b.acquire(0, 2, 5, 1000))
        await asyncio.sleep(0.01)
        (rid, p), = b._pending.items()
        board_mod._expire(p.future)          # the timer fires, and in the same turn...
        b._on_bytes(codec.encode_frame("ACQUIRE_R", rid, {"res": 0, "modes": 2, "session": 5, "epoch": 3,
                                                          "lease_ms": 1000}))   # ...the answer
        g = await task
        return g, events

    g, events = asyncio.run(go())
    assert g.epoch == 3
    assert not [e for e in events if isinstance(e, OrphanGrant)]


def test_a_board_of_another_protocol_version_is_refused_with_a_reason():
    def answer(f):
        return [_hello(f.rid, proto=PROTOCOL_VERSION - 1)] if f.name == "HELLO" else []

    async def go():
        await Board(FakeBoardTransport(answer), timeout=0.2).open()

    with pytest.raises(LinkError, match="flash it again"):
        asyncio.run(go())


def test_one_lost_request_on_a_board_that_goes_on_answering_is_no_link_loss():
    """A request whose every try is lost fails (LinkTimeout), but while the board goes on
    answering others the link is not down: no LinkDown, so the engine ends no session on it.
    A board that answers nothing at all is down (the test above)."""
    from capwarden.link import LinkDown

    def answer(f):
        if f.name == "HELLO":
            return [_hello(f.rid)]
        if f.name == "HEARTBEAT":
            return [codec.encode_frame("HEARTBEAT_R", f.rid, {"hb_seq": f.fields["hb_seq"], "grants": 0,
                                                              "failsafes": 0, "override": 0})]
        return []                                         # this board never answers a PING

    async def go():
        b = Board(FakeBoardTransport(answer), timeout=0.05, retries=2)
        events = []
        b.subscribe(events.append)
        await b.open()

        async def beat():
            for n in range(1, 40):
                await b.heartbeat(n)
                await asyncio.sleep(0.01)

        beating = asyncio.ensure_future(beat())
        with pytest.raises(LinkTimeout):
            await b.ping()
        beating.cancel()
        return b, events

    b, events = asyncio.run(go())
    assert b.up and not [e for e in events if isinstance(e, LinkDown)]
