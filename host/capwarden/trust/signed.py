"""Signed documents of the trust services: what the service hands a terminal and back.

Every answer a terminal acts on (a revocation list, a key set, an issued credential's record)
and every acknowledgement a terminal sends is one of these, so that nothing rests on the
transport alone (issue 13 item 4). One format for all of them:

    {"payload": b64u(deterministic CBOR of a map with a "type" key),
     "signatures": [{"kid": KEY_ID, "alg": ALGORITHM, "sig": b64u(64 bytes)}, ...]}

Each signature covers DOMAIN + the payload bytes exactly as sent: the domain prefix keeps these
signatures from ever being valid as a descriptor, ticket or revocation statement signed by the
same key, and signing the received bytes (not a re-encoding) leaves no room for two encodings.
The payload's "type" is checked against what the caller expects before anything else is read,
so a key-set signature can never be replayed as a revocation list.

Deterministic CBOR admits no booleans or null (credentials.cbor): payloads use 0/1 and omit
absent values.
"""

from capwarden.credentials import cbor, keys
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.errors import CapwardenError

DOMAIN = b"capwarden-trust/1\x00"
MAX_DOC_BYTES = 4 * 1024 * 1024   # a full revocation list for one terminal stays far below this
MAX_SIGNATURES = 4                # a rotation is signed by the old trust and the new: 2 in practice

# Payload types: one per kind of document, checked before anything else is read.
REVOCATION_LIST = "revocation-list"
KEY_SET = "key-set"
KEY_SET_ACK = "key-set-ack"
REGISTRATION = "registration"
TICKET_STATUS = "ticket-status"
ISSUED = "issued"


class SignedDocError(CapwardenError, ValueError):
    """A signed document that must not be acted on: malformed, wrong type, or not signed by
    the keys it needs. The message says which."""


def sign(payload, signers):
    """The signed document for `payload` (a dict with a "type" key) signed by each of
    `signers` (capwarden.credentials.issue.SigningKey objects), in that order."""
    if not isinstance(payload, dict) or type(payload.get("type")) is not str:
        raise SignedDocError("a signed payload is a map with a text \"type\"")
    if not signers:
        raise SignedDocError("a signed document needs at least one signer")
    raw = cbor.encode(payload)
    sigs = [{"kid": k.key_id, "alg": k.algorithm, "sig": b64u_encode(k.private.sign(DOMAIN + raw))}
            for k in signers]
    return {"payload": b64u_encode(raw), "signatures": sigs}


def payload_of(doc, expected_type):
    """The payload of `doc` WITHOUT checking signatures (to read which keys it claims), after
    checking its shape and type. Use verify() before acting on anything in it."""
    raw, _sigs = _parts(doc)
    return _decode(raw, expected_type)


def verify(doc, expected_type, trusted, need=1, required_kids=()):
    """The payload of `doc` once it is shown to be signed.

    trusted: {key_id: capwarden.credentials.keys.PublicKey}; a signature by a key not in it
    counts for nothing. need: how many distinct trusted keys must have signed. required_kids:
    key ids that must each be among the valid signers (a rotation names the old and the new).
    Raises SignedDocError saying what is missing.
    """
    raw, sigs = _parts(doc)
    payload = _decode(raw, expected_type)
    message = DOMAIN + raw
    good = set()
    for s in sigs:
        kid = s["kid"]
        key = trusted.get(kid)
        if key is None or key.algorithm != s["alg"] or kid in good:
            continue
        try:
            sig = b64u_decode(s["sig"])
        except ValueError:
            continue
        if key.verify(message, sig):
            good.add(kid)
    missing = [k for k in required_kids if k not in good]
    if missing:
        raise SignedDocError("%s not signed by %s" % (expected_type, ", ".join(sorted(missing))))
    if len(good) < need:
        raise SignedDocError("%s signed by %d trusted key(s), %d needed" % (expected_type, len(good), need))
    return payload


def _parts(doc):
    if not isinstance(doc, dict) or set(doc) != {"payload", "signatures"}:
        raise SignedDocError("a signed document is {\"payload\", \"signatures\"} and nothing else")
    sigs = doc["signatures"]
    if type(sigs) is not list or not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise SignedDocError("1 to %d signatures expected" % MAX_SIGNATURES)
    for s in sigs:
        if (not isinstance(s, dict) or set(s) != {"kid", "alg", "sig"}
                or not all(type(s[k]) is str for k in s) or s["alg"] not in keys.ALGORITHMS):
            raise SignedDocError("a signature is {\"kid\", \"alg\", \"sig\"} of text, alg one of %s"
                                 % ", ".join(keys.ALGORITHMS))
    if type(doc["payload"]) is not str or len(doc["payload"]) > MAX_DOC_BYTES * 4 // 3 + 4:
        raise SignedDocError("payload is not base64url text of at most %d bytes" % MAX_DOC_BYTES)
    try:
        raw = b64u_decode(doc["payload"])
    except ValueError:
        raise SignedDocError("payload is not base64url without padding") from None
    return raw, sigs


def _decode(raw, expected_type):
    try:
        payload = cbor.decode(raw, MAX_DOC_BYTES)
    except cbor.CborError as exc:
        raise SignedDocError("payload is not deterministic CBOR: %s" % exc) from None
    if not isinstance(payload, dict) or payload.get("type") != expected_type:
        got = payload.get("type") if isinstance(payload, dict) else type(payload).__name__
        raise SignedDocError("expected a %s document, got %r" % (expected_type, got))
    return payload
