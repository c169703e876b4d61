"""The engine online (issue 14): the REAL trust service (create_app on SQLite, in process)
behind a switchable transport, and an engine on the virtual board whose TrustLink uses it.

- TrustService(folder): `capwarden trust`'s service as an operator runs it (key ring, key set
  1, an authorizer), reached through `Line`: a transport that can be cut (connection refused:
  the service is unreachable) or made to hang (a paused process: every request times out).
- OnlineWorld: an enginerig World (store, descriptors) enrolled at the service, with an
  in-process engine (EngineApp, virtual board) and a TrustLink driven by the test with an
  injected clock (link.step(); no background task unless the test starts one).
"""

import asyncio
import json
import os
import time

import httpx

from capwarden.credentials.ids import new_fay_id
from capwarden.engine import online
from capwarden.engine.revquery import Policy
from capwarden.trust import authorizers, registry, servicekeys
from capwarden.trust.config import ServiceConfig
from capwarden.trust.service import create_app

BASE = "http://127.0.0.1:9"
ISSUER = "issuer:fleet"
POLICY = {"fay_ids": ["*"], "terminal_ids": ["*"],
          "grants": [{"resource_pattern": "**", "modes": ["read", "write", "execute", "configure"]}],
          "max_validity_s": 7 * 86400}


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s
        return self.t


class Line:
    """The transport between terminal and service. `down`: connection refused; `hang`: the
    request waits until `release()` (a paused service); `calls`: paths asked, in order."""

    def __init__(self, asgi):
        self.asgi = asgi
        self.down = False
        self.hang = False
        self.calls = []
        self._released = asyncio.Event()
        self.delay = 0.0

    def release(self):
        self.hang = False
        self._released.set()
        self._released = asyncio.Event()

    async def handle(self, request):
        self.calls.append(request.url.raw_path.decode())
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.hang:
            await self._released.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        resp = await self.asgi.handle_async_request(request)
        content = await resp.aread()
        return httpx.Response(resp.status_code, content=content, headers=resp.headers)


class TrustService:
    """The real trust service (SQLite) in process, driven as an operator would."""

    def __init__(self, folder, publisher=None):
        data = os.path.join(folder, "service")
        self.ring = servicekeys.KeyRing.init(servicekeys.ring_folder(data), ISSUER)
        self.config = ServiceConfig.from_data_dir(data)
        self.config.publisher = publisher
        self.app = create_app(self.config)
        self.ra = registry.RegistrationAuthority(self.app.state.db, self.config.keys)
        self.ra.init_keysets()
        _aid, self.token = authorizers.add_authorizer(self.app.state.db, "ops", POLICY)
        self.asgi = httpx.ASGITransport(app=self.app)
        self.line = Line(self.asgi)
        self.http = httpx.AsyncClient(transport=self.asgi, base_url=BASE)

    def terminal_http(self):
        return httpx.AsyncClient(transport=httpx.MockTransport(self.line.handle))

    async def _post(self, path, body):
        r = await self.http.post(path, json=body, headers={"Authorization": "Bearer " + self.token})
        assert r.status_code == 200, r.text
        return r.json()

    async def ticket(self, tid, fay, resource="sim/camera", modes=("read",), valid_for=3600, **extra):
        """(jti, JWS) of a ticket for `fay` on resource TERMINAL/`resource` (`extra`: more
        request fields, e.g. convertible=True)."""
        out = await self._post("/v1/tickets", dict({"fay_id": fay, "terminal_id": tid, "valid_for_s": valid_for,
                                                    "grants": [{"resource_pattern": "%s/%s" % (tid, resource),
                                                                "modes": list(modes)}]}, **extra))
        return out["jti"], out["ticket"]

    async def revoke(self, target):
        return (await self._post("/v1/revocations", {"target_id": target}))["versions"]

    def rotate_issuer(self):
        """A new issuer key in force now; returns (new key id, key-set version)."""
        out = self.ra.rotate(servicekeys.ISSUER, effective_at=int(time.time()))
        return out["key_id"], out["version"]

    def retire(self, kid, force=False):
        return self.ra.retire(kid, force=force)

    def acked(self, tid):
        return self.ra.terminal_info(tid)["key_set_acked"]


def ticket_cred(jws):
    return {"type": "ticket", "ticket": jws}


def settings(world, **kw):
    """Trust settings for `world`'s store: its state folder, the enrollment, fast retries."""
    rq = kw.pop("revocation_query", None)
    kw = dict({"retry_s": 0.05, "tick_s": 0.02, "poll_min_s": 0.2, "poll_max_s": 0.4}, **kw)
    s = online.Settings(url=BASE, state_dir=os.path.join(world.store, "trust"), **kw)
    if rq is not None:
        s = s._replace(revocation_query=Policy(**rq))
    return s


def enroll(world, svc):
    """Write the enrollment `capwarden trust terminal enroll` hands out into STORE/trust."""
    en = svc.ra.enroll(terminal_id=world.tid)
    folder = os.path.join(world.store, "trust")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(os.path.join(folder, online.ENROLLMENT), "w") as f:
        json.dump(en, f)
    return en


def new_fay():
    return new_fay_id()


async def online_engine(world, svc, in_process, clock=None, wall=None, **kw):
    """(app, link): the engine in process on the virtual board, enrolled at `svc`, and its
    TrustLink over svc.line with an injected clock, not started (the test calls link.step())."""
    enroll(world, svc)
    app = await in_process()
    opts = {"http": svc.terminal_http(), "clock": clock or FakeClock()}
    if wall is not None:
        opts["wall"] = wall
    link = online.TrustLink(app.engine, settings(world, **kw), world.store, **opts)
    app.online = link          # stopped with the app
    return app, link


def audit_entries(world, action=None):
    """The audit log's entries (of `action`), in order."""
    from capwarden.engine import auditfile

    entries, problem = auditfile.read(os.path.join(world.store, "audit.log"))
    assert problem is None, problem
    return [e for e in entries if action is None or e["action"] == action]
