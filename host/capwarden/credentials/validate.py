"""Validation of Authorization_Descriptors and Trusted_Tickets: supplement S2, in its order.

    1 parse and structure     E_DESCRIPTOR_MALFORMED / E_TICKET_MALFORMED
    2 key, then signature     E_VERIFICATION_KEY_INVALID, E_INVALID_SIGNATURE
    3 validity period         *_NOT_YET_VALID, *_EXPIRED, *_VALIDITY_TOO_LONG (leeway applies)
    4 subject, terminal,      *_SUBJECT_MISMATCH, *_TERMINAL_MISMATCH,
      resource, mode          *_RESOURCE_NOT_GRANTED, *_MODE_NOT_GRANTED (no implication)
    5 revocation              E_DESCRIPTOR_REVOKED / E_TICKET_REVOKED (+ degraded mode)

The first failing step answers. Nothing here raises for bad input: every outcome is a Decision.
"""

import cbor2

from capwarden.credentials import cbor, fastparse, jws, patterns
from capwarden.credentials.memo import remember
from capwarden.credentials.model import DAY, MASK_MODES, MAX_DESCRIPTOR, MODE_BIT, parse_descriptor_obj
from capwarden.errors import CapError

MAX_LEEWAY = 300
DESCRIPTOR_MAX_DAYS = 90
TICKET_MAX_DAYS = 7
PREDATE_LIMIT = DAY


def _credential_field(name):
    """A Decision property: the field of the credential it decided on, or None without one."""
    return property(lambda self: getattr(self.credential, name) if self.credential is not None else None)


class Decision:
    """The outcome of one check. The credential's fields are read from it on demand: a decision
    is built on every request, and most callers look at `granted` and little else."""

    __slots__ = ("granted", "error_code", "message", "field", "credential", "granted_modes", "_kind")

    def __init__(self, granted, error_code=None, message="", field=None, credential=None, kind=""):
        self.granted = granted
        self.error_code = error_code
        self.message = message
        self.field = field
        self.credential = credential
        self._kind = kind
        self.granted_modes = ()

    @property
    def kind(self):
        return self.credential.kind if self.credential is not None else self._kind

    credential_id = _credential_field("credential_id")
    issuer_id = _credential_field("issuer_id")
    not_after = _credential_field("not_after")
    key_id = _credential_field("key_id")

    def to_json(self):
        return {"granted": self.granted, "error_code": self.error_code, "message": self.message,
                "field": self.field, "credential_type": self.kind or None, "credential_id": self.credential_id,
                "issuer_id": self.issuer_id, "not_after": self.not_after, "key_id": self.key_id,
                "granted_modes": list(self.granted_modes)}


_RESOURCES = {}   # Resource_ID -> (terminal, segments), or None when it is not one: a pure function


def _resource(resource_id):
    try:
        return _RESOURCES[resource_id]
    except (KeyError, TypeError):   # TypeError: an unhashable "resource id" from a caller
        pass
    where = patterns.split_resource(resource_id) if patterns.valid_resource_id(resource_id) else None
    # Kept only for strings no longer than a Resource_ID may be, so that a runtime sending huge
    # ids cannot make the table large.
    if type(resource_id) is str and len(resource_id) <= patterns.MAX_LEN:
        remember(_RESOURCES, resource_id, where)
    return where


def _codes(kind):
    p = "E_DESCRIPTOR_" if kind == "descriptor" else "E_TICKET_"
    return p


# A valid descriptor file is the canonical map {"payload": P, "version": 1, "signature": S}:
# a3, "payload", P, "version", 01, "signature", S. So once the whole file has been checked to be
# deterministic CBOR, the signed payload bytes are a slice of it, not a second encoding.
_HEAD = b"\xa3" + cbor.encode("payload")
_VERSION = cbor.encode("version") + b"\x01" + cbor.encode("signature")


def parse_descriptor(data):
    """Step 1 for descriptor bytes: a model.Descriptor. Raises CapError(E_DESCRIPTOR_MALFORMED)."""
    d = fastparse.descriptor(data)
    return d if d is not None else parse_descriptor_reference(data)


def parse_descriptor_reference(data):
    """Step 1 by the reference parser: refuses with the precise field, and accepts the valid
    shapes the fast path leaves to it. What the fast path accepts, this accepts identically."""
    try:
        # The model checks the type of every value it accepts and refuses unknown keys in
        # every map, so the generic type walk would only repeat it (it costs a third of a parse).
        obj = cbor.decode(data, MAX_DESCRIPTOR, typed=False)
    except cbor.CborError as exc:
        raise CapError("E_DESCRIPTOR_MALFORMED", "descriptor: %s" % exc, exc.path or None)
    d = parse_descriptor_obj(obj, bytes(data), b"")
    data = d.raw
    tail = _VERSION + cbor2.dumps(obj["signature"], canonical=True)   # already type-checked
    if data.startswith(_HEAD) and data.endswith(tail):
        d.signed_bytes = data[len(_HEAD):len(data) - len(tail)]
    else:  # cannot happen for a file that parsed; kept as the obvious definition
        d.signed_bytes = cbor.encode(obj["payload"])
    return d


def _pre_issued(cred):
    return Decision(False, "E_DESCRIPTOR_NOT_YET_VALID",
                    "pre-issued: valid from %d, more than 24 h after it was issued (%d)" % (cred.not_before, cred.issued_at),
                    "not_before", cred)


class Validator:
    """Checks credentials for one terminal. `keystore`, `revocations` from the store."""

    def __init__(self, terminal_id, keystore, revocations, leeway=60, degraded=False):
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError("leeway must be 0..%d seconds" % MAX_LEEWAY)
        self.terminal_id = terminal_id
        self.keystore = keystore
        self.revocations = revocations
        self.leeway = leeway
        self.degraded = degraded

    # ---- entry points ------------------------------------------------------------------
    def check_descriptor(self, data, fay_id, resource_id, mode, now):
        try:
            d = data if hasattr(data, "kind") else parse_descriptor(data)
        except CapError as exc:
            return Decision(False, exc.code, exc.message, exc.field, kind="descriptor")
        return self.check(d, fay_id, resource_id, mode, now, verified=False)

    def check_ticket(self, token, fay_id, resource_id, mode, now):
        try:
            t = jws.parse(token)
        except CapError as exc:
            return Decision(False, exc.code, exc.message, exc.field, kind="ticket")
        return self.check(t, fay_id, resource_id, mode, now, verified=False)

    def admissible(self, cred, now):
        """What import adds to step 2 (chapter 2 section 2.3.2 condition 2): None, or the refusal
        of a descriptor that is pre-issued, by its own dates or by this terminal's clock. A
        descriptor valid within 24 h may be stored before it becomes valid; one that is not,
        may not, so that it cannot wait in the store for its day."""
        if cred.not_before - cred.issued_at > PREDATE_LIMIT:
            return _pre_issued(cred)
        if cred.not_before > now + PREDATE_LIMIT + self.leeway:
            return Decision(False, "E_DESCRIPTOR_NOT_YET_VALID",
                            "valid from %d, more than 24 h after now (%d): pre-issued descriptors are refused"
                            % (cred.not_before, now), "not_before", cred)
        return None

    def verify_signature(self, cred, now):
        """Step 2 alone: None when the key may sign it and the signature holds, else a Decision."""
        pub, why = self.keystore.usable(cred.key_id, cred.algorithm, cred.issuer_id, now)
        if pub is None:
            return Decision(False, "E_VERIFICATION_KEY_INVALID", why, "key_id", cred)
        if not pub.verify(cred.signed_bytes, cred.signature):
            return Decision(False, "E_INVALID_SIGNATURE", "the signature does not verify", "signature", cred)
        return None

    def check(self, cred, fay_id, resource_id, mode, now, verified=False):
        """Steps 2-5 for a parsed credential. `verified`: step 2 was done for this key set."""
        if not verified:
            bad = self.verify_signature(cred, now)
            if bad is not None:
                return bad
        else:
            pub, why = self.keystore.usable(cred.key_id, cred.algorithm, cred.issuer_id, now)
            if pub is None:  # the key was revoked or expired since the signature was checked
                return Decision(False, "E_VERIFICATION_KEY_INVALID", why, "key_id", cred)
        p = _codes(cred.kind)
        lw = self.leeway
        # Step 3. A pre-issued descriptor never becomes valid (chapter 2 section 2.3.2 condition 2).
        if cred.kind == "descriptor" and cred.not_before - cred.issued_at > PREDATE_LIMIT:
            return _pre_issued(cred)
        # not_before more than 24 h ahead is "not yet valid" whatever the leeway.
        if cred.not_before > now + lw or cred.not_before > now + PREDATE_LIMIT:
            return Decision(False, p + "NOT_YET_VALID", "valid from %d, now %d" % (cred.not_before, now), "not_before", cred)
        if cred.kind == "ticket" and cred.issued_at > now + lw:
            return Decision(False, p + "NOT_YET_VALID", "issued in the future (%d)" % cred.issued_at, "iat", cred)
        if now >= cred.not_after + lw:
            return Decision(False, p + "EXPIRED", "expired at %d, now %d" % (cred.not_after, now), "not_after", cred)
        limit = (DESCRIPTOR_MAX_DAYS if cred.kind == "descriptor" else TICKET_MAX_DAYS) * DAY
        if cred.not_after - cred.not_before > limit or \
                (cred.kind == "ticket" and cred.not_after - cred.issued_at > limit):
            return Decision(False, p + "VALIDITY_TOO_LONG", "valid for more than %d days" % (limit // DAY), "not_after", cred)
        # Step 4.
        if fay_id != cred.subject:
            return Decision(False, p + "SUBJECT_MISMATCH", "issued to another Fay", "subject", cred)
        if cred.terminal_id != self.terminal_id:
            return Decision(False, p + "TERMINAL_MISMATCH", "issued for another terminal", "terminal_id", cred)
        where = _resource(resource_id)
        if where is None:
            return Decision(False, p + "RESOURCE_NOT_GRANTED", "%.80r is not a Resource_ID" % (resource_id,), "resource_id", cred)
        terminal, segments = where
        mask = 0
        matched = False
        for g in cred.grants:
            # A grant with constraints (chapter 7, not available) is not honoured: fail closed.
            if g.constraints is None and patterns.matches(g.parsed, terminal, segments):
                matched = True
                mask |= g.mask
        if not matched:
            return Decision(False, p + "RESOURCE_NOT_GRANTED", "no grant covers %s" % resource_id, "grants", cred)
        if type(mode) is not str or not mask & MODE_BIT.get(mode, 0):
            return Decision(False, p + "MODE_NOT_GRANTED", "%.20s is not granted on %s" % (mode, resource_id), "grants", cred)
        # Step 5.
        if self._revoked(cred):
            return Decision(False, p + "REVOKED", "the credential has been revoked", "credential_id", cred)
        if cred.kind == "ticket" and self.degraded:
            return Decision(False, "E_TICKET_OFFLINE_REJECTED", "the terminal is offline: new tickets are refused",
                            None, cred)
        d = Decision(True, None, "granted", None, cred)
        d.granted_modes = MASK_MODES[mask]
        return d

    def _revoked(self, cred):
        r = self.revocations
        if r.revoked(cred.issuer_id, cred.credential_id):
            return True
        md = cred.metadata
        if md and md.get("origin") == "converted_from_ticket":
            # A descriptor converted from a ticket dies with the ticket (attacks.md F59).
            return r.revoked(md.get("origin_iss", ""), md.get("origin_jti", ""))
        return False
