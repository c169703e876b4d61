"""Fixtures of tests/console: the console served on a free loopback port in this process, in
front of a recorded fake of the engine side (HTTP tests) or of a real engine (browser tests)."""

import asyncio
import os
import sys
import time

import pytest

# The engine's test world (descriptors for Fays A, B, C on the virtual board) is tests/engine's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine"))

from eventloop import loop_runner

OPERATOR, PASSWORD = "ops-anna", "correct horse battery"


class FakeSources:
    """The engine side of the console (sources.ConsoleSources' methods), recording every call:
    a refused request must leave `calls` empty."""

    def __init__(self):
        self.calls = []
        self.audited = []
        self.subscribers = []
        self.decisions = []
        self.stamps = {OPERATOR: 1}      # the accounts (name -> version)

    async def authenticate(self, name, password):
        return (name, self.stamps.get(name)) if (name, password) == (OPERATOR, PASSWORD) else None

    def stamp(self, name):
        return self.stamps.get(name)

    def snapshot(self):
        return {"terminal_id": "terminal:test", "now": time.time(), "decisions": list(self.decisions),
                "boards": [{"name": "sim", "up": True, "resources": [
                    {"resource_id": "terminal:test/sim/motor_left", "name": "motor_left", "class": "motor",
                     "holder": {"kind": "fay", "id": "fay:secret-holder", "runtime_id": "rtA"}, "mode": "write",
                     "epoch": 3, "since": time.time() - 5, "suspended": False, "lease": "3 s"}]}]}

    async def resolve(self, decision_id, approve, operator):
        self.calls.append(("resolve", decision_id, approve, operator))

    async def take(self, resource_id, operator):
        self.calls.append(("take", resource_id, operator))

    async def hand_back(self, resource_id, fay_id, operator):
        self.calls.append(("hand_back", resource_id, fay_id, operator))

    async def release(self, resource_id, operator):
        self.calls.append(("release", resource_id, operator))

    async def act(self, resource_id, op, args, operator):
        self.calls.append(("act", resource_id, op, args, operator))
        return {"resource_id": resource_id, "op": op, "data": ""}

    def subscribe(self, cb):
        self.subscribers.append(cb)

    def unsubscribe(self, cb):
        if cb in self.subscribers:
            self.subscribers.remove(cb)

    def audit(self, action, outcome, reason, **fields):
        self.audited.append(dict(fields, action=action, outcome=outcome, reason=reason))
        self.synced = False

    async def durable(self):
        self.synced = True


run = pytest.fixture(loop_runner)


@pytest.fixture
def console(run, tmp_path):
    """start(listen="127.0.0.1:0", tls=None, sources=None, audit_path=None) -> the ConsoleServer
    (its .web is the ConsoleWeb, its .web.sources the sources); stopped after the test."""
    from capwarden.engine.console.server import ConsoleServer
    from capwarden.engine.console.web import ConsoleWeb

    started = []

    def start(listen="127.0.0.1:0", tls=None, sources=None, audit_path=None, **kw):
        async def go():
            server = ConsoleServer(listen, *(tls or (None, None)))
            await server.start(ConsoleWeb(sources or FakeSources(), audit_path=audit_path, **kw))
            return server
        s = run(go())
        started.append(s)
        return s

    yield start
    for s in started:
        run(s.close())


async def settle():
    await asyncio.sleep(0)


# ---- a real engine on the virtual board, its console, and Debian's Chromium -----------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Heartbeats are not the subject here: sessions stay active for the whole test without them.
QUIET_LIVENESS = ["default=1000/120000"]


def require_chromium():
    """Skip without Debian's Chromium; under CI=true fail (.ci/run installs it)."""
    import services

    services.require(CHROMIUM, "Chromium", "chromium")


class Stack:
    """EngineApp on the virtual board with its console, an operator account, the runtimes'
    test world (tests/engine/enginerig.World), and runtimes connected as SDK clients."""

    def __init__(self, folder, handover=None, liveness=QUIET_LIVENESS):
        from enginerig import TOKENS, World

        from capwarden.engine import policyconfig
        from capwarden.engine.app import EngineApp
        from capwarden.engine.liveness import LivenessPolicy
        from capwarden.engine.operators import OperatorStore

        self.world = World(folder)
        OperatorStore(self.world.store).add(OPERATOR, PASSWORD)
        self.app = EngineApp(self.world.store, "127.0.0.1:0", TOKENS, sim=True, leeway=0, console="127.0.0.1:0",
                             liveness=LivenessPolicy.parse(liveness),
                             handover=policyconfig.parse(handover) if handover else None)
        self.clients = []

    async def start(self):
        await self.app.start()
        self.url = self.app.console_server.url
        return self

    async def runtime(self, rid):
        from capwarden.sdk import connect
        from enginerig import TOKENS

        c = await connect(self.app.server.url, rid, TOKENS[rid])
        self.clients.append(c)
        return c

    def res(self, name):
        return self.world.res(name)

    async def stop(self):
        for c in self.clients:
            try:
                await c.close()
            except Exception:
                pass
        await self.app.stop()


class Browser:
    """`async with Browser() as b`: Chromium through Playwright; b.page() a fresh context's page,
    with the page's script errors collected in b.errors (a test asserts there are none)."""

    async def __aenter__(self):
        from playwright.async_api import async_playwright, expect

        expect.set_options(timeout=15000)     # two shared cores: generous, a hang still fails

        self._pw = await async_playwright().start()
        self.browser = await self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.errors = []
        return self

    async def page(self):
        ctx = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = await ctx.new_page()
        page.set_default_timeout(15000)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        return page

    async def __aexit__(self, *exc):
        await self.browser.close()
        await self._pw.stop()


async def log_in(page, url, name=OPERATOR, password=PASSWORD):
    """Through the login page, with the keyboard (Tab, typing, Enter)."""
    await page.goto(url)
    await page.wait_for_url("**/login")
    await page.locator("#name").focus()
    await page.keyboard.type(name)
    await page.keyboard.press("Tab")
    await page.keyboard.type(password)
    await page.keyboard.press("Enter")
    await page.wait_for_url(url)
