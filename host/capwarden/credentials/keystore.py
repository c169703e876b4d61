"""Verification_Keys (section 2.7): key_id, issuer, validity window, source, revoked flag.

Rotation: old and new keys are both present with overlapping windows; every credential is
checked against the key its key_id names, and only that key (attacks.md G60, G61). A key_id is
never rebound to other material: importing a different key under a known key_id is refused.
"""

import os

from capwarden.credentials import keys as keymod
from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.model import parse_key_json
from capwarden.credentials.store import KEYS, corrupt, locked, read_json, write_json
from capwarden.errors import CapError


class KeyStore:
    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, KEYS)
        self.records = {}
        self.public = {}
        self.generation = 0   # bumped on every change: cached verifications are redone
        self._merge()

    def _merge(self):
        """Take in keys and revoked flags written by another process. Only adds: a key known
        here stays known, and a revoked flag is never cleared (fail closed)."""
        for i, obj in enumerate(read_json(self.path, default=[], kind=list)):
            try:
                rec = parse_key_json(obj)
                old = self.records.get(rec["key_id"])
                if old is None:
                    self._add(rec)
            except CapError as exc:   # a store file: its errors are the store's, naming the file
                raise corrupt(self.path, "key %d: %s" % (i, exc.message)) from None
            if old is not None and rec["revoked"] and not old["revoked"]:
                old["revoked"] = True
                self.generation += 1

    def _add(self, rec):
        try:
            pub = keymod.load(rec["algorithm"], rec["key_material"])
        except keymod.KeyError_ as exc:
            raise CapError("E_VERIFICATION_KEY_INVALID", "key %s: %s" % (rec["key_id"], exc), "key_material")
        self.records[rec["key_id"]] = rec
        self.public[rec["key_id"]] = pub
        self.generation += 1

    def add(self, obj):
        """Import a key from its JSON form. Raises CapError for a malformed or unusable key."""
        rec = parse_key_json(obj)
        with locked(self.folder):   # read, change and write as one step against other processes
            self._merge()
            old = self.records.get(rec["key_id"])
            if old is not None and (old["key_material"] != rec["key_material"] or old["algorithm"] != rec["algorithm"]
                                    or old["issuer_id"] != rec["issuer_id"]):
                raise CapError("E_VERIFICATION_KEY_INVALID",
                               "key_id %r is already bound to another key; key ids are never reused" % rec["key_id"],
                               "key_id")
            if old is not None and old["revoked"]:
                rec["revoked"] = True   # importing a revoked key again does not bring it back
            self._add(rec)
            self._save()
        return rec

    def revoke(self, key_id):
        with locked(self.folder):
            self._merge()
            if key_id not in self.records:
                raise CapError("E_VERIFICATION_KEY_INVALID", "no key %r" % key_id, "key_id")
            self.records[key_id]["revoked"] = True
            self.generation += 1
            self._save()

    def _save(self):
        write_json(self.path, [to_json(r) for r in self.records.values()])

    def usable(self, key_id, algorithm, issuer_id, now):
        """The PublicKey for key_id if it may verify this credential now, else None and why."""
        rec = self.records.get(key_id)
        if rec is None:
            return None, "no key %r is known" % key_id
        if rec["revoked"]:
            return None, "key %r is revoked" % key_id
        if now < rec["valid_from"]:
            return None, "key %r is not valid yet" % key_id
        if rec["valid_until"] is not None and now >= rec["valid_until"]:
            return None, "key %r has expired" % key_id
        if rec["algorithm"] != algorithm:
            return None, "key %r is %s, the credential says %s" % (key_id, rec["algorithm"], algorithm)
        if rec["issuer_id"] != issuer_id:
            return None, "key %r belongs to another issuer" % key_id
        return self.public[key_id], ""


def to_json(rec):
    out = dict(rec)
    out["key_material"] = b64u_encode(rec["key_material"])
    return out
