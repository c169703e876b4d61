"""RevocationStatements (section 2.8) and the persistent local revocation list.

A statement is accepted only when signed by a key of the issuer it names; it then revokes the
credential id it targets *for that issuer only*: a revocation by another issuer is not a
revocation (the statement "MUST be issued and signed by the issuer_id of the original
Authorization_Descriptor"). Entries are keyed on (issuer, credential id) from signed payloads,
never on credential bytes, so a re-encoded or re-signed copy stays revoked (attacks.md F49).
Listeners (the engine) hear of every new revocation at once.
"""

import os

from capwarden.credentials import cbor
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.model import parse_revocation_obj
from capwarden.credentials.store import REVOCATIONS, corrupt, locked, read_json, write_json
from capwarden.errors import CapError

MAX_STATEMENT = 4096
# An entry of the revocation list (revocations.json): each field and its type.
ENTRY = {"revocation_id": str, "target": str, "issuer_id": str, "revoked_at": int, "reason": str, "key_id": str,
         "statement": str}


def statement_signed_bytes(obj):
    body = {k: v for k, v in obj.items() if k != "signature"}
    return cbor.encode(body)


class RevocationList:
    def __init__(self, folder, keystore):
        self.folder = folder
        self.path = os.path.join(folder, REVOCATIONS)
        self.keystore = keystore
        self.entries = {}      # (issuer_id, credential id) -> record
        self.listeners = []
        self._merge()

    def _merge(self):
        """Add the file's entries to ours; returns the ones that are new here. Entries are only
        ever added: one missing from the file (a restored backup) stays revoked (fail closed)."""
        new = []
        for rec in read_json(self.path, default=[], kind=list):
            if type(rec) is not dict or any(type(rec.get(k)) is not t for k, t in ENTRY.items()):
                raise corrupt(self.path, "an entry is not {%s}" % ", ".join(ENTRY))
            key = (rec["issuer_id"], rec["target"])
            if key not in self.entries:
                self.entries[key] = rec
                new.append(rec)
        return new

    def _tell(self, records):
        for rec in records:
            for cb in list(self.listeners):
                cb(rec)

    def reload(self):
        """Re-read the list (another process may have imported statements); notify new ones."""
        self._tell(self._merge())

    def revoked(self, issuer_id, credential_id):
        return (issuer_id, credential_id) in self.entries

    def import_statement(self, data, now):
        """Verify and record a CBOR RevocationStatement. Returns its record; raises CapError."""
        return self.import_statements([data], now)[0]

    def import_statements(self, batch, now):
        """Verify and record CBOR RevocationStatements with one write (a sync after an offline
        period brings thousands). Every statement that verifies is recorded, even when another
        in the batch does not: a revocation is never held back by someone else's bad signature
        (fail closed). Returns their records, in order; then raises CapError for the first that
        failed, so that the caller does not take the batch as complete."""
        checked, failure = [], None
        for data in batch:
            try:
                checked.append((self._verify(data, now), data))
            except CapError as exc:
                failure = failure or exc
        # Re-read, add and write under the store's lock, so that an import by another process
        # in between is kept; listeners hear of every entry new to this process, outside it.
        with locked(self.folder):
            new = self._merge()
            out, added = [], False
            for rec, data in checked:
                key = (rec["issuer_id"], rec["target"])
                entry = self.entries.get(key)
                if entry is None:
                    entry = {k: rec[k] for k in ENTRY if k != "statement"}
                    entry["statement"] = b64u_encode(bytes(data))
                    self.entries[key] = entry
                    new.append(entry)
                    added = True
                out.append(entry)
            if added:
                write_json(self.path, list(self.entries.values()))
        self._tell(new)
        if failure is not None:
            raise failure
        return out

    def _verify(self, data, now):
        """The parsed statement `data` once its signature holds. Raises CapError."""
        try:
            obj = cbor.decode(data, MAX_STATEMENT)
        except cbor.CborError as exc:
            raise CapError("E_MALFORMED_REQUEST", "revocation statement: %s" % exc, exc.path or None)
        rec = parse_revocation_obj(obj)
        pub, why = self.keystore.usable(rec["key_id"], rec["algorithm"], rec["issuer_id"], now)
        if pub is None:
            raise CapError("E_VERIFICATION_KEY_INVALID", "revocation statement: %s" % why, "signature.key_id")
        if not pub.verify(statement_signed_bytes(obj), rec["signature"]):
            raise CapError("E_INVALID_SIGNATURE", "revocation statement signature does not verify", "signature")
        return rec

    def statement_bytes(self, entry):
        return b64u_decode(entry["statement"])
