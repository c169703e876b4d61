"""Issue 14 wiring: the config file's "trust" section, `--trust URL`, and the refusals at start
(no enrollment, an enrollment or a state of another terminal)."""

import json
import os

import pytest
from onlinerig import TrustService, enroll, settings

from capwarden.engine import config, online
from capwarden.errors import UsageError


def write(tmp_path, obj):
    path = str(tmp_path / "engine.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    return path


def test_the_trust_section_is_read_with_its_defaults(tmp_path):
    conf = config.load(write(tmp_path, {"trust": {"url": "https://trust.example", "unreachable_s": 10,
                                                  "revocation_query": {"enabled": True, "cache_s": 120}}}))
    t = conf.trust
    assert (t.url, t.unreachable_s, t.query_timeouts, t.offline_tickets) == ("https://trust.example", 10, 3, "reject")
    assert t.revocation_query.enabled and t.revocation_query.cache_s == 120 and t.revocation_query.timeout_s == 2.0
    assert config.load(write(tmp_path, {})).trust is None
    assert online.with_url(None, "https://x").url == "https://x"
    assert online.with_url(t, "https://y")._replace(url=t.url) == t


@pytest.mark.parametrize("trust,match", [
    ({"url": "https://t", "colour": 1}, "only"),
    ({"url": "https://t", "query_timeouts": 0}, "query_timeouts"),
    ({"url": "https://t", "poll_min_s": 40}, "poll_min_s"),
    ({"url": "https://t", "offline_tickets": "sometimes"}, "offline_tickets"),
    ({"url": "https://t", "unreachable_s": -1}, "unreachable_s"),
    ({"url": "https://t", "revocation_query": {"cache_s": 600}}, "5 minutes"),
    ({"url": 7}, "url"),
])
def test_a_bad_trust_section_is_refused(tmp_path, trust, match):
    with pytest.raises(UsageError, match=match):
        config.load(write(tmp_path, {"trust": trust}))


@pytest.fixture
def svc(tmp_path):
    return TrustService(str(tmp_path))


def test_no_enrollment_and_no_registration_is_said_at_start(run, world, in_process):
    async def main():
        with pytest.raises(UsageError, match="enrollment.json"):
            await in_process(trust=settings(world))

    run(main())


def test_an_enrollment_for_another_terminal_is_refused(run, world, svc, in_process):
    from capwarden.credentials.ids import new_terminal_id

    en = svc.ra.enroll(terminal_id=new_terminal_id())
    folder = os.path.join(world.store, "trust")
    os.makedirs(folder, mode=0o700)
    with open(os.path.join(folder, online.ENROLLMENT), "w") as f:
        json.dump(en, f)

    async def main():
        with pytest.raises(UsageError, match="not for this store's terminal"):
            await in_process(trust=settings(world))

    run(main())


def test_the_app_starts_and_stops_its_link(run, world, svc, in_process):
    enroll(world, svc)

    async def main():
        app = await in_process(trust=settings(world), trust_options={"http": svc.terminal_http()})
        assert app.online is not None and app.online._task is not None
        link = app.online
        await app.stop()
        assert app.online is None and link._task is None

    run(main())
