"""A terminal's credential state, kept in its store folder. The engine's entry point.

    t = Terminal.open(store)                 # or Terminal.init(store) once
    t.import_key(json_obj)                   # Verification_Keys
    did = t.import_descriptor(cbor_bytes)    # verified, then sealed in the store
    d = t.decide_descriptor(did, fay, resource_id, mode, now)   # cached verification
    d = t.validator.check_ticket(token, fay, resource_id, mode, now)
    t.import_revocation(cbor_bytes, now)     # listeners in t.revocations.listeners hear it
    t.convert_ticket(token, now)             # ticket -> local descriptor (section 4.4)
"""

import json
import os
import time

from capwarden.credentials import jws, strictjson
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.ids import TERMINAL_RE, UUID_RE, new_terminal_id, uuid_bytes
from capwarden.credentials.issue import SigningKey, descriptor_payload, sign_descriptor
from capwarden.credentials.keys import ED25519, KeyError_, PrivateKey
from capwarden.credentials.keystore import KeyStore
from capwarden.credentials.model import DAY, MAX_DESCRIPTOR
from capwarden.credentials.revocation import RevocationList
from capwarden.credentials.store import (CONVERSION_KEY, CONVERSIONS, DESCRIPTORS, STORAGE_KEY, TERMINAL, Sealer,
                                         corrupt, locked, read_json, read_secret, write_atomic, write_json)
from capwarden.credentials.validate import PREDATE_LIMIT, Decision, Validator, parse_descriptor
from capwarden.errors import CapError, StoreError, UsageError

CONVERSION_MAX = 7 * DAY
PURGE_AFTER = DAY          # converted descriptors are removed 24 h after they expire
MAX_SEALED = MAX_DESCRIPTOR + Sealer.OVERHEAD   # a stored descriptor file, sealed


class Terminal:
    def __init__(self, folder, leeway=60, degraded=False):
        self.folder = folder
        path = os.path.join(folder, TERMINAL)
        ident = read_json(path, kind=dict)
        self.terminal_id = ident.get("terminal_id")
        if type(self.terminal_id) is not str or not TERMINAL_RE.match(self.terminal_id):
            raise corrupt(path, "no valid terminal_id")
        self.sealer = Sealer(read_secret(os.path.join(folder, STORAGE_KEY)))
        path = os.path.join(folder, CONVERSION_KEY)
        try:
            conv = strictjson.loads(read_secret(path))
            self.conversion_key = SigningKey(conv["key_id"], conv["issuer_id"],
                                             PrivateKey(conv["algorithm"], b64u_decode(conv["secret"])))
        except (strictjson.JsonError, ValueError, KeyError, TypeError, KeyError_):
            raise corrupt(path, "not a conversion key") from None
        self.keys = KeyStore(folder)
        self.revocations = RevocationList(folder, self.keys)
        self.revocations.listeners.append(self._on_revocation)
        self.validator = Validator(self.terminal_id, self.keys, self.revocations, leeway=leeway, degraded=degraded)
        self._cache = {}   # descriptor id -> (parsed descriptor, key generation it was verified under)

    @classmethod
    def open(cls, folder, **kw):
        if not os.path.isfile(os.path.join(folder, TERMINAL)):
            raise StoreError("%s is not a capwarden store: run 'capwarden init --store %s'" % (folder, folder))
        return cls(folder, **kw)

    @classmethod
    def init(cls, folder, terminal_id=None, now=None):
        """Create the terminal identity, the storage key and the local conversion key."""
        now = int(time.time()) if now is None else now
        terminal_id = terminal_id or new_terminal_id()
        if not TERMINAL_RE.match(terminal_id):
            raise UsageError("--terminal-id must be 'terminal:' + a lowercase UUIDv7")
        if os.path.exists(os.path.join(folder, TERMINAL)):
            raise UsageError("%s already holds a terminal identity; refusing to overwrite it" % folder)
        os.makedirs(os.path.join(folder, DESCRIPTORS), exist_ok=True)
        os.chmod(folder, 0o700)
        write_atomic(os.path.join(folder, STORAGE_KEY), os.urandom(32), mode=0o600)
        issuer = "local-conversion:" + terminal_id
        key = SigningKey.generate(ED25519, "local:" + terminal_id[len("terminal:"):], issuer)
        write_atomic(os.path.join(folder, CONVERSION_KEY), (json.dumps({
            "key_id": key.key_id, "issuer_id": issuer, "algorithm": key.algorithm,
            "secret": b64u_encode(key.private.secret)}) + "\n").encode(), mode=0o600)
        write_json(os.path.join(folder, TERMINAL), {"terminal_id": terminal_id, "created_at": now})
        t = cls(folder)
        # The local key verifies this terminal's own conversions; no other terminal has it.
        t.keys.add(key.public_json(valid_from=0, source="pre-installed"))
        return t

    # ---- keys and revocations --------------------------------------------------------------
    def import_key(self, obj):
        return self.keys.add(obj)

    def import_revocation(self, data, now):
        return self.revocations.import_statement(data, now)

    def import_revocations(self, batch, now):
        """Many statements at once, the list written once (a sync after an offline period):
        every one that verifies is recorded, then CapError is raised for the first that did not
        (RevocationList.import_statements). Returns their records."""
        return self.revocations.import_statements(batch, now)

    def _on_revocation(self, entry):
        # A revoked ticket takes its converted descriptors with it (attacks.md F59).
        with locked(self.folder):
            conv = self.conversions()
            hit = conv.get(entry["target"])
            if hit and hit.get("iss") == entry["issuer_id"]:
                self._remove(hit["descriptor_id"])
                del conv[entry["target"]]
                write_json(os.path.join(self.folder, CONVERSIONS), conv)

    # ---- stored descriptors ----------------------------------------------------------------
    def _path(self, did):
        return os.path.join(self.folder, DESCRIPTORS, did + ".cap")

    def import_descriptor(self, data, now=None):
        """Check structure, key and signature, then store sealed. Returns the descriptor id.

        Validity, subject and resource are checked per request: a descriptor may be imported
        before it becomes valid, but not more than 24 h before (chapter 2 section 2.3.2
        condition 2; Validator.admissible). Raises CapError with the S2 code of the failing step.
        """
        now = int(time.time()) if now is None else now
        d = parse_descriptor(data)
        bad = self.validator.verify_signature(d, now) or self.validator.admissible(d, now)
        if bad is not None:
            raise CapError(bad.error_code, bad.message, bad.field)
        write_atomic(self._path(d.credential_id), self.sealer.seal(bytes(data), d.credential_id.encode()), 0o600)
        self._cache[d.credential_id] = (d, self.keys.generation)
        return d.credential_id

    def load_descriptor(self, did):
        """The stored descriptor `did`, parsed. Raises CapError: E_DESCRIPTOR_NOT_FOUND, or
        E_DESCRIPTOR_MALFORMED for a stored file that fails authentication or parsing."""
        if type(did) is not str or not UUID_RE.match(did):
            raise CapError("E_DESCRIPTOR_NOT_FOUND", "no stored descriptor %.60r" % (did,), "descriptor_ref")
        try:
            with open(self._path(did), "rb") as f:
                blob = f.read(MAX_SEALED + 1)
        except FileNotFoundError:
            raise CapError("E_DESCRIPTOR_NOT_FOUND", "no stored descriptor %s" % did, "descriptor_ref") from None
        if len(blob) > MAX_SEALED:
            raise CapError("E_DESCRIPTOR_MALFORMED", "stored descriptor %s is larger than any descriptor" % did,
                           "descriptor_ref")
        try:
            data = self.sealer.open(blob, did.encode())
        except StoreError as exc:   # tampered, truncated or moved: refused (and audited), not a crash
            raise CapError("E_DESCRIPTOR_MALFORMED", "stored descriptor %s: %s" % (did, exc),
                           "descriptor_ref") from None
        return parse_descriptor(data)

    def stored_ids(self):
        folder = os.path.join(self.folder, DESCRIPTORS)
        return sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".cap"))

    def decide_descriptor(self, did, fay_id, resource_id, mode, now):
        """Decision for a stored descriptor. Its signature is verified once per key set."""
        hit = self._cache.get(did) if type(did) is str else None
        if hit is None or hit[1] != self.keys.generation:
            try:
                d = self.load_descriptor(did)
            except CapError as exc:
                return Decision(False, exc.code, exc.message, exc.field, kind="descriptor")
            bad = self.validator.verify_signature(d, now)
            if bad is not None:
                return bad
            self._cache[did] = hit = (d, self.keys.generation)
        return self.validator.check(hit[0], fay_id, resource_id, mode, now, verified=True)

    def _remove(self, did):
        self._cache.pop(did, None)
        try:
            os.unlink(self._path(did))
        except FileNotFoundError:
            pass

    # ---- ticket conversion (section 4.4) -----------------------------------------------------
    def convert_ticket(self, token, now):
        """Validate a convertible ticket and store it as a locally signed descriptor (the
        command line's way; the engine converts tickets it granted with convert_verified).
        Returns the descriptor id. Raises CapError."""
        t = jws.parse(token)
        bad = self.validator.verify_signature(t, now)
        if bad is not None:
            raise CapError(bad.error_code, bad.message, bad.field)
        return self.convert_verified(t, now)

    def convert_verified(self, t, now):
        """Store ticket `t`, parsed and its signature verified (jws.parse, Validator), as a
        locally signed descriptor (section 4.4.2-4.4.4).

        not_after = min(exp, now + 7 days, iat + 7 days); grants copied exactly (never wider);
        metadata keeps the origin (jti, kid, issuer, signature for audit); the descriptor's id
        is the ticket's jti, its issuer "local-conversion:" + terminal id, its key the local
        conversion key. One descriptor per jti. Safe in a worker thread beside the event loop:
        the revocation check is made under the store's lock, which the revocation listener
        takes too, so a revocation is either seen here or removes what this stored.
        Returns the descriptor id. Raises CapError; StoreError for a store it cannot write.
        """
        if not t.convertible:
            raise CapError("E_PERMISSION_DENIED", "the ticket is not convertible", "convertible")
        if t.terminal_id != self.terminal_id:
            raise CapError("E_TICKET_TERMINAL_MISMATCH", "issued for another terminal", "aud")
        if now >= t.not_after + self.validator.leeway:
            raise CapError("E_TICKET_EXPIRED", "the ticket has expired", "exp")
        if t.not_before > now + PREDATE_LIMIT:
            # Its descriptor would be pre-issued (chapter 2 section 2.3.2 condition 2).
            raise CapError("E_TICKET_NOT_YET_VALID", "valid from %d, more than 24 h after now" % t.not_before, "nbf")
        if t.not_after - t.not_before > CONVERSION_MAX:
            raise CapError("E_TICKET_VALIDITY_TOO_LONG", "valid for more than 7 days", "exp")
        if self.validator.degraded:
            raise CapError("E_TICKET_OFFLINE_REJECTED", "offline: tickets are not converted", None)
        conv_path = os.path.join(self.folder, CONVERSIONS)
        with locked(self.folder):   # one conversion per ticket, also across processes
            if self.revocations.revoked(t.issuer_id, t.credential_id):
                raise CapError("E_TICKET_REVOKED", "the ticket has been revoked", "jti")
            conv = self.conversions()
            if t.credential_id in conv:  # one conversion per ticket (attacks.md H67)
                return conv[t.credential_id]["descriptor_id"]
            not_after = min(t.not_after, now + CONVERSION_MAX, t.issued_at + CONVERSION_MAX)
            not_before = min(t.not_before, not_after - 1)
            payload = descriptor_payload(
                t.subject, t.terminal_id, [g.to_obj() for g in t.grants], self.conversion_key.issuer_id,
                not_before, not_after, issued_at=min(now, not_before), descriptor_id=uuid_bytes(t.credential_id),
                metadata={"origin": "converted_from_ticket", "origin_jti": t.credential_id, "origin_kid": t.key_id,
                          "origin_iss": t.issuer_id, "origin_signature": b64u_encode(t.signature)})
            data = sign_descriptor(self.conversion_key, payload)
            did = self.import_descriptor(data, now)
            conv[t.credential_id] = {"descriptor_id": did, "iss": t.issuer_id, "not_after": not_after}
            write_json(conv_path, conv)
            return did

    def conversions(self):
        """The converted descriptors (conversions.json): {ticket jti: {"descriptor_id", "iss",
        "not_after"}}. Raises StoreError when the file is anything else."""
        path = os.path.join(self.folder, CONVERSIONS)
        conv = read_json(path, default={}, kind=dict)
        for c in conv.values():
            if type(c) is not dict or type(c.get("descriptor_id")) is not str or type(c.get("iss")) is not str \
                    or type(c.get("not_after")) is not int:
                raise corrupt(path, "an entry is not {descriptor_id, iss, not_after}")
        return conv

    def purge(self, now):
        """Remove converted descriptors 24 h after expiry. Returns the ids removed."""
        conv_path = os.path.join(self.folder, CONVERSIONS)
        with locked(self.folder):
            conv = self.conversions()
            gone = [jti for jti, c in conv.items() if now >= c["not_after"] + PURGE_AFTER]
            for jti in gone:
                self._remove(conv.pop(jti)["descriptor_id"])
            if gone:
                write_json(conv_path, conv)
        return gone
