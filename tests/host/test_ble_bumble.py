"""BLE without a radio: the bleak transport (capwarden.link.ble) against a NUS peripheral, both
on bumble virtual controllers in this process (docs/ble.md says what only a real radio tests).

bleak cannot reach a bumble controller, so `BumbleBleakClient` stands in for bleak.BleakClient:
it offers the documented bleak calls BleTransport makes (connect, services.get_characteristic,
mtu_size, start_notify, write_gatt_char, disconnect) and makes them with bumble's GATT client.
Everything else, the NUS core included, is the product's code.
"""

import asyncio
import sys
import types

import pytest

# No skip without bumble: it is in the test extra (`make test` installs it), and a BLE suite
# that quietly skips would pass on a machine where it never ran.
from bumble.device import Peer

from capwarden.link.ble import BleTransport
from capwarden.link.ble_virtual import NusPeripheral, VirtualRadio
from capwarden.link.nus import NUS_SERVICE

TIMEOUT = 60   # generous: two shared cores; nothing here measures speed


class _Char:
    def __init__(self, proxy, mtu):
        self.proxy = proxy
        p = proxy.properties
        self.properties = [name for flag, name in ((p.WRITE_WITHOUT_RESPONSE, "write-without-response"),
                                                   (p.WRITE, "write"), (p.NOTIFY, "notify"), (p.READ, "read"))
                           if p & flag]
        self.max_write_without_response_size = mtu - 3


class _Services:
    def __init__(self, chars):
        self.chars = chars

    def get_characteristic(self, uuid):
        return self.chars.get(uuid.lower())


class BumbleBleakClient:
    """bleak.BleakClient's documented surface, over a bumble central on a VirtualRadio."""

    radio = None        # set by the fixture
    request_mtu = None  # None: no MTU exchange, the link stays at 23

    def __init__(self, address, timeout=10.0, disconnected_callback=None):
        self.address, self.timeout, self.disconnected_callback = address, timeout, disconnected_callback
        self.device = self.radio.device("central")
        self.peer = None
        self.services = None
        self.notifications = 0

    @property
    def mtu_size(self):
        return self.peer.connection.att_mtu

    async def connect(self):
        await self.device.power_on()
        connection = await asyncio.wait_for(self.device.connect(self.address), self.timeout)
        connection.on("disconnection", lambda _r: self.disconnected_callback and self.disconnected_callback(self))
        self.peer = Peer(connection)
        if self.request_mtu:
            await self.peer.request_mtu(self.request_mtu)
        service = (await self.peer.discover_service(NUS_SERVICE))[0]
        chars = await service.discover_characteristics()
        self.services = _Services({str(c.uuid).lower(): _Char(c, self.mtu_size) for c in chars})
        return True

    async def start_notify(self, uuid, callback):
        char = self.services.get_characteristic(uuid)

        def on_value(value):
            self.notifications += 1
            callback(char, bytearray(value))

        await self.peer.subscribe(char.proxy, on_value)

    async def write_gatt_char(self, uuid, data, response=False):
        await self.services.get_characteristic(uuid).proxy.write_value(bytes(data), with_response=response)

    async def disconnect(self):
        if self.peer is not None:
            await self.peer.connection.disconnect()
        return True


@pytest.fixture
def bleak_over_bumble(monkeypatch):
    """A fresh radio; `import bleak` inside BleTransport.open gets the stand-in."""
    fake = types.ModuleType("bleak")
    client = type("BleakClient", (BumbleBleakClient,), {"radio": VirtualRadio()})
    fake.BleakClient = client
    monkeypatch.setitem(sys.modules, "bleak", fake)
    return client


def _pattern(n, seed):
    return bytes((seed * 31 + i * 7 + (i >> 8)) % 256 for i in range(n))


class SlowReader:
    """The host side reading the stream slower than the board notifies: every delivered chunk
    waits in a queue and a consumer takes one per few loop turns."""

    def __init__(self):
        self.queue = asyncio.Queue()
        self.got = bytearray()
        self.task = asyncio.ensure_future(self._consume())

    async def _consume(self):
        while True:
            chunk = await self.queue.get()
            for _ in range(5):
                await asyncio.sleep(0)
            self.got += chunk

    async def until(self, n):
        while len(self.got) < n:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("mtu, write_response", [(23, None), (247, None), (247, True)])
def test_echo_over_nus_every_byte_once_and_in_order(bleak_over_bumble, mtu, write_response):
    """The host writes 12 KB in frames of 1..243 bytes; the peripheral echoes each write back at
    once as notifications, back to back, while the host drains them slowly. Every byte arrives
    once, in order; no write or notification is longer than the link's MTU - 3, and at MTU 247
    the full 244 bytes are used. With write_response=True the writes are Write Requests, each
    acknowledged by the peripheral before the next."""
    bleak_over_bumble.request_mtu = 247 if mtu == 247 else None

    async def go():
        radio = bleak_over_bumble.radio
        peripheral = NusPeripheral(radio, max_mtu=247, on_data=lambda data: peripheral.send(data))   # echo
        await peripheral.start()
        t = BleTransport(str(peripheral.address), timeout=TIMEOUT, write_response=write_response)
        reader = SlowReader()
        lost = []
        t.set_receiver(reader.queue.put_nowait, lost.append)
        await asyncio.wait_for(t.open(), TIMEOUT)
        assert t.client.mtu_size == mtu and t.nus.chunk == mtu - 3 and t.nus.response is bool(write_response)
        sent = bytearray()
        for i in range(120):
            frame = _pattern(1 + (i * 37) % 243, i)
            t.write(frame)
            sent += frame
        await asyncio.wait_for(reader.until(len(sent)), TIMEOUT)
        await asyncio.sleep(0.05)      # anything extra (a duplicate) would arrive by now
        notes = t.client.notifications
        await t.close()
        await peripheral.stop()
        reader.task.cancel()
        return bytes(sent), bytes(reader.got), peripheral, notes, lost

    sent, got, peripheral, notes, lost = asyncio.run(asyncio.wait_for(go(), TIMEOUT * 2))
    assert got == sent
    assert not lost
    assert max(peripheral.rx_values) == mtu - 3 and max(peripheral.tx_values) == mtu - 3
    assert notes == len(peripheral.tx_values)     # every notification sent was received


def test_a_burst_of_notifications_faster_than_the_host_drains_loses_nothing(bleak_over_bumble):
    """The board sends 48 KB in one go, as fast as the stack takes notifications, to a host that
    reads slowly; the bytes queued before the host subscribed to TX are not dropped either."""
    bleak_over_bumble.request_mtu = 247
    blob = b"".join(_pattern(997, s) for s in range(48))

    async def go():
        peripheral = NusPeripheral(bleak_over_bumble.radio)
        await peripheral.start()
        peripheral.send(b"ANNOUNCE\0")     # before any central: must wait, not be notified to nobody
        t = BleTransport(str(peripheral.address), timeout=TIMEOUT)
        reader = SlowReader()
        t.set_receiver(reader.queue.put_nowait)
        await asyncio.wait_for(t.open(), TIMEOUT)
        peripheral.send(blob)
        await asyncio.wait_for(reader.until(9 + len(blob)), TIMEOUT)
        backlog_peak = reader.queue.qsize()
        await t.close()
        await peripheral.stop()
        reader.task.cancel()
        return bytes(reader.got), peripheral, backlog_peak

    got, peripheral, _ = asyncio.run(asyncio.wait_for(go(), TIMEOUT * 2))
    assert got == b"ANNOUNCE\0" + blob
    assert len(peripheral.tx_values) >= len(blob) // 244 and max(peripheral.tx_values) == 244


def test_the_virtual_peripheral_serves_a_second_connection(bleak_over_bumble):
    """A host that closes and connects again gets a working link: what the board sent while
    no host was connected waits for the next one's subscription (as its ANNOUNCE would),
    instead of failing the link for good."""

    async def go():
        peripheral = NusPeripheral(bleak_over_bumble.radio, on_data=lambda d: peripheral.send(d))
        await peripheral.start()
        echoes = []
        for round_ in range(2):
            t = BleTransport(str(peripheral.address), timeout=TIMEOUT)
            reader = SlowReader()
            t.set_receiver(reader.queue.put_nowait)
            await asyncio.wait_for(t.open(), TIMEOUT)
            t.write(_pattern(300, round_))
            await asyncio.wait_for(reader.until(300 + 6 * round_), TIMEOUT)
            echoes.append(bytes(reader.got))
            await t.close()
            reader.task.cancel()
            while peripheral.connection is not None:
                await asyncio.sleep(0.01)
            peripheral.send(b"BOOT2\0")      # between hosts
        await peripheral.stop()
        return echoes

    echoes = asyncio.run(asyncio.wait_for(go(), TIMEOUT * 2))
    assert echoes == [_pattern(300, 0), b"BOOT2\0" + _pattern(300, 1)]


def test_board_ping_and_acquire_over_ble_to_the_virtual_board(bleak_over_bumble):
    """capwarden.link.Board over BleTransport, through a bumble NUS peripheral that relays to
    the virtual board's serial line: the HELLO, a ping and a lock grant, at MTU 23 (every frame
    is cut into several writes and notifications)."""
    from capshared.limits import mode_bits
    from capwarden.link import Board, SerialTransport
    from capwarden.sim import VirtualBoard

    with VirtualBoard() as vb:
        async def go():
            line = SerialTransport(vb.port)
            peripheral = NusPeripheral(bleak_over_bumble.radio, on_data=lambda d: line.write(d))
            line.set_receiver(peripheral.send)
            await line.open()
            await peripheral.start()
            board = Board(BleTransport(str(peripheral.address), timeout=TIMEOUT), timeout=5.0, key=vb.link_key)
            await asyncio.wait_for(board.open(), TIMEOUT)
            try:
                pong = await board.ping()
                grant = await board.acquire(board.resource_index("motor_left"), mode_bits(["write"]), 4242, 2000)
                await board.release(grant.res, 4242, grant.epoch)
            finally:
                await board.close()
                await peripheral.stop()
                await line.close()
            return pong, grant, peripheral

        pong, grant, peripheral = asyncio.run(asyncio.wait_for(go(), TIMEOUT * 3))
    assert pong["mem_free"] > 0
    assert grant.session == 4242 and grant.epoch > 0
    assert max(peripheral.rx_values) <= 20 and max(peripheral.tx_values) <= 20
    assert len(peripheral.rx_values) > 3 and len(peripheral.tx_values) > 3
