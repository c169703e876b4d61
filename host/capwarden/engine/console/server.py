"""The console's HTTP server: the Starlette app (web.py) on uvicorn, inside the engine's event
loop, at `capwarden serve --console HOST:PORT`.

The transport rule is the runtime API's (engine/server.py): plain HTTP only on loopback, TLS
(the same --tls-cert/--tls-key, TLS 1.2 at least, the same load_tls) anywhere else. The socket
is bound here, so an address in use is a usage error said before the boards start, and port 0
gives a free port. uvicorn's own signal handling is not used (serve owns SIGINT and SIGTERM):
only its startup() and shutdown() run, on the engine's loop.
"""

import logging
import socket

from capwarden.asgiloop import LoopServer
from capwarden.engine.server import bind_error, is_loopback, load_tls, parse_listen
from capwarden.errors import UsageError
from capwarden.logfmt import kv

log = logging.getLogger("capwarden.console")


def console_address(text):
    """(host, port) of --console HOST:PORT. Raises UsageError."""
    try:
        kind, host, port = parse_listen(text)
    except UsageError:
        kind = None
    if kind != "tcp":
        raise UsageError("--console takes HOST:PORT, e.g. 127.0.0.1:8766 (a browser cannot reach a Unix socket; "
                         "got %r)" % text)
    return host, port


class ConsoleServer:
    def __init__(self, listen, tls_cert=None, tls_key=None):
        """Check the address and the TLS rule. Raises UsageError (CapwardenError for a TLS file
        that does not hold a certificate and key)."""
        self.host, self.port = console_address(listen)
        self.ssl = None
        if tls_cert or tls_key:
            if not (tls_cert and tls_key):
                raise UsageError("--tls-cert and --tls-key go together")
            self.ssl = load_tls(tls_cert, tls_key)
        elif not is_loopback(self.host):
            raise UsageError("the console serves plain HTTP only on loopback: give --tls-cert and --tls-key to "
                             "serve it on %s" % self.host)
        self._sock = None
        self._uvicorn = None
        self.web = None

    @property
    def tls(self):
        return self.ssl is not None

    def bind(self):
        """Bind and listen now. Raises UsageError."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise UsageError("--console %s: unknown host (%s)" % (self.host, exc.strerror)) from None
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise UsageError(bind_error(self.host, self.port, exc).replace("--listen", "--console", 1)) from None
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]

    async def start_for(self, engine, store, audit_path):
        """Serve the console of `engine` (operators from `store`, the audit tail of `audit_path`)."""
        from capwarden.engine.console.sources import ConsoleSources
        from capwarden.engine.console.web import ConsoleWeb

        return await self.start(ConsoleWeb(ConsoleSources(engine, store), audit_path=audit_path, clock=engine.clock))

    async def start(self, web):
        """Serve `web` (a web.ConsoleWeb) on the bound socket, on the running loop."""
        if self._sock is None:
            self.bind()
        self.web = web
        web.serving(self.host, self.port, self.tls)
        ctx = self.ssl
        self._uvicorn = await LoopServer(web.asgi, self._sock, date_header=False, ws="none",
                                         ssl_context_factory=(lambda _config, _default: ctx) if ctx else None).start()
        self._sock = None                   # the LoopServer's to close now
        await web.start()
        log.info("%s", kv(event="console_listening", url=self.url))
        return self

    async def close(self):
        server, self._uvicorn = self._uvicorn, None
        if self.web is not None:
            await self.web.close()          # live streams end, so shutdown need not wait for them
        if server is not None:
            await server.stop()
        if self._sock is not None:          # bound, never served
            self._sock.close()
            self._sock = None

    @property
    def url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d/" % ("https" if self.ssl else "http", host, self.port)
