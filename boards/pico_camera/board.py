# Raspberry Pi Pico (RP2040) camera board: an ArduCAM Mini 2MP (SPI + I2C), a pan servo, the
# status LED. The agent talks to the host over USB CDC (the REPL's stdio).
#
# Drivers take their machine objects in the constructor, so their logic is tested under the
# MicroPython unix port with recording fakes (tests/device/mp_board_pico_camera.py); only resources()
# touches real pins. Pin numbers follow the ArduCAM Pico wiring (SPI0: SCK 2, MOSI 3, MISO 4,
# CS 5; I2C0: SDA 8, SCL 9).
from capagent.driver import OpError, Resource
from capagent.gpio import Led  # noqa: F401  (part of this board's description)
from capshared.errors import E_DEV_BAD_OPERATION, E_DEV_DRIVER_FAULT
from capshared.limits import (
    CLS_CAMERA, CLS_MOTOR, MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE, RES_FAULT, RES_PRESENT,
)

NAME = "pico_camera"
SIM = False

_ARDUCHIP_TEST = 0x00
_ARDUCHIP_FIFO = 0x04
_FIFO_CLEAR = 0x01
_FIFO_START = 0x02
_ARDUCHIP_TRIG = 0x41
_CAP_DONE = 0x08
_FIFO_SIZE1 = 0x42
_OV2640_ADDR = 0x30


class ArduCam(Resource):
    cls = CLS_CAMERA
    modes = MODE_READ | MODE_EXECUTE | MODE_CONFIGURE
    # 1 capture: returns the frame size (u32); 2 stream on/off (u8); 3 resolution (u8 0..3);
    # 4 status: present flag, streaming, resolution
    OPS = {1: MODE_EXECUTE, 2: MODE_EXECUTE, 3: MODE_CONFIGURE, 4: MODE_READ}

    def __init__(self, spi, cs, i2c, name="camera"):
        super().__init__()
        self.name = name
        self.spi = spi
        self.cs = cs
        self.i2c = i2c
        self.reg = bytearray(2)
        self.streaming = 0
        self.resolution = 1
        self.cs.value(1)

    def _write(self, addr, value):
        self.reg[0] = addr | 0x80
        self.reg[1] = value
        self.cs.value(0)
        self.spi.write(self.reg)
        self.cs.value(1)

    def _read(self, addr):
        self.reg[0] = addr & 0x7F
        self.reg[1] = 0
        self.cs.value(0)
        self.spi.write_readinto(self.reg, self.reg)
        self.cs.value(1)
        return self.reg[1]

    def poll(self):
        # The ArduChip test register echoes what was written: a cheap "still plugged in" check.
        try:
            self._write(_ARDUCHIP_TEST, 0x55)
            self.state = RES_PRESENT if self._read(_ARDUCHIP_TEST) == 0x55 else RES_FAULT
        except OSError:
            self.state = RES_FAULT
        return self.state

    def safe(self):
        self.streaming = 0
        try:
            self._write(_ARDUCHIP_FIFO, _FIFO_CLEAR)
        except OSError:
            pass

    def op(self, op, args, start, end, out):
        if op == 1:
            self._write(_ARDUCHIP_FIFO, _FIFO_CLEAR)
            self._write(_ARDUCHIP_FIFO, _FIFO_START)
            for _ in range(2000):
                if self._read(_ARDUCHIP_TRIG) & _CAP_DONE:
                    break
            else:
                raise OpError(E_DEV_DRIVER_FAULT)  # no frame
            size = self._read(_FIFO_SIZE1) | (self._read(_FIFO_SIZE1 + 1) << 8) | ((self._read(_FIFO_SIZE1 + 2) & 0x7F) << 16)
            for i in range(4):
                out[i] = (size >> (8 * i)) & 0xFF
            return 4
        if op == 2:
            if end - start != 1:
                raise OpError(E_DEV_BAD_OPERATION)
            self.streaming = args[start] & 1
        elif op == 3:
            if end - start != 1 or args[start] > 3:
                raise OpError(E_DEV_BAD_OPERATION)
            self.resolution = args[start]
            self.reg[0] = 0xFF
            self.reg[1] = 0x00
            self.i2c.writeto(_OV2640_ADDR, self.reg)  # select the sensor register bank
        out[0] = 1 if self.state == RES_PRESENT else 0
        out[1] = self.streaming
        out[2] = self.resolution
        return 3


class Servo(Resource):
    cls = CLS_MOTOR
    modes = MODE_READ | MODE_WRITE
    OPS = {1: MODE_WRITE, 2: MODE_READ}   # 1 set angle (u8, 0..180), 2 read it
    SAFE_ANGLE = 90                       # centred: the camera looks ahead

    def __init__(self, pwm, name="pan"):
        super().__init__()
        self.name = name
        self.pwm = pwm
        self.pwm.freq(50)
        self.angle = self.SAFE_ANGLE
        self._apply()

    def _apply(self):
        # 0.5 ms .. 2.5 ms pulse in a 20 ms period, as duty_ns
        self.pwm.duty_ns(500000 + self.angle * 2000000 // 180)

    def safe(self):
        self.angle = self.SAFE_ANGLE
        self._apply()

    def op(self, op, args, start, end, out):
        if op == 1:
            if end - start != 1 or args[start] > 180:
                raise OpError(E_DEV_BAD_OPERATION)
            self.angle = args[start]
            self._apply()
        out[0] = self.angle
        return 1


def resources():
    from machine import I2C, PWM, SPI, Pin

    spi = SPI(0, baudrate=8000000, sck=Pin(2), mosi=Pin(3), miso=Pin(4))
    i2c = I2C(0, sda=Pin(8), scl=Pin(9), freq=400000)
    return [
        ArduCam(spi, Pin(5, Pin.OUT), i2c),
        Servo(PWM(Pin(15))),
        Led(Pin(25, Pin.OUT)),
    ]
