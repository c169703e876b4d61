# The ESP32 drone board's drivers under MicroPython, with fakes in place of machine objects.
from board import IDLE_US, Esc, Mpu6050, NmeaGps
from capagent.driver import OpError
from capshared.limits import RES_ABSENT, RES_PRESENT
import board
from fakeclock import Clock


class Pwm:
    def __init__(self):
        self.duty = None

    def freq(self, f):
        self.f = f

    def duty_ns(self, d):
        self.duty = d


class Uart:
    def __init__(self):
        self.data = bytearray()

    def any(self):
        return len(self.data)

    def readinto(self, b, n):
        b[0] = self.data[0]
        self.data = self.data[1:]
        return 1


class I2c:
    def __init__(self, who=0x68):
        self.who = who

    def writeto_mem(self, addr, reg, buf):
        pass

    def readfrom_mem_into(self, addr, reg, buf):
        if self.who is None:
            raise OSError(19)
        if reg == 0x75:
            buf[0] = self.who
        else:
            for i in range(len(buf)):
                buf[i] = (0x40, 0x00, 0x00, 0x10, 0xC0, 0x00)[i]


def test_board_identity():
    assert board.NAME == "esp32_drone" and board.SIM is False


def test_esc_failsafe_is_the_idle_pulse():
    pwm = Pwm()
    esc = Esc(pwm, "motor_1")
    assert pwm.duty == IDLE_US * 1000
    esc.op(1, b"\xdc\x05", 0, 2, bytearray(2))  # 1500 us
    assert pwm.duty == 1500000
    esc.safe()
    assert pwm.duty == IDLE_US * 1000


def test_esc_refuses_throttle_outside_its_calibration():
    esc = Esc(Pwm(), "motor_1")
    for args in (b"\xe7\x03", b"\xd1\x07", b"\x00"):   # 999 us, 2001 us, wrong size
        try:
            esc.op(1, args, 0, len(args), bytearray(2))
            assert False
        except OpError:
            pass
    esc.op(3, b"\xdc\x05", 0, 2, bytearray(2))          # max 1500 us
    try:
        esc.op(1, b"\xd0\x07", 0, 2, bytearray(2))
        assert False
    except OpError:
        pass


def test_gps_parses_gga_and_goes_absent_when_silent():
    u = Uart()
    c = Clock(0)
    gps = NmeaGps(u, c)
    u.data += b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
    assert gps.poll() == RES_PRESENT
    out = bytearray(9)
    gps.op(1, b"", 0, 0, out)
    lat = out[0] | out[1] << 8 | out[2] << 16 | out[3] << 24
    lon = out[4] | out[5] << 8 | out[6] << 16 | out[7] << 24
    assert lat == 481173000   # 48 deg 07.038 min = 48.1173 deg
    assert lon == 115166666   # 11 deg 31.000 min
    assert out[8] == 1
    c.t += 4000
    assert gps.poll() == RES_ABSENT


def test_gps_southern_western_hemisphere():
    u = Uart()
    gps = NmeaGps(u, Clock(0))
    u.data += b"$GNGGA,0,3351.000,S,15112.000,W,2,,,,,,,,*00\n"
    gps.poll()
    assert gps.lat == -338500000 and gps.lon == -1512000000 and gps.fix == 2


def test_imu_reads_big_endian_registers_and_detects_absence():
    i2c = I2c()
    imu = Mpu6050(i2c)
    assert imu.poll() == RES_PRESENT
    out = bytearray(6)
    imu.op(1, b"", 0, 0, out)
    assert out[0] == 0x00 and out[1] == 0x40   # 0x4000 = 1 g on x
    i2c.who = None
    assert imu.poll() == RES_ABSENT


class RcPin:
    # The RC mode switch's Pin: value() 0 grounded ("automatic"), 1 open ("manual").
    def __init__(self, v):
        self.v = v

    def value(self):
        return self.v


def test_rc_mode_switch_in_manual_overrides_the_four_escs_only():
    old = board._rc[0]
    try:
        board._rc[0] = None
        assert board.override() == 0                     # before resources(): no switch read
        board._rc[0] = RcPin(0)
        assert board.override() == 0                     # automatic: the Fays may fly
        board._rc[0] = RcPin(1)
        assert board.override() == board.FLIGHT == 0x0F  # manual (or a cut wire): motors 0..3
    finally:
        board._rc[0] = old
