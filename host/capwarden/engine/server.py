"""The runtime API over WebSocket (cap-supplement S3).

`/cap/v1`, one ProtocolMessage per text frame. TLS unless the address is loopback or a Unix
socket. A runtime authenticates at the handshake with `Authorization: Bearer TOKEN`; tokens
are compared in constant time and never logged. Each request is handled in its own task and
gets exactly one final response; malformed input gets `Error`, and the connection stays open
(a frame over the size limit is the one exception: the WebSocket layer closes with 1009).

Nothing leaves before the audit entries recorded ahead of it are on disk: every send first
awaits the audit log's `durable()`, so the log runs in group-commit mode while the server
serves (decisions made while one fdatasync runs share the next one). An answer whose handler
named its own entry (admission.ANSWER_SEQ: a grant whose entry was written before the board was
asked) waits for the entries up to that one; the board's epoch recorded after it goes to disk
with the next flush, before any later answer or push.
"""

import asyncio
import hmac
import ipaddress
import logging
import os
import socket
import ssl

from websockets.asyncio.server import serve, unix_serve
from websockets.exceptions import ConnectionClosed

from capwarden.engine import protocol
from capwarden.engine.admission import ANSWER_SEQ
from capwarden.errors import CapwardenError, StoreError, UsageError
from capwarden.logfmt import kv

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
    if not sep or not port.isdigit() or not host or not 0 <= int(port) <= 65535:
        raise UsageError("--listen takes HOST:PORT with a port 0..65535, or unix:PATH, e.g. 127.0.0.1:8765 "
                         "(got %r)" % text)
    return "tcp", host.strip("[]"), int(port)


def load_tls(cert, key):
    """A TLS server context from PEM files. Raises UsageError for a file that cannot be read
    (exit 2), CapwardenError for one that is not a usable certificate or key (exit 1)."""
    for path, flag in ((cert, "--tls-cert"), (key, "--tls-key")):
        if os.path.isdir(path):
            raise UsageError("%s %s is a folder, not a PEM file" % (flag, path))
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise UsageError("%s %s: cannot read it: %s" % (flag, path, exc.strerror or exc)) from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise CapwardenError("--tls-cert %s / --tls-key %s: not a PEM certificate chain and its private key (%s)"
                             % (cert, key, exc.reason or exc.strerror or exc.__class__.__name__)) from None
    except OSError as exc:
        raise UsageError("--tls-cert %s / --tls-key %s: %s" % (cert, key, exc.strerror or exc)) from None
    return ctx


def peer_of(connection):
    try:
        peer = connection.remote_address
    except Exception:
        return "-"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return "%s:%s" % (peer[0], peer[1])
    return "unix" if not peer else str(peer)


class Server:
    def __init__(self, tokens, listen, tls_cert=None, tls_key=None):
        """Check the address and TLS settings. Raises UsageError (CapwardenError for a TLS file
        that does not hold a certificate and key)."""
        self.engine = None
        self.tokens = dict(tokens)          # runtime_id -> token
        self.kind, self.host, self.port = parse_listen(listen)
        self.ssl = None
        if tls_cert or tls_key:
            if not (tls_cert and tls_key):
                raise UsageError("--tls-cert and --tls-key go together")
            self.ssl = load_tls(tls_cert, tls_key)
        elif self.kind == "tcp" and not is_loopback(self.host):
            raise UsageError("plain ws:// is only allowed on loopback or a Unix socket: give --tls-cert and "
                             "--tls-key to listen on %s" % self.host)
        self._server = None
        self._audit = None

    def check_address(self):
        """Bind the address once and let it go, so that one in use is said before anything slow
        (deploying a board). Raises UsageError. start() binds it for real (and can still fail,
        should another process take it meanwhile)."""
        if self.kind == "unix":
            folder = os.path.dirname(os.path.abspath(self.host))
            if not os.path.isdir(folder):
                raise UsageError("--listen unix:%s: the folder %s does not exist" % (self.host, folder))
            if os.path.exists(self.host) and not _is_socket(self.host):
                raise UsageError("--listen unix:%s: that path exists and is not a socket" % self.host)
            if os.path.exists(self.host) and _socket_answers(self.host):
                # asyncio would unlink it and listen in its place: the other engine's runtimes
                # would silently reach this one.
                raise UsageError("--listen unix:%s: another process is listening there" % self.host)
            return
        if self.port == 0:
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise UsageError("--listen %s: unknown host (%s)" % (self.host, exc.strerror)) from None
        for family, kind, proto, _, addr in infos:
            s = socket.socket(family, kind, proto)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as asyncio's server does
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
            except OSError as exc:
                raise UsageError(bind_error(self.host, self.port, exc)) from None
            finally:
                s.close()

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
        try:
            if self.kind == "unix":
                self.check_address()
                self._server = await unix_serve(self._connection, self.host, **kw)
                self._socket_id = _file_id(self.host)
            else:
                self._server = await serve(self._connection, self.host, self.port, ssl=self.ssl, **kw)
                self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            raise UsageError(bind_error(self.host, self.port, exc)) from None
        log.info("%s", kv(event="listening", url=self.url, runtimes=",".join(sorted(self.tokens))))
        return self

    async def close(self):
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            if self.kind == "unix" and getattr(self, "_socket_id", None) and _file_id(self.host) == self._socket_id:
                os.unlink(self.host)             # ours still: no stale socket left behind
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
            log.info("%s", kv(event="refused", reason="wrong_path", path=request.path[:80], peer=peer_of(connection)))
            return connection.respond(404, "the CAP runtime API is at %s\n" % PATH)
        if self._runtime_of(request) is None:
            # Never the token, nor any part of the header: only whether there was one.
            bearer = request.headers.get("Authorization", "").startswith("Bearer ")
            log.warning("%s", kv(event="refused", reason="unknown_token" if bearer else "no_bearer_token",
                                 peer=peer_of(connection)))
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
        peer = peer_of(ws)
        log.info("%s", kv(event="connected", runtime=runtime_id, peer=peer))
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
                    log.warning("%s", kv(event="malformed_frame", runtime=runtime_id, error_code=exc.code))
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
            log.info("%s", kv(event="disconnected", runtime=runtime_id, peer=peer,
                              code=ws.close_code if ws.close_code is not None else "-"))

    async def _serve_one(self, runtime_id, msg, send):
        reply = await self.engine.handle(runtime_id, msg, origin=send)
        if log.isEnabledFor(logging.DEBUG):
            body = reply.get("body") if isinstance(reply.get("body"), dict) else {}
            log.debug("%s", kv(event="request", runtime=runtime_id, type=msg.get("message_type"),
                               answer=reply.get("message_type"), error_code=body.get("error_code") or "-"))
        # The entries up to the answer's own (admission.ANSWER_SEQ, set in this task) when the
        # handler named it, else every entry recorded so far, are on disk before it goes.
        await send(reply, ANSWER_SEQ.get())


def _file_id(path):
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def _socket_answers(path):
    """Whether a process accepts connections on the Unix socket `path` (a stale file does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def _is_socket(path):
    import stat

    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def bind_error(host, port, exc):
    import errno

    where = "unix:%s" % host if port is None else "%s:%s" % (host, port)
    if exc.errno == errno.EADDRINUSE:
        return ("--listen %s: the address is in use (another capwarden serve?); stop that process or give "
                "another port" % where)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "--listen %s: permission denied (ports below 1024 need privileges; pick a higher one)" % where
    if exc.errno == errno.EADDRNOTAVAIL:
        return "--listen %s: this machine has no such address" % where
    return "--listen %s: cannot listen there: %s" % (where, exc.strerror or exc)
