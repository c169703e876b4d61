# Drivers for plain GPIO outputs that many boards share. A separate module, so boards that do
# not use it (the virtual board) do not pay its bytecode in RAM.
from capagent.driver import OpError, Resource
from capshared.errors import E_DEV_BAD_OPERATION
from capshared.limits import CLS_LED, MODE_READ, MODE_WRITE


class Led(Resource):
    cls = CLS_LED
    modes = MODE_READ | MODE_WRITE
    OPS = {1: MODE_WRITE, 2: MODE_READ}   # 1 on/off (u8), 2 read

    def __init__(self, pin, name="led"):
        super().__init__()
        self.name = name
        self.pin = pin

    def safe(self):
        self.pin.value(0)

    def op(self, op, args, start, end, out):
        if op == 1:
            if end - start != 1:
                raise OpError(E_DEV_BAD_OPERATION)
            self.pin.value(1 if args[start] else 0)
        out[0] = self.pin.value()
        return 1
