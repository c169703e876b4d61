"""NusLink, the stack-free core of the BLE transport: chunking, order, backpressure, failure.
The same class runs over bumble's virtual controllers in test_ble_bumble.py."""

import asyncio

import pytest

from capwarden.errors import LinkClosed, LinkError
from capwarden.link.ble import rx_write_plan
from capwarden.link.nus import NusLink, value_size


class SlowStack:
    """A stack that takes one value per `delay` loop turns and records what it was given."""

    def __init__(self, turns=3, fail_at=None):
        self.turns, self.fail_at = turns, fail_at
        self.values, self.in_flight, self.max_in_flight = [], 0, 0

    async def send_value(self, value, response):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.fail_at is not None and len(self.values) == self.fail_at:
                raise OSError("ATT error 0x0e")
            for _ in range(self.turns):
                await asyncio.sleep(0)
            self.values.append((bytes(value), response))
        finally:
            self.in_flight -= 1


def test_value_size_is_mtu_minus_3_within_att_limits():
    assert value_size(23) == 20 and value_size(247) == 244 and value_size(517) == 512
    assert value_size(None) == 20 and value_size(0) == 20 and value_size(5) == 20


@pytest.mark.parametrize("mtu", [23, 247])
def test_bursts_written_faster_than_the_stack_takes_them_arrive_whole_in_order(mtu):
    stack = SlowStack()

    async def go():
        link = NusLink(stack.send_value, mtu=mtu)
        link.start()
        sent = bytearray()
        for i in range(300):           # 300 frames, each written at once, far faster than taken
            frame = bytes([(i + k) % 251 + 1 for k in range(1 + i % 120)]) + b"\0"
            link.send(frame)
            sent += frame
            if i % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(link.drain(), 30)
        await link.close()
        return bytes(sent)

    sent = asyncio.run(go())
    assert b"".join(v for v, _ in stack.values) == sent
    sizes = [len(v) for v, _ in stack.values]
    assert max(sizes) == mtu - 3                      # full values, never longer
    # Bytes queued while a value is in flight are joined into full values: a short value only
    # where the writer caught up with the sender (at most once per pause of the sender).
    assert sum(s < mtu - 3 for s in sizes) <= 300 // 50 + 1
    assert stack.max_in_flight == 1                   # one value at a time: no reordering
    assert all(r is False for _, r in stack.values)


def test_write_with_response_is_passed_to_the_stack():
    stack = SlowStack(turns=0)

    async def go():
        link = NusLink(stack.send_value, response=True)
        link.start()
        link.send(b"x" * 45)
        await asyncio.wait_for(link.drain(), 10)
        await link.close()

    asyncio.run(go())
    assert [(len(v), r) for v, r in stack.values] == [(20, True), (20, True), (5, True)]


def test_a_failed_write_reports_the_link_lost_once_and_refuses_later_writes():
    stack = SlowStack(turns=0, fail_at=1)
    lost = []

    async def go():
        link = NusLink(stack.send_value, name="ble://X")
        link.set_receiver(lambda d: None, lost.append)
        link.start()
        link.send(b"a" * 60)
        with pytest.raises(LinkClosed, match="write failed"):
            await asyncio.wait_for(link.drain(), 10)
        with pytest.raises(LinkClosed, match="ble://X"):
            link.send(b"more")
        await link.close()

    asyncio.run(go())
    assert len(lost) == 1 and isinstance(lost[0], LinkClosed)
    assert len(stack.values) == 1


def test_a_stalled_link_fails_closed_instead_of_queueing_without_end():
    async def never(value, response):
        await asyncio.Event().wait()

    async def go():
        link = NusLink(never, max_backlog=1000)
        link.start()
        link.send(b"x" * 900)
        await asyncio.sleep(0)
        with pytest.raises(LinkClosed, match="stalled"):
            link.send(b"x" * 200)
        await link.close()
        with pytest.raises(LinkClosed):
            link.send(b"y")

    asyncio.run(go())


def test_received_values_are_one_stream_and_nothing_before_the_receiver_is_lost():
    got = []
    link = NusLink(None)
    link.feed(b"\x01\x02")                 # a notification before anyone listens
    link.set_receiver(got.append)
    link.feed(b"\x03")
    link.feed(bytearray(b"\x04\x00"))
    assert b"".join(got) == b"\x01\x02\x03\x04\x00"
    assert all(type(g) is bytes for g in got)


class Char:
    def __init__(self, props, max_wwr=None):
        self.properties = props
        self.max_write_without_response_size = max_wwr


class Services:
    def __init__(self, char):
        self.char = char

    def get_characteristic(self, uuid):
        return self.char


class Client:
    def __init__(self, char, mtu=23):
        self.services = Services(char)
        self.mtu_size = mtu


def test_rx_write_plan_follows_the_characteristic():
    # Without response where RX offers it, sized by bleak's max_write_without_response_size.
    assert rx_write_plan(Client(Char(["write-without-response", "write"], 244), mtu=247)) == (244, False)
    # No size from the backend: the MTU's.
    assert rx_write_plan(Client(Char(["write-without-response"]), mtu=185)) == (182, False)
    # Asked for Write Requests (a stack that drops writes without response): granted where RX has them.
    assert rx_write_plan(Client(Char(["write-without-response", "write"], 244), mtu=247), True) == (244, True)
    assert rx_write_plan(Client(Char(["write-without-response"], 244), mtu=247), True) == (244, False)
    # Only Write Requests (aioble with write=True alone): with response, MTU - 3.
    assert rx_write_plan(Client(Char(["write"]), mtu=247)) == (244, True)
    with pytest.raises(LinkError, match="cannot be written"):
        rx_write_plan(Client(Char(["read", "notify"])))
    with pytest.raises(LinkError, match="no Nordic UART"):
        rx_write_plan(Client(None))
