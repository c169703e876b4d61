"""Wiring: a store, boards, the engine and the server, started and stopped together.

Used by `capwarden serve`, the demo and the end-to-end tests, so they run the same assembly.
"""

import fcntl
import logging
import os

from capwarden.engine.audit import AuditLog
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.engine.engine import Engine
from capwarden.engine.liveness import MAX_BUSY_MS, LivenessPolicy
from capwarden.engine.server import Server
from capwarden.errors import LinkError, LinkTimeout, StoreError, UsageError
from capwarden.link import open_board
from capwarden.logfmt import kv

log = logging.getLogger("capwarden.engine")

# Held (flock) by the one engine writing a store, and next to the audit log it appends to, for
# the engine's whole life. Not STORE/.lock: that one is taken briefly by every store write.
ENGINE_LOCK = "engine.lock"


def hold_writer_lock(path, what):
    """Take the writer lock file `path` (flock, released by the kernel when the process dies,
    however it dies). Returns its descriptor. Raises StoreError naming the holder's pid."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError("cannot open the lock file %s: %s" % (path, exc.strerror or exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            holder = ""
        os.close(fd)
        who = "process %s" % holder if holder.isdigit() else "another process"
        raise StoreError("%s is in use by another capwarden serve (%s, lock %s): a store and its audit log have "
                         "one writer. Stop that engine first, or give this one its own --store and --audit"
                         % (what, who, path)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


class EngineApp:
    def __init__(self, store, listen, tokens, sim=False, ports=(), audit_path=None, liveness=None, lease_ms=3000,
                 board_heartbeat_ms=1000, tls_cert=None, tls_key=None, heapsize=None, progress=None, tick_s=0.05,
                 sim_grants=None, fay_bindings=None, leeway=60, max_busy_ms=MAX_BUSY_MS,
                 board_settings=None, trust=None, trust_options=None, handover=None, console=None,
                 conversion=None):
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
        self.max_busy_ms = max_busy_ms
        self.board_settings = board_settings or {}
        self.trust = trust                          # engine/online.py Settings, or None: no trust service
        self.trust_options = trust_options or {}    # TrustLink keywords (tests: client, clocks)
        self.online = None
        self.handover = handover                    # engine/policyconfig.py Settings, or None: consent everywhere
        self.conversion = conversion                # engine/conversion.py Converter, or None: the defaults
        self.console = console                      # HOST:PORT of the operator console (engine/console), or None
        self.console_server = None
        self._locks = []
        self.vboard = None
        self.boards = {}
        self.engine = None
        self.server = None

    async def start(self):
        """Open the store, the boards, the engine and the server. Raises CapwardenError (store,
        usage: an address in use or a TLS file that cannot be read is said before any board is
        started; link); whatever was started is stopped again."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self):
        # One writer per store and per audit log, refused before anything slow (the board).
        if os.path.isdir(self.store):
            self._locks.append(hold_writer_lock(os.path.join(self.store, ENGINE_LOCK), "the store %s" % self.store))
        self._locks.append(hold_writer_lock(self.audit_path + ".lock", "the audit log %s" % self.audit_path))
        server = Server(self.tokens, self.listen, *self.tls)     # a bad address or TLS file fails before the boards
        server.check_address()                                   # start, and so does an address in use
        if self.console:
            from capwarden.engine.console.server import ConsoleServer

            self.console_server = ConsoleServer(self.console, *self.tls)   # the same TLS rule and files
            self.console_server.bind()                                     # an address in use: said now
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
            try:
                b = await open_board(addr, timeout=0.5, retries=3)
            except LinkTimeout as exc:
                if self.vboard is not None and addr == self.vboard.port:
                    raise
                raise LinkError("%s. Nothing answered on %s: is the CAP agent on that board? Deploy it with "
                                "'capwarden flash --port %s --board NAME'" % (exc, addr, addr)) from None
            name = b.info.name
            n = 2
            while name in self.boards:
                name = "%s-%d" % (b.info.name, n)
                n += 1
            self.boards[name] = b
            log.info("%s", kv(event="board_up", board=name, address=addr, agent=b.info.agent_version,
                              resources=",".join(r.name for r in b.info.resources)))
        self.engine = Engine(authorizer, self.boards, audit, liveness=self.liveness,
                             lease_ms=self.lease_ms, board_heartbeat_ms=self.board_heartbeat_ms, tick_s=self.tick_s,
                             fay_bindings=self.fay_bindings, max_busy_ms=self.max_busy_ms,
                             board_settings=self.board_settings, handover=self.handover,
                             conversion=self.conversion)
        from capwarden.engine import controlroom

        controlroom.attach(self.engine)     # the operator console's view: pushes and board events
        await self.engine.start()
        if self.trust is not None:
            from capwarden.engine.online import TrustLink

            self.online = TrustLink(self.engine, self.trust, self.store, **self.trust_options).start()
        self.server = await server.start(self.engine)
        if self.console_server is not None:
            await self.console_server.start_for(self.engine, self.store, self.audit_path)
        return self

    async def stop(self):
        """Stop what was started; safe to call more than once."""
        server, engine, boards, vboard = self.server, self.engine, self.boards, self.vboard
        self.server, self.engine, self.boards, self.vboard = None, None, {}, None
        console, self.console_server = self.console_server, None
        if console:
            await console.close()
        if server:
            await server.close()
        online, self.online = self.online, None
        if engine is not None:
            engine.online = None
        if online:
            await online.stop()
        if engine:
            await engine.stop()
        for b in boards.values():
            await b.close()
        if vboard:
            vboard.stop()
        locks, self._locks = self._locks, []
        for fd in locks:
            os.close(fd)          # the lock goes with the descriptor

    def resource_id(self, board, resource):
        return "%s/%s/%s" % (self.engine.terminal_id, board, resource)

    def resource_ids(self):
        """Every Resource_ID served, board by board: [(board, resource id, ResourceInfo)]."""
        return [(name, self.resource_id(name, r.name), r) for name, b in self.boards.items() for r in b.info.resources]
