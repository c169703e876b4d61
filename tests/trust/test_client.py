"""The terminal's trust client (capwarden.trust.client) against the trust service.

The service is the real app (create_app on SQLite) in process. Attacks come through a
man-in-the-middle transport in front of it: it can replay what the service signed earlier, tamper
with bytes, or sign with keys of its own (or with a stolen new RA key); it can never make the
service's issuer key sign something else.
"""

import asyncio
import json
import os
import stat
import time

import httpx
import pytest
import sqlalchemy as sa
from eventloop import loop_runner, wait_until

from capwarden.credentials import issue
from capwarden.errors import StoreError
from capwarden.credentials.ids import new_fay_id
from capwarden.trust import authorizers, push, registry, servicekeys, signed
from capwarden.trust.client import (NotRegistered, RollbackRefused, TrustClient, TrustConfigError, TrustRefused,
                                    TrustTimeout,
                                    TrustUnavailable, UnknownSigner, UntrustedDocument)
from capwarden.trust.config import ServiceConfig
from capwarden.trust.models import Revocation
from capwarden.trust.service import create_app

run = pytest.fixture(loop_runner)
BASE = "http://127.0.0.1:9"
ISSUER = "issuer:fleet"
FAY = new_fay_id()
POLICY = {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "**", "modes": ["read"]}],
          "max_validity_s": 86400}


# ---- the real service, in process (create_app over SQLite), driven as an operator would ----
class Service:
    def __init__(self, folder, publisher=None):
        data = str(folder / "service")
        self.ring = servicekeys.KeyRing.init(servicekeys.ring_folder(data), ISSUER)
        self.config = ServiceConfig.from_data_dir(data)
        self.config.publisher = publisher
        self.app = create_app(self.config)
        self.ra = registry.RegistrationAuthority(self.app.state.db, self.config.keys)
        self.ra.init_keysets()
        _aid, self.token = authorizers.add_authorizer(self.app.state.db, "ops", POLICY)
        self.asgi = httpx.ASGITransport(app=self.app)
        self.http = httpx.AsyncClient(transport=self.asgi, base_url=BASE)

    def enroll(self):
        """(enrollment secret, RA anchor) as `capwarden trust terminal enroll` hands them out."""
        en = self.ra.enroll()
        return en["enrollment_secret"], en["ra_keys"]

    def anchor(self):
        return self.ra.enroll()["ra_keys"]

    def rotate_ra(self):
        return self.ra.rotate(servicekeys.RA)["version"]

    def publish_keyset(self):
        return self.ra.publish()

    def keyset(self, version):
        return self.ra.keyset(version)

    def acked(self, tid):
        return self.ra.terminal_info(tid)["key_set_acked"]

    async def _post(self, path, body):
        r = await self.http.post(path, json=body, headers={"Authorization": "Bearer " + self.token})
        assert r.status_code == 200, r.text
        return r.json()

    async def issue_ticket(self, tid, valid_for=3600):
        return (await self._post("/v1/tickets", {"fay_id": FAY, "terminal_id": tid, "valid_for_s": valid_for,
                                                 "grants": [{"resource_pattern": tid + "/cam", "modes": ["read"]}]}))["jti"]

    async def revoke(self, jti):
        return (await self._post("/v1/revocations", {"target_id": jti}))["versions"]

    def revocation_list(self, tid, since):
        """The signed list the service gives `tid` for `since` (genuine: what a MITM can replay)."""
        return self.app.state.revocations.revocation_list(tid, since)


class Mitm:
    """Sits between client and service: records every answer by path, can rewrite any."""

    def __init__(self, service):
        self.service = service
        self.seen = {}          # full path with query -> [json answers]
        self.rewrite = None     # f(request, response json) -> json, or None to pass through
        self.down = False

    async def handle(self, request):
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        resp = await self.service.asgi.handle_async_request(request)
        content = await resp.aread()
        resp = httpx.Response(resp.status_code, content=content, headers=resp.headers)
        key = request.url.raw_path.decode()
        obj = json.loads(content)
        self.seen.setdefault(key, []).append(obj)
        if self.rewrite is not None and resp.status_code == 200:
            new = self.rewrite(request, obj)
            if new is not None:
                return httpx.Response(200, json=new)
        return resp


@pytest.fixture
def svc(tmp_path):
    return Service(tmp_path)


@pytest.fixture
def mitm(svc):
    return Mitm(svc)


class Terminal:
    """What the engine would do with the callbacks: keep keys and statements."""

    def __init__(self):
        self.keysets = []
        self.statements = []
        self.full = []

    def on_keyset(self, payload):
        self.keysets.append(payload["version"])

    async def on_revocations(self, statements, full):
        self.statements.extend(statements)
        self.full.append(full)


def make_client(tmp_path, svc, mitm, term=None, name="t", anchor=None, **kw):
    term = term or Terminal()
    http = httpx.AsyncClient(transport=httpx.MockTransport(mitm.handle))
    c = TrustClient(BASE, str(tmp_path / name), anchor=anchor or svc.anchor(), http=http,
                    on_keyset=term.on_keyset, on_revocations=term.on_revocations, **kw)
    return c, term


async def registered(tmp_path, svc, mitm, **kw):
    secret, anchor = svc.enroll()
    c, term = make_client(tmp_path, svc, mitm, anchor=anchor, **kw)
    await c.register(secret)
    await c.sync_keysets()
    return c, term


def _payload(doc, kind):
    return signed.payload_of(doc, kind)


def _path(tid, since):
    return "/v1/terminals/%s/revocations?since=%d" % (tid, since)


# ---- registration -----------------------------------------------------------------------
def test_register_sync_revoke_and_status(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        tid = c.terminal_id
        assert svc.acked(tid) == 1 and term.keysets == [1]
        assert (await c.terminal_status())["status"] == "registered"
        jti = await svc.issue_ticket(tid)
        assert (await c.ticket_status(jti)).revoked is False
        assert await c.sync_revocations() == 0
        await svc.revoke(jti)
        assert await c.sync_revocations() == 1
        st = await c.ticket_status(jti)
        assert st.revoked and st.revoked_at
        await svc.revoke(await svc.issue_ticket(tid))
        assert await c.sync_revocations() == 2
        assert _path(tid, 1) in mitm.seen                     # a delta from 1
        assert len(term.statements) == 2 and term.full == [True, False]
        assert (await c.terminal_status())["revocations_version"] == 2
        return c

    c = run(main())
    path = os.path.join(c.state_dir, "state.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(c.state_dir, "device.key")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(c.state_dir).st_mode) == 0o700
    st = json.load(open(path))
    assert (st["keyset_version"], st["keyset_acked"], st["revocations_version"]) == (1, 1, 2)


def test_state_survives_a_restart(run, tmp_path, svc, mitm):
    async def main():
        c, _ = await registered(tmp_path, svc, mitm)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        await c.sync_revocations()
        # A new process: same folder, no anchor needed, same token and versions.
        c2 = TrustClient(BASE, c.state_dir, http=httpx.AsyncClient(transport=httpx.MockTransport(mitm.handle)))
        term2 = Terminal()
        c2.on_revocations = term2.on_revocations
        assert (c2.terminal_id, c2.keyset_version, c2.revocations_version) == (c.terminal_id, 1, 1)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        assert await c2.sync_revocations() == 2 and term2.full == [False]
        os.chmod(os.path.join(c.state_dir, "state.json"), 0o644)
        with pytest.raises(StoreError, match="readable by others"):
            TrustClient(BASE, c.state_dir)

    run(main())


def test_enrollment_secret_works_once_and_answer_must_be_signed_by_anchor(run, tmp_path, svc, mitm):
    async def main():
        secret, anchor = svc.enroll()
        c, _ = make_client(tmp_path, svc, mitm, anchor=anchor)
        await c.register(secret)
        c2, _ = make_client(tmp_path, svc, mitm, name="t2", anchor=anchor)
        with pytest.raises(TrustRefused) as e:
            await c2.register(secret)
        assert e.value.status == 401 and c2.terminal_id is None
        # A registration answer signed by someone else is refused, and nothing is stored.
        rogue = issue.SigningKey.generate("ed25519", anchor[0]["key_id"], ISSUER)

        def resign(request, obj):
            if "registration" in obj:
                obj["registration"] = signed.sign(_payload(obj["registration"], signed.REGISTRATION), [rogue])
            return obj

        mitm.rewrite = resign
        secret3, anchor = svc.enroll()
        c3, _ = make_client(tmp_path, svc, mitm, name="t3", anchor=anchor)
        with pytest.raises(UntrustedDocument):
            await c3.register(secret3)
        assert c3.terminal_id is None
        with pytest.raises(NotRegistered):
            await c3.sync_keysets()

    run(main())


def test_plain_http_only_on_loopback(tmp_path, svc):
    with pytest.raises(TrustConfigError, match="loopback"):
        TrustClient("http://trust.example", str(tmp_path / "x"), anchor=svc.anchor())
    with pytest.raises(TrustConfigError):
        TrustClient("https://trust.example", str(tmp_path / "y"))      # no anchor for a new state
    TrustClient("https://trust.example", str(tmp_path / "z"), anchor=svc.anchor())


# ---- revocation lists -------------------------------------------------------------------
def test_tampered_list_is_refused(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        rogue = issue.SigningKey.generate("ed25519", "x", ISSUER)

        def tamper(request, obj):
            if "revocations" in request.url.path:
                p = _payload(obj, signed.REVOCATION_LIST)
                p["entries"] = []            # drop the revocation, keep the version and the signature
                obj["payload"] = signed.sign(p, [rogue])["payload"]
            return obj

        mitm.rewrite = tamper
        with pytest.raises(UntrustedDocument, match="needed"):
            await c.sync_revocations()
        assert c.revocations_version == 0 and term.statements == []
        mitm.rewrite = None
        assert await c.sync_revocations() == 1

    run(main())


def test_list_signed_by_an_unknown_key_or_for_another_terminal(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        rogue = issue.SigningKey.generate("ed25519", svc.ring.issuer_key().key_id, ISSUER)   # same kid
        mitm.rewrite = lambda rq, obj: signed.sign(_payload(obj, signed.REVOCATION_LIST), [rogue])
        with pytest.raises(UntrustedDocument):
            await c.sync_revocations()
        mitm.rewrite = None
        other, _ = await registered(tmp_path, svc, mitm, name="other")
        await svc.revoke(await svc.issue_ticket(other.terminal_id))
        theirs = svc.revocation_list(other.terminal_id, 0)       # genuine, signed, not ours
        mitm.rewrite = lambda rq, obj: theirs
        with pytest.raises(UntrustedDocument, match="not this terminal"):
            await c.sync_revocations()
        assert c.revocations_version == 0 and term.statements == []

    run(main())


def test_replayed_older_version_is_refused(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        tid = c.terminal_id
        await svc.revoke(await svc.issue_ticket(tid))
        await c.sync_revocations()
        old = mitm.seen[_path(tid, 0)][-1]                   # version 1, genuinely signed
        await svc.revoke(await svc.issue_ticket(tid))
        await c.sync_revocations()
        assert c.revocations_version == 2
        mitm.rewrite = lambda rq, obj: old
        with pytest.raises(RollbackRefused):
            await c.sync_revocations()
        assert c.revocations_version == 2 and len(term.statements) == 2

    run(main())


def test_delta_on_the_wrong_base_or_a_gap_asks_for_a_full_list(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        tid = c.terminal_id
        jtis = [await svc.issue_ticket(tid) for _ in range(4)]
        await svc.revoke(jtis[0])
        await c.sync_revocations()                   # holds 1
        await svc.revoke(jtis[1])
        await svc.revoke(jtis[2])
        delta_on_2 = svc.revocation_list(tid, 2)     # genuine, signed: version 3 on base 2
        assert _payload(delta_on_2, signed.REVOCATION_LIST)["base"] == 2
        asked = []

        def replay(request, obj):
            asked.append(request.url.params["since"])
            return delta_on_2 if request.url.params["since"] == "1" else None

        mitm.rewrite = replay
        assert await c.sync_revocations() == 3
        assert asked == ["1", "0"]                   # the delta refused, a full list asked for
        assert term.full == [True, True] and len(term.statements) == 1 + 3
        # A full list answered by a delta again: refused, nothing applied.
        await svc.revoke(jtis[3])
        mitm.rewrite = lambda rq, obj: delta_on_2 if rq.url.params["since"] == "0" else svc.revocation_list(tid, 2)
        with pytest.raises(UntrustedDocument, match="full"):
            await c.sync_revocations()
        assert c.revocations_version == 3 and len(term.statements) == 4

    run(main())


def test_a_failing_store_leaves_the_version_held(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))

        def broken(statements, full):
            raise OSError("disk full")

        c.on_revocations = broken
        with pytest.raises(OSError):
            await c.sync_revocations()
        assert c.revocations_version == 0
        c.on_revocations = term.on_revocations
        assert await c.sync_revocations() == 1 and len(term.statements) == 1

    run(main())


def test_a_list_signed_by_an_issuer_key_rotated_in_at_once_syncs_the_key_sets_first(run, tmp_path, svc, mitm):
    """An issuer rotation with no lead time: the next list is signed by a key the terminal does
    not hold yet. The client fetches the key sets (verified as always) and tries once more."""
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        assert c.keyset_version == 1
        t = int(time.time())
        svc.ra.clock = lambda: t
        rotated = svc.ra.rotate(servicekeys.ISSUER, effective_at=t)        # signs at once
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        assert await c.sync_revocations() == 1
        assert c.keyset_version == rotated["version"] == 2 and svc.acked(c.terminal_id) == 2
        assert len(term.statements) == 1
        assert len(mitm.seen[_path(c.terminal_id, 0)]) == 2          # asked again after the key sets

    run(main())


def test_entry_signed_by_a_key_outside_the_key_set(run, tmp_path, svc, mitm):
    """The service's own list holds a statement it did not sign (a tampered database row): the
    list's signature is good, the entry's is not, and nothing of the list is applied."""
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        jti = await svc.issue_ticket(c.terminal_id)
        await svc.revoke(jti)
        rogue = issue.SigningKey.generate("ed25519", "rogue", ISSUER)
        bad = issue.sign_revocation(rogue, jti, int(time.time()))
        svc.app.state.db.run(lambda s: s.execute(sa.update(Revocation).values(statement=bad)))
        with pytest.raises(UnknownSigner, match="not in the key set held"):
            await c.sync_revocations()          # after one key-set sync and a second try
        assert term.statements == [] and c.revocations_version == 0

    run(main())


# ---- ticket status ----------------------------------------------------------------------
def test_ticket_status_signed_by_an_unknown_key_or_replayed(run, tmp_path, svc, mitm):
    async def main():
        now = [time.time()]
        c, _ = await registered(tmp_path, svc, mitm, now=lambda: now[0])
        jti = await svc.issue_ticket(c.terminal_id)
        rogue = issue.SigningKey.generate("ed25519", svc.ring.issuer_key().key_id, ISSUER)
        mitm.rewrite = lambda rq, obj: signed.sign(_payload(obj, signed.TICKET_STATUS), [rogue])
        with pytest.raises(UntrustedDocument):
            await c.ticket_status(jti)
        mitm.rewrite = None
        assert (await c.ticket_status(jti)).revoked is False
        old = mitm.seen["/v1/tickets/%s/status" % jti][-1]
        # The genuine "not revoked" answer replayed after the revocation, 6 minutes later.
        await svc.revoke(jti)
        now[0] += 360
        mitm.rewrite = lambda rq, obj: old
        with pytest.raises(UntrustedDocument, match="stale or replayed"):
            await c.ticket_status(jti)
        now[0] -= 360
        # Another ticket's genuine status is not this one's.
        jti2 = await svc.issue_ticket(c.terminal_id)
        with pytest.raises(UntrustedDocument, match="jti"):
            await c.ticket_status(jti2)
        mitm.rewrite = None
        assert (await c.ticket_status(jti)).revoked is True

    run(main())


# ---- key sets ---------------------------------------------------------------------------
def test_key_set_signed_only_by_the_new_key_is_refused(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        assert svc.rotate_ra() == 2
        new_ra = svc.ring.ra_keys()[0]           # stolen: the old RA key did not sign with it
        forged = signed.sign(_payload(svc.keyset(2), signed.KEY_SET), [new_ra])
        mitm.rewrite = lambda rq, obj: forged if rq.url.path == "/v1/keysets/2" else None
        with pytest.raises(UntrustedDocument, match="key set 2"):
            await c.sync_keysets()
        assert c.keyset_version == 1 and term.keysets == [1] and svc.acked(c.terminal_id) == 1
        mitm.rewrite = None
        assert await c.sync_keysets() == 2 and term.keysets == [1, 2] and svc.acked(c.terminal_id) == 2

    run(main())


def test_offline_across_two_rotations_walks_one_version_at_a_time(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        first_ra = svc.ring.ra_keys()[0].key_id
        mitm.down = True
        with pytest.raises(TrustUnavailable):
            await c.sync_keysets()
        svc.rotate_ra()
        svc.rotate_ra()            # version 3 is signed by RA keys 2 and 3, not by the one held
        assert first_ra not in [s["kid"] for s in svc.keyset(3)["signatures"]]
        mitm.down = False
        mitm.seen.clear()
        assert await c.sync_keysets() == 3
        assert term.keysets == [1, 2, 3] and svc.acked(c.terminal_id) == 3
        assert [p for p in mitm.seen if p[-1].isdigit()] == ["/v1/keysets/2", "/v1/keysets/3"]
        # Revocation lists still verify: the issuer key is in every set.
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        assert await c.sync_revocations() == 1

    run(main())


def test_skipping_a_version_is_refused(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        svc.rotate_ra()
        svc.rotate_ra()
        three = svc.keyset(3)
        mitm.rewrite = lambda rq, obj: three if rq.url.path == "/v1/keysets/2" else None
        with pytest.raises(UntrustedDocument, match="key set 2"):
            await c.sync_keysets()
        assert c.keyset_version == 1 and term.keysets == [1]

    run(main())


def test_lower_key_set_version_is_refused(run, tmp_path, svc, mitm):
    async def main():
        svc.rotate_ra()
        c, _ = await registered(tmp_path, svc, mitm)
        assert c.keyset_version == 2
        mitm.rewrite = lambda rq, obj: {"version": 1} if rq.url.path == "/v1/keysets/latest" else None
        with pytest.raises(RollbackRefused):
            await c.sync_keysets()
        assert c.keyset_version == 2

    run(main())


def test_lost_ack_answer_is_sent_again(run, tmp_path, svc, mitm):
    async def main():
        c, _ = await registered(tmp_path, svc, mitm)
        svc.publish_keyset()

        def lose_ack_answer(request, obj):
            if request.url.path.endswith("/ack"):
                raise httpx.ConnectError("reset", request=request)
            return None

        mitm.rewrite = lose_ack_answer
        with pytest.raises(TrustUnavailable):
            await c.sync_keysets()
        assert (c.keyset_version, c.state["keyset_acked"]) == (2, 1)
        mitm.rewrite = None
        mitm.seen.clear()
        await c.sync_keysets()
        assert c.state["keyset_acked"] == 2 and svc.acked(c.terminal_id) == 2
        assert "/v1/keysets/2/ack" in mitm.seen

    run(main())


# ---- push and poll ----------------------------------------------------------------------
class Timer:
    """An injected sleep: records each delay asked and returns only when the test fires it."""

    def __init__(self):
        self.asked = []
        self._fire = asyncio.Event()

    async def __call__(self, s):
        self.asked.append(s)
        await self._fire.wait()
        self._fire.clear()

    def fire(self):
        self._fire.set()


def test_push_triggers_an_immediate_fetch(run, tmp_path, mosquitto):
    async def main():
        svc = Service(tmp_path, publisher=push.MqttPublisher(mosquitto.url))
        mitm = Mitm(svc)
        timer = Timer()              # the poll never fires: only the push can bring the list
        c, term = await registered(tmp_path, svc, mitm, mqtt_url=mosquitto.url, sleep=timer,
                                   random=lambda: 0.5, poll_min_s=5, poll_max_s=30)
        task = asyncio.get_running_loop().create_task(c.run())
        assert await wait_until(lambda: timer.asked, 20)
        await asyncio.sleep(0.5)     # the subscription is in place
        jti = await svc.issue_ticket(c.terminal_id)
        await svc.revoke(jti)        # POST /v1/revocations: the service publishes after the commit
        assert await wait_until(lambda: c.revocations_version == 1, 20)
        assert timer.asked[0] == 17.5              # 5 + 0.5 * (30 - 5)
        assert len(term.statements) == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await svc.config.publisher.aclose()

    run(main())


def test_poll_is_the_backstop_without_a_broker(run, tmp_path, svc, mitm):
    timer = Timer()
    draws = iter([0.0, 1.0, 0.25] + [0.5] * 100)

    async def main():
        c, term = await registered(tmp_path, svc, mitm, sleep=timer, random=lambda: next(draws))
        task = asyncio.get_running_loop().create_task(c.run())
        assert await wait_until(lambda: len(timer.asked) == 1, 20)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        await asyncio.sleep(0.1)
        assert c.revocations_version == 0            # nothing until the poll
        timer.fire()
        assert await wait_until(lambda: c.revocations_version == 1, 20)
        assert await wait_until(lambda: len(timer.asked) == 2, 20)
        mitm.down = True                             # an unreachable service is logged, not fatal
        timer.fire()
        assert await wait_until(lambda: len(timer.asked) == 3 and c.failures > 0, 20)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return timer.asked[:3]

    assert run(main()) == [5.0, 30.0, 11.25]


def test_a_get_on_a_connection_closed_under_it_is_sent_again_once(run, tmp_path, svc, mitm):
    async def main():
        c, _ = await registered(tmp_path, svc, mitm)
        await svc.revoke(await svc.issue_ticket(c.terminal_id))
        dropped = []

        real = mitm.handle

        async def drop_first(request, times):
            if len(dropped) < times:
                dropped.append(request.method)
                raise httpx.ReadError("connection closed by peer", request=request)
            return await real(request)

        c.http = httpx.AsyncClient(transport=httpx.MockTransport(lambda rq: drop_first(rq, 1)))
        assert await c.sync_revocations() == 1 and dropped == ["GET"]
        dropped.clear()
        c.http = httpx.AsyncClient(transport=httpx.MockTransport(lambda rq: drop_first(rq, 2)))
        with pytest.raises(TrustUnavailable):           # once only
            await c.ticket_status(await svc.issue_ticket(c.terminal_id))
        dropped.clear()
        svc.publish_keyset()
        c.http = httpx.AsyncClient(transport=httpx.MockTransport(
            lambda rq: drop_first(rq, 1) if rq.method == "POST" else real(rq)))
        with pytest.raises(TrustUnavailable):           # a POST is not sent twice by the client
            await c.sync_keysets()
        assert dropped == ["POST"] and c.state["keyset_acked"] == 1

    run(main())


def test_state_folder_checks(tmp_path, svc):
    with pytest.raises(TrustConfigError, match="anchor"):
        TrustClient(BASE, str(tmp_path / "a"), anchor=[{"key_id": "k", "algorithm": "ed25519", "key_material": "AA"}])
    TrustClient(BASE, str(tmp_path / "b"), anchor=svc.anchor())._save()
    with pytest.raises(StoreError, match="belongs to"):
        TrustClient("https://other.example", str(tmp_path / "b"))
    with open(tmp_path / "b" / "state.json", "w") as f:
        f.write('{"format": 1}')
    with pytest.raises(StoreError, match="not a trust client state"):
        TrustClient(BASE, str(tmp_path / "b"))


def test_service_answers_while_its_broker_is_down(run, tmp_path):
    """The service's publisher points at a broker that is not there: revocations are still
    committed and answered, and terminals get them by polling."""
    import services

    dead = "mqtt://127.0.0.1:%d" % services.free_port()

    async def main():
        pub = push.MqttPublisher(dead)
        svc = Service(tmp_path, publisher=pub)
        c, term = await registered(tmp_path, svc, Mitm(svc))
        for _ in range(3):
            await svc.revoke(await svc.issue_ticket(c.terminal_id))
        assert pub._pending == {push.terminal_topic(c.terminal_id): 3} and pub.published == 0
        assert await c.sync_revocations() == 3 and len(term.statements) == 3
        await pub.aclose()

    run(main())


def test_a_silent_service_is_a_timeout(run, tmp_path, svc, mitm):
    """A service that accepts the connection and never answers: TrustTimeout (a TimeoutError and
    a TrustUnavailable) after the query's own bound, over a real socket."""
    async def main():
        held = []

        async def accept(reader, writer):
            held.append(writer)          # read nothing, answer nothing

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c, _ = await registered(tmp_path, svc, mitm)
        silent = TrustClient("http://127.0.0.1:%d" % port, str(tmp_path / "silent"), anchor=svc.anchor(),
                             timeout_s=600)     # so only the query's own bound can end it in time
        silent.state.update(terminal_id=c.terminal_id, token=c.state["token"], keyset=c.state["keyset"],
                            keyset_version=1)
        t0 = time.monotonic()
        with pytest.raises(TrustTimeout) as e:
            await silent.ticket_status(await svc.issue_ticket(c.terminal_id), timeout_s=0.3)
        assert isinstance(e.value, TimeoutError) and isinstance(e.value, TrustUnavailable)
        assert time.monotonic() - t0 < 60 and silent.failures == 1       # generous, far below 600
        await silent.aclose()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()

    run(main())
