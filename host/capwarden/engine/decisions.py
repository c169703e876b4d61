"""Pending human decisions (blueprint 2.4, policy type 3 "Human User Decision"; faults.md 39, 58).

A policy that leaves a contention to a person creates a PendingDecision here: who asks, for
what, which holder it would displace, and a deadline (default 10 s). An operator approves or
denies it; nobody answering in time is a deny. A decision is settled exactly once: a late
answer finds it closed (faults.md 39), and every outcome is audited, with the operator's
identity when a person answered.

The API the console (H7) and the control room (H6) build on, all on the engine's event loop:

    table = engine.decisions                       # a PendingDecisions
    d = table.create(resource_id, requester={"runtime_id", "fay_id", "session_id"},
                     holder={"fay_id", "session_id"} or None, access_mode="execute",
                     what="handover", detail="...", timeout_ms=None)      # -> PendingDecision
    approved = await table.wait(d)                 # True / False; False on timeout (audited)
    table.pending()                                # [PendingDecision] still open, oldest first
    table.get(decision_id)                         # PendingDecision or None (open or recently settled)
    table.resolve(decision_id, approve, operator_id)   # -> PendingDecision; raises DecisionClosed
    table.cancel(decision_id, reason)              # the request went away: closed, audited
    unsubscribe = table.subscribe(callback)        # callback(event, decision_json), event in
                                                   # "created", "approved", "denied", "expired", "cancelled"

`PendingDecision.to_json(now_mono)` is what a page shows: ids, who asks, for what, the holder,
`deadline_at` (wall seconds), `remaining_ms` (the countdown, from the monotonic clock) and,
once settled, `state` and `operator_id`. The operator's identity is whatever the caller
authenticated (H6's operator login); this module records it and trusts nobody else with it.
"""

import asyncio
import logging
import time
from collections import OrderedDict

from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.errors import CapwardenError

log = logging.getLogger("capwarden.engine")

DEFAULT_TIMEOUT_MS = 10000     # deny on timeout after this long (issue 15, item 4)
MAX_TIMEOUT_MS = 600000        # the longest a configuration may keep a request waiting for a person
MAX_PENDING = 256              # open decisions at once; more are refused (a flood must not grow memory)
KEEP_SETTLED = 64              # settled decisions kept for get() (a late answer is told it is closed)

EVENTS = ("created", "approved", "denied", "expired", "cancelled")


class DecisionClosed(CapwardenError):
    """resolve() of a decision that is unknown, already settled, timed out or cancelled (a late
    answer grants nothing, faults.md 39); `.decision` is the settled one when it is still known."""

    def __init__(self, message, decision=None):
        super().__init__(message)
        self.decision = decision


class TooManyPending(CapwardenError):
    """create() while MAX_PENDING decisions are open: the policy answers deny."""


class PendingDecision:
    """One question to a person. `state`: pending, approved, denied, expired or cancelled."""

    def __init__(self, resource_id, requester, holder, access_mode, what, detail, timeout_ms, now_mono, now_wall):
        self.decision_id = uuid_text(new_uuid7())
        self.resource_id = resource_id
        self.requester = dict(requester)
        self.holder = dict(holder) if holder else None
        self.access_mode = access_mode
        self.what = what
        self.detail = detail
        self.timeout_ms = timeout_ms
        self.created_mono = now_mono
        self.deadline_mono = now_mono + timeout_ms / 1000.0
        self.created_at = int(now_wall)
        self.deadline_at = now_wall + timeout_ms / 1000.0
        self.state = "pending"
        self.operator_id = None
        self.settled_mono = None
        self._answer = asyncio.get_running_loop().create_future()

    @property
    def open(self):
        return self.state == "pending"

    def to_json(self, now_mono=None):
        """The decision as the console shows it (JSON-ready)."""
        now = time.monotonic() if now_mono is None else now_mono
        remaining = max(0, int((self.deadline_mono - now) * 1000)) if self.open else 0
        return {"decision_id": self.decision_id, "resource_id": self.resource_id, "what": self.what,
                "access_mode": self.access_mode, "requester": dict(self.requester),
                "holder": dict(self.holder) if self.holder else None, "detail": self.detail,
                "created_at": self.created_at, "deadline_at": round(self.deadline_at, 3),
                "timeout_ms": self.timeout_ms, "remaining_ms": remaining, "state": self.state,
                "operator_id": self.operator_id}


class PendingDecisions:
    """The engine's open questions to people, with their deadlines (see the module docstring)."""

    def __init__(self, audit, clock=time.monotonic, wall=time.time, default_timeout_ms=DEFAULT_TIMEOUT_MS):
        self.audit = audit
        self.clock = clock
        self.wall = wall
        self.default_timeout_ms = default_timeout_ms
        self._open = OrderedDict()
        self._settled = OrderedDict()
        self._subscribers = []

    # ---- asking -------------------------------------------------------------------------------
    def create(self, resource_id, requester, holder=None, access_mode=None, what="handover", detail="",
               timeout_ms=None):
        """A new open decision, audited and announced ("created"). Raises TooManyPending, and
        StoreError when it cannot be audited (then nothing is open)."""
        if len(self._open) >= MAX_PENDING:
            raise TooManyPending("%d decisions already wait for an operator" % MAX_PENDING)
        t = self.default_timeout_ms if timeout_ms is None else int(timeout_ms)
        t = max(1, min(t, MAX_TIMEOUT_MS))
        d = PendingDecision(resource_id, requester, holder, access_mode, what, detail, t, self.clock(), self.wall())
        self.audit.record("decision", "pending", what, decision=d.decision_id, resource=resource_id,
                          runtime=d.requester.get("runtime_id"), fay=d.requester.get("fay_id"), mode=access_mode,
                          from_fay=d.holder.get("fay_id") if d.holder else None, timeout_ms=t,
                          detail=detail[:200] if detail else None)
        self._open[d.decision_id] = d
        self._notify("created", d)
        return d

    async def wait(self, d):
        """True when an operator approved `d` before its deadline; False when denied, cancelled
        or timed out (a timeout is settled here as "expired", audited: deny)."""
        if d.open:
            left = d.deadline_mono - self.clock()
            try:
                if left > 0:
                    await asyncio.wait_for(asyncio.shield(d._answer), left)
            except asyncio.TimeoutError:
                pass
            if d.open:
                self._settle(d, "expired", None, "no operator answered within %d ms" % d.timeout_ms)
        return d.state == "approved"

    # ---- answering ----------------------------------------------------------------------------
    def resolve(self, decision_id, approve, operator_id):
        """The operator `operator_id` (authenticated by the caller) approves or denies. Returns
        the settled decision. Raises DecisionClosed when it is unknown, already settled or past
        its deadline (a late approval grants nothing); StoreError when it cannot be audited
        (then it stays open)."""
        if not isinstance(operator_id, str) or not operator_id:
            raise ValueError("resolve() needs the authenticated operator's id")
        d = self._open.get(decision_id)
        if d is None:
            old = self._settled.get(decision_id)
            raise DecisionClosed("decision %s is %s" % (decision_id, old.state if old else "unknown"), old)
        if self.clock() >= d.deadline_mono:
            self._settle(d, "expired", None, "answered after its deadline by %s" % operator_id)
            raise DecisionClosed("decision %s expired before the answer" % decision_id, d)
        self._settle(d, "approved" if approve else "denied", operator_id, "")
        return d

    def cancel(self, decision_id, reason):
        """Close an open decision whose request went away (audited, announced); no-op otherwise."""
        d = self._open.get(decision_id)
        if d is not None:
            self._settle(d, "cancelled", None, reason)

    # ---- reading ------------------------------------------------------------------------------
    def pending(self):
        """Open decisions, oldest first."""
        return list(self._open.values())

    def get(self, decision_id):
        return self._open.get(decision_id) or self._settled.get(decision_id)

    def subscribe(self, callback):
        """Call `callback(event, decision_json)` on every change (EVENTS); returns the function
        that unsubscribes. A callback that raises is logged and kept (it is the caller's bug)."""
        self._subscribers.append(callback)

        def unsubscribe():
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    # ---- inside -------------------------------------------------------------------------------
    def _settle(self, d, state, operator_id, detail):
        # Audited first: an approval that cannot be recorded is not an approval (fail closed).
        self.audit.record("decision", state, d.what, decision=d.decision_id, resource=d.resource_id,
                          operator=operator_id, runtime=d.requester.get("runtime_id"),
                          fay=d.requester.get("fay_id"), detail=detail[:200] if detail else None)
        d.state = state
        d.operator_id = operator_id
        d.settled_mono = self.clock()
        self._open.pop(d.decision_id, None)
        self._settled[d.decision_id] = d
        while len(self._settled) > KEEP_SETTLED:
            self._settled.popitem(last=False)
        if not d._answer.done():
            d._answer.set_result(state == "approved")
        self._notify(state, d)

    def _notify(self, event, d):
        body = d.to_json(self.clock())
        for cb in list(self._subscribers):
            try:
                cb(event, body)
            except Exception:
                log.exception("a decision subscriber failed on %s", event)
