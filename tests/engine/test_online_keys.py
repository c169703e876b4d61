"""Issue 14 item 1: registration and keys from the Registration_Authority (section 4.4), with
the real trust service (SQLite) in process and the engine on the virtual board."""

import pytest
from enginerig import refusal, runtime, wait_until
from onlinerig import TrustService, online_engine, ticket_cred

from capwarden.engine import online


@pytest.fixture
def svc(tmp_path):
    return TrustService(str(tmp_path))


def test_registers_then_stores_key_sets_as_ra_distributed_and_acknowledges(run, world, svc, in_process):
    async def main():
        app, link = await online_engine(world, svc, in_process)
        assert link.mode == online.DEGRADED and app.engine.authorizer.degraded   # until the first sync
        await link.step()
        assert link.mode == online.ONLINE and not app.engine.authorizer.degraded
        assert link.client.terminal_id == world.tid
        recs = app.engine.authorizer.terminal.keys.records
        ks = link.client.keyset()
        for k in ks["keys"]:
            assert recs[k["key_id"]]["source"] == "ra-distributed"
            assert recs[k["key_id"]]["valid_from"] == k["valid_from"]
        assert not recs["acme-1"]["revoked"]            # another issuer's key: untouched
        assert svc.acked(world.tid) == ks["version"] == 1
        # A ticket of the service's issuer now works.
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        assert s.session_id
        await rt.close()

    run(main())


def test_preinstalled_keys_keep_working_without_any_service(run, world, svc, in_process):
    async def main():
        svc.line.down = True
        app, link = await online_engine(world, svc, in_process)
        await link.step()                                   # cannot register: stays degraded
        assert link.mode == online.DEGRADED and link.client.terminal_id is None
        rt = await runtime(app)
        s = await world.take(rt, "camera", "read")           # descriptor under the pre-installed key
        assert s.session_id
        await rt.close()

    run(main())


def test_rotations_are_followed_one_version_at_a_time_and_each_acknowledged(run, world, svc, in_process):
    async def main():
        app, link = await online_engine(world, svc, in_process)
        await link.step()
        svc.line.down = True
        k2, v2 = svc.rotate_issuer()
        k3, v3 = svc.rotate_issuer()
        assert (v2, v3) == (2, 3)
        svc.line.down = False
        svc.line.calls.clear()
        await link.step()                                    # online: a poll syncs everything
        asked = [c for c in svc.line.calls if c.startswith("/v1/keysets/")]
        fetched = [c for c in asked if c != "/v1/keysets/latest"]
        assert fetched == ["/v1/keysets/2", "/v1/keysets/2/ack", "/v1/keysets/3", "/v1/keysets/3/ack"]
        assert svc.acked(world.tid) == 3
        recs = app.engine.authorizer.terminal.keys.records
        assert recs[k2]["source"] == recs[k3]["source"] == "ra-distributed"

    run(main())


def test_rotation_while_sessions_run_new_key_works_retired_key_ends_its_session(run, world, svc, in_process):
    async def main():
        app, link = await online_engine(world, svc, in_process)
        await link.step()
        rt = await runtime(app)
        old_kid = link.client.keyset()["keys"][0]["key_id"]
        _jti, old_jws = await svc.ticket(world.tid, world.A, resource="sim/camera")
        s_old = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(old_jws))
        new_kid, _v = svc.rotate_issuer()
        _jti2, new_jws = await svc.ticket(world.tid, world.A, resource="sim/gps")
        # Before the terminal has the new set, the new key is unknown here.
        assert await refusal(rt.acquire(world.A, world.res("gps"), "read", ticket_cred(new_jws))) \
            == "E_VERIFICATION_KEY_INVALID"
        await link.step()                                    # fetched, stored, acknowledged
        assert svc.acked(world.tid) == 2
        s_new = await rt.acquire(world.A, world.res("gps"), "read", ticket_cred(new_jws))
        assert s_new.session_id and s_old.state == "active"
        # The old key retired at the RA (every terminal acknowledged its successor): the next
        # key set no longer lists it, and the session under it ends.
        svc.retire(old_kid)
        await link.step()
        assert app.engine.authorizer.terminal.keys.records[old_kid]["revoked"]
        assert await wait_until(lambda: s_old.state == "terminated")
        assert s_old.changes[-1]["reason"] == "key_invalid"
        assert s_new.state == "active"
        await rt.close()

    run(main())


def test_a_key_set_does_not_retire_a_preinstalled_key_or_another_issuers(run, world, svc, in_process):
    from capwarden.credentials.issue import SigningKey

    local = SigningKey.generate("ed25519", "fleet-local", "issuer:fleet")   # the service's issuer, pre-installed
    world.t.import_key(local.public_json(world.now - 100, source="pre-installed"))

    async def main():
        app, link = await online_engine(world, svc, in_process)
        await link.step()
        old = link.client.keyset()["keys"][0]["key_id"]
        kid, _ = svc.rotate_issuer()
        await link.step()
        svc.retire(old)
        await link.step()
        recs = app.engine.authorizer.terminal.keys.records
        assert recs[old]["revoked"] and not recs[kid]["revoked"]
        assert not recs["acme-1"]["revoked"]
        assert not recs["fleet-local"]["revoked"] and recs["fleet-local"]["source"] == "pre-installed"

    run(main())
