"""The console in a real headless Chromium (Debian's /usr/bin/chromium through Playwright): an
operator logs in, sees a live request appear, approves it, takes control of a motor, sees the
Fay's session end, hands control back; a request denied by timeout; an unauthenticated visitor;
a cross-site page that tries to act with the operator's session."""

import asyncio
import http.server
import threading

import pytest
from playwright.async_api import expect

from consolerig import OPERATOR, Browser, Stack, log_in, require_chromium
from enginerig import speed

HUMAN_MOTOR = {"policies": [{"resource": "sim/motor_left", "policy": "human", "timeout_ms": 30000}]}


@pytest.fixture
def stack(run, tmp_path):
    require_chromium()
    made = []

    def start(handover=None, **kw):
        s = run(Stack(str(tmp_path), handover, **kw).start())
        made.append(s)
        return s

    yield start
    for s in made:
        run(s.stop())


def row(page, stack, name):
    return page.locator('tr[data-resource-id="%s"]' % stack.res(name))


def test_operator_approves_a_request_takes_the_motor_and_hands_it_back(stack, run):
    from capwarden.errors import CapError

    s = stack(HUMAN_MOTOR)
    w = s.world

    async def go():
        async with Browser() as b:
            page = await b.page()
            await log_in(page, s.url)
            await expect(page.locator("#operator")).to_have_text(OPERATOR)
            await expect(page.locator("#link")).to_have_text("Live")
            motor = row(page, s, "motor_left")
            await expect(motor.locator('[data-col="holder"]')).to_have_text("free")

            a, b_rt = await s.runtime("rtA"), await s.runtime("rtB")
            held = await w.take(a, "motor_left", "write", who="A")
            driving = await w.take(a, "motor_right", "write", who="A")
            await expect(motor.locator('[data-col="holder"]')).to_contain_text("FAY")
            await expect(motor.locator('[data-col="holder"] code')).to_have_attribute("title", w.A)
            epoch_a = held_epoch(s, "motor_left")
            await expect(motor.locator('[data-col="epoch"]')).to_have_text(str(epoch_a))
            await expect(motor.locator('[data-col="mode"]')).to_have_text("write")

            # Fay B asks for the held motor: the human policy puts the question on the page, live.
            ask = asyncio.ensure_future(w.take(b_rt, "motor_left", "write", who="B"))
            card = page.locator("li.decision")
            await expect(card).to_have_count(1)
            await expect(card.locator("h3 code").first).to_have_attribute("title", w.B)
            await expect(card).to_contain_text(s.res("motor_left"))
            await expect(card).to_contain_text("rtB")
            first = await seconds_left(card)
            await asyncio.sleep(0.5)
            assert 0 < await seconds_left(card) < first <= 30       # the countdown runs
            assert not ask.done()

            # Approved from the keyboard.
            await card.get_by_role("button", name="Approve").focus()
            await page.keyboard.press("Enter")
            session_b = await asyncio.wait_for(ask, 15)
            assert await held.ended(10) == "preempted"
            await expect(card).to_have_count(0)
            await expect(motor.locator('[data-col="holder"] code')).to_have_attribute("title", w.B)
            approved = [e for e in s.app.engine.decisions._settled.values() if e.state == "approved"]
            assert [d.operator_id for d in approved] == [OPERATOR]

            # Take control of the other motor, which Fay A drives (consent policy: nobody is asked).
            # The Fay's session ends, the operator holds it on the board under a new epoch.
            right = row(page, s, "motor_right")
            await expect(right.locator('[data-col="holder"] code')).to_have_attribute("title", w.A)
            epoch_right = held_epoch(s, "motor_right")
            await right.get_by_role("button", name="Take control of motor_right").click()
            assert await driving.ended(10) == "operator_takeover"
            await expect(right.locator('[data-col="holder"]')).to_contain_text("OPERATOR " + OPERATOR)
            await expect(page.locator("#audit-rows")).to_contain_text("operator_takeover")
            m = _motor(s, "motor_right")
            assert [h["kind"] for h in m["holders"]] == ["operator"] and m["holders"][0]["operator"] == OPERATOR
            assert m["holders"][0]["epoch"] > epoch_right
            await expect(right.locator('[data-col="epoch"]')).to_have_text(str(m["holders"][0]["epoch"]))
            with pytest.raises(CapError):                   # the Fay cannot actuate any more
                await driving.command(1, speed(100))
            # The operator drives it from the page (op 1: speed, little-endian): -200.
            await right.get_by_label("Operation number for motor_right").fill("1")
            await right.get_by_label("Arguments (hex) for motor_right").fill("38ff")
            await right.get_by_role("button", name="Send to motor_right").click()
            await expect(page.locator("#notice")).to_contain_text("answer 38ff")

            # Hand it back to the Fay it was taken from (the page suggests it); its next request gets it.
            fay = right.locator("input.fay-input")
            await expect(fay).to_have_value(w.A)
            await right.get_by_role("button", name="Hand motor_right back").click()
            await expect(page.locator("#notice")).to_contain_text("waiting for")
            await expect(right.locator('[data-col="holder"]')).to_contain_text("returning to")
            again = await asyncio.wait_for(w.take(a, "motor_right", "write", who="A", wait_ms=10000), 20)
            assert again.state == "active"
            await again.command(1, speed(100))
            await expect(right.locator('[data-col="holder"] code')).to_have_attribute("title", w.A)
            await expect(right.get_by_role("button", name="Take control of motor_right")).to_be_visible()
            await expect(page.locator("#chain")).to_contain_text("Hash chain intact")
            assert b.errors == []
    run(go())


def test_a_request_nobody_answers_is_denied_when_its_countdown_ends(stack, run):
    from capwarden.errors import CapError

    s = stack({"policies": [{"resource": "sim/motor_left", "policy": "human", "timeout_ms": 5000}]})
    w = s.world

    async def go():
        async with Browser() as b:
            page = await b.page()
            await log_in(page, s.url)
            a, b_rt = await s.runtime("rtA"), await s.runtime("rtB")
            held = await w.take(a, "motor_left", "write", who="A")
            ask = asyncio.ensure_future(w.take(b_rt, "motor_left", "write", who="B"))
            card = page.locator("li.decision")
            await expect(card).to_have_count(1)
            await expect(page.locator("#decision-count")).to_have_text("1")
            first = await seconds_left(card)
            assert first <= 5.0
            with pytest.raises(CapError) as exc:
                await asyncio.wait_for(ask, 15)
            assert exc.value.code == "E_HANDOVER_TIMEOUT"
            await expect(card).to_have_count(0)
            await expect(page.locator("#no-decisions")).to_be_visible()
            await expect(page.locator("#audit-rows")).to_contain_text("expired")
            motor = row(page, s, "motor_left")
            await expect(motor.locator('[data-col="holder"] code')).to_have_attribute("title", w.A)
            assert held.state == "active"
            [d] = s.app.engine.decisions._settled.values()
            assert d.state == "expired" and d.operator_id is None
            assert b.errors == []
    run(go())


def test_a_suspended_session_and_its_recovery_are_shown(stack, run):
    """A holder whose heartbeats are late (its connection up) is suspended: the page says so, and
    says it no more after the next heartbeat."""
    s = stack(liveness=["default=100/600"])
    w = s.world

    async def go():
        async with Browser() as b:
            page = await b.page()
            await log_in(page, s.url)
            a = await s.runtime("rtA")
            held = await w.take(a, "motor_left", "write", who="A")
            suspended = row(page, s, "motor_left").locator('[data-col="suspended"]')
            await expect(suspended).to_have_text("SUSPENDED")
            assert held.state == "active"

            async def beat():
                while True:
                    await held.heartbeat()
                    await asyncio.sleep(0.1)
            beating = asyncio.ensure_future(beat())
            try:
                await expect(suspended).to_have_text("no")
            finally:
                beating.cancel()
    run(go())


def test_an_unauthenticated_visitor_sees_nothing_and_can_do_nothing(stack, run):
    s = stack(HUMAN_MOTOR)
    w = s.world

    async def go():
        a = await s.runtime("rtA")
        await w.take(a, "motor_left", "write", who="A")
        async with Browser() as b:
            page = await b.page()
            await page.goto(s.url)
            await page.wait_for_url("**/login")
            html = await page.content()
            for secret in (w.tid, w.A, "motor_left"):
                assert secret not in html
            out = await page.evaluate("""async (rid) => {
                const state = await fetch("/api/state");
                const take = await fetch("/api/resources/take", {method: "POST",
                    headers: {"Content-Type": "application/json"}, body: JSON.stringify({resource_id: rid})});
                const stream = await new Promise((done) => {
                    const es = new EventSource("/api/events");
                    es.onmessage = () => done("message");
                    es.addEventListener("state", () => done("state"));
                    es.onerror = () => { es.close(); done("refused"); };
                });
                return {state: state.status, stateBody: await state.text(), take: take.status, stream: stream};
            }""", s.res("motor_left"))
            assert out["state"] == 401 and out["take"] == 401 and out["stream"] == "refused"
            assert w.tid not in out["stateBody"] and "motor_left" not in out["stateBody"]
            await page.goto(s.url + "api/state")
            assert w.tid not in await page.content()
            # The console page itself sends a visitor back to the login.
            await page.goto(s.url)
            await expect(page).to_have_url(s.url + "login")
            # A wrong password is said, and logs nobody in.
            await page.fill("#name", OPERATOR)
            await page.fill("#password", "not the password")
            await page.press("#password", "Enter")
            await expect(page.locator("#login-error")).to_contain_text("Wrong name or password")
            await expect(page).to_have_url(s.url + "login")
        holder = held_kinds(s, "motor_left")
        assert holder == ["fay"]
    run(go())


def test_a_cross_site_page_cannot_act_with_the_operators_session(stack, run, tmp_path):
    """The operator is logged in; a page of another origin posts to the console (a form and a
    fetch, with credentials): nothing happens (SameSite=Strict, Origin, CSRF token)."""
    s = stack(HUMAN_MOTOR)
    w = s.world
    evil = EvilSite(s.url, s.res("motor_left"))

    async def go():
        a = await s.runtime("rtA")
        held = await w.take(a, "motor_left", "write", who="A")
        async with Browser() as b:
            page = await b.page()
            await log_in(page, s.url)
            attacker = await page.context.new_page()
            await attacker.goto(evil.url)
            await attacker.wait_for_function("window.done === true")
            await asyncio.sleep(0.5)
            assert held.state == "active" and held_kinds(s, "motor_left") == ["fay"]
            await page.reload()
            await expect(row(page, s, "motor_left").locator('[data-col="holder"]')).to_contain_text("FAY")
    try:
        run(go())
    finally:
        evil.stop()


class EvilSite:
    """A page at another origin (another port) that tries to take the motor through the console."""

    def __init__(self, console_url, resource_id):
        page = ("""<!doctype html><html><body><form id="f" method="post" target="sink"
            action="%(c)sapi/resources/take" enctype="text/plain"><input name='{"resource_id":"%(r)s","x":"' value='"}'>
            </form><iframe name="sink"></iframe><script>
            window.done = false;
            document.getElementById("f").submit();
            fetch("%(c)sapi/resources/take", {method: "POST", mode: "no-cors", credentials: "include",
                  headers: {"Content-Type": "text/plain"}, body: JSON.stringify({resource_id: "%(r)s"})})
              .catch(() => null)
              .then(() => fetch("%(c)sapi/resources/take", {method: "POST", credentials: "include",
                  headers: {"Content-Type": "application/json"}, body: JSON.stringify({resource_id: "%(r)s"})}))
              .catch(() => null).then(() => { window.done = true; });
            </script></body></html>""" % {"c": console_url, "r": resource_id}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://localhost:%d/" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


async def seconds_left(card):
    text = await card.locator('[data-role="seconds"]').text_content()
    return float(text.split()[0])


def _motor(s, name):
    from capwarden.engine import controlroom

    snap = controlroom.snapshot(s.app.engine)
    [r] = [r for b in snap["boards"] for r in b["resources"] if r["name"] == name]
    return r


def held_epoch(s, name):
    return _motor(s, name)["holders"][0]["epoch"]


def held_kinds(s, name):
    return [h["kind"] for h in _motor(s, name)["holders"]]


def test_text_from_the_engine_is_shown_never_run(console, run):
    """XSS: names, details and audit reasons reach the page as text (textContent, and a CSP
    without inline script behind it)."""
    import time

    from consolerig import FakeSources

    require_chromium()
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    fake = FakeSources()
    snapshot = fake.snapshot

    def poisoned():
        snap = snapshot()
        r = snap["boards"][0]["resources"][0]
        r["name"], r["class"] = evil, evil
        r["holder"] = {"kind": "operator", "id": evil}
        snap["boards"][0]["name"] = evil
        return snap
    fake.snapshot = poisoned
    fake.decisions = [{"decision_id": "d-1", "resource_id": evil, "what": evil, "access_mode": evil,
                       "requester": {"runtime_id": evil, "fay_id": evil}, "holder": {"fay_id": evil}, "detail": evil,
                       "created_at": time.time(), "deadline_at": time.time() + 30, "timeout_ms": 30000,
                       "remaining_ms": 30000, "state": "pending"}]
    server = console(sources=fake)

    async def go():
        async with Browser() as b:
            page = await b.page()
            await log_in(page, server.url)
            await expect(page.locator("li.decision")).to_have_count(1)
            await expect(page.locator("li.decision")).to_contain_text("onerror")
            await expect(page.locator("#boards")).to_contain_text("<script>")
            await asyncio.sleep(0.3)
            assert await page.evaluate("window.pwned === undefined")
            assert await page.locator("#boards img, #decisions img, main script").count() == 0
    run(go())
