"""Humans as controlling parties (blueprint 2.4): an operator takes a resource from a Fay at
once, acts on it, hands it back to a named Fay or releases it.

- **Take** (`take`): no consent is asked of the Fay. The board moves the Fay's grant slot to
  the operator's board token in one HANDOVER (new epoch: no instant with both or neither
  holding, and from the instant it moved every frame under the Fay's epoch is refused by the
  board itself with E_DEV_STALE_EPOCH). The engine then ends the Fay's session with the reason
  `operator_takeover` (capwarden extension, docs/engine.md "Operators and take-over"). Readers
  of a shared resource are released first, the last of them moved; a free resource is acquired.
- **The operator's hold** (`OperatorHold`) is a real grant on the board under an operator
  session: a Session in the registry, so board events, reconciliation, grant counts and
  `registry.holders()` see it like any holder. It has no credential (the operator was
  authenticated by operators.py); the engine's board heartbeat keeps its lease, so a dead
  engine still lets the board's lease make the hardware safe. It holds every mode the
  resource has. A person holds only while present (faults.md 57): every take, act and
  `present()` call is the hold's heartbeat; silent for PRESENCE_TIMEOUT_MS, the engine's own
  liveness rule ends it (`heartbeat_timeout`: the operator runtime has no connection) and the
  board releases it to its safe state. It also ends when released, handed back, or when the
  board ends it (a manual override, removal, reset: the board's reason).
- **Act** (`act`): an actuation through the engine under the operator's grant and epoch.
- **Hand back** (`hand_back`) to a named Fay: that Fay's pending AuthRequest for the resource
  (one waiting with `wait_ms`), or if none is pending its next one within `timeout_s`, is
  granted by a HANDOVER from the operator's grant to the request's board token. The board
  answers the waiting ACQUIRE with the moved grant (capagent.grants.handover), so the Fay gets
  an ordinary AuthResult `granted`; the operator's hold ends with reason `handover`. The
  credential is checked at that moment; if the request went away meanwhile the grant is moved
  back to the operator in one more HANDOVER (never released in between). An AuthRequest that
  does not wait (`wait_ms` 0) while the operator holds gets E_RESOURCE_BUSY as before.
- **Release** (`release`): the operator's grant is released on the board (the resource goes to
  its safe state and to the board's first waiter).

Every action is audited with the operator's identity (`operator=`). A HandoverRequest whose
holder is an operator is refused at once (nobody to consent). Functions raise CapError with an
S2 code (E_RESOURCE_UNAVAILABLE, E_DEVICE_UNREACHABLE, E_RESOURCE_BUSY, E_PERMISSION_DENIED,
E_MALFORMED_REQUEST); controlroom.py is the API the console calls.
"""

import asyncio
import logging

from capshared.limits import MODES_EXCLUSIVE
from capshared.names import mode_bits
from capwarden.engine import admission, protocol
from capwarden.engine.registry import LIVE
from capwarden.engine.sessions import Session
from capwarden.errors import BadRequest, CapError, DeviceError, LinkError

log = logging.getLogger("capwarden.engine")

OPERATOR_PREFIX = "operator:"       # an operator hold's runtime id: "operator:" + name
TAKEOVER = "operator_takeover"       # the reason a Fay's session ends with when an operator takes it
FOREVER = 1 << 62                    # an operator hold has no credential end
TRIES = 5                            # a take that raced a grant or a release is tried again
PRESENCE_INTERVAL_MS = 5000          # how often the console says the operator is there (present())
PRESENCE_TIMEOUT_MS = 15000          # an operator's hold without a word from its console that long ends
_MOVED = ("E_DEV_NOT_HOLDER", "E_DEV_STALE_EPOCH")   # the holder's grant changed under the take


class OperatorHold(Session):
    """An operator's grant: a Session without a credential or heartbeat of its own."""

    def __init__(self, engine, operator, resource_id, target):
        self._auth = engine.authorizer
        self._clock = engine.clock
        self._wall = engine.wall
        h, res, cls = target
        modes = [m for m in ("read", "write", "execute", "configure")
                 if m in next(r.modes for r in h.board.info.resources if r.index == res)]
        exclusive = [m for m in modes if mode_bits([m]) & MODES_EXCLUSIVE]
        super().__init__(None, OPERATOR_PREFIX + operator, resource_id, (exclusive or modes)[0], engine.clock(),
                         engine.wall())
        self.operator = operator
        self.modes = modes
        self.granted_modes = tuple(modes)
        self.board, self.res = h, res
        self.interval_ms, self.timeout_ms = PRESENCE_INTERVAL_MS, PRESENCE_TIMEOUT_MS
        self.credential_ref = {"type": "operator", "id": operator, "not_after": 0, "ends_at": FOREVER,
                               "key_id": None, "issuer_id": None}
        self.returning = None               # (fay_id, deadline on the engine's clock) while handed back
        self.moving = None                  # while a hand-back moves the grant: admission.lock's word on it

    def moved(self, outcome, reason=None):
        """admission.lock's word on a hand-back's move, from the board's answer to the waiting
        request: "taken" (the request holds the grant now), "back" (the request could not keep
        it and it came back to this hold, new epoch), "lost" (neither: the grant was ended;
        `reason` for the hold), None (the board moved nothing to the request)."""
        if self.moving is not None and not self.moving.done():
            self.moving.set_result((outcome, reason))

    # The engine's liveness sweep re-checks credentials: an operator's hold has none, so it is
    # always "checked". Its heartbeat is the operator's presence (present()).
    checked_generation = property(lambda self: self._auth.generation, lambda self, v: None)

    def seen(self):
        self.last_hb_mono = self._clock()
        self.last_heartbeat_at = int(self._wall())

    @property
    def bits(self):
        return mode_bits(self.modes)


def is_operator(s):
    """True for an operator's hold (a holder no policy may preempt and no Fay may be asked about)."""
    return isinstance(s, OperatorHold)


def name_of(operator):
    """An operator's name from an operators.Operator or a plain name."""
    return getattr(operator, "name", operator)


def present(engine, operator):
    """The operator's console is there: every hold of `operator` is renewed (its heartbeat).
    Returns how many holds it has."""
    name = name_of(operator)
    holds = [s for s in engine.registry.live() if is_operator(s) and s.operator == name]
    for s in holds:
        s.seen()
    return len(holds)


def hold_of(engine, resource_id, operator=None):
    """The live operator hold on `resource_id` (of `operator` when given), or None."""
    for s in engine.registry.holders(resource_id):
        if is_operator(s) and (operator is None or s.operator == name_of(operator)):
            return s
    return None


def _target(engine, resource_id):
    target = engine.registry.resolve(resource_id)
    if target is None:
        raise CapError("E_RESOURCE_UNAVAILABLE", "no board has the resource %s, or it is absent or faulty"
                       % resource_id)
    if target[0].down:
        raise CapError("E_DEVICE_UNREACHABLE", "the board %s does not answer (%s)" % (target[0].name, target[0].down))
    if getattr(target[0].board, "override", 0) >> target[1] & 1:
        raise CapError("E_RESOURCE_BUSY", "%s is under the board's manual override (a person has it directly)"
                       % resource_id)
    return target


def _audit(engine, action, outcome, code, operator, **fields):
    return engine.audit.record(action, outcome, code, operator=operator, **fields)


# ---- take -----------------------------------------------------------------------------------
async def take(engine, operator, resource_id, notify=None):
    """The operator takes `resource_id` at once. Returns the OperatorHold (active). Raises
    CapError: E_RESOURCE_UNAVAILABLE, E_DEVICE_UNREACHABLE, E_RESOURCE_BUSY (another operator
    holds it, or the board holds a grant the engine cannot move)."""
    name = name_of(operator)
    target = _target(engine, resource_id)
    other = hold_of(engine, resource_id)
    if other is not None:
        if other.operator == name:
            other.seen()
            return other
        _audit(engine, "takeover", "denied", "E_RESOURCE_BUSY", name, resource=resource_id,
               detail="held by operator %s" % other.operator)
        raise CapError("E_RESOURCE_BUSY", "operator %s holds %s" % (other.operator, resource_id))
    engine.registry.add_runtime(OPERATOR_PREFIX + name)
    hold = OperatorHold(engine, name, resource_id, target)
    hold.token = engine.registry.new_token()
    engine.registry.add(hold)
    try:
        for attempt in range(TRIES):
            done = await _take_once(engine, hold)
            if done:
                return hold
            await asyncio.sleep(engine.tick_s)   # a grant or release under way: look again
    except BaseException:
        if hold.state == "creating":
            await engine.cancel(hold, withdraw=True)
        raise
    await engine.cancel(hold, withdraw=True)
    _audit(engine, "takeover", "denied", "E_RESOURCE_BUSY", name, resource=resource_id,
           detail="the board's grants kept changing")
    raise CapError("E_RESOURCE_BUSY", "%s: the board's grants changed under %d tries; try again" % (resource_id, TRIES))


async def _take_once(engine, hold):
    """One try: True when the operator holds the resource, False to look again. Raises CapError."""
    holders = [s for s in engine.registry.holders(hold.resource_id) if s is not hold]
    board = hold.board.board
    if not holders:
        try:
            grant = await board.acquire(hold.res, hold.bits, hold.token, engine.lease_ms, 0)
        except DeviceError as exc:
            if protocol.api_code(exc.code) == "E_RESOURCE_BUSY":
                return False          # a Fay's grant is being answered: its session appears next
            raise _refused(engine, hold, exc)
        except LinkError as exc:
            await engine.cancel(hold, withdraw=True)
            raise CapError("E_DEVICE_UNREACHABLE", str(exc)) from None
        return await _commit(engine, hold, grant.epoch, [])
    # Readers (a shared resource) are released, then the last one's slot is moved, so the
    # resource is never free in between; an exclusive holder is moved at once.
    victim = holders[-1]
    for s in holders[:-1]:
        await engine.release_on_board(s.board, s.res, s.token, s.epoch)
        await engine.terminate(s, TAKEOVER)
    try:
        grant = await board.handover(hold.res, victim.token, victim.epoch, hold.token, hold.bits, engine.lease_ms)
    except DeviceError as exc:
        if exc.code in _MOVED or protocol.api_code(exc.code) == "E_RESOURCE_BUSY":
            return False              # the holder released or was moved meanwhile: look again
        raise _refused(engine, hold, exc)
    except LinkError as exc:
        return await _unknown_outcome(engine, hold, victim, exc)
    return await _commit(engine, hold, grant.epoch, holders)


def _refused(engine, hold, exc):
    # take() withdraws the hold when this propagates.
    code = protocol.api_code(exc.code)
    _audit(engine, "takeover", "denied", code, hold.operator, resource=hold.resource_id,
           detail=protocol.refusal_text(exc)[:200])
    return CapError(code, "the board refused: %s" % protocol.refusal_text(exc))


async def _unknown_outcome(engine, hold, victim, exc):
    try:
        held = await hold.board.board.grants(hold.res)
    except LinkError:
        held = None
    for token, epoch, _m in held or ():
        if token == hold.token:
            return await _commit(engine, hold, epoch, [victim])
    await engine.cancel(hold, withdraw=True)
    if held is None:
        await engine.terminate(victim, "board_unreachable")
    raise CapError("E_DEVICE_UNREACHABLE", "the board did not answer: %s" % exc)


async def _commit(engine, hold, epoch, taken_from):
    hold.epoch = epoch
    hold.seen()
    # Release before acquire, also in what the runtimes are told (blueprint 2.4).
    for s in taken_from:
        if s.state in LIVE:
            await engine.terminate(s, TAKEOVER)
    engine.move(hold, "active", TAKEOVER if taken_from else "granted")
    _state(engine).since[hold.session_id] = int(engine.wall())
    _audit(engine, "takeover", "completed", "operator", hold.operator, resource=hold.resource_id,
           mode=",".join(hold.modes), session=hold.session_id, epoch=epoch,
           from_sessions=[s.session_id for s in taken_from], from_fays=sorted({s.fay_id for s in taken_from
                                                                                if s.fay_id}))
    _state(engine).notify({"type": "operator", "action": "take", "operator": hold.operator,
                           "resource_id": hold.resource_id, "session_id": hold.session_id})
    return True


# ---- act and release ------------------------------------------------------------------------
def _own_hold(engine, operator, resource_id):
    hold = hold_of(engine, resource_id)
    name = name_of(operator)
    if hold is None or hold.operator != name:
        _audit(engine, "operator_command", "denied", "E_PERMISSION_DENIED", name, resource=resource_id,
               detail="not held by this operator")
        raise CapError("E_PERMISSION_DENIED", "operator %s does not hold %s: take it first" % (name, resource_id))
    hold.seen()
    return hold


async def act(engine, operator, resource_id, op, args=b""):
    """Actuate `op` (0..255) with `args` (bytes) under the operator's grant: the driver's answer
    bytes. Raises CapError: E_PERMISSION_DENIED (not held by this operator), E_MALFORMED_REQUEST,
    the board's refusal (protocol.api_code), E_DEVICE_UNREACHABLE."""
    hold = _own_hold(engine, operator, resource_id)
    if not isinstance(op, int) or not 0 <= op <= 255 or not isinstance(args, (bytes, bytearray)):
        raise CapError("E_MALFORMED_REQUEST", "op is an integer 0..255 and args bytes")
    try:
        data = await hold.board.board.actuate(hold.res, hold.token, hold.epoch, op, bytes(args))
    except (BadRequest, ValueError) as exc:
        raise CapError("E_MALFORMED_REQUEST", str(exc)) from None
    except DeviceError as exc:
        _audit(engine, "operator_command", "denied", exc.code, hold.operator, resource=resource_id,
               session=hold.session_id, op=op, detail=exc.message[:200])
        raise CapError(protocol.api_code(exc.code), protocol.refusal_text(exc)) from None
    except LinkError as exc:
        raise CapError("E_DEVICE_UNREACHABLE", str(exc)) from None
    _audit(engine, "operator_command", "done", "", hold.operator, resource=resource_id, session=hold.session_id,
           op=op, epoch=hold.epoch, args=bytes(args).hex()[:64])
    return bytes(data)


async def release(engine, operator, resource_id):
    """The operator lets go: the grant is released on the board (its resource goes safe).
    Raises CapError E_PERMISSION_DENIED when this operator does not hold it."""
    hold = _own_hold(engine, operator, resource_id)
    await engine.terminate(hold, "released")
    _audit(engine, "operator_release", "done", "", hold.operator, resource=resource_id, session=hold.session_id)
    _state(engine).notify({"type": "operator", "action": "release", "operator": hold.operator,
                           "resource_id": resource_id})


# ---- hand back ------------------------------------------------------------------------------
def _pending_request(engine, resource_id, fay_id):
    """The Fay's AuthRequest waiting for `resource_id` (a session `creating`, not a handover's)."""
    offered = {h.new for h in engine.registry.handovers.values()}
    for s in engine.registry.sessions.values():
        if (s.state == "creating" and s.fay_id == fay_id and s.resource_id == resource_id and s not in offered
                and not is_operator(s)):
            return s
    return None


async def hand_back(engine, operator, resource_id, fay_id, timeout_s=30.0):
    """Give the resource to Fay `fay_id`: its pending AuthRequest now, or its next one within
    `timeout_s` (then the operator keeps it and the wait is audited). Returns {"result":
    "completed", "session_id"} or {"result": "waiting", "until"} (wall seconds; the outcome
    reaches subscribers). Raises CapError E_PERMISSION_DENIED (not this operator's),
    E_MALFORMED_REQUEST (a bad timeout)."""
    hold = _own_hold(engine, operator, resource_id)
    if not isinstance(timeout_s, (int, float)) or not 0 <= timeout_s <= 600:
        raise CapError("E_MALFORMED_REQUEST", "timeout_s is 0..600 seconds")
    _audit(engine, "hand_back", "requested", "", hold.operator, resource=resource_id, to_fay=fay_id,
           timeout_ms=int(timeout_s * 1000))
    s = _pending_request(engine, resource_id, fay_id)
    if s is not None:
        done = await _give(engine, hold, s)
        if done:
            return {"result": "completed", "session_id": s.session_id}
    hold.returning = (fay_id, engine.clock() + timeout_s)
    st = _state(engine)
    engine.spawn(_wait_for_request(engine, hold, fay_id))
    st.notify({"type": "operator", "action": "hand_back_waiting", "operator": hold.operator,
               "resource_id": resource_id, "to_fay_id": fay_id})
    return {"result": "waiting", "until": int(engine.wall() + timeout_s)}


async def _wait_for_request(engine, hold, fay_id):
    while hold.state in LIVE and hold.returning is not None and hold.returning[0] == fay_id:
        if engine.clock() >= hold.returning[1]:
            hold.returning = None
            _audit(engine, "hand_back", "timeout", "E_HANDOVER_TIMEOUT", hold.operator,
                   resource=hold.resource_id, to_fay=fay_id, detail="no request from the Fay in time: "
                   "the operator keeps control")
            _state(engine).notify({"type": "operator", "action": "hand_back_timeout", "operator": hold.operator,
                                   "resource_id": hold.resource_id, "to_fay_id": fay_id})
            return
        s = _pending_request(engine, hold.resource_id, fay_id)
        if s is not None and await _give(engine, hold, s):
            return
        await asyncio.sleep(engine.tick_s)


async def _give(engine, hold, s):
    """Move the operator's grant to the waiting session `s` (True), or leave it with the
    operator (False: the credential no longer holds, or the board refused)."""
    why = admission.recheck(engine, s, refresh=True)
    if why is not None:
        _audit(engine, "hand_back", "denied", protocol.refusal_code(s.credential_ref["type"], why), hold.operator,
               resource=hold.resource_id, to_fay=s.fay_id, detail="the Fay's credential: %s" % why)
        return False
    board = hold.board.board
    # The board answers the request's own waiting ACQUIRE with the moved grant before it answers
    # the HANDOVER, so admission.lock, which has that answer, decides: it ends this hold before
    # the session is active, or, when the request may not keep the grant (its credential was
    # revoked in the move's window, it was withdrawn), moves the grant back here. It says which
    # through hold.moved().
    hold.moving = asyncio.get_running_loop().create_future()
    s.moved_from = hold
    try:
        try:
            epoch = (await board.handover(hold.res, hold.token, hold.epoch, s.token, mode_bits([s.access_mode]),
                                          engine.lease_ms)).epoch
        except DeviceError as exc:
            _audit(engine, "hand_back", "denied", exc.code, hold.operator, resource=hold.resource_id,
                   to_fay=s.fay_id, detail=protocol.refusal_text(exc)[:200])
            return False
        except LinkError as exc:
            log.warning("hand back of %s: the board did not answer (%s); reading who holds it", hold.resource_id,
                        exc)
            try:
                held = {t: e for t, e, _m in await board.grants(hold.res)}
            except (DeviceError, LinkError):
                return False    # unknown: the operator's session is kept; reconciliation decides
            if s.token not in held:
                return False
            epoch = held[s.token]
        if s.state == "creating" and engine.registry.get(s.session_id) is s:
            # The request's answer is on its way (or lost, and retried): admission.lock's word,
            # within the time its board request may take at most.
            try:
                outcome, reason = await asyncio.wait_for(asyncio.shield(hold.moving),
                                                         board.timeout * (board.retries + 1) + 1.0)
            except asyncio.TimeoutError:
                outcome, reason = None, None
        else:
            outcome, reason = hold.moving.result() if hold.moving.done() else (None, None)
    finally:
        s.moved_from = None
        hold.moving = None
    hold.returning = None
    if outcome == "back":
        _audit(engine, "hand_back", "rolled_back", "E_SESSION_NOT_FOUND", hold.operator, resource=hold.resource_id,
               to_fay=s.fay_id, epoch=hold.epoch, detail="the Fay's request could not keep the grant (withdrawn, or "
               "its credential no longer valid when granted): it came back to the operator")
        return False
    if outcome == "lost":
        await engine.terminate(hold, reason)
        _audit(engine, "hand_back", "rolled_back", "E_SESSION_NOT_FOUND", hold.operator, resource=hold.resource_id,
               to_fay=s.fay_id, detail="the Fay's request could not keep the grant and it could not be moved back: "
               "released (%s)" % reason)
        return False
    if outcome is None and (s.state not in ("creating",) + LIVE or engine.registry.get(s.session_id) is not s):
        # The board moved the grant to a request that was gone (it did not wait, or was
        # withdrawn) before its lock saw it: it comes back to the operator in one more move,
        # never released in between.
        try:
            back = await board.handover(hold.res, s.token, epoch, hold.token, hold.bits, engine.lease_ms)
            hold.epoch = back.epoch
        except (DeviceError, LinkError):
            await engine.terminate(hold, "board_unreachable")
        _audit(engine, "hand_back", "rolled_back", "E_SESSION_NOT_FOUND", hold.operator, resource=hold.resource_id,
               to_fay=s.fay_id, detail="the Fay's request went away during the move")
        return False
    await engine.terminate(hold, "handover")
    _audit(engine, "hand_back", "completed", "", hold.operator, resource=hold.resource_id, to_fay=s.fay_id,
           to_session=s.session_id, runtime=s.runtime_id, epoch=epoch)
    _state(engine).notify({"type": "operator", "action": "hand_back", "operator": hold.operator,
                           "resource_id": hold.resource_id, "to_fay_id": s.fay_id, "session_id": s.session_id})
    return True


# ---- per-engine state -----------------------------------------------------------------------
class _State:
    """What the control room keeps beside the engine: when each holder took control, and the
    subscribers to changes. (The hand-back waits are the engine's own tasks: Engine.spawn.)"""

    def __init__(self, engine):
        self.since = {}          # session_id -> wall seconds it became the holder
        self.subscribers = []
        self.engine = engine

    def notify(self, change):
        for cb in list(self.subscribers):
            try:
                cb(change)
            except Exception:   # a subscriber's bug must not stop the engine
                log.exception("control room subscriber failed")

    def on_push(self, runtime_id, mtype, body):
        # (A HandoverRequest for an operator's hold is refused before any offer: handover.py.)
        if mtype != "SessionStateChanged":
            return
        sid = body["session_id"]
        if body["state"] == "active" and body["previous_state"] != "active":
            self.since[sid] = int(self.engine.wall())
        elif body["state"] == "terminated":
            self.since.pop(sid, None)
        s = self.engine.registry.get(sid)
        self.notify({"type": "session", "session_id": sid, "resource_id": s.resource_id if s else None,
                     "state": body["state"], "previous_state": body["previous_state"], "reason": body["reason"],
                     "suspended": body["suspended"]})


def _state(engine):
    st = getattr(engine, "_controlroom", None)
    if st is None:
        st = engine._controlroom = _State(engine)
        watchers = getattr(engine, "watchers", None)
        if watchers is not None:
            watchers.append(st.on_push)
    return st
