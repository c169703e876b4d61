"""Handover policies per resource (blueprint 2.4): who gets a contended resource.

Contention: a request for a resource one exclusive session holds (or an exclusive request
for a resource one reader holds). Both an AuthRequest (admission.lock) and a HandoverRequest
(handover.request_handover) come here when the resource's policy is not `consent`:

    consent   the holder is asked (handover.py); an AuthRequest never takes over (faults.md 43)
    priority  the policy's rule (rules.py) scores holder and requester; higher wins, tie keeps
    model     the ranker (ranker.py) scores the candidates the rule allows, under its deadline;
              late, failing or absent: the rule decides (counted, audited)
    human     an operator approves or denies (decisions.py); nobody in time: deny

The answer is one of
    grant     the holder is preempted through the atomic move (handover.preempt) and told why
              (its session ends with reason "preempted"); the requester's session is active;
    queue     an AuthRequest that asked to wait (wait_ms) waits in the board's queue as before;
    deny      E_RESOURCE_BUSY (AuthRequest) or E_HANDOVER_REJECTED (HandoverRequest); a
              decision that ran out of time E_HANDOVER_TIMEOUT. The holder keeps the resource.

Every decision is audited ("policy" entry) with its inputs (both candidates' role, urgency as
claimed and as capped, resource type, scores, model scores and why it fell back) and the answer.

Timeout and retry (blueprint 2.4 "Timeout Handling Principles"): the policy's `timeout_ms`
bounds the decision and the move together. A move that fails (the board refuses or does not
answer) rolls back, the holder keeps control and both parties are told; then the policy's retry
strategy: `auto` tries the move again up to `attempts` times with a doubling back-off (never
past the timeout), `person` asks an operator whether to try once more (a pending decision),
`none` gives up. One decision per resource at a time (faults.md 42): a contender arriving while
an operator is being asked about the same resource is denied at once; others wait their turn.
"""

import asyncio
import logging
import time
import weakref
from collections import deque, namedtuple

from capwarden.engine import decisions as decisions_mod
from capwarden.engine import policyconfig, rules
from capwarden.engine.ranker import HISTORY_S, Ranker, features
from capwarden.errors import StoreError

log = logging.getLogger("capwarden.engine")

EXCLUSIVE = ("write", "execute", "configure")

# What a policy knows of a session beyond the session itself: the resource's class and the
# urgency its request claimed (REQUEST body "urgency", 0..URGENCY_MAX) and counts with (capped).
Facts = namedtuple("Facts", "resource_type claimed urgency")
NO_FACTS = Facts("other", 0, 0)


class History:
    """Recent preemptions per resource (the audit entries' facts, kept for HISTORY_S): the
    ranker's `won` and `lost` features."""

    def __init__(self, clock, keep_s=HISTORY_S, limit=4096):
        self.clock = clock
        self.keep_s = keep_s
        self._events = deque(maxlen=limit)      # (mono, resource_id, winner fay, loser fay)

    def add(self, resource_id, winner, loser):
        self._events.append((self.clock(), resource_id, winner, loser))

    def counts(self, resource_id, fay_id):
        """(won, lost) by `fay_id` on `resource_id` in the last keep_s seconds."""
        horizon = self.clock() - self.keep_s
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()
        won = lost = 0
        for _t, r, w, l in self._events:
            if r == resource_id:
                won += w == fay_id
                lost += l == fay_id
        return won, lost


class PolicyTable:
    """The configured policies (policyconfig.Settings), looked up per resource, and what they
    share: the ranker, the history, one lock per contended resource, the counters."""

    def __init__(self, settings=None, terminal_id="", clock=time.monotonic):
        self.settings = settings or policyconfig.default()
        self.terminal_id = terminal_id
        self.clock = clock
        self.history = History(clock)
        self._by_resource = {}
        self._locks = {}
        self._asking = set()              # resources with an operator being asked now
        self._ranker = None
        self._facts = weakref.WeakKeyDictionary()
        self.decided = 0                  # decisions made (benchmarks, tests)

    def note(self, s, resource_type, claimed):
        """Remember `s`'s resource class and claimed urgency (admission.new_session)."""
        if type(claimed) is not int or isinstance(claimed, bool):
            claimed = 0
        self._facts[s] = Facts(resource_type, claimed, self.urgency(s.fay_id, claimed))

    def facts(self, s):
        return self._facts.get(s, NO_FACTS)

    def for_resource(self, resource_id):
        """The policy of `resource_id`: the first configured pattern that matches, else consent."""
        p = self._by_resource.get(resource_id)
        if p is None:
            p = next((q for q in self.settings.policies
                      if policyconfig.matches(q, self.terminal_id, resource_id)), policyconfig.CONSENT)
            self._by_resource[resource_id] = p
        return p

    def fay(self, fay_id):
        return self.settings.fays.get(fay_id) or policyconfig.FayPolicy(self.settings.default_role,
                                                                        self.settings.default_max_urgency)

    def urgency(self, fay_id, claimed):
        """The urgency a request counts with: its claim, capped for its Fay (rules.cap_urgency)."""
        return rules.cap_urgency(claimed, self.fay(fay_id).max_urgency)

    @property
    def ranker(self):
        if self._ranker is None:
            self._ranker = Ranker(self.settings.model_path, self.settings.deadline_ms)
        return self._ranker

    def lock(self, resource_id):
        lk = self._locks.get(resource_id)
        if lk is None:
            lk = self._locks[resource_id] = asyncio.Lock()
        return lk

    def close(self):
        if self._ranker is not None:
            self._ranker.close()


def contended_holder(engine, s):
    """The one live session that `s` contends with, or None (free, shared reads, or several
    holders: those go the board's way, a queue or E_RESOURCE_BUSY)."""
    holders = [h for h in engine.registry.holders(s.resource_id) if h is not s]
    if len(holders) != 1:
        return None
    h = holders[0]
    from capwarden.engine.takeover import is_operator   # here: takeover imports this module's users

    if is_operator(h):
        # A human holds it (issue 15 item 5): no policy preempts an operator. The request goes
        # the board's way: busy, or queued for the operator's hand-back.
        return None
    if h.access_mode not in EXCLUSIVE and s.access_mode not in EXCLUSIVE:
        return None
    return h


def decides(engine, s):
    """The policy for `s`'s resource when it is not consent (then contention goes to contend())."""
    p = engine.policies.for_resource(s.resource_id)
    return None if p.kind == "consent" else p


async def contend(engine, pol, new, kind, wait_ms=0, request_timeout_ms=None):
    """Decide a contention for `new` (a session in `creating`) under `pol`. `kind` is "acquire"
    (AuthRequest) or "handover" (HandoverRequest). Returns (answer, body): answer "free" (the
    holder went away: take the normal path), "queue" (wait on the board), "granted" (body: the
    completed move, `new` active) or "denied" (body: error_code, error_message). Raises
    StoreError when the decision cannot be audited."""
    try:
        return await _contend(engine, pol, new, kind, wait_ms, request_timeout_ms)
    except StoreError:
        await engine.cancel(new)        # nothing granted that the log does not say; the holder keeps it
        raise


async def _contend(engine, pol, new, kind, wait_ms, request_timeout_ms):
    table = engine.policies
    res = new.resource_id
    if pol.kind == "human" and res in table._asking:
        verdict = _Verdict("deny", "E_RESOURCE_BUSY" if kind == "acquire" else "E_HANDOVER_REJECTED",
                           "an operator is already deciding who gets %s" % res, {})
        _audit(engine, pol, new, None, kind, verdict)
        await engine.cancel(new)
        return "denied", verdict.body()
    budget_ms = pol.timeout_ms or request_timeout_ms or policyconfig.DEFAULT_TIMEOUT["priority"]
    deadline = engine.clock() + budget_ms / 1000.0
    async with table.lock(res):
        if new.state != "creating":         # withdrawn while it waited for its turn
            verdict = _Verdict("deny", "E_SESSION_NOT_FOUND", "the request was withdrawn while it waited", {})
            _audit(engine, pol, new, None, kind, verdict)      # every deny audited
            return "denied", verdict.body()
        holder = contended_holder(engine, new)
        if holder is None:
            return "free", None
        if pol.kind == "human":
            table._asking.add(res)
        try:
            verdict = await _decide(engine, table, pol, new, holder, kind, wait_ms, deadline)
            table.decided += 1
            _audit(engine, pol, new, holder, kind, verdict)
            if verdict.answer == "queue":
                return "queue", None
            if verdict.answer != "grant":
                await engine.cancel(new)
                return "denied", verdict.body()
            return await _move(engine, table, pol, new, holder, kind, verdict, deadline)
        finally:
            table._asking.discard(res)


class _Verdict:
    def __init__(self, answer, code, message, inputs, decided_by="", extra=None):
        self.answer, self.code, self.message = answer, code, message
        self.inputs, self.decided_by, self.extra = inputs, decided_by, extra or {}

    def body(self):
        return {"error_code": self.code, "error_message": self.message}


def _candidate(table, s, is_holder):
    f = table.facts(s)
    return rules.inputs(table.fay(s.fay_id).role, f.urgency, f.resource_type, s.resource_id.rsplit("/", 1)[-1],
                        s.access_mode, is_holder)


def _features(engine, table, s, inputs, is_holder):
    won, lost = table.history.counts(s.resource_id, s.fay_id)
    held = max(0.0, engine.wall() - s.created_at) if is_holder else 0.0
    return features(inputs["urgency"], is_holder, is_holder and s.suspended, is_holder and s.busy_ms > 0, held,
                    inputs["resource_type"], won, lost, s.access_mode)


async def _decide(engine, table, pol, new, holder, kind, wait_ms, deadline):
    lose_code = "E_RESOURCE_BUSY" if kind == "acquire" else "E_HANDOVER_REJECTED"
    lose = "queue" if kind == "acquire" and wait_ms else "deny"
    c_new, c_hold = _candidate(table, new, False), _candidate(table, holder, True)
    inputs = {"requester": dict(c_new, fay=new.fay_id, claimed=table.facts(new).claimed),
              "holder": dict(c_hold, fay=holder.fay_id, session=holder.session_id)}
    if pol.kind == "human":
        return await _ask(engine, table, pol, new, holder, kind, inputs, lose_code, deadline)
    s_new, why_new = pol.rule.score(c_new)
    s_hold, why_hold = pol.rule.score(c_hold)
    inputs["requester"]["score"], inputs["holder"]["score"] = s_new, s_hold
    if s_new is None or s_hold is None:
        # A rule that fails or runs out of budget counts as deny: the holder keeps it (faults.md 58).
        return _Verdict("deny", lose_code, "the %s rule could not decide: %s" % (
            pol.rule_name[:40], why_new or why_hold), inputs, "rule")
    decided_by, extra = "rule", {}
    if pol.kind == "model":
        ranked, why = table.ranker.rank([_features(engine, table, holder, c_hold, True),
                                         _features(engine, table, new, c_new, False)])
        if ranked is None:
            extra = {"fallback": why[:160], "fallbacks": table.ranker.fallbacks}
            log.info("handover model fell back to the rule on %s: %s", new.resource_id, why)
        else:
            s_hold, s_new = ranked
            inputs["holder"]["model_score"], inputs["requester"]["model_score"] = round(s_hold, 4), round(s_new, 4)
            decided_by = "model"
    if s_new > s_hold:
        return _Verdict("grant", "", "", inputs, decided_by, extra)
    return _Verdict(lose, lose_code, "the %s policy keeps the holder (score %s against the holder's %s%s)"
                    % (pol.kind, _fmt(s_new), _fmt(s_hold), ", a tie keeps the holder" if s_new == s_hold else ""),
                    inputs, decided_by, extra)


def _fmt(v):
    return ("%.3f" % v).rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


async def _ask(engine, table, pol, new, holder, kind, inputs, lose_code, deadline, what=None, detail=None):
    left_ms = max(1, int((deadline - engine.clock()) * 1000))
    try:
        d = engine.decisions.create(new.resource_id, {"runtime_id": new.runtime_id, "fay_id": new.fay_id,
                                                      "session_id": new.session_id},
                                    {"runtime_id": holder.runtime_id, "fay_id": holder.fay_id,
                                     "session_id": holder.session_id}, new.access_mode, what or kind,
                                    detail or "%s asks for %s (%s), held by %s" % (
                                        new.fay_id, new.resource_id, new.access_mode, holder.fay_id), left_ms)
    except decisions_mod.TooManyPending as exc:
        return _Verdict("deny", lose_code, str(exc), inputs, "operator")
    waiter = asyncio.ensure_future(engine.decisions.wait(d))
    # The requester may go away while the operator thinks: then the question is withdrawn.
    while not waiter.done():
        await asyncio.wait([waiter], timeout=0.05)
        if not waiter.done() and (new.state != "creating" or holder.state not in ("active", "handover_pending")):
            engine.decisions.cancel(d.decision_id, "the requester went away" if new.state != "creating"
                                    else "the holder's session ended")
    approved = waiter.result()
    extra = {"decision": d.decision_id, "operator": d.operator_id}
    if approved:
        return _Verdict("grant", "", "", inputs, "operator", extra)
    if d.state == "expired":
        return _Verdict("deny", "E_HANDOVER_TIMEOUT", "no operator answered within %d ms" % d.timeout_ms,
                        inputs, "operator", extra)
    return _Verdict("deny", lose_code, "the operator %s" % ("denied it" if d.state == "denied" else d.state),
                    inputs, "operator", extra)


async def _move(engine, table, pol, new, holder, kind, verdict, deadline):
    """The granted move with the policy's retry strategy; ("granted"|"denied", body)."""
    from capwarden.engine import handover

    tries, backoff = 0, pol.retry.backoff_ms / 1000.0
    while True:
        tries += 1
        out = await handover.preempt(engine, holder, new, pol.kind, audit={
            "decided_by": verdict.decided_by, "attempt": tries, **verdict.extra})
        if out["result"] == "completed":
            table.history.add(new.resource_id, new.fay_id, holder.fay_id)
            return "granted", out
        # Rolled back: the holder keeps control, and is told the handover failed (2.4 notification).
        engine.audit.record("policy", "rollback", out["error_code"], resource=new.resource_id, fay=new.fay_id,
                            from_fay=holder.fay_id, attempt=tries, detail=out["error_message"][:200])
        _tell_holder(engine, holder)
        if not out.get("retry") or new.state != "creating":
            break
        if pol.retry.strategy == "auto" and tries <= pol.retry.attempts:
            if engine.clock() + backoff >= deadline:
                out = dict(out, error_code="E_HANDOVER_TIMEOUT",
                           error_message="%s; no time left for another try within %d ms" % (
                               out["error_message"], pol.timeout_ms or 0))
                break
            await asyncio.sleep(backoff)
            backoff *= 2
            continue
        if pol.retry.strategy == "person" and tries == 1:
            again = await _ask(engine, table, pol, new, holder, kind, verdict.inputs, out["error_code"], deadline,
                               what="retry", detail="the move of %s to %s failed (%s): try again?" % (
                                   new.resource_id, new.fay_id, out["error_message"][:80]))
            if again.answer == "grant":
                continue
        break
    if new.state == "creating":
        await engine.cancel(new)
    return "denied", {"error_code": out["error_code"], "error_message": out["error_message"]}


def _tell_holder(engine, holder):
    if holder.state == "active":
        engine.push(holder.runtime_id, "SessionStateChanged", {
            "session_id": holder.session_id, "state": "active", "previous_state": "active",
            "reason": "handover_failed", "suspended": holder.suspended})


def _audit(engine, pol, new, holder, kind, v):
    engine.audit.record("policy", v.answer, pol.kind, request=kind, runtime=new.runtime_id, fay=new.fay_id,
                        resource=new.resource_id, mode=new.access_mode,
                        from_fay=holder.fay_id if holder is not None else None,
                        from_session=holder.session_id if holder is not None else None,
                        inputs=v.inputs or None, decided_by=v.decided_by or None, error_code=v.code or None,
                        detail=v.message[:200] if v.message else None, **v.extra)
