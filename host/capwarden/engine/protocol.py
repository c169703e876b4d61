"""ProtocolMessages (chapter 2 section 2.6) as JSON, validated against the shipped schema.

The schema file (shared/schema/v1/schema.json) is the one the docs and the SDK use.
"""

import json
import os
import time
import uuid

import jsonschema

from capwarden.credentials.ids import new_uuid7, uuid_text

MAX_FRAME = 256 * 1024


def schema_path():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "..", "shared", "schema", "v1", "schema.json")


_VALIDATOR = None


def validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        with open(schema_path()) as f:
            _VALIDATOR = jsonschema.Draft202012Validator(json.load(f))
    return _VALIDATOR


class BadMessage(ValueError):
    """A frame that is not a valid ProtocolMessage. `message_id` when one could be read."""

    def __init__(self, why, message_id=None):
        super().__init__(why)
        self.message_id = message_id


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
    mid = msg.get("message_id") if isinstance(msg, dict) else None
    mid = mid if isinstance(mid, str) and _is_uuid(mid) else None
    errors = sorted(validator().iter_errors(msg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "message"
        raise BadMessage("%s: %s" % (where, e.message[:200]), mid)
    return msg


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
