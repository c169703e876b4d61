"""Issue 14, end to end: the real trust service (`capwarden trust serve` on SQLite, a process of
its own) pushing through a real mosquitto, both started here; the engine in process on the
virtual board with its TrustLink on real clocks; a runtime over WebSocket through the SDK.

The story, once with the service stopped (trigger: unreachable) and once with it paused by
SIGSTOP (trigger: three revocation-query timeouts), and the network-down trigger on its own:
a ticket issued online gives a session and is converted; the service is cut; the terminal
degrades and says so to the runtime; a new ticket is refused offline and the Fay goes on with
the converted descriptor (descriptor_ref = the ticket's jti, through the SDK's dual-credential
selection); the ticket is revoked at the service while the terminal cannot reach it; the service
comes back; during recovery the session on the converted descriptor ends with `revoked`, before
the terminal says it is online and before any new ticket is accepted (section 4.5.3).
"""

import asyncio
import json
import os
import signal
import sys

import httpx
import pytest

import services
import trustrig
from capwarden.engine import online
from capwarden.engine.revquery import Policy
from capwarden.errors import CapError
from capwarden.sdk import DualCredential
from enginerig import runtime, wait_until

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")
HOURS2 = 7200


class Deployment:
    """A trust deployment as an operator runs it: data folder, a broker, a service on a fixed
    port (so that it comes back where the terminal looks for it)."""

    def __init__(self, folder):
        self.data = os.path.join(folder, "trust-data")
        self.info = trustrig.init(self.data, None, "issuer:fleet")
        self.token = self.info["authorizer"]["token"]
        services.require_mosquitto()
        self.broker = services.MosquittoBroker().start()
        self.port = services.free_port()
        self.svc = None
        self.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.svc = trustrig.Serve(self.data, listen="127.0.0.1:%d" % self.port, extra=["--mqtt", self.broker.url])
        assert self.svc.url.rstrip("/") == self.url, (self.svc.url, self.url)

    def stop_service(self):
        self.svc.stop()

    def pause(self):
        self.svc.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.svc.proc.send_signal(signal.SIGCONT)

    def close(self):
        if self.svc is not None and self.svc.proc.poll() is None:
            self.resume()
            self.svc.stop()
        self.broker.stop()

    def enroll(self, world):
        code, out, err = trustrig.run_cli("trust", "terminal", "enroll", "--data", self.data, "--terminal-id",
                                          world.tid, "--json")
        assert code == 0, err
        folder = os.path.join(world.store, "trust")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(os.path.join(folder, online.ENROLLMENT), "w") as f:
            json.dump(json.loads(out), f)

    async def ticket(self, world, fay, resource="sim/camera", valid_for=HOURS2):
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            r = await http.post("/v1/tickets", headers=trustrig.auth(self.token), json={
                "fay_id": fay, "terminal_id": world.tid, "valid_for_s": valid_for,
                "grants": [{"resource_pattern": "%s/%s" % (world.tid, resource), "modes": ["read"]}]})
        assert r.status_code == 200, r.text
        return r.json()["jti"], r.json()["ticket"]

    async def revoke(self, jti):
        """`capwarden trust revoke` as the operator runs it: on the database, the service not
        needed; pushed through the broker."""
        proc = await asyncio.create_subprocess_exec(EXE, "trust", "revoke", "--data", self.data, jti, "--json",
                                                    "--mqtt", self.broker.url, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)


@pytest.fixture
def deploy(tmp_path, world):
    d = Deployment(str(tmp_path))
    d.enroll(world)
    yield d
    d.close()


def settings(deploy, **kw):
    rq = kw.pop("revocation_query", {"enabled": True, "timeout_s": 0.5})
    base = dict(url=deploy.url, mqtt_url=deploy.broker.url, unreachable_s=1.0, retry_s=0.2, tick_s=0.05,
                poll_min_s=0.5, poll_max_s=1.0, revocation_query=Policy(**rq))
    base.update(kw)
    return online.Settings(**base)


def entries(world, action=None):
    from capwarden.engine import auditfile

    got, problem = auditfile.read(os.path.join(world.store, "audit.log"))
    assert problem is None, problem
    return [e for e in got if action is None or e["action"] == action]


def notices(client, mode):
    return [m for m in client.pushes if m["message_type"] == "SessionStateChanged"
            and m["body"].get("terminal_mode") == mode]


async def online_with_converted_session(world, deploy, in_process, **kw):
    """The engine online at the service; a runtime holding a session on the camera with a
    ticket (converted meanwhile) and one on the gps with a plain descriptor. Returns
    (app, link, client, jti, token, ticket session, gps session)."""
    app = await in_process(trust=settings(deploy, **kw))
    link = app.online
    assert await wait_until(lambda: link.mode == online.ONLINE, 30), link.transitions
    rt = await runtime(app)
    jti, token = await deploy.ticket(world, world.A)
    s_ticket = await rt.acquire(world.A, world.res("camera"), "read", {"type": "ticket", "ticket": token})
    terminal = app.engine.authorizer.terminal
    assert await wait_until(lambda: jti in terminal.stored_ids(), 10)          # 4.4.1: converted, unasked
    s_gps = await world.take(rt, "gps", "read")
    return app, link, rt, jti, token, s_ticket, s_gps


async def offline_then_recover(world, deploy, app, link, rt, jti, token, s_ticket, s_gps, fresh, restore):
    """Degraded: a new ticket refused, the converted descriptor used, the ticket revoked at the
    service meanwhile; then `restore()` and the recovery's order checked. `fresh`: a ticket
    issued before the cut and never used."""
    assert await wait_until(lambda: notices(rt, "degraded"), 10)               # 4.5.2 item 4
    assert s_gps.state == "active" and s_gps.changes[-1]["reason"] == "terminal_degraded"
    assert rt.terminal_mode == "degraded"
    with pytest.raises(CapError) as exc:                                        # 4.5.2 item 1
        await rt.acquire(world.A, world.res("camera"), "read", {"type": "ticket", "ticket": fresh})
    assert exc.value.code == "E_TICKET_OFFLINE_REJECTED"
    # 4.5.2 item 2: the converted descriptor, chosen by the SDK's 4.6 selection offline.
    await s_ticket.release()
    s_conv = await rt.acquire_dual(world.A, world.res("camera"), "read", DualCredential(ticket=token))
    assert s_conv.credential == {"type": "descriptor_ref", "descriptor_id": jti}
    # 4.5.2 item 3: plain descriptors are not affected.
    s_led = await world.take(rt, "led", "write", who="C")
    await s_led.release()
    # Revoked at the service while the terminal cannot reach it (the operator's CLI, on the database).
    await deploy.revoke(jti)
    await asyncio.sleep(0.5)
    assert s_conv.state == "active"                       # nobody could tell the terminal yet
    # Off the loop: the in-process engine must keep renewing the board's leases while a
    # service process starts (seconds on a loaded machine; a 3 s lease ran out once).
    await asyncio.get_running_loop().run_in_executor(None, restore)
    assert await wait_until(lambda: link.mode == online.ONLINE, 30), link.transitions
    assert await wait_until(lambda: s_conv.state == "terminated", 10)
    assert s_conv.changes[-1]["reason"] == "revoked"
    assert await wait_until(lambda: rt.terminal_mode == "online", 10)
    # The session was ended (terminating, revoked: no longer usable) before the terminal said
    # it is online again, in the runtime's order of pushes...
    kinds = [("ending" if m["body"]["session_id"] == s_conv.session_id and m["body"]["state"] == "terminating"
              else m["body"].get("terminal_mode")) for m in rt.pushes if m["message_type"] == "SessionStateChanged"]
    back_notice = len(kinds) - 1 - kinds[::-1].index("online")
    assert kinds.index("ending") < back_notice, kinds
    assert [c["reason"] for c in s_conv.changes if c["state"] == "terminating"] == ["revoked"]
    log = entries(world)
    back = max(i for i, e in enumerate(log) if e["action"] == "mode" and e["outcome"] == online.ONLINE)
    s_new = await rt.acquire(world.A, world.res("camera"), "read", {"type": "ticket", "ticket": fresh})
    assert s_new.session_id
    # ... and in the audit log: the session's end, then the next ticket's grant, after the mode.
    log = entries(world)
    ended = [i for i, e in enumerate(log) if e["action"] == "terminate" and e.get("session") == s_conv.session_id]
    granted = [i for i, e in enumerate(log) if e["action"] == "acquire" and e.get("session") == s_new.session_id]
    assert ended and log[ended[0]]["reason"] == "revoked"
    assert granted and min(granted) > max(ended[0], back)
    assert jti not in app.engine.authorizer.terminal.stored_ids()              # 4.4.4: deleted with its ticket
    assert s_gps.state == "active" and rt.terminal_mode == "online"


def test_service_stopped_degrades_on_unreachable_and_recovery_ends_the_revoked_session_first(run, world, deploy,
                                                                                           in_process):
    async def main():
        app, link, rt, jti, token, s_ticket, s_gps = await online_with_converted_session(world, deploy, in_process)
        _j, fresh = await deploy.ticket(world, world.A)
        await asyncio.get_running_loop().run_in_executor(None, deploy.stop_service)
        assert await wait_until(lambda: link.mode == online.DEGRADED, 15), link.transitions
        assert link.transitions[-1] == (online.DEGRADED, online.UNREACHABLE)
        await offline_then_recover(world, deploy, app, link, rt, jti, token, s_ticket, s_gps, fresh, deploy.start)
        assert link.transitions[-1] == (online.ONLINE, online.RECOVERED)
        await rt.close()

    run(main())


def test_service_paused_degrades_on_three_query_timeouts_and_recovers_when_resumed(run, world, deploy, in_process):
    async def main():
        # unreachable_s long: the query timeouts are what degrades it here.
        app, link, rt, jti, token, s_ticket, s_gps = await online_with_converted_session(
            world, deploy, in_process, unreachable_s=120.0)
        queried = [await deploy.ticket(world, world.B, resource="sim/gps") for _ in range(3)]
        _j, fresh = await deploy.ticket(world, world.A)
        deploy.pause()
        codes = []
        for _j, tok in queried:          # each a jti never asked: no cached answer
            with pytest.raises(CapError) as exc:
                await rt.acquire(world.B, world.res("gps"), "read", {"type": "ticket", "ticket": tok})
            codes.append(exc.value.code)
        # The third timeout degrades the terminal while its own request is decided: that request
        # still gets its own answer, a timeout (engine/authorizer.py check).
        assert codes == ["E_REVOCATION_QUERY_TIMEOUT"] * 3, codes
        assert await wait_until(lambda: link.mode == online.DEGRADED, 10), link.transitions
        assert (online.DEGRADED, online.QUERY_TIMEOUTS) in link.transitions
        await offline_then_recover(world, deploy, app, link, rt, jti, token, s_ticket, s_gps, fresh, deploy.resume)
        await rt.close()

    run(main())


def test_network_reported_down_degrades_and_its_return_recovers(run, world, deploy, in_process):
    async def main():
        app = await in_process(trust=settings(deploy))
        link = app.online
        assert await wait_until(lambda: link.mode == online.ONLINE, 30), link.transitions
        rt = await runtime(app)
        s = await world.take(rt, "gps", "read")
        with open(link.network_file, "w"):
            pass
        assert await wait_until(lambda: link.mode == online.DEGRADED, 10)
        assert link.transitions[-1] == (online.DEGRADED, online.NETWORK_DOWN)
        assert await wait_until(lambda: rt.terminal_mode == "degraded", 10)
        os.unlink(link.network_file)
        assert await wait_until(lambda: link.mode == online.ONLINE, 15)
        assert await wait_until(lambda: rt.terminal_mode == "online", 10)
        assert s.state == "active"
        await rt.close()

    run(main())
