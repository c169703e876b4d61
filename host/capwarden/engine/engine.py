"""The Protocol_Engine: sessions over boards, behind one policy enforcement point.

Reference architecture (hyperty-runtime-architecture.txt): every runtime message enters through
`handle()`, which runs the policy enforcement point (`_enforce`) first: default deny, no
exemption list, every deny answered and audited; a runtime sees and touches only its own
sessions. One registry (`runtimes`, `sessions`, `boards`). The Board clients (the device
transports) are the only path to hardware. Everything is injected through the constructor.
"""

import asyncio
import base64
import time

from capshared.errors import DEVICE_TO_API
from capshared.limits import mode_bits
from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.engine import protocol
from capwarden.engine import liveness
from capwarden.engine.liveness import LivenessPolicy
from capwarden.engine.sessions import Session
from capwarden.errors import DeviceError, LinkError
from capwarden.link import GrantEnded, Reset, ResourceEvent

REQUESTS = {
    "AuthRequest": "AuthResult", "Heartbeat": "HeartbeatAck", "SessionRelease": "SessionReleased",
    "FayTerminated": "SessionsReleased", "SessionQuery": "SessionList", "HandoverRequest": "HandoverResult",
    "HandoverResponse": "HandoverResponseAck", "ResourceCommand": "ResourceCommandResult",
}
LIVE = ("active", "handover_pending")


class Denied(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Runtime:
    RECENT = 4096

    def __init__(self, runtime_id):
        self.runtime_id = runtime_id
        self.connections = set()      # senders: async callables taking a message dict
        self.recent = {}              # message ids seen lately: a replayed request is refused

    def seen(self, message_id):
        if message_id in self.recent:
            return True
        self.recent[message_id] = None
        if len(self.recent) > self.RECENT:
            self.recent.pop(next(iter(self.recent)))
        return False


class BoardHandle:
    def __init__(self, name, board):
        self.name = name
        self.board = board
        self.hb_seq = 0


class Handover:
    def __init__(self, holder, runtime_id, to_fay, mode, decision, timeout_ms, loop):
        self.handover_id = uuid_text(new_uuid7())
        self.holder = holder
        self.runtime_id = runtime_id
        self.to_fay = to_fay
        self.mode = mode
        self.decision = decision
        self.timeout_ms = timeout_ms
        self.answer = loop.create_future()


class Engine:
    def __init__(self, terminal, boards, audit, liveness=None, lease_ms=3000, board_heartbeat_ms=1000,
                 clock=time.monotonic, wall=time.time, tick_s=0.05, fay_bindings=None):
        self.terminal = terminal
        self.terminal_id = terminal.terminal_id
        self.boards = {name: BoardHandle(name, b) for name, b in boards.items()}
        self.audit = audit
        self.liveness = liveness or LivenessPolicy()
        self.lease_ms = lease_ms
        self.board_heartbeat_ms = board_heartbeat_ms
        self.clock = clock
        self.wall = wall
        self.tick_s = tick_s
        self.runtimes = {}
        # runtime_id -> the Fays it may act for. A runtime with a binding acts for no other Fay;
        # one without (S4 defines none) is limited only by the credentials it presents.
        self.fay_bindings = {rid: frozenset(fays) for rid, fays in (fay_bindings or {}).items()}
        self.sessions = {}
        self.handovers = {}
        self._token = 0
        self._tasks = []
        self._revocations_mtime = None
        self._next_purge = 0.0
        terminal.revocations.listeners.append(self._on_revocation)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self):
        for h in self.boards.values():
            h.board.subscribe(lambda ev, h=h: self._on_board_event(h, ev))
        self._tasks = [asyncio.ensure_future(self._board_heartbeats()), asyncio.ensure_future(self._liveness())]

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        for s in list(self.sessions.values()):
            await self._terminate(s, "engine_stopped")

    def add_runtime(self, runtime_id):
        return self.runtimes.setdefault(runtime_id, Runtime(runtime_id))

    def connected(self, runtime_id, send):
        self.add_runtime(runtime_id).connections.add(send)

    def disconnected(self, runtime_id, send):
        rt = self.runtimes.get(runtime_id)
        if rt:
            rt.connections.discard(send)

    # ---- the one entry point ----------------------------------------------------------------
    async def handle(self, runtime_id, msg):
        """The final response to one request (a message dict). Never raises for bad input."""
        mtype = msg["message_type"]
        corr = msg["message_id"]
        try:
            self._enforce(runtime_id, msg)
            body = await getattr(self, "_do_" + mtype)(runtime_id, msg["body"])
            return protocol.make(REQUESTS[mtype], body, self.terminal_id, corr)
        except Denied as d:
            self.audit.record("deny", "denied", d.code, runtime=runtime_id, message_type=mtype,
                              detail=d.message[:200])
            return self.error(d.code, d.message, corr)

    def error(self, code, message, corr=None):
        return protocol.make("Error", {"error_code": code, "error_message": message}, self.terminal_id, corr)

    def _enforce(self, runtime_id, msg):
        # Default deny: only the listed requests, only from the sender the connection proves,
        # only on the sender's own sessions and handovers.
        if runtime_id not in self.runtimes:
            raise Denied("E_PERMISSION_DENIED", "unknown runtime")
        sender = msg.get("sender_id")
        if sender is not None and sender != runtime_id:
            raise Denied("E_PERMISSION_DENIED", "sender_id %r is not this connection's runtime" % sender)
        mtype = msg["message_type"]
        if mtype not in REQUESTS:
            raise Denied("E_PERMISSION_DENIED", "%s is not a request a runtime may send" % mtype)
        if self.runtimes[runtime_id].seen(msg["message_id"]):
            # The same message twice is a replay, not a second command (attacks.md I72).
            raise Denied("E_MALFORMED_REQUEST", "message_id %s was already used" % msg["message_id"])
        body = msg["body"]
        fay = body.get("fay_id") or body.get("to_fay_id")
        bound = self.fay_bindings.get(runtime_id)
        if fay is not None and bound is not None and fay not in bound:
            raise Denied("E_PERMISSION_DENIED", "runtime %s does not act for %s" % (runtime_id, fay))
        if mtype in ("SessionRelease", "ResourceCommand") or (mtype == "SessionQuery" and "session_id" in body):
            self._own(runtime_id, body["session_id"])
        if mtype == "HandoverResponse":
            h = self.handovers.get(body["handover_id"])
            if h is None:
                raise Denied("E_HANDOVER_TIMEOUT", "no pending handover %s (answered late, or never offered)"
                             % body["handover_id"])
            if h.holder.runtime_id != runtime_id:
                raise Denied("E_PERMISSION_DENIED", "only the holder answers a handover offer")

    def _own(self, runtime_id, session_id):
        s = self.sessions.get(session_id)
        if s is None:
            raise Denied("E_SESSION_NOT_FOUND", "no session %s" % session_id)
        if s.runtime_id != runtime_id:
            raise Denied("E_PERMISSION_DENIED", "session %s belongs to another runtime" % session_id)
        return s

    # ---- requests -----------------------------------------------------------------------------
    async def _do_AuthRequest(self, runtime_id, b):
        s, decision = self._new_session(runtime_id, b["fay_id"], b["resource_id"], b["access_mode"], b["credential"])
        if s.state == "terminated":
            return {"resource_id": b["resource_id"], "access_mode": b["access_mode"], "result": "denied",
                    "error_code": decision.error_code, "error_message": decision.message}
        return await self._do_AuthRequest_for(s, b.get("wait_ms", 0))

    async def _do_AuthRequest_for(self, s, wait_ms=0):
        """Lock a checked session's resource on its board: AuthResult body."""
        runtime_id = s.runtime_id
        result = {"resource_id": s.resource_id, "access_mode": s.access_mode}
        try:
            grant = await s.board.board.acquire(s.res, mode_bits([s.access_mode]), s.token, self.lease_ms, wait_ms)
        except DeviceError as exc:
            return self._denied_after_device(s, result, DEVICE_TO_API.get(exc.code, exc.code), exc.message)
        except LinkError as exc:
            return self._denied_after_device(s, result, "E_DEVICE_UNREACHABLE", str(exc))
        if s.state != "creating":  # the Fay or runtime went away while it waited (faults.md 28)
            await self._release_on_board(s, grant.epoch)
            result.update(result="denied", error_code="E_SESSION_NOT_FOUND", error_message="the session ended while waiting")
            return result
        s.epoch = grant.epoch
        s.last_hb_mono = self.clock()
        self._move(s, "active", "granted")
        self.audit.record("acquire", "granted", "", runtime=runtime_id, fay=s.fay_id, resource=s.resource_id,
                          mode=s.access_mode, session=s.session_id, credential=s.credential_ref["id"],
                          credential_type=s.credential_ref["type"], key_id=s.credential_ref["key_id"],
                          issuer=s.credential_ref["issuer_id"], epoch=s.epoch)
        result.update(result="granted", session_id=s.session_id, granted_modes=list(s.granted_modes),
                      expires_at=s.credential_ref["not_after"], heartbeat_interval_ms=s.interval_ms,
                      heartbeat_timeout_ms=s.timeout_ms)
        return result

    def _denied_after_device(self, s, result, code, message):
        s.move("terminated")
        self.sessions.pop(s.session_id, None)
        self.audit.record("acquire", "denied", code, runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                          mode=s.access_mode, credential=s.credential_ref["id"], detail=message[:200])
        result.update(result="denied", error_code=code, error_message=message)
        return result

    def _new_session(self, runtime_id, fay_id, resource_id, mode, credential):
        """A session in `creating` (registered) or `terminated` (denied), and the decision."""
        s = Session(fay_id, runtime_id, resource_id, mode, self.clock())
        decision = self._check_credential(credential, fay_id, resource_id, mode)
        target = self._resolve(resource_id) if decision.granted else None
        if decision.granted and target is None:
            decision.granted = False
            decision.error_code = "E_RESOURCE_UNAVAILABLE"
            decision.message = "no board has the resource %s" % resource_id
        if not decision.granted:
            s.move("terminated")
            self.audit.record("acquire", "denied", decision.error_code, runtime=runtime_id, fay=fay_id,
                              resource=resource_id, mode=mode, credential=decision.credential_id,
                              key_id=decision.key_id, detail=decision.message[:200])
            return s, decision
        s.board, s.res, cls = target
        s.interval_ms, s.timeout_ms = self.liveness.for_class(cls)
        s.granted_modes = decision.granted_modes
        s.credential_ref = {"type": decision.kind, "id": decision.credential_id, "not_after": decision.not_after,
                            "issuer_id": decision.issuer_id, "key_id": decision.key_id}
        md = getattr(decision.credential, "metadata", None)
        if md and md.get("origin") == "converted_from_ticket":
            # dies with its ticket (attacks.md F59), also mid-session
            s.credential_ref["origin"] = (md.get("origin_iss", ""), md.get("origin_jti", ""))
        self._token = self._token % ((1 << 30) - 1) + 1
        s.token = self._token
        self.sessions[s.session_id] = s
        return s, decision

    def _check_credential(self, credential, fay_id, resource_id, mode):
        now = int(self.wall())
        if credential["type"] == "descriptor_ref":
            return self.terminal.decide_descriptor(credential["descriptor_id"], fay_id, resource_id, mode, now)
        return self.terminal.validator.check_ticket(credential["ticket"], fay_id, resource_id, mode, now)

    def _resolve(self, resource_id):
        """(board handle, resource index, class) for TERMINAL/BOARD/RESOURCE, or None."""
        prefix = self.terminal_id + "/"
        if not resource_id.startswith(prefix):
            return None
        parts = resource_id[len(prefix):].split("/")
        if len(parts) != 2 or parts[0] not in self.boards:
            return None
        h = self.boards[parts[0]]
        for r in h.board.info.resources:
            if r.name == parts[1]:
                return (h, r.index, r.cls) if r.state == "present" else None
        return None

    async def _do_Heartbeat(self, runtime_id, b):
        alive, unknown = [], []
        now = self.clock()
        for sid in b["session_ids"]:
            s = self.sessions.get(sid)
            if s is None or s.runtime_id != runtime_id or s.state not in LIVE:
                unknown.append(sid)   # another runtime's session is "unknown" here: nothing leaks
                continue
            s.last_hb_mono = now
            s.last_heartbeat_at = int(self.wall())
            if s.suspended:
                await self._set_suspended(s, False, "heartbeat_resumed")
            alive.append(sid)
        return {"alive": alive, "unknown": unknown}

    async def _do_SessionRelease(self, runtime_id, b):
        s = self.sessions[b["session_id"]]
        await self._terminate(s, "released")
        return {"session_id": s.session_id}

    async def _do_FayTerminated(self, runtime_id, b):
        ids = []
        for s in list(self.sessions.values()):
            if s.runtime_id == runtime_id and s.fay_id == b["fay_id"]:
                ids.append(s.session_id)
                await self._terminate(s, "fay_terminated")
        return {"session_ids": ids}

    async def _do_SessionQuery(self, runtime_id, b):
        mine = [s for s in self.sessions.values() if s.runtime_id == runtime_id and s.state != "creating"]
        if "session_id" in b:
            mine = [s for s in mine if s.session_id == b["session_id"]]
        return {"sessions": [s.to_json() for s in mine]}

    async def _do_ResourceCommand(self, runtime_id, b):
        s = self.sessions[b["session_id"]]
        if s.state != "active":
            raise Denied("E_PERMISSION_DENIED", "session %s is %s" % (s.session_id, s.state))
        try:
            args = base64.urlsafe_b64decode(b.get("args", "") + "=" * (-len(b.get("args", "")) % 4))
        except ValueError:
            raise Denied("E_MALFORMED_REQUEST", "args must be base64url") from None
        try:
            data = await s.board.board.actuate(s.res, s.token, s.epoch, b["op"], args)
        except DeviceError as exc:
            self.audit.record("command", "denied", exc.code, runtime=runtime_id, session=s.session_id, op=b["op"])
            raise Denied(DEVICE_TO_API.get(exc.code, exc.code), "%s (board: %s)" % (exc.message, exc.code)) from None
        except LinkError as exc:
            raise Denied("E_DEVICE_UNREACHABLE", str(exc)) from None
        return {"session_id": s.session_id, "op": b["op"], "data": base64.urlsafe_b64encode(data).rstrip(b"=").decode()}

    # ---- handover (first form: the holder's consent) -----------------------------------------
    async def _do_HandoverRequest(self, runtime_id, b):
        from capwarden.engine.handover import request_handover

        return await request_handover(self, runtime_id, b)

    async def _do_HandoverResponse(self, runtime_id, b):
        h = self.handovers[b["handover_id"]]
        if not h.answer.done():
            h.answer.set_result(bool(b["accept"]))
        return {"handover_id": h.handover_id}

    # ---- state changes ------------------------------------------------------------------------
    def _move(self, s, state, reason):
        old = s.move(state)
        self.push(s.runtime_id, "SessionStateChanged", {"session_id": s.session_id, "state": state,
                                                         "previous_state": old, "reason": reason,
                                                         "suspended": s.suspended})

    async def _terminate(self, s, reason):
        if s.state == "creating":
            s.move("terminated")             # an acquire in flight sees this and gives the lock back
            self.sessions.pop(s.session_id, None)
            return
        if s.state not in LIVE:
            return
        if s.handover is not None and not s.handover.answer.done():
            s.handover.answer.set_result(False)
        self._move(s, "terminating", reason)
        if reason not in ("resource_removed", "resource_fault", "board_reset", "lease_expired", "handover"):
            await self._release_on_board(s, s.epoch)
        self._move(s, "terminated", reason)
        self.sessions.pop(s.session_id, None)
        self.audit.record("terminate", "done", reason, runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                          session=s.session_id, credential=s.credential_ref["id"] if s.credential_ref else None,
                          epoch=s.epoch)

    async def _release_on_board(self, s, epoch):
        try:
            await s.board.board.release(s.res, s.token, epoch)
        except DeviceError:
            pass   # already gone on the board (stale epoch, lease ended): nothing holds it
        except LinkError:
            pass   # the board's lease will end the grant and drive the hardware safe

    async def _set_suspended(self, s, on, reason):
        s.suspended = on
        try:
            await s.board.board.suspend(s.token, on)
        except (DeviceError, LinkError):
            pass
        self.audit.record("suspend" if on else "resume", "done", reason, runtime=s.runtime_id, session=s.session_id)
        self.push(s.runtime_id, "SessionStateChanged", {"session_id": s.session_id, "state": s.state,
                                                         "previous_state": s.state, "reason": reason, "suspended": on})

    def push(self, runtime_id, mtype, body):
        rt = self.runtimes.get(runtime_id)
        if not rt:
            return
        msg = protocol.make(mtype, body, self.terminal_id)
        for send in list(rt.connections):
            asyncio.ensure_future(send(msg))

    # ---- timers (capwarden.engine.liveness) --------------------------------------------------
    async def _board_heartbeats(self):
        await liveness.board_heartbeats(self)

    async def _liveness(self):
        await liveness.run(self)

    async def sweep(self):
        """One pass of the timers: heartbeats (AND rule), credential expiry, revocations."""
        await liveness.sweep(self)

    def _on_revocation(self, entry):
        asyncio.ensure_future(self.sweep())

    # ---- board events -------------------------------------------------------------------------
    def _on_board_event(self, h, ev):
        asyncio.ensure_future(self._board_event(h, ev))

    async def _board_event(self, h, ev):
        if isinstance(ev, GrantEnded):
            for s in list(self.sessions.values()):
                if s.board is h and s.res == ev.res and s.token == ev.session:
                    reason = {"removed": "resource_removed", "fault": "resource_fault"}.get(ev.reason, ev.reason)
                    await self._terminate(s, reason)
        elif isinstance(ev, ResourceEvent) and ev.state != "present":
            for s in list(self.sessions.values()):
                if s.board is h and s.res == ev.res:
                    await self._terminate(s, "resource_removed" if ev.state == "absent" else "resource_fault")
        elif isinstance(ev, Reset):
            for s in list(self.sessions.values()):
                if s.board is h:
                    await self._terminate(s, "board_reset")
