"""Key-set versions are pushed (issue 13 item 3): rotations happen in the command line's process,
so the service looks for a new latest version every keyset_watch_s seconds and publishes
`keyset(version)`. Against a real mosquitto (conftest), and the wiring in the app's lifespan."""

import asyncio
import time

import pytest
from eventloop import loop_runner, wait_until
from fastapi.testclient import TestClient

from capwarden.trust import push, registry, servicekeys
from capwarden.trust.config import ServiceConfig
from capwarden.trust.service import create_app, watch_keysets
from test_push import Recorder

from issuerig import NOW, rig  # noqa: F401  (rig is a fixture)

run = pytest.fixture(loop_runner)


def _ra(rig):
    ra = registry.RegistrationAuthority(rig.db, rig.ring, clock=rig.clock)
    ra.init_keysets()
    return ra


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_a_rotation_elsewhere_is_pushed_through_the_broker(run, rig, mosquitto):
    ra = _ra(rig)

    async def main():
        rec = Recorder(mosquitto.url, [push.KEYSET_TOPIC])
        await asyncio.wait_for(rec.ready.wait(), 20)
        pub = push.MqttPublisher(mosquitto.url)
        watcher = asyncio.ensure_future(watch_keysets(rig.db, pub, 0.05))
        try:
            await asyncio.sleep(0.3)
            assert rec.got == []                         # the version found at start is not pushed
            loop = asyncio.get_running_loop()
            v2 = (await loop.run_in_executor(None, ra.rotate, servicekeys.ISSUER, NOW))["version"]
            assert await wait_until(lambda: rec.got, 20)
            v3 = (await loop.run_in_executor(None, ra.rotate, servicekeys.RA))["version"]
            assert await wait_until(lambda: len(rec.got) == 2, 20)
            return v2, v3, list(rec.got)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await pub.aclose()
            await rec.stop()

    v2, v3, got = run(main())
    assert (v2, v3) == (2, 3)
    assert got == [(push.KEYSET_TOPIC, 1, {"kind": "keyset", "version": 2}),
                   (push.KEYSET_TOPIC, 1, {"kind": "keyset", "version": 3})]


class Recording:
    def __init__(self):
        self.keysets = []

    async def start(self):
        pass

    async def revocations(self, versions):
        pass

    async def keyset(self, version):
        self.keysets.append(version)

    async def aclose(self):
        pass


def test_the_service_lifespan_runs_the_watcher(rig):
    ra = _ra(rig)
    pub = Recording()
    app = create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, publisher=pub, clock=rig.clock,
                                   keyset_watch_s=0.05))
    with TestClient(app):
        time.sleep(0.2)
        ra.rotate(servicekeys.RA)
        deadline = time.monotonic() + 20
        while not pub.keysets and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pub.keysets == [2]
    n = len(pub.keysets)
    ra.rotate(servicekeys.RA)
    time.sleep(0.2)
    assert len(pub.keysets) == n                        # stopped with the service


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_no_watcher_without_a_broker(rig, monkeypatch):
    started = []
    real = watch_keysets

    async def spy(*a):
        started.append(a)
        await real(*a)
    monkeypatch.setattr("capwarden.trust.service.watch_keysets", spy)
    with TestClient(create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, clock=rig.clock))):
        pass
    assert started == []
    with TestClient(create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, clock=rig.clock, publisher=Recording(),
                                             keyset_watch_s=0.05))):
        time.sleep(0.1)
    assert len(started) == 1 and started[0][2] == 0.05
