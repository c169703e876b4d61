"""ProtocolMessages (chapter 2 section 2.6) as JSON, validated against the shipped schema.

The schema file (shared/schema/v1/schema.json) is the one the docs and the SDK use.
"""

import json
import os
import time
import uuid

import jsonschema

from capshared.errors import CODE, DEVICE_TO_API, text
from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.engine import schemacheck

MAX_FRAME = 256 * 1024


def schema_path():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "..", "shared", "schema", "v1", "schema.json")


_VALIDATORS = None


def validator():
    """(envelope check, {message_type: body check}, full jsonschema validator) from the shipped schema.

    The schema's allOf/if/then says "body must match $defs[message_type]"; checking the envelope
    and then only that one body schema gives the same verdict at a fraction of the cost (the
    if/then form tries all 19 branches on every frame). The checks are compiled by schemacheck;
    the full jsonschema validator is kept for the tests that compare verdicts.
    """
    global _VALIDATORS
    if _VALIDATORS is None:
        with open(schema_path()) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        defs = schema["$defs"]
        envelope = {k: v for k, v in schema.items() if k not in ("allOf", "$defs")}
        bodies = {t: schemacheck.compile_schema(s, defs) for t, s in defs.items()}
        _VALIDATORS = (schemacheck.compile_schema(envelope, defs), bodies, jsonschema.Draft202012Validator(schema))
    return _VALIDATORS


class BadMessage(ValueError):
    """A frame that is not a valid ProtocolMessage. `message_id` when one could be read; `code`
    the S2 code to answer with (E_UNSUPPORTED_VERSION for a version other than 1)."""

    def __init__(self, why, message_id=None, code="E_MALFORMED_REQUEST"):
        super().__init__(why)
        self.message_id = message_id
        self.code = code


def parse(text):
    """The message dict of a text frame. Raises BadMessage saying what is wrong."""
    if not isinstance(text, str):
        raise BadMessage("binary frames are not ProtocolMessages: send JSON text")
    if len(text) > MAX_FRAME:
        raise BadMessage("frame of %d characters exceeds %d" % (len(text), MAX_FRAME))
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise BadMessage("not JSON: %s" % exc) from None
    except RecursionError:
        # Nesting deeper than the decoder's stack ('[' * 100000): refused like any other bad
        # frame, never a dropped connection.
        raise BadMessage("not JSON this engine reads: nested too deeply") from None
    mid = msg.get("message_id") if isinstance(msg, dict) else None
    mid = mid if isinstance(mid, str) and _is_uuid(mid) else None
    v = msg.get("version") if isinstance(msg, dict) else None
    if type(v) is int and v != 1:
        raise BadMessage("version %r is not supported: this engine speaks version 1" % (msg["version"],), mid,
                         "E_UNSUPPORTED_VERSION")
    validate(msg, mid)
    return msg


def validate(msg, message_id=None):
    """Check a message dict against the schema. Raises BadMessage naming the first problem."""
    envelope, bodies, _full = validator()
    try:
        envelope(msg)
        bodies[msg["message_type"]](msg["body"], "body")
    except schemacheck.Invalid as exc:
        raise BadMessage(str(exc)[:300], message_id) from None
    except RecursionError:
        # A value nested near the decoder's limit, where the schema wants a flat one.
        raise BadMessage("a value is nested too deeply", message_id) from None


def _is_uuid(text):
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def make(message_type, body, sender_id, correlation_id=None):
    msg = {"version": 1, "message_id": uuid_text(new_uuid7()), "message_type": message_type,
           "timestamp": int(time.time()), "sender_id": sender_id, "body": body}
    if correlation_id:
        msg["correlation_id"] = correlation_id
    return msg


def dumps(msg):
    return json.dumps(msg, separators=(",", ":"))


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
