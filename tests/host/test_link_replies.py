"""Board.request raises only capwarden errors (issue 10 item 5): a request the codec cannot
carry, a lease the board would refuse, and a reply that is not the request's answer."""

import asyncio

import pytest

from capshared import codec
from capshared.limits import MAX_LEASE_MS, U32_LIMIT
from capwarden.errors import BadReply, BadRequest, CapwardenError, LinkError
from capwarden.link import Board
from test_transport import FakeBoardTransport, _hello


def _board(answer):
    return Board(FakeBoardTransport(answer), timeout=0.2, retries=0)


def _hello_only(f):
    return [_hello(f.rid)] if f.name == "HELLO" else []


def test_fields_the_codec_cannot_carry_are_a_capwarden_error_and_nothing_is_sent():
    async def go():
        b = _board(_hello_only)
        await b.open()
        sent = b.tx_frames
        with pytest.raises(CapwardenError) as exc:
            await b.actuate(0, 5, 1, op=256)                   # op is a u8
        return exc.value, b.tx_frames - sent

    exc, frames = asyncio.run(go())
    assert isinstance(exc, BadRequest) and isinstance(exc, ValueError)   # ValueError, as CodecError was
    assert "ACTUATE" in str(exc) and frames == 0


@pytest.mark.parametrize("lease", [0, MAX_LEASE_MS + 1, U32_LIMIT - 1])
def test_a_lease_the_board_would_refuse_is_refused_on_the_host(lease):
    async def go():
        b = _board(_hello_only)
        await b.open()
        sent = b.tx_frames
        with pytest.raises(BadRequest, match="MAX_LEASE_MS"):
            await b.acquire(0, 2, 5, lease)
        with pytest.raises(BadRequest, match="MAX_LEASE_MS"):
            await b.handover(0, 5, 1, 6, 2, lease)
        return b.tx_frames - sent

    assert asyncio.run(go()) == 0


def test_the_longest_lease_is_still_sent():
    seen = []

    def answer(f):
        seen.append(f)
        if f.name == "ACQUIRE":
            return [codec.encode_frame("ACQUIRE_R", f.rid, {"res": 0, "modes": 2, "session": 5, "epoch": 1,
                                                            "lease_ms": f.fields["lease_ms"]})]
        return _hello_only(f)

    async def go():
        b = _board(answer)
        await b.open()
        return await b.acquire(0, 2, 5, MAX_LEASE_MS)

    assert asyncio.run(go()).lease_ms == MAX_LEASE_MS


def test_a_reply_of_another_message_is_a_bad_reply_not_a_key_error():
    def answer(f):
        if f.name == "PING":    # the board answers with another request's response
            return [codec.encode_frame("RELEASE_R", f.rid, {"res": 0, "session": 5, "epoch": 1})]
        return _hello_only(f)

    async def go():
        b = _board(answer)
        await b.open()
        await b.ping()

    with pytest.raises(BadReply, match="answered PING with RELEASE_R") as exc:
        asyncio.run(go())
    assert isinstance(exc.value, LinkError)


@pytest.mark.parametrize("name,request_name,fields,call", [
    ("GRANTS_R", "GRANTS", {"res": 0, "total": 2, "start": 0}, lambda b: b.grants(0)),
    ("AUDIT_R", "AUDIT", {"count": 2, "first": 1}, lambda b: b.audit_ring()),
])
def test_a_page_that_is_not_whole_entries_is_a_bad_reply(name, request_name, fields, call):
    def answer(f):
        if f.name == request_name:
            return [codec.encode_frame(name, f.rid, dict(fields, entries=b"\x01" * 10))]   # 10: no entry size
        return _hello_only(f)

    async def go():
        b = _board(answer)
        await b.open()
        await call(b)

    with pytest.raises(BadReply, match="whole number"):
        asyncio.run(go())


def test_the_host_reports_frames_of_unknown_messages():
    """A frame with a good CRC but an id the table does not know is counted by the decoder
    (`unknown`); host_counts() reports it with the other drops."""
    def answer(f):
        if f.name == "PING":
            return [codec.frame_bytes(0x7E, f.rid, b""),                # 0x7E: no such message
                    codec.encode_frame("PING_R", f.rid, {"nonce": f.fields["nonce"], "mem_free": 1,
                                                         "mem_alloc": 1, "uptime_ms": 1})]
        return _hello_only(f)

    async def go():
        b = _board(answer)
        await b.open()
        await b.ping()
        return b.host_counts()

    assert asyncio.run(go())["unknown"] == 1
