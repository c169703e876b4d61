"""The Registration_Authority (blueprint ch. 4 §4.4): registration, status, key sets, acks.

Every function takes a SQLAlchemy Session inside the caller's transaction (Database.run or
.transaction()): nothing here commits, so an answer is sent only after the caller's commit,
and an exception rolls back everything the call did (a registration refused after its secret
was matched leaves the secret unspent). Times are integer Unix seconds, `now` injectable.

- enroll(): a one-time enrollment secret, for a named Terminal_ID or for one the RA assigns,
  handed to the operator with the trust anchor (the RA's current public keys and the key-set
  version they sign).
- register(): spends the secret once, checks the proof of possession of the device key
  (keysets.proof_message), records the terminal and returns its bearer token (stored as
  SHA-256 only) and a registration signed by the RA keys.
- set_status() / terminal_state() / authenticate(): registered, suspended, deregistered
  (final). A suspended terminal gets no key set, no list, no credential.
- publish_keyset() / rotate() / retire_key() / store_ack() / keyset_status(): key
  distribution, in trust.keydist and re-exported here (rotate and retire_key take the
  Database, not a Session: they change the ring's files outside any retried transaction): key-set versions built from the key
  ring, each signed by an RA key of the previous version and every RA key of its own;
  retirement refused while registered terminals that have not acknowledged the successor key
  still need it, unless forced; signed acknowledgements and per-version counts.
- RegistrationAuthority: all of it over one Database and key ring, one transaction a call.
"""

import os
import time

import sqlalchemy as sa
from sqlalchemy import exc

from capwarden.credentials import keys
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.ids import TERMINAL_RE, new_terminal_id, new_uuid7, uuid_text
from capwarden.trust import keysets, signed
from capwarden.trust.authorizers import hash_token as secret_hash   # tokens and secrets: one hash
from capwarden.trust.errors import Conflict, Forbidden, Gone, InvalidRequest, NotFound, Unauthenticated
from capwarden.trust.models_registry import (DEREGISTERED, REGISTERED, STATUSES, SUSPENDED, Enrollment,
                                             RegisteredTerminal)
from capwarden.trust.keydist import (NEEDING_SHOWN, PUBLISH_TRIES, ROTATION_LEAD_S, init_keysets,  # noqa: F401
                                     keyset_document, keyset_payload, keyset_payload_of, keyset_status,
                                     latest_keyset_version, publish_keyset, retire_key, rotate, store_ack,
                                     terminals_needing)

SECRET_BYTES = 32
ENROLLMENT_TTL_S = 7 * 86400          # an enrollment secret not used within a week expires
MAX_ENROLLMENT_TTL_S = 90 * 86400
MAX_GROUP = 128
SYNC_RESOLUTION_S = 60                # last_sync_at is written at most once a minute per terminal


def _now(now):
    return int(time.time()) if now is None else now


def _new_secret():
    return b64u_encode(os.urandom(SECRET_BYTES))


# ---- enrollment and registration ----------------------------------------------------------
def enroll(session, ring, terminal_id=None, group=None, ttl_s=ENROLLMENT_TTL_S, now=None):
    """A one-time enrollment secret for `terminal_id` (None: the RA assigns one at
    registration). Returns {"enrollment_secret", "terminal_id" (or None), "expires_at",
    "ra_keys", "key_set_version"}: what the operator hands the terminal, the RA keys being its
    trust anchor. The secret is shown only here. Raises InvalidRequest (bad id, group or ttl),
    Conflict (terminal already registered; the ring's RA keys not yet in a published key set),
    NotFound (no key set published: run init)."""
    now = _now(now)
    if terminal_id is not None and (type(terminal_id) is not str or not TERMINAL_RE.match(terminal_id)):
        raise InvalidRequest("a Terminal_ID is 'terminal:' + a lowercase UUIDv7")
    if group is not None and (type(group) is not str or not 0 < len(group) <= MAX_GROUP):
        raise InvalidRequest("a group is 1 to %d characters" % MAX_GROUP)
    if type(ttl_s) is not int or not 0 < ttl_s <= MAX_ENROLLMENT_TTL_S:
        raise InvalidRequest("an enrollment lasts 1 s to %d days" % (MAX_ENROLLMENT_TTL_S // 86400))
    if terminal_id is not None and session.get(RegisteredTerminal, terminal_id) is not None:
        raise Conflict("%s is already registered" % terminal_id)
    version = latest_keyset_version(session)
    if version == 0:
        raise NotFound("no key set published yet: run 'capwarden trust init'")
    anchor = keyset_payload_of(session, version)["ra_keys"]
    if anchor != ring.ra_public():
        # An RA rotation in the ring that no key set carries yet: this anchor would be stale at once.
        raise Conflict("the RA keys of the ring are not those of key set %d: publish the key set first" % version)
    secret = _new_secret()
    session.add(Enrollment(enrollment_id=uuid_text(new_uuid7(now * 1000)), secret_sha256=secret_hash(secret),
                           terminal_id=terminal_id, group_name=group, key_set_version=version, created_at=now, expires_at=now + ttl_s))
    session.flush()
    return {"enrollment_secret": secret, "terminal_id": terminal_id, "expires_at": now + ttl_s,
            "ra_keys": anchor, "key_set_version": version}


def register(session, ring, enrollment_secret, device_key, proof, terminal_id=None, now=None):
    """Register a terminal: the secret must be unspent and unexpired, `proof` the device key's
    signature over keysets.proof_message(secret, terminal_id as sent). The Terminal_ID is the
    enrollment's (a request naming another is refused), else the one the terminal proposes,
    else a new one. Returns {"terminal_id", "token", "registration"}; the token is shown only
    here. Raises Unauthenticated (secret unknown, spent or expired; proof wrong), InvalidRequest
    (malformed), Forbidden (another id than enrolled), Conflict (id already registered)."""
    now = _now(now)
    if type(enrollment_secret) is not str or not enrollment_secret:
        raise Unauthenticated("an enrollment secret is required")
    if terminal_id is not None and (type(terminal_id) is not str or not TERMINAL_RE.match(terminal_id)):
        raise InvalidRequest("a Terminal_ID is 'terminal:' + a lowercase UUIDv7")
    if not isinstance(device_key, dict) or set(device_key) != {"algorithm", "key_material"}:
        raise InvalidRequest("device_key is {\"algorithm\", \"key_material\"}")
    try:
        pub = keys.load(device_key["algorithm"], b64u_decode(device_key["key_material"]))
        sig = b64u_decode(proof) if type(proof) is str else None
    except (ValueError, TypeError, keys.KeyError_) as e:
        raise InvalidRequest("device_key or proof unusable: %s" % e) from None
    h = secret_hash(enrollment_secret)
    en = session.scalars(sa.select(Enrollment).where(Enrollment.secret_sha256 == h)).first()
    if en is None or en.used_at is not None:
        raise Unauthenticated("the enrollment secret is unknown or already used")
    if en.expires_at <= now:
        raise Unauthenticated("the enrollment secret expired: enroll the terminal again")
    if en.terminal_id is not None and terminal_id is not None and terminal_id != en.terminal_id:
        raise Forbidden("this enrollment secret is for another Terminal_ID")
    if sig is None or not pub.verify(keysets.proof_message(enrollment_secret, terminal_id), sig):
        raise Unauthenticated("the proof is not the device key's signature over this registration")
    tid = terminal_id or en.terminal_id or new_terminal_id()
    # Spend the secret: only one transaction can move used_at from NULL (PostgreSQL re-checks
    # the condition after waiting for a concurrent spender's row lock; SQLite writers queue).
    spent = session.execute(sa.update(Enrollment).where(Enrollment.enrollment_id == en.enrollment_id,
                                                        Enrollment.used_at.is_(None))
                            .values(used_at=now, used_by=tid))
    if spent.rowcount != 1:
        raise Unauthenticated("the enrollment secret is unknown or already used")
    if session.get(RegisteredTerminal, tid) is not None:
        raise Conflict("%s is already registered" % tid)
    token = _new_secret()
    session.add(RegisteredTerminal(terminal_id=tid, device_algorithm=pub.algorithm, device_key=pub.raw,
                                   token_sha256=secret_hash(token), status=REGISTERED, group_name=en.group_name,
                                   registered_at=now, status_at=now, last_sync_at=now, key_set_acked=0,
                                   revocations_served=0))
    _flush(session, "%s is already registered" % tid)
    # key_set_version: the version the enrollment's anchor signs, where the terminal's walk starts.
    payload = {"type": signed.REGISTRATION, "terminal_id": tid, "device_key": dict(device_key),
               "registered_at": now, "key_set_version": en.key_set_version}
    # Every RA key still held signs, so the anchor handed out at enrollment verifies it even
    # when the RA key rotated in between (until that key is retired).
    signers = ring.ra_keys_live()[-signed.MAX_SIGNATURES:]
    return {"terminal_id": tid, "token": token, "registration": signed.sign(payload, signers)}


def _flush(session, conflict_message):
    try:
        session.flush()
    except exc.IntegrityError:
        raise Conflict(conflict_message) from None


# ---- status ---------------------------------------------------------------------------------
def terminal_state(session, terminal_id):
    """The registration status of `terminal_id`: "registered", "suspended", "deregistered",
    or None when it never registered. The issuers refuse credentials for a suspended terminal
    (403) and a deregistered one (410), and issue for one that never registered (None: a
    single operator feeds terminals by hand, bounded by the authorizer's terminal_ids) unless
    the service requires registration (ServiceConfig.require_registration, serve
    --require-registration: then 403)."""
    return terminal_states(session, (terminal_id,))[terminal_id]


def terminal_states(session, terminal_ids):
    """{terminal_id: terminal_state(...)} for each of `terminal_ids`, in one query (a batch of
    tickets names a few terminals; one lookup each cost more than the tickets' policy checks)."""
    ids = set(terminal_ids)
    out = dict.fromkeys(ids)
    if ids:
        q = sa.select(RegisteredTerminal.terminal_id, RegisteredTerminal.status).where(
            RegisteredTerminal.terminal_id.in_(sorted(ids)))
        for tid, status in session.execute(q):
            out[tid] = status
    return out


def set_status(session, terminal_id, status, now=None):
    """Set a terminal's status. Returns the previous one. Deregistration is final. Raises
    InvalidRequest (unknown status), NotFound, Conflict (deregistered already)."""
    if status not in STATUSES:
        raise InvalidRequest("status must be one of %s" % ", ".join(STATUSES))
    t = session.get(RegisteredTerminal, terminal_id, with_for_update=True)
    if t is None:
        raise NotFound("%s is not registered" % terminal_id)
    old = t.status
    if old == DEREGISTERED and status != DEREGISTERED:
        raise Conflict("%s is deregistered: enroll it again under a new Terminal_ID" % terminal_id)
    if old != status:
        t.status, t.status_at = status, _now(now)
    return old


def authenticate(session, token, now=None):
    """The RegisteredTerminal whose bearer token is `token`, if it may be served: raises
    Unauthenticated (no such token), Forbidden (suspended), Gone (deregistered). Records the
    sync time (at most once a SYNC_RESOLUTION_S per terminal, so polling is not a write each)."""
    t = _find(session, token)
    now = _now(now)
    if t.last_sync_at is None or now - t.last_sync_at >= SYNC_RESOLUTION_S:
        session.execute(sa.update(RegisteredTerminal).where(RegisteredTerminal.terminal_id == t.terminal_id)
                        .values(last_sync_at=now))
        t.last_sync_at = now
    return t


def terminal_info(session, terminal_id):
    """GET /v1/terminals/{tid}: {"terminal_id", "status", "key_set_acked", "revocations_version"}."""
    from capwarden.trust.models import RevocationListVersion

    t = session.get(RegisteredTerminal, terminal_id)
    if t is None:
        raise NotFound("%s is not registered" % terminal_id)
    rl = session.get(RevocationListVersion, terminal_id)
    return {"terminal_id": t.terminal_id, "status": t.status, "key_set_acked": t.key_set_acked,
            "revocations_version": rl.version if rl is not None else 0}


def list_terminals(session):
    """Every terminal for `capwarden trust status`: terminal_id, status, group, registered_at,
    last_sync_at, key_set_acked, revocations_served (the list version last served); by Terminal_ID."""
    rows = session.scalars(sa.select(RegisteredTerminal).order_by(RegisteredTerminal.terminal_id))
    return [{"terminal_id": t.terminal_id, "status": t.status, "group": t.group_name,
             "registered_at": t.registered_at, "last_sync_at": t.last_sync_at, "key_set_acked": t.key_set_acked,
             "revocations_served": t.revocations_served}
            for t in rows]


class RegistrationAuthority:
    """The RA over one database and key ring, one transaction per call (what the HTTP routes
    and the CLI use). clock: seconds since the epoch. publisher: trust.push's publisher (or
    None); its keyset(version) is awaited by the routes after a new version is committed."""

    def __init__(self, db, ring, clock=time.time, publisher=None):
        self.db = db
        self.ring = ring
        self.clock = clock
        self.publisher = publisher

    def now(self):
        return int(self.clock())

    def _ring(self):
        refresh = getattr(self.ring, "refresh", None)
        if refresh is not None:
            refresh()
        return self.ring

    def enroll(self, terminal_id=None, group=None, ttl_s=ENROLLMENT_TTL_S):
        return self.db.run(lambda s: enroll(s, self._ring(), terminal_id, group, ttl_s, self.now()))

    def register(self, body):
        """POST /v1/registrations with body {"enrollment_secret", "terminal_id"?, "device_key", "proof"}."""
        if not isinstance(body, dict) or not {"enrollment_secret", "device_key", "proof"} <= set(body) \
                or not set(body) <= {"enrollment_secret", "terminal_id", "device_key", "proof"}:
            raise InvalidRequest("a registration is {\"enrollment_secret\", \"terminal_id\"?, \"device_key\", \"proof\"}")
        ring = self._ring()
        return self.db.run(lambda s: register(s, ring, body["enrollment_secret"], body["device_key"], body["proof"],
                                              body.get("terminal_id"), self.now()))

    def authenticate(self, token):
        """The RegisteredTerminal (detached) for a bearer token; see authenticate()."""
        t = self.db.run(lambda s: _find(s, token), write=False)
        now = self.now()
        if t.last_sync_at is None or now - t.last_sync_at >= SYNC_RESOLUTION_S:
            self.db.run(lambda s: authenticate(s, token, now))
            t.last_sync_at = now
        return t

    def terminal_state(self, terminal_id):
        return self.db.run(lambda s: terminal_state(s, terminal_id), write=False)

    def set_status(self, terminal_id, status):
        return self.db.run(lambda s: set_status(s, terminal_id, status, self.now()))

    def terminal_info(self, terminal_id):
        return self.db.run(lambda s: terminal_info(s, terminal_id), write=False)

    def list_terminals(self):
        return self.db.run(list_terminals, write=False)

    def latest(self):
        return self.db.run(latest_keyset_version, write=False)

    def keyset(self, version):
        return self.db.run(lambda s: keyset_document(s, version), write=False)

    def ack(self, terminal, version, ack):
        return self.db.run(lambda s: store_ack(s, terminal, version, ack, self.now()))

    def init_keysets(self):
        return self.db.run(lambda s: init_keysets(s, self._ring(), self.now()))

    def publish(self):
        return self.db.run(lambda s: publish_keyset(s, self._ring(), self.now()))

    def rotate(self, role, effective_at=None):
        return rotate(self.db, self._ring(), role, self.now(), effective_at)

    def retire(self, key_id, force=False):
        return retire_key(self.db, self._ring(), key_id, force, self.now())

    def keyset_status(self):
        return self.db.run(keyset_status, write=False)

    def status(self):
        """Everything `capwarden trust status` shows of the RA: {"terminals", "key_sets", "keys"}."""
        def run(s):
            return {"terminals": list_terminals(s), "key_sets": keyset_status(s)}
        out = self.db.run(run, write=False)
        out["keys"] = self._ring().describe()
        return out


def _find(session, token):
    """authenticate() without the sync-time write (a read transaction)."""
    if type(token) is not str or not token:
        raise Unauthenticated("a terminal token is required")
    t = session.scalars(sa.select(RegisteredTerminal).where(RegisteredTerminal.token_sha256 == secret_hash(token))).first()
    if t is None:
        raise Unauthenticated("no terminal holds this token")
    if t.status == SUSPENDED:
        raise Forbidden("%s is suspended: it receives no updates" % t.terminal_id)
    if t.status == DEREGISTERED:
        raise Gone("%s is deregistered" % t.terminal_id)
    return t
