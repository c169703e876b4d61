"""Issue 14 items 5 and 6: degradation (chapter 4 sections 4.5.1-4.5.2) and recovery (4.5.3),
each trigger, behaviour and step a test of its own. The real trust service (SQLite) in process
behind a line the test cuts or pauses, the engine on the virtual board, an injected monotonic
clock for the state machine (link.step() and link.evaluate() are driven by the test)."""

import asyncio
import json
import os
import time

import httpx

import pytest
from enginerig import refusal, runtime, wait_until
from onlinerig import FakeClock, TrustService, audit_entries, online_engine, ticket_cred

from capwarden.engine import online


@pytest.fixture
def svc(tmp_path):
    return TrustService(str(tmp_path))


async def up(world, svc, in_process, clock=None, **kw):
    app, link = await online_engine(world, svc, in_process, clock=clock, **kw)
    await link.step()
    assert link.mode == online.ONLINE
    return app, link


def cred(did):
    return {"type": "descriptor_ref", "descriptor_id": did}


# ---- 4.5.1 triggers -------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [30.0, 5.0])
def test_4_5_1_trigger_1_unreachable_longer_than_the_threshold(run, world, svc, in_process, threshold):
    clock = FakeClock()

    async def main():
        kw = {} if threshold == 30.0 else {"unreachable_s": threshold}
        app, link = await up(world, svc, in_process, clock, **kw)
        svc.line.down = True
        await link.step()                                  # the first failure
        clock.advance(threshold - 0.5)
        await link.step()
        assert link.mode == online.ONLINE                  # not yet: unreachable for less than the threshold
        clock.advance(1.0)
        assert link.evaluate() == online.UNREACHABLE
        assert link.mode == online.DEGRADED and app.engine.authorizer.degraded
        assert link.transitions[-1] == (online.DEGRADED, online.UNREACHABLE)

    run(main())


def test_4_5_1_trigger_1_an_answer_restarts_the_unreachable_timer(run, world, svc, in_process):
    clock = FakeClock()

    async def main():
        _app, link = await up(world, svc, in_process, clock)
        svc.line.down = True
        await link.step()
        clock.advance(20)
        svc.line.down = False
        await link.step()                                  # answered
        svc.line.down = True
        clock.advance(20)
        await link.step()
        clock.advance(20)                                  # 40 s since the first failure, 20 since the last answer
        assert link.evaluate() is None and link.mode == online.ONLINE

    run(main())


@pytest.mark.parametrize("count", [3, 1])
def test_4_5_1_trigger_2_consecutive_revocation_query_timeouts(run, world, svc, in_process, count):
    async def main():
        kw = {"revocation_query": {"enabled": True, "timeout_s": 0.2, "fresh_s": 0}}
        if count != 3:
            kw["query_timeouts"] = count
        app, link = await up(world, svc, in_process, **kw)
        rt = await runtime(app)
        _jti, jws = await svc.ticket(world.tid, world.A)
        svc.line.hang = True                               # a paused service: nothing answers
        for i in range(count):
            assert link.mode == online.ONLINE
            assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) \
                == "E_REVOCATION_QUERY_TIMEOUT"
        assert link.mode == online.DEGRADED and link.trigger == online.QUERY_TIMEOUTS
        assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) \
            == "E_TICKET_OFFLINE_REJECTED"
        svc.line.release()
        await rt.close()

    run(main())


def test_4_5_1_trigger_2_an_answer_between_timeouts_resets_the_count(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process, revocation_query={"enabled": True, "timeout_s": 0.2,
                                                                       "fresh_s": 0})
        link.query_timed_out()
        link.query_timed_out()
        await link.step()                                  # the service answered a poll
        link.query_timed_out()
        assert link.mode == online.ONLINE and link.timeouts == 1

    run(main())


def test_4_5_1_trigger_3_network_reported_down(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process)
        open(link.network_file, "w").close()               # what a network manager's hook does
        svc.line.calls.clear()
        await link.step()
        assert link.mode == online.DEGRADED and link.trigger == online.NETWORK_DOWN
        await link.step()
        assert svc.line.calls == []                        # no attempt while the network is down
        os.unlink(link.network_file)
        await link.step()
        assert link.mode == online.ONLINE

    run(main())


def test_the_network_file_can_be_configured(run, world, svc, in_process, tmp_path):
    path = str(tmp_path / "netdown")

    async def main():
        _app, link = await up(world, svc, in_process, network_down_file=path)
        open(path, "w").close()
        assert link.evaluate() == online.NETWORK_DOWN

    run(main())


# ---- 4.5.2 behaviour ------------------------------------------------------------------------
async def cut(svc, link):
    """The service gone and the network reported down: degraded at the next round."""
    svc.line.down = True
    open(link.network_file, "w").close()
    await link.step()
    assert link.mode == online.DEGRADED


def restore(svc, link):
    svc.line.down = False
    os.unlink(link.network_file)


async def degraded(world, svc, in_process, **kw):
    app, link = await up(world, svc, in_process, **kw)
    await cut(svc, link)
    return app, link


def test_4_5_2_1_new_tickets_are_refused_while_degraded(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process)
        rt = await runtime(app)
        _jti, jws = await svc.ticket(world.tid, world.A)
        await cut(svc, link)
        assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) \
            == "E_TICKET_OFFLINE_REJECTED"
        await rt.close()

    run(main())


def test_4_5_2_1_offline_acceptance_configured(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process, offline_tickets="accept",
                             revocation_query={"enabled": True, "fresh_s": 0})
        rt = await runtime(app)
        _jti, jws = await svc.ticket(world.tid, world.A)
        await cut(svc, link)
        assert link.mode == online.DEGRADED and not app.engine.authorizer.degraded
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        assert s.session_id
        (e,) = audit_entries(world, "revocation_query")
        assert (e["outcome"], e["reason"]) == ("allowed", "offline_accepted")
        await rt.close()

    run(main())


def test_4_5_2_2_converted_descriptors_work_as_before(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process)
        jti, jws = await svc.ticket(world.tid, world.A, valid_for=4 * 3600)
        did = app.engine.authorizer.terminal.convert_ticket(jws, world.now)
        await cut(svc, link)
        rt = await runtime(app)
        s = await rt.acquire(world.A, world.res("camera"), "read", cred(did))
        assert s.session_id and did == jti
        await rt.close()

    run(main())


def test_4_5_2_3_plain_descriptors_are_not_affected(run, world, svc, in_process):
    async def main():
        app, link = await degraded(world, svc, in_process)
        rt = await runtime(app)
        s = await world.take(rt, "camera", "read")
        assert s.session_id
        await rt.close()

    run(main())


def test_4_5_2_4_runtimes_are_told_the_mode(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process)
        rt = await runtime(app)
        s = await world.take(rt, "camera", "read")
        open(link.network_file, "w").close()
        await link.step()
        assert await wait_until(lambda: any(c.get("terminal_mode") == "degraded" for c in s.changes))
        os.unlink(link.network_file)
        await link.step()
        assert await wait_until(lambda: any(c.get("terminal_mode") == "online" for c in s.changes))
        modes = [c for c in s.changes if "terminal_mode" in c]
        assert [(c["reason"], c["state"], c["previous_state"]) for c in modes] == [
            ("terminal_degraded", "active", "active"), ("terminal_online", "active", "active")]
        await rt.close()

    run(main())


# ---- 4.5.3 recovery -------------------------------------------------------------------------
def test_4_5_3_1_recovery_synchronises_the_revocation_list_first(run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process)
        jti, _ = await svc.ticket(world.tid, world.A)
        await svc.revoke(jti)
        await link.step()                                  # version 1 held
        await cut(svc, link)
        jti2, _ = await svc.ticket(world.tid, world.A)
        await svc.revoke(jti2)                             # issued while offline
        restore(svc, link)
        svc.line.calls.clear()
        await link.step()
        assert svc.line.calls[0] == "/v1/terminals/%s/revocations?since=1" % world.tid   # a delta, first
        assert link.client.revocations_version == 2
        assert app.engine.authorizer.terminal.revocations.revoked("issuer:fleet", jti2)

    run(main())


def test_4_5_3_2_a_session_revoked_while_offline_ends_revoked_before_tickets_are_accepted(
        run, world, svc, in_process):
    async def main():
        app, link = await up(world, svc, in_process)
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A, valid_for=4 * 3600)
        did = app.engine.authorizer.terminal.convert_ticket(jws, world.now)
        await cut(svc, link)
        s = await rt.acquire(world.A, world.res("camera"), "read", cred(did))     # goes on offline
        await svc.revoke(jti)                              # at the service, the terminal offline
        seen = []
        terminate = app.engine.terminate

        async def watching(sess, reason):
            seen.append((sess.session_id, reason, app.engine.authorizer.degraded, link.mode))
            await terminate(sess, reason)

        app.engine.terminate = watching
        restore(svc, link)
        await link.step()
        assert seen[0] == (s.session_id, "revoked", True, online.DEGRADED)       # still refusing tickets
        assert link.mode == online.ONLINE
        assert await wait_until(lambda: s.state == "terminated")
        assert s.changes[-1]["reason"] == "revoked"
        ends = [e["seq"] for e in audit_entries(world, "terminate") if e["reason"] == "revoked"]
        back = [e["seq"] for e in audit_entries(world, "mode") if e["outcome"] == "online"]
        assert ends and ends[0] < back[-1]
        await rt.close()

    run(main())


def test_4_5_3_3_tickets_are_accepted_again_after_recovery(run, world, svc, in_process):
    async def main():
        app, link = await degraded(world, svc, in_process)
        rt = await runtime(app)
        _jti, jws = await svc.ticket(world.tid, world.A)
        assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) \
            == "E_TICKET_OFFLINE_REJECTED"
        restore(svc, link)
        await link.step()
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        assert s.session_id
        await rt.close()

    run(main())


def test_the_terminal_starts_degraded_and_stays_so_until_its_first_sync(run, world, svc, in_process):
    from capwarden.credentials.issue import sign_ticket, ticket_claims

    claims = ticket_claims(world.A, world.tid, [world.grant("camera", "read")], "issuer:acme", world.now - 10,
                           world.now + 600)
    jws = sign_ticket(world.key, claims)        # under a key the store holds already

    async def main():
        svc.line.down = True
        app, link = await online_engine(world, svc, in_process)
        rt = await runtime(app)
        await link.step()
        assert await refusal(rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))) \
            == "E_TICKET_OFFLINE_REJECTED"
        svc.line.down = False
        await link.step()
        assert (await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))).session_id
        await rt.close()

    run(main())


def test_mode_changes_are_audited_and_written_for_status(run, world, svc, in_process):
    async def main():
        app, link = await degraded(world, svc, in_process)
        await asyncio.sleep(0.1)                           # the audit's group commit
        modes = [(e["outcome"], e["reason"]) for e in audit_entries(world, "mode")]
        assert modes == [("degraded", "starting"), ("online", "recovered"), ("degraded", "network_down")]
        with open(os.path.join(link.state_dir, online.MODE_FILE)) as f:
            st = json.load(f)
        assert (st["mode"], st["trigger"], st["terminal_id"]) == ("degraded", "network_down", world.tid)

    run(main())


def test_a_service_whose_list_cannot_be_verified_counts_as_unreachable(run, world, svc, in_process):
    """A tampered (or rolled-back) revocation list is not a sync: after unreachable_s the
    terminal degrades, and it does not recover until a list verifies."""
    from capwarden.trust import signed

    clock = FakeClock()

    async def main():
        app, link = await up(world, svc, in_process, clock)
        handle = svc.line.handle

        async def tampering(request):
            resp = await handle(request)
            if "/revocations" in request.url.path:
                doc = json.loads(resp.content)
                p = signed.payload_of(doc, signed.REVOCATION_LIST)
                p["entries"] = []
                doc["payload"] = signed.sign(p, [svc.ring.issuer_key()])["payload"]   # the old signatures kept
                return httpx.Response(200, json=doc)
            return resp

        link.client.http._transport.handler = tampering
        await svc.revoke((await svc.ticket(world.tid, world.A))[0])
        await link.step()
        assert link.fail_since is not None
        clock.advance(31)
        assert link.evaluate() == online.UNREACHABLE
        await link.step()
        assert link.mode == online.DEGRADED                # no recovery on a list that does not verify
        link.client.http._transport.handler = handle
        await link.step()
        assert link.mode == online.ONLINE

    run(main())


def test_the_mode_is_in_the_control_rooms_snapshot_and_its_change_is_announced(run, world, svc, in_process):
    # What the console shows (issue 14 item 6: mode changes visible): the snapshot carries the
    # online side's status, and subscribers hear of each transition at once.
    from capwarden.engine import controlroom

    async def main():
        app, link = await up(world, svc, in_process)
        changes = []
        controlroom.subscribe(app.engine, changes.append)
        assert controlroom.snapshot(app.engine)["online"]["mode"] == online.ONLINE
        open(link.network_file, "w").close()
        await link.step()
        snap = controlroom.snapshot(app.engine)["online"]
        assert snap["mode"] == online.DEGRADED and snap["trigger"] == online.NETWORK_DOWN
        assert {"type": "terminal", "mode": "degraded"} in changes
        os.unlink(link.network_file)
        await link.step()
        assert {"type": "terminal", "mode": "online"} in changes

    run(main())


def test_4_5_3_2_recovery_waits_for_a_session_already_ending(run, world, svc, in_process):
    # The revocation listener may have begun to end a session before the re-check reaches it:
    # recovery must not say "online" before that end is complete.
    import types

    async def main():
        app, link = await up(world, svc, in_process)
        ending = types.SimpleNamespace(session_id="s-ending", state="terminating", runtime_id="rt",
                                       resource_id="x", fay_id=None)
        app.engine.registry.sessions[ending.session_id] = ending

        async def finish():
            await asyncio.sleep(0.1)
            ending.state = "terminated"

        asyncio.ensure_future(finish())
        await link.recheck_sessions()
        state = ending.state
        del app.engine.registry.sessions[ending.session_id]
        return state

    assert run(main()) == "terminated"


def test_a_revoked_answer_not_yet_in_the_local_list_still_counts_at_use(run, world, svc, in_process):
    # The issuer answered "revoked" to a query but the statement has not reached the local list
    # (its fetch failed): a session on that ticket, or a request that waited, is not valid.
    async def main():
        app, link = await up(world, svc, in_process, revocation_query={"enabled": True, "timeout_s": 1.0})
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        ref = app.engine.sessions[s.session_id].credential_ref
        auth = app.engine.authorizer
        now = int(time.time())
        assert auth.still_valid(ref, now) is None
        auth.revquery._store(jti, True, now)                # the answer, without its statement
        assert not auth.terminal.revocations.revoked(ref["issuer_id"], jti)
        assert auth.still_valid(ref, now) == "revoked"
        await rt.close()

    run(main())
