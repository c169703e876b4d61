"""The terminal's trust client (capwarden.trust.client) against the trust service.

Attacks come through a man-in-the-middle transport in front of the service: it can replay what
the service signed earlier, tamper with bytes, or sign with keys of its own (or with a stolen
new RA key); it can never make the service's issuer key sign something else.
"""

import asyncio
import json
import os
import secrets
import stat
import time

import httpx
import pytest
from eventloop import loop_runner, wait_until

from capwarden.credentials import issue
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.ids import new_terminal_id, new_uuid7, uuid_text
from capwarden.trust import keysets, push, servicekeys, signed
from capwarden.trust.client import (NotRegistered, RollbackRefused, TrustClient, TrustConfigError, TrustRefused,
                                    TrustUnavailable, UntrustedDocument)

run = pytest.fixture(loop_runner)
BASE = "http://127.0.0.1:9"
ISSUER = "issuer:fleet"


# ---- the HTTP side (a test double of the contract's shapes; see module docstring) ----------
class Service:
    def __init__(self, folder):
        self.ring = servicekeys.KeyRing.init(str(folder / "ring"), ISSUER)
        self.keysets = []
        self.secrets = set()
        self.terminals = {}          # tid -> {"token", "device", "acked"}
        self.revs = {}               # tid -> [(version, statement, expires)]
        self.tickets = {}            # jti -> (tid, revoked_at or None)
        self.publish_keyset()

    def anchor(self):
        return self.ring.ra_public()

    def publish_keyset(self, extra_signers=()):
        prev = self.keysets[-1] if self.keysets else None
        keys = [{k: v for k, v in kj.items() if v is not None} for kj in self.ring.verification_keys()]
        payload = {"type": signed.KEY_SET, "version": len(self.keysets) + 1, "effective_at": int(time.time()),
                   "ra_keys": self.ring.ra_public(), "keys": keys}
        signers = list(self.ring.ra_keys())
        if prev is not None:
            old_ids = [k["key_id"] for k in signed.payload_of(prev, signed.KEY_SET)["ra_keys"]]
            signers = [self.ring.get(k) for k in old_ids if k not in {s.key_id for s in signers}] + signers
        self.keysets.append(signed.sign(payload, signers))
        return payload["version"]

    def rotate_ra(self):
        self.ring.rotate(servicekeys.RA)
        return self.publish_keyset()

    def enroll(self):
        s = secrets.token_urlsafe(16)
        self.secrets.add(s)
        return s

    def issue_ticket(self, tid, valid_for=3600):
        jti = uuid_text(new_uuid7())
        self.tickets[jti] = (tid, None, int(time.time()) + valid_for)
        return jti

    def revoke(self, jti):
        tid, _, exp = self.tickets[jti]
        now = int(time.time())
        self.tickets[jti] = (tid, now, exp)
        lst = self.revs.setdefault(tid, [])
        lst.append((len(lst) + 1, issue.sign_revocation(self.ring.issuer_key(), jti, now), exp))
        return {tid: len(lst)}

    # -- the routes --
    def handle(self, request):
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        if method == "POST" and path == "/v1/registrations":
            return self.register(body)
        tid = self.auth(request)
        if tid is None:
            return _err(401, "unauthenticated")
        parts = path.split("/")
        if path == "/v1/keysets/latest":
            return httpx.Response(200, json={"version": len(self.keysets)})
        if parts[:3] == ["", "v1", "keysets"] and len(parts) == 4:
            n = int(parts[3])
            return httpx.Response(200, json=self.keysets[n - 1]) if 1 <= n <= len(self.keysets) else _err(404, "not_found")
        if parts[:3] == ["", "v1", "keysets"] and parts[4:] == ["ack"]:
            n = int(parts[3])
            t = self.terminals[tid]
            keysets.verify_ack(body, t["device"], tid, n, keysets.digest(self.keysets[n - 1]))
            t["acked"] = n
            return httpx.Response(200, json={"version": n})
        if parts[:3] == ["", "v1", "terminals"] and parts[4:] == ["revocations"]:
            if parts[3] != tid:
                return _err(403, "forbidden")
            return httpx.Response(200, json=self.revocation_list(tid, int(request.url.params.get("since", 0))))
        if parts[:3] == ["", "v1", "tickets"] and parts[4:] == ["status"]:
            jti = parts[3]
            if jti not in self.tickets:
                return _err(404, "not_found")
            _t, revoked_at, _e = self.tickets[jti]
            p = {"type": signed.TICKET_STATUS, "jti": jti, "revoked": 0 if revoked_at is None else 1,
                 "checked_at": int(time.time())}
            if revoked_at is not None:
                p["revoked_at"] = revoked_at
            return httpx.Response(200, json=signed.sign(p, [self.ring.issuer_key()]))
        return _err(404, "not_found")

    def auth(self, request):
        h = request.headers.get("authorization", "")
        for tid, t in self.terminals.items():
            if h == "Bearer " + t["token"]:
                return tid
        return None

    def register(self, body):
        s = body["enrollment_secret"]
        if s not in self.secrets:
            return _err(401, "unauthenticated")
        from capwarden.credentials import keys

        dev = keys.load(body["device_key"]["algorithm"], b64u_decode(body["device_key"]["key_material"]))
        if not dev.verify(keysets.proof_message(s, body.get("terminal_id")), b64u_decode(body["proof"])):
            return _err(403, "forbidden")
        self.secrets.discard(s)
        tid = body.get("terminal_id") or new_terminal_id()
        token = secrets.token_urlsafe(32)
        self.terminals[tid] = {"token": token, "device": dev, "acked": 0}
        reg = signed.sign({"type": signed.REGISTRATION, "terminal_id": tid, "device_key": body["device_key"],
                           "registered_at": int(time.time()), "key_set_version": len(self.keysets)},
                          self.ring.ra_keys())
        return httpx.Response(200, json={"terminal_id": tid, "token": token, "registration": reg})

    def revocation_list(self, tid, since):
        lst = self.revs.get(tid, [])
        version = len(lst)
        base = since if 0 < since <= version else 0
        now = int(time.time())
        p = {"type": signed.REVOCATION_LIST, "terminal_id": tid, "version": version, "base": base,
             "entries": [st for v, st, exp in lst if v > base and exp > now], "issued_at": now}
        return signed.sign(p, [self.ring.issuer_key()])


def _err(status, code):
    return httpx.Response(status, json={"error": code, "message": code})


class Mitm:
    """Sits between client and service: records every answer by path, can rewrite any."""

    def __init__(self, service):
        self.service = service
        self.seen = {}          # full path with query -> [json answers]
        self.rewrite = None     # f(request, response json) -> json, or None to pass through
        self.down = False

    def handle(self, request):
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        resp = self.service.handle(request)
        key = request.url.raw_path.decode()
        obj = json.loads(resp.content)
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


def make_client(tmp_path, svc, mitm, term=None, name="t", **kw):
    term = term or Terminal()
    http = httpx.AsyncClient(transport=httpx.MockTransport(mitm.handle))
    c = TrustClient(BASE, str(tmp_path / name), anchor=svc.anchor(), http=http, on_keyset=term.on_keyset,
                    on_revocations=term.on_revocations, **kw)
    return c, term


async def registered(tmp_path, svc, mitm, **kw):
    c, term = make_client(tmp_path, svc, mitm, **kw)
    await c.register(svc.enroll())
    await c.sync_keysets()
    return c, term


def _payload(doc, kind):
    return signed.payload_of(doc, kind)


# ---- registration -----------------------------------------------------------------------
def test_register_sync_revoke_and_status(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        tid = c.terminal_id
        assert svc.terminals[tid]["acked"] == 1 and term.keysets == [1]
        jti = svc.issue_ticket(tid)
        assert (await c.ticket_status(jti)).revoked is False
        assert await c.sync_revocations() == 0
        svc.revoke(jti)
        assert await c.sync_revocations() == 1
        st = await c.ticket_status(jti)
        assert st.revoked and st.revoked_at
        jti2 = svc.issue_ticket(tid)
        svc.revoke(jti2)
        assert await c.sync_revocations() == 2
        assert "/v1/terminals/%s/revocations?since=1" % tid in mitm.seen     # a delta from 1
        assert len(term.statements) == 2 and term.full == [True, False]
        return c

    c = run(main())
    path = os.path.join(c.state_dir, "state.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(c.state_dir, "device.key")).st_mode) == 0o600
    st = json.load(open(path))
    assert (st["keyset_version"], st["keyset_acked"], st["revocations_version"]) == (1, 1, 2)


def test_state_survives_a_restart(run, tmp_path, svc, mitm):
    async def main():
        c, _ = await registered(tmp_path, svc, mitm)
        svc.revoke(svc.issue_ticket(c.terminal_id))
        await c.sync_revocations()
        # A new process: same folder, no anchor needed, same token and versions.
        c2, term2 = make_client(tmp_path, svc, mitm)
        assert (c2.terminal_id, c2.keyset_version, c2.revocations_version) == (c.terminal_id, 1, 1)
        svc.revoke(svc.issue_ticket(c.terminal_id))
        assert await c2.sync_revocations() == 2 and term2.full == [False]

    run(main())


def test_enrollment_secret_works_once_and_answer_must_be_signed_by_anchor(run, tmp_path, svc, mitm):
    async def main():
        secret = svc.enroll()
        c, _ = make_client(tmp_path, svc, mitm)
        await c.register(secret)
        c2, _ = make_client(tmp_path, svc, mitm, name="t2")
        with pytest.raises(TrustRefused) as e:
            await c2.register(secret)
        assert e.value.status == 401
        # A registration answer signed by someone else is refused, and nothing is stored.
        rogue = issue.SigningKey.generate("ed25519", svc.ring.ra_keys()[0].key_id, ISSUER)

        def resign(request, obj):
            if "registration" in obj:
                obj["registration"] = signed.sign(_payload(obj["registration"], signed.REGISTRATION), [rogue])
            return obj

        mitm.rewrite = resign
        c3, _ = make_client(tmp_path, svc, mitm, name="t3")
        with pytest.raises(UntrustedDocument):
            await c3.register(svc.enroll())
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
        svc.revoke(svc.issue_ticket(c.terminal_id))

        def tamper(request, obj):
            if "revocations" in request.url.path:
                p = _payload(obj, signed.REVOCATION_LIST)
                p["entries"] = []            # drop the revocation, keep the version
                obj["payload"] = signed.sign(p, [svc.ring.issuer_key()])["payload"]   # old signature stays
            return obj

        mitm.rewrite = tamper
        with pytest.raises(UntrustedDocument, match="needed"):
            await c.sync_revocations()
        assert c.revocations_version == 0 and term.statements == []

    run(main())


def test_list_signed_by_an_unknown_key_or_for_another_terminal(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        svc.revoke(svc.issue_ticket(c.terminal_id))
        rogue = issue.SigningKey.generate("ed25519", svc.ring.issuer_key().key_id, ISSUER)   # same kid
        mitm.rewrite = lambda rq, obj: signed.sign(_payload(obj, signed.REVOCATION_LIST), [rogue])
        with pytest.raises(UntrustedDocument):
            await c.sync_revocations()
        other = new_terminal_id()
        svc.revs[other] = svc.revs[c.terminal_id]

        def other_terminal(request, obj):
            return svc.revocation_list(other, 0)

        mitm.rewrite = other_terminal
        with pytest.raises(UntrustedDocument, match="not this terminal"):
            await c.sync_revocations()
        assert c.revocations_version == 0 and term.statements == []

    run(main())


def test_replayed_older_version_is_refused(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        tid = c.terminal_id
        svc.revoke(svc.issue_ticket(tid))
        await c.sync_revocations()
        old = mitm.seen["/v1/terminals/%s/revocations?since=0" % tid][-1]     # version 1, signed
        svc.revoke(svc.issue_ticket(tid))
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
        jtis = [svc.issue_ticket(tid) for _ in range(3)]
        svc.revoke(jtis[0])
        await c.sync_revocations()                   # holds 1
        svc.revoke(jtis[1])
        svc.revoke(jtis[2])
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
        # A full list answered with a delta again: refused, nothing applied.
        svc.revoke(svc.issue_ticket(tid))
        held = c.revocations_version
        mitm.rewrite = lambda rq, obj: delta_on_2 if rq.url.params["since"] == "0" else svc.revocation_list(tid, 2)
        with pytest.raises(UntrustedDocument, match="full"):
            await c.sync_revocations()
        assert c.revocations_version == held

    run(main())


def test_a_failing_store_leaves_the_version_held(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        svc.revoke(svc.issue_ticket(c.terminal_id))
        calls = []

        def broken(statements, full):
            calls.append(len(statements))
            raise OSError("disk full")

        c.on_revocations = broken
        with pytest.raises(OSError):
            await c.sync_revocations()
        assert c.revocations_version == 0
        c.on_revocations = term.on_revocations
        assert await c.sync_revocations() == 1 and len(term.statements) == 1

    run(main())


def test_entry_signed_by_a_key_outside_the_key_set(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        tid = c.terminal_id
        rogue = issue.SigningKey.generate("ed25519", "rogue", ISSUER)
        svc.revs[tid] = [(1, issue.sign_revocation(rogue, uuid_text(new_uuid7()), int(time.time())),
                          int(time.time()) + 100)]
        with pytest.raises(UntrustedDocument, match="not a key of issuer"):
            await c.sync_revocations()
        assert term.statements == []

    run(main())


# ---- ticket status ----------------------------------------------------------------------
def test_ticket_status_signed_by_an_unknown_key_or_replayed(run, tmp_path, svc, mitm):
    async def main():
        now = [time.time()]
        c, _ = await registered(tmp_path, svc, mitm, now=lambda: now[0])
        jti = svc.issue_ticket(c.terminal_id)
        rogue = issue.SigningKey.generate("ed25519", svc.ring.issuer_key().key_id, ISSUER)
        mitm.rewrite = lambda rq, obj: signed.sign(_payload(obj, signed.TICKET_STATUS), [rogue])
        with pytest.raises(UntrustedDocument):
            await c.ticket_status(jti)
        mitm.rewrite = None
        good = await c.ticket_status(jti)
        assert good.revoked is False
        # The "not revoked" answer replayed after the ticket was revoked and 6 minutes passed.
        old = mitm.seen["/v1/tickets/%s/status" % jti][-1]
        svc.revoke(jti)
        now[0] += 360
        mitm.rewrite = lambda rq, obj: old
        with pytest.raises(UntrustedDocument, match="stale or replayed"):
            await c.ticket_status(jti)
        # Another ticket's genuine status is not this one's.
        jti2 = svc.issue_ticket(c.terminal_id)
        mitm.rewrite = lambda rq, obj: None
        now[0] -= 360
        other = mitm.seen["/v1/tickets/%s/status" % jti][-1]
        mitm.rewrite = lambda rq, obj: other
        with pytest.raises(UntrustedDocument, match="jti"):
            await c.ticket_status(jti2)

    run(main())


# ---- key sets ---------------------------------------------------------------------------
def test_key_set_signed_only_by_the_new_key_is_refused(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        svc.rotate_ra()
        new_ra = svc.ring.ra_keys()[0]
        forged = signed.sign(_payload(svc.keysets[1], signed.KEY_SET), [new_ra])   # the old RA did not sign
        mitm.rewrite = lambda rq, obj: forged if rq.url.path == "/v1/keysets/2" else None
        with pytest.raises(UntrustedDocument, match="key set 2"):
            await c.sync_keysets()
        assert c.keyset_version == 1 and term.keysets == [1] and svc.terminals[c.terminal_id]["acked"] == 1
        mitm.rewrite = None
        assert await c.sync_keysets() == 2 and term.keysets == [1, 2]

    run(main())


def test_offline_across_two_rotations_walks_one_version_at_a_time(run, tmp_path, svc, mitm):
    async def main():
        c, term = await registered(tmp_path, svc, mitm)
        mitm.down = True
        with pytest.raises(TrustUnavailable):
            await c.sync_keysets()
        svc.rotate_ra()
        svc.rotate_ra()                 # version 3: signed by RA key 2 and RA key 3, not by key 1
        assert svc.ring.ra_keys()[0].key_id not in [s["kid"] for s in svc.keysets[0]["signatures"]]
        mitm.down = False
        assert await c.sync_keysets() == 3
        assert term.keysets == [1, 2, 3] and svc.terminals[c.terminal_id]["acked"] == 3
        assert [p for p in mitm.seen if p.startswith("/v1/keysets/") and p[-1].isdigit()] == [
            "/v1/keysets/1", "/v1/keysets/2", "/v1/keysets/3"]
        # Skipping is impossible: version 3 alone is not acceptable from version 1.
        c2, _ = await registered(tmp_path, svc, mitm, name="late")   # anchor = current RA: fine
        assert c2.keyset_version == 3

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


def test_ack_lost_is_sent_again(run, tmp_path, svc, mitm):
    async def main():
        c, _ = await registered(tmp_path, svc, mitm)
        svc.publish_keyset()

        def fail_ack(request, obj):
            if request.url.path.endswith("/ack"):
                raise httpx.ConnectError("reset", request=request)
            return None

        mitm.rewrite = fail_ack
        with pytest.raises(TrustUnavailable):
            await c.sync_keysets()
        assert (c.keyset_version, c.state["keyset_acked"]) == (2, 1)
        assert svc.terminals[c.terminal_id]["acked"] == 2     # the service got it; the answer was lost
        svc.terminals[c.terminal_id]["acked"] = 1
        mitm.rewrite = None
        await c.sync_keysets()
        assert c.state["keyset_acked"] == 2 and svc.terminals[c.terminal_id]["acked"] == 2

    run(main())


# ---- push and poll ----------------------------------------------------------------------
def test_push_triggers_an_immediate_fetch(run, tmp_path, svc, mitm, mosquitto):
    class Sleeper:                       # the poll timer never fires by itself
        def __init__(self):
            self.asked = []

        async def __call__(self, s):
            self.asked.append(s)
            await asyncio.Event().wait()

    sleeper = Sleeper()

    async def main():
        c, term = await registered(tmp_path, svc, mitm, mqtt_url=mosquitto.url, sleep=sleeper,
                                   random=lambda: 0.5, poll_min_s=5, poll_max_s=30)
        task = asyncio.get_running_loop().create_task(c.run())
        assert await wait_until(lambda: sleeper.asked, 20)
        pub = push.MqttPublisher(mosquitto.url)
        await asyncio.sleep(0.5)    # the subscription is in place
        versions = svc.revoke(svc.issue_ticket(c.terminal_id))
        await pub.revocations(versions)
        assert await wait_until(lambda: c.revocations_version == 1, 20)
        assert sleeper.asked[0] == 17.5              # 5 + 0.5 * (30 - 5)
        await pub.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main())


def test_poll_is_the_backstop_without_a_broker(run, tmp_path, svc, mitm):
    class Clock:
        def __init__(self):
            self.fire = asyncio.Event()
            self.asked = []

        async def __call__(self, s):
            self.asked.append(s)
            await self.fire.wait()
            self.fire.clear()

    clock = Clock()
    draws = iter([0.0, 1.0, 0.25] + [0.5] * 100)

    async def main():
        c, term = await registered(tmp_path, svc, mitm, sleep=clock, random=lambda: next(draws))
        task = asyncio.get_running_loop().create_task(c.run())
        assert await wait_until(lambda: len(clock.asked) == 1, 20)
        svc.revoke(svc.issue_ticket(c.terminal_id))
        await asyncio.sleep(0.1)
        assert c.revocations_version == 0            # nothing until the poll
        clock.fire.set()
        assert await wait_until(lambda: c.revocations_version == 1, 20)
        assert await wait_until(lambda: len(clock.asked) == 2, 20)
        mitm.down = True                             # an unreachable service is logged, not fatal
        clock.fire.set()
        assert await wait_until(lambda: len(clock.asked) == 3 and c.failures > 0, 20)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return clock.asked[:3]

    assert run(main()) == [5.0, 30.0, 11.25]
