"""cap-supplement S3, row by row, end to end: a real WebSocket client against `capwarden serve`."""

import asyncio
import json

import pytest
import websockets

from capwarden.engine import protocol
from capwarden.errors import CapError
from enginerig import TOKENS, refusal, wait_until


def test_authrequest_granted_has_every_s3_field(world, client, run):
    c = client()
    r = run(c.request("AuthRequest", {"fay_id": world.A, "resource_id": world.res("gps"), "access_mode": "read",
                                      "credential": world.cred(world.dA)}))
    assert r["result"] == "granted" and r["resource_id"] == world.res("gps") and r["access_mode"] == "read"
    for f in ("session_id", "granted_modes", "expires_at", "heartbeat_interval_ms", "heartbeat_timeout_ms"):
        assert f in r
    assert r["granted_modes"] == ["read"] and r["heartbeat_timeout_ms"] == 1000


def test_authrequest_denied_carries_the_credential_code(world, client, run):
    c = client()
    r = run(c.request("AuthRequest", {"fay_id": world.B, "resource_id": world.res("camera"), "access_mode": "read",
                                      "credential": world.cred(world.dB)}))
    assert r["result"] == "denied" and r["error_code"] == "E_DESCRIPTOR_MODE_NOT_GRANTED" and r["error_message"]
    r = run(c.request("AuthRequest", {"fay_id": world.A, "resource_id": world.res("gps"), "access_mode": "read",
                                      "credential": world.cred(world.dB)}))
    assert r["error_code"] == "E_DESCRIPTOR_SUBJECT_MISMATCH"
    r = run(c.request("AuthRequest", {"fay_id": world.A, "resource_id": world.tid + "/sim/nothing",
                                      "access_mode": "read", "credential": world.cred(world.dA)}))
    assert r["result"] == "denied"


def test_authrequest_wait_ms_queues_until_the_holder_releases(world, client, run):
    a, b = client("rtA"), client("rtB")

    async def scenario():
        sa = await world.take(a, "motor_left", "write")
        assert await refusal(world.take(b, "motor_left", "write", who="B")) == "E_RESOURCE_BUSY"
        waiting = asyncio.ensure_future(world.take(b, "motor_left", "write", who="B",
                                                  wait_ms=5000))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await sa.release()
        sb = await waiting
        assert sb.state == "active"

    run(scenario())


def test_heartbeat_ack_alive_and_unknown(world, client, run):
    a, b = client("rtA"), client("rtB")
    sa = run(world.take(a, "gps", "read"))
    sb = run(world.take(b, "gps", "read", who="B"))
    r = run(a.request("Heartbeat", {"session_ids": [sa.session_id, sb.session_id, "01927b34-7e21-7c4d-a89f-1234567890ab"]}))
    assert r["alive"] == [sa.session_id]
    assert set(r["unknown"]) == {sb.session_id, "01927b34-7e21-7c4d-a89f-1234567890ab"}  # not B's business


def test_session_release_and_state_pushes(world, client, run):
    a = client()
    s = run(world.take(a, "camera", "execute"))
    r = run(a.request("SessionRelease", {"session_id": s.session_id}))
    assert r == {"session_id": s.session_id}
    run(wait_until(lambda: s.state == "terminated"))
    # (creating -> active may arrive before or after the AuthResult: both go out at once)
    changes = [(c["previous_state"], c["state"], c["reason"]) for c in s.changes if c["reason"] != "granted"]
    assert changes == [("active", "terminating", "released"), ("terminating", "terminated", "released")]


def test_fay_terminated_releases_all_of_that_fays_sessions(world, client, run):
    a = client()
    ids = {run(a.acquire(world.A, world.res(n), m, world.cred(world.dA))).session_id
           for n, m in (("gps", "read"), ("camera", "execute"), ("motor_right", "write"))}
    r = run(a.request("FayTerminated", {"fay_id": world.A}))
    assert set(r["session_ids"]) == ids
    assert run(a.request("SessionQuery", {}))["sessions"] == []


def test_session_query_lists_only_own_sessions(world, client, run):
    a, b = client("rtA"), client("rtB")
    sa = run(world.take(a, "gps", "read"))
    sb = run(world.take(b, "gps", "read", who="B"))
    mine = run(a.request("SessionQuery", {}))["sessions"]
    assert [s["session_id"] for s in mine] == [sa.session_id]
    assert mine[0]["state"] == "active" and mine[0]["suspended"] is False
    with pytest.raises(CapError) as exc:
        run(a.request("SessionQuery", {"session_id": sb.session_id}))
    assert exc.value.code == "E_PERMISSION_DENIED"


def test_handover_with_consent(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = []
    a.on_offer(lambda o: offers.append(o) or True)
    sa = run(world.take(a, "camera", "execute"))
    r = run(world.hand_over(b, "camera", "execute", 5000))
    assert r["result"] == "completed" and r["session"].state == "active"
    assert offers and offers[0]["session_id"] == sa.session_id and offers[0]["to_fay_id"] == world.B
    run(wait_until(lambda: sa.state == "terminated"))
    assert [c["state"] for c in sa.changes if c["reason"] != "granted"] == ["handover_pending", "terminating", "terminated"]
    assert run(b.request("SessionQuery", {}))["sessions"][0]["fay_id"] == world.B


def test_handover_refused(world, client, run):
    a, b = client("rtA"), client("rtB")
    a.on_offer(lambda o: False)
    sa = run(world.take(a, "camera", "execute"))
    r = run(world.hand_over(b, "camera", "execute", 5000))
    assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_REJECTED"
    run(wait_until(lambda: sa.changes and sa.changes[-1]["state"] == "active"))
    assert sa.state == "active" and sa.changes[-1]["reason"] == "handover_rejected"


def test_error_for_malformed_input_and_the_connection_stays_open(served, run):
    async def scenario():
        async with websockets.connect(served.url, additional_headers={"Authorization": "Bearer " + TOKENS["rtA"]}) as ws:
            replies = []
            for frame in ("not json", json.dumps({"version": 1}), b"\x00\x01",
                          json.dumps(protocol.make("AuthRequest", {"fay_id": "x"}, "rtA"))):
                await ws.send(frame)
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            assert all(r["message_type"] == "Error" and r["body"]["error_code"] == "E_MALFORMED_REQUEST"
                       for r in replies)
            assert replies[3]["correlation_id"]            # the id could be read: it is echoed
            ok = protocol.make("SessionQuery", {}, "rtA")
            await ws.send(protocol.dumps(ok))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert r["message_type"] == "SessionList" and r["correlation_id"] == ok["message_id"]

    run(scenario())


def test_sender_is_stamped_from_the_connection(world, client, run):
    a = client("rtA")
    msg = protocol.make("SessionQuery", {}, "rtB")     # claims to be another runtime
    reply = run(a.request("SessionQuery", {}, raw=True))
    assert reply["message_type"] == "SessionList"

    async def forged():
        fut = asyncio.get_running_loop().create_future()
        a._pending[msg["message_id"]] = fut
        await a.ws.send(protocol.dumps(msg))
        return await asyncio.wait_for(fut, 10)

    r = run(forged())
    assert r["message_type"] == "Error" and r["body"]["error_code"] == "E_PERMISSION_DENIED"


def test_handshake_needs_a_valid_bearer_token_and_the_path(served, run):
    async def attempt(url, headers):
        try:
            async with websockets.connect(url, additional_headers=headers):
                return 101
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code

    assert run(attempt(served.url, {"Authorization": "Bearer wrong-token"})) == 401
    assert run(attempt(served.url, {})) == 401
    assert run(attempt(served.url.replace("/cap/v1", "/other"), {"Authorization": "Bearer " + TOKENS["rtA"]})) == 404
    assert run(attempt(served.url, {"Authorization": "Bearer " + TOKENS["rtA"]})) == 101


def test_every_request_gets_exactly_one_final_response(world, client, run):
    a = client()
    seen = []

    async def scenario():
        msgs = [protocol.make("SessionQuery", {}, "rtA") for _ in range(20)]
        for m in msgs:
            await a.ws.send(protocol.dumps(m))
        await asyncio.sleep(1.0)
        return msgs

    msgs = run(scenario())
    seen = [p for p in a.pushes if p.get("correlation_id")]
    counts = {}
    for p in seen:
        counts[p["correlation_id"]] = counts.get(p["correlation_id"], 0) + 1
    assert counts == {m["message_id"]: 1 for m in msgs}


def test_responses_and_pushes_validate_against_the_shipped_schema(world, client, run):
    a, b = client("rtA"), client("rtB")
    a.on_offer(lambda o: True)
    run(world.take(a, "camera", "execute"))
    run(world.hand_over(b, "camera", "execute", 5000))
    for p in a.pushes + b.pushes:
        protocol.parse(json.dumps(p))   # raises if the engine sends what the schema forbids


def test_version_and_sender_id_are_checked(served, run):
    async def scenario():
        async with websockets.connect(served.url, additional_headers={"Authorization": "Bearer " + TOKENS["rtA"]}) as ws:
            v2 = dict(protocol.make("SessionQuery", {}, "rtA"), version=2)
            await ws.send(json.dumps(v2))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert r["body"]["error_code"] == "E_UNSUPPORTED_VERSION" and r["correlation_id"] == v2["message_id"]
            anonymous = protocol.make("SessionQuery", {}, "rtA")
            del anonymous["sender_id"]                      # section 2.6: sender_id is required
            await ws.send(json.dumps(anonymous))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert r["body"]["error_code"] == "E_MALFORMED_REQUEST" and "sender_id" in r["body"]["error_message"]

    run(scenario())


def test_credential_content_gets_the_credential_codes(world, client, run):
    a = client()
    base = {"fay_id": world.A, "resource_id": world.res("gps"), "access_mode": "read"}
    for cred, code in (({"type": "descriptor_ref", "descriptor_id": "not-a-descriptor"}, "E_DESCRIPTOR_NOT_FOUND"),
                       ({"type": "descriptor_ref", "descriptor_id": "01927b34-7e21-7c4d-a89f-1234567890ab"},
                        "E_DESCRIPTOR_NOT_FOUND"),
                       ({"type": "ticket", "ticket": "a.b"}, "E_TICKET_MALFORMED"),
                       ({"type": "ticket", "ticket": "x" * 70000}, "E_TICKET_MALFORMED")):
        r = run(a.request("AuthRequest", dict(base, credential=cred)))
        assert r["result"] == "denied" and r["error_code"] == code, (cred["type"], r)


def test_authrequest_with_a_ticket(world, client, run):
    from capwarden.credentials.issue import sign_ticket, ticket_claims

    token = sign_ticket(world.key, ticket_claims(world.C, world.tid, [world.grant("imu", "read")], "issuer:acme",
                                                 world.now - 60, world.now + 3600))
    a = client()
    s = run(a.acquire(world.C, world.res("imu"), "read", {"type": "ticket", "ticket": token}))
    listed = run(a.request("SessionQuery", {}))["sessions"][0]
    assert listed["credential_ref"]["type"] == "ticket" and listed["session_id"] == s.session_id
    r = run(a.request("AuthRequest", {"fay_id": world.C, "resource_id": world.res("imu"), "access_mode": "configure",
                                      "credential": {"type": "ticket", "ticket": token}}))
    assert r["error_code"] == "E_TICKET_MODE_NOT_GRANTED"


def test_sdk_refuses_a_request_the_schema_forbids_before_sending(world, client, run):
    a = client()
    with pytest.raises(CapError) as exc:
        run(a.request("Heartbeat", {"session_ids": "not a list"}))
    assert exc.value.code == "E_MALFORMED_REQUEST" and "session_ids" in exc.value.message


def test_keys_and_descriptors_imported_while_serving_are_used(world, client, run, tmp_path):
    """Another process (capwarden keys import, descriptors import) changes the store under serve."""
    import subprocess

    from capwarden.credentials.issue import SigningKey, descriptor_payload, sign_descriptor
    from enginerig import EXE

    key = SigningKey.generate("ed25519", "beta-1", "issuer:beta")
    prefix = str(tmp_path / "beta")
    key.save(prefix, world.now - 100)
    path = str(tmp_path / "d.cap")
    with open(path, "wb") as f:
        f.write(sign_descriptor(key, descriptor_payload(world.C, world.tid, [world.grant("sdcard", "write")],
                                                        "issuer:beta", world.now - 60, world.now + 3600)))
    for cmd in (["keys", "import", "--store", world.store, prefix + ".pub.json"],
                ["descriptors", "import", "--store", world.store, path]):
        out = subprocess.run([EXE] + cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
    did = subprocess.run([EXE, "descriptors", "list", "--store", world.store], capture_output=True, text=True,
                         timeout=30).stdout
    a = client()

    async def scenario():
        await asyncio.sleep(0.2)                      # the engine's next sweep re-reads the store
        ids = [w for w in did.split() if len(w) == 36 and w not in (world.dA, world.dB, world.dC)]
        s = await a.acquire(world.C, world.res("sdcard"), "write", world.cred(ids[0]))
        assert s.state == "active"

    run(scenario())
