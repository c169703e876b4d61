# The driver interface every board resource implements. Board descriptions (boards/NAME/board.py)
# list instances; the agent never touches hardware except through these methods.
from capshared.errors import E_DEV_BAD_OPERATION
from capshared.limits import CLS_OTHER, MODES_ALL, RES_PRESENT


class OpError(Exception):
    # Raised by a driver op with an error code number (capshared.errors).
    pass


class Resource:
    name = "resource"
    cls = CLS_OTHER      # capshared.limits.CLS_*
    modes = MODES_ALL    # modes the resource can be granted in
    # op number -> the mode bit a session must hold to run it. Every op is classified, even
    # "harmless" ones (faults.md 46): an op missing here is refused.
    OPS = {}

    def __init__(self):
        self.state = RES_PRESENT

    def poll(self):
        # Called every agent tick. Returns the current state (RES_PRESENT/RES_ABSENT/RES_FAULT);
        # a change is reported to the host and ends grants on absence or fault.
        return self.state

    def safe(self):
        # Drive the hardware to its safe state (motors idle, streams off). Must not raise.
        pass

    def op(self, op, args, start, end, out):
        # Run operation `op` with args[start:end]; write the result into `out` (a bytearray) and
        # return its length. Raise OpError(code) for bad arguments or driver faults.
        raise OpError(E_DEV_BAD_OPERATION)

    def plug(self, present):
        # The virtual board's unplug/replug. Real drivers detect this themselves.
        raise OpError(E_DEV_BAD_OPERATION)
