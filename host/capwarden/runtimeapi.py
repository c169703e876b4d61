"""The runtime API's messages on the wire: ProtocolMessages (chapter 2 section 2.6) as JSON,
made, parsed and checked against the shipped schema (cap-supplement S3).

Both ends use this module, the engine (engine/protocol.py, engine/server.py) and the runtime
SDK (sdk/), which needs nothing else of the engine. The schema file is the one the docs use
(capwarden.resources.schema_path()); jsonschema-rs compiles it once (docs/DECISIONS.md,
"The schema checked by a compiled validator"). Its `pattern` follows ECMA-262, where `$` is
the end of the input (Python's `re`, and so the jsonschema package, also lets `$` match before
a final newline).
"""

import json
import time
import uuid

import jsonschema_rs

from capwarden import resources
from capwarden.credentials.ids import new_uuid7, uuid_text

MAX_FRAME = 256 * 1024

_SCHEMA = None
_VALIDATOR = None


def schema():
    """The shipped schema (a dict, read once: do not change it)."""
    global _SCHEMA
    if _SCHEMA is None:
        with open(resources.schema_path()) as f:
            _SCHEMA = json.load(f)
    return _SCHEMA


def message_types():
    """Every message_type the schema defines (requests, responses, pushes and Error)."""
    return tuple(schema()["properties"]["message_type"]["enum"])


def validator():
    """The compiled validator of the whole schema (jsonschema_rs.Draft202012Validator)."""
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = jsonschema_rs.Draft202012Validator(schema())
    return _VALIDATOR


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
    check = validator()
    try:
        if check.is_valid(msg):
            return
        check.validate(msg)          # only for a bad message: the first problem, named
    except jsonschema_rs.ValidationError as exc:
        where = "/".join(str(p) for p in exc.instance_path) or "message"
        raise BadMessage(("%s: %s" % (where, exc.message))[:300], message_id) from None
    except ValueError as exc:
        # A value that is not JSON (bytes, a set: from a caller, never from a frame).
        raise BadMessage("not a JSON value: %s" % exc, message_id) from None
    except RecursionError:
        raise BadMessage("a value is nested too deeply", message_id) from None
    raise BadMessage("does not match the schema", message_id)   # not reached: the two agree


def _is_uuid(text):
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def make(message_type, body, sender_id, correlation_id=None):
    """A new ProtocolMessage dict (version 1, a fresh UUIDv7 message_id, the time now)."""
    msg = {"version": 1, "message_id": uuid_text(new_uuid7()), "message_type": message_type,
           "timestamp": int(time.time()), "sender_id": sender_id, "body": body}
    if correlation_id:
        msg["correlation_id"] = correlation_id
    return msg


def dumps(msg):
    """The frame text of a message dict (compact JSON)."""
    return json.dumps(msg, separators=(",", ":"))
