"""BLE transport: the Nordic UART Service (NUS) over bleak, as aioble and most boards expose it.

Only the bleak calls live here: connect, subscribe to TX, write to RX, the MTU. Chunking to the
negotiated MTU minus 3, the choice of write with or without response, reassembly and flow
control are `capwarden.link.nus.NusLink`, which the tests run over two bumble virtual
controllers; the tests also run this class with bleak's client replaced by a stand-in over
bumble (tests/host/test_ble_bumble.py). What needs a real radio is listed in docs/ble.md.
"""

import asyncio

from capwarden.errors import LinkClosed, LinkError
from capwarden.link.nus import ATT_DEFAULT_MTU, ATT_MAX_VALUE, NUS_RX, NUS_SERVICE, NUS_TX, NusLink, value_size  # noqa: F401 (re-exported)
from capwarden.link.transport import Transport


def rx_write_plan(client, force_response=None):
    """(value size, response) for writes to NUS RX, from bleak's documented GATT API: writes
    without response when RX offers them (aioble's and Nordic's NUS do) and force_response is
    not set, each at most the characteristic's max_write_without_response_size; else Write
    Requests, at most MTU - 3. Raises LinkError when RX is missing or cannot be written."""
    mtu_payload = value_size(getattr(client, "mtu_size", None))
    try:
        char = client.services.get_characteristic(NUS_RX)
    except Exception:
        char = None
    if char is None:
        raise LinkError("the device has no Nordic UART Service RX characteristic (%s)" % NUS_RX)
    props = set(getattr(char, "properties", ()) or ())
    if "write-without-response" in props and not (force_response and "write" in props):
        size = getattr(char, "max_write_without_response_size", None) or mtu_payload
        return max(value_size(ATT_DEFAULT_MTU), min(size, ATT_MAX_VALUE)), False
    if "write" in props:
        return mtu_payload, True
    raise LinkError("the NUS RX characteristic of the device cannot be written (properties: %s)" % ", ".join(sorted(props)))


class BleTransport(Transport):
    def __init__(self, address, timeout=10.0, write_response=None):
        """write_response: None picks by the RX characteristic (without response when offered);
        True always sends Write Requests (for a stack that drops writes without response)."""
        super().__init__()
        self.url = "ble://" + address
        self.address = address
        self.timeout = timeout
        self.write_response = write_response
        self.client = None
        self.nus = None
        self._closing = False

    async def open(self):
        """Connect, subscribe to TX, start the writer. Raises LinkError (no bleak, no device,
        no NUS)."""
        try:
            from bleak import BleakClient
        except ImportError:
            raise LinkError("BLE needs bleak: pip install 'capwarden[ble]'") from None
        self._loop = asyncio.get_running_loop()
        self.nus = NusLink(self._write_rx, name=self.url)
        self.nus.set_receiver(lambda data: self._receiver(data), self._lost)
        self.client = BleakClient(self.address, timeout=self.timeout,
                                  disconnected_callback=lambda _c: self._lost(LinkClosed("%s disconnected" % self.url)))
        try:
            await self.client.connect()
            chunk, response = rx_write_plan(self.client, self.write_response)
            await self.client.start_notify(NUS_TX, lambda _h, data: self.nus.feed(data))
        except LinkError:
            await self._disconnect()
            raise
        except Exception as exc:
            await self._disconnect()
            raise LinkError("cannot connect to %s: %s" % (self.url, exc)) from None
        self.nus.chunk, self.nus.response = chunk, response
        self.nus.start()

    def _lost(self, exc):
        # A disconnect we asked for (close) is not a lost link.
        if self._on_lost and not self._closing:
            self._on_lost(exc)

    async def _write_rx(self, value, response):
        await self.client.write_gatt_char(NUS_RX, value, response=response)

    def write(self, data):
        """Queue bytes for the board. Raises LinkClosed if not open, failed or stalled."""
        if self.nus is None:
            raise LinkClosed("%s is not open" % self.url)
        self.nus.send(data)

    async def close(self):
        self._closing = True
        if self.nus is not None:
            try:
                await asyncio.wait_for(self.nus.drain(), 1.0)
            except (asyncio.TimeoutError, LinkClosed):
                pass
            await self.nus.close()
        await self._disconnect()

    async def _disconnect(self):
        if self.client is not None:
            try:
                await self.client.disconnect()
            except Exception:
                pass
            self.client = None
