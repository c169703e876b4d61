"""Error codes: one table, used by the host, the device, and the docs.

Names are those fixed by cap-supplement.md (S2) where it names them. The codes after
E_INTERNAL are the device link's own (project decision, docs/DECISIONS.md "Error codes"):
they never reach a runtime as they are; the engine maps each onto an S2 code (see
DEVICE_TO_API below) and keeps the device code in the message text and the audit log.

The number is the wire form (one byte). Numbers are never reused or reordered.
"""

# (number, name, short explanation). The explanation is what a user sees after the code.
TABLE = (
    # Credential codes (S2).
    (1, "E_DESCRIPTOR_MALFORMED", "the descriptor does not parse or breaks a chapter 2 constraint"),
    (2, "E_DESCRIPTOR_NOT_FOUND", "no stored descriptor has that descriptor_ref"),
    (3, "E_VERIFICATION_KEY_INVALID", "the signing key is unknown, not yet valid, expired, revoked or mismatched"),
    (4, "E_INVALID_SIGNATURE", "the signature does not verify"),
    (5, "E_DESCRIPTOR_NOT_YET_VALID", "the descriptor is not valid yet"),
    (6, "E_DESCRIPTOR_EXPIRED", "the descriptor has expired"),
    (7, "E_DESCRIPTOR_VALIDITY_TOO_LONG", "the descriptor is valid for more than 90 days"),
    (8, "E_DESCRIPTOR_SUBJECT_MISMATCH", "the descriptor was issued to another Fay"),
    (9, "E_DESCRIPTOR_TERMINAL_MISMATCH", "the descriptor was issued for another terminal"),
    (10, "E_DESCRIPTOR_RESOURCE_NOT_GRANTED", "the descriptor grants nothing on that resource"),
    (11, "E_DESCRIPTOR_MODE_NOT_GRANTED", "the descriptor does not grant that mode"),
    (12, "E_DESCRIPTOR_REVOKED", "the descriptor has been revoked"),
    (13, "E_TICKET_MALFORMED", "the ticket does not parse or breaks a chapter 2 constraint"),
    (14, "E_TICKET_NOT_YET_VALID", "the ticket is not valid yet"),
    (15, "E_TICKET_EXPIRED", "the ticket has expired"),
    (16, "E_TICKET_VALIDITY_TOO_LONG", "the ticket is valid for more than 7 days"),
    (17, "E_TICKET_SUBJECT_MISMATCH", "the ticket was issued to another Fay"),
    (18, "E_TICKET_TERMINAL_MISMATCH", "the ticket was issued for another terminal"),
    (19, "E_TICKET_RESOURCE_NOT_GRANTED", "the ticket grants nothing on that resource"),
    (20, "E_TICKET_MODE_NOT_GRANTED", "the ticket does not grant that mode"),
    (21, "E_TICKET_REVOKED", "the ticket has been revoked"),
    (22, "E_REVOCATION_QUERY_TIMEOUT", "the revocation service did not answer in time"),
    (23, "E_TICKET_OFFLINE_REJECTED", "new tickets are refused while the terminal is offline"),
    # Codes outside credentials (S2).
    (24, "E_MALFORMED_REQUEST", "the request is malformed"),
    (25, "E_UNSUPPORTED_VERSION", "that protocol version is not supported"),
    (26, "E_PERMISSION_DENIED", "the sender may not act on that"),
    (27, "E_SESSION_NOT_FOUND", "no such session"),
    (28, "E_RESOURCE_BUSY", "the resource is held by another session"),
    (29, "E_RESOURCE_UNAVAILABLE", "the resource is unknown, removed or faulty"),
    (30, "E_DEVICE_UNREACHABLE", "the board does not answer"),
    (31, "E_HANDOVER_TIMEOUT", "the handover did not complete in time"),
    (32, "E_HANDOVER_REJECTED", "the handover was refused"),
    (33, "E_INTERNAL", "internal error"),
    # Device link codes (project's own; mapped to S2 codes by the engine).
    (64, "E_DEV_STALE_EPOCH", "the command names an epoch older than the current grant"),
    (65, "E_DEV_NOT_HOLDER", "the session does not hold that resource in that mode"),
    (66, "E_DEV_SUSPENDED", "the session is suspended: write, execute and configure are refused"),
    (67, "E_DEV_LOCK_DELAY", "the resource is in safe hold after a holder was lost"),
    (68, "E_DEV_BAD_MESSAGE", "the frame carries an unknown message or wrong field sizes"),
    (69, "E_DEV_NO_SPACE", "the agent's grant or waiter table is full"),
    (70, "E_DEV_BAD_OPERATION", "the resource's driver does not know that operation or its arguments"),
    (71, "E_DEV_DRIVER_FAULT", "the resource's driver failed"),
    (72, "E_DEV_UPGRADE_REFUSED", "read to write upgrade is refused: release and acquire again"),
    (73, "E_DEV_QUEUED", "the request waits in the resource's queue"),
)

# Name -> number and number -> name, built once at import.
CODE = {}
NAME = {}
for _num, _name, _text in TABLE:
    CODE[_name] = _num
    NAME[_num] = _name


def text(num):
    """The explanation of a code number, or a generic one for an unknown number."""
    for n, _name, t in TABLE:
        if n == num:
            return t
    return "unknown error code %d" % num


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
    "E_DEV_QUEUED": "E_RESOURCE_BUSY",
}
