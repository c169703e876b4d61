"""The revocation service: revocations by the authorizer that issued, per-terminal versioned
revocation lists (full or delta), and ticket status (§4.3.2 step 5).

Each revocation concerns one terminal (the credential's) and takes the next version of that
terminal's list: the terminal's RevocationListVersion row is incremented in the transaction that
records the revocation, so the row lock orders two writers and a rolled-back revocation gives
its version back (no gap, no duplicate: uq_revocations_list_version holds it too). A list is
read version first, then the entries up to that version, so a revocation committed in between
is never half in a list (docs/DECISIONS.md "Trust services: storage and issuance").

Entries are the RevocationStatements as CBOR bytes, signed by the issuer key, exactly what
`capwarden revocations import` takes. The list and ticket-status documents are signed.sign()
documents, by the issuer key in force (trust.servicekeys).
"""

import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from capwarden.credentials import cbor, issue
from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.ids import UUID_RE, uuid_text
from capwarden.credentials.model import REASONS
from capwarden.credentials.revocation import MAX_STATEMENT
from capwarden.trust import signed
from capwarden.trust.authorizers import authenticate
from capwarden.trust.errors import Conflict, Forbidden, InvalidRequest, NotFound
from capwarden.trust.models import IssuedDescriptor, IssuedTicket, Revocation, RevocationListVersion

MAX_VERSION = (1 << 53) - 1


def revoked_target(session, issuer_id, target_id):
    """The Revocation of credential `target_id` by `issuer_id`, or None."""
    return session.scalar(sa.select(Revocation).where(Revocation.issuer_id == issuer_id,
                                                      Revocation.target_id == target_id))


def find_target(session, target_id):
    """("ticket" | "descriptor", record) of an issued credential id. Raises NotFound."""
    if type(target_id) is not str or not UUID_RE.match(target_id):
        raise InvalidRequest("target_id is a credential id (UUIDv7 text)")
    t = session.get(IssuedTicket, target_id)
    if t is not None:
        return "ticket", t
    d = session.get(IssuedDescriptor, target_id)
    if d is not None:
        return "descriptor", d
    raise NotFound("no ticket or descriptor %s was issued here" % target_id)


def next_version(session, terminal_id):
    """Allocate the next version of `terminal_id`'s list in this transaction (row-locked)."""
    ins = (postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert)
    session.execute(ins(RevocationListVersion).values(terminal_id=terminal_id, version=0)
                    .on_conflict_do_nothing(index_elements=["terminal_id"]))
    return session.execute(sa.update(RevocationListVersion).where(RevocationListVersion.terminal_id == terminal_id)
                           .values(version=RevocationListVersion.version + 1)
                           .returning(RevocationListVersion.version)).scalar_one()


def record(session, key, authorizer_id, kind, target_id, terminal_id, expires_at, reason, now):
    """Sign and record a revocation of `target_id` with issuer SigningKey `key`, taking the next
    version of the terminal's list. Returns the Revocation (flushed, not committed)."""
    raw = issue.sign_revocation(key, target_id, now, reason)
    rid = uuid_text(cbor.decode(raw, MAX_STATEMENT)["revocation_id"])
    rev = Revocation(revocation_id=rid, issuer_id=key.issuer_id, target_id=target_id, target_kind=kind,
                     authorizer_id=authorizer_id, terminal_id=terminal_id, reason=reason or "unspecified",
                     revoked_at=now, target_expires_at=expires_at, list_version=next_version(session, terminal_id),
                     statement=raw)
    session.add(rev)
    session.flush()
    return rev


def revoke(session, key, authorizer, target_id, reason=None, now=None):
    """Revoke credential `target_id` for `authorizer` (the Authorizer that issued it) with the
    issuer SigningKey `key`. Returns the Revocation. Raises InvalidRequest (bad id or reason),
    NotFound, Forbidden (issued by another authorizer), Conflict (already revoked)."""
    if reason is not None and reason not in REASONS:
        raise InvalidRequest("reason must be one of %s" % ", ".join(REASONS))
    now = int(time.time()) if now is None else now
    kind, cred = find_target(session, target_id)
    if cred.authorizer_id != authorizer.authorizer_id:
        raise Forbidden("only the authorizer that issued %s may revoke it" % target_id)
    old = revoked_target(session, cred.issuer_id, target_id)
    if old is not None:
        raise Conflict("%s %s was already revoked at %d" % (kind, target_id, old.revoked_at))
    if key.issuer_id != cred.issuer_id:
        raise Forbidden("%s was issued by %s, not by this service's issuer %s" % (target_id, cred.issuer_id,
                                                                                  key.issuer_id))
    expires = cred.exp if kind == "ticket" else cred.not_after
    return record(session, key, authorizer.authorizer_id, kind, target_id, cred.terminal_id, expires, reason, now)


def revocation_json(rev):
    """What POST /v1/revocations answers about a Revocation."""
    return {"revocation_id": rev.revocation_id, "target_id": rev.target_id, "kind": rev.target_kind,
            "reason": rev.reason, "revoked_at": rev.revoked_at, "statement": b64u_encode(rev.statement)}


def current_version(session, terminal_id):
    return session.scalar(sa.select(RevocationListVersion.version)
                          .where(RevocationListVersion.terminal_id == terminal_id)) or 0


def list_payload(session, terminal_id, since, now):
    """The revocation-list payload for `terminal_id`: a delta after version `since` when the
    service can give one (1 <= since <= current version), else the full list (base 0) of the
    revocations whose credentials have not expired yet."""
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_VERSION):
        raise InvalidRequest("since is a list version (a non-negative integer)")
    version = current_version(session, terminal_id)
    base = since if since and since <= version else 0
    q = (sa.select(Revocation.statement)
         .where(Revocation.terminal_id == terminal_id, Revocation.list_version > base,
                Revocation.list_version <= version, Revocation.target_expires_at > now)
         .order_by(Revocation.list_version))
    return {"type": signed.REVOCATION_LIST, "terminal_id": terminal_id, "version": version, "base": base,
            "entries": list(session.scalars(q)), "issued_at": now}


def revocation_list(session, key, terminal_id, since, now):
    """The signed revocation-list document (GET /v1/terminals/{tid}/revocations?since=N)."""
    return signed.sign(list_payload(session, terminal_id, since, now), [key])


def ticket_status(session, key, jti, now, terminal_id=None):
    """The signed ticket-status document of §4.3.2 step 5 for ticket `jti`: revoked 0/1,
    revoked_at when revoked, checked_at now. With `terminal_id` (the asking terminal), only a
    ticket issued for that terminal is answered: another terminal learns nothing, not even that
    the ticket exists. Raises InvalidRequest, NotFound."""
    if type(jti) is not str or not UUID_RE.match(jti):
        raise InvalidRequest("jti is a UUIDv7 in text form")
    t = session.get(IssuedTicket, jti)
    if t is None or (terminal_id is not None and t.terminal_id != terminal_id):
        raise NotFound("no ticket %s was issued here" % jti)
    rev = revoked_target(session, t.issuer_id, jti)
    payload = {"type": signed.TICKET_STATUS, "jti": jti, "revoked": 0 if rev is None else 1, "checked_at": now}
    if rev is not None:
        payload["revoked_at"] = rev.revoked_at
    return signed.sign(payload, [key])


def versions(session, terminal_ids):
    """{terminal_id: current list version} for the given terminals."""
    return {tid: current_version(session, tid) for tid in terminal_ids}


def signing_key(keys, now):
    """The issuer SigningKey in force from key ring `keys` (reloaded first if it has refresh(),
    so a rotation by the CLI reaches running services)."""
    refresh = getattr(keys, "refresh", None)
    if refresh is not None:
        refresh()
    return keys.issuer_key(now)


class RevocationService:
    """The revocation service over one database. keys: as for issuance.Issuer."""

    def __init__(self, db, keys, clock=time.time):
        self.db = db
        self.keys = keys
        self.clock = clock

    def revoke(self, token, body):
        """POST /v1/revocations for the authorizer holding `token`: {"target_id", "reason"?}.
        Returns the answer {"revocation": ..., "versions": {terminal_id: N}} once committed."""
        if type(body) is not dict or "target_id" not in body or not set(body) <= {"target_id", "reason"}:
            raise InvalidRequest("a revocation request is {\"target_id\", \"reason\"?}")
        return self._revoke(lambda s: authenticate(s, token), body["target_id"], body.get("reason"))

    def revoke_as_operator(self, target_id, reason=None):
        """The operator's revocation (capwarden trust revoke): any credential issued here,
        recorded under the authorizer that issued it. Same answer as revoke()."""
        return self._revoke(None, target_id, reason)

    def _revoke(self, who, target_id, reason):
        def run(s):
            now = int(self.clock())
            authorizer = who(s) if who is not None else None
            if authorizer is None:
                _kind, cred = find_target(s, target_id)
                authorizer = _Issuing(cred.authorizer_id)
            rev = revoke(s, signing_key(self.keys, now), authorizer, target_id, reason, now)
            return {"revocation": revocation_json(rev), "versions": {rev.terminal_id: rev.list_version}}
        try:
            return self.db.run(run)
        except sa.exc.IntegrityError:
            # Another process revoked the same credential between our check and our insert:
            # run again, and the check now answers Conflict.
            return self.db.run(run)

    def revocation_list(self, terminal_id, since=None):
        return self.revocation_list_versioned(terminal_id, since)[0]

    def revocation_list_versioned(self, terminal_id, since=None):
        """(signed revocation list, its version) for `terminal_id`."""
        def run(s):
            now = int(self.clock())
            p = list_payload(s, terminal_id, since, now)
            return signed.sign(p, [signing_key(self.keys, now)]), p["version"]
        return self.db.run(run, write=False)

    def ticket_status(self, jti, terminal_id=None):
        def run(s):
            now = int(self.clock())
            return ticket_status(s, signing_key(self.keys, now), jti, now, terminal_id)
        return self.db.run(run, write=False)

    def versions(self, terminal_ids):
        return self.db.run(versions, terminal_ids, write=False)


class _Issuing:
    """Stands for the authorizer that issued a credential when the operator revokes it."""
    __slots__ = ("authorizer_id",)

    def __init__(self, authorizer_id):
        self.authorizer_id = authorizer_id
