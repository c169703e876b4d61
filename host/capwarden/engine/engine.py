"""The Protocol_Engine: sessions over boards, behind one policy enforcement point.

Reference architecture (hyperty-runtime-architecture.txt), mapped:

    message bus         `handle()`: the one entry point for every runtime message
    enforcement point   `pep.PolicyEnforcementPoint`: default deny, every deny answered and audited
    registry            `registry.Registry`: runtimes, sessions, boards and resources, offers
    protocol stubs      the boards' `capwarden.link.Board` clients: the only path to hardware

Everything is passed in through the constructor: the authorizer (credentials), the board
clients, the audit log, the liveness policy and the clocks. `liveness.py` runs the timers,
`handover.py` the consent handover, `boards.py` the boards' events, link loss and
reconciliation, `sessions.py` holds the state machine.
"""

import asyncio
import base64
import contextvars
import json
import logging
import time

from capshared.limits import mode_bits
from capwarden.engine import boardconfig, boards, handover, liveness, protocol
from capwarden.engine.liveness import LivenessPolicy
from capwarden.engine.pep import PolicyEnforcementPoint
from capwarden.engine.registry import LIVE, Registry
from capwarden.engine.sessions import Session
from capwarden.errors import CapError, DeviceError, LinkError, StoreError

log = logging.getLogger("capwarden.engine")

# request -> its final response (S3, plus the two extensions in docs/DECISIONS.md)
REQUESTS = {
    "AuthRequest": "AuthResult", "Heartbeat": "HeartbeatAck", "SessionRelease": "SessionReleased",
    "FayTerminated": "SessionsReleased", "SessionQuery": "SessionList", "HandoverRequest": "HandoverResult",
    "HandoverResponse": "HandoverResponseAck", "ResourceCommand": "ResourceCommandResult",
}
# The board already ended these grants itself (or moved them): nothing to release there.
BOARD_ENDED = ("resource_removed", "resource_fault", "board_reset", "lease_expired", "failsafe", "handover",
               "board_unreachable")

# Set by a handler whose answer needs only the audit entries up to this seq on disk (the rest
# are facts recorded after the decision, synced with the next flush): read by the server in
# the request's own task, after handle() returns. Unset: every entry recorded so far.
ANSWER_SEQ = contextvars.ContextVar("ANSWER_SEQ", default=None)


def _fingerprint(msg):
    return json.dumps([msg["message_type"], msg.get("sender_id"), msg["body"]], sort_keys=True, separators=(",", ":"))


class Engine:
    def __init__(self, authorizer, boards, audit, liveness=None, lease_ms=3000, board_heartbeat_ms=1000,
                 clock=time.monotonic, wall=time.time, tick_s=0.05, fay_bindings=None,
                 max_busy_ms=liveness.MAX_BUSY_MS, board_settings=None):
        self.authorizer = authorizer
        self.terminal_id = authorizer.terminal_id
        self.registry = Registry(self.terminal_id, boards)
        self.pep = PolicyEnforcementPoint(self.registry, fay_bindings)
        self.audit = audit
        self.liveness = liveness or LivenessPolicy()
        self.lease_ms = lease_ms
        self.board_heartbeat_ms = board_heartbeat_ms
        self.clock = clock
        self.wall = wall
        self.tick_s = tick_s
        self.max_busy_ms = max_busy_ms
        self.board_settings = dict(board_settings or {})   # boardconfig: given at start and after a reset
        self.sessions = self.registry.sessions      # the registry's, named for readers and tools
        self.handlers = {
            "AuthRequest": self._auth_request, "Heartbeat": self._heartbeat, "SessionRelease": self._release,
            "FayTerminated": self._fay_terminated, "SessionQuery": self._query,
            "HandoverRequest": self._handover_request, "HandoverResponse": self._handover_response,
            "ResourceCommand": self._command,
        }
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
        self._tasks = [asyncio.ensure_future(liveness.board_heartbeats(self)), asyncio.ensure_future(liveness.run(self))]

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        for s in list(self.sessions.values()):
            if s.state == "creating":
                await self.cancel(s, withdraw=True)
            else:
                await self.terminate(s, "engine_stopped")

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
        try:
            target = self.pep.check(runtime_id, msg)
            body = await self.handlers[mtype](runtime_id, msg["body"], target, origin)
        except CapError as d:
            return self._deny(runtime_id, mtype, mid, d)
        return protocol.make(REQUESTS[mtype], body, self.terminal_id, mid)

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

    # ---- AuthRequest ------------------------------------------------------------------------
    async def _auth_request(self, runtime_id, b, _target, origin):
        s, decision = self.new_session(runtime_id, b["fay_id"], b["resource_id"], b["access_mode"], b["credential"],
                                       origin=origin)
        if s is None:
            return {"resource_id": b["resource_id"], "access_mode": b["access_mode"], "result": "denied",
                    "error_code": decision.error_code, "error_message": decision.message}
        wait_ms = b.get("wait_ms", 0)
        return await self.lock(s, wait_ms, audit_first=not wait_ms)

    def new_session(self, runtime_id, fay_id, resource_id, mode, credential, origin=None, action="acquire"):
        """(session in `creating`, decision) when the credential grants it and the resource is
        there; (None, decision) when denied (audited)."""
        wall = int(self.wall())
        decision = self.authorizer.check(credential, fay_id, resource_id, mode, wall)
        target = self.registry.resolve(resource_id) if decision.granted else None
        if decision.granted and target is None:
            decision.granted = False
            decision.error_code = "E_RESOURCE_UNAVAILABLE"
            decision.message = "no board has the resource %s, or it is absent or faulty" % resource_id
        elif decision.granted and target[0].down:
            decision.granted = False
            decision.error_code = "E_DEVICE_UNREACHABLE"
            decision.message = "the board %s does not answer (%s)" % (target[0].name, target[0].down)
        if not decision.granted:
            self.audit.record(action, "denied", decision.error_code, runtime=runtime_id, fay=fay_id,
                              resource=resource_id, mode=mode, credential=decision.credential_id,
                              key_id=decision.key_id, issuer=decision.issuer_id, detail=decision.message[:200])
            return None, decision
        s = Session(fay_id, runtime_id, resource_id, mode, self.clock(), wall)
        s.board, s.res, cls = target
        s.interval_ms, s.timeout_ms = self.liveness.for_class(cls)
        s.granted_modes = decision.granted_modes
        s.credential_ref = self.authorizer.reference(decision)
        s.checked_generation = self.authorizer.generation
        s.origin = origin
        s.token = self.registry.new_token()
        self.registry.add(s)
        return s, decision

    async def lock(self, s, wait_ms=0, audit_first=False):
        """Take a checked session's lock on its board: the AuthResult body.

        `audit_first` (an AuthRequest that does not wait): the grant's audit entry is written
        before the board is asked, so that its sync runs while the board answers; the board's
        epoch follows in a `lock` entry, and a board that refuses gets its `denied` entry after
        it (docs/DECISIONS.md, "The grant's audit entry before the board's lock").
        """
        result = {"resource_id": s.resource_id, "access_mode": s.access_mode}
        early = None
        if audit_first:
            try:
                early = self._granted_entry(s, None)   # "authorized": no epoch before the board's
            except StoreError:
                await self.cancel(s)          # nothing asked of the board yet
                raise
        try:
            grant = await s.board.board.acquire(s.res, mode_bits([s.access_mode]), s.token, self.lease_ms, wait_ms)
        except DeviceError as exc:
            return await self._denied_after_board(s, result, protocol.api_code(exc.code), protocol.refusal_text(exc),
                                                  exc.message)
        except LinkError as exc:
            # The board may have granted it with the answer lost: withdraw whatever it holds.
            return await self._denied_after_board(s, result, "E_DEVICE_UNREACHABLE", str(exc), withdraw=True)
        if s.state != "creating":  # withdrawn while it waited (faults.md 28): the grant is voided
            await self.release_on_board(s.board, s.res, s.token, grant.epoch)
            self.audit.record("acquire", "denied", "E_SESSION_NOT_FOUND", runtime=s.runtime_id, fay=s.fay_id,
                              resource=s.resource_id, mode=s.access_mode, credential=s.credential_ref["id"],
                              detail="withdrawn while it waited")
            result.update(result="denied", error_code="E_SESSION_NOT_FOUND",
                          error_message="the request was withdrawn while it waited")
            return result
        # The credential was checked before the board was asked; a queued request may have waited
        # while it was revoked or ran out. Checked again at the moment of use.
        why = self.recheck(s, refresh=bool(wait_ms))
        if why is not None:
            await self.release_on_board(s.board, s.res, s.token, grant.epoch)
            code = protocol.refusal_code(s.credential_ref["type"], why)
            return await self._denied_after_board(s, result, code, "the credential is no longer valid (%s): checked "
                                                  "again when the resource was granted" % why.replace("_", " "))
        s.epoch = grant.epoch
        s.last_hb_mono = self.clock()
        self.move(s, "active", "granted")
        if early is None:
            self._granted_entry(s, s.epoch)
        else:
            # The answer's own entry is `early` (on disk by the time the answer goes); the epoch
            # is the board's fact, synced with the next flush, before anything else is answered.
            self.audit.record("lock", "granted", "", runtime=s.runtime_id, resource=s.resource_id,
                              session=s.session_id, epoch=s.epoch)
            ANSWER_SEQ.set(early["seq"])
        result.update(result="granted", **self.auth_fields(s))
        return result

    def _granted_entry(self, s, epoch):
        ref = s.credential_ref
        # Written before the board was asked (epoch None), the entry says what the engine
        # decided, "authorized"; the board's answer follows (lock granted, or acquire denied).
        # Written after, it says what happened, "granted". "granted" always means the board did.
        return self.audit.record("acquire", "granted" if epoch is not None else "authorized", "",
                                 runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                                 mode=s.access_mode, session=s.session_id, credential=ref["id"],
                                 credential_type=ref["type"], key_id=ref["key_id"], issuer=ref["issuer_id"],
                                 epoch=epoch)

    def auth_fields(self, s):
        return {"session_id": s.session_id, "granted_modes": list(s.granted_modes),
                "expires_at": s.credential_ref["ends_at"], "heartbeat_interval_ms": s.interval_ms,
                "heartbeat_timeout_ms": s.timeout_ms}

    async def _denied_after_board(self, s, result, code, message, detail=None, withdraw=False):
        already = s.state != "creating"
        await self.cancel(s, withdraw=withdraw)
        if already:
            code, message = "E_SESSION_NOT_FOUND", "the request was withdrawn while it waited"
        self.audit.record("acquire", "denied", code, runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                          mode=s.access_mode, credential=s.credential_ref["id"], detail=(detail or message)[:200])
        result.update(result="denied", error_code=code, error_message=message)
        return result

    def recheck(self, s, refresh=False):
        """None while the credential behind `s` would still be granted now, else the reason
        (authorizer.still_valid). Cheap when nothing changed since the last check; `refresh`
        first picks up what other processes wrote into the store (after a wait)."""
        wall = int(self.wall())
        auth = self.authorizer
        if refresh:
            auth.refresh(wall)
        if s.checked_generation == auth.generation and wall < s.credential_ref["ends_at"]:
            return None
        why = auth.still_valid(s.credential_ref, wall)
        if why is None:
            s.checked_generation = auth.generation
        return why

    # ---- the other requests -------------------------------------------------------------------
    async def _heartbeat(self, runtime_id, b, target, _origin):
        alive, unknown = target
        now = self.clock()
        wall = int(self.wall())
        # busy_ms (faults.md 18): the runtime is in a long but healthy operation and promises its
        # next heartbeat within that time; bounded by the engine's maximum, which the ack reports.
        busy = min(b.get("busy_ms", 0), self.max_busy_ms)
        kept = []
        for s in alive:
            why = self.recheck(s)         # a heartbeat must not renew what a fresh request would not get
            if why is not None:
                await self.terminate(s, why)
                unknown.append(s.session_id)
                continue
            kept.append(s)
            s.last_hb_mono = now
            s.last_heartbeat_at = wall
            s.busy_ms = busy
            if s.suspended:
                await self.set_suspended(s, False, "heartbeat_resumed")
        body = {"alive": [s.session_id for s in kept], "unknown": unknown}
        if "busy_ms" in b:
            body["busy_ms"] = busy
            if busy and kept:
                self.audit.record("busy", "granted", "heartbeat_busy", runtime=runtime_id,
                                  sessions=[s.session_id for s in kept], requested_ms=b["busy_ms"], busy_ms=busy)
        return body

    async def _release(self, runtime_id, b, s, _origin):
        await self.terminate(s, "released")
        return {"session_id": s.session_id}

    async def _fay_terminated(self, runtime_id, b, _target, _origin):
        ids = []
        for s in self.registry.of_runtime(runtime_id, b["fay_id"], live_only=False):
            if s.state == "creating":
                await self.cancel(s, withdraw=True)    # its requester is told by its own answer
            elif s.state in LIVE:
                ids.append(s.session_id)
                await self.terminate(s, "fay_terminated")
        return {"session_ids": ids}

    async def _query(self, runtime_id, b, sessions, _origin):
        return {"sessions": [s.to_json() for s in sessions]}

    async def _handover_request(self, runtime_id, b, _target, origin):
        return await handover.request_handover(self, runtime_id, b, origin)

    async def _handover_response(self, runtime_id, b, h, _origin):
        h.settle(b["accept"])
        return {"handover_id": h.handover_id}

    async def _command(self, runtime_id, b, s, _origin):
        # Allowed while active or while a handover is offered (the holder keeps control until it
        # consents). Suspension, mode and epoch are enforced by the board itself.
        args = b.get("args", "")
        try:
            raw = base64.urlsafe_b64decode(args + "=" * (-len(args) % 4))
        except ValueError:
            raise CapError("E_MALFORMED_REQUEST", "args must be base64url without padding") from None
        why = self.recheck(s)             # the grant was decided earlier: its credential is checked now
        if why is not None:
            await self.terminate(s, why)
            raise CapError(protocol.refusal_code(s.credential_ref["type"], why), "the session's credential is no "
                           "longer valid (%s): the session ended" % why.replace("_", " "))
        try:
            data = await s.board.board.actuate(s.res, s.token, s.epoch, b["op"], raw)
        except DeviceError as exc:
            self.audit.record("command", "denied", exc.code, runtime=runtime_id, session=s.session_id, op=b["op"],
                              detail=exc.message[:200])
            raise CapError(protocol.api_code(exc.code), protocol.refusal_text(exc)) from None
        except LinkError as exc:
            raise CapError("E_DEVICE_UNREACHABLE", str(exc)) from None
        return {"session_id": s.session_id, "op": b["op"], "data": base64.urlsafe_b64encode(data).rstrip(b"=").decode()}

    # ---- state changes ------------------------------------------------------------------------
    def move(self, s, state, reason):
        old = s.move(state)
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
