"""Dual credentials (chapter 4 section 4.6) in the SDK, against the engine over WebSocket: the
selection of the 4.6 table by the terminal's mode, and the fallback as a second, independent
AuthRequest."""

import asyncio

import pytest

from capwarden.engine import modepush
from capwarden.engine.server import Server
from capwarden.errors import CapError
from capwarden.sdk import DualCredential, connect
from capwarden.sdk.dual import falls_back
from convrig import HOUR, Rig, run, ticket_cred

TOKENS = {"rtA": "token-A-123456"}


@pytest.fixture
def rig(tmp_path):
    return Rig(str(tmp_path))


async def served(rig):
    server = await Server(TOKENS, "127.0.0.1:0").start(rig.engine)
    client = await connect(server.url, "rtA", TOKENS["rtA"])
    return server, client


async def closing(server, client, rig):
    await client.close()
    await server.close()
    await rig.engine.conversion.settle()


async def until(cond, timeout=10.0):
    """Wait (generously) for cond() to hold: the pushes travel over the WebSocket."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in %s s" % timeout
        await asyncio.sleep(0.005)


def attempts(rig):
    """The credential type of every AuthRequest decided (one `acquire` entry each, granted or not)."""
    return [e.get("credential_type", "denied") for e in rig.entries
            if e["action"] == "acquire" and e["outcome"] in ("authorized", "granted", "denied")]


async def converted_ticket(rig, client):
    """A ticket granted once online (so the terminal converted it) and released."""
    token, jti = rig.ticket(seconds=3 * HOUR)
    s = await client.acquire(rig.fay, rig.res(), "read", ticket_cred(token))
    await rig.engine.conversion.settle()
    assert jti in rig.authorizer.terminal.stored_ids()
    await s.release()
    rig.entries.clear()
    return token, jti


def test_the_table_orders_the_credentials_by_mode(rig):
    token, jti = rig.ticket()
    both = DualCredential(ticket=token, descriptor_id="d-1")
    assert both.choose(True) == ({"type": "ticket", "ticket": token}, {"type": "descriptor_ref", "descriptor_id": "d-1"})
    assert both.candidates(False) == [{"type": "descriptor_ref", "descriptor_id": "d-1"},
                                      {"type": "descriptor_ref", "descriptor_id": jti},
                                      {"type": "ticket", "ticket": token}]
    only = DualCredential(ticket=token)
    assert only.choose(False) == ({"type": "descriptor_ref", "descriptor_id": jti}, {"type": "ticket", "ticket": token})
    same = DualCredential(ticket=token, descriptor_id=jti)            # the descriptor is its conversion
    assert len(same.candidates(True)) == 2
    closed, _ = rig.ticket(convertible=False)
    assert DualCredential(ticket=closed).choose(False) == ({"type": "ticket", "ticket": closed}, None)
    assert DualCredential(ticket="not.a.ticket").converted_id is None
    assert DualCredential(descriptor_id="d-1").choose(True) == ({"type": "descriptor_ref", "descriptor_id": "d-1"}, None)
    with pytest.raises(ValueError):
        DualCredential()


def test_only_credential_refusals_fall_back():
    for code in ("E_TICKET_OFFLINE_REJECTED", "E_TICKET_REVOKED", "E_REVOCATION_QUERY_TIMEOUT",
                 "E_DESCRIPTOR_NOT_FOUND", "E_INVALID_SIGNATURE", "E_VERIFICATION_KEY_INVALID"):
        assert falls_back(code), code
    for code in ("E_RESOURCE_BUSY", "E_RESOURCE_UNAVAILABLE", "E_DEVICE_UNREACHABLE", "E_PERMISSION_DENIED",
                 "E_INTERNAL", "E_MALFORMED_REQUEST"):
        assert not falls_back(code), code


def test_online_the_ticket_is_chosen(rig):
    async def scenario():
        server, client = await served(rig)
        try:
            did = rig.descriptor()
            token, _ = rig.ticket()
            s = await client.acquire_dual(rig.fay, rig.res(), "read", DualCredential(token, did))
            assert s.credential["type"] == "ticket" and attempts(rig) == ["ticket"]
        finally:
            await closing(server, client, rig)

    run(scenario())


def test_after_a_degraded_notice_the_converted_credential_is_chosen_and_online_again_the_ticket(rig):
    async def scenario():
        server, client = await served(rig)
        try:
            token, jti = await converted_ticket(rig, client)
            holder = await client.acquire(rig.fay, rig.res(), "read", {"type": "descriptor_ref",
                                                                       "descriptor_id": jti})
            rig.authorizer.terminal.validator.degraded = True
            modepush.notify_mode(rig.engine, False, "unreachable")
            await until(lambda: client.terminal_mode == "degraded")
            assert holder.changes[-1]["terminal_mode"] == "degraded" and holder.state == "active"
            rig.entries.clear()
            s = await client.acquire_dual(rig.fay, rig.res(), "read", DualCredential(ticket=token))
            assert s.credential == {"type": "descriptor_ref", "descriptor_id": jti}
            assert attempts(rig) == ["descriptor"]                     # no ticket sent while degraded
            rig.authorizer.terminal.validator.degraded = False
            modepush.notify_mode(rig.engine, True, "recovered")
            await until(lambda: client.terminal_mode == "online")
            rig.entries.clear()
            s = await client.acquire_dual(rig.fay, rig.res(), "read", DualCredential(ticket=token))
            assert s.credential["type"] == "ticket" and attempts(rig) == ["ticket"]
        finally:
            await closing(server, client, rig)

    run(scenario())


def test_a_ticket_refused_offline_falls_back_to_the_converted_credential_in_a_second_request(rig):
    async def scenario():
        server, client = await served(rig)
        try:
            token, jti = await converted_ticket(rig, client)
            rig.authorizer.terminal.validator.degraded = True         # no notice reached this runtime
            assert client.terminal_mode is None
            s = await client.acquire_dual(rig.fay, rig.res(), "read", DualCredential(ticket=token))
            assert s.credential == {"type": "descriptor_ref", "descriptor_id": jti}
            assert attempts(rig) == ["denied", "descriptor"]          # two independent AuthRequests
            assert client.terminal_mode == "degraded"                 # learnt from the refusal
        finally:
            await closing(server, client, rig)

    run(scenario())


def test_a_refusal_for_the_resource_does_not_fall_back(rig):
    async def scenario():
        server, client = await served(rig)
        try:
            token, _ = rig.ticket(grants=rig.grants("absent"))
            with pytest.raises(CapError) as exc:
                await client.acquire_dual(rig.fay, rig.res("absent"), "read", DualCredential(token, "x"))
            assert exc.value.code == "E_RESOURCE_UNAVAILABLE"
            assert attempts(rig) == ["denied"]
        finally:
            await closing(server, client, rig)

    run(scenario())


def test_both_refused_raises_the_fallbacks_refusal_with_the_primarys(rig):
    async def scenario():
        server, client = await served(rig)
        try:
            token, jti = rig.ticket(seconds=60)                        # too short to have been converted
            rig.authorizer.terminal.validator.degraded = True
            with pytest.raises(CapError) as exc:
                await client.acquire_dual(rig.fay, rig.res(), "read", DualCredential(ticket=token), online=True)
            assert exc.value.code == "E_DESCRIPTOR_NOT_FOUND"
            assert exc.value.primary_error.code == "E_TICKET_OFFLINE_REJECTED"
            assert len(attempts(rig)) == 2
        finally:
            await closing(server, client, rig)

    run(scenario())
