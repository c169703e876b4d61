"""The trust service's key ring: its issuer keys and its Registration_Authority (RA) keys.

Two roles, each a list of signing keys in files of the service's data folder:

- issuer: signs tickets, descriptors and revocation statements (and the ticket-status and
  revocation-list documents). Its public part is the Verification_Key that terminals get in
  the RA's key sets (source "ra-distributed"). After a rotation the old key stays in the ring,
  and in every key set, until the operator retires it: credentials it signed keep verifying.
  Each issuer key has a `valid_from`: the newest key already valid is the one that signs
  (issuer_key(now)), so a rotation with a later effective time gives terminals until then to
  fetch the new key before anything signed by it reaches them.
  A rotated issuer key is also `pending` until a published key set is shown to carry it
  (confirm()), and a pending key never signs: the ring's files are written before the key set
  is published, and a crash in between must not leave a key that signs what no terminal can
  verify. keydist.finish_rotation publishes and confirms (again, after such a crash).
- ra: signs the key sets and registrations. A rotation makes the new key the current RA key;
  the old one is kept (it signs the key set that introduces the new one) until retired.

Layout of FOLDER (the ring's folder, mode 0700):
    ring.json            which keys exist, their role, valid_from, lead_s, pending, retired_at;
                         no secret
    KEY_ID.key           the secret, owner-only (0600), SigningKey.save's format
    KEY_ID.pub.json      the public part

ring.json is replaced atomically under the folder's lock (credentials.store), so the CLI can
rotate while service processes run; they pick the change up with refresh(). Nothing here prints
or logs a secret: errors name key ids and paths only.
"""

import os
import time

from capwarden.credentials import keys
from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.credentials.issue import SigningKey
from capwarden.credentials.store import locked, read_json, write_json
from capwarden.errors import CapwardenError, StoreError

RING = "ring.json"
ISSUER = "issuer"
RA = "ra"
ROLES = (ISSUER, RA)
RING_FORMAT = 1
KEYS_FOLDER = "keys"     # the ring's folder inside the service's data folder


def ring_folder(data_dir):
    """Where the service's key ring lives inside its data folder DATA_DIR."""
    return os.path.join(data_dir, KEYS_FOLDER)


class KeyRingError(CapwardenError):
    """The key ring cannot do what was asked: missing or already initialised, an unknown key
    id, retiring a key still in use. The message names key ids, never key material."""

    exit_code = 2


class KeyRing:
    """The service's keys. Build with KeyRing.init (once) or KeyRing.open."""

    def __init__(self, folder):
        self.folder = folder
        self._stamp = None
        self._state = ({}, {})     # (metadata by key id, live SigningKeys by key id): one snapshot
        self.issuer_id = None
        self._load()

    def __repr__(self):
        return "KeyRing(%r, %d keys)" % (self.folder, len(self._state[0]))

    # ---- creation and loading --------------------------------------------------------------
    @classmethod
    def init(cls, folder, issuer_id, algorithm=keys.ED25519, now=None):
        """Create the ring in `folder` with one issuer key and one RA key, valid from `now`.
        Raises KeyRingError when a ring is already there (never overwrites keys)."""
        now = int(time.time()) if now is None else now
        if type(issuer_id) is not str or not issuer_id:
            raise KeyRingError("the ring needs an issuer id")
        if algorithm not in keys.ALGORITHMS:
            raise KeyRingError("unknown algorithm %r (known: %s)" % (algorithm, ", ".join(keys.ALGORITHMS)))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        with locked(folder):
            if os.path.exists(os.path.join(folder, RING)):
                raise KeyRingError("%s already holds a key ring; refusing to overwrite it" % folder)
            ring = {"format": RING_FORMAT, "issuer_id": issuer_id, "algorithm": algorithm, "keys": []}
            for role in ROLES:
                ring["keys"].append(_new_key(folder, role, issuer_id, algorithm, now, now))
            write_json(os.path.join(folder, RING), ring)
        return cls(folder)

    @classmethod
    def open(cls, folder):
        """The ring in `folder`. Raises KeyRingError when there is none, StoreError when a key
        file is missing, readable by others or corrupt."""
        return cls(folder)

    def refresh(self):
        """Reload when another process changed the ring (a rotation by the CLI). Cheap: one
        stat when nothing changed. Returns True when it reloaded."""
        if self._stat() == self._stamp:
            return False
        self._load()
        return True

    def _stat(self):
        try:
            st = os.stat(os.path.join(self.folder, RING))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self):
        path = os.path.join(self.folder, RING)
        if not os.path.exists(path):
            raise KeyRingError("%s holds no key ring: run 'capwarden trust init' first" % self.folder)
        stamp = self._stat()
        ring = read_json(path, kind=dict)
        try:
            if ring["format"] != RING_FORMAT:
                raise StoreError("%s is format %r, this capwarden reads %d" % (path, ring["format"], RING_FORMAT))
            meta = {m["key_id"]: m for m in ring["keys"]}
            for m in meta.values():
                if m["role"] not in ROLES:
                    raise StoreError("%s: key %s has an unknown role" % (path, m["key_id"]))
        except (KeyError, TypeError):
            raise StoreError("%s is not a capwarden key ring" % path) from None
        loaded = {}
        for kid, m in meta.items():
            if m.get("retired_at") is None:
                key = SigningKey.load(self._prefix(kid) + ".key")
                if key.key_id != kid:
                    raise StoreError("%s.key holds key %s, not %s" % (self._prefix(kid), key.key_id, kid))
                loaded[kid] = key
        self.issuer_id = ring["issuer_id"]
        self.algorithm = ring["algorithm"]
        # One assignment: threads of a running service reading the ring never see half a reload.
        self._state, self._stamp = (meta, loaded), stamp

    def _prefix(self, kid):
        return os.path.join(self.folder, kid)

    # ---- lookup ----------------------------------------------------------------------------
    def _live(self, role):
        """(metadata, SigningKey) of the keys of `role` not retired, oldest first (by
        valid_from, then creation), from one snapshot of the ring."""
        meta, loaded = self._state
        ms = [m for m in meta.values() if m["role"] == role and m.get("retired_at") is None]
        return [(m, loaded[m["key_id"]]) for m in sorted(ms, key=lambda m: (m["valid_from"], m["created_at"], m["seq"]))]

    def issuer_key(self, now=None):
        """The issuer key that signs now: the newest one not pending whose valid_from has come
        (the oldest one not pending if none has, which only a ring created with a future time
        can reach). Raises KeyRingError when every live issuer key is pending."""
        now = int(time.time()) if now is None else now
        live = [(m, k) for m, k in self._live(ISSUER) if not m.get("pending")]
        if not live:
            raise KeyRingError("no issuer key of the ring is in a published key set: run "
                               "'capwarden trust keys publish'")
        ready = [k for m, k in live if m["valid_from"] <= now]
        return ready[-1] if ready else live[0][1]

    def pending(self):
        """Key ids of the live issuer keys that no published key set is known to carry yet
        (they do not sign), oldest first."""
        return [m["key_id"] for m, _k in self._live(ISSUER) if m.get("pending")]

    def issuer_keys(self):
        """Every live issuer key (SigningKey), oldest first: what a key set distributes."""
        return [k for _m, k in self._live(ISSUER)]

    def verification_keys(self):
        """The public Verification_Key JSON of every live issuer key, source "ra-distributed",
        oldest first."""
        return [k.public_json(m["valid_from"]) for m, k in self._live(ISSUER)]

    def ra_keys(self):
        """The current RA keys (SigningKey): those a new key set lists and is signed by."""
        return [k for m, k in self._live(RA) if m.get("current")]

    def ra_keys_live(self):
        """Every RA key not retired, the current ones last (SigningKey)."""
        live = sorted(self._live(RA), key=lambda mk: (bool(mk[0].get("current")), mk[0]["seq"]))
        return [k for _m, k in live]

    def ra_public(self):
        """The current RA keys as public key JSON {"key_id", "algorithm", "key_material"}:
        the trust anchor the operator hands a terminal at enrollment."""
        return [ra_public_json(k) for k in self.ra_keys()]

    def get(self, kid):
        """The live signing key `kid`. Raises KeyRingError for an unknown or retired one."""
        meta, loaded = self._state
        key = loaded.get(kid)
        if key is None:
            state = "retired" if kid in meta else "unknown"
            raise KeyRingError("key %s is %s" % (kid, state))
        return key

    def role_of(self, kid):
        m = self._state[0].get(kid)
        if m is None:
            raise KeyRingError("key %s is unknown" % kid)
        return m["role"]

    def valid_from(self, kid):
        m = self._state[0].get(kid)
        if m is None:
            raise KeyRingError("key %s is unknown" % kid)
        return m["valid_from"]

    def public_keys(self):
        """{key_id: credentials.keys.PublicKey} of every live key of both roles."""
        return {kid: keys.load(k.algorithm, k.private.public) for kid, k in self._state[1].items()}

    def describe(self):
        """Every key, retired ones too, as JSON-ready dicts without any secret: key_id, role,
        algorithm, valid_from, created_at, retired_at, current (the RA key in force, or the
        issuer key that signs now), pending (an issuer key no published key set carries yet)."""
        try:
            signing = self.issuer_key().key_id
        except KeyRingError:                    # every issuer key pending
            signing = None
        out = []
        for m in sorted(self._state[0].values(), key=lambda m: m["seq"]):
            d = {k: m.get(k) for k in ("key_id", "role", "algorithm", "valid_from", "created_at", "retired_at")}
            d["current"] = bool(m.get("current")) if m["role"] == RA else m["key_id"] == signing
            d["pending"] = bool(m.get("pending")) and m.get("retired_at") is None
            out.append(d)
        return out

    # ---- rotation and retirement -----------------------------------------------------------
    def rotate(self, role, now=None, effective_at=None):
        """Add a new key of `role`; the old ones stay until retired. An issuer key is pending
        (it does not sign) until confirm() is told a published key set carries it, then signs
        from `effective_at` (default now); an RA key becomes the current RA key at once (the
        key set that introduces it is signed by the old RA key too). Returns the new key id.
        Raises KeyRingError for an unknown role or an effective time in the past."""
        now = int(time.time()) if now is None else now
        if role not in ROLES:
            raise KeyRingError("unknown key role %r (known: %s)" % (role, ", ".join(ROLES)))
        effective_at = now if effective_at is None else effective_at
        if type(effective_at) is not int or effective_at < now:
            raise KeyRingError("the effective time must be an integer time not before now")
        if role == RA:
            effective_at = now
        with locked(self.folder):
            self._load()
            ring = read_json(os.path.join(self.folder, RING), kind=dict)
            if role == RA:
                for m in ring["keys"]:
                    m.pop("current", None)
            m = _new_key(self.folder, role, ring["issuer_id"], ring["algorithm"], now, effective_at,
                         seq=1 + max(k["seq"] for k in ring["keys"]))
            if role == ISSUER:
                # The lead is kept so that a key set published late (after a crash) still gives
                # terminals all of it: rebase_pending().
                m.update(pending=True, lead_s=effective_at - now)
            ring["keys"].append(m)
            write_json(os.path.join(self.folder, RING), ring)
            self._load()
        return m["key_id"]

    def confirm(self, carried):
        """Clear `pending` on the issuer keys that a published key set carries: `carried` is
        {key_id: valid_from} of that set's keys, and a key is confirmed only when the set
        carries it with the ring's valid_from (a set built before rebase_pending moved it does
        not count). Call it only after that set's transaction committed. Returns the key ids
        confirmed."""
        def change(ring):
            done = []
            for m in ring["keys"]:
                if m.get("pending") and m.get("retired_at") is None and carried.get(m["key_id"]) == m["valid_from"]:
                    del m["pending"]
                    done.append(m["key_id"])
            return done
        return self._change(change, lambda: [kid for kid in self.pending() if kid in carried])

    def rebase_pending(self, now, carried=()):
        """Move each pending issuer key not in `carried` (key ids a published key set already
        holds) to valid_from = max(valid_from, now + its lead): a key set published now, late,
        still gives terminals the lead the rotation asked for before the key signs. Returns the
        key ids moved."""
        def change(ring):
            moved = []
            for m in ring["keys"]:
                if m.get("pending") and m.get("retired_at") is None and m["key_id"] not in carried:
                    at = max(m["valid_from"], now + m.get("lead_s", 0))
                    if at != m["valid_from"]:
                        m["valid_from"] = at
                        key = self._state[1][m["key_id"]]
                        write_json(self._prefix(m["key_id"]) + ".pub.json", key.public_json(at))
                        moved.append(m["key_id"])
            return moved
        return self._change(change, lambda: [kid for kid in self.pending() if kid not in carried])

    def _change(self, change, needed):
        """Run change(ring dict) under the folder's lock on a fresh read of ring.json and write it
        back when it returns a non-empty list (which is returned). `needed()`, asked first on
        the ring as it is now (refreshed: another process may have rotated), saves taking the
        lock when there is nothing to do."""
        self.refresh()
        if not needed():
            return []
        with locked(self.folder):
            self._load()
            ring = read_json(os.path.join(self.folder, RING), kind=dict)
            done = change(ring)
            if done:
                write_json(os.path.join(self.folder, RING), ring)
                self._load()
        return done

    def retire(self, kid, now=None):
        """Retire key `kid`: its secret file is deleted and key sets no longer list it. Refuses
        (KeyRingError) the issuer key that signs now, an issuer key not yet replaced by one in
        force, and a current RA key. Whether terminals still need it is the RA's question
        (registry.retire_key asks it first)."""
        now = int(time.time()) if now is None else now
        with locked(self.folder):
            self._load()
            m = self._state[0].get(kid)
            if m is None:
                raise KeyRingError("key %s is unknown" % kid)
            if m.get("retired_at") is not None:
                raise KeyRingError("key %s is already retired" % kid)
            if m["role"] == RA and m.get("current"):
                raise KeyRingError("key %s is the current RA key: rotate the RA key first" % kid)
            if m["role"] == ISSUER and self.issuer_key(now).key_id == kid:
                raise KeyRingError("key %s is the issuer key in force: rotate first (and wait for "
                                   "the new key's effective time)" % kid)
            ring = read_json(os.path.join(self.folder, RING), kind=dict)
            for r in ring["keys"]:
                if r["key_id"] == kid:
                    r["retired_at"] = now
            write_json(os.path.join(self.folder, RING), ring)
            try:
                os.unlink(self._prefix(kid) + ".key")
            except FileNotFoundError:
                pass
            self._load()


def ra_public_json(key):
    """Public key JSON of an RA SigningKey: {"key_id", "algorithm", "key_material"}."""
    return {"key_id": key.key_id, "algorithm": key.algorithm, "key_material": b64u_encode(key.private.public)}


def _new_key(folder, role, issuer_id, algorithm, now, valid_from, seq=0):
    kid = "%s-%s" % (role, uuid_text(new_uuid7(now * 1000)))
    key = SigningKey.generate(algorithm, kid, issuer_id)
    key.save(os.path.join(folder, kid), valid_from)
    m = {"key_id": kid, "role": role, "algorithm": algorithm, "valid_from": valid_from,
         "created_at": now, "seq": seq}
    if role == RA:
        m["current"] = True
    return m
