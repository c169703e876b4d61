"""Issue 14 item 4: revocation sync (blueprint 2.1). Broker pushes applied at once (the real
mosquitto, started by the test), the jittered poll as the backstop, a revocation ending its
sessions through the store's listener rather than the next timer; and `capwarden serve --trust`
against a real `capwarden trust serve` process."""

import asyncio
import json
import os
import sys
import time

import pytest
from enginerig import runtime, wait_until
from onlinerig import TrustService, online_engine, ticket_cred

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import services  # noqa: E402

from capwarden.engine import online  # noqa: E402
from capwarden.trust import push  # noqa: E402

SLOW_TICK = 60.0        # the engine's own sweep: far later than any wait below


@pytest.fixture
def mosquitto():
    services.require_mosquitto()
    broker = services.MosquittoBroker().start()
    yield broker
    broker.stop()


def test_a_broker_push_is_applied_at_once(run, world, tmp_path, in_process, mosquitto):
    async def main():
        svc = TrustService(str(tmp_path), publisher=push.MqttPublisher(mosquitto.url))
        # The poll is an hour away: only the push can bring the list.
        app, link = await online_engine(world, svc, in_process, clock=time.monotonic, mqtt_url=mosquitto.url,
                                        poll_min_s=3600, poll_max_s=3600)
        link.start()
        assert await wait_until(lambda: link.mode == online.ONLINE, 20)
        assert await wait_until(lambda: link._listener is not None, 20)
        await asyncio.sleep(0.5)                          # the subscription is in place
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        await svc.revoke(jti)
        assert await wait_until(lambda: s.state == "terminated", 20)
        assert s.changes[-1]["reason"] == "revoked" and link.client.revocations_version == 1
        await rt.close()
        await svc.config.publisher.aclose()

    run(main())


def test_the_jittered_poll_is_the_backstop_without_a_broker(run, world, tmp_path, in_process):
    async def main():
        svc = TrustService(str(tmp_path))
        app, link = await online_engine(world, svc, in_process, clock=time.monotonic, poll_min_s=0.2, poll_max_s=0.5)
        draws = []
        delay = link.client.next_poll_s
        link.client.next_poll_s = lambda: draws.append(delay()) or draws[-1]
        link.start()
        assert await wait_until(lambda: link.mode == online.ONLINE, 20)
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        await svc.revoke(jti)
        assert await wait_until(lambda: s.state == "terminated", 20)
        assert draws and all(0.2 <= d <= 0.5 for d in draws)
        await rt.close()

    run(main())


def test_a_revocation_ends_its_session_through_the_listener_not_the_next_sweep(run, world, tmp_path, in_process):
    async def main():
        svc = TrustService(str(tmp_path))
        app, link = await online_engine(world, svc, in_process)
        app.engine.tick_s = SLOW_TICK
        await link.step()
        rt = await runtime(app)
        jti, jws = await svc.ticket(world.tid, world.A)
        s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(jws))
        await svc.revoke(jti)
        link.kick(push.REVOCATIONS)
        await link.step()                                  # only the list, as after a revocation push
        assert await wait_until(lambda: s.state == "terminated", 20)
        assert s.changes[-1]["reason"] == "revoked"
        await rt.close()

    run(main())


def test_a_keyset_push_fetches_only_the_key_set(run, world, tmp_path, in_process):
    async def main():
        svc = TrustService(str(tmp_path))
        _app, link = await online_engine(world, svc, in_process)
        await link.step()
        svc.rotate_issuer()
        await link._on_push(push.KEYSET, 2)
        await link._on_push(push.REVOCATIONS, 0)            # not newer than held: ignored
        svc.line.calls.clear()
        await link.step()
        assert svc.line.calls[0] == "/v1/keysets/latest"
        assert not any("revocations" in c for c in svc.line.calls)
        assert link.client.keyset_version == 2

    run(main())


# ---- capwarden serve --trust URL, against capwarden trust serve ----------------------------
def test_serve_with_trust_url_registers_and_takes_tickets(run, world, tmp_path):
    import trustrig
    from enginerig import EXE, TOKENS

    import httpx

    data = str(tmp_path / "trustdata")
    info = trustrig.init(data)
    code, out, err = trustrig.run_cli("trust", "terminal", "enroll", "--data", data, "--terminal-id", world.tid,
                                      "--json")
    assert code == 0, err
    folder = os.path.join(world.store, "trust")
    os.makedirs(folder, mode=0o700)
    with open(os.path.join(folder, "enrollment.json"), "w") as f:
        f.write(out)
    service = trustrig.Serve(data)
    try:
        import subprocess

        args = [EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim",
                "--runtime-token", "rtA=%s" % TOKENS["rtA"], "--trust", service.url]
        log = open(os.path.join(str(tmp_path), "serve.log"), "w")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                                env=dict(os.environ, TMPDIR=str(tmp_path)))
        try:
            line = proc.stdout.readline()
            assert line.startswith("serving "), open(log.name).read()
            url = line.split()[1]
            mode_file = os.path.join(folder, online.MODE_FILE)

            def mode():
                try:
                    with open(mode_file) as f:
                        return json.load(f)["mode"]
                except (OSError, ValueError):
                    return None

            async def main():
                from capwarden.sdk import connect

                assert await wait_until(lambda: mode() == "online", 30), open(log.name).read()
                async with httpx.AsyncClient() as h:
                    r = await h.post(service.url + "/v1/tickets", headers=trustrig.auth(info["authorizer"]["token"]),
                                     json={"fay_id": world.A, "terminal_id": world.tid, "valid_for_s": 600,
                                           "grants": [{"resource_pattern": world.res("camera"), "modes": ["read"]}]})
                    assert r.status_code == 200, r.text
                rt = await connect(url, "rtA", TOKENS["rtA"])
                s = await rt.acquire(world.A, world.res("camera"), "read", ticket_cred(r.json()["ticket"]))
                assert s.session_id
                await rt.close()

            run(main())
        finally:
            import procs

            procs.stop(proc)
            log.close()
    finally:
        service.stop()
