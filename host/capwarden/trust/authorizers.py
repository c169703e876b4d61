"""Authorizers: who may ask the issuers for credentials, each within its policy (policy.Policy).

An authorizer is a name, a policy and a bearer token (32 random bytes, shown once at creation);
only the token's SHA-256 is stored. A suspended authorizer's token is refused (403) until it is
made active again. The operator's command line calls add_authorizer, list_authorizers and
set_authorizer_status; the service calls authenticate on every authorizer request.
"""

import hashlib
import json
import secrets
import time

import sqlalchemy as sa

from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.trust.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from capwarden.trust.models import ACTIVE, SUSPENDED, Authorizer
from capwarden.trust.policy import Policy

TOKEN_BYTES = 32
MAX_NAME = 128


def now_s(clock=time.time):
    return int(clock())


def hash_token(token):
    """SHA-256 of a bearer token: tokens are 32 random bytes, so a slow hash buys nothing."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def add_authorizer(db, name, policy, now=None):
    """Create authorizer `name` with `policy` (its JSON form). Returns (authorizer_id, token);
    the token is shown once and only its hash is stored. Raises InvalidRequest, Conflict."""
    if type(name) is not str or not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidRequest("an authorizer name is 1..%d printable characters" % MAX_NAME)
    pol = Policy.from_json(policy)
    token = b64u_encode(secrets.token_bytes(TOKEN_BYTES))
    aid = uuid_text(new_uuid7())

    def add(s):
        if s.scalar(sa.select(Authorizer.authorizer_id).where(Authorizer.name == name)) is not None:
            raise Conflict("an authorizer named %r exists already" % name)
        s.add(Authorizer(authorizer_id=aid, name=name, token_sha256=hash_token(token),
                         policy=json.dumps(pol.to_json()), status=ACTIVE,
                         created_at=now_s() if now is None else now))
    db.run(add)
    return aid, token


def list_authorizers(db):
    """Every authorizer as {"authorizer_id", "name", "status", "created_at", "policy"} (no token)."""
    def read(s):
        return [_authorizer_json(a) for a in s.scalars(sa.select(Authorizer).order_by(Authorizer.created_at,
                                                                                       Authorizer.name))]
    return db.run(read, write=False)


def set_authorizer_status(db, name, status):
    """Suspend (status "suspended") or reactivate ("active") the authorizer named `name` (or
    with that id). A suspended authorizer's token is refused. Raises NotFound, InvalidRequest."""
    if status not in (ACTIVE, SUSPENDED):
        raise InvalidRequest("an authorizer's status is %s or %s" % (ACTIVE, SUSPENDED))

    def change(s):
        a = s.scalar(sa.select(Authorizer).where(sa.or_(Authorizer.name == name, Authorizer.authorizer_id == name)))
        if a is None:
            raise NotFound("no authorizer %r" % name)
        a.status = status
        return _authorizer_json(a)
    return db.run(change)


def suspend_authorizer(db, name):
    return set_authorizer_status(db, name, SUSPENDED)


def authenticate(session, token):
    """The active Authorizer holding bearer `token`. Raises Unauthenticated (unknown token) or
    Forbidden (a suspended authorizer)."""
    if type(token) is not str or not token:
        raise Unauthenticated("an authorizer token is needed")
    a = session.scalar(sa.select(Authorizer).where(Authorizer.token_sha256 == hash_token(token)))
    if a is None:
        raise Unauthenticated("unknown token")
    if a.status != ACTIVE:
        raise Forbidden("authorizer %s is suspended" % a.name)
    return a


def _authorizer_json(a):
    return {"authorizer_id": a.authorizer_id, "name": a.name, "status": a.status, "created_at": a.created_at,
            "policy": json.loads(a.policy)}
