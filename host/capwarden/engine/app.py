"""Wiring: a store, boards, the engine and the server, started and stopped together.

Used by `capwarden serve`, the demo and the end-to-end tests, so they run the same assembly.
"""

import os

from capwarden.engine.audit import AuditLog
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.engine.engine import Engine
from capwarden.engine.liveness import LivenessPolicy
from capwarden.engine.server import Server
from capwarden.errors import UsageError
from capwarden.link import open_board


class EngineApp:
    def __init__(self, store, listen, tokens, sim=False, ports=(), audit_path=None, liveness=None, lease_ms=3000,
                 board_heartbeat_ms=1000, tls_cert=None, tls_key=None, heapsize=None, progress=None, tick_s=0.05,
                 sim_grants=None, fay_bindings=None, leeway=60):
        if not sim and not ports:
            raise UsageError("give --board sim or at least one --port DEVICE")
        if not tokens:
            raise UsageError("give at least one --runtime-token RUNTIME_ID=TOKEN")
        self.store = store
        self.listen = listen
        self.tokens = tokens
        self.sim = sim
        self.ports = list(ports)
        self.audit_path = audit_path or os.path.join(store, "audit.log")
        self.liveness = liveness or LivenessPolicy()
        self.lease_ms = lease_ms
        self.board_heartbeat_ms = board_heartbeat_ms
        self.tls = (tls_cert, tls_key)
        self.heapsize = heapsize
        self.progress = progress
        self.tick_s = tick_s
        self.sim_grants = sim_grants
        self.fay_bindings = fay_bindings
        self.leeway = leeway
        self.vboard = None
        self.boards = {}
        self.engine = None
        self.server = None

    async def start(self):
        """Open the store, the boards, the engine and the server. Raises CapwardenError (store,
        usage, link) or OSError (address in use); whatever was started is stopped again."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self):
        server = Server(self.tokens, self.listen, *self.tls)     # a bad address fails before the boards start
        authorizer = StoreAuthorizer(self.store, leeway=self.leeway)
        audit = AuditLog(self.audit_path)
        addresses = list(self.ports)
        if self.sim:
            from capwarden.sim import DEFAULT_HEAP, VirtualBoard

            self.vboard = VirtualBoard(heapsize=self.heapsize or DEFAULT_HEAP, progress=self.progress,
                                       grants=self.sim_grants)
            self.vboard.start()
            addresses.insert(0, self.vboard.port)
        for addr in addresses:
            b = await open_board(addr, timeout=0.5, retries=3)
            name = b.info.name
            n = 2
            while name in self.boards:
                name = "%s-%d" % (b.info.name, n)
                n += 1
            self.boards[name] = b
        self.engine = Engine(authorizer, self.boards, audit, liveness=self.liveness,
                             lease_ms=self.lease_ms, board_heartbeat_ms=self.board_heartbeat_ms, tick_s=self.tick_s,
                             fay_bindings=self.fay_bindings)
        await self.engine.start()
        self.server = await server.start(self.engine)
        return self

    async def stop(self):
        """Stop what was started; safe to call more than once."""
        server, engine, boards, vboard = self.server, self.engine, self.boards, self.vboard
        self.server, self.engine, self.boards, self.vboard = None, None, {}, None
        if server:
            await server.close()
        if engine:
            await engine.stop()
        for b in boards.values():
            await b.close()
        if vboard:
            vboard.stop()

    def resource_id(self, board, resource):
        return "%s/%s/%s" % (self.engine.terminal_id, board, resource)
