"""A Ticket_Issuer / Descriptor_Issuer / revocation service on a fresh database, and a real
terminal store that trusts the service's issuer key (tests of issuance, revocations, HTTP)."""

import os

import pytest

from capwarden.credentials import Terminal
from capwarden.credentials.ids import new_fay_id
from capwarden.trust import db as trustdb
from capwarden.trust import issuance, servicekeys
from capwarden.trust.revocations import RevocationService

# For a test of something no database takes part in (request checks, signatures, the error
# shape): one backend is enough; everything touching transactions, concurrency or SQL runs on both.
SQLITE_ONLY = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

NOW = 1_790_000_000          # a fixed "now": decisions never read the wall clock here
HOUR = 3600


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


def policy(fays=("*",), terminals=("*",), grants=(("**", ("read", "write", "execute", "configure")),),
           max_validity_s=7 * 86400):
    return {"fay_ids": list(fays), "terminal_ids": list(terminals),
            "grants": [{"resource_pattern": p, "modes": list(m)} for p, m in grants],
            "max_validity_s": max_validity_s}


class Rig:
    def __init__(self, folder, db_url):
        self.clock = Clock()
        self.db = trustdb.open_db(db_url)
        self.db.migrate()
        self.ring = servicekeys.KeyRing.init(os.path.join(folder, "keys"), "issuer:rig", now=NOW - HOUR)
        self.terminal = Terminal.init(os.path.join(folder, "store"), now=NOW)
        for vk in self.ring.verification_keys():
            self.terminal.import_key(vk)
        self.tid = self.terminal.terminal_id
        self.fay = new_fay_id()
        self.issuer = issuance.Issuer(self.db, self.ring, clock=self.clock)
        self.revocations = RevocationService(self.db, self.ring, clock=self.clock)
        self.aid, self.token = issuance.add_authorizer(self.db, "alice", policy(), now=NOW)

    def grants(self, path="sim/camera", modes=("read",), tid=None):
        return [{"resource_pattern": (tid or self.tid) + "/" + path, "modes": list(modes)}]

    def ticket_body(self, **kw):
        body = {"fay_id": self.fay, "terminal_id": self.tid, "grants": self.grants(), "valid_for_s": HOUR}
        body.update(kw)
        return body

    def descriptor_body(self, **kw):
        body = {"fay_id": self.fay, "terminal_id": self.tid, "grants": self.grants(), "not_after": NOW + 86400}
        body.update(kw)
        return body

    def ticket(self, token=None, **kw):
        return self.issuer.issue_ticket(self.token if token is None else token, self.ticket_body(**kw))

    def descriptor(self, token=None, **kw):
        return self.issuer.issue_descriptor(self.token if token is None else token, self.descriptor_body(**kw))

    def authorizer(self, name, **kw):
        return issuance.add_authorizer(self.db, name, policy(**kw), now=NOW)[1]

    def check_ticket(self, jws, path="sim/camera", mode="read", now=None):
        return self.terminal.validator.check_ticket(jws, self.fay, self.tid + "/" + path, mode,
                                                    now or self.clock.now)

    def check_descriptor(self, raw, path="sim/camera", mode="read", now=None):
        return self.terminal.validator.check_descriptor(raw, self.fay, self.tid + "/" + path, mode,
                                                        now or self.clock.now)


@pytest.fixture
def rig(tmp_path, db_url):
    r = Rig(str(tmp_path), db_url)
    try:
        yield r
    finally:
        r.db.dispose()
