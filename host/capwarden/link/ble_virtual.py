"""A virtual BLE radio: a Nordic UART Service peripheral on a bumble virtual controller.

    radio = VirtualRadio()                      # one in-process link layer (bumble LocalLink)
    board = NusPeripheral(radio, on_data=fd_write)
    await board.start()                         # powered on, advertising at board.address
    board.send(b"...")                          # notified on TX, cut to the connection's MTU - 3

A central on the same radio (another bumble Device from radio.device()) connects to
board.address. Everything runs on the event loop, in this process: no radio, no sockets. The
byte handling is the same `NusLink` the bleak transport uses; only the stack differs. Needs
bumble (in the `test` extra); the import is deferred so the rest of capwarden does not.
"""

import asyncio

from capwarden.errors import LinkError
from capwarden.link.nus import NUS_RX, NUS_SERVICE, NUS_TX, NusLink


def _bumble():
    try:
        from bumble import controller, device, gatt, hci, host, link
        from bumble.transport.common import AsyncPipeSink
    except ImportError:
        raise LinkError("the virtual BLE radio needs bumble: pip install bumble (in capwarden[test])") from None
    return controller, device, gatt, hci, host, link, AsyncPipeSink


class VirtualRadio:
    """Virtual controllers that reach each other, each with its bumble host and Device."""

    def __init__(self):
        self._mods = _bumble()
        self.link = self._mods[5].LocalLink()
        self._count = 0

    def device(self, name="capwarden"):
        """A new bumble Device on this radio (not yet powered on). Raises LinkError without bumble."""
        controller, device, _gatt, hci, host, _link, AsyncPipeSink = self._mods
        self._count += 1
        address = "F0:CA:00:00:00:%02X" % self._count
        ctl = controller.Controller(name, link=self.link, public_address=address)
        return device.Device(name=name, address=hci.Address(address), host=host.Host(ctl, AsyncPipeSink(ctl)))


class NusPeripheral:
    """A board's side of NUS: values written to RX reach on_data(bytes) in order; send(bytes)
    goes out as notifications on TX. Notifications wait until a central has subscribed to TX
    (a stack drops a notification nobody subscribed to), then leave one at a time, each at most
    the connection's ATT MTU - 3 (a longer one is truncated by the stack)."""

    def __init__(self, radio, on_data=None, max_mtu=247, name="capwarden-nus"):
        _controller, _device, gatt, _hci, _host, _link, _sink = radio._mods
        self.device = radio.device(name)
        self.device.gatt_server.max_mtu = max_mtu
        props = gatt.Characteristic.Properties
        self.rx = gatt.Characteristic(NUS_RX, props.WRITE | props.WRITE_WITHOUT_RESPONSE, gatt.Characteristic.WRITEABLE,
                                      gatt.CharacteristicValue(write=self._on_rx))
        self.tx = gatt.Characteristic(NUS_TX, props.NOTIFY, gatt.Characteristic.READABLE, b"")
        self.device.add_service(gatt.Service(NUS_SERVICE, [self.rx, self.tx]))
        self.name, self.on_data = name, on_data
        self.nus = self._new_link()
        self.connection = None
        self.rx_values = []         # the length of every value written to RX, for tests
        self.tx_values = []         # the length of every notification sent
        self.tx.on("subscription", self._on_subscription)
        self.device.on("connection", self._on_connection)

    @property
    def address(self):
        return self.device.random_address

    async def start(self):
        """Power on and advertise; a central on the same radio can connect to self.address."""
        await self.device.power_on()
        await self.device.start_advertising(auto_restart=True)

    def send(self, data):
        """Queue bytes for the central (LinkClosed if the link failed or stalled)."""
        self.nus.send(data)   # before the central subscribes, the bytes wait in the NusLink

    def _on_connection(self, connection):
        self.connection = connection
        self.nus.set_mtu(connection.att_mtu)
        connection.on("connection_att_mtu_update", lambda: self.nus.set_mtu(connection.att_mtu))
        connection.on("disconnection", self._on_disconnection)

    def _new_link(self):
        nus = NusLink(self._notify, name=self.name)
        nus.set_receiver(self.on_data)
        return nus

    def _on_disconnection(self, _reason):
        # What was queued for that central is gone with it, as on a board; the next central
        # gets a fresh link that waits for its subscription.
        self.connection = None
        old, self.nus = self.nus, self._new_link()
        asyncio.ensure_future(old.close())

    def _on_subscription(self, _bearer, notify_enabled, _indicate_enabled):
        if notify_enabled and not self.nus.started:
            self.nus.start()

    def _on_rx(self, _connection, value):
        self.rx_values.append(len(value))
        self.nus.feed(bytes(value))

    async def _notify(self, value, _response):
        if self.connection is None:
            raise LinkError("no central is connected")
        self.tx_values.append(len(value))
        await self.device.notify_subscribers(self.tx, value)

    async def stop(self):
        await self.nus.close()
        try:
            await self.device.power_off()
        except Exception:
            pass
