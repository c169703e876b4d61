"""The console's HTTP guards without a browser: sessions and their cookie, CSRF and Origin on
every state-changing request, the Host check, failed-login brake, TLS off loopback."""

import asyncio
import json
import os

import httpx
import pytest

from consolerig import OPERATOR, PASSWORD, FakeSources

ACTIONS = [("/api/decisions/resolve", {"decision_id": "d1", "approve": True}),
           ("/api/resources/act", {"resource_id": "terminal:test/sim/motor_left", "op": 1, "args": "6400"}),
           ("/api/resources/take", {"resource_id": "terminal:test/sim/motor_left"}),
           ("/api/resources/hand_back", {"resource_id": "terminal:test/sim/motor_left", "fay_id": "fay:x"}),
           ("/api/resources/release", {"resource_id": "terminal:test/sim/motor_left"}),
           ("/api/logout", {})]


def base(server):
    return server.url.rstrip("/")


def client(server, **kw):
    return httpx.AsyncClient(base_url=base(server), verify=False, follow_redirects=False, timeout=10, **kw)


def same_origin(server):
    return {"Origin": base(server), "Content-Type": "application/json"}


async def login(c, server, name=OPERATOR, password=PASSWORD):
    return await c.post("/api/login", content=json.dumps({"name": name, "password": password}),
                        headers=same_origin(server))


class logged_in:
    """`async with logged_in(server) as (client, csrf)`: an operator who logged in."""

    def __init__(self, server):
        self.server = server
        self.c = client(server)

    async def __aenter__(self):
        await self.c.__aenter__()
        r = await login(self.c, self.server)
        assert r.status_code == 200, r.text
        return self.c, (await self.c.get("/api/me")).json()["csrf"]

    async def __aexit__(self, *exc):
        await self.c.__aexit__(*exc)


def cookie_header(response):
    return [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]


def test_cookie_flags_and_a_new_session_id_at_login(console, run):
    server = console()

    async def go():
        async with client(server) as c:
            c.cookies.set("cw_session", "planted-by-attacker")
            r = await login(c, server)
            assert r.status_code == 200
            [cookie] = cookie_header(r)
            parts = [p.strip().lower() for p in cookie.split(";")]
            assert "httponly" in parts and "samesite=strict" in parts and "path=/" in parts
            assert "secure" not in parts                     # plain HTTP on loopback: no Secure
            sid = cookie.split(";")[0].split("=", 1)[1]
            assert sid != "planted-by-attacker" and len(sid) >= 40
            # The planted id is nobody's session; the new one is the operator's.
            async with client(server) as other:
                other.cookies.set("cw_session", "planted-by-attacker")
                assert (await other.get("/api/me")).status_code == 401
            c.cookies.clear()
            c.cookies.set("cw_session", sid)
            assert (await c.get("/api/me")).json()["operator"] == OPERATOR
            # A second login gives another id and ends the first (fixation by a stolen id).
            r2 = await login(c, server)
            sid2 = cookie_header(r2)[0].split(";")[0].split("=", 1)[1]
            assert sid2 != sid
            async with client(server) as old:
                old.cookies.set("cw_session", sid)
                assert (await old.get("/api/me")).status_code == 401
    run(go())
    assert [a["outcome"] for a in server.web.sources.audited if a["action"] == "operator_login"] == ["allow", "allow"]


def test_every_state_changing_request_needs_the_csrf_token_and_same_origin(console, run):
    server = console()
    fake = server.web.sources

    async def go():
        async with logged_in(server) as (c, csrf):
            for path, body in ACTIONS:
                data = json.dumps(body)
                good = dict(same_origin(server), **{"X-CSRF-Token": csrf})
                cases = [
                    ("no token", {k: v for k, v in good.items() if k != "X-CSRF-Token"}, 403),
                    ("wrong token", dict(good, **{"X-CSRF-Token": csrf[:-2] + "xx"}), 403),
                    ("no Origin", {k: v for k, v in good.items() if k != "Origin"}, 403),
                    ("other Origin", dict(good, Origin="http://evil.example"), 403),
                    ("other port", dict(good, Origin=base(server).rsplit(":", 1)[0] + ":1"), 403),
                    ("cross-site fetch", dict(good, **{"Sec-Fetch-Site": "cross-site"}), 403),
                    ("a form", dict(good, **{"Content-Type": "application/x-www-form-urlencoded"}), 415),
                    ("text/plain", dict(good, **{"Content-Type": "text/plain"}), 415),
                ]
                for what, headers, status in cases:
                    r = await c.post(path, content=data, headers=headers)
                    assert r.status_code == status, (path, what, r.status_code, r.text)
                    assert fake.calls == [], (path, what)
                assert (await c.get("/api/me")).status_code == 200          # still logged in
            # With both, the action is done, with the operator's identity.
            r = await c.post("/api/resources/take", content=json.dumps(ACTIONS[2][1]),
                             headers=dict(same_origin(server), **{"X-CSRF-Token": csrf}))
            assert r.status_code == 200, r.text
            assert fake.calls == [("take", "terminal:test/sim/motor_left", OPERATOR)]
            assert fake.synced                  # the audit log was synced before the answer
            r = await c.post("/api/decisions/resolve", content=json.dumps({"decision_id": "d1", "approve": False}),
                             headers=dict(same_origin(server), **{"X-CSRF-Token": csrf}))
            assert fake.calls[-1] == ("resolve", "d1", False, OPERATOR)
    run(go())


def test_login_itself_refuses_cross_origin_and_forms(console, run):
    server = console()

    async def go():
        async with client(server) as c:
            body = json.dumps({"name": OPERATOR, "password": PASSWORD})
            r = await c.post("/api/login", content=body, headers={"Origin": "http://evil.example",
                                                                  "Content-Type": "application/json"})
            assert r.status_code == 403 and not cookie_header(r)
            r = await c.post("/api/login", data={"name": OPERATOR, "password": PASSWORD},
                             headers={"Origin": base(server)})
            assert r.status_code == 415 and not cookie_header(r)
            # No secret in a URL: credentials in the query string log nobody in.
            r = await c.post("/api/login?name=%s&password=%s" % (OPERATOR, PASSWORD), content=b"{}",
                             headers=same_origin(server))
            assert r.status_code == 400 and not cookie_header(r)
            assert (await c.get("/api/login")).status_code == 405
    run(go())


def test_unauthenticated_visitor_gets_no_data(console, run):
    server = console()

    async def go():
        async with client(server) as c:
            r = await c.get("/")
            assert r.status_code == 303 and r.headers["location"] == "/login"
            for path in ("/api/state", "/api/events", "/api/me"):
                r = await c.get(path)
                assert r.status_code == 401, path
                assert "motor_left" not in r.text and "fay:" not in r.text and "terminal:" not in r.text
            for path, body in ACTIONS:
                r = await c.post(path, content=json.dumps(body), headers=same_origin(server))
                assert r.status_code == 401, path
            assert (await c.get("/login")).status_code == 200
            assert (await c.get("/static/console.js")).status_code == 200
            assert (await c.get("/static/../web.py")).status_code == 404
            assert (await c.get("/static/nothing.js")).status_code == 404
    run(go())
    assert server.web.sources.calls == []


def test_security_headers(console, run):
    server = console()

    async def go():
        async with client(server) as c:
            for path in ("/login", "/static/console.js", "/api/state"):
                r = await c.get(path)
                csp = r.headers["content-security-policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
                assert r.headers["x-content-type-options"] == "nosniff"
                assert r.headers["cache-control"] == "no-store"
                assert "server" not in r.headers
    run(go())


def test_host_header_of_another_name_is_refused(console, run):
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    server = console()

    async def go():
        async with client(server) as c:
            port = server.port
            assert (await c.get("/login", headers={"Host": "evil.example:%d" % port})).status_code == 421
            r = await c.post("/api/login", content=json.dumps({"name": OPERATOR, "password": PASSWORD}),
                             headers={"Host": "evil.example:%d" % port, "Origin": "http://evil.example:%d" % port,
                                      "Content-Type": "application/json"})
            assert r.status_code == 421 and not cookie_header(r)
            assert (await c.get("/login", headers={"Host": "localhost:%d" % port})).status_code == 200
    run(go())


def test_failed_logins_are_braked_and_audited(console, run):
    server = console()
    fake = server.web.sources

    async def go():
        async with client(server) as c:
            for _ in range(5):
                assert (await login(c, server, password="guess")).status_code == 401
            r = await login(c, server)               # the right password, too late
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and not cookie_header(r)
            # Another account from the same address is braked too (one peer, many names).
            assert (await login(c, server, name="ops-bob", password="guess")).status_code == 429
    run(go())
    outcomes = [(a["outcome"], a["reason"]) for a in fake.audited if a["action"] == "operator_login"]
    assert outcomes == [("deny", "bad_credentials")] * 5 + [("deny", "rate_limited")] * 2
    assert all(a["operator"] in (OPERATOR, "ops-bob") and "guess" not in json.dumps(a) for a in fake.audited)


def test_the_brake_lifts_after_its_window():
    from capwarden.engine.console.logins import FailedLogins

    now = [100.0]
    f = FailedLogins(clock=lambda: now[0], allowed=3, window_s=60)
    f.failed("a")
    f.failed("a")
    assert f.blocked_for("a") == 0
    f.failed("a")
    assert f.blocked_for("a") == pytest.approx(60)
    now[0] += 59.5
    assert 0 < f.blocked_for("a") <= 0.5
    now[0] += 1
    assert f.blocked_for("a") == 0


def test_sessions_end_idle_old_and_at_logout(console, run):
    from capwarden.engine.console.logins import LoginSessions

    now = [0.0]
    s = LoginSessions(clock=lambda: now[0], idle_s=60, lifetime_s=300)
    a = s.create("op")
    now[0] = 59
    assert s.get(a.sid) is a
    now[0] = 119
    assert s.peek(a.sid) is a          # a live stream does not keep a session alive
    now[0] = 121
    assert s.get(a.sid) is None
    b = s.create("op")
    for t in range(50, 301, 50):
        now[0] = 121 + t
        assert s.get(b.sid) is b
    now[0] = 121 + 302
    assert s.get(b.sid) is None

    server = console()

    async def go():
        async with logged_in(server) as (c, csrf):
            r = await c.post("/api/logout", content=b"{}", headers=dict(same_origin(server), **{"X-CSRF-Token": csrf}))
            assert r.status_code == 200
            assert "max-age=0" in cookie_header(r)[0].lower()
            assert (await c.get("/api/state")).status_code == 401
    run(go())
    assert [a["action"] for a in server.web.sources.audited] == ["operator_login", "operator_logout"]


def test_a_live_stream_ends_at_logout(console, run):
    server = console()

    async def go():
        async with logged_in(server) as (c, csrf):
            async with c.stream("GET", "/api/events") as events:
                assert events.headers["content-type"].startswith("text/event-stream")
                lines = events.aiter_lines()
                got = []
                while not any(line.startswith("data: {") for line in got):
                    got.append(await asyncio.wait_for(lines.__anext__(), 10))
                state = json.loads([x for x in got if x.startswith("data: {")][0][6:])
                assert state["operator"] == OPERATOR and state["boards"][0]["resources"][0]["epoch"] == 3
                async with client(server) as other:
                    other.cookies.update(c.cookies)
                    r = await other.post("/api/logout", content=b"{}",
                                         headers=dict(same_origin(server), **{"X-CSRF-Token": csrf}))
                    assert r.status_code == 200
                rest = []
                async for line in lines:
                    rest.append(line)
                assert "event: logged_out" in rest
    run(go())


def test_plain_http_refused_off_loopback(tmp_path):
    from capwarden.engine.console.server import ConsoleServer
    from capwarden.errors import UsageError

    for listen in ("0.0.0.0:0", "192.0.2.7:8766", "[::]:0", "example.org:443"):
        with pytest.raises(UsageError, match="only on loopback"):
            ConsoleServer(listen)
    for listen in ("unix:/tmp/x.sock", "8766", "host:port"):
        with pytest.raises(UsageError, match="--console takes HOST:PORT"):
            ConsoleServer(listen)
    with pytest.raises(UsageError, match="go together"):
        ConsoleServer("0.0.0.0:0", str(tmp_path / "cert.pem"))


def test_tls_console_sets_a_secure_host_cookie(console, run, tmp_path):
    from trustrig import self_signed

    cert, key = self_signed(str(tmp_path))
    server = console("127.0.0.1:0", tls=(cert, key))
    assert server.url.startswith("https://")

    async def go():
        async with client(server) as c:
            r = await login(c, server)
            assert r.status_code == 200
            [cookie] = cookie_header(r)
            parts = [p.strip().lower() for p in cookie.split(";")]
            assert cookie.startswith("__Host-cw_session=")
            assert "secure" in parts and "httponly" in parts and "samesite=strict" in parts
            assert r.headers["strict-transport-security"].startswith("max-age=")
            # Over TLS the Origin must say https.
            me = await c.get("/api/me")
            csrf = me.json()["csrf"]
            r = await c.post("/api/resources/release", content=b'{"resource_id": "x"}',
                             headers={"Origin": base(server).replace("https", "http"),
                                      "Content-Type": "application/json", "X-CSRF-Token": csrf})
            assert r.status_code == 403
        # Plain HTTP to the TLS port gets no page.
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(base(server).replace("https", "http") + "/login")
    run(go())


def test_tls_console_may_listen_off_loopback(console, run, tmp_path):
    from trustrig import self_signed

    cert, key = self_signed(str(tmp_path))
    server = console("0.0.0.0:0", tls=(cert, key))

    async def go():
        async with httpx.AsyncClient(verify=False, timeout=10) as c:
            r = await c.get("https://127.0.0.1:%d/login" % server.port)
            assert r.status_code == 200 and b"Operator name" in r.content
    run(go())


def test_audit_tail_follows_the_chain_and_reports_a_break(tmp_path):
    from capwarden.engine.audit import AuditLog
    from capwarden.engine.console.audittail import AuditTail

    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    for i in range(30):
        log.record("grant", "allow", "test", resource="r%d" % i)
    tail = AuditTail(path)
    assert tail.refresh()
    st = tail.state()
    assert st["intact"] and st["entries_verified"] == 30 and st["head"] == log.last
    assert [e["seq"] for e in st["tail"]] == list(range(30, 10, -1))
    assert not tail.refresh()                     # nothing new
    log.record("takeover", "completed", "operator", operator="anna", resource="t/sim/motor", from_fays=["fay:x"])
    assert tail.refresh() and tail.state()["tail"][0]["seq"] == 31
    assert tail.taken_from == {"t/sim/motor": ["fay:x"]}       # the hand-back suggestion
    log.close()
    # An edited line after the verified part breaks the chain, and it stays broken.
    with open(path, "a") as f:
        f.write(json.dumps({"seq": 32, "prev": log.last, "action": "forged", "hash": "0" * 64}) + "\n")
    assert tail.refresh()
    st = tail.state()
    assert not st["intact"] and "line 32" in st["problem"]
    assert not tail.refresh() and not tail.state()["intact"]
    # A fresh reader of the same file finds it too.
    fresh = AuditTail(path)
    fresh.refresh()
    assert not fresh.state()["intact"] and fresh.state()["entries_verified"] == 31


def test_against_the_engine_refusals_carry_the_s2_code_and_actions_are_audited_as_the_operator(run, tmp_path):
    """The real engine behind the console (no browser): a release of what the operator does not
    hold, a late approval, a take and a release, and the audit log names the operator."""
    from capwarden.engine.audit import read
    from consolerig import Stack

    s = Stack(str(tmp_path), {"policies": [{"resource": "sim/motor_left", "policy": "human", "timeout_ms": 300}]})

    async def go():
        await s.start()
        try:
            async with logged_in(s.app.console_server) as (c, csrf):
                h = dict(same_origin(s.app.console_server), **{"X-CSRF-Token": csrf})
                motor = s.res("motor_left")
                r = await c.post("/api/resources/release", content=json.dumps({"resource_id": motor}), headers=h)
                assert r.status_code == 409 and r.json()["code"] == "E_PERMISSION_DENIED"
                r = await c.post("/api/resources/take", content=json.dumps({"resource_id": s.res("nothing")}),
                                 headers=h)
                assert r.status_code == 409 and r.json()["code"] == "E_RESOURCE_UNAVAILABLE"
                # A decision that ran out of time cannot be approved any more.
                w = s.world
                a, b = await s.runtime("rtA"), await s.runtime("rtB")
                await w.take(a, "motor_left", "write", who="A")
                ask = asyncio.ensure_future(w.take(b, "motor_left", "write", who="B"))
                while not s.app.engine.decisions.pending():
                    await asyncio.sleep(0.01)
                [d] = s.app.engine.decisions.pending()
                with pytest.raises(Exception):
                    await ask
                r = await c.post("/api/decisions/resolve", content=json.dumps({"decision_id": d.decision_id,
                                                                                 "approve": True}), headers=h)
                assert r.status_code == 409 and "expired" in r.json()["error"]
                act = {"resource_id": motor, "op": 1, "args": "6400"}
                r = await c.post("/api/resources/act", content=json.dumps(act), headers=h)
                assert r.status_code == 409 and r.json()["code"] == "E_PERMISSION_DENIED"    # not held
                r = await c.post("/api/resources/take", content=json.dumps({"resource_id": motor}), headers=h)
                assert r.status_code == 200 and r.json()["result"]["kind"] == "operator"
                r = await c.post("/api/resources/act", content=json.dumps(act), headers=h)
                assert r.status_code == 200 and r.json()["result"]["data"] == "6400"         # speed 100
                r = await c.post("/api/resources/act", content=json.dumps(dict(act, args="zz")), headers=h)
                assert r.status_code == 400
                r = await c.post("/api/resources/act", content=json.dumps(dict(act, args="ffff7f")), headers=h)
                assert r.status_code == 409 and r.json()["code"].startswith("E_")             # the board refuses
                r = await c.post("/api/resources/release", content=json.dumps({"resource_id": motor}), headers=h)
                assert r.status_code == 200
                state = (await c.get("/api/state")).json()
                [row] = [x for bd in state["boards"] for x in bd["resources"] if x["resource_id"] == motor]
                assert row["holder"] is None
        finally:
            await s.stop()
    run(go())
    entries, problem = read(s.app.audit_path)
    assert problem is None
    by_operator = [(e["action"], e["outcome"]) for e in entries if e.get("operator") == OPERATOR]
    assert ("operator_login", "allow") in by_operator
    assert ("takeover", "completed") in by_operator and ("operator_release", "done") in by_operator
    assert ("operator_command", "done") in by_operator
    assert [e["outcome"] for e in entries if e["action"] == "decision"] == ["pending", "expired"]


def test_serve_refuses_a_plain_console_off_loopback(tmp_path):
    import subprocess
    import sys

    from capwarden.credentials import Terminal

    store = str(tmp_path / "store")
    Terminal.init(store)
    exe = os.path.join(os.path.dirname(sys.executable), "capwarden")
    base = [exe, "serve", "--store", store, "--listen", "127.0.0.1:0", "--board", "sim",
            "--runtime-token", "rt1=token-123456"]
    for console in ("0.0.0.0:8766", "192.0.2.7:0", "unix:/tmp/console.sock"):
        p = subprocess.run(base + ["--console", console], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, (console, p.stdout, p.stderr)
        assert "console" in p.stderr and "Traceback" not in p.stderr
        assert "serving" not in p.stdout


def test_a_session_ends_with_its_account(console, run, tmp_path):
    """Removing an operator, or giving it a new password, ends its console sessions at once."""
    from capwarden.engine.console.sources import ConsoleSources
    from capwarden.engine.operators import OperatorStore

    class Engine:              # what ConsoleSources reads of the engine for accounts
        audit = None

    store = str(tmp_path / "store")
    os.makedirs(store)
    accounts = OperatorStore(store)
    accounts.add(OPERATOR, PASSWORD)
    real = ConsoleSources(Engine(), store)
    fake = FakeSources()
    fake.authenticate, fake.stamp = real.authenticate, real.stamp
    server = console(sources=fake)

    async def go():
        async with logged_in(server) as (c, csrf):
            assert (await c.get("/api/me")).status_code == 200
            accounts.add(OPERATOR, "a new password here", replace=True)
            assert (await c.get("/api/me")).status_code == 401
        async with client(server) as c:
            assert (await login(c, server, password="a new password here")).status_code == 200
            assert (await c.get("/api/state")).status_code == 200
            accounts.remove(OPERATOR)
            assert (await c.get("/api/state")).status_code == 401
            assert (await login(c, server, password="a new password here")).status_code == 401
    run(go())


def test_nothing_is_said_done_when_the_audit_log_cannot_be_written(console, run):
    from capwarden.errors import StoreError

    fake = FakeSources()
    server = console(sources=fake)

    async def go():
        async with logged_in(server) as (c, csrf):
            async def broken():
                raise StoreError("cannot append to the audit log: disk full")
            fake.durable = broken
            r = await c.post("/api/resources/release", content=json.dumps({"resource_id": "x"}),
                             headers=dict(same_origin(server), **{"X-CSRF-Token": csrf}))
            assert r.status_code == 503 and "audit log" in r.json()["error"]
            r = await login(c, server)
            assert r.status_code == 503 and not cookie_header(r)
    run(go())
