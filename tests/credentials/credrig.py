import os

import pytest

from capwarden.credentials import Terminal
from capwarden.credentials.ids import new_fay_id
from capwarden.credentials.issue import (SigningKey, descriptor_payload, sign_descriptor, sign_ticket,
                                         ticket_claims)

NOW = 1_790_000_000  # a fixed "now": tests never read the wall clock for decisions


class World:
    """A terminal with an Ed25519 descriptor issuer and a P-256 ticket issuer, keys imported."""

    def __init__(self, folder):
        self.t = Terminal.init(os.path.join(folder, "store"), now=NOW)
        self.tid = self.t.terminal_id
        self.fay = new_fay_id()
        self.ed = SigningKey.generate("ed25519", "acme-ed-1", "issuer:acme")
        self.p256 = SigningKey.generate("ecdsa-p256-sha256", "acme-p256-1", "issuer:acme")
        self.tix = SigningKey.generate("ecdsa-p256-sha256", "tix-1", "tickets:acme")
        self.tix_ed = SigningKey.generate("ed25519", "tix-ed-1", "tickets:acme")
        for k in (self.ed, self.p256, self.tix, self.tix_ed):
            self.t.import_key(k.public_json(valid_from=NOW - 365 * 86400))

    def res(self, path="sim/camera"):
        return self.tid + "/" + path

    def grants(self, pattern="sim/camera", modes=("read", "execute")):
        return [{"resource_pattern": self.tid + "/" + pattern, "modes": list(modes)}]

    def payload(self, **kw):
        kw.setdefault("fay", self.fay)
        kw.setdefault("terminal", self.tid)
        kw.setdefault("grants", self.grants())
        kw.setdefault("issuer_id", "issuer:acme")
        kw.setdefault("not_before", NOW - 60)
        kw.setdefault("not_after", NOW + 86400)
        return descriptor_payload(**kw)

    def descriptor(self, key=None, **kw):
        return sign_descriptor(key or self.ed, self.payload(**kw))

    def claims(self, **kw):
        kw.setdefault("fay", self.fay)
        kw.setdefault("terminal", self.tid)
        kw.setdefault("grants", self.grants())
        kw.setdefault("issuer_id", "tickets:acme")
        kw.setdefault("nbf", NOW - 60)
        kw.setdefault("exp", NOW + 3600)
        return ticket_claims(**kw)

    def ticket(self, key=None, **kw):
        return sign_ticket(key or self.tix, self.claims(**kw))

    def check_d(self, data, mode="read", resource=None, fay=None, now=NOW):
        return self.t.validator.check_descriptor(data, fay or self.fay, resource or self.res(), mode, now)

    def check_t(self, token, mode="read", resource=None, fay=None, now=NOW):
        return self.t.validator.check_ticket(token, fay or self.fay, resource or self.res(), mode, now)


@pytest.fixture
def w(tmp_path):
    return World(str(tmp_path))
