"""The console's web app (Starlette): pages, the JSON API and the live stream.

Routes (all but the login page, its script and the login itself need a session):

    GET  /                      the console page (a visitor without a session: 303 to /login)
    GET  /login                 the login page
    GET  /static/NAME           the pages' CSS and scripts (package data, no build step)
    POST /api/login             {"name", "password"} -> a new session cookie
    POST /api/logout            ends the session
    GET  /api/me                {"operator", "csrf"}: the page's CSRF token
    GET  /api/state             every board and resource, pending decisions, the audit tail
    GET  /api/events            the same, live (Server-Sent Events: one `state` event per change)
    POST /api/decisions/resolve {"decision_id", "approve"}
    POST /api/resources/take    {"resource_id"}
    POST /api/resources/hand_back {"resource_id", "fay_id"}
    POST /api/resources/release {"resource_id"}
    POST /api/resources/act     {"resource_id", "op" (0..255), "args" (hex)}: one driver operation
                                under the operator's own grant; answers {"data": hex}

The checks on each request and the headers of every answer are guards.py's; the session
cookie and the CSRF token (the session's, in the X-CSRF-Token header of every POST but the
login) are checked here.
"""

import asyncio
import json
import logging
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from capwarden.engine.console.audittail import AuditTail
from capwarden.engine.console.guards import Guard, Refused
from capwarden.engine.console.logins import FailedLogins, LoginSessions, csrf_ok
from capwarden.errors import CapError, CapwardenError, StoreError
from capwarden.logfmt import kv

log = logging.getLogger("capwarden.console")

KEEPALIVE_S = 15.0        # a comment line on an idle stream, so proxies and browsers keep it
AUDIT_POLL_S = 0.25       # how often the audit log is looked at for new lines
MAX_STREAMS = 32          # live streams at once (each costs a snapshot per change)
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
          "login.js": "text/javascript; charset=utf-8"}
PAGES = ("console.html", "login.html")



def _files():
    """The pages, read once. Raises CapwardenError when the installation lacks them."""
    folder = resources.files("capwarden.engine.console") / "static"
    try:
        return {name: (folder / name).read_bytes() for name in tuple(STATIC) + PAGES}
    except OSError as exc:
        raise CapwardenError("the console's pages are missing from this installation (%s: %s): reinstall "
                             "capwarden" % (folder, exc.strerror or exc)) from None


class ConsoleWeb:
    """`sources` is a sources.ConsoleSources (or anything with its methods): the engine side."""

    def __init__(self, sources, audit_path=None, clock=time.monotonic, sessions=None, failures=None):
        self.sources = sources
        self.sessions = sessions or LoginSessions(clock=clock)
        self.failures = failures or FailedLogins(clock=clock)
        self.audit_tail = AuditTail(audit_path)
        self.files = _files()
        self.guard = Guard()
        self._waiters = set()
        self._closing = False
        self._poller = None
        self.version = 0          # bumped at every change: a stream sends a snapshot when it moved
        self.asgi = Starlette(routes=[
            Route("/", self.page, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/favicon.ico", self.no_icon, methods=["GET"]),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.logout, methods=["POST"]),
            Route("/api/me", self.me, methods=["GET"]),
            Route("/api/state", self.state, methods=["GET"]),
            Route("/api/events", self.events, methods=["GET"]),
            Route("/api/decisions/resolve", self.resolve, methods=["POST"]),
            Route("/api/resources/take", self.take, methods=["POST"]),
            Route("/api/resources/hand_back", self.hand_back, methods=["POST"]),
            Route("/api/resources/release", self.release, methods=["POST"]),
            Route("/api/resources/act", self.act, methods=["POST"]),
        ])

    # ---- lifecycle --------------------------------------------------------------------------------
    def serving(self, host, port, tls):
        self.guard.serving(host, port, tls)

    @property
    def tls(self):
        return self.guard.tls

    @property
    def cookie_name(self):
        return self.guard.cookie_name

    async def start(self):
        self.audit_tail.refresh()
        self.sources.subscribe(self.changed)
        self._poller = asyncio.ensure_future(self._poll_audit())

    async def close(self):
        self._closing = True
        self.changed()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        self.sources.unsubscribe(self.changed)

    def changed(self, *_args):
        """Something the page shows changed: every live stream sends a new snapshot."""
        self.version += 1
        for ev in self._waiters:
            ev.set()

    async def _poll_audit(self):
        while True:
            await asyncio.sleep(AUDIT_POLL_S)
            try:
                if self.audit_tail.refresh():
                    self.changed()
            except Exception:       # the page must keep working; the log says why
                log.exception("%s", kv(event="console_audit_tail_failed"))

    # ---- guards -------------------------------------------------------------------------------------
    def _session(self, request):
        s = self._live(request.cookies.get(self.cookie_name), touch=True)
        if s is None:
            raise Refused(401, "log in first")
        return s

    def _live(self, sid, touch=False):
        """The session of `sid` while its operator account is unchanged (removed, or given a new
        password: its sessions end), else None."""
        s = self.sessions.get(sid) if touch else self.sessions.peek(sid)
        if s is not None and self.sources.stamp(s.operator) != s.stamp:
            self.sessions.drop(s.sid)
            return None
        return s

    def _csrf(self, request, session):
        if not csrf_ok(session, request.headers.get("x-csrf-token")):
            raise Refused(403, "missing or wrong CSRF token: reload the page")

    def _refusal(self, exc):
        return self.guard.respond(JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers))

    async def _guarded(self, request, handler, post=True, login=False):
        try:
            self.guard.check_host(request)
            if post:
                self.guard.check_post(request)
            if login:
                response = await handler(request)
            else:
                session = self._session(request)
                if post:
                    self._csrf(request, session)
                response = await handler(request, session)
            if post:
                await self.sources.durable()    # what the action recorded is on disk before it is said done
            return self.guard.respond(response)
        except StoreError as exc:
            log.error("%s", exc)
            return self._refusal(Refused(503, "the audit log cannot be written: nothing is acknowledged"))
        except Refused as exc:
            if post:
                try:
                    await self.sources.durable()    # a refusal that was audited (a failed login) too
                except StoreError as err:
                    log.error("%s", err)
                    return self._refusal(Refused(503, "the audit log cannot be written"))
            if exc.status != 401:
                log.warning("%s", kv(event="console_refused", status=exc.status, reason=exc.message,
                                     path=request.url.path[:80], peer=_peer(request)))
            return self._refusal(exc)

    # ---- pages ----------------------------------------------------------------------------------------
    def _html(self, name):
        return Response(self.files[name], media_type="text/html; charset=utf-8")

    async def page(self, request):
        try:
            self.guard.check_host(request)
            self._session(request)
        except Refused as exc:
            if exc.status == 401:
                return self.guard.respond(RedirectResponse("/login", status_code=303))
            return self._refusal(exc)
        return self.guard.respond(self._html("console.html"))

    async def login_page(self, request):
        try:
            self.guard.check_host(request)
        except Refused as exc:
            return self._refusal(exc)
        return self.guard.respond(self._html("login.html"))

    async def static(self, request):
        name = request.path_params["name"]
        try:
            self.guard.check_host(request)
        except Refused as exc:
            return self._refusal(exc)
        if name not in STATIC:
            return self.guard.respond(Response("not found\n", status_code=404, media_type="text/plain"))
        return self.guard.respond(Response(self.files[name], media_type=STATIC[name]))

    async def no_icon(self, request):
        return self.guard.respond(Response(status_code=204))

    # ---- login --------------------------------------------------------------------------------------
    async def login(self, request):
        return await self._guarded(request, self._login, login=True)

    async def _login(self, request):
        body = await self.guard.body(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or len(name) > 128 \
                or len(password) > 1024:
            raise Refused(400, "give a name and a password")
        peer = _peer(request).rpartition(":")[0] or "-"
        keys = ("account:" + name, "peer:" + peer)
        wait = self.failures.blocked_for(*keys)
        if wait > 0:
            self.sources.audit("operator_login", "deny", "rate_limited", operator=name, peer=peer)
            raise Refused(429, "too many failed logins: try again in %d s" % (int(wait) + 1),
                          {"Retry-After": str(int(wait) + 1)})
        account = await self.sources.authenticate(name, password)
        if account is None:
            self.failures.failed(*keys)
            self.sources.audit("operator_login", "deny", "bad_credentials", operator=name, peer=peer)
            raise Refused(401, "wrong name or password")
        self.failures.succeeded(keys[0])
        old = request.cookies.get(self.cookie_name)
        if old:
            self.sessions.drop(old)          # whatever id came in never becomes this login's
        operator, stamp = account
        s = self.sessions.create(operator, stamp)
        self.sources.audit("operator_login", "allow", "password", operator=operator, peer=peer)
        response = JSONResponse({"operator": operator})
        self.guard.set_cookie(response, s.sid)
        return response

    async def logout(self, request):
        return await self._guarded(request, self._logout)

    async def _logout(self, request, session):
        self.sessions.drop(session.sid)
        self.sources.audit("operator_logout", "done", "logout", operator=session.operator, peer=_peer(request))
        self.changed()                       # its live streams end now
        response = JSONResponse({"logged_out": True})
        self.guard.clear_cookie(response)
        return response

    async def me(self, request):
        return await self._guarded(request, self._me, post=False)

    async def _me(self, request, session):
        return JSONResponse({"operator": session.operator, "csrf": session.csrf, "tls": self.tls})

    # ---- state ----------------------------------------------------------------------------------------
    def snapshot(self, session):
        snap = self.sources.snapshot()
        for b in snap["boards"]:
            for r in b["resources"]:
                if not r.get("last_fay") and r["resource_id"] in self.audit_tail.taken_from:
                    r["last_fay"] = self.audit_tail.taken_from[r["resource_id"]][0]
        snap["operator"] = session.operator
        snap["audit"] = self.audit_tail.state()
        snap["version"] = self.version
        return snap

    async def state(self, request):
        return await self._guarded(request, self._state, post=False)

    async def _state(self, request, session):
        return JSONResponse(self.snapshot(session))

    async def events(self, request):
        return await self._guarded(request, self._events, post=False)

    async def _events(self, request, session):
        if len(self._waiters) >= MAX_STREAMS:
            raise Refused(503, "too many live consoles open")
        wake = asyncio.Event()
        self._waiters.add(wake)
        sid = session.sid

        async def stream():
            try:
                yield b"retry: 1000\n\n"
                while not self._closing:
                    s = self._live(sid)                 # watching is not activity: idle logout still applies
                    if s is None:
                        yield b"event: logged_out\ndata: {}\n\n"
                        return
                    wake.clear()
                    data = json.dumps(self.snapshot(s), separators=(",", ":"))
                    yield ("event: state\ndata: %s\n\n" % data).encode()
                    try:
                        await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield b": keepalive\n\n"
            finally:
                self._waiters.discard(wake)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    # ---- actions --------------------------------------------------------------------------------------
    async def _act(self, coro):
        try:
            result = await coro
        except StoreError:                  # not recorded, so not done: 503 (_guarded)
            raise
        except CapError as exc:             # the engine refused: its S2 code and message
            raise Refused(409, exc.message, code=exc.code) from None
        except CapwardenError as exc:       # a decision already closed, the audit log unwritable
            raise Refused(409, str(exc)) from None
        self.changed()
        return JSONResponse({"done": True, "result": result if _jsonable(result) else None})

    def _text(self, body, key, limit=300):
        v = body.get(key)
        if not isinstance(v, str) or not v or len(v) > limit:
            raise Refused(400, "give %s" % key)
        return v

    async def resolve(self, request):
        return await self._guarded(request, self._resolve)

    async def _resolve(self, request, session):
        body = await self.guard.body(request)
        did = self._text(body, "decision_id")
        if not isinstance(body.get("approve"), bool):
            raise Refused(400, "give approve: true or false")
        return await self._act(self.sources.resolve(did, body["approve"], session.operator))

    async def take(self, request):
        return await self._guarded(request, self._take)

    async def _take(self, request, session):
        body = await self.guard.body(request)
        return await self._act(self.sources.take(self._text(body, "resource_id"), session.operator))

    async def hand_back(self, request):
        return await self._guarded(request, self._hand_back)

    async def _hand_back(self, request, session):
        body = await self.guard.body(request)
        return await self._act(self.sources.hand_back(self._text(body, "resource_id"),
                                                                  self._text(body, "fay_id"), session.operator))

    async def release(self, request):
        return await self._guarded(request, self._release)

    async def _release(self, request, session):
        body = await self.guard.body(request)
        return await self._act(self.sources.release(self._text(body, "resource_id"), session.operator))

    async def act(self, request):
        return await self._guarded(request, self._act_on)

    async def _act_on(self, request, session):
        body = await self.guard.body(request)
        op, args = body.get("op"), body.get("args", "")
        if type(op) is not int or not 0 <= op <= 255:
            raise Refused(400, "give op: an integer 0..255")
        if not isinstance(args, str):            # its size: the engine's to refuse (E_MALFORMED_REQUEST)
            raise Refused(400, "give args as hex")
        try:
            data = bytes.fromhex(args)
        except ValueError:
            raise Refused(400, "args is hex (e.g. 6400)") from None
        return await self._act(self.sources.act(self._text(body, "resource_id"), op, data, session.operator))


def _peer(request):
    c = request.client
    return "%s:%s" % (c.host, c.port) if c else "-"


def _jsonable(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False
