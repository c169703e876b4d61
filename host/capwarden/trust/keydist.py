"""Key distribution of the Registration_Authority (§4.4): key-set versions, rotation,
retirement, acknowledgements. Part of capwarden.trust.registry (which re-exports every name
here and holds the RegistrationAuthority that runs them in transactions).

Every function takes a Session inside the caller's transaction, as registry's do. A key set is
built from the key ring as it is (servicekeys.KeyRing): every issuer key not retired, the
current RA keys. Version 1 is signed by its own RA keys, version N > 1 by an RA key of N-1 and
every RA key of N; keysets.verify_next, what a terminal runs, checks each before it is stored.

A rotation or retirement changes the ring's files first and publishes second, in another
transaction; a crash in between leaves the ring ahead of the latest key set. That is safe (a
rotated issuer key is pending in the ring and does not sign until a published set carries it)
and unfinished: rotation_state() says so, finish_rotation() completes it (`capwarden trust
keys publish`, and every later rotate or retire).
"""

import json
import time

import sqlalchemy as sa
from sqlalchemy import exc

from capwarden.credentials import keys
from capwarden.trust import keysets, signed
from capwarden.trust.errors import Conflict, Forbidden, NotFound
from capwarden.trust.models_registry import REGISTERED, KeySetAck, KeySetVersion, RegisteredTerminal
from capwarden.trust.periods import ROTATION_LEAD_S
from capwarden.trust.servicekeys import ISSUER, KeyRingError

PUBLISH_TRIES = 5                     # versions built again when another process published first
NEEDING_SHOWN = 10                    # terminal ids named in a refused retirement's message


def _now(now):
    return int(time.time()) if now is None else now


def latest_keyset_version(session):
    """The newest published key-set version, 0 when none is."""
    return session.scalar(sa.select(sa.func.max(KeySetVersion.version))) or 0


def keyset_document(session, version):
    """The signed key set `version` exactly as published. Raises NotFound."""
    row = session.get(KeySetVersion, version) if type(version) is int else None
    if row is None:
        raise NotFound("no key set version %r" % (version,))
    return json.loads(row.document)


def keyset_payload_of(session, version):
    return signed.payload_of(keyset_document(session, version), signed.KEY_SET)


def keyset_payload(ring, version, floor=0):
    """The key-set payload `version` from the ring as it is: every live issuer key (source
    "ra-distributed"), the current RA keys, effective_at = the newest issuer key's valid_from
    (when it starts signing), never below `floor` (the previous set's)."""
    vks = [{k: v for k, v in vk.items() if v is not None} for vk in ring.verification_keys()]
    effective = max([vk["valid_from"] for vk in vks] + [floor])
    return {"type": signed.KEY_SET, "version": version, "effective_at": effective,
            "ra_keys": ring.ra_public(), "keys": vks}


def publish_keyset(session, ring, now=None):
    """Publish the next key-set version from the ring. Version 1 is signed by its own RA keys;
    version N > 1 by an RA key of N-1 that the ring still holds and by every RA key of N. The
    document is checked with keysets.verify_next, as a terminal will, before it is stored.
    Returns the version. Raises KeyRingError (no RA key of N-1 left to sign), Conflict (other
    processes kept publishing the same version at the same time)."""
    now = _now(now)
    for _attempt in range(PUBLISH_TRIES):
        doc, payload = _next_keyset(session, ring)
        try:
            # A savepoint: when another process committed this version first (its primary key),
            # only this insert is undone, and the next try builds on the version it published.
            with session.begin_nested():
                session.add(KeySetVersion(version=payload["version"], document=json.dumps(doc, sort_keys=True),
                                          digest=keysets.digest(doc), effective_at=payload["effective_at"],
                                          created_at=now))
            return payload["version"]
        except exc.IntegrityError:
            continue
    raise Conflict("key set publication kept colliding with another process: try again")


def _next_keyset(session, ring):
    """(signed document, payload) of the key set after the latest published one."""
    prev_version = latest_keyset_version(session)
    signers = list(ring.ra_keys())
    if not prev_version:
        payload = keyset_payload(ring, 1)
        doc = signed.sign(payload, signers)
        keysets.verify_next(ring.ra_public(), doc)
        return doc, payload
    prev = keyset_payload_of(session, prev_version)
    payload = keyset_payload(ring, prev_version + 1, floor=prev["effective_at"])
    old_kids = [k["key_id"] for k in prev["ra_keys"]]
    if not {k.key_id for k in signers}.intersection(old_kids):
        held = [kid for kid in old_kids if _live(ring, kid)]
        if not held:
            raise KeyRingError("no RA key of key set %d is left to sign version %d" % (prev_version, prev_version + 1))
        signers.insert(0, ring.get(held[0]))
    doc = signed.sign(payload, signers)
    keysets.verify_next(prev, doc)
    return doc, payload


def _live(ring, kid):
    try:
        ring.get(kid)
        return True
    except KeyRingError:
        return False


def init_keysets(session, ring, now=None):
    """Publish key set version 1 unless one exists (capwarden trust init). Returns the latest."""
    return latest_keyset_version(session) or publish_keyset(session, ring, now)


def rotate(db, ring, role, now=None, effective_at=None):
    """Rotate the `role` key ("issuer" or "ra") and publish the key set that distributes it.
    An issuer key signs from `effective_at` (default now + ROTATION_LEAD_S, the time terminals
    get to fetch it): until then the old one does, and both are in the set. An RA key is in
    force at once (the set is signed by the old RA key too). `db` is the Database: the ring
    (files, not the database) changes once, before the publishing transaction, which alone is
    retried when it collides (a ring change inside it would be made again on each try); the
    new issuer key is pending until that transaction committed (finish_rotation).
    Returns {"key_id", "version", "valid_from"}. Raises KeyRingError, Conflict."""
    now = _now(now)
    if role == ISSUER and effective_at is None:
        effective_at = now + ROTATION_LEAD_S
    kid = ring.rotate(role, now=now, effective_at=effective_at)
    done = finish_rotation(db, ring, now)
    return {"key_id": kid, "version": done["version"], "valid_from": ring.valid_from(kid)}


def _carried(payload):
    """{key_id: valid_from} of the issuer keys a key-set payload (or None) distributes."""
    return {} if payload is None else {k["key_id"]: k["valid_from"] for k in payload["keys"]}


def _latest_payload(session):
    v = latest_keyset_version(session)
    return keyset_payload_of(session, v) if v else None


def _behind(ring, payload):
    """Whether the ring holds what key-set `payload` does not distribute (or the reverse): its
    live issuer keys and valid_from, its current RA keys."""
    return (payload is None or keyset_payload(ring, payload["version"])["keys"] != payload["keys"]
            or ring.ra_public() != payload["ra_keys"])


def rotation_state(session, ring):
    """What `trust status` and `trust keys list` say about the ring and the latest key set:
    {"unfinished" (bool), "key_set_version", "pending" (issuer key ids that do not sign yet:
    no confirmed published set carries them), "unpublished" (live issuer and current RA key
    ids the latest set lacks), "withdrawn" (key ids the latest set lists that the ring
    retired)}. Unfinished: run finish_rotation."""
    p = _latest_payload(session)
    listed = set(_carried(p)) | {k["key_id"] for k in (p or {}).get("ra_keys", [])}
    live = [k.key_id for k in ring.issuer_keys()] + [k["key_id"] for k in ring.ra_public()]
    retired = {k["key_id"] for k in ring.describe() if k["retired_at"] is not None}
    out = {"key_set_version": p["version"] if p else 0, "pending": ring.pending(),
           "unpublished": [kid for kid in live if kid not in listed], "withdrawn": sorted(listed & retired)}
    out["unfinished"] = bool(out["pending"]) or _behind(ring, p)
    return out


def finish_rotation(db, ring, now=None):
    """Bring the published key sets up to the ring and let the ring's new issuer keys sign:
    what every rotate and retire ends with, and `capwarden trust keys publish` after one was
    interrupted between its ring change and its publication.

    1. pending keys the latest set already carries (the crash came after the commit) are
       confirmed; 2. the other pending keys get their lead again from now (rebase_pending: a
       late set still gives terminals the whole lead); 3. a new version is published unless the
       latest set already distributes the ring as it is (checked in the publishing transaction,
       so processes finishing at once publish one version); 4. the keys it carries are
       confirmed once that transaction committed. A crash at any step leaves no key signing
       undistributed, and running this again completes it.
    Returns {"version" (the latest), "published" (bool), "confirmed": [key ids]}. Raises
    KeyRingError (no RA key of the latest set left to sign the next), Conflict."""
    now = _now(now)
    carried = _carried(db.run(_latest_payload, write=False))
    confirmed = ring.confirm(carried)
    ring.rebase_pending(now, carried)

    def publish(session):
        p = _latest_payload(session)
        if not _behind(ring, p):
            return p["version"], p, False
        v = publish_keyset(session, ring, now)
        return v, keyset_payload_of(session, v), True
    version, payload, published = db.run(publish)
    confirmed += ring.confirm(_carried(payload))
    return {"version": version, "published": published, "confirmed": confirmed}


def _first_version_with(session, field, kids):
    """The first key-set version whose `field` ("keys" or "ra_keys") lists every kid in kids."""
    for v in range(1, latest_keyset_version(session) + 1):
        listed = {k["key_id"] for k in keyset_payload_of(session, v)[field]}
        if set(kids) <= listed:
            return v
    return None


def terminals_needing(session, ring, kid, now=None):
    """(successor version, [terminal ids]) for key `kid`: the registered terminals that have not
    acknowledged the first key set holding the key(s) that replace it, and so still need it."""
    now = _now(now)
    role = ring.role_of(kid)
    if role == ISSUER:
        field, kids = "keys", [ring.issuer_key(now).key_id]
    else:
        field, kids = "ra_keys", [k.key_id for k in ring.ra_keys()]
    if kid in kids:
        raise KeyRingError("key %s is in use: rotate it first" % kid)
    v = _first_version_with(session, field, kids)
    if v is None:
        raise KeyRingError("no key set distributes the successor of %s yet: publish one first" % kid)
    rows = session.scalars(sa.select(RegisteredTerminal.terminal_id)
                           .where(RegisteredTerminal.status == REGISTERED, RegisteredTerminal.key_set_acked < v)
                           .order_by(RegisteredTerminal.terminal_id))
    return v, list(rows)


def retire_key(db, ring, kid, force=False, now=None):
    """Retire key `kid`. Refused (Conflict, naming the count and some terminals) while
    registered terminals that have not acknowledged the key set holding its successor still
    need it, unless `force`. An issuer key leaves the key sets: a new version is published
    without it. An issuer key not yet in force cannot be retired. `db` is the Database: the
    check is one transaction, the ring's change (files) is made once after it, and the
    publication is another transaction, the only one retried. Returns {"key_id", "version"
    (published, or None), "forced", "needing": [terminal ids]}. Raises KeyRingError, Conflict."""
    now = _now(now)
    role = ring.role_of(kid)
    ring.get(kid)                       # KeyRingError "retired" before asking who needs it
    if role == ISSUER and ring.valid_from(kid) > now:
        raise KeyRingError("key %s is not in force yet; retiring a pending key is not supported" % kid)
    v, needing = db.run(lambda s: terminals_needing(s, ring, kid, now), write=False)
    if needing and not force:
        raise Conflict("%d registered terminal(s) have not acknowledged key set %d and still need key %s "
                       "(%s%s); wait for them, suspend them, or force" % (
                           len(needing), v, kid, ", ".join(needing[:NEEDING_SHOWN]),
                           ", ..." if len(needing) > NEEDING_SHOWN else ""))
    ring.retire(kid, now=now)
    version = finish_rotation(db, ring, now)["version"] if role == ISSUER else None
    return {"key_id": kid, "version": version, "forced": bool(needing), "needing": needing}


def store_ack(session, terminal, version, ack, now=None):
    """Record `terminal`'s (a RegisteredTerminal) signed acknowledgement of key set `version`
    after checking it is signed by its device key and names this terminal, this version and
    the digest of the key set as published. Idempotent for the same ack. Returns the highest
    version the terminal acknowledged. Raises NotFound (no such version), Forbidden (not this
    terminal's ack of this key set)."""
    now = _now(now)
    row = session.get(KeySetVersion, version) if type(version) is int else None
    if row is None:
        raise NotFound("no key set version %r" % (version,))
    try:
        pub = keys.load(terminal.device_algorithm, terminal.device_key)
        keysets.verify_ack(ack, pub, terminal.terminal_id, version, row.digest)
    except signed.SignedDocError as e:
        raise Forbidden("not %s's acknowledgement of key set %d: %s" % (terminal.terminal_id, version, e)) from None
    if session.get(KeySetAck, (terminal.terminal_id, version)) is None:
        try:
            with session.begin_nested():    # the same ack arriving twice at once: one row, no error
                session.add(KeySetAck(terminal_id=terminal.terminal_id, version=version, digest=row.digest,
                                      ack=json.dumps(ack, sort_keys=True), acked_at=now))
        except exc.IntegrityError:
            pass
    session.execute(sa.update(RegisteredTerminal)
                    .where(RegisteredTerminal.terminal_id == terminal.terminal_id,
                           RegisteredTerminal.key_set_acked < version)
                    .values(key_set_acked=version))
    session.execute(sa.update(RegisteredTerminal).where(RegisteredTerminal.terminal_id == terminal.terminal_id)
                    .values(last_sync_at=now))
    return session.scalar(sa.select(RegisteredTerminal.key_set_acked)
                          .where(RegisteredTerminal.terminal_id == terminal.terminal_id))


def keyset_status(session):
    """Per key-set version, newest first: {"version", "effective_at", "created_at",
    "acknowledged" (terminals that acknowledged exactly it), "registered_behind" (registered
    terminals whose newest acknowledgement is older)}."""
    counts = dict(session.execute(sa.select(KeySetAck.version, sa.func.count()).group_by(KeySetAck.version)).all())
    out = []
    for row in session.scalars(sa.select(KeySetVersion).order_by(KeySetVersion.version.desc())):
        behind = session.scalar(sa.select(sa.func.count()).select_from(RegisteredTerminal)
                                .where(RegisteredTerminal.status == REGISTERED,
                                       RegisteredTerminal.key_set_acked < row.version))
        out.append({"version": row.version, "effective_at": row.effective_at, "created_at": row.created_at,
                    "acknowledged": counts.get(row.version, 0), "registered_behind": behind})
    return out
