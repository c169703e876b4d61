# The Pico camera board's drivers under MicroPython, with fakes in place of machine objects.
from board import ArduCam, Led, Servo
from capagent.driver import OpError
from capshared.limits import RES_FAULT, RES_PRESENT
import board


class Pin:
    def __init__(self):
        self.v = 0
        self.log = []

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        self.log.append(v)


class Pwm:
    def __init__(self):
        self.f = 0
        self.duty = None

    def freq(self, f):
        self.f = f

    def duty_ns(self, d):
        self.duty = d


class CamSpi:
    # An ArduChip: registers over SPI; bit 7 of the address byte means write.
    def __init__(self, alive=True):
        self.regs = bytearray(256)
        self.alive = alive
        self.regs[0x41] = 0x08           # capture done
        self.regs[0x42] = 0x34           # FIFO size 0x012634
        self.regs[0x43] = 0x26
        self.regs[0x44] = 0x01

    def write(self, buf):
        if not self.alive:
            raise OSError(5)
        if buf[0] & 0x80:
            self.regs[buf[0] & 0x7F] = buf[1]

    def write_readinto(self, out, into):
        if not self.alive:
            raise OSError(5)
        into[1] = self.regs[out[0] & 0x7F]


class I2c:
    def __init__(self):
        self.writes = []

    def writeto(self, addr, buf):
        self.writes.append((addr, bytes(buf)))


def test_board_identity():
    assert board.NAME == "pico_camera" and board.SIM is False


def test_camera_capture_reports_fifo_size_and_probe():
    cs = Pin()
    cam = ArduCam(CamSpi(), cs, I2c())
    assert cam.poll() == RES_PRESENT
    out = bytearray(8)
    assert cam.op(1, b"", 0, 0, out) == 4
    assert out[0] | out[1] << 8 | out[2] << 16 == 0x012634
    assert cs.v == 1  # chip select released after every transfer


def test_camera_unplugged_is_a_fault_and_safe_never_raises():
    spi = CamSpi()
    cam = ArduCam(spi, Pin(), I2c())
    spi.alive = False
    assert cam.poll() == RES_FAULT
    cam.safe()
    assert cam.streaming == 0


def test_camera_rejects_bad_arguments():
    cam = ArduCam(CamSpi(), Pin(), I2c())
    for op, args in ((2, b""), (3, b"\x09"), (3, b"")):
        try:
            cam.op(op, args, 0, len(args), bytearray(8))
            assert False, "accepted %r" % ((op, args),)
        except OpError:
            pass


def test_servo_safe_is_centred_and_pulses_in_range():
    pwm = Pwm()
    s = Servo(pwm)
    assert pwm.f == 50
    s.op(1, b"\xb4", 0, 1, bytearray(2))   # 180 degrees
    assert pwm.duty == 2500000
    s.safe()
    assert s.angle == 90 and pwm.duty == 1500000


def test_every_op_is_classified():
    for cls in (ArduCam, Servo, Led):
        for op, mode in cls.OPS.items():
            assert mode & cls.modes, (cls, op)
