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
    rig.issuer.terminal_state = lambda s, tid: "suspended" if tid == blocked else None
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
