"""attacks.md section I (sessions and hardware control), end to end against `capwarden serve`.

I71 (a grant downgrade uploaded while commands are in flight) does not apply: there is no
downgrade operation; a session's modes are fixed when it is granted, and a narrower descriptor
only affects new requests.
"""

import asyncio
import subprocess

import pytest

from capwarden.engine import protocol
from capwarden.errors import CapError
from enginerig import EXE, exchange, refusal


def test_I69_descriptor_expiring_mid_session_ends_it(world, client, run):
    a = client()
    # Made once the engine is up (its start may take seconds on a loaded machine), valid from
    # now: the 4 s of validity (3 at least, whole seconds) are the session's, not the start-up's.
    short = world.descriptor(world.A, [world.grant("led", "write")], seconds=4)

    async def scenario():
        s = await a.acquire(world.A, world.res("led"), "write", world.cred(short))
        for _ in range(60):
            if s.state == "terminated":
                break
            await s.heartbeat()
            await asyncio.sleep(0.2)
        assert s.state == "terminated" and s.changes[-1]["reason"] == "credential_expired"
        assert await refusal(s.command(1, b"\x01")) == "E_SESSION_NOT_FOUND"

    run(scenario())


def test_I70_revocation_imported_mid_session_ends_it(world, client, run, tmp_path):
    a = client()

    async def scenario():
        s = await world.take(a, "gps", "read")
        rev = str(tmp_path / "rev.cbor")
        for cmd in (["revoke", "--key", world.keyfile, "--descriptor-id", world.dA, "--out", rev],
                    ["revocations", "import", "--store", world.store, rev]):
            # Off the loop: the session's heartbeats go on while the command runs (seconds under load).
            out = await asyncio.to_thread(subprocess.run, [EXE] + cmd, capture_output=True, timeout=30)
            assert out.returncode == 0
        for _ in range(25):                                      # the documented bound is 0.1 s; allow 5 s
            if s.state == "terminated":
                break
            await s.heartbeat()
            await asyncio.sleep(0.2)
        assert s.state == "terminated" and s.changes[-1]["reason"] == "revoked"
        r = await a.request("AuthRequest", {"fay_id": world.A, "resource_id": world.res("gps"), "access_mode": "read",
                                            "credential": world.cred(world.dA)})
        assert r["error_code"] == "E_DESCRIPTOR_REVOKED"

    run(scenario())


def test_I72_a_replayed_command_is_not_executed_again(world, client, run):
    a = client()

    async def scenario():
        cam = await world.take(a, "camera", "execute")
        capture = protocol.make("ResourceCommand", {"session_id": cam.session_id, "op": 1}, "rtA")
        first = await exchange(a, capture)
        replay = await exchange(a, capture)                     # the same message, again
        assert replay == first                                  # the first answer, not a second capture
        assert (await cam.command(1))[0] == _frames(first) + 1  # a fresh capture: the count went up by one

    run(scenario())


def _frames(reply):
    from capwarden.credentials.b64 import b64u_decode

    return b64u_decode(reply["body"]["data"])[0]


def test_I73_no_resumption_without_the_credential(world, client, run):
    a, b = client("rtA"), client("rtB")
    s = run(world.take(a, "motor_left", "write"))
    # Another runtime knowing the session id gets nothing from it.
    assert run(b.request("Heartbeat", {"session_ids": [s.session_id]}))["alive"] == []
    with pytest.raises(CapError):
        run(b.request("ResourceCommand", {"session_id": s.session_id, "op": 1, "args": "ZAA"}))
    # Once it has ended, the id is dead for its own runtime too: only a new AuthRequest,
    # which re-proves the credential, gives control again.
    run(s.release())
    assert run(a.request("Heartbeat", {"session_ids": [s.session_id]}))["unknown"] == [s.session_id]
    with pytest.raises(CapError) as exc:
        run(a.request("ResourceCommand", {"session_id": s.session_id, "op": 1, "args": "ZAA"}))
    assert exc.value.code == "E_SESSION_NOT_FOUND"
