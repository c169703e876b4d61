"""BLE transport: the Nordic UART Service (NUS) over bleak, as aioble and most boards expose it.

Writes go to the RX characteristic in chunks of the negotiated MTU minus 3; the TX
characteristic's notifications carry the board's bytes. Built against bleak's documented API;
this machine has no BLE radio, so it is exercised only by an import-and-construct test (the gap
is stated in docs/protocol.md).
"""

import asyncio

from capwarden.errors import LinkClosed, LinkError
from capwarden.link.transport import Transport

NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"   # host writes here
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"   # board notifies here


class BleTransport(Transport):
    def __init__(self, address, timeout=10.0):
        super().__init__()
        self.url = "ble://" + address
        self.address = address
        self.timeout = timeout
        self.client = None
        self._chunk = 20
        self._tx_queue = None
        self._writer = None

    async def open(self):
        try:
            from bleak import BleakClient
        except ImportError:
            raise LinkError("BLE needs bleak: pip install 'capwarden[ble]'") from None
        self._loop = asyncio.get_running_loop()
        self.client = BleakClient(self.address, timeout=self.timeout,
                                  disconnected_callback=lambda _c: self._on_lost and self._on_lost(
                                      LinkClosed("%s disconnected" % self.url)))
        try:
            await self.client.connect()
            await self.client.start_notify(NUS_TX, lambda _h, data: self._receiver(bytes(data)))
        except Exception as exc:
            raise LinkError("cannot connect to %s: %s" % (self.url, exc)) from None
        self._chunk = max(20, (self.client.mtu_size or 23) - 3)
        self._tx_queue = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write_loop())

    def write(self, data):
        if self._tx_queue is None:
            raise LinkClosed("%s is not open" % self.url)
        for i in range(0, len(data), self._chunk):
            self._tx_queue.put_nowait(bytes(data[i:i + self._chunk]))

    async def _write_loop(self):
        while True:
            chunk = await self._tx_queue.get()
            try:
                await self.client.write_gatt_char(NUS_RX, chunk, response=False)
            except Exception as exc:
                if self._on_lost:
                    self._on_lost(LinkClosed("%s: write failed: %s" % (self.url, exc)))
                return

    async def close(self):
        if self._writer:
            self._writer.cancel()
        if self.client is not None:
            try:
                await self.client.disconnect()
            except Exception:
                pass
            self.client = None
