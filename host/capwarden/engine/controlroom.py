"""The control room: what the operator console (served by the engine) reads and does.

Every function takes the running Engine. Reads are plain dicts ready for JSON; actions are
coroutines run on the engine's event loop, take the operator (an `operators.Operator`, or
its name) that the console authenticated, audit with that identity, and raise CapError with
an S2 code when refused (the console maps codes to HTTP answers):

    attach(engine)                       once, when the engine is made (app.py); idempotent
    snapshot(engine) -> dict             every board and resource, its holders and waiters
    subscribe(engine, callback) -> stop  callback(change: dict) on every change; stop() ends it
    await take(engine, operator, resource_id) -> holder dict      at once, no Fay is asked
    await act(engine, operator, resource_id, op, args=b"") -> {"resource_id", "op", "data"}
    await hand_back(engine, operator, resource_id, fay_id, timeout_s=30.0)
          -> {"result": "completed", "session_id"} | {"result": "waiting", "until"}
    await release(engine, operator, resource_id) -> {"resource_id", "released": True}
    present(engine, operator) -> int     the operator is at the console: renews its holds

An operator holds only while present (faults.md 57): take, act and present() renew the hold;
after takeover.PRESENCE_TIMEOUT_MS (15 s) without any, the engine ends it (heartbeat_timeout)
and the resource goes to its safe state. The console calls present() for the logged-in
operator at least every takeover.PRESENCE_INTERVAL_MS (5 s) while the page is open (each
holder entry also says "heartbeat_interval_ms" and "heartbeat_timeout_ms").

snapshot(engine):

    {"terminal_id": str, "at": wall seconds,
     "boards": [{"name", "up": bool, "down": why or None, "agent_version", "boot_id",
                 "override": [resource names under the board's manual override],
                 "resources": [{"resource_id", "name", "class", "modes": [...],
                                "state": "present" | "absent" | "fault",
                                "override": bool,            # the board's manual override is on
                                "mode": "exclusive" | "shared" | "free",
                                "holders": [holder, ...],    # at most one when exclusive
                                "waiting": [{"fay_id", "session_id", "mode", "since"}],
                                "returning_to": fay_id or None}]}]}

    holder = {"kind": "fay" | "operator", "fay_id" (fay) | "operator" (operator),
              "runtime_id" (fay), "session_id", "mode", "state" ("active" | "handover_pending"),
              "epoch", "since" (wall seconds it became the holder), "suspended": bool,
              "lease_ms" (the board lease, renewed by the engine's board heartbeat every
              "board_heartbeat_ms"), "heartbeat_interval_ms", "heartbeat_timeout_ms",
              "last_heartbeat_at" (wall seconds: a Fay's last heartbeat, an operator's last
              word from the console), "expires_at" (the credential's end; an operator: null)}

Changes passed to subscribers (the console re-reads snapshot() or patches its view):

    {"type": "session", "session_id", "resource_id", "state", "previous_state", "reason",
     "suspended"}                                         every SessionStateChanged
    {"type": "board", "board", "event": "resource" | "override" | "reset" | "link_down" |
     "link_up" | "failsafe" | "grant_ended", ...}        a board's own event
    {"type": "operator", "action": "take" | "release" | "hand_back" | "hand_back_waiting" |
     "hand_back_timeout", "operator", "resource_id", ...}

Callbacks are called on the event loop, synchronously: they must not block (schedule work).
What an operator's hold is, and exactly how hand-back works: takeover.py.
"""

from capshared.limits import MODES_EXCLUSIVE
from capshared.names import mode_bits
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.engine import takeover
from capwarden.engine.registry import LIVE
from capwarden.errors import CapError
from capwarden.link import Failsafe, GrantEnded, LinkDown, LinkUp, ManualOverride, Reset, ResourceEvent


def attach(engine):
    """Start watching `engine` (its session pushes and its boards' events). Idempotent."""
    return _watch(engine)


def _watch(engine):
    st = takeover._state(engine)
    if not getattr(st, "boards_watched", False):
        st.boards_watched = True
        for h in engine.registry.boards.values():
            h.board.subscribe(lambda ev, h=h: _on_board(st, h, ev))
    return st


def _on_board(st, h, ev):
    change = {"type": "board", "board": h.name}
    if isinstance(ev, ResourceEvent):
        change.update(event="resource", resource=ev.name, state=ev.state, reason=ev.reason)
    elif isinstance(ev, GrantEnded):
        change.update(event="grant_ended", resource=ev.name, reason=ev.reason)
    elif isinstance(ev, Reset):
        change.update(event="reset")
    elif isinstance(ev, LinkDown):
        change.update(event="link_down", why=ev.why)
    elif isinstance(ev, LinkUp):
        change.update(event="link_up", why=ev.why)
    elif isinstance(ev, Failsafe):
        change.update(event="failsafe", reason=ev.reason)
    elif isinstance(ev, ManualOverride):
        change.update(event="override", resources=list(ev.names), ended=ev.ended)
    else:
        return
    st.notify(change)


def subscribe(engine, callback):
    """callback(change) on every change (see the module's docstring). Returns stop()."""
    st = _watch(engine)
    st.subscribers.append(callback)

    def stop():
        if callback in st.subscribers:
            st.subscribers.remove(callback)
    return stop


def snapshot(engine):
    """Every board and resource as the engine sees it now (see the module's docstring)."""
    st = _watch(engine)
    boards = []
    for h in engine.registry.boards.values():
        info = h.board.info
        mask = getattr(h.board, "override", 0)
        resources = []
        for r in info.resources:
            rid = "%s/%s/%s" % (engine.terminal_id, h.name, r.name)
            holders = [_holder(engine, st, s) for s in engine.registry.on_board(h, r.index) if s.state in LIVE]
            waiting = [{"fay_id": s.fay_id, "session_id": s.session_id, "mode": s.access_mode,
                        "since": s.created_at}
                       for s in engine.registry.on_board(h, r.index) if s.state == "creating" and s.fay_id]
            hold = takeover.hold_of(engine, rid)
            excl = any(mode_bits([x["mode"]]) & MODES_EXCLUSIVE for x in holders)
            resources.append({"resource_id": rid, "name": r.name, "class": r.cls, "modes": list(r.modes),
                              "state": r.state, "override": bool(mask >> r.index & 1),
                              "mode": "exclusive" if excl else "shared" if holders else "free",
                              "holders": holders, "waiting": waiting,
                              "returning_to": hold.returning[0] if hold is not None and hold.returning else None})
        boards.append({"name": h.name, "up": not h.down, "down": h.down, "agent_version": info.agent_version,
                       "boot_id": info.boot_id,
                       "override": [r.name for r in info.resources if mask >> r.index & 1],
                       "resources": resources})
    online = getattr(engine, "online", None)
    return {"terminal_id": engine.terminal_id, "at": int(engine.wall()), "boards": boards,
            "online": online.status() if online is not None else None}


def terminal_changed(engine, mode):
    """The terminal went degraded or online (engine/modepush.py): subscribers look again."""
    st = getattr(engine, "_controlroom", None)     # nobody watching yet: nobody to tell
    if st is not None:
        st.notify({"type": "terminal", "mode": mode})


def _holder(engine, st, s):
    op = takeover.is_operator(s)
    d = {"kind": "operator" if op else "fay", "session_id": s.session_id, "mode": s.access_mode, "state": s.state,
         "epoch": s.epoch, "since": st.since.get(s.session_id, s.created_at), "suspended": s.suspended,
         "lease_ms": engine.lease_ms, "board_heartbeat_ms": engine.board_heartbeat_ms,
         "heartbeat_interval_ms": s.interval_ms, "heartbeat_timeout_ms": s.timeout_ms}
    if op:
        d.update(operator=s.operator, modes=list(s.modes), last_heartbeat_at=s.last_heartbeat_at, expires_at=None)
    else:
        d.update(fay_id=s.fay_id, runtime_id=s.runtime_id, last_heartbeat_at=s.last_heartbeat_at,
                 expires_at=s.credential_ref["ends_at"] if s.credential_ref else None)
    return d


def present(engine, operator):
    """The operator is at the console: renews every hold of theirs. Returns how many."""
    return takeover.present(engine, operator)


async def take(engine, operator, resource_id):
    """The operator takes `resource_id` now: its holder entry. Raises CapError
    (E_RESOURCE_UNAVAILABLE, E_DEVICE_UNREACHABLE, E_RESOURCE_BUSY)."""
    st = _watch(engine)
    hold = await takeover.take(engine, operator, resource_id)
    return _holder(engine, st, hold)


async def act(engine, operator, resource_id, op, args=b""):
    """One actuation under the operator's grant. `args`: bytes, or base64url text. Returns
    {"resource_id", "op", "data": base64url}. Raises CapError (E_PERMISSION_DENIED when this
    operator does not hold it, E_MALFORMED_REQUEST, the board's refusal as an S2 code)."""
    if isinstance(args, str):
        try:
            args = b64u_decode(args)
        except ValueError:
            raise CapError("E_MALFORMED_REQUEST", "args must be base64url without padding") from None
    data = await takeover.act(engine, operator, resource_id, op, args)
    return {"resource_id": resource_id, "op": op, "data": b64u_encode(data)}


async def hand_back(engine, operator, resource_id, fay_id, timeout_s=30.0):
    """Give the resource to Fay `fay_id` (its pending or next AuthRequest, takeover.hand_back).
    Raises CapError (E_PERMISSION_DENIED, E_MALFORMED_REQUEST)."""
    _watch(engine)
    return await takeover.hand_back(engine, operator, resource_id, fay_id, timeout_s)


async def release(engine, operator, resource_id):
    """The operator lets go (the resource goes safe, then to the board's first waiter).
    Raises CapError E_PERMISSION_DENIED when this operator does not hold it."""
    _watch(engine)
    await takeover.release(engine, operator, resource_id)
    return {"resource_id": resource_id, "released": True}
