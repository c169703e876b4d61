"""Error codes: one table, used by the host, the device, and the docs.

Names are those fixed by cap-supplement.md (S2) where it names them. The codes from 64 are the
device link's own (docs/DECISIONS.md "Error codes"): they never reach a runtime as they are;
the engine maps each onto an S2 code (DEVICE_TO_API) and keeps the device code in the message
text and the audit log.

The number is the wire form (one byte). Numbers are never reused or reordered. On the device
these are const() names, which cost no heap; the host also gets CODE, NAME, TABLE, text() and
DEVICE_TO_API from capshared.errtext (host only: the explanations would waste board RAM).
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

E_DESCRIPTOR_MALFORMED = const(1)
E_DESCRIPTOR_NOT_FOUND = const(2)
E_VERIFICATION_KEY_INVALID = const(3)
E_INVALID_SIGNATURE = const(4)
E_DESCRIPTOR_NOT_YET_VALID = const(5)
E_DESCRIPTOR_EXPIRED = const(6)
E_DESCRIPTOR_VALIDITY_TOO_LONG = const(7)
E_DESCRIPTOR_SUBJECT_MISMATCH = const(8)
E_DESCRIPTOR_TERMINAL_MISMATCH = const(9)
E_DESCRIPTOR_RESOURCE_NOT_GRANTED = const(10)
E_DESCRIPTOR_MODE_NOT_GRANTED = const(11)
E_DESCRIPTOR_REVOKED = const(12)
E_TICKET_MALFORMED = const(13)
E_TICKET_NOT_YET_VALID = const(14)
E_TICKET_EXPIRED = const(15)
E_TICKET_VALIDITY_TOO_LONG = const(16)
E_TICKET_SUBJECT_MISMATCH = const(17)
E_TICKET_TERMINAL_MISMATCH = const(18)
E_TICKET_RESOURCE_NOT_GRANTED = const(19)
E_TICKET_MODE_NOT_GRANTED = const(20)
E_TICKET_REVOKED = const(21)
E_REVOCATION_QUERY_TIMEOUT = const(22)
E_TICKET_OFFLINE_REJECTED = const(23)
E_MALFORMED_REQUEST = const(24)
E_UNSUPPORTED_VERSION = const(25)
E_PERMISSION_DENIED = const(26)
E_SESSION_NOT_FOUND = const(27)
E_RESOURCE_BUSY = const(28)
E_RESOURCE_UNAVAILABLE = const(29)
E_DEVICE_UNREACHABLE = const(30)
E_HANDOVER_TIMEOUT = const(31)
E_HANDOVER_REJECTED = const(32)
E_INTERNAL = const(33)
E_DEV_STALE_EPOCH = const(64)
E_DEV_NOT_HOLDER = const(65)
E_DEV_SUSPENDED = const(66)
E_DEV_LOCK_DELAY = const(67)
E_DEV_BAD_MESSAGE = const(68)
E_DEV_NO_SPACE = const(69)
E_DEV_BAD_OPERATION = const(70)
E_DEV_DRIVER_FAULT = const(71)
E_DEV_UPGRADE_REFUSED = const(72)
E_DEV_QUEUED = const(73)

import sys  # noqa: E402

if sys.implementation.name != "micropython":
    from capshared.errtext import CODE, DEVICE_TO_API, NAME, TABLE, text  # noqa: E402,F401
