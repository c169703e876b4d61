"""The engine side of the console: what the page reads and what its buttons do, through the
engine's own APIs, so that every action is the engine's and is audited there with the
operator's identity:

    board and resource state, take, hand back, release    controlroom.py (H6)
    pending human decisions, approve and deny             engine.decisions (decisions.py)
    operator accounts                                      operators.OperatorStore (STORE/operators.json)
    logins and logouts                                     the engine's audit log, here

The snapshot is reshaped for the page: one holder per row (the exclusive one, else the first
of the shared ones with a count), the Fay to hand back to, and the decisions with their
countdown.
"""

import asyncio

from capwarden.credentials.b64 import b64u_decode
from capwarden.engine import controlroom
from capwarden.engine.operators import OperatorStore

# Password hashing (scrypt, 32 MiB, about 0.1 s) runs off the event loop, at most this many at
# once: a flood of login attempts costs bounded memory and never stalls the engine's timers.
MAX_HASHING = 2


class ConsoleSources:
    def __init__(self, engine, store):
        self.engine = engine
        self.operators = OperatorStore(store)
        self._hashing = asyncio.Semaphore(MAX_HASHING)
        self._stops = {}
        self._last_fay = {}        # resource id -> the last Fay that held it (hand-back suggestion)

    # ---- accounts ---------------------------------------------------------------------------------
    async def authenticate(self, name, password):
        """(name, stamp) of the operator when `password` is theirs, else None. Raises StoreError."""
        async with self._hashing:
            before = self.stamp(name)
            op = await asyncio.to_thread(self.operators.authenticate, name, password)
        if op is None or self.stamp(name) != before:     # a password changed while it was checked
            return None
        return op.name, before

    def stamp(self, name):
        """The account's stamp now (OperatorStore.stamp: its salt, new with every password), None
        once it is removed: a console session lives only as long as the account it logged in
        with. Raises StoreError."""
        return self.operators.stamp(name)

    def audit(self, action, outcome, reason, **fields):
        self.engine.audit.record(action, outcome, reason, **fields)

    async def durable(self):
        """Return once every audit entry recorded so far is on disk (the engine's rule: nothing is
        acknowledged before its entry; the log runs in group-commit mode). Raises StoreError."""
        await self.engine.audit.durable()

    # ---- reading ------------------------------------------------------------------------------------
    def snapshot(self):
        snap = controlroom.snapshot(self.engine)
        now = self.engine.clock()
        boards = []
        for b in snap["boards"]:
            rows = []
            for r in b["resources"]:
                holders = r["holders"]
                first = holders[0] if holders else None
                if first is not None and first["kind"] == "fay":
                    self._last_fay[r["resource_id"]] = first["fay_id"]
                rows.append({
                    "resource_id": r["resource_id"], "name": r["name"], "class": r["class"], "modes": r["modes"],
                    "state": r["state"], "override": r["override"], "sharing": r["mode"],
                    "holder": _holder(first), "holders": len(holders),
                    "mode": first["mode"] if first else None, "epoch": first["epoch"] if first else None,
                    "since": first["since"] if first else None,
                    "suspended": any(h["suspended"] for h in holders),
                    "lease": _lease(first), "waiting": [w["fay_id"] for w in r["waiting"]],
                    "returning_to": r["returning_to"],
                    "last_fay": r["returning_to"] or self._last_fay.get(r["resource_id"]),
                })
            boards.append({"name": b["name"], "up": b["up"], "down": b["down"], "override": b["override"],
                           "resources": rows})
        return {"terminal_id": snap["terminal_id"], "now": self.engine.wall(), "boards": boards,
                "decisions": [d.to_json(now) for d in self.engine.decisions.pending()]}

    def subscribe(self, callback):
        self._stops[callback] = (controlroom.subscribe(self.engine, callback),
                                 self.engine.decisions.subscribe(callback))

    def unsubscribe(self, callback):
        for stop in self._stops.pop(callback, ()):
            stop()

    # ---- acting -------------------------------------------------------------------------------------
    async def resolve(self, decision_id, approve, operator):
        return self.engine.decisions.resolve(decision_id, approve, operator).to_json()

    async def take(self, resource_id, operator):
        return await controlroom.take(self.engine, operator, resource_id)

    async def hand_back(self, resource_id, fay_id, operator):
        return await controlroom.hand_back(self.engine, operator, resource_id, fay_id)

    async def release(self, resource_id, operator):
        return await controlroom.release(self.engine, operator, resource_id)

    async def act(self, resource_id, op, args, operator):
        """One driver operation under the operator's grant: {"resource_id", "op", "data": hex}."""
        out = await controlroom.act(self.engine, operator, resource_id, op, args)
        return dict(out, data=b64u_decode(out["data"]).hex())


def _holder(h):
    if h is None:
        return None
    if h["kind"] == "operator":
        return {"kind": "operator", "id": h["operator"], "session_id": h["session_id"], "state": h["state"]}
    return {"kind": "fay", "id": h["fay_id"], "runtime_id": h["runtime_id"], "session_id": h["session_id"],
            "state": h["state"]}


def _lease(h):
    if h is None:
        return None
    return "%.1f s, renewed every %.1f s" % (h["lease_ms"] / 1000.0, h["board_heartbeat_ms"] / 1000.0)
