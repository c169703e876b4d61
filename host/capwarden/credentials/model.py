"""The structures of chapter 2, parsed strictly (step 1 of supplement S2).

Every parse function raises CapError with the S2 code for its credential type
(E_DESCRIPTOR_MALFORMED or E_TICKET_MALFORMED) and the dotted name of the offending field.
Unknown fields are rejected (fail closed; docs/DECISIONS.md "Unknown fields"). Sizes are
checked before anything is decoded.
"""

import re

from capwarden.credentials import patterns
from capwarden.credentials.ids import FAY_RE, TERMINAL_RE, UUID_RE, uuid7_bytes_ok, uuid_text
from capwarden.credentials.keys import ALGORITHMS
from capwarden.errors import CapError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
from capshared.names import MODE_NAMES  # noqa: E402  (the one table of access modes, the board's too)
MODES = tuple(name for name, _bit in MODE_NAMES)
# Modes as bits (capshared.limits.MODE_*), so that a check ORs the grants that cover a resource
# and tests one bit; no mode implies another (S2). MASK_MODES gives the modes of a mask in MODES order.
MODE_BIT = dict(MODE_NAMES)
MASK_MODES = tuple(tuple(m for m in MODES if mask & MODE_BIT[m]) for mask in range(1 << len(MODES)))
REASONS = ("unspecified", "compromised", "superseded", "no_longer_needed")
MAX_TS = (1 << 53) - 1     # integers beyond 2**53 are refused (attacks.md A12)
MAX_GRANTS = 256
MAX_STR = 256
MAX_KEY_ID = 128
MAX_MAP = 64
MAX_MAP_KEY = 64
MAX_MAP_VALUE = 1024
DAY = 86400
MAX_DESCRIPTOR = 128 * 1024   # a descriptor file's size limit, checked before decoding (attacks.md J74)
MAX_KEY_FILE = 16 * 1024      # a Verification_Key in JSON (about 300 bytes)


class Grant:
    __slots__ = ("resource_pattern", "modes", "constraints", "parsed", "mask")

    def __init__(self, resource_pattern, modes, constraints):
        self.resource_pattern = resource_pattern
        self.modes = modes
        self.constraints = constraints
        self.parsed = patterns.parse(resource_pattern)
        self.mask = 0
        for m in modes:
            self.mask |= MODE_BIT[m]

    def to_obj(self):
        out = {"resource_pattern": self.resource_pattern, "modes": list(self.modes)}
        if self.constraints is not None:
            out["constraints"] = dict(self.constraints)
        return out


class Credential:
    """What validation needs of either credential type, whatever its encoding."""

    kind = ""
    __slots__ = ("credential_id", "issuer_id", "subject", "terminal_id", "grants", "issued_at",
                 "not_before", "not_after", "key_id", "algorithm", "signature", "signed_bytes",
                 "grantor_id", "metadata", "convertible", "raw")


class Descriptor(Credential):
    kind = "descriptor"


class Ticket(Credential):
    kind = "ticket"


class Fields:
    """Reads one map, naming fields in errors and refusing unknown ones."""

    def __init__(self, obj, code, path):
        if type(obj) is not dict:
            raise CapError(code, "%s must be a map" % (path or "the credential"), path or None)
        self.obj = obj
        self.code = code
        self.path = path
        self.seen = set()

    def name(self, key):
        return (self.path + "." + key) if self.path else key

    def fail(self, key, why):
        raise CapError(self.code, "%s %s" % (self.name(key), why), self.name(key))

    def get(self, key, required=True):
        self.seen.add(key)
        if key not in self.obj:
            if required:
                self.fail(key, "is required")
            return None
        return self.obj[key]

    def text(self, key, required=True, max_len=MAX_STR, regex=None):
        v = self.get(key, required)
        if not required and key not in self.obj:
            return None     # absent; a present null is a wrong type like any other
        if type(v) is not str:
            self.fail(key, "must be a string")
        if not v or len(v) > max_len:
            self.fail(key, "must be 1..%d characters" % max_len)
        if _CONTROL.search(v):
            self.fail(key, "has control characters")
        if regex is not None and not regex.match(v):
            self.fail(key, "has the wrong format")
        return v

    def timestamp(self, key):
        v = self.get(key)
        if type(v) is not int or v < 0 or v > MAX_TS:
            self.fail(key, "must be an integer timestamp 0..2**53-1")
        return v

    def uint(self, key, value):
        v = self.get(key)
        if type(v) is not int or v != value:
            self.fail(key, "must be %d" % value)
        return v

    def string_map(self, key):
        v = self.get(key, required=False)
        if v is None and key not in self.obj:
            return None
        if type(v) is not dict or len(v) > MAX_MAP:
            self.fail(key, "must be a map of at most %d strings" % MAX_MAP)
        for k, x in v.items():
            if type(k) is not str or type(x) is not str or not k or len(k) > MAX_MAP_KEY or len(x) > MAX_MAP_VALUE:
                self.fail(key, "must map short strings to strings")
        return dict(v)

    def done(self):
        extra = set(self.obj) - self.seen
        if not extra:
            return
        # A map decoded from CBOR may have keys of any type (integers, byte strings, arrays):
        # name one without comparing keys of different types, which Python cannot sort.
        odd = [k for k in extra if type(k) is not str]
        if odd:
            where = self.path or "the credential"
            raise CapError(self.code, "%s has a map key that is not text (%s)" % (where, type(odd[0]).__name__),
                           self.path or None)
        name = min(extra)
        self.fail(name if len(name) <= 40 else name[:40] + "...", "is not a known field")   # attacks.md J75


def parse_grants(value, code, path):
    if type(value) is not list:
        raise CapError(code, "%s must be an array" % path, path)
    if not 1 <= len(value) <= MAX_GRANTS:
        # An empty grant list grants nothing and is refused outright (attacks.md E43).
        raise CapError(code, "%s must have 1..%d grants" % (path, MAX_GRANTS), path)
    out = []
    for i, g in enumerate(value):
        f = Fields(g, code, "%s[%d]" % (path, i))
        pattern = f.text("resource_pattern")
        modes = f.get("modes")
        if type(modes) is not list or not 1 <= len(modes) <= 4:
            f.fail("modes", "must be an array of 1..4 access modes")
        for m in modes:
            if m not in MODES or type(m) is not str:
                f.fail("modes", "has %r, not one of %s" % (m, ", ".join(MODES)))
        if len(set(modes)) != len(modes):
            f.fail("modes", "lists a mode twice")
        constraints = f.string_map("constraints")
        f.done()
        try:
            out.append(Grant(pattern, tuple(modes), constraints))
        except patterns.PatternError as exc:
            f.fail("resource_pattern", "is malformed: %s" % exc)
    return tuple(out)


def parse_signature(value, code):
    f = Fields(value, code, "signature")
    alg = f.get("algorithm")
    if alg not in ALGORITHMS:
        f.fail("algorithm", "must be one of %s" % ", ".join(ALGORITHMS))
    key_id = f.text("key_id", max_len=MAX_KEY_ID)
    sig = f.get("signature_value")
    if type(sig) is not bytes or len(sig) != 64:
        f.fail("signature_value", "must be 64 bytes")
    f.done()
    return alg, key_id, sig


def parse_descriptor_obj(obj, raw, signed_bytes):
    """A Descriptor from the decoded top-level map. Raises CapError(E_DESCRIPTOR_MALFORMED)."""
    code = "E_DESCRIPTOR_MALFORMED"
    top = Fields(obj, code, "")
    top.uint("version", 1)
    payload = top.get("payload")
    sig = top.get("signature")
    top.done()
    d = Descriptor()
    d.algorithm, d.key_id, d.signature = parse_signature(sig, code)
    p = Fields(payload, code, "payload")
    did = p.get("descriptor_id")
    if not uuid7_bytes_ok(did):
        p.fail("descriptor_id", "must be a 16-byte UUIDv7")
    d.credential_id = uuid_text(did)
    d.issuer_id = p.text("issuer_id")
    d.subject = p.text("subject_fay_id", regex=FAY_RE)
    d.terminal_id = p.text("terminal_id", regex=TERMINAL_RE)
    d.grants = parse_grants(p.get("grants"), code, "payload.grants")
    d.issued_at = p.timestamp("issued_at")
    d.not_before = p.timestamp("not_before")
    d.not_after = p.timestamp("not_after")
    d.grantor_id = p.text("grantor_id", required=False)
    d.metadata = p.string_map("metadata")
    p.done()
    if d.not_before < d.issued_at:
        p.fail("not_before", "must not be before issued_at")
    if d.not_after <= d.not_before:
        p.fail("not_after", "must be after not_before")
    d.convertible = False
    d.signed_bytes = signed_bytes
    d.raw = raw
    return d


def parse_ticket_claims(claims, header, raw, signed_bytes, signature):
    """A Ticket from the JWS header and payload (dicts). Raises CapError(E_TICKET_MALFORMED)."""
    code = "E_TICKET_MALFORMED"
    t = Ticket()
    t.algorithm, t.key_id = header
    t.signature = signature
    c = Fields(claims, code, "")
    jti = c.text("jti", regex=UUID_RE)
    t.credential_id = jti
    t.issuer_id = c.text("iss")
    t.subject = c.text("sub", regex=FAY_RE)
    t.terminal_id = c.text("aud", regex=TERMINAL_RE)
    t.issued_at = c.timestamp("iat")
    t.not_before = c.timestamp("nbf")
    t.not_after = c.timestamp("exp")
    t.grants = parse_grants(c.get("grants"), code, "grants")
    conv = c.get("convertible", required=False)
    if "convertible" in claims and type(conv) is not bool:
        c.fail("convertible", "must be a boolean")
    t.convertible = True if conv is None else conv
    c.done()
    if t.not_after <= t.not_before:
        c.fail("exp", "must be after nbf")
    t.grantor_id = None
    t.metadata = None
    t.signed_bytes = signed_bytes
    t.raw = raw
    return t


def decode_key_file(data):
    """The JSON value of a Verification_Key file's bytes (strictjson: no duplicate members, no
    floats, any nesting refused without a crash). Raises CapError(E_MALFORMED_REQUEST)."""
    from capwarden.credentials import strictjson

    if len(data) > MAX_KEY_FILE:
        raise CapError("E_MALFORMED_REQUEST", "a key file is at most %d bytes" % MAX_KEY_FILE)
    try:
        return strictjson.loads(data)
    except strictjson.JsonError as exc:
        raise CapError("E_MALFORMED_REQUEST", "the key file %s" % exc) from None


def parse_key_json(obj):
    """A Verification_Key record from its JSON form (S1). Raises CapError(E_MALFORMED_REQUEST)."""
    from capwarden.credentials.b64 import b64u_decode

    code = "E_MALFORMED_REQUEST"
    f = Fields(obj, code, "")
    rec = {
        "key_id": f.text("key_id", max_len=MAX_KEY_ID),
        "algorithm": f.get("algorithm"),
        "issuer_id": f.text("issuer_id"),
        "valid_from": f.timestamp("valid_from"),
        "source": f.get("source"),
    }
    if rec["algorithm"] not in ALGORITHMS:
        f.fail("algorithm", "must be one of %s" % ", ".join(ALGORITHMS))
    if rec["source"] not in ("pre-installed", "ra-distributed"):
        f.fail("source", "must be pre-installed or ra-distributed")
    material = f.get("key_material")
    try:
        rec["key_material"] = b64u_decode(material)
    except ValueError:
        f.fail("key_material", "must be base64url without padding")
    rec["valid_until"] = f.timestamp("valid_until") if "valid_until" in obj and obj["valid_until"] is not None else None
    if "valid_until" in obj and obj["valid_until"] is None:
        f.seen.add("valid_until")
    revoked = f.get("revoked", required=False)
    if revoked is not None and type(revoked) is not bool:
        # Not bool(): a revoked flag of 0, "" or [] read as "not revoked" would fail open.
        f.fail("revoked", "must be true or false")
    rec["revoked"] = revoked is True
    f.done()
    if rec["valid_until"] is not None and rec["valid_until"] <= rec["valid_from"]:
        f.fail("valid_until", "must be after valid_from")
    return rec


def parse_revocation_obj(obj):
    """(statement fields, signed bytes-to-be) of a RevocationStatement map (section 2.8)."""
    code = "E_MALFORMED_REQUEST"
    f = Fields(obj, code, "")
    f.uint("version", 1)
    rid = f.get("revocation_id")
    target = f.get("target_descriptor_id")
    for key, v in (("revocation_id", rid), ("target_descriptor_id", target)):
        if not uuid7_bytes_ok(v):
            f.fail(key, "must be a 16-byte UUIDv7")
    rec = {
        "revocation_id": uuid_text(rid),
        "target": uuid_text(target),
        "issuer_id": f.text("issuer_id"),
        "revoked_at": f.timestamp("revoked_at"),
    }
    reason = f.get("reason", required=False)
    if "reason" in obj and reason not in REASONS:
        f.fail("reason", "must be one of %s" % ", ".join(REASONS))
    rec["reason"] = reason or "unspecified"
    rec["algorithm"], rec["key_id"], rec["signature"] = parse_signature(f.get("signature"), code)
    f.done()
    return rec
