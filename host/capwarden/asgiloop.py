"""An ASGI app served by uvicorn on the running event loop, on a socket its owner bound.

Only uvicorn's startup and shutdown run (not `Server.serve`), so the process keeps its own
signal handlers, Ctrl-C and exit codes; with lifespan off, what the app needs at start and stop
is its owner's to do. Used by the operator console (`serve --console`) and by `capwarden demo`'s
trust service; `capwarden trust serve` runs uvicorn whole.
"""


class LoopServer:
    """`await LoopServer(app, sock, **uvicorn_config).start()`, later `await .stop()`, which
    also closes `sock`. Raises OSError when uvicorn does not start."""

    def __init__(self, app, sock, **config):
        self.app = app
        self.sock = sock
        self.config = dict(log_config=None, access_log=False, server_header=False, proxy_headers=False,
                           lifespan="off", timeout_graceful_shutdown=2)
        self.config.update(config)
        self._server = None

    async def start(self):
        import uvicorn

        config = uvicorn.Config(self.app, **self.config)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self.sock])
        if server.should_exit:
            raise OSError("the HTTP server did not start on %r" % (self.sock.getsockname(),))
        await server.on_tick(0)             # its default headers (no Server header, say)
        self._server = server
        return self

    async def stop(self):
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            await server.shutdown()
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
