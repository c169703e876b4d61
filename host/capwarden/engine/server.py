"""The runtime API over WebSocket (cap-supplement S3).

`/cap/v1`, one ProtocolMessage per text frame. TLS unless the address is loopback or a Unix
socket. A runtime authenticates at the handshake with `Authorization: Bearer TOKEN`; tokens
are compared in constant time and never logged. Each request is handled in its own task and
gets exactly one final response; malformed input gets `Error`, and the connection stays open
(a frame over the size limit is the one exception: the WebSocket layer closes with 1009).

Nothing leaves before the audit entries recorded ahead of it are on disk: every send first
awaits the audit log's `durable()`, so the log runs in group-commit mode while the server
serves (decisions made while one fdatasync runs share the next one). An answer whose handler
named its own entry (engine.ANSWER_SEQ: a grant whose entry was written before the board was
asked) waits for the entries up to that one; the board's epoch recorded after it goes to disk
with the next flush, before any later answer or push.
"""

import asyncio
import hmac
import ipaddress
import logging
import ssl

from websockets.asyncio.server import serve, unix_serve
from websockets.exceptions import ConnectionClosed

from capwarden.engine import protocol
from capwarden.engine.engine import ANSWER_SEQ
from capwarden.errors import StoreError, UsageError

log = logging.getLogger("capwarden.engine")
PATH = "/cap/v1"
MAX_IN_FLIGHT = 64


def is_loopback(host):
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text):
    """('tcp', host, port) or ('unix', path, None) from HOST:PORT or unix:PATH."""
    if text.startswith("unix:"):
        return "unix", text[5:], None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError("--listen takes HOST:PORT or unix:PATH (got %r)" % text)
    return "tcp", host.strip("[]"), int(port)


class Server:
    def __init__(self, tokens, listen, tls_cert=None, tls_key=None):
        """Check the address and TLS settings. Raises UsageError, or OSError for unreadable TLS files."""
        self.engine = None
        self.tokens = dict(tokens)          # runtime_id -> token
        self.kind, self.host, self.port = parse_listen(listen)
        self.ssl = None
        if tls_cert or tls_key:
            if not (tls_cert and tls_key):
                raise UsageError("--tls-cert and --tls-key go together")
            self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            self.ssl.load_cert_chain(tls_cert, tls_key)
        elif self.kind == "tcp" and not is_loopback(self.host):
            raise UsageError("plain ws:// is only allowed on loopback or a Unix socket: give --tls-cert and "
                             "--tls-key to listen on %s" % self.host)
        self._server = None
        self._audit = None

    async def start(self, engine):
        self.engine = engine
        self._audit = getattr(engine, "audit", None)
        if self._audit is not None and hasattr(self._audit, "group_commit"):
            self._audit.group_commit(True)       # send() waits for durable() from now on
        else:
            self._audit = None
        for rid in self.tokens:
            engine.add_runtime(rid)
        protocol.validator()                     # compiled now, not in the first request's time
        # No permessage-deflate: frames are small, and compressing credentials next to data a
        # peer chooses is how BREACH-style attacks read secrets through TLS.
        kw = dict(process_request=self._authenticate, max_size=protocol.MAX_FRAME, ping_interval=None,
                  compression=None)
        if self.kind == "unix":
            self._server = await unix_serve(self._connection, self.host, **kw)
        else:
            self._server = await serve(self._connection, self.host, self.port, ssl=self.ssl, **kw)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self):
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        if self._audit is not None:
            self._audit.group_commit(False)      # what is pending is synced; later entries sync as written

    @property
    def url(self):
        scheme = "wss" if self.ssl else "ws"
        if self.kind == "unix":
            return "ws+unix:" + self.host
        return "%s://%s:%d%s" % (scheme, self.host if ":" not in self.host else "[%s]" % self.host, self.port, PATH)

    def _runtime_of(self, request):
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        presented = auth[len("Bearer "):].encode()
        found = None
        for rid, token in self.tokens.items():
            if hmac.compare_digest(presented, token.encode()):
                found = rid
        return found

    def _authenticate(self, connection, request):
        if request.path != PATH:
            return connection.respond(404, "the CAP runtime API is at %s\n" % PATH)
        if self._runtime_of(request) is None:
            return connection.respond(401, "a valid 'Authorization: Bearer TOKEN' is required\n")
        return None

    async def _connection(self, ws):
        runtime_id = self._runtime_of(ws.request)
        send_lock = asyncio.Lock()

        async def send(msg, upto=None):
            async with send_lock:
                audit = self._audit
                if audit is not None and audit.pending:
                    try:
                        await audit.durable(upto)
                    except StoreError as exc:
                        # Not on disk, so not acknowledged: a response becomes an Error, a push is dropped.
                        log.error("%s", exc)
                        if msg.get("correlation_id") is None:
                            return
                        msg = self.engine.error("E_INTERNAL", "the audit log cannot be written; nothing was "
                                                "acknowledged", msg["correlation_id"])
                try:
                    await ws.send(protocol.dumps(msg))
                except ConnectionClosed:
                    pass

        self.engine.connected(runtime_id, send)
        # At most MAX_IN_FLIGHT requests of one connection run at once; beyond that the server
        # stops reading, and TCP pushes back on the runtime (no unbounded queue of tasks).
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks = set()

        def done(t):
            tasks.discard(t)
            slots.release()
        try:
            async for frame in ws:
                try:
                    msg = protocol.parse(frame)
                except protocol.BadMessage as exc:
                    await send(self.engine.refuse_frame(runtime_id, exc))     # answered and audited
                    continue
                await slots.acquire()
                t = asyncio.ensure_future(self._serve_one(runtime_id, msg, send))
                tasks.add(t)
                t.add_done_callback(done)
        except ConnectionClosed:
            pass
        finally:
            self.engine.disconnected(runtime_id, send)

    async def _serve_one(self, runtime_id, msg, send):
        reply = await self.engine.handle(runtime_id, msg, origin=send)
        # The entries up to the answer's own (engine.ANSWER_SEQ, set in this task) when the
        # handler named it, else every entry recorded so far, are on disk before it goes.
        await send(reply, ANSWER_SEQ.get())
