# ESP32 drone controller: four ESCs (PWM), a GPS receiver (UART2, NMEA), an MPU-6050 IMU (I2C)
# and a status LED. The agent talks to the host over UART0 (the REPL's USB-serial bridge).
#
# Failsafe: every ESC goes to its idle (disarmed) pulse, 1000 us, which ESCs treat as motor off.
# Drivers take their machine objects in the constructor; only resources() touches pins, so the
# logic is tested under the MicroPython unix port with fakes (tests/device/mp_board_esp32_drone.py).
from capagent.driver import OpError, Resource
from capagent.gpio import Led  # noqa: F401  (part of this board's description)
from capshared.errors import E_DEV_BAD_OPERATION, E_DEV_DRIVER_FAULT
from capshared.limits import (
    CLS_GPS, CLS_MOTOR, CLS_SENSOR, MODE_CONFIGURE, MODE_READ, MODE_WRITE, RES_ABSENT, RES_FAULT, RES_PRESENT,
)

NAME = "esp32_drone"
SIM = False

IDLE_US = 1000
MAX_US = 2000


class Esc(Resource):
    cls = CLS_MOTOR
    modes = MODE_READ | MODE_WRITE | MODE_CONFIGURE
    # 1 throttle (u16 microseconds, 1000..max), 2 read it, 3 set the max pulse (calibration)
    OPS = {1: MODE_WRITE, 2: MODE_READ, 3: MODE_CONFIGURE}

    def __init__(self, pwm, name):
        super().__init__()
        self.name = name
        self.pwm = pwm
        self.pwm.freq(50)
        self.us = IDLE_US
        self.max_us = MAX_US
        self._apply()

    def _apply(self):
        self.pwm.duty_ns(self.us * 1000)

    def safe(self):
        self.us = IDLE_US
        self._apply()

    def op(self, op, args, start, end, out):
        if op == 1 or op == 3:
            if end - start != 2:
                raise OpError(E_DEV_BAD_OPERATION)
            v = args[start] | (args[start + 1] << 8)
            if op == 1:
                if v < IDLE_US or v > self.max_us:
                    raise OpError(E_DEV_BAD_OPERATION)
                self.us = v
                self._apply()
            else:
                if v < 1500 or v > 2500:
                    raise OpError(E_DEV_BAD_OPERATION)
                self.max_us = v
                if self.us > v:
                    self.safe()
        out[0] = self.us & 0xFF
        out[1] = self.us >> 8
        return 2


class NmeaGps(Resource):
    cls = CLS_GPS
    modes = MODE_READ
    OPS = {1: MODE_READ}   # 1 position: lat, lon as i32 in 1e-7 degrees, fix quality u8
    STALE_MS = 3000        # no sentence for this long: the receiver is unplugged

    def __init__(self, uart, clock, name="gps"):
        super().__init__()
        self.name = name
        self.uart = uart
        self.clock = clock
        self.line = bytearray(96)
        self.n = 0
        self.b1 = bytearray(1)
        self.lat = 0
        self.lon = 0
        self.fix = 0
        self.heard = clock.ticks_ms()

    def poll(self):
        # Read what the UART holds without blocking and parse complete $GxGGA sentences.
        u = self.uart
        while u.any():
            u.readinto(self.b1, 1)
            c = self.b1[0]
            if c == 0x24:  # '$'
                self.n = 0
            if self.n < len(self.line):
                self.line[self.n] = c
                self.n += 1
            if c == 0x0A:
                self._sentence()
                self.n = 0
        quiet = self.clock.ticks_diff(self.clock.ticks_ms(), self.heard)
        self.state = RES_ABSENT if quiet > self.STALE_MS else RES_PRESENT
        return self.state

    def _sentence(self):
        b = self.line
        if self.n < 7 or b[3] != 0x47 or b[4] != 0x47 or b[5] != 0x41:  # "GGA"
            self.heard = self.clock.ticks_ms()
            return
        self.heard = self.clock.ticks_ms()
        # Fields: $GPGGA,time,lat,N,lon,E,fix,...  (comma-separated, parsed in place)
        field = 0
        i = 0
        lat = lon = 0
        fix = 0
        neg_lat = neg_lon = False
        while i < self.n and field <= 6:
            c = b[i]
            if c == 0x2C:
                field += 1
                i += 1
                if field == 2:
                    lat, i = _coord(b, i, 2)
                elif field == 4:
                    lon, i = _coord(b, i, 3)
                continue
            if field == 3 and c == 0x53:   # 'S'
                neg_lat = True
            elif field == 5 and c == 0x57:  # 'W'
                neg_lon = True
            elif field == 6 and 0x30 <= c <= 0x39:
                fix = c - 0x30
            i += 1
        self.lat = -lat if neg_lat else lat
        self.lon = -lon if neg_lon else lon
        self.fix = fix

    def op(self, op, args, start, end, out):
        lat = self.lat & 0xFFFFFFFF
        lon = self.lon & 0xFFFFFFFF
        for i in range(4):
            out[i] = (lat >> (8 * i)) & 0xFF
            out[4 + i] = (lon >> (8 * i)) & 0xFF
        out[8] = self.fix
        return 9


def _coord(b, i, deg_digits):
    # ddmm.mmmm (or dddmm.mmmm) to 1e-7 degrees, without floats. Returns (value, next index).
    deg = 0
    for _ in range(deg_digits):
        if i < len(b) and 0x30 <= b[i] <= 0x39:
            deg = deg * 10 + b[i] - 0x30
        i += 1
    minutes = 0
    scale = 0
    frac = False
    while i < len(b) and b[i] != 0x2C:
        c = b[i]
        if c == 0x2E:
            frac = True
        elif 0x30 <= c <= 0x39:
            minutes = minutes * 10 + c - 0x30
            if frac:
                scale += 1
        i += 1
    while scale < 5:   # minutes in 1e-5
        minutes *= 10
        scale += 1
    while scale > 5:
        minutes //= 10
        scale -= 1
    return deg * 10000000 + minutes * 100 // 60, i


class Mpu6050(Resource):
    cls = CLS_SENSOR
    modes = MODE_READ
    OPS = {1: MODE_READ}   # 1 acceleration: x, y, z as i16 (raw, 16384 = 1 g)
    ADDR = 0x68

    def __init__(self, i2c, name="imu"):
        super().__init__()
        self.name = name
        self.i2c = i2c
        self.buf = bytearray(6)
        self.wake = bytearray(1)
        try:
            self.i2c.writeto_mem(self.ADDR, 0x6B, self.wake)  # PWR_MGMT_1 = 0: wake up
        except OSError:
            self.state = RES_ABSENT

    def poll(self):
        try:
            self.i2c.readfrom_mem_into(self.ADDR, 0x75, self.wake)  # WHO_AM_I
            self.state = RES_PRESENT if self.wake[0] == 0x68 else RES_FAULT
        except OSError:
            self.state = RES_ABSENT
        return self.state

    def op(self, op, args, start, end, out):
        try:
            self.i2c.readfrom_mem_into(self.ADDR, 0x3B, self.buf)
        except OSError:
            raise OpError(E_DEV_DRIVER_FAULT)
        for i in range(3):  # big-endian on the chip, little-endian on the wire
            out[2 * i] = self.buf[2 * i + 1]
            out[2 * i + 1] = self.buf[2 * i]
        return 6


class _Clock:
    def ticks_ms(self):
        import time

        return time.ticks_ms()

    def ticks_diff(self, a, b):
        import time

        return time.ticks_diff(a, b)


# The manual override (docs/device.md "Manual override"): the RC receiver's mode switch, through
# a PWM-to-logic switch, on GPIO 33 with the pull-up on: grounded is "automatic" (the Fays may
# fly), open is "manual", so a cut wire gives the pilot control. In manual the board takes the
# four ESCs from every Fay itself, host or no host. Built against MicroPython's machine.Pin API;
# NOT run on the hardware here (tests/device/mp_board_esp32_drone.py drives it with a fake pin).
RC_MODE_PIN = 33
FLIGHT = 0x0F      # resources 0..3: the ESCs
_rc = [None]       # the mode switch's Pin, set by resources()


def override():
    pin = _rc[0]
    return FLIGHT if pin is not None and pin.value() else 0


def resources():
    from machine import I2C, PWM, UART, Pin

    _rc[0] = Pin(RC_MODE_PIN, Pin.IN, Pin.PULL_UP)
    i2c = I2C(0, sda=Pin(21), scl=Pin(22), freq=400000)
    return [
        Esc(PWM(Pin(25)), "motor_1"),
        Esc(PWM(Pin(26)), "motor_2"),
        Esc(PWM(Pin(27)), "motor_3"),
        Esc(PWM(Pin(14)), "motor_4"),
        NmeaGps(UART(2, baudrate=9600, tx=Pin(17), rx=Pin(16)), _Clock()),
        Mpu6050(i2c),
        Led(Pin(2, Pin.OUT)),
    ]
