"""The server's own refusals: a frame that is not a ProtocolMessage is answered, and audited
under the runtime that sent it, before the answer leaves (every deny is audited)."""

import asyncio
import json
import os

import websockets

from capwarden.engine import audit
from conftest import TOKENS


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
