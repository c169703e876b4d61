"""Fixtures of tests/console: the console served on a free loopback port in this process, in
front of a recorded fake of the engine side (HTTP tests) or of a real engine (browser tests)."""

import asyncio
import time

import pytest

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

    async def authenticate(self, name, password):
        return name if (name, password) == (OPERATOR, PASSWORD) else None

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

    def subscribe(self, cb):
        self.subscribers.append(cb)

    def unsubscribe(self, cb):
        if cb in self.subscribers:
            self.subscribers.remove(cb)

    def audit(self, action, outcome, reason, **fields):
        self.audited.append(dict(fields, action=action, outcome=outcome, reason=reason))


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
