"""Host-only names for the protocol's numbers: modes, resource states, classes, reasons.

The numbers are defined once, in capshared.limits (which the firmware build folds into the
device code); this module only names them. It is kept out of limits because on a board every
function's bytecode costs RAM even when never called. Host code imports these from here.
"""

from capshared import limits
from capshared.limits import MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE


def _numbered(prefix):
    # The lower-case names of limits' `prefix`* constants, indexed by their number: the numbers
    # must run 0, 1, 2, ... without a gap (each is a wire byte a table is indexed by).
    found = sorted((v, n[len(prefix):].lower()) for n, v in vars(limits).items() if n.startswith(prefix))
    if [v for v, _n in found] != list(range(len(found))):
        raise ImportError("capshared.limits: %s* numbers must be 0..%d without gaps" % (prefix, len(found) - 1))
    return tuple(n for _v, n in found)


MODE_NAMES = (("read", MODE_READ), ("write", MODE_WRITE), ("execute", MODE_EXECUTE), ("configure", MODE_CONFIGURE))
# Resource states (limits.RES_*: RES_INFO_R and EV_RESOURCE state byte).
RES_STATE_NAMES = _numbered("RES_")

# Resource classes (limits.CLS_*: a board description names one per resource).
CLASSES = _numbered("CLS_")

# Why a grant ended or a resource changed (limits.R_*: EV_GRANT_ENDED, EV_RESOURCE reason byte).
REASONS = _numbered("R_")


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
