"""Transports chosen by URL, and the Board client over pyserial's loop:// (no board needed)."""

import asyncio

import pytest

from capshared import codec
from capwarden.errors import DeviceError, LinkError, LinkTimeout
from capwarden.link import Board, SerialTransport, open_transport


def test_url_selects_backend():
    assert isinstance(open_transport("loop://"), SerialTransport)
    assert isinstance(open_transport("/dev/ttyACM0"), SerialTransport)
    try:
        import bleak  # noqa: F401
    except ImportError:
        with pytest.raises(LinkError, match="bleak"):
            asyncio.run(open_transport("ble://AA:BB:CC:DD:EE:FF").open())
    with pytest.raises(LinkError):
        open_transport("")


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


def _hello(rid, boot=7):
    return codec.encode_frame("HELLO_R", rid, {"proto": 1, "boot_id": boot, "rx_buf": 64, "max_raw": 120,
                                               "n_res": 0, "uptime_ms": 1, "info": b"0.1.0 fake"})


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
