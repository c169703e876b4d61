"""The demo's trust service (issues 13 and 14): `capwarden trust init` and `trust serve` in this
process, on SQLite in the demo's folder, over plain HTTP on loopback, with no broker (the
terminal polls). The engine registers with it (STORE/trust/enrollment.json, as `capwarden
trust terminal enroll` hands out), fetches and acknowledges its key sets and follows its
revocation list; an authorizer asks the Ticket_Issuer for tickets over HTTP.
"""

import asyncio
import importlib.util
import os
import time

ISSUER = "issuer:fleet"
AUTHORIZER = "mission-planner"
# The engine polls every 0.5 to 1 s here (the default is 5 to 30 s, jittered: docs/deployment.md).
POLL_S = (0.5, 1.0)


def missing():
    """The modules the service needs that this install lacks (the 'trust' extra)."""
    return [m for m in ("fastapi", "uvicorn", "sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]


class DemoTrustService:
    def __init__(self, folder):
        self.data = os.path.join(folder, "trust-service")
        self.url = None
        self.issuer_id = ISSUER
        self._server = None
        self._sock = None
        self._http = None
        self.token = None
        self.app = None

    async def start(self, terminal_id):
        """Initialise the data folder (keys, database, key set 1, one authorizer), serve it on
        127.0.0.1 (a free port) and enroll `terminal_id`. Returns the enrollment document."""
        import httpx

        from capwarden.asgiloop import LoopServer
        from capwarden.cli.trust_serve import _listen_socket
        from capwarden.trust import authorizers, registry, servicekeys
        from capwarden.trust.config import ServiceConfig
        from capwarden.trust.service import create_app

        ring = servicekeys.KeyRing.init(servicekeys.ring_folder(self.data), ISSUER)
        config = ServiceConfig.from_data_dir(self.data)
        self.app = create_app(config)                       # migrates trust.db (SQLite, WAL)
        db = self.app.state.db
        ra = registry.RegistrationAuthority(db, ring)
        self.keyset = ra.init_keysets()
        # The authorizer may issue to any Fay on any terminal, what the demo's Fays do, 3 h at most.
        policy = {"fay_ids": ["*"], "terminal_ids": ["*"], "max_validity_s": 3 * 3600,
                  "grants": [{"resource_pattern": "sim/*", "modes": ["read", "write", "execute"]}]}
        _aid, self.token = authorizers.add_authorizer(db, AUTHORIZER, policy)
        enrollment = ra.enroll(terminal_id=terminal_id)
        self._sock = _listen_socket("127.0.0.1", 0)
        port = self._sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % port
        # On this loop, without uvicorn's signal handlers (the demo's Ctrl-C stays asyncio's) and
        # without the app's lifespan task: its work (the publisher, here none; the database's
        # disposal) is done by stop(), so an interrupted start leaves no task to cancel.
        self._server = await LoopServer(self.app, self._sock).start()
        self._sock = None                   # the LoopServer's to close now
        self._http = httpx.AsyncClient(base_url=self.url, timeout=10, trust_env=False,
                                       headers={"Authorization": "Bearer " + self.token})
        return enrollment

    async def _post(self, path, body):
        import httpx

        try:
            r = await self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise OSError("the trust service did not answer %s: %s" % (path, exc or exc.__class__.__name__)) from None
        if r.status_code != 200:
            raise ValueError("the trust service answered %s %d: %s" % (path, r.status_code, r.text[:200]))
        return r.json()

    async def ticket(self, fay_id, resource_id, modes, valid_for_s):
        """(jti, JWS): a ticket from the Ticket_Issuer, asked over HTTP with the authorizer's token."""
        tid = resource_id.split("/", 1)[0]
        out = await self._post("/v1/tickets", {"fay_id": fay_id, "terminal_id": tid, "valid_for_s": valid_for_s,
                                               "grants": [{"resource_pattern": resource_id, "modes": list(modes)}]})
        return out["jti"], out["ticket"]

    async def revoke(self, target_id, reason="no_longer_needed"):
        """The authorizer revokes what it issued: {terminal_id: revocation list version}."""
        return (await self._post("/v1/revocations", {"target_id": target_id, "reason": reason}))["versions"]

    async def stop(self):
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        if self._sock is not None:          # bound, never served
            self._sock.close()
            self._sock = None
        app, self.app = self.app, None
        if app is not None:
            app.state.db.dispose()


def write_enrollment(store, enrollment):
    """Where the engine finds its enrollment (owner-only: it holds the one-time secret)."""
    from capwarden.credentials.store import write_json
    from capwarden.engine import online

    folder = os.path.join(store, online.TRUST_DIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    write_json(os.path.join(folder, online.ENROLLMENT), enrollment, mode=0o600)


def settings(url):
    """The engine's "trust" section for the demo: this service, polling fast, no broker."""
    from capwarden.engine import online

    return online.Settings(url=url, poll_min_s=POLL_S[0], poll_max_s=POLL_S[1], retry_s=0.5, tick_s=0.1)


async def wait_for(what, cond, timeout=20.0):
    """Until cond() is true (checked every 50 ms); ValueError naming `what` after `timeout` s."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise ValueError("%s did not happen within %d s" % (what, timeout))
        await asyncio.sleep(0.05)


def describe(link):
    st = link.status()
    return "terminal %s, key set %s acknowledged, revocation list version %s, mode %s" % (
        st["terminal_id"], st["keyset_acked"], st["revocations_version"], st["mode"])



async def ticket_story(trust, app, rt, fay, resource_id, sessions):
    """The authorizer gets a ticket over HTTP, the Fay holds `resource_id` on it, the authorizer
    revokes it at the service, and the engine ends the session once its poll brings the list."""
    from capwarden.cli.demo import say

    jti, jws = await trust.ticket(fay, resource_id, ["read"], 600)
    name = resource_id.rsplit("/", 1)[-1]
    say("%s asks POST %s/v1/tickets for the iFay (%s read, 10 min): ticket %s" % (
        demo_name(), trust.url, name, jti))
    s = await rt.acquire(fay, resource_id, "read", {"type": "ticket", "ticket": jws})
    sessions.append(s)
    data = await s.command(1)
    say("the engine checks it against the key set it acknowledged: granted, session %s reads %d bytes of %s"
        % (s.session_id[:13], len(data), name))
    held = app.online.status()["revocations_version"] or 0
    t0 = time.monotonic()
    versions = await trust.revoke(jti)
    say("the authorizer revokes the ticket at the service: revocation list version %d for this terminal"
        % versions[app.engine.terminal_id])
    reason = await asyncio.wait_for(s.ended(), 20)
    say("%.1f s later (next poll, no broker) the engine holds list version %d and ends the session: %s (%s)" % (
        time.monotonic() - t0, app.online.status()["revocations_version"], s.state, reason))
    if app.online.status()["revocations_version"] <= held:
        raise ValueError("the session ended before the revocation list arrived")


def demo_name():
    return "the authorizer %r" % AUTHORIZER


async def offline_story(trust, app, rt, fay, resource_id, sessions):
    """Section 4.5: the network goes down (the file a network manager's hook creates), the
    terminal degrades; a new ticket is refused, the Fay goes on with the terminal's conversion
    of its ticket (SDK dual credentials); its ticket is revoked at the service meanwhile; the
    network comes back, and recovery ends that session (revocations first) before going online."""
    from capwarden.cli.demo import say
    from capwarden.engine import online
    from capwarden.errors import CapError
    from capwarden.sdk.dual import DualCredential

    name = resource_id.rsplit("/", 1)[-1]
    link = app.online
    jti, jws = await trust.ticket(fay, resource_id, ["write"], 2 * 3600)
    cred = DualCredential(ticket=jws)
    s = await rt.acquire_dual(fay, resource_id, "write", cred)
    await wait_for("the ticket's conversion", lambda: jti in app.engine.conversion.done)
    say("a 2 h ticket for %s: granted online, and converted at once to a local descriptor of id %s "
        "(its expiry is more than an hour away)" % (name, jti[:13]))
    await s.release()
    down = link.network_file
    with open(down, "w"):
        pass
    try:
        await wait_for("the terminal's degradation", lambda: link.mode == online.DEGRADED)
        await wait_for("the mode notice", lambda: rt.terminal_mode == online.DEGRADED)
        say("the network is reported down (%s exists): the terminal is %s, and the runtime is told "
            "(SessionStateChanged terminal_mode=%s)" % (os.path.basename(down), link.mode, rt.terminal_mode))
        _jti2, jws2 = await trust.ticket(fay, resource_id, ["write"], 600)
        try:
            await rt.acquire(fay, resource_id, "write", {"type": "ticket", "ticket": jws2})
            raise ValueError("a new ticket was accepted while degraded")
        except CapError as exc:
            say("a new ticket is refused: %s" % exc.code)
        off = await rt.acquire_dual(fay, resource_id, "write", cred)
        sessions.append(off)
        await off.command(1, b"\x01")
        say("the iFay goes on offline with the converted credential (descriptor_ref %s): session %s"
            % (jti[:13], off.session_id[:13]))
        await trust.revoke(jti, "compromised")
        say("meanwhile the authorizer revokes the ticket at the service; the terminal cannot hear it: "
            "the session is %s" % off.state)
    finally:
        os.unlink(down)
    t0 = time.monotonic()
    reason = await asyncio.wait_for(off.ended(), 20)
    await wait_for("the terminal back online", lambda: link.mode == online.ONLINE)
    say("the network is back: recovery fetches the revocations first; %.1f s later the offline session "
        "ends (%s), then tickets are accepted again: the terminal is %s" % (time.monotonic() - t0, reason, link.mode))
