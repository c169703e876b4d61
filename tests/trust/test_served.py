"""The revocation-list version served to each terminal (trust.served, for `capwarden trust
status`): noted by the list route, written in one transaction a flush, never lowered, kept when
a flush fails, and written at the service's shutdown."""

import pytest
import sqlalchemy as sa
from capwarden.trust import served as served_module
from capwarden.trust.served import ServedVersions

from issuerig import rig  # noqa: F401  (rig is a fixture)
from test_service_http import Http


def _served(rig):
    with rig.db.transaction(write=False) as s:
        return dict(s.execute(sa.text("SELECT terminal_id, revocations_served FROM ra_terminals")).all())


def test_the_list_route_records_the_version_served(rig, monkeypatch):
    monkeypatch.setattr(served_module, "FLUSH_S", 3600)      # flushed by hand here, and at shutdown
    h = Http(rig)
    with h.client:
        token = h.register()
        assert _served(rig) == {rig.tid: 0}
        for _ in range(2):
            h.post("/revocations", {"target_id": rig.ticket()["jti"]})
        r = h.get("/terminals/%s/revocations" % rig.tid, token=token)
        assert r.status_code == 200
        assert h.app.state.served._pending == {rig.tid: 2}
        h.app.state.served.flush()
        assert _served(rig) == {rig.tid: 2} and h.app.state.served._pending == {}
        h.get("/terminals/%s/revocations" % rig.tid, token=token, since=2)
        assert h.app.state.served._pending == {}             # nothing newer: no write at all
        h.post("/revocations", {"target_id": rig.ticket()["jti"]})
        h.get("/terminals/%s/revocations" % rig.tid, token=token, since=2)
    assert _served(rig) == {rig.tid: 3}                      # written at shutdown


def test_the_service_flushes_on_its_own(rig, monkeypatch):
    import time

    monkeypatch.setattr(served_module, "FLUSH_S", 0.05)
    h = Http(rig)
    with h.client:
        token = h.register()
        h.post("/revocations", {"target_id": rig.ticket()["jti"]})
        h.get("/terminals/%s/revocations" % rig.tid, token=token)
        deadline = time.monotonic() + 20
        while _served(rig) != {rig.tid: 1} and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _served(rig) == {rig.tid: 1}


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_notes_coalesce_never_lower_and_survive_a_failed_flush(rig, monkeypatch):
    h = Http(rig)
    with h.client:
        h.register()
    served = ServedVersions(rig.db)
    served.note(rig.tid, 5)
    served.note(rig.tid, 3)
    assert served.flush() == 1 and _served(rig) == {rig.tid: 5}
    served.note(rig.tid, 4)
    served.flush()
    assert _served(rig) == {rig.tid: 5}                       # never lowered
    served.note(rig.tid, 7)

    def broken(*a, **kw):
        raise sa.exc.OperationalError("UPDATE", {}, Exception("disk I/O error"))
    monkeypatch.setattr(rig.db, "run", broken)
    with pytest.raises(sa.exc.OperationalError):
        served.flush()
    monkeypatch.undo()
    assert served._pending == {rig.tid: 7}
    served.flush()
    assert _served(rig) == {rig.tid: 7}
