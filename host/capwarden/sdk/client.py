"""The runtime SDK's client: one runtime's connection to the engine (sessions: session.py)."""

import asyncio
import inspect
import json
import logging
from collections import OrderedDict, deque

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.client import unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from capwarden import runtimeapi
from capwarden.errors import CapError, LinkClosed
from capwarden.sdk import dual
from capwarden.sdk.errors import BadEngineURL, EngineTimeout, EngineUnreachable
from capwarden.sdk.session import CHANGES_KEPT, Session, sends  # noqa: F401 (CHANGES_KEPT: read from here too)

log = logging.getLogger("capwarden.sdk")

# What a long-running client keeps for reading back: the newest pushes of the connection
# (older ones are dropped, oldest first; each session keeps its newest CHANGES_KEPT changes).
# A session itself is forgotten when it ends (terminated, released, or unknown to the engine).
PUSHES_KEPT = 256


class Client:
    """One runtime's connection to the engine. Use `connect()` to make one."""

    def __init__(self, opener, runtime_id):
        self._opener = opener
        self.runtime_id = runtime_id
        self.ws = None
        self.sessions = {}                      # live sessions only: dropped when they end
        self.pushes = deque(maxlen=PUSHES_KEPT)  # the newest pushes, for reading back
        self._pending = {}
        self._offer = None
        self._reader = None
        # Changes pushed for a session whose AuthResult has not been read yet (a push and the
        # answer travel separately, so either can come first); applied when it is.
        self._early = OrderedDict()
        self._gone = OrderedDict()    # sessions forgotten lately (bounded): their late pushes still reach them
        # The terminal's mode as the engine last told it (SessionStateChanged `terminal_mode`,
        # the mode notice): "online", "degraded", or None before any notice (sdk/dual.py).
        self.terminal_mode = None

    async def _open(self):
        self.ws = await self._opener()
        self._reader = asyncio.ensure_future(self._read(self.ws))

    async def close(self):
        """Close the connection. Sessions stay the runtime's until their heartbeats stop."""
        if self.ws is not None:
            try:
                await self.ws.close()
            except (OSError, WebSocketException):
                pass              # already gone: closed is what was asked for
        if self._reader is not None:
            self._reader.cancel()

    async def reconnect(self):
        """Open a new connection for the same runtime. Sessions belong to the runtime, so the
        engine keeps them if the runtime heartbeats within their timeout (faults.md 15).
        Raises EngineUnreachable."""
        await self.close()
        await self._open()

    def on_offer(self, callback):
        """callback(HandoverOffered body) -> bool or awaitable bool: consent or refuse.
        Without a callback, or if it raises, the offer is refused."""
        self._offer = callback

    async def send_raw(self, text):
        """Send one frame as it is (tests of the engine's refusals). Raises LinkClosed."""
        try:
            await self.ws.send(text)
        except (ConnectionClosed, OSError):
            raise LinkClosed("the engine closed the connection") from None

    async def request(self, message_type, body, timeout=60, raw=False):
        """Send one request; returns the response body (the whole message with raw=True).

        Raises CapError for an Error answer, or E_MALFORMED_REQUEST before sending when the
        request does not match the shipped schema; LinkClosed when the connection drops;
        EngineTimeout (a TimeoutError) after `timeout` seconds.
        """
        msg = runtimeapi.make(message_type, body, self.runtime_id)
        try:
            runtimeapi.validate(msg)
        except runtimeapi.BadMessage as exc:
            raise CapError("E_MALFORMED_REQUEST", str(exc)) from None
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        mid = msg["message_id"]
        self._pending[mid] = fut
        # A timer on the future itself, not wait_for: no Task per request.
        timer = loop.call_later(timeout, _expire, fut, message_type, timeout)
        try:
            try:
                await self.ws.send(runtimeapi.dumps(msg))
            except (ConnectionClosed, OSError):
                raise LinkClosed("the engine closed the connection") from None
            reply = await fut              # EngineTimeout, or LinkClosed set by the reader
        finally:
            timer.cancel()
            self._pending.pop(mid, None)
        if raw:
            return reply
        if reply["message_type"] == "Error":
            raise CapError(reply["body"]["error_code"], reply["body"]["error_message"])
        return reply["body"]

    @sends("AuthRequest")
    async def acquire(self, fay_id, resource_id, mode, credential, wait_ms=0, urgency=None):
        """AuthRequest; returns a Session. Raises CapError with the S2 code when denied.
        `urgency` (0..10): the task's urgency for a priority policy, an input the engine caps
        per Fay, never authority (docs/engine.md "Handover policies")."""
        body = {"fay_id": fay_id, "resource_id": resource_id, "access_mode": mode, "credential": credential}
        if wait_ms:
            body["wait_ms"] = wait_ms
        if urgency is not None:
            body["urgency"] = urgency
        r = await self.request("AuthRequest", body, timeout=60 + wait_ms / 1000.0)
        if r["result"] != "granted":
            raise CapError(r["error_code"], r["error_message"])
        return self._track(Session(self, r, fay_id, resource_id, mode))

    async def acquire_dual(self, fay_id, resource_id, mode, cred, online=None, wait_ms=0):
        """Dual credentials (4.6): the ticket or the descriptor chosen by the terminal's mode,
        the other as a second AuthRequest when the first is refused for the credential
        (sdk/dual.py). `cred` is a DualCredential. Returns a Session; raises CapError."""
        return await dual.acquire_dual(self, fay_id, resource_id, mode, cred, online=online, wait_ms=wait_ms)

    @sends("Heartbeat")
    async def heartbeat(self, sessions=None, busy_ms=None):
        """One Heartbeat for many sessions (default: every session still active or offered),
        with the busy marker when `busy_ms` is given (see Session.busy). Returns the
        HeartbeatAck body {alive, unknown} (and busy_ms, the time granted, when asked)."""
        if sessions is None:
            sessions = [s for s in self.sessions.values() if s.state in ("active", "handover_pending")]
        body = {"session_ids": [s.session_id for s in sessions]}
        if busy_ms is not None:
            body["busy_ms"] = int(busy_ms)
        ack = await self.request("Heartbeat", body)
        for sid in ack.get("unknown", ()):
            self._forget(sid)                       # ended while no push reached us
        return ack

    @sends("SessionQuery")
    async def query_sessions(self, session_id=None):
        """SessionQuery: the runtime's sessions as the engine lists them (one, when
        `session_id` is given). Raises what request raises."""
        body = {} if session_id is None else {"session_id": session_id}
        return (await self.request("SessionQuery", body))["sessions"]

    @sends("FayTerminated")
    async def fay_terminated(self, fay_id):
        """FayTerminated: end every session this runtime holds for `fay_id`; returns the ids of
        the sessions ended. Raises what request raises."""
        ids = (await self.request("FayTerminated", {"fay_id": fay_id}))["session_ids"]
        for sid in ids:
            self._forget(sid)
        return ids

    @sends("HandoverRequest")
    async def handover(self, resource_id, to_fay_id, mode, credential, timeout_ms=10000, urgency=None):
        """HandoverRequest; returns the HandoverResult body, with `session` (a Session) when completed.
        `urgency`: as for acquire()."""
        body = {"resource_id": resource_id, "to_fay_id": to_fay_id, "access_mode": mode, "credential": credential,
                "timeout_ms": timeout_ms}
        if urgency is not None:
            body["urgency"] = urgency
        r = await self.request("HandoverRequest", body, timeout=timeout_ms / 1000.0 + 30)
        if r["result"] == "completed":
            r["session"] = self._track(Session(self, r, to_fay_id, resource_id, mode))
        return r

    def _track(self, s):
        self.sessions[s.session_id] = s
        for body in self._early.pop(s.session_id, ()):
            s._changed(body)
        if s.state == "terminated":
            self._forget(s.session_id)
        return s

    def _forget(self, session_id):
        # Kept among the gone (bounded) so that a push still on its way reaches it: a heartbeat
        # can report a session unknown before the engine's terminated push arrives, and a caller
        # waiting in Session.ended() must still hear it.
        self._gone[session_id] = self.sessions.pop(session_id, None) or self._gone.get(session_id)
        while len(self._gone) > PUSHES_KEPT:
            self._gone.popitem(last=False)

    async def _read(self, ws):
        try:
            async for frame in ws:
                try:
                    msg = json.loads(frame)
                    mtype = msg["message_type"]
                except (ValueError, TypeError, KeyError):
                    log.warning("ignoring a frame that is not a ProtocolMessage")
                    continue
                corr = msg.get("correlation_id")
                if corr in self._pending and not self._pending[corr].done():
                    self._pending[corr].set_result(msg)
                    continue
                self.pushes.append(msg)
                try:
                    if mtype == "SessionStateChanged":
                        if msg["body"].get("terminal_mode") in ("online", "degraded"):
                            self.terminal_mode = msg["body"]["terminal_mode"]
                        s = self.sessions.get(msg["body"]["session_id"]) or self._gone.get(msg["body"]["session_id"])
                        if s:
                            s._changed(msg["body"])
                            if s.state == "terminated":
                                self._forget(s.session_id)
                        elif msg["body"]["session_id"] not in self._gone:
                            self._early.setdefault(msg["body"]["session_id"], []).append(msg["body"])
                            while len(self._early) > 256:
                                self._early.popitem(last=False)
                    elif mtype == "HandoverOffered":
                        asyncio.ensure_future(self._answer(msg["body"]))
                except (KeyError, TypeError):
                    log.warning("ignoring a malformed %s", mtype)
        except ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(LinkClosed("the engine closed the connection"))

    @sends("HandoverResponse")
    async def _answer(self, offer):
        accept = False
        if self._offer is not None:
            try:
                accept = self._offer(offer)
                if inspect.isawaitable(accept):
                    accept = await accept
            except Exception:
                log.exception("on_offer callback failed: refusing the offer")
                accept = False
        try:
            await self.request("HandoverResponse", {"handover_id": offer["handover_id"], "accept": bool(accept)})
        except (CapError, LinkClosed):
            pass  # answered too late (the engine already rolled back), or the connection is gone


def _expire(fut, message_type, timeout):
    if not fut.done():
        fut.set_exception(EngineTimeout("no answer to %s within %s s" % (message_type, timeout)))


async def connect(url, runtime_id, token, ssl=None, unix_path=None):
    """Open a runtime connection to `url` (ws:// or wss://, path /cap/v1) or a Unix socket.

    Raises EngineUnreachable (a ConnectionError) when nothing listens or the handshake is
    refused (`status` 401 for a bad token), BadEngineURL (a ValueError) for a URL that is none. The token is sent once, in the handshake, and never
    logged.
    """
    headers = {"Authorization": "Bearer " + token}

    where = unix_path or url
    if not unix_path:
        try:
            parse_uri(url)
        except (InvalidURI, ValueError) as exc:
            raise BadEngineURL("%r is not an engine URL (ws://HOST:PORT/cap/v1 or wss://...): %s" % (
                str(url)[:120], exc)) from None

    async def opener():
        try:
            if unix_path:
                return await unix_connect(unix_path, "ws://localhost/cap/v1", additional_headers=headers,
                                          max_size=None, ping_interval=None, compression=None)
            return await ws_connect(url, additional_headers=headers, ssl=ssl, max_size=None, ping_interval=None,
                                    compression=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            why = {401: "the token is not valid for this runtime", 404: "the path is not /cap/v1"}.get(status, "")
            raise EngineUnreachable("the engine at %s refused the connection (HTTP %d%s)" % (
                where, status, ": " + why if why else ""), status) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise EngineUnreachable("cannot connect to the engine at %s: %s" % (where, exc)) from None

    client = Client(opener, runtime_id)
    await client._open()
    return client
