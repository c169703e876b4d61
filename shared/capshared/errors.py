"""Error codes: one table, used by the host, the device, and the docs.

Names are those fixed by cap-supplement.md (S2) where it names them. The codes from 64 are the
device link's own (docs/DECISIONS.md "Error codes"): they never reach a runtime as they are;
the engine maps each onto an S2 code (DEVICE_TO_API) and keeps the device code in the message
text and the audit log.

The number is the wire form (one byte). Numbers are never reused or reordered. Each number is
defined once: the codes a board can send are here (every global costs board RAM); the codes
only the host uses (credentials, the runtime API) are in capshared.errtext, which also builds
CODE, NAME, TABLE, text() and DEVICE_TO_API; on the host they can be read from here too.
73 was E_DEV_QUEUED, never sent (a queued request is answered by the QUEUED message): retired,
not to be reused.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

E_SESSION_NOT_FOUND = const(27)
E_RESOURCE_BUSY = const(28)
E_RESOURCE_UNAVAILABLE = const(29)
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
E_DEV_STALE_REQUEST = const(74)
E_DEV_FAILSAFE_PENDING = const(75)

import sys  # noqa: E402

if sys.implementation.name != "micropython":
    def __getattr__(name):
        # The host-only codes and tables (CODE, NAME, TABLE, text, DEVICE_TO_API) live in
        # capshared.errtext, which imports this module; read from here they are looked up there
        # on first use, so neither module needs the other to load first.
        from capshared import errtext

        try:
            return getattr(errtext, name)
        except AttributeError:
            raise AttributeError("module 'capshared.errors' has no attribute %r" % (name,)) from None
