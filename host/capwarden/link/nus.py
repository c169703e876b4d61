"""The Nordic UART Service as a byte pipe, independent of the BLE stack underneath.

Both ends of a NUS link do the same two things: cut an outgoing byte stream into ATT values no
longer than the negotiated MTU minus 3 (a value longer than that is truncated by the stack, so
bytes would silently go missing), and join the values received from the other side back into
one stream, in order. `NusLink` does both for one end. The stack is plugged in as one coroutine,
`send_value(chunk, response)`: a Write (with or without response) to RX on the central, a
notification on TX on the peripheral. The bleak transport (`capwarden.link.ble`) and the bumble
virtual peripheral (`capwarden.link.ble_virtual`) are such plugs; the tests run this class over
two bumble virtual controllers at MTU 23 and 247 (docs/ble.md).

Flow control: one value is in flight at a time and the next leaves only when the stack has
taken the previous one (the coroutine returned), so a stack that pushes back slows the writer
instead of dropping or reordering values. Bytes written meanwhile wait here, joined into full
values; more than `max_backlog` of them means the link has stalled, and writing fails closed.
"""

import asyncio

from capwarden.errors import LinkClosed

NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"   # the central writes here
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"   # the peripheral notifies here

ATT_DEFAULT_MTU = 23    # every LE link starts with it (Core Vol 3 Part F 3.2.8)
ATT_VALUE_HEADER = 3    # opcode + handle in front of a Write Command or a Notification
ATT_MAX_VALUE = 512     # the longest attribute value (Core Vol 3 Part F 3.2.9)
DEFAULT_BACKLOG = 64 * 1024


def value_size(mtu):
    """The longest value one write or notification carries at ATT MTU `mtu`."""
    mtu = ATT_DEFAULT_MTU if not mtu or mtu < ATT_DEFAULT_MTU else mtu
    return min(mtu - ATT_VALUE_HEADER, ATT_MAX_VALUE)


class NusLink:
    """One end of a NUS byte pipe. Use on the event loop: start(), send(), feed(), close()."""

    def __init__(self, send_value, mtu=ATT_DEFAULT_MTU, response=False, name="nus", max_backlog=DEFAULT_BACKLOG):
        self._send_value = send_value
        self.response = response        # True: Write Request, the peer acknowledges each value
        self.name = name
        self.max_backlog = max_backlog
        self.chunk = value_size(mtu)
        self._pending = bytearray()
        self._wake = None
        self._idle = None
        self._task = None
        self._failed = None
        self._closed = False
        self._receiver = None
        self._on_lost = None
        self._early = bytearray()       # received before a receiver was set
        self.sent_values = 0
        self.received_values = 0

    def set_mtu(self, mtu):
        """The ATT MTU the link negotiated; values sent from now on are cut to mtu - 3."""
        self.chunk = value_size(mtu)

    def set_receiver(self, callback, on_lost=None):
        """callback(bytes) for the peer's bytes, in order; on_lost(exc) once if sending fails."""
        self._receiver = callback
        self._on_lost = on_lost
        if self._early and callback is not None:
            data, self._early = bytes(self._early), bytearray()
            callback(data)

    @property
    def started(self):
        return self._task is not None

    def start(self):
        """Start the writer on the running loop; bytes queued before start leave now."""
        self._task = asyncio.ensure_future(self._write_loop())
        self._kick()

    def _kick(self):
        if self._wake is None:
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
        if self._pending:
            self._idle.clear()
            self._wake.set()
        else:
            self._idle.set()

    def send(self, data):
        """Queue bytes for the peer; before start() they wait for it. Raises LinkClosed once the
        link has failed or is closed, or when more than max_backlog bytes would wait (stalled)."""
        if self._failed is not None:
            raise LinkClosed("%s: %s" % (self.name, self._failed))
        if self._closed:
            raise LinkClosed("%s is closed" % self.name)
        if len(self._pending) + len(data) > self.max_backlog:
            raise LinkClosed("%s: more than %d bytes wait to be sent; the link has stalled" % (self.name, self.max_backlog))
        if data:
            self._pending += data
            if self._task is not None:
                self._kick()

    def feed(self, value):
        """A value the peer sent (a notification on the central, a write on the peripheral)."""
        self.received_values += 1
        if self._receiver is None:
            self._early += value
        elif value:
            self._receiver(bytes(value))

    @property
    def backlog(self):
        return len(self._pending)

    async def drain(self):
        """Wait until every queued byte has been taken by the stack. Raises LinkClosed on failure."""
        if self._task is not None:
            await self._idle.wait()
        if self._failed is not None:
            raise LinkClosed("%s: %s" % (self.name, self._failed))

    async def _write_loop(self):
        while True:
            await self._wake.wait()
            while self._pending:
                value = bytes(self._pending[:self.chunk])
                try:
                    await self._send_value(value, self.response)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed = "write failed: %s" % (exc,)
                    self._pending.clear()
                    self._idle.set()
                    if self._on_lost:
                        self._on_lost(LinkClosed("%s: %s" % (self.name, self._failed)))
                    return
                del self._pending[:len(value)]
                self.sent_values += 1
            self._wake.clear()
            self._idle.set()

    async def close(self):
        """Stop the writer; bytes not yet taken by the stack are dropped (call drain() first to
        keep them)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._idle is not None:
            self._idle.set()
