"""The Protocol_Engine: sessions over boards, behind one policy enforcement point.

Reference architecture (hyperty-runtime-architecture.txt), mapped:

    message bus         `handle()`: the one entry point for every runtime message, dispatched
                        by `routes.ROUTES` to its rule and its handler (`handlers.py`)
    enforcement point   `pep.PolicyEnforcementPoint`: default deny, every deny answered and audited
    registry            `registry.Registry`: runtimes, sessions, boards and resources, offers
    protocol stubs      the boards' `capwarden.link.Board` clients: the only path to hardware

Everything is passed in through the constructor: the authorizer (credentials), the board
clients, the audit log, the liveness policy and the clocks. `admission.py` checks a request's
credential and takes the board's lock, `liveness.py` runs the timers, `handover.py` the
consent handover, `boards.py` the boards' events, link loss and reconciliation, `sessions.py`
holds the state machine.
"""

import asyncio
import json
import logging
import time

from capshared.limits import MAX_LEASE_MS
from capwarden.engine import admission, boardconfig, boards, liveness, protocol
from capwarden.engine.decisions import PendingDecisions
from capwarden.engine.policy import PolicyTable
from capwarden.engine.conversion import Converter
from capwarden.engine.liveness import LivenessPolicy
from capwarden.engine.pep import PolicyEnforcementPoint
from capwarden.engine.registry import LIVE, Registry
from capwarden.engine.routes import ROUTES
from capwarden.errors import CapError, DeviceError, LinkError, StoreError, UsageError

log = logging.getLogger("capwarden.engine")

# The board already ended these grants itself (or moved them): nothing to release there.
BOARD_ENDED = ("resource_removed", "resource_fault", "board_reset", "lease_expired", "failsafe", "handover",
               "board_unreachable", "operator_takeover", "manual_override",   # these two: takeover.py
               "preempted")                                                   # a handover policy (policy.py)


def _fingerprint(msg):
    return json.dumps([msg["message_type"], msg.get("sender_id"), msg["body"]], sort_keys=True, separators=(",", ":"))


class Engine:
    def __init__(self, authorizer, boards, audit, liveness=None, lease_ms=3000, board_heartbeat_ms=1000,
                 clock=time.monotonic, wall=time.time, tick_s=0.05, fay_bindings=None,
                 max_busy_ms=liveness.MAX_BUSY_MS, board_settings=None, conversion=None, handover=None):
        self.authorizer = authorizer
        self.terminal_id = authorizer.terminal_id
        self.registry = Registry(self.terminal_id, boards)
        self.pep = PolicyEnforcementPoint(self.registry, fay_bindings)
        self.audit = audit
        self.liveness = liveness or LivenessPolicy()
        if not isinstance(lease_ms, int) or not 0 < lease_ms <= MAX_LEASE_MS:
            # Refused here, at start, rather than as a BadRequest on every acquire.
            raise UsageError("the board lease must be 1..%d ms (MAX_LEASE_MS), not %r" % (MAX_LEASE_MS, lease_ms))
        self.lease_ms = lease_ms
        self.board_heartbeat_ms = board_heartbeat_ms
        self.clock = clock
        self.wall = wall
        self.tick_s = tick_s
        self.max_busy_ms = max_busy_ms
        self.board_settings = dict(board_settings or {})   # boardconfig: given at start and after a reset
        self.conversion = conversion if conversion is not None else Converter()   # granted tickets -> descriptors
        self.sessions = self.registry.sessions      # the registry's, named for readers and tools
        self.policies = PolicyTable(handover, self.terminal_id, clock)   # handover policies (policyconfig.Settings)
        self.decisions = PendingDecisions(audit, clock, wall)            # questions to operators (decisions.py)
        self.watchers = []     # callables (runtime_id, message_type, body) seeing every push (controlroom.py)
        self._tasks = []
        authorizer.listeners.append(self._on_revocation)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self):
        for h in self.registry.boards.values():
            await boardconfig.apply(h.board, self.board_settings)   # refused: the engine does not start
            h.board.subscribe(lambda ev, h=h: self._on_board_event(h, ev))
            await self.reconcile(h)   # grants left by an engine that stopped within a lease: released
            if not h.board.up:
                await boards.link_down(self, h, "the board did not answer at start")
        self._tasks += [asyncio.ensure_future(liveness.board_heartbeats(self)), asyncio.ensure_future(liveness.run(self))]

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        await self.conversion.settle()
        self.policies.close()
        for s in list(self.sessions.values()):
            if s.state == "creating":
                await self.cancel(s, withdraw=True)
            else:
                await self.terminate(s, "engine_stopped")

    def spawn(self, coro):
        """Run `coro` as one of the engine's own tasks (an operator's hand-back wait): cancelled
        when the engine stops, so nothing of a stopped engine acts or writes its log after it."""
        t = asyncio.ensure_future(coro)
        self._tasks.append(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t):
        if t in self._tasks:
            self._tasks.remove(t)

    def add_runtime(self, runtime_id):
        return self.registry.add_runtime(runtime_id)

    def connected(self, runtime_id, send):
        self.registry.add_runtime(runtime_id).connections.add(send)

    def disconnected(self, runtime_id, send):
        rt = self.registry.runtime(runtime_id)
        if rt:
            rt.connections.discard(send)
        # A request still waiting (wait_ms, or a handover offer) can no longer be answered on
        # that connection: withdraw it, so no grant reaches a requester that has gone (faults.md 28).
        for s in list(self.sessions.values()):
            if s.state == "creating" and s.origin is send:
                asyncio.ensure_future(self.cancel(s, withdraw=True))

    # ---- the one entry point ----------------------------------------------------------------
    async def handle(self, runtime_id, msg, origin=None):
        """The final response to one request (a message dict). Never raises for bad input.

        A message id seen before from this runtime is answered with the first answer, and not
        acted on again (faults.md 31 and 49: a retry is idempotent; attacks.md I72: a replay
        changes nothing). The same id on a different request is refused.
        """
        mid = msg["message_id"]
        rt = self.registry.runtime(runtime_id)
        if rt is not None:
            fp = _fingerprint(msg)
            answer = asyncio.get_running_loop().create_future()
            first = rt.remember(mid, fp, answer)
            if first is not None:
                if first[0] != fp:
                    return self._deny(runtime_id, msg["message_type"], mid, CapError(
                        "E_MALFORMED_REQUEST", "message_id %s was already used for another request" % mid))
                return await asyncio.shield(first[1])
        try:
            try:
                reply = await self._decide(runtime_id, msg, origin)
            except Exception:  # a bug must still answer the request, and not leak details
                log.exception("request %s failed", msg["message_type"])
                reply = self.error("E_INTERNAL", "internal error", mid, runtime_id, msg["message_type"])
            if rt is not None:
                answer.set_result(reply)
            return reply
        finally:
            if rt is not None and not answer.done():
                answer.cancel()          # cancelled (the server is stopping): a retry is not left waiting

    async def _decide(self, runtime_id, msg, origin):
        mtype, mid = msg["message_type"], msg["message_id"]
        route = ROUTES.get(mtype)
        try:
            target = self.pep.check(runtime_id, msg, route)
            admission.REQUEST.set(msg["body"])     # its claimed urgency, for a handover policy (policy.py)
            prepare = getattr(self.authorizer, "prepare", None)   # online revocation query (authorizer.py)
            if prepare is not None:
                await prepare(mtype, msg["body"], int(self.wall()))
            body = await route.handler(self, runtime_id, msg["body"], target, origin)
        except CapError as d:
            return self._deny(runtime_id, mtype, mid, d)
        return protocol.make(route.response, body, self.terminal_id, mid)

    def _deny(self, runtime_id, mtype, mid, d):
        return self.error(d.code, d.message, mid, runtime_id, mtype)

    def error(self, code, message, corr=None, runtime_id=None, message_type=None):
        """The Error answer to a request, audited: every deny is (a malformed frame included).
        A refusal is still sent when the audit log cannot take it (it grants nothing)."""
        try:
            self.audit.record("deny", "denied", code, runtime=runtime_id, message_type=message_type,
                              message_id=corr, detail=message[:200])
        except StoreError as exc:
            log.error("%s", exc)
        return protocol.make("Error", {"error_code": code, "error_message": message}, self.terminal_id, corr)

    def refuse_frame(self, runtime_id, exc):
        """The Error answer to a frame that is not a valid ProtocolMessage (protocol.BadMessage)."""
        return self.error(exc.code, str(exc), exc.message_id, runtime_id)

    # ---- state changes ------------------------------------------------------------------------
    def move(self, s, state, reason):
        old = s.move(state)
        if state == "active" and getattr(s, "to_convert", None) is not None:
            # Only a grant that became final converts its ticket (section 4.4.1): a request then
            # refused as busy, by a policy or by the holder made no local descriptor.
            decision, s.to_convert = s.to_convert, None
            self.conversion.after_grant(self, decision)
        self.push(s.runtime_id, "SessionStateChanged", {"session_id": s.session_id, "state": state,
                                                         "previous_state": old, "reason": reason,
                                                         "suspended": s.suspended})

    async def terminate(self, s, reason):
        """End a live session: terminating, the board grant released, terminated; each step pushed."""
        if s.state not in LIVE:
            return
        if s.handover is not None:
            s.handover.settle(False)
        self.move(s, "terminating", reason)
        if reason not in BOARD_ENDED:
            await self.release_on_board(s.board, s.res, s.token, s.epoch)
        elif reason == "board_unreachable":
            # The board may still hold it (a one-way cut): ended before any heartbeat renews it.
            s.board.retired.add(s.token)
        self.move(s, "terminated", reason)
        self.registry.drop(s)
        ref = s.credential_ref
        self.audit.record("terminate", "done", reason, runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                          session=s.session_id, credential=ref["id"], epoch=s.epoch)

    async def cancel(self, s, withdraw=False):
        """Drop a session still `creating` (its requester gets the answer, not a push).

        `withdraw`: the board may hold a waiter or a grant for it; ask the board to end them.
        """
        if s.state == "creating":
            s.move("terminated")
            for h in list(self.registry.handovers.values()):
                if h.new is s:
                    h.settle(False)
        if self.registry.get(s.session_id) is s:
            self.registry.drop(s)
            if withdraw:
                await self.end_on_board(s.board, s.token)

    async def release_on_board(self, handle, res, token, epoch):
        try:
            await handle.board.release(res, token, epoch)
        except DeviceError:
            pass   # already gone on the board (stale epoch, lease ended): nothing holds it
        except LinkError:
            await self.end_on_board(handle, token)

    async def end_on_board(self, handle, token):
        """End whatever the board holds or queues for `token`. If the board does not answer, the
        token is retired and retried until it does: the engine's batched heartbeat renews every
        lease on a board, so a grant it forgot would otherwise be kept alive (liveness.py)."""
        try:
            await handle.board.end_session(token)
        except (DeviceError, LinkError):
            handle.retired.add(token)

    async def set_suspended(self, s, on, reason):
        s.suspended = on
        try:
            await s.board.board.suspend(s.token, on)
        except (DeviceError, LinkError):
            pass   # suspension is also the board's default for a late lease; the engine still refuses
        self.audit.record("suspend" if on else "resume", "done", reason, runtime=s.runtime_id, session=s.session_id)
        self.push(s.runtime_id, "SessionStateChanged", {"session_id": s.session_id, "state": s.state,
                                                         "previous_state": s.state, "reason": reason, "suspended": on})

    def push(self, runtime_id, mtype, body):
        for watch in self.watchers:
            watch(runtime_id, mtype, body)
        rt = self.registry.runtime(runtime_id)
        if not rt:
            return
        msg = protocol.make(mtype, body, self.terminal_id)
        for send in list(rt.connections):
            asyncio.ensure_future(send(msg))

    # ---- timers -------------------------------------------------------------------------------
    async def sweep(self):
        """One pass of the timers: heartbeats (AND rule), credential expiry, revocations."""
        await liveness.sweep(self)

    def _on_revocation(self, entry):
        asyncio.ensure_future(self.sweep())

    # ---- board events -------------------------------------------------------------------------
    def _on_board_event(self, h, ev):
        asyncio.ensure_future(boards.on_event(self, h, ev))

    async def reconcile(self, h):
        """Compare the engine's sessions with the board's grant table (boards.reconcile)."""
        await boards.reconcile(self, h)

    def check_grant_count(self, h, board_count):
        """After a board heartbeat: reconcile at once when the counts disagree (boards.py)."""
        return boards.check_grant_count(self, h, board_count)
