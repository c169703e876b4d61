"""The engine's side of the runtime API: the messages themselves (made, parsed, checked against
the shipped schema) are capwarden.runtimeapi's, shared with the SDK and re-exported here; this
module adds what only the engine says: the S2 codes and texts of a board's refusals and of a
credential that stopped being valid.
"""

from capshared.errors import CODE, DEVICE_TO_API, text
from capwarden.runtimeapi import MAX_FRAME, BadMessage, dumps, make, message_types, parse, validate, validator

__all__ = ["MAX_FRAME", "BadMessage", "dumps", "make", "message_types", "parse", "validate", "validator",
           "api_code", "refusal_text", "refusal_code"]


def api_code(device_code):
    """The S2 code a runtime sees for a board's refusal: device codes never cross the API."""
    return DEVICE_TO_API.get(device_code, "E_INTERNAL" if device_code.startswith("E_DEV_") else device_code)


def refusal_text(exc):
    """What a runtime is told of a board's refusal: the reason and the device code, without the
    board's detail field (which can name another session's board token; the audit log keeps it)."""
    if exc.code in CODE:
        return "%s (the board refused: %s)" % (text(CODE[exc.code]), exc.code)
    return exc.message


# Why a running session's credential stopped being valid (authorizer.still_valid) -> the S2
# code a fresh request with that credential gets (descriptor, ticket).
_STILL_VALID_CODES = {"key_invalid": ("E_VERIFICATION_KEY_INVALID", "E_VERIFICATION_KEY_INVALID"),
                      "credential_expired": ("E_DESCRIPTOR_EXPIRED", "E_TICKET_EXPIRED"),
                      "revoked": ("E_DESCRIPTOR_REVOKED", "E_TICKET_REVOKED")}


def refusal_code(credential_type, why):
    """The S2 code for a still_valid() reason, as a fresh request with that credential would get."""
    pair = _STILL_VALID_CODES.get(why, ("E_PERMISSION_DENIED", "E_PERMISSION_DENIED"))
    return pair[1] if credential_type == "ticket" else pair[0]
