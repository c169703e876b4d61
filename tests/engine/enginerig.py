"""End-to-end fixtures: `capwarden serve` on the virtual board, and real WebSocket clients."""

import asyncio
import os
import subprocess
import sys
import time

import pytest

from capwarden.credentials import Terminal
from capwarden.credentials.ids import new_fay_id
from capwarden.credentials.issue import SigningKey, descriptor_payload, sign_descriptor
from capwarden.sdk import connect
import procs
from eventloop import loop_runner, wait_until  # noqa: F401 (wait_until: tests import it from here)

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")
TOKENS = {"rtA": "token-A-123456", "rtB": "token-B-123456", "rtC": "token-C-123456"}
# Short liveness so expiry tests take about a second; motors shorter still (per-class).
LIVENESS = ["default=200/1000", "motor=150/700"]


class World:
    def __init__(self, folder):
        self.store = os.path.join(folder, "store")
        self.t = Terminal.init(self.store)
        self.tid = self.t.terminal_id
        self.now = int(time.time())
        self.key = SigningKey.generate("ed25519", "acme-1", "issuer:acme")
        self.key.save(os.path.join(folder, "acme"), self.now - 100)
        self.keyfile = os.path.join(folder, "acme.key")
        self.t.import_key(self.key.public_json(self.now - 100))
        self.A, self.B, self.C = new_fay_id(), new_fay_id(), new_fay_id()
        g = self.grant
        self.dA = self.descriptor(self.A, [g("camera", "read", "execute"), g("motor_left", "read", "write"),
                                           g("motor_right", "read", "write"), g("gps", "read")])
        self.dB = self.descriptor(self.B, [g("gps", "read"), g("motor_left", "write"), g("camera", "execute")])
        self.dC = self.descriptor(self.C, [g("camera", "execute"), g("led", "write")])
        self.folder = folder

    def grant(self, name, *modes):
        return {"resource_pattern": self.tid + "/sim/" + name, "modes": list(modes)}

    def descriptor(self, fay, grants, seconds=3600):
        """A descriptor valid for `seconds` from now (not from the world's making: the engine's
        start in between may take seconds on a loaded machine)."""
        now = int(time.time())
        data = sign_descriptor(self.key, descriptor_payload(fay, self.tid, grants, "issuer:acme", now - 60,
                                                            now + seconds))
        return self.t.import_descriptor(data)

    def res(self, name):
        return self.tid + "/sim/" + name

    @staticmethod
    def cred(did):
        return {"type": "descriptor_ref", "descriptor_id": did}

    async def take(self, client, name, mode, who="A", **kw):
        """`client` acquires resource `name` for Fay `who` (A, B or C) with its descriptor."""
        return await client.acquire(getattr(self, who), self.res(name), mode, self.cred(getattr(self, "d" + who)),
                                    **kw)

    async def holding(self, engine, name, mode, who="A"):
        """(client, session): runtime rt`who` connects to `engine` (runtime()) and its Fay `who`
        acquires resource `name`."""
        client = await runtime(engine, "rt" + who)
        return client, await self.take(client, name, mode, who)

    async def hand_over(self, client, name, mode, timeout_ms, who="B"):
        """`client` asks for resource `name` to be handed over to Fay `who`, with its descriptor."""
        return await client.handover(self.res(name), getattr(self, who), mode, self.cred(getattr(self, "d" + who)),
                                     timeout_ms)

    def auth_body(self, name, mode, who="A", **kw):
        """The body of an AuthRequest for resource `name` by Fay `who`, with its descriptor."""
        return dict({"fay_id": getattr(self, who), "resource_id": self.res(name), "access_mode": mode,
                     "credential": self.cred(getattr(self, "d" + who))}, **kw)


class Served:
    """A `capwarden serve` process on the virtual board."""

    def __init__(self, world):
        args = [EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim"]
        for rid, tok in TOKENS.items():
            args += ["--runtime-token", "%s=%s" % (rid, tok)]
        for item in LIVENESS:
            args += ["--liveness", item]
        args += ["--leeway", "0"]     # so a credential made to expire in seconds does (attacks.md I69)
        # The log goes to a file: serve logs a line per connection, and a pipe nobody reads
        # would stop the engine once it is full.
        self.log_path = os.path.join(world.folder, "serve.log")
        self._log = open(self.log_path, "w")
        # Its temporary folders (the staged firmware, the board's files) in the test's own, so a
        # test that kills it with SIGKILL leaves nothing in the system's temporary folder.
        env = dict(os.environ, TMPDIR=world.folder)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("serve did not start: %s %s" % (line, self.stderr()))
        self.url = line.split()[1]

    def stderr(self):
        """What serve logged so far."""
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        procs.stop(self.proc)
        self._log.close()


@pytest.fixture
def world(tmp_path):
    return World(str(tmp_path))


@pytest.fixture
def served(world):
    s = Served(world)
    yield s
    s.stop()


run = pytest.fixture(loop_runner)


@pytest.fixture
def client(served, run):
    made = []

    def make(rid="rtA"):
        c = run(connect(served.url, rid, TOKENS[rid]))
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            run(c.close())
        except Exception:
            pass


async def runtime(engine, rid="rtA"):
    """An SDK client of runtime `rid`, connected to a Served engine or an in_process app."""
    url = engine.url if isinstance(engine, Served) else engine.server.url
    return await connect(url, rid, TOKENS[rid])


async def refusal(awaitable):
    """The S2 code of the CapError that `awaitable` raises; fails the test when it raises none."""
    from capwarden.errors import CapError

    with pytest.raises(CapError) as exc:
        await awaitable
    return exc.value.code


def never_answer(client):
    """Offers to `client` are recorded and never answered (the holder stays silent): the list."""
    offers = []
    client.on_offer(lambda o: offers.append(o) or asyncio.sleep(3600))
    return offers


def answer(client, offer, accept=True):
    """`client`'s HandoverResponse to `offer` (a HandoverOffered body), as a coroutine."""
    return client.request("HandoverResponse", {"handover_id": offer["handover_id"], "accept": accept})


async def exchange(client, msg, timeout=10):
    """Send a prepared message dict on an SDK client's connection; the engine's answer to it."""
    from capwarden.engine import protocol

    fut = asyncio.get_running_loop().create_future()
    client._pending[msg["message_id"]] = fut
    await client.ws.send(protocol.dumps(msg))
    return await asyncio.wait_for(fut, timeout)


def speed(v):
    """A motor speed as the sim motor's op 1 takes it."""
    return int(v).to_bytes(2, "little", signed=True)


@pytest.fixture
def in_process(world, run):
    """Start EngineApp in this process (so a test can reach the board and the cable under it)."""
    from capwarden.engine.app import EngineApp

    apps = []

    async def start(**kw):
        app = EngineApp(world.store, "127.0.0.1:0", TOKENS, sim=True, leeway=0, **kw)
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        run(app.stop())
