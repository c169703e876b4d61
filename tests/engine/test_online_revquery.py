"""Issue 14 item 2: the online revocation query (chapter 4 section 4.3.2 step 5).

Unit tests drive revquery.RevocationQuery with a status function the test controls and an
injected clock; the engine tests run the real trust service (SQLite) and the engine on the
virtual board."""

import asyncio
import time
import types

import pytest
from enginerig import refusal, runtime, wait_until
from onlinerig import FakeClock, TrustService, audit_entries, online_engine, ticket_cred

from capwarden.credentials.validate import Decision
from capwarden.engine import revquery
from capwarden.engine.revquery import Policy, RevocationQuery
from capwarden.errors import UsageError
from capwarden.trust import push
from capwarden.trust.client import TicketStatus, TrustTimeout, TrustUnavailable


class Audit:
    def __init__(self):
        self.entries = []

    def record(self, action, outcome, reason="", **fields):
        self.entries.append(dict(fields, action=action, outcome=outcome, reason=reason))


class Issuer:
    """The status function: answers, fails as told, or hangs until released."""

    def __init__(self):
        self.revoked = set()
        self.mode = "answer"          # answer | unreachable | timeout | hang
        self.asked = []
        self.gate = asyncio.Event()

    async def __call__(self, jti):
        self.asked.append(jti)
        if self.mode == "unreachable":
            raise TrustUnavailable("trust service unreachable (ConnectError)")
        if self.mode == "timeout":
            raise TrustTimeout("trust service did not answer in time")
        if self.mode == "hang":
            await self.gate.wait()
        return TicketStatus(jti, jti in self.revoked, 123 if jti in self.revoked else None, 0)


def granted(jti="0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"):
    cred = types.SimpleNamespace(kind="ticket", credential_id=jti, issuer_id="issuer:fleet", key_id="k",
                                 not_after=2 ** 40)
    return Decision(True, None, "granted", None, cred)


def make(issuer, clock=None, audit=None, **policy):
    counts = {"timeout": 0, "answer": 0, "unreachable": 0}
    q = RevocationQuery(issuer, Policy(enabled=True, **policy), audit=audit, clock=clock or FakeClock(),
                        on_answer=lambda: counts.__setitem__("answer", counts["answer"] + 1),
                        on_timeout=lambda: counts.__setitem__("timeout", counts["timeout"] + 1),
                        on_unreachable=lambda: counts.__setitem__("unreachable", counts["unreachable"] + 1),
                        on_revoked=lambda: counts.__setitem__("revoked", counts.get("revoked", 0) + 1))
    q.counts = counts
    return q


def decide(q, d=None):
    d = d or granted()
    return q.decide(d, asyncio.get_event_loop().run_until_complete(q.ask(d.credential_id)), "fay:x", "r")


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    lp.close()
    asyncio.set_event_loop(None)


def test_timeout_is_E_REVOCATION_QUERY_TIMEOUT_by_default(loop):
    iss = Issuer()
    iss.mode = "hang"
    q = make(iss, timeout_s=0.05)
    d = decide(q)
    assert not d.granted and d.error_code == "E_REVOCATION_QUERY_TIMEOUT"
    assert q.counts["timeout"] == 1
    iss.mode = "timeout"                          # the client's own timeout counts the same
    assert decide(q).error_code == "E_REVOCATION_QUERY_TIMEOUT" and q.counts["timeout"] == 2


def test_revoked_is_E_TICKET_REVOKED(loop):
    iss = Issuer()
    d = granted()
    iss.revoked.add(d.credential_id)
    q = make(iss)
    out = decide(q, d)
    assert not out.granted and out.error_code == "E_TICKET_REVOKED"
    assert decide(q).granted is False and iss.asked == [d.credential_id]   # revoked is final: from the cache
    assert q.counts.get("revoked") == 1                                   # the link fetches the list


def test_unreachable_without_a_cache_entry_is_a_timeout(loop):
    iss = Issuer()
    iss.mode = "unreachable"
    q = make(iss)
    d = decide(q)
    assert d.error_code == "E_REVOCATION_QUERY_TIMEOUT" and q.counts["unreachable"] == 1
    assert q.counts["timeout"] == 0               # unreachable is not a query timeout (section 4.5.1 item 2)


def test_unreachable_with_a_valid_cache_entry_answers_from_it(loop):
    iss, clock = Issuer(), FakeClock()
    q = make(iss, clock, fresh_s=10, cache_s=300)
    assert decide(q).granted and len(iss.asked) == 1
    clock.advance(5)
    assert decide(q).granted and len(iss.asked) == 1          # fresh: not asked again
    clock.advance(100)                                         # stale, still valid
    iss.mode = "unreachable"
    assert decide(q).granted and len(iss.asked) == 2          # asked, failed, the cache answered
    d = granted()
    iss.revoked.add(d.credential_id)                           # a cached "revoked" answers revoked too
    q2 = make(Issuer(), clock)
    q2.status.revoked.add(d.credential_id)
    assert decide(q2, d).error_code == "E_TICKET_REVOKED"
    q2.status.mode = "unreachable"
    clock.advance(1000)
    assert decide(q2, d).error_code == "E_TICKET_REVOKED"


def test_cache_expires_after_cache_s(loop):
    iss, clock = Issuer(), FakeClock()
    q = make(iss, clock, fresh_s=10, cache_s=60)
    assert decide(q).granted
    clock.advance(61)
    iss.mode = "unreachable"
    assert decide(q).error_code == "E_REVOCATION_QUERY_TIMEOUT"
    assert q.cached(granted().credential_id) is None


def test_cache_validity_is_at_most_five_minutes():
    with pytest.raises(UsageError, match="at most 5 minutes"):
        revquery.parse_policy({"enabled": True, "cache_s": 301}, "trust.revocation_query")
    p = revquery.parse_policy({"enabled": True, "cache_s": 120, "fresh_s": 600}, "x")
    assert (p.cache_s, p.fresh_s, p.timeout_s, p.on_timeout) == (120, 120, 2.0, "reject")
    assert revquery.parse_policy(None, "x") == Policy(enabled=False, timeout_s=2.0, cache_s=300)
    with pytest.raises(UsageError):
        revquery.parse_policy({"on_timeout": "maybe"}, "x")


def test_fail_open_configuration_grants_and_audits_the_risk(loop):
    iss, audit = Issuer(), Audit()
    iss.mode = "hang"
    q = make(iss, audit=audit, timeout_s=0.05, on_timeout="allow")
    d = decide(q)
    assert d.granted
    (e,) = audit.entries
    assert (e["action"], e["outcome"], e["reason"]) == ("revocation_query", "allowed", "E_REVOCATION_QUERY_TIMEOUT")
    assert e["credential"] == d.credential_id and "risk accepted" in e["detail"]


def test_requests_for_one_jti_share_one_query(loop):
    iss = Issuer()
    iss.mode = "hang"
    q = make(iss, timeout_s=5)

    async def main():
        a = asyncio.ensure_future(q.ask("j"))
        b = asyncio.ensure_future(q.ask("j"))
        other = asyncio.ensure_future(q.ask("k"))
        await asyncio.sleep(0.05)
        assert iss.asked == ["j", "k"]            # one query per jti, and k did not wait for j
        iss.gate.set()
        return await asyncio.gather(a, b, other)

    outs = loop.run_until_complete(main())
    assert [o.kind for o in outs] == ["answer"] * 3


# ---- through the engine, with the real trust service -----------------------------------
@pytest.fixture
def svc(tmp_path):
    return TrustService(str(tmp_path))


QUERY = {"enabled": True, "timeout_s": 0.3, "fresh_s": 0}


def test_engine_asks_the_issuer_and_refuses_a_ticket_revoked_there(run, world, svc, in_process):
    async def main():
        app, link = await online_engine(world, svc, in_process, revocation_query=QUERY)
        await link.step()
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        await s.release()
        assert link.revquery.asked == 1
        await svc.revoke(jti)                     # the list is not fetched: only the query knows
        assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) == "E_TICKET_REVOKED"
        assert push.REVOCATIONS in link._wanted       # the list is fetched next
        await rt.close()

    run(main())


def test_engine_query_timeout_then_fail_open_audited(run, world, svc, in_process):
    async def main():
        app, link = await online_engine(world, svc, in_process, revocation_query=QUERY)
        await link.step()
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A, valid_for=3 * 3600, convertible=True)
        svc.line.hang = True
        assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) \
            == "E_REVOCATION_QUERY_TIMEOUT"
        link.revquery.policy = link.revquery.policy._replace(on_timeout="allow")
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        assert s.session_id
        (e,) = [e for e in audit_entries(world, "revocation_query")]
        assert e["outcome"] == "allowed" and e["reason"] == "E_REVOCATION_QUERY_TIMEOUT"
        # Let through unchecked: not made to last as a converted descriptor.
        await app.engine.conversion.settle()
        assert jti not in app.engine.authorizer.terminal.stored_ids()
        assert [(c["outcome"], c["reason"]) for c in audit_entries(world, "convert")] == [("skipped", "unchecked")]
        svc.line.release()
        await rt.close()

    run(main())


def test_engine_a_slow_query_does_not_block_another_runtimes_request(run, world, svc, in_process):
    async def main():
        app, link = await online_engine(world, svc, in_process,
                                        revocation_query=dict(QUERY, timeout_s=30))
        await link.step()
        rta, rtb = await runtime(app, "rtA"), await runtime(app, "rtB")
        _jti, jws = await svc.ticket(world.tid, world.A)
        svc.line.hang = True
        slow = asyncio.ensure_future(rta.acquire(world.A, world.res("camera"), "read", ticket_cred(jws)))
        assert await wait_until(lambda: any("/status" in c for c in svc.line.calls))
        # rtB's request is answered while rtA's query waits.
        s = await world.take(rtb, "gps", "read", who="B")
        assert s.session_id and not slow.done()
        svc.line.release()
        assert (await slow).session_id
        await rta.close()
        await rtb.close()

    run(main())


def test_engine_tickets_under_a_preinstalled_key_are_not_asked(run, world, svc, in_process):
    from capwarden.credentials.issue import SigningKey, sign_ticket, ticket_claims

    key = SigningKey.generate("ed25519", "plant-1", "issuer:plant")
    world.t.import_key(key.public_json(world.now - 100, source="pre-installed"))

    async def main():
        app, link = await online_engine(world, svc, in_process, revocation_query=QUERY)
        await link.step()
        rt = await runtime(app)
        claims = ticket_claims(world.A, world.tid, [world.grant("camera", "read")], "issuer:plant",
                               world.now - 10, world.now + 600)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(sign_ticket(key, claims)))
        assert s.session_id and link.revquery.asked == 0
        await rt.close()

    run(main())


def test_a_query_that_degrades_the_terminal_keeps_its_own_answer(run, world, svc, in_process):
    """The third timeout degrades the terminal while its request waits: that request is told
    E_REVOCATION_QUERY_TIMEOUT (what happened to it), not E_TICKET_OFFLINE_REJECTED, even when
    the check runs in the next second; a request arriving after it gets the offline code."""
    async def main():
        app, link = await online_engine(world, svc, in_process, revocation_query=QUERY)
        await link.step()
        _jti, jws = await svc.ticket(world.tid, world.A)
        auth = app.engine.authorizer
        link.timeouts = 2
        svc.line.hang = True
        body = {"fay_id": world.A, "resource_id": world.res("camera"), "access_mode": "read",
                "credential": ticket_cred(jws)}
        now = int(time.time())
        await auth.prepare("AuthRequest", body, now)
        assert link.mode == "degraded"
        d = auth.check(body["credential"], world.A, body["resource_id"], "read", now + 1)
        assert d.error_code == "E_REVOCATION_QUERY_TIMEOUT"
        await auth.prepare("AuthRequest", body, now + 1)
        d = auth.check(body["credential"], world.A, body["resource_id"], "read", now + 1)
        assert d.error_code == "E_TICKET_OFFLINE_REJECTED"
        svc.line.release()

    run(main())


def test_the_answer_cache_is_bounded_and_drops_the_oldest_answer(loop):
    q = make(Issuer())
    for k in range(revquery.MAX_ENTRIES + 10):
        q._store("jti-%d" % k, False, None)
    q._store("jti-5", False, None)                           # answered again: now among the newest
    assert len(q.cache) == revquery.MAX_ENTRIES
    assert "jti-0" not in q.cache and "jti-10" not in q.cache and "jti-11" in q.cache and "jti-5" in q.cache
    assert "jti-%d" % (revquery.MAX_ENTRIES + 9) in q.cache


def test_a_revoked_answer_outlives_any_number_of_newer_answers(loop):
    """A revoked answer is kept apart from the bounded cache of "not revoked" ones: 4,096 newer
    answers used to push it out before the revocation list brought its statement, and a
    degraded terminal then granted the ticket with the risk audited. Now it is still refused,
    online (without asking again) and degraded."""
    issuer = Issuer()
    revoked = "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    issuer.revoked.add(revoked)
    degraded = []
    q = make(issuer)
    q._degraded = lambda: bool(degraded)
    assert decide(q, granted(revoked)).error_code == "E_TICKET_REVOKED"
    for k in range(revquery.MAX_ENTRIES + 10):
        q._store("jti-%d" % k, False, None)
    asked = len(issuer.asked)
    assert decide(q, granted(revoked)).error_code == "E_TICKET_REVOKED" and len(issuer.asked) == asked
    degraded.append(1)
    assert decide(q, granted(revoked)).error_code == "E_TICKET_REVOKED"
    q._store(revoked, False, None)                           # a later "not revoked" changes nothing
    assert decide(q, granted(revoked)).error_code == "E_TICKET_REVOKED"


def test_the_revoked_answers_are_bounded_too(loop, caplog):
    q = make(Issuer())
    for k in range(revquery.MAX_REVOKED + 2):
        q._store("jti-%d" % k, True, 1)
    assert len(q.revoked) == revquery.MAX_REVOKED and "jti-0" not in q.revoked and "jti-2" in q.revoked
    assert "revoked answers kept" in caplog.text
