"""Host-only view of the error codes: name/number tables, explanations, API mapping.

The numbers themselves live in capshared.errors (the one source); this module reads them.
"""

# Codes only the host uses (credentials, the runtime API); the codes a board sends are in
# capshared.errors. Numbers are never reused or reordered.
E_DESCRIPTOR_MALFORMED = 1
E_DESCRIPTOR_NOT_FOUND = 2
E_VERIFICATION_KEY_INVALID = 3
E_INVALID_SIGNATURE = 4
E_DESCRIPTOR_NOT_YET_VALID = 5
E_DESCRIPTOR_EXPIRED = 6
E_DESCRIPTOR_VALIDITY_TOO_LONG = 7
E_DESCRIPTOR_SUBJECT_MISMATCH = 8
E_DESCRIPTOR_TERMINAL_MISMATCH = 9
E_DESCRIPTOR_RESOURCE_NOT_GRANTED = 10
E_DESCRIPTOR_MODE_NOT_GRANTED = 11
E_DESCRIPTOR_REVOKED = 12
E_TICKET_MALFORMED = 13
E_TICKET_NOT_YET_VALID = 14
E_TICKET_EXPIRED = 15
E_TICKET_VALIDITY_TOO_LONG = 16
E_TICKET_SUBJECT_MISMATCH = 17
E_TICKET_TERMINAL_MISMATCH = 18
E_TICKET_RESOURCE_NOT_GRANTED = 19
E_TICKET_MODE_NOT_GRANTED = 20
E_TICKET_REVOKED = 21
E_REVOCATION_QUERY_TIMEOUT = 22
E_TICKET_OFFLINE_REJECTED = 23
E_MALFORMED_REQUEST = 24
E_UNSUPPORTED_VERSION = 25
E_PERMISSION_DENIED = 26
E_DEVICE_UNREACHABLE = 30
E_HANDOVER_TIMEOUT = 31
E_HANDOVER_REJECTED = 32

from capshared import errors as _errors  # noqa: E402

# The explanation a user sees after each code.
TEXT = {
    "E_DESCRIPTOR_MALFORMED": "the descriptor does not parse or breaks a chapter 2 constraint",
    "E_DESCRIPTOR_NOT_FOUND": "no stored descriptor has that descriptor_ref",
    "E_VERIFICATION_KEY_INVALID": "the signing key is unknown, not yet valid, expired, revoked or mismatched",
    "E_INVALID_SIGNATURE": "the signature does not verify",
    "E_DESCRIPTOR_NOT_YET_VALID": "the descriptor is not valid yet",
    "E_DESCRIPTOR_EXPIRED": "the descriptor has expired",
    "E_DESCRIPTOR_VALIDITY_TOO_LONG": "the descriptor is valid for more than 90 days",
    "E_DESCRIPTOR_SUBJECT_MISMATCH": "the descriptor was issued to another Fay",
    "E_DESCRIPTOR_TERMINAL_MISMATCH": "the descriptor was issued for another terminal",
    "E_DESCRIPTOR_RESOURCE_NOT_GRANTED": "the descriptor grants nothing on that resource",
    "E_DESCRIPTOR_MODE_NOT_GRANTED": "the descriptor does not grant that mode",
    "E_DESCRIPTOR_REVOKED": "the descriptor has been revoked",
    "E_TICKET_MALFORMED": "the ticket does not parse or breaks a chapter 2 constraint",
    "E_TICKET_NOT_YET_VALID": "the ticket is not valid yet",
    "E_TICKET_EXPIRED": "the ticket has expired",
    "E_TICKET_VALIDITY_TOO_LONG": "the ticket is valid for more than 7 days",
    "E_TICKET_SUBJECT_MISMATCH": "the ticket was issued to another Fay",
    "E_TICKET_TERMINAL_MISMATCH": "the ticket was issued for another terminal",
    "E_TICKET_RESOURCE_NOT_GRANTED": "the ticket grants nothing on that resource",
    "E_TICKET_MODE_NOT_GRANTED": "the ticket does not grant that mode",
    "E_TICKET_REVOKED": "the ticket has been revoked",
    "E_REVOCATION_QUERY_TIMEOUT": "the revocation service did not answer in time",
    "E_TICKET_OFFLINE_REJECTED": "new tickets are refused while the terminal is offline",
    "E_MALFORMED_REQUEST": "the request is malformed",
    "E_UNSUPPORTED_VERSION": "that protocol version is not supported",
    "E_PERMISSION_DENIED": "the sender may not act on that",
    "E_SESSION_NOT_FOUND": "no such session",
    "E_RESOURCE_BUSY": "the resource is held by another session",
    "E_RESOURCE_UNAVAILABLE": "the resource is unknown, removed or faulty",
    "E_DEVICE_UNREACHABLE": "the board does not answer",
    "E_HANDOVER_TIMEOUT": "the handover did not complete in time",
    "E_HANDOVER_REJECTED": "the handover was refused",
    "E_INTERNAL": "internal error",
    "E_DEV_STALE_EPOCH": "the command names an epoch older than the current grant",
    "E_DEV_NOT_HOLDER": "the session does not hold that resource in that mode",
    "E_DEV_SUSPENDED": "the session is suspended: write, execute and configure are refused",
    "E_DEV_LOCK_DELAY": "the resource is in safe hold after a holder was lost",
    "E_DEV_BAD_MESSAGE": "the frame carries an unknown message or wrong field sizes",
    "E_DEV_NO_SPACE": "the agent's grant or waiter table is full",
    "E_DEV_BAD_OPERATION": "the resource's driver does not know that operation or its arguments",
    "E_DEV_DRIVER_FAULT": "the resource's driver failed",
    "E_DEV_UPGRADE_REFUSED": "read to write upgrade is refused: release and acquire again",
    "E_DEV_STALE_REQUEST": "the board already answered that request id and no longer holds the answer: "
                           "a late copy is refused, not executed again",
    "E_DEV_FAILSAFE_PENDING": "the lease ran out: the board waits for a heartbeat before the failsafe",
}

CODE = {n: v for n, v in list(vars(_errors).items()) + list(globals().items())
        if n.startswith("E_") and isinstance(v, int)}
NAME = {v: n for n, v in CODE.items()}
TABLE = tuple(sorted((v, n, TEXT[n]) for n, v in CODE.items()))

if set(TEXT) != set(CODE):  # pragma: no cover - caught by tests at once
    raise ImportError("capshared.errtext and capshared.errors disagree: %s" % sorted(set(TEXT) ^ set(CODE)))


def text(num):
    """The explanation of a code number, or a generic one for an unknown number."""
    name = NAME.get(num)
    return TEXT[name] if name else "unknown error code %d" % num


# How the engine reports a device code to a runtime (S2 codes only cross the runtime API).
DEVICE_TO_API = {
    "E_DEV_STALE_EPOCH": "E_PERMISSION_DENIED",
    "E_DEV_NOT_HOLDER": "E_PERMISSION_DENIED",
    "E_DEV_SUSPENDED": "E_PERMISSION_DENIED",
    "E_DEV_LOCK_DELAY": "E_RESOURCE_BUSY",
    "E_DEV_BAD_MESSAGE": "E_INTERNAL",
    "E_DEV_NO_SPACE": "E_RESOURCE_BUSY",
    "E_DEV_BAD_OPERATION": "E_MALFORMED_REQUEST",
    "E_DEV_DRIVER_FAULT": "E_RESOURCE_UNAVAILABLE",
    "E_DEV_UPGRADE_REFUSED": "E_RESOURCE_BUSY",
    "E_DEV_STALE_REQUEST": "E_DEVICE_UNREACHABLE",
    "E_DEV_FAILSAFE_PENDING": "E_PERMISSION_DENIED",
}
