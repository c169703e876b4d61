"""An engine over a store with a ticket issuer, a fake board and injected clocks, for the tests of
automatic conversion (tests/credentials/test_conversion_auto.py) and of dual credentials
(tests/engine/test_dual_credentials.py)."""

import asyncio
import os

from capwarden.credentials import Terminal
from capwarden.credentials.ids import new_fay_id
from capwarden.credentials.issue import SigningKey, descriptor_payload, sign_descriptor, sign_ticket, ticket_claims
from capwarden.engine import protocol
from capwarden.engine.audit import AuditLog
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.engine.conversion import Converter
from capwarden.engine.engine import Engine
from capwarden.engine.liveness import LivenessPolicy
from capwarden.link.types import BoardInfo, Grant, ResourceInfo

NOW = 1_790_000_000
HOUR = 3600


class Board:
    """The engine's Board interface with no table: every acquire is granted."""

    def __init__(self):
        self.info = BoardInfo("sim", "0.1.0", 1, 1, 256, 0, [ResourceInfo(0, "gps", "gps", ["read"], "present")])
        self.epoch = 0
        self.up = True

    def subscribe(self, cb):
        pass

    async def acquire(self, res, modes, session, lease_ms, wait_ms=0):
        self.epoch += 1
        return Grant(res, modes, session, self.epoch, lease_ms)

    async def release(self, res, session, epoch):
        pass

    async def suspend(self, session, on):
        pass

    async def heartbeat(self, seq):
        return {"hb_seq": seq, "grants": 0, "failsafes": 0}

    async def end_session(self, session):
        return 0

    async def grants(self, res):
        return []


class Rig:
    def __init__(self, folder, converter=None):
        self.store = os.path.join(folder, "store")
        self.t = Terminal.init(self.store, now=NOW)
        self.tid = self.t.terminal_id
        self.tix = SigningKey.generate("ed25519", "tix-1", "tickets:acme")
        self.acme = SigningKey.generate("ed25519", "acme-1", "issuer:acme")
        for k in (self.tix, self.acme):
            self.t.import_key(k.public_json(valid_from=NOW - 86400))
        self.fay = new_fay_id()
        self.wall = NOW
        self.mono = 1000.0
        self.audit = AuditLog(None)
        self.entries = []
        record = self.audit.record

        def kept(*a, **kw):
            e = record(*a, **kw)
            self.entries.append(e)
            return e

        self.audit.record = kept
        self.engine = Engine(StoreAuthorizer(self.store, leeway=0), {"sim": Board()}, self.audit,
                             liveness=LivenessPolicy(default=(1000, 5000)), clock=lambda: self.mono,
                             wall=lambda: self.wall, conversion=converter)
        self.pushes = []
        self.engine.add_runtime("rtA")
        self.engine.connected("rtA", self._send)

    async def _send(self, msg):
        self.pushes.append(msg)

    @property
    def authorizer(self):
        return self.engine.authorizer

    def res(self, name="gps"):
        return self.tid + "/sim/" + name

    def grants(self, name="gps", modes=("read",)):
        return [{"resource_pattern": self.res(name), "modes": list(modes)}]

    def ticket(self, seconds=2 * HOUR, **kw):
        kw.setdefault("grants", self.grants())
        claims = ticket_claims(self.fay, self.tid, kw.pop("grants"), "tickets:acme", self.wall - 60,
                               self.wall + seconds, **kw)
        return sign_ticket(self.tix, claims), claims["jti"]

    def descriptor(self, seconds=2 * HOUR):
        data = sign_descriptor(self.acme, descriptor_payload(self.fay, self.tid, self.grants(), "issuer:acme",
                                                             self.wall - 60, self.wall + seconds))
        return self.t.import_descriptor(data, self.wall)

    async def ask(self, credential, name="gps", mode="read"):
        """The AuthResult body of an AuthRequest by rtA for the rig's Fay."""
        msg = protocol.make("AuthRequest", {"fay_id": self.fay, "resource_id": self.res(name), "access_mode": mode,
                                            "credential": credential}, "rtA")
        r = await self.engine.handle("rtA", msg)
        assert r["message_type"] == "AuthResult", r
        return r["body"]

    def actions(self, action):
        return [e for e in self.entries if e["action"] == action]


def ticket_cred(token):
    return {"type": "ticket", "ticket": token}


def descriptor_cred(did):
    return {"type": "descriptor_ref", "descriptor_id": did}


async def settle(n=5):
    """Let the pushes the engine scheduled reach the rig."""
    for _ in range(n):
        await asyncio.sleep(0)


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


__all__ = ["Rig", "Converter", "NOW", "HOUR", "ticket_cred", "descriptor_cred", "run", "settle"]
