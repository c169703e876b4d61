"""Batch ticket issuance (POST /v1/tickets/batch, Issuer.issue_tickets) on both backends: every
ticket answered is recorded and verifies on a terminal, the batch is recorded all or nothing,
the policy and the terminal checks apply to each request with a per-item refusal, and the
limits (empty, too many, not a list, the authorizer itself refused) refuse the whole batch."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from capwarden.credentials.ids import new_fay_id, new_terminal_id
from capwarden.trust import issuance, models
from capwarden.trust.config import ServiceConfig
from capwarden.trust.errors import Forbidden, InvalidRequest, Unauthenticated
from capwarden.trust.service import create_app

from issuerig import HOUR, NOW, SQLITE_ONLY, rig  # noqa: F401  (rig is a fixture)


def _recorded(rig):
    with rig.db.transaction(write=False) as s:
        return {t.jti: t for t in s.scalars(sa.select(models.IssuedTicket))}


def test_a_batch_issues_and_records_every_ticket_in_order(rig):
    bodies = [rig.ticket_body(valid_for_s=HOUR + i) for i in range(20)]
    results = rig.issuer.issue_tickets(rig.token, bodies)
    assert len(results) == 20 and all(set(r) == {"ticket", "jti", "exp"} for r in results)
    assert [r["exp"] for r in results] == [NOW + HOUR + i for i in range(20)]
    assert len({r["jti"] for r in results}) == 20
    rows = _recorded(rig)
    assert set(rows) == {r["jti"] for r in results}
    for r in results:
        assert rows[r["jti"]].ticket == r["ticket"] and rows[r["jti"]].authorizer_id == rig.aid
        assert rig.check_ticket(r["ticket"]).granted
    listed = {t["jti"] for t in rig.issuer.list_tickets(rig.token)}
    assert listed == set(rows)


def test_policy_and_request_checks_refuse_each_item_on_its_own(rig):
    other_fay = new_fay_id()
    token = rig.authorizer("narrow", fays=(rig.fay,), max_validity_s=HOUR)
    blocked = new_terminal_id()
    rig.issuer.terminal_states = lambda s, ids: {tid: "suspended" if tid == blocked else None for tid in ids}
    bodies = [rig.ticket_body(),                                                    # ok
              rig.ticket_body(fay_id=other_fay),                                    # beyond the policy: Fay
              rig.ticket_body(valid_for_s=HOUR + 1),                                # beyond: validity
              rig.ticket_body(valid_for_s="60"),                                    # malformed
              {"fay_id": rig.fay},                                                  # fields missing
              "not an object",
              rig.ticket_body(terminal_id=blocked, grants=rig.grants(tid=blocked)),  # suspended terminal
              rig.ticket_body(valid_for_s=60)]                                      # ok
    results = rig.issuer.issue_tickets(token, bodies)
    assert [r.get("status") for r in results] == [None, 403, 403, 400, 400, 400, 403, None]
    assert "fay_ids" in results[1]["message"] and "max_validity_s" in results[2]["message"]
    assert results[6]["message"].endswith("suspended: no credential is issued for it")
    assert all(set(r) == {"error", "message", "status"} for r in results if "status" in r)
    assert set(_recorded(rig)) == {results[0]["jti"], results[7]["jti"]}


def test_a_batch_is_recorded_all_or_nothing(rig, monkeypatch):
    """The third ticket takes the first one's jti: the database refuses the duplicate and
    nothing of the batch is recorded, and nothing is handed out."""
    real = issuance.issue.ticket_claims
    made = []

    def claims(*a, **kw):
        c = real(*a, **kw)
        if len(made) == 2:
            c["jti"] = made[0]
        made.append(c["jti"])
        return c
    monkeypatch.setattr(issuance.issue, "ticket_claims", claims)
    with pytest.raises(sa.exc.IntegrityError):
        rig.issuer.issue_tickets(rig.token, [rig.ticket_body() for _ in range(5)])
    monkeypatch.undo()
    assert _recorded(rig) == {}
    assert len(rig.issuer.issue_tickets(rig.token, [rig.ticket_body()] * 3)) == 3 and len(_recorded(rig)) == 3


@SQLITE_ONLY
@pytest.mark.parametrize("bodies, match", [([], "non-empty"), ({"a": 1}, "non-empty"),
                                           (None, "non-empty"),
                                           ("many", "non-empty")])
def test_not_a_list_or_empty_is_refused(rig, bodies, match):
    with pytest.raises(InvalidRequest, match=match):
        rig.issuer.issue_tickets(rig.token, bodies)


def test_over_the_batch_limit_is_refused_whole(rig, monkeypatch):
    monkeypatch.setattr(issuance, "MAX_BATCH", 4)
    with pytest.raises(InvalidRequest, match="at most 4"):
        rig.issuer.issue_tickets(rig.token, [rig.ticket_body()] * 5)
    assert len(rig.issuer.issue_tickets(rig.token, [rig.ticket_body()] * 4)) == 4
    assert len(_recorded(rig)) == 4


def test_the_authorizer_itself_refused_refuses_the_batch(rig):
    with pytest.raises(Unauthenticated):
        rig.issuer.issue_tickets("not-a-token", [rig.ticket_body()])
    issuance.suspend_authorizer(rig.db, "alice")
    with pytest.raises(Forbidden, match="suspended"):
        rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])
    assert _recorded(rig) == {}


@SQLITE_ONLY
def test_batch_route_over_http(rig):
    app = create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, clock=rig.clock))
    auth = {"Authorization": "Bearer " + rig.token}
    with TestClient(app) as client:
        r = client.post("/v1/tickets/batch", json={"requests": [rig.ticket_body(), rig.ticket_body(valid_for_s=0)]},
                        headers=auth)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert set(results[0]) == {"ticket", "jti", "exp"} and rig.check_ticket(results[0]["ticket"]).granted
        assert results[1]["status"] == 400 and results[1]["error"] == "bad_request"
        assert set(_recorded(rig)) == {results[0]["jti"]}
        for body, status in (({"requests": []}, 400), ({"requests": "x"}, 422), ({}, 422),
                             ({"requests": [rig.ticket_body()], "more": 1}, 422)):
            r = client.post("/v1/tickets/batch", json=body, headers=auth)
            assert r.status_code == status and r.json()["error"] == "bad_request", (body, r.text)
        r = client.post("/v1/tickets/batch", content=b"{not json", headers=auth)
        assert r.status_code == 422 and r.json()["error"] == "bad_request"
        r = client.post("/v1/tickets/batch", json={"requests": [rig.ticket_body()]})
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
        spec = client.get("/openapi.json").json()
        batch = spec["paths"]["/v1/tickets/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert batch["properties"]["requests"]["maxItems"] == issuance.MAX_BATCH
    assert len(_recorded(rig)) == 1


def test_recorded_rows_keep_every_character_on_each_backend(rig):
    """The batch's records go in through COPY on PostgreSQL (trust.db.insert_rows): constraint
    values with tabs, newlines, backslashes, quotes and non-ASCII text come back as signed."""
    odd = {"note": "tab\there\nnew line \\ back\\slash \"quoted\" \u00e9t\u00e9 \u2603", "empty": ""}
    grants = [dict(rig.grants()[0], constraints=odd)]
    results = rig.issuer.issue_tickets(rig.token, [rig.ticket_body(grants=grants), rig.ticket_body()])
    rows = _recorded(rig)
    import json
    assert json.loads(rows[results[0]["jti"]].grants)[0]["constraints"] == odd
    assert rows[results[0]["jti"]].ticket == results[0]["ticket"]
    assert json.loads(rows[results[1]["jti"]].grants) == rig.grants()


def test_insert_rows_reports_a_duplicate_as_an_integrity_error(rig):
    """COPY's errors come out as SQLAlchemy's (Database.run retries by them), and the
    transaction leaves nothing behind."""
    from capwarden.trust.db import insert_rows

    rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])
    (row,) = _recorded(rig).values()
    copy = {c.name: getattr(row, c.name) for c in models.IssuedTicket.__table__.columns}
    fresh = dict(copy, jti="0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    with pytest.raises(sa.exc.IntegrityError):
        rig.db.run(lambda s: insert_rows(s, models.IssuedTicket.__table__, [fresh, copy]))
    assert set(_recorded(rig)) == {row.jti}
    rig.db.run(lambda s: insert_rows(s, models.IssuedTicket.__table__, [fresh]))
    assert set(_recorded(rig)) == {row.jti, fresh["jti"]}


def test_a_grant_list_parsed_once_is_still_checked_against_each_authorizers_policy(rig):
    """Grant lists are parsed once and a policy remembers the lists it covers: a list another
    authorizer may have is still refused to one whose policy does not cover it, in the same
    batch and the next; and a malformed list is never remembered."""
    narrow = rig.authorizer("readers", grants=(("sim/**", ("read",)),))
    rw = rig.grants(modes=("read", "write"))
    assert "jti" in rig.issuer.issue_tickets(rig.token, [rig.ticket_body(grants=rw)])[0]
    for _ in range(2):
        out = rig.issuer.issue_tickets(narrow, [rig.ticket_body(grants=rw), rig.ticket_body()])
        assert out[0]["status"] == 403 and "mode write" in out[0]["message"] and "jti" in out[1]
    bad = [{"resource_pattern": rig.grants()[0]["resource_pattern"], "modes": ["read", "read"]}]
    for _ in range(2):
        out = rig.issuer.issue_tickets(rig.token, [rig.ticket_body(grants=bad)])
        assert out[0]["status"] == 400 and "twice" in out[0]["message"]
    assert issuance._plain_grants_key(bad) not in issuance._PARSED


def _after_first_signature(monkeypatch, action):
    """Run `action` once, right after the first ticket of the next group is signed (between
    the issuer's signing transaction and its recording one)."""
    real = issuance.Issuer._sign_ticket
    done = []

    def sign(*a, **kw):
        out = real(*a, **kw)
        if not done:
            done.append(1)
            action()
        return out
    monkeypatch.setattr(issuance.Issuer, "_sign_ticket", staticmethod(sign))


def test_an_authorizer_suspended_while_its_batch_is_signed_gets_nothing(rig, monkeypatch):
    """The checks are made again in the transaction that records the tickets: an authorizer
    suspended after the batch was signed gets the refusal, and nothing is recorded."""
    _after_first_signature(monkeypatch, lambda: issuance.suspend_authorizer(rig.db, "alice"))
    with pytest.raises(Forbidden, match="suspended"):
        rig.issuer.issue_tickets(rig.token, [rig.ticket_body() for _ in range(5)])
    assert _recorded(rig) == {}


def test_a_terminal_suspended_while_a_group_is_signed_gets_nothing(rig, monkeypatch):
    blocked = new_terminal_id()
    states = {}
    rig.issuer.terminal_states = lambda s, ids: {t: states.get(t) for t in ids}
    _after_first_signature(monkeypatch, lambda: states.update({blocked: "suspended"}))
    out = rig.issuer.issue_group([(rig.token, rig.ticket_body(terminal_id=blocked, grants=rig.grants(tid=blocked))),
                                  (rig.token, rig.ticket_body())])
    assert isinstance(out[0], Forbidden) and "suspended" in str(out[0]) and "jti" in out[1]
    assert set(_recorded(rig)) == {out[1]["jti"]}


def test_a_policy_narrowed_while_a_batch_is_signed_is_the_policy_applied(rig, monkeypatch):
    """A decision taken while signing is reused at recording only when the authorizer's policy
    and the terminal's state are what they were; a policy changed in between is applied."""
    import json

    from issuerig import policy

    narrow = json.dumps(policy(grants=(("sim/**", ("read",)),)))

    def narrow_it():
        with rig.db.transaction() as s:
            s.execute(sa.update(models.Authorizer).where(models.Authorizer.name == "alice").values(policy=narrow))
    _after_first_signature(monkeypatch, narrow_it)
    out = rig.issuer.issue_tickets(rig.token, [rig.ticket_body(grants=rig.grants(modes=("read", "write"))),
                                               rig.ticket_body()])
    assert out[0]["status"] == 403 and "mode write" in out[0]["message"] and "jti" in out[1]
    assert set(_recorded(rig)) == {out[1]["jti"]}


def test_a_group_is_signed_on_the_last_groups_findings_and_recorded_on_a_fresh_read(rig, monkeypatch):
    """The signing step of a group reuses what the last recording transaction found (under a
    second old, allowing answers only), so it reads nothing; the recording step always reads:
    an authorizer suspended after the last group still gets nothing, and once resumed is served
    again at once (a refusal is never taken from those findings)."""
    reads = []
    real = rig.db.run

    def run(fn, *a, write=True, **kw):
        reads.append(write)
        return real(fn, *a, write=write, **kw)
    monkeypatch.setattr(rig.db, "run", run)
    assert "jti" in rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])[0]
    assert reads == [False, True]                      # nothing found before: read, then record
    del reads[:]
    assert "jti" in rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])[0]
    assert reads == [True]                             # signed on the findings; recorded on a read
    issuance.suspend_authorizer(rig.db, "alice")
    with pytest.raises(Forbidden, match="suspended"):
        rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])
    issuance.set_authorizer_status(rig.db, "alice", "active")
    assert "jti" in rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])[0]
    assert len(_recorded(rig)) == 3


def test_a_terminal_suspended_after_the_last_group_gets_nothing_and_resumed_is_served(rig):
    states = {}
    rig.issuer.terminal_states = lambda s, ids: {t: states.get(t) for t in ids}
    body = rig.ticket_body()
    assert "jti" in rig.issuer.issue_tickets(rig.token, [body])[0]
    states[rig.tid] = "suspended"
    out = rig.issuer.issue_tickets(rig.token, [body])
    assert out[0]["status"] == 403 and "suspended" in out[0]["message"]
    states[rig.tid] = "registered"
    assert "jti" in rig.issuer.issue_tickets(rig.token, [body])[0]
    assert len(_recorded(rig)) == 2
