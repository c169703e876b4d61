"""Issue 10, item 5: the SDK stands on the shared schema alone and raises only capwarden errors.

Every failure a runtime author can meet is a capwarden.errors.CapwardenError, and still the
built-in kind a caller may already catch: EngineUnreachable is a ConnectionError (an OSError),
EngineTimeout a TimeoutError (asyncio.TimeoutError). The previous client raised the
websockets library's own InvalidStatus for a bad token, a bare OSError when nothing listened
and asyncio.TimeoutError for a request without an answer, and imported the engine.
"""

import asyncio
import socket
import subprocess
import sys

import pytest

from capwarden.errors import CapwardenError, LinkClosed
from capwarden.sdk import EngineTimeout, EngineUnreachable, connect
from enginerig import TOKENS, refusal, runtime, speed


def test_the_sdk_imports_nothing_of_the_engine():
    code = ("import sys, capwarden.sdk; "
            "print(sorted(m for m in sys.modules if m.startswith('capwarden.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_nothing_listening_is_engine_unreachable_and_still_an_oserror(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # closed again: nothing listens there
    with pytest.raises(EngineUnreachable) as exc:
        run(connect("ws://127.0.0.1:%d/cap/v1" % port, "rtA", TOKENS["rtA"]))
    assert isinstance(exc.value, CapwardenError) and isinstance(exc.value, OSError)
    assert exc.value.status is None


def test_a_bad_token_is_engine_unreachable_with_its_status_and_not_echoed(world, run, in_process):
    async def scenario():
        app = await in_process()
        with pytest.raises(EngineUnreachable) as exc:
            await connect(app.server.url, "rtA", "not-the-token")
        assert exc.value.status == 401 and "token" in str(exc.value)
        assert "not-the-token" not in str(exc.value)

    run(scenario())


def test_no_answer_in_time_is_engine_timeout_and_still_an_asyncio_timeout(world, run, in_process):
    async def scenario():
        app = await in_process()
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        try:
            held = await world.take(a, "motor_left", "write")
            queued = b.request("AuthRequest", world.auth_body("motor_left", "write", who="B", wait_ms=3000),
                               timeout=0.3)
            with pytest.raises(asyncio.TimeoutError) as exc:       # what callers caught before
                await queued
            assert isinstance(exc.value, EngineTimeout) and isinstance(exc.value, CapwardenError)
            with pytest.raises(EngineTimeout):
                await held.ended(timeout=0.05)                      # still held: it does not end
            await held.release()
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_a_request_on_a_closed_connection_is_link_closed(world, run, in_process):
    async def scenario():
        app = await in_process()
        a = await runtime(app, "rtA")
        await a.ws.close()
        with pytest.raises(LinkClosed):
            await a.request("SessionQuery", {})
        with pytest.raises(LinkClosed):
            await a.send_raw("{}")
        await a.close()                                             # closing twice is no error

    run(scenario())


def test_query_and_fay_terminated_have_sdk_methods(world, run, in_process):
    async def scenario():
        app = await in_process()
        a = await runtime(app, "rtA")
        try:
            s = await world.take(a, "gps", "read")
            listed = await a.query_sessions()
            assert [x["session_id"] for x in listed] == [s.session_id]
            assert (await a.query_sessions(s.session_id))[0]["state"] == "active"
            assert await a.fay_terminated(world.A) == [s.session_id]
            assert await s.ended(timeout=10) == "fay_terminated"
            assert a.sessions == {} and await a.query_sessions() == []
        finally:
            await a.close()

    run(scenario())


def test_command_args_are_strict_base64url(world, run, in_process):
    async def scenario():
        app = await in_process()
        a = await runtime(app, "rtA")
        try:
            m = await world.take(a, "motor_left", "write")
            await m.command(1, speed(0))                             # encoded by the one base64url helper
            body = {"session_id": m.session_id, "op": 1, "args": "AAA"}             # speed 0, canonical
            assert (await a.request("ResourceCommand", body))["op"] == 1
            # "AAB" sets low bits that no byte string encodes to: one encoding per byte string.
            assert await refusal(a.request("ResourceCommand", dict(body, args="AAB"))) == "E_MALFORMED_REQUEST"
        finally:
            await a.close()

    run(scenario())


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999/cap/v1", "ws://[::1/cap/v1", "http://127.0.0.1:1/cap/v1"])
def test_a_url_that_is_none_is_bad_engine_url_and_still_a_valueerror(run, url):
    # The previous client let websockets' own ValueError (a port out of range) or InvalidURI out.
    from capwarden.sdk import BadEngineURL

    with pytest.raises(BadEngineURL) as exc:
        run(connect(url, "rtA", TOKENS["rtA"]))
    assert isinstance(exc.value, CapwardenError) and isinstance(exc.value, ValueError)
    assert TOKENS["rtA"] not in str(exc.value)
