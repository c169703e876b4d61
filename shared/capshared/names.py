"""Host-only names for the protocol's numbers: modes, resource states, classes, reasons.

Kept out of capshared.limits because on a board every function's bytecode costs RAM even when
never called; limits re-exports these on CPython, so host code imports them from there.
"""

from capshared.limits import MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE

MODE_NAMES = (("read", MODE_READ), ("write", MODE_WRITE), ("execute", MODE_EXECUTE), ("configure", MODE_CONFIGURE))
RES_STATE_NAMES = ("absent", "present", "fault")

# Resource classes (a board description names one per resource).
CLASSES = ("other", "camera", "motor", "gps", "storage", "sensor", "led")

# Why a grant ended or a resource changed (EV_GRANT_ENDED, EV_RESOURCE reason byte).
REASONS = (
    "none",          # 0
    "released",      # 1 the holder released it
    "lease_expired", # 2 the host went silent past the lease
    "removed",       # 3 the resource was unplugged
    "fault",         # 4 the driver reported a fault
    "handover",      # 5 moved to another session
    "failsafe",      # 6 failsafe drove the resource to its safe state
    "session_ended", # 7 the host ended the session
    "reboot",        # 8 the agent restarted
    "replugged",     # 9 the resource came back
    "watchdog",      # 10 the supervisor found the agent unhealthy
)


def reason_code(name):
    return REASONS.index(name)


def mode_bits(names):
    """Bits for an iterable of mode names. Raises ValueError for an unknown name."""
    bits = 0
    for n in names:
        for name, bit in MODE_NAMES:
            if name == n:
                bits |= bit
                break
        else:
            raise ValueError("unknown access mode %r" % (n,))
    return bits


def mode_names(bits):
    """Mode names for a bit set, in the order read, write, execute, configure."""
    return [name for name, bit in MODE_NAMES if bits & bit]
