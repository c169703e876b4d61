"""The online revocation query of chapter 4 section 4.3.2 step 5, before a ticket is granted.

When the terminal's policy asks for it (config `trust.revocation_query.enabled`), a ticket that
passed steps 1-4 and the local revocation list is asked about at its Ticket_Issuer
(`GET /v1/tickets/{jti}/status`, a signed ticket-status checked by the trust client):

    answer revoked                     -> E_TICKET_REVOKED
    no answer within timeout_s (2 s)   -> E_REVOCATION_QUERY_TIMEOUT, or, with on_timeout
                                          "allow", granted and the accepted risk audited
    service unreachable or failing     -> the cached answer while it is valid (cache_s, at most
                                          300 s), else as a timeout

Answers are cached per jti. One younger than fresh_s (default 60 s) answers without asking (the
"answered from the cache" of bench/online.py); one older but within cache_s is asked again and
covers an unreachable service. A revoked answer is final and always answers from the cache.

Only tickets signed by a key the Registration_Authority distributed (source ra-distributed) are
asked about: a ticket under a pre-installed key has no Ticket_Issuer this terminal knows of,
and is validated offline as before. While the terminal is degraded with offline acceptance
configured, nothing is asked (the service is believed gone): a cached answer still counts, and
a ticket without one is granted with the risk audited.

A query never blocks another request: nothing is locked across it. Requests for the same jti
at once share one query (a task of its own, so a requester that gives up does not cancel it for
the others); every other request goes on meanwhile.
"""

import asyncio
import logging
import time
from typing import NamedTuple

from capwarden.credentials.validate import Decision
from capwarden.errors import UsageError
from capwarden.trust.client import TrustClientError, TrustTimeout, TrustUnavailable

log = logging.getLogger("capwarden.engine")

MAX_CACHE_S = 300            # section 4.3.2: cache validity not exceeding 5 minutes
DEFAULT_TIMEOUT_S = 2.0      # section 4.3.2: query timeout, default 2 seconds
MAX_TIMEOUT_S = 30.0
DEFAULT_FRESH_S = 60
MAX_ENTRIES = 4096           # cached "not revoked" jtis; the oldest answer goes first beyond that
# Revoked answers are kept apart and much longer: 4,096 newer "not revoked" answers used to push
# a revoked one out before the revocation list brought its statement, and a degraded terminal
# then granted the ticket with the risk audited. Beyond this many (a fleet's revocations of
# live tickets do not come near it) the oldest goes, with a warning.
MAX_REVOKED = 65536
REJECT, ALLOW = "reject", "allow"

# Outcome kinds
ANSWER, TIMEOUT, UNREACHABLE, OFFLINE = "answer", "timeout", "unreachable", "offline"


class Policy(NamedTuple):
    enabled: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    on_timeout: str = REJECT
    cache_s: float = MAX_CACHE_S
    fresh_s: float = DEFAULT_FRESH_S


def parse_policy(obj, where):
    """The Policy of a config object {"enabled", "timeout_s", "on_timeout", "cache_s", "fresh_s"}
    (each optional). Raises UsageError."""
    if obj is None:
        return Policy()
    if not isinstance(obj, dict) or set(obj) - set(Policy._fields):
        raise UsageError("%s: an object with only %s" % (where, ", ".join(Policy._fields)))
    p = Policy(**obj)
    num = (int, float)
    if type(p.enabled) is not bool:
        raise UsageError("%s: \"enabled\" is true or false" % where)
    if type(p.timeout_s) not in num or not 0 < p.timeout_s <= MAX_TIMEOUT_S:
        raise UsageError("%s: \"timeout_s\" is seconds, above 0 and at most %d" % (where, MAX_TIMEOUT_S))
    if p.on_timeout not in (REJECT, ALLOW):
        raise UsageError("%s: \"on_timeout\" is \"reject\" (E_REVOCATION_QUERY_TIMEOUT) or \"allow\" (risk "
                         "accepted, audited)" % where)
    if type(p.cache_s) not in num or not 0 <= p.cache_s <= MAX_CACHE_S:
        raise UsageError("%s: \"cache_s\" is seconds, 0..%d (section 4.3.2: at most 5 minutes)" % (where, MAX_CACHE_S))
    if type(p.fresh_s) not in num or not 0 <= p.fresh_s:
        raise UsageError("%s: \"fresh_s\" is seconds, 0 or more" % where)
    return p._replace(fresh_s=min(p.fresh_s, p.cache_s))


class Outcome(NamedTuple):
    kind: str                 # ANSWER, TIMEOUT, UNREACHABLE (no valid cache entry), OFFLINE
    revoked: bool = False
    revoked_at: object = None
    cached: bool = False      # the answer came from the cache
    detail: str = ""


class RevocationQuery:
    """`status(jti)`: coroutine returning a trust.client.TicketStatus (TrustClient.ticket_status).
    `policy`: Policy. `clock`: monotonic seconds (the cache's ages). Callbacks for the online
    state (engine/online.py): `on_answer()` after any answer, `on_timeout()` after a timeout,
    `on_unreachable()` after a failure, `on_revoked()` after a revoked answer; `degraded()` True while the terminal is degraded with
    offline acceptance. `audit`: the engine's audit log (the fail-open entries)."""

    def __init__(self, status, policy, audit=None, clock=time.monotonic, on_answer=None, on_timeout=None,
                 on_unreachable=None, degraded=None, on_revoked=None):
        self.status = status
        self.policy = policy
        self.audit = audit
        self.clock = clock
        self._on_answer = on_answer or (lambda: None)
        self._on_timeout = on_timeout or (lambda: None)
        self._on_unreachable = on_unreachable or (lambda: None)
        self._degraded = degraded or (lambda: False)
        self._on_revoked = on_revoked or (lambda: None)
        self.cache = {}           # jti -> (cached Outcome, answered at: clock()), not revoked
        self.revoked = {}         # jti -> (cached Outcome, answered at) of the revoked answers
        self.unchecked = {}       # jtis let through without an answer (their risk audited), oldest first
        self._inflight = {}       # jti -> Task of the query under way
        self.asked = 0            # queries sent (tests, bench)

    # ---- the cache -----------------------------------------------------------------------
    def cached(self, jti, fresh=False):
        """The cached (revoked, revoked_at) for jti while valid (fresh=True: while fresh), else None.
        A revoked answer is final: valid as long as it is kept."""
        out = self._hit(jti, fresh)
        return None if out is None else (out.revoked, out.revoked_at)

    def fresh(self, jti):
        """The cached Outcome for jti while fresh (answers without a query), else None."""
        return self._hit(jti, True)

    def _hit(self, jti, fresh):
        hit = self.revoked.get(jti)
        if hit is not None:
            return hit[0]          # final
        hit = self.cache.get(jti)
        if hit is None:
            return None
        out, at = hit
        age = self.clock() - at
        if out.revoked or age < (self.policy.fresh_s if fresh else self.policy.cache_s):
            return out
        if age >= self.policy.cache_s:
            del self.cache[jti]
        return None

    def _store(self, jti, revoked, revoked_at):
        # Re-inserted on every answer, so the dict's order is the answers' order and the oldest
        # goes first without a search over the full cache. Kept as the Outcome a cache hit
        # returns: nothing is built per request.
        entry = (Outcome(ANSWER, revoked, revoked_at, cached=True), self.clock())
        self.cache.pop(jti, None)
        if revoked:
            if jti not in self.revoked and len(self.revoked) >= MAX_REVOKED:
                old = next(iter(self.revoked))
                del self.revoked[old]
                log.warning("revocation query: more than %d revoked answers kept; the oldest (%s) is dropped",
                            MAX_REVOKED, old)
            self.revoked.setdefault(jti, entry)
            return
        if jti in self.revoked:
            return                 # a revoked answer is final: a later "not revoked" changes nothing
        if len(self.cache) >= MAX_ENTRIES:
            del self.cache[next(iter(self.cache))]
        self.cache[jti] = entry

    # ---- asking --------------------------------------------------------------------------
    async def ask(self, jti):
        """The Outcome for ticket `jti` (never raises for the service's failures)."""
        hit = self._hit(jti, True)
        if hit is not None:
            return hit
        if self._degraded():
            hit = self._hit(jti, False)
            if hit is not None:
                return hit
            return Outcome(OFFLINE, detail="the terminal is offline: the ticket's revocation was not asked")
        task = self._inflight.get(jti)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._query(jti))
            self._inflight[jti] = task
            task.add_done_callback(lambda _t, jti=jti: self._inflight.pop(jti, None))
        return await asyncio.shield(task)

    async def _query(self, jti):
        """One query, bounded by timeout_s (the task's own bound: whoever waits on it waits at
        most that long, and a timeout is counted once however many requests shared it)."""
        self.asked += 1
        try:
            st = await asyncio.wait_for(self.status(jti), self.policy.timeout_s)
        except (asyncio.TimeoutError, TrustTimeout) as exc:
            self._on_timeout()
            return Outcome(TIMEOUT, detail=str(exc) or "no answer within %.1f s" % self.policy.timeout_s)
        except (TrustUnavailable, TrustClientError) as exc:
            # Unreachable, failing, or an answer that could not be trusted: the cache, else a timeout.
            if isinstance(exc, TrustUnavailable):
                self._on_unreachable()
            hit = self._hit(jti, False)
            if hit is not None:
                return hit._replace(detail=str(exc))
            return Outcome(UNREACHABLE, detail="%s; no valid cached answer" % exc)
        self._on_answer()
        self._store(jti, st.revoked, st.revoked_at)
        if st.revoked:
            self._on_revoked()      # the statement is in the list by now: fetch it (its sessions end)
        return Outcome(ANSWER, st.revoked, st.revoked_at)

    # ---- the decision --------------------------------------------------------------------
    def decide(self, d, outcome, fay_id=None, resource_id=None):
        """The Decision after step 5's query: `d` (granted by steps 1-5 locally) as it is, or
        the refusal. Audits an allowed-through timeout and an offline acceptance (the risk)."""
        if outcome is None:
            return d
        jti = d.credential_id
        if outcome.kind == ANSWER:
            if outcome.revoked:
                return Decision(False, "E_TICKET_REVOKED", "the Ticket_Issuer reports the ticket revoked%s" % (
                    " at %d" % outcome.revoked_at if outcome.revoked_at else ""), "jti", d.credential)
            return d
        if outcome.kind == OFFLINE:
            self._risk(d, "offline_accepted", outcome.detail, fay_id, resource_id)
            self._unchecked(jti)
            return d
        why = "the revocation query did not complete (%s)" % outcome.detail
        if self.policy.on_timeout == ALLOW:
            self._risk(d, "E_REVOCATION_QUERY_TIMEOUT", why + ": allowed through by configuration, the revocation "
                       "delay risk accepted", fay_id, resource_id)
            self._unchecked(jti)
            return d
        return Decision(False, "E_REVOCATION_QUERY_TIMEOUT", why[:300], "jti", d.credential)

    def _unchecked(self, jti):
        # Remembered so that the ticket is not made to last as a converted descriptor
        # (conversion.py): its revocation was never checked. Bounded like the cache.
        self.unchecked.pop(jti, None)
        self.unchecked[jti] = True
        if len(self.unchecked) > MAX_ENTRIES:
            del self.unchecked[next(iter(self.unchecked))]

    def was_unchecked(self, jti):
        """True when ticket `jti` was let through without the issuer's answer (allowed on a
        timeout, or accepted while degraded)."""
        return jti in self.unchecked

    def _risk(self, d, reason, detail, fay_id, resource_id):
        if self.audit is None:
            return
        # A risk accepted is written down or not taken: a StoreError here fails the request
        # closed, like every decision the engine cannot audit.
        self.audit.record("revocation_query", "allowed", reason, fay=fay_id, resource=resource_id,
                          credential=d.credential_id, issuer=d.issuer_id, detail=detail[:200])
