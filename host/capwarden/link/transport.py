"""Device transports: the narrow interface between the Board client and a byte pipe.

A transport does four things: open, write bytes, hand received bytes to one callback, close.
Backends are chosen by URL (open_transport): `ble://ADDRESS` is the Nordic UART Service over
bleak; anything else is a pyserial URL (/dev/ttyACM0, socket://host:port, loop://, spy://...,
or the virtual board's pty).
"""

import asyncio
import os
import select
import threading

from capwarden.errors import LinkClosed, LinkError


class Transport:
    """Base class. Subclasses implement open, write and close; they call self._deliver(bytes)."""

    url = ""

    def __init__(self):
        self._receiver = None
        self._loop = None
        self._on_lost = None

    def set_receiver(self, callback, on_lost=None):
        """callback(bytes) runs on the event loop for every chunk received; on_lost(exc) once."""
        self._receiver = callback
        self._on_lost = on_lost

    async def open(self):
        raise NotImplementedError

    def write(self, data):
        raise NotImplementedError

    async def close(self):
        raise NotImplementedError

    # For backends whose reads happen off the event loop thread.
    def _deliver_threadsafe(self, data):
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._receiver, data)
            except RuntimeError:
                pass  # the loop is shutting down

    def _lost_threadsafe(self, exc):
        loop = self._loop
        if self._on_lost and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_lost, exc)
            except RuntimeError:
                pass


class SerialTransport(Transport):
    """Any pyserial URL. A reader thread feeds the event loop; writes go straight out."""

    def __init__(self, url, baudrate=115200):
        super().__init__()
        self.url = url
        self.baudrate = baudrate
        self.serial = None
        self._thread = None
        self._fd = None
        self._closing = threading.Event()

    async def open(self):
        import serial

        self._loop = asyncio.get_running_loop()
        # A device path is locked for this process alone (pyserial's flock where the platform has
        # it): a second engine, a terminal program or a stranger cannot share the line with the
        # engine. URL handlers (socket://, loop://) have no file to lock.
        kw = {} if "://" in self.url else {"exclusive": True}
        try:
            self.serial = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05, write_timeout=2, **kw)
        except (serial.SerialException, ValueError, OSError) as exc:
            if "exclusively lock" in str(exc):
                raise LinkError("cannot open %s: the port is in use by %s" % (self.url, port_holders(self.url))) from None
            hint = "; 'capwarden ports' lists the serial ports" if "://" not in self.url else ""
            raise LinkError("cannot open %s: %s%s" % (self.url, exc, hint)) from None
        fd = self._fileno()
        if fd is not None:
            # A real file descriptor (tty, pty): the event loop reads it directly, which saves
            # a thread hop per frame. Other URLs (socket://, loop://) get a reader thread.
            self._fd = fd
            self._loop.add_reader(fd, self._read_ready)
        else:
            self._thread = threading.Thread(target=self._read_loop, name="serial-reader " + self.url, daemon=True)
            self._thread.start()

    def _fileno(self):
        try:
            fd = self.serial.fileno()
        except Exception:
            return None
        return fd if isinstance(fd, int) and fd >= 0 else None

    def _read_ready(self):
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            err = exc
        else:
            err = None
        if not data:
            self._loop.remove_reader(self._fd)
            self._fd = None
            if self._on_lost and not self._closing.is_set():
                self._on_lost(LinkClosed("%s: %s" % (self.url, err or "end of file")))
            return
        self._receiver(data)

    def _read_loop(self):
        s = self.serial
        while not self._closing.is_set():
            try:
                data = s.read(max(1, s.in_waiting))
            except Exception as exc:  # the port went away (unplugged) or was closed
                if not self._closing.is_set():
                    self._lost_threadsafe(LinkClosed("%s: %s" % (self.url, exc)))
                return
            if data:
                self._deliver_threadsafe(data)

    def write(self, data):
        if self.serial is None:
            raise LinkClosed("%s is not open" % self.url)
        try:
            self.serial.write(data)
        except Exception as exc:
            raise LinkClosed("%s: write failed: %s" % (self.url, exc)) from None

    async def close(self):
        self._closing.set()
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            self._fd = None
        if self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 1.0)
        if self.serial is not None:
            try:
                self.serial.close()
            except Exception:
                pass
            self.serial = None


def port_holders(path):
    """Who else has `path` open, as words for an error message: "PID 123 (capwarden serve ...)"
    for each process found in /proc (Linux), else "another process"."""
    try:
        target = os.path.realpath(path)
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                fds = os.listdir("/proc/%s/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == target:
                        with open("/proc/%s/cmdline" % pid, "rb") as f:
                            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                        found.append("PID %s (%s)" % (pid, cmd[:80] or "?"))
                        break
                except OSError:
                    continue
        return ", ".join(found) or "another process"
    except OSError:
        return "another process"


def open_transport(url, **kw):
    """A transport for `url` (not yet opened). Raises LinkError for an unusable URL."""
    if not url:
        raise LinkError("no device address given")
    if url.startswith("ble://"):
        from capwarden.link.ble import BleTransport  # bleak is an optional extra

        return BleTransport(url[len("ble://"):], **kw)
    return SerialTransport(url, **kw)


class FdTransport(Transport):
    """An already-open file descriptor (a pty master, a pipe pair's end): read by the event loop.

    Used where the host itself created the line, e.g. the virtual board without its cable.
    The descriptor is not closed by close(); its owner closes it.
    """

    def __init__(self, fd, name="fd"):
        super().__init__()
        self.fd = fd
        self.url = name

    async def open(self):
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self.fd, False)
        self._loop.add_reader(self.fd, self._read_ready)

    def _read_ready(self):
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self.fd)
            if self._on_lost:
                self._on_lost(LinkClosed("%s: end of file" % self.url))
            return
        self._receiver(data)

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            except OSError as exc:
                raise LinkClosed("%s: write failed: %s" % (self.url, exc)) from None
            view = view[n:]

    async def close(self):
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.fd)


# ---- finding a board: USB serial ports, the boards we support first ---------------------------

# (VID, PID or None for any) -> what is likely behind it. From boards/*/README.md: pico_camera is
# an RP2040 on USB CDC; esp32_drone's UART0 sits behind one of the usual USB-serial bridges, or
# the ESP32-S2/S3/C3 native USB.
SUPPORTED_USB = (
    (0x2E8A, None, "Raspberry Pi RP2040/RP2350 (boards/pico_camera)"),
    (0x303A, None, "Espressif native USB (ESP32-S2/S3/C3; boards/esp32_drone)"),
    (0x10C4, 0xEA60, "Silicon Labs CP210x bridge (ESP32 dev boards; boards/esp32_drone)"),
    (0x1A86, 0x7523, "WCH CH340 bridge (ESP32 dev boards; boards/esp32_drone)"),
    (0x1A86, 0x55D4, "WCH CH9102 bridge (ESP32 dev boards; boards/esp32_drone)"),
    (0x0403, 0x6001, "FTDI FT232R bridge (ESP32 dev boards; boards/esp32_drone)"),
    (0x0403, 0x6015, "FTDI FT231X bridge (ESP32 dev boards; boards/esp32_drone)"),
)

AUTO = "auto"


def supported_board(vid, pid):
    """The description of a supported board behind USB VID:PID, or None."""
    if vid is None:
        return None
    for v, p, what in SUPPORTED_USB:
        if vid == v and (p is None or pid == p):
            return what
    return None


def list_ports(comports=None):
    """Serial ports as dicts (device, vid, pid, serial_number, description, supported), the
    ones whose USB VID/PID belongs to a board we support first. `comports` is for tests (a
    callable like serial.tools.list_ports.comports)."""
    if comports is None:
        from serial.tools.list_ports import comports
    out = []
    for p in comports():
        vid, pid = getattr(p, "vid", None), getattr(p, "pid", None)
        out.append({"device": p.device, "vid": vid, "pid": pid,
                    "usb": "%04x:%04x" % (vid, pid) if vid is not None and pid is not None else None,
                    "serial_number": getattr(p, "serial_number", None),
                    "description": getattr(p, "description", None) or "",
                    "supported": supported_board(vid, pid)})
    out.sort(key=lambda r: (r["supported"] is None, r["device"]))
    return out


def resolve_port(port, comports=None):
    """`port` itself, or for 'auto' the one serial port with a supported board's USB VID/PID.
    Raises LinkError when there is none, or more than one (name it then)."""
    if port != AUTO:
        return port
    found = [p for p in list_ports(comports) if p["supported"]]
    if len(found) == 1:
        return found[0]["device"]
    if not found:
        raise LinkError("--port auto: no serial port with the USB id of a supported board (RP2040 2e8a, "
                        "ESP32 bridges 10c4/1a86/0403, Espressif 303a); run 'capwarden ports' to see every port")
    raise LinkError("--port auto: %d supported boards are plugged in (%s); name one with --port"
                    % (len(found), ", ".join(p["device"] for p in found)))
