"""Trusted_Ticket: JWS compact serialization (RFC 7515), strictly (attacks.md section C).

Refused before any decoding: more or fewer than three segments, characters outside base64url,
padding, whitespace, and segments over their size limits. The protected header must be exactly
{alg, typ, kid} (no crit, jwk, jku, x5u, x5c, b64: any other member is refused), with alg
EdDSA or ES256, typ exactly "cap-ticket+jws", and kid a string. JSON with duplicate members is
refused, in the header and in the claims.
"""

import re

from capwarden.credentials import strictjson
from capwarden.credentials.b64 import b64u_decode
from capwarden.credentials.memo import remember
from capwarden.credentials.model import MAX_KEY_ID, parse_ticket_claims
from capwarden.errors import CapError

CODE = "E_TICKET_MALFORMED"
MAX_TICKET = 64 * 1024
MAX_HEADER = 1024
TYP = "cap-ticket+jws"
ALGS = {"EdDSA": "ed25519", "ES256": "ecdsa-p256-sha256"}
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\Z")


def _strict_json(raw, what):
    try:
        return strictjson.loads(raw)
    except strictjson.JsonError as exc:
        raise CapError(CODE, "%s %s" % (what, exc), what) from None


def _header(h64):
    """(algorithm, kid) of a protected header segment. Raises CapError."""
    try:
        header_bytes = b64u_decode(h64)
    except ValueError:
        raise CapError(CODE, "a segment is not canonical base64url", "header") from None
    header = _strict_json(header_bytes, "header")
    if type(header) is not dict:
        raise CapError(CODE, "header must be a JSON object", "header")
    extra = sorted(set(header) - {"alg", "typ", "kid"})
    if extra:
        raise CapError(CODE, "header member %.40r is not allowed" % extra[0], "header." + extra[0][:40])
    # Types first: a member may be any JSON value (an array or object is unhashable, and must be
    # refused like any other wrong value, not reach a dict lookup).
    alg = header.get("alg")
    if type(alg) is not str or alg not in ALGS:
        raise CapError(CODE, "header alg must be EdDSA or ES256", "header.alg")
    if type(header.get("typ")) is not str or header["typ"] != TYP:
        raise CapError(CODE, "header typ must be exactly %r" % TYP, "header.typ")
    kid = header.get("kid")
    if type(kid) is not str or not kid or len(kid) > MAX_KEY_ID:
        raise CapError(CODE, "header kid must be a non-empty string", "header.kid")
    return ALGS[alg], kid


# Valid header segments seen before -> (algorithm, kid). An issuer's tickets share one header,
# and _header is a pure function of the segment; only valid ones are kept.
_HEADERS = {}


def parse(token):
    """A model.Ticket from a compact JWS string (or bytes). Raises CapError(E_TICKET_MALFORMED)."""
    if isinstance(token, (bytes, bytearray)):
        if len(token) > MAX_TICKET:
            raise CapError(CODE, "ticket is %d bytes, more than %d" % (len(token), MAX_TICKET))
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise CapError(CODE, "ticket is not ASCII") from None
    if type(token) is not str:
        raise CapError(CODE, "ticket must be a string")
    if len(token) > MAX_TICKET:
        raise CapError(CODE, "ticket is %d characters, more than %d" % (len(token), MAX_TICKET))
    m = _COMPACT.match(token)
    if not m:
        raise CapError(CODE, "not a JWS compact serialization (three base64url segments, no padding)")
    h64, p64, s64 = m.groups()
    if len(h64) > MAX_HEADER:
        raise CapError(CODE, "header segment is too long", "header")
    header = _HEADERS.get(h64)
    if header is None:
        header = remember(_HEADERS, h64, _header(h64))
    try:
        claims_bytes = b64u_decode(p64)
        signature = b64u_decode(s64)
    except ValueError:
        raise CapError(CODE, "a segment is not canonical base64url") from None
    claims = _strict_json(claims_bytes, "payload")
    if len(signature) != 64:
        raise CapError(CODE, "signature must be 64 bytes (raw, not DER)", "signature")
    signed = (h64 + "." + p64).encode("ascii")
    return parse_ticket_claims(claims, header, token, signed, signature)
