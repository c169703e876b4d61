"""Shared set-up of the Registration_Authority tests (test_registry, test_keysets,
test_registry_http): a migrated database on the `db_url` backend, a key ring, key set 1, an
injected clock, and terminals that enroll and register the way the client does. The fixtures
`clock` and `ra` are imported by those modules."""

import pytest

from capwarden.credentials import keys
from capwarden.trust import keysets
from capwarden.trust.db import open_db
from capwarden.trust.registry import RegistrationAuthority
from capwarden.trust.servicekeys import KeyRing

T0 = 1_900_000_000
ISSUER = "issuer:fleet"


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s
        return self.t


def make_ra(db_url, folder, clock=None):
    """A RegistrationAuthority on a fresh schema with key set 1 published. Dispose ra.db."""
    clock = clock or Clock()
    db = open_db(db_url)
    db.migrate()
    ring = KeyRing.init(str(folder / "keys"), ISSUER, now=int(clock()))
    ra = RegistrationAuthority(db, ring, clock=clock)
    assert ra.init_keysets() == 1
    return ra


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ra(db_url, tmp_path, clock):
    """A RegistrationAuthority on the test's backend (tests/trust/conftest.py db_url)."""
    ra = make_ra(db_url, tmp_path, clock)
    yield ra
    ra.db.dispose()


def device():
    return keys.PrivateKey.generate(keys.ED25519)


def registration_body(secret, dev, terminal_id=None, proof_key=None, proof_id=None):
    body = {"enrollment_secret": secret, "device_key": keysets.device_key_json(dev),
            "proof": keysets.sign_proof(proof_key or dev, secret, terminal_id if proof_id is None else proof_id)}
    if terminal_id is not None:
        body["terminal_id"] = terminal_id
    return body


def register(ra, terminal_id=None, group=None):
    """(terminal_id, token, device key, enrollment bundle) of a newly registered terminal."""
    bundle = ra.enroll(terminal_id=terminal_id, group=group)
    dev = device()
    out = ra.register(registration_body(bundle["enrollment_secret"], dev))
    return out["terminal_id"], out["token"], dev, bundle


def walk_and_ack(ra, terminal_id, token, dev, current, upto=None, start=None):
    """Walk the key sets from `current` (payload, or an anchor for version `start`, default 1)
    to `upto` (default latest) one at a time as a terminal does, acknowledging each; returns
    the last payload."""
    t = ra.authenticate(token)
    if start is None:
        start = current["version"] + 1 if isinstance(current, dict) else 1
    for v in range(start, (upto or ra.latest()) + 1):
        doc = ra.keyset(v)
        current = keysets.verify_next(current, doc)
        ra.ack(t, v, keysets.build_ack(dev, terminal_id, doc))
    return current
