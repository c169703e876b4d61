"""The SDK in a long-running runtime: what a Client keeps stays bounded (issue 9, benchmarks
part: the client kept every Session and every push forever), and a request's timeout still
raises without wait_for."""

import asyncio

import pytest

from capwarden.sdk import client as sdk_client
from enginerig import runtime

KEPT = getattr(sdk_client, "PUSHES_KEPT", 256)      # (so that the test runs, and fails, on the old client)


def test_sdk_forgets_ended_sessions_and_keeps_only_the_newest_pushes(world, in_process, run):
    async def scenario():
        app = await in_process()
        c = await runtime(app, "rtA")
        try:
            rounds = KEPT + 40        # each round pushes active, terminating, terminated
            for _ in range(rounds):
                s = await world.take(c, "gps", "read")
                assert c.sessions[s.session_id] is s
                await s.release()
                assert s.session_id not in c.sessions
            # Ended by the engine, not released: forgotten when its terminated push arrives.
            s = await world.take(c, "gps", "read")
            await c.request("FayTerminated", {"fay_id": world.A})
            assert await s.ended(timeout=10) == "fay_terminated"
            assert c.sessions == {}
            await asyncio.sleep(0.2)                      # late pushes of released sessions
            assert c.sessions == {} and len(c._early) == 0
            assert len(c.pushes) == KEPT
            assert c.pushes[-1]["body"]["state"] == "terminated"
            assert len(s.changes) <= getattr(sdk_client, "CHANGES_KEPT", 64) and s.changes[-1]["state"] == "terminated"
        finally:
            await c.close()

    run(scenario())


def test_sdk_forgets_a_session_the_engine_reports_unknown(world, in_process, run):
    async def scenario():
        app = await in_process()
        c = await runtime(app, "rtA")
        try:
            s = await world.take(c, "gps", "read")
            await c.close()                  # ended while this client is away: no push reaches it
            other = await runtime(app, "rtA")
            await other.request("SessionRelease", {"session_id": s.session_id})
            await other.close()
            await c.reconnect()
            assert c.sessions == {s.session_id: s}
            ack = await c.heartbeat()
            assert ack["unknown"] == [s.session_id]
            assert c.sessions == {}
        finally:
            await c.close()

    run(scenario())


def test_sdk_request_timeout_raises_and_leaves_nothing_pending(world, in_process, run):
    async def scenario():
        app = await in_process()
        c = await runtime(app, "rtA")
        try:
            # A request the board queues (the motor is held) and never grants within the timeout.
            held = await world.take(c, "motor_left", "write")
            b = await runtime(app, "rtB")
            with pytest.raises(asyncio.TimeoutError):
                await b.request("AuthRequest", {"fay_id": world.B, "resource_id": world.res("motor_left"),
                                                "access_mode": "write", "credential": world.cred(world.dB),
                                                "wait_ms": 3000}, timeout=0.3)
            assert b._pending == {}
            await b.close()
            await held.release()
        finally:
            await c.close()

    run(scenario())


def test_a_session_reported_unknown_before_its_push_still_hears_it_ended(world, in_process, run):
    """A heartbeat can report a session unknown before the engine's terminated push reaches the
    client (the demo hung on it in a CI run: Session.ended() waited forever, the client having
    forgotten the session and dropped its push). Forgetting keeps it reachable by late pushes."""
    async def scenario():
        app = await in_process()
        c = await runtime(app, "rtA")
        try:
            s = await world.take(c, "gps", "read")
            c._forget(s.session_id)                  # as a heartbeat answering "unknown" does
            assert s.session_id not in c.sessions
            await c.request("FayTerminated", {"fay_id": world.A})
            assert await s.ended(timeout=10) == "fay_terminated"
            assert c.sessions == {}
        finally:
            await c.close()

    run(scenario())
