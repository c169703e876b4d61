# The virtual board: simulated resources on the MicroPython unix port. Every resource can be
# unplugged and replugged by the host (SIM_PLUG), which real boards do not accept.
import os
import time

from capagent.driver import OpError, Resource
from capshared.errors import E_DEV_BAD_OPERATION
from capshared.limits import (
    CLS_CAMERA, CLS_GPS, CLS_LED, CLS_MOTOR, CLS_SENSOR, CLS_STORAGE, MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE, RES_ABSENT, RES_PRESENT,
)

NAME = "sim"
SIM = True
# The grant table's size: 16 like a small board, unless the host asks for more (benchmarks).
MAX_GRANTS = int(os.getenv("CAPWARDEN_SIM_GRANTS") or 16)


class SimResource(Resource):
    def plug(self, present):
        self.state = RES_PRESENT if present else RES_ABSENT
        if not present:
            self.safe()


class SimMotor(SimResource):
    cls = CLS_MOTOR
    modes = MODE_READ | MODE_WRITE | MODE_CONFIGURE
    # 1 set speed (i16, -1000..1000), 2 read speed, 3 calibrate: blocks for u16 ms (a long
    # operation that stalls the agent's loop, as a real calibration or flash write does)
    OPS = {1: MODE_WRITE, 2: MODE_READ, 3: MODE_CONFIGURE}

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.speed = 0

    def safe(self):
        self.speed = 0

    def op(self, op, args, start, end, out):
        if op == 1:
            if end - start != 2:
                raise OpError(E_DEV_BAD_OPERATION)
            v = args[start] | (args[start + 1] << 8)
            if v >= 0x8000:
                v -= 0x10000
            if v < -1000 or v > 1000:
                raise OpError(E_DEV_BAD_OPERATION)
            self.speed = v
        elif op == 3:
            if end - start != 2:
                raise OpError(E_DEV_BAD_OPERATION)
            time.sleep_ms(args[start] | (args[start + 1] << 8))
        v = self.speed & 0xFFFF
        out[0] = v & 0xFF
        out[1] = v >> 8
        return 2


class SimCamera(SimResource):
    cls = CLS_CAMERA
    modes = MODE_READ | MODE_EXECUTE | MODE_CONFIGURE
    OPS = {1: MODE_EXECUTE, 2: MODE_EXECUTE, 3: MODE_CONFIGURE, 4: MODE_READ}

    def __init__(self, name="camera"):
        super().__init__()
        self.name = name
        self.streaming = 0
        self.resolution = 1
        self.frames = 0

    def safe(self):
        self.streaming = 0

    def op(self, op, args, start, end, out):
        if op == 1:      # capture one frame: returns its sequence number
            self.frames += 1
        elif op == 2:    # stream on/off
            if end - start != 1:
                raise OpError(E_DEV_BAD_OPERATION)
            self.streaming = args[start] & 1
        elif op == 3:    # set resolution index 0..3
            if end - start != 1 or args[start] > 3:
                raise OpError(E_DEV_BAD_OPERATION)
            self.resolution = args[start]
        out[0] = self.frames & 0xFF
        out[1] = self.streaming
        out[2] = self.resolution
        return 3


class SimGps(SimResource):
    cls = CLS_GPS
    modes = MODE_READ
    OPS = {1: MODE_READ}

    def __init__(self, name="gps"):
        super().__init__()
        self.name = name
        self.reads = 0

    def op(self, op, args, start, end, out):
        # A fixed position that moves one unit per read, as i32 lat/lon in 1e-7 degrees.
        self.reads += 1
        lat = 473977000 + self.reads
        lon = 85456000
        for i in range(4):
            out[i] = (lat >> (8 * i)) & 0xFF
            out[4 + i] = (lon >> (8 * i)) & 0xFF
        return 8


class SimStorage(SimResource):
    cls = CLS_STORAGE
    modes = MODE_READ | MODE_WRITE | MODE_CONFIGURE
    OPS = {1: MODE_WRITE, 2: MODE_READ, 3: MODE_CONFIGURE}   # write, read, format

    def __init__(self, name="sdcard", size=512):
        super().__init__()
        self.name = name
        self.data = bytearray(size)
        self.used = 0

    def op(self, op, args, start, end, out):
        if op == 1:
            n = end - start
            if self.used + n > len(self.data):
                raise OpError(E_DEV_BAD_OPERATION)
            for i in range(n):
                self.data[self.used + i] = args[start + i]
            self.used += n
        elif op == 3:
            for i in range(len(self.data)):
                self.data[i] = 0
            self.used = 0
        out[0] = self.used & 0xFF
        out[1] = self.used >> 8
        return 2


class SimImu(SimResource):
    cls = CLS_SENSOR
    modes = MODE_READ
    OPS = {1: MODE_READ}   # read accelerometer: three i16

    def __init__(self, name="imu"):
        super().__init__()
        self.name = name
        self.samples = 0

    def op(self, op, args, start, end, out):
        self.samples += 1
        out[0] = self.samples & 0xFF
        out[1] = 0
        out[2] = 0
        out[3] = 0
        out[4] = 0xE8   # 1000 mg on z, little-endian
        out[5] = 0x03
        return 6


class SimLed(SimResource):
    cls = CLS_LED
    modes = MODE_READ | MODE_WRITE
    OPS = {1: MODE_WRITE, 2: MODE_READ}   # 1 set brightness (u8), 2 read it

    def __init__(self, name="led"):
        super().__init__()
        self.name = name
        self.level = 0

    def safe(self):
        self.level = 0

    def op(self, op, args, start, end, out):
        if op == 1:
            if end - start != 1:
                raise OpError(E_DEV_BAD_OPERATION)
            self.level = args[start]
        out[0] = self.level
        return 1


class SimWatchdog:
    # machine.WDT on the virtual board. Not fed within its timeout, it does what a hardware
    # watchdog does: resets the board. Outputs go to their reset (safe) state, a marker is left
    # in the board's flash for tests, and the MicroPython process is killed; the host sees the
    # board go silent and, after a restart, a new boot id.
    def __init__(self, timeout_ms):
        import _thread

        self.timeout = timeout_ms
        self.fed = time.ticks_ms()
        # Built now: the watchdog thread must not allocate while the main thread is stuck.
        self.cmd = "echo reset > wdt_reset; kill -9 $PPID"
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed = time.ticks_ms()

    def _watch(self):
        import os

        while True:
            time.sleep_ms(10)
            if time.ticks_diff(time.ticks_ms(), self.fed) > self.timeout:
                for r in _RESOURCES:
                    r.safe()
                os.system(self.cmd)


def watchdog(timeout_ms):
    return SimWatchdog(timeout_ms)


# The manual override switch (docs/device.md "Manual override"): the file "override" in the
# board's flash, one byte per resource, "1" while resource k is under a human's direct control
# (an RC mode switch on a real board). Read in place every tick into a preallocated buffer, so
# it allocates nothing: a test writes the bytes where they are (VirtualBoard's fs_dir). A board
# without the file looks for it again every 256 ticks.
OVERRIDE_FILE = "override"
_ov_buf = bytearray(8)
_ov = [None, 0]   # the open file, ticks since the last look


def override():
    f = _ov[0]
    if f is None:
        _ov[1] = (_ov[1] + 1) & 0xFF
        if _ov[1] != 1:
            return 0
        try:
            f = _ov[0] = open(OVERRIDE_FILE, "rb")
        except OSError:
            return 0
    f.seek(0)
    n = f.readinto(_ov_buf) or 0
    m = 0
    for k in range(n):
        if _ov_buf[k] == 49:
            m |= 1 << k
    return m


_RESOURCES = []


def resources():
    _RESOURCES[:] = _make()
    return _RESOURCES


def _make():
    return [
        SimCamera("camera"),
        SimMotor("motor_left"),
        SimMotor("motor_right"),
        SimGps("gps"),
        SimStorage("sdcard"),
        SimImu("imu"),
        SimLed("led"),
        SimMotor("gimbal"),
    ]
