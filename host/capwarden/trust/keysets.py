"""Key sets of the Registration_Authority, the terminal's side: verify, acknowledge, prove.

Pure functions over the documents of docs/trust-api.md, shared by the terminal client
(capwarden.trust.client) and the RA (capwarden.trust.registry), so both read one format:

    payload = verify_next(current, doc)     # current: the last key-set payload this terminal
                                            # verified, or the RA keys it was given at
                                            # enrollment (a list of public key JSON)
    ack = build_ack(device_key, terminal_id, doc)   # POST /v1/keysets/{N}/ack

A key-set payload is {"type": "key-set", "version": N, "effective_at": T, "ra_keys": [{"key_id",
"algorithm", "key_material"}], "keys": [Verification_Key JSON, source "ra-distributed", no
"valid_until" when it has none (deterministic CBOR has no null)]}.

The rules (TUF's root rotation): version N+1 is accepted from version N only, never a skip or a
step back; it must be signed by at least one RA key of N (the trust the terminal holds) AND by
every RA key it lists itself (the new trust vouches for itself too, so an old key alone cannot
install keys nobody holds, and a new key alone is worth nothing). From the enrollment anchor any
version is accepted that at least one anchor key signed, and again every key it lists.
`effective_at` is the time from which the issuer signs with the set's newest issuer key (that
key's `valid_from`); it never goes back from one version to the next.

The device key signs two things, with key id = the terminal id: the key-set-ack (a payload
naming the terminal, the version and the SHA-256 of the key-set payload bytes, so an ack cannot
be replayed for another terminal or version), and the registration proof (proof_message).
Everything raises signed.SignedDocError when a document must not be acted on.
"""

import hashlib

from capwarden.credentials import keys
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.issue import SigningKey
from capwarden.credentials.model import parse_key_json
from capwarden.errors import CapError
from capwarden.trust import signed
from capwarden.trust.signed import SignedDocError

MAX_KEYS = 64       # Verification_Keys in one set: an issuer rotating daily keeps far fewer
MAX_RA_KEYS = 3     # with the previous set's signer this stays within signed.MAX_SIGNATURES
SOURCE = "ra-distributed"
RA_KEY_FIELDS = ("algorithm", "key_id", "key_material")


def payload_bytes(doc):
    """The payload bytes of a signed document exactly as sent (what its digest covers)."""
    if not isinstance(doc, dict) or type(doc.get("payload")) is not str:
        raise SignedDocError("a signed document is {\"payload\", \"signatures\"}")
    try:
        return b64u_decode(doc["payload"])
    except ValueError:
        raise SignedDocError("payload is not base64url without padding") from None


def digest(doc):
    """b64u(SHA-256 of the payload bytes of `doc`): what an acknowledgement names."""
    return b64u_encode(hashlib.sha256(payload_bytes(doc)).digest())


def ra_trust(ra_keys):
    """{key_id: PublicKey} of a list of RA public key JSON. Raises SignedDocError when a key is
    malformed, unusable or listed twice."""
    if type(ra_keys) is not list or not 1 <= len(ra_keys) <= MAX_RA_KEYS:
        raise SignedDocError("a key set lists 1 to %d RA keys" % MAX_RA_KEYS)
    out = {}
    for k in ra_keys:
        if not isinstance(k, dict) or tuple(sorted(k)) != RA_KEY_FIELDS or not all(type(v) is str for v in k.values()):
            raise SignedDocError("an RA key is {\"key_id\", \"algorithm\", \"key_material\"} of text")
        if k["key_id"] in out:
            raise SignedDocError("RA key %s listed twice" % k["key_id"])
        try:
            out[k["key_id"]] = keys.load(k["algorithm"], b64u_decode(k["key_material"]))
        except (ValueError, keys.KeyError_) as exc:
            raise SignedDocError("RA key %s is unusable: %s" % (k["key_id"], exc)) from None
    return out


def check_payload(p):
    """`p` (a decoded key-set payload) has the shape of docs/trust-api.md. Returns p."""
    if set(p) != {"type", "version", "effective_at", "ra_keys", "keys"}:
        raise SignedDocError("a key set has type, version, effective_at, ra_keys and keys, nothing else")
    for f in ("version", "effective_at"):
        if type(p[f]) is not int or p[f] < (1 if f == "version" else 0):
            raise SignedDocError("key set %s must be a positive integer" % f)
    ra_trust(p["ra_keys"])
    ks = p["keys"]
    if type(ks) is not list or len(ks) > MAX_KEYS:
        raise SignedDocError("a key set holds at most %d keys" % MAX_KEYS)
    seen = set()
    for k in ks:
        try:
            rec = parse_key_json(k)
        except CapError as exc:
            raise SignedDocError("a key in the set is malformed: %s" % exc.message) from None
        if rec["source"] != SOURCE or rec["key_id"] in seen:
            raise SignedDocError("key %s: source must be %s, each key once" % (rec["key_id"], SOURCE))
        seen.add(rec["key_id"])
    return p


def verify_next(current, doc):
    """The payload of key-set `doc` once it is shown to follow what the terminal trusts.

    current: the last key-set payload this terminal verified (a dict): `doc` must then be its
    version + 1, signed by at least one RA key of `current` and by every RA key `doc` lists, an
    RA key id never changing its material, effective_at not going back. Or a list of RA public
    key JSON (the anchor handed over at enrollment): `doc` may be any version, signed by at
    least one anchor key and by every RA key it lists.
    Raises SignedDocError saying what is wrong; nothing in `doc` may be used then.
    """
    claimed = check_payload(signed.payload_of(doc, signed.KEY_SET))
    if isinstance(current, dict):
        check_payload(current)
        if claimed["version"] != current["version"] + 1:
            raise SignedDocError("key set version %d does not follow version %d (one step at a time)"
                                 % (claimed["version"], current["version"]))
        if claimed["effective_at"] < current["effective_at"]:
            raise SignedDocError("key set %d takes effect before the set it follows" % claimed["version"])
        old = ra_trust(current["ra_keys"])
    elif type(current) is list:
        old = ra_trust(current)
    else:
        raise SignedDocError("verify_next needs the last verified key set or the enrollment RA keys")
    new = ra_trust(claimed["ra_keys"])
    for kid, key in new.items():
        if kid in old and (old[kid].algorithm, old[kid].raw) != (key.algorithm, key.raw):
            raise SignedDocError("RA key %s changes its material" % kid)
    signed.verify(doc, signed.KEY_SET, old, need=1)
    return signed.verify(doc, signed.KEY_SET, new, need=len(new), required_kids=tuple(new))


def _device_signer(device_key, terminal_id):
    private = getattr(device_key, "private", device_key)
    return SigningKey(terminal_id, terminal_id, private)


def ack_payload(terminal_id, version, key_set_digest):
    return {"type": signed.KEY_SET_ACK, "terminal_id": terminal_id, "version": version,
            "digest": key_set_digest}


def build_ack(device_key, terminal_id, doc):
    """The signed key-set-ack for key-set `doc` (as received), signed by the terminal's device
    key (a credentials.keys.PrivateKey or a SigningKey) under key id `terminal_id`."""
    version = signed.payload_of(doc, signed.KEY_SET)["version"]
    return signed.sign(ack_payload(terminal_id, version, digest(doc)), [_device_signer(device_key, terminal_id)])


def verify_ack(ack, device_public, terminal_id, version, key_set_digest):
    """The ack payload once shown to be signed by `device_public` (a PublicKey) and to name
    exactly `terminal_id`, `version` and `key_set_digest`. Raises SignedDocError."""
    p = signed.verify(ack, signed.KEY_SET_ACK, {terminal_id: device_public}, need=1)
    if p != ack_payload(terminal_id, version, key_set_digest):
        raise SignedDocError("the acknowledgement does not name terminal %s, key set %d and its digest"
                             % (terminal_id, version))
    return p


def proof_message(enrollment_secret, terminal_id=None):
    """What the registration proof signs: signed.DOMAIN + b"register\\x00" + secret + b"\\x00" +
    terminal id (empty when the RA assigns it)."""
    return signed.DOMAIN + b"register\x00" + enrollment_secret.encode() + b"\x00" + (terminal_id or "").encode()


def sign_proof(device_key, enrollment_secret, terminal_id=None):
    """The `proof` field of POST /v1/registrations: b64u of the device key's signature."""
    private = getattr(device_key, "private", device_key)
    return b64u_encode(private.sign(proof_message(enrollment_secret, terminal_id)))


def device_key_json(device_key):
    """The `device_key` field of POST /v1/registrations for a PrivateKey or SigningKey."""
    private = getattr(device_key, "private", device_key)
    return {"algorithm": private.algorithm, "key_material": b64u_encode(private.public)}


def verify_registration(anchor, doc):
    """The payload of the signed `registration` the RA answered with, once at least one key of
    `anchor` (the RA public key JSON handed over at enrollment) is shown to have signed it.
    Payload: {"type", "terminal_id", "device_key", "registered_at", "key_set_version"}."""
    return signed.verify(doc, signed.REGISTRATION, ra_trust(anchor), need=1)
