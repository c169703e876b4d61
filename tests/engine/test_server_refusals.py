"""The server's own refusals: a frame that is not a ProtocolMessage is answered, and audited
under the runtime that sent it, before the answer leaves (every deny is audited)."""

import asyncio
import json
import os

import websockets

from capwarden.engine import audit
from enginerig import TOKENS


def test_a_malformed_frame_is_answered_and_audited_under_its_runtime(world, served, run):
    async def scenario():
        auth = {"Authorization": "Bearer " + TOKENS["rtB"]}
        async with websockets.connect(served.url, additional_headers=auth) as ws:
            for frame in ("not json", "[" * 100000):
                await ws.send(frame)
                r = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert r["message_type"] == "Error" and r["body"]["error_code"] == "E_MALFORMED_REQUEST"
                # answered, so already on disk (the answer waits for the audit sync)
                entries, problem = audit.read(os.path.join(world.store, "audit.log"))
                assert problem is None
                assert entries[-1]["outcome"] == "denied" and entries[-1]["runtime"] == "rtB"
                assert entries[-1]["reason"] == "E_MALFORMED_REQUEST"

    run(scenario())


def test_refusals_are_logged_one_line_each_without_what_was_sent(world, served, run):
    secret = "SECRET-frame-content\nWARNING forged"

    async def scenario():
        auth = {"Authorization": "Bearer " + TOKENS["rtB"]}
        async with websockets.connect(served.url, additional_headers=auth) as ws:
            await ws.send(secret)
            json.loads(await asyncio.wait_for(ws.recv(), 10))
        bad = {"Authorization": "Bearer not-the-token-" + TOKENS["rtA"][::-1]}
        try:
            async with websockets.connect(served.url, additional_headers=bad):
                pass
        except websockets.exceptions.InvalidStatus as exc:
            assert exc.response.status_code == 401

    run(scenario())
    served.stop()
    log = served.stderr()
    assert "event=malformed_frame runtime=rtB error_code=E_MALFORMED_REQUEST" in log
    assert "event=refused reason=unknown_token" in log
    assert "SECRET" not in log and "forged" not in log and TOKENS["rtA"][::-1] not in log
    engine_lines = [x for x in log.splitlines() if " capwarden.engine " in x]
    assert engine_lines and all(x[:4].isdigit() and x[10] == "T" for x in engine_lines)
