"""Group commit of single ticket requests (trust.groupcommit.GroupIssuer, behind POST
/v1/tickets) on both backends: requests arriving together share a transaction yet each gets its
own checks and answer; a failed commit fails the whole group and records none of it."""

import asyncio

import pytest
import sqlalchemy as sa

from capwarden.credentials.ids import new_fay_id
from capwarden.trust import issuance, models
from capwarden.trust.errors import Forbidden, InvalidRequest, Unauthenticated
from capwarden.trust.groupcommit import GroupIssuer

from issuerig import HOUR, NOW, rig  # noqa: F401  (rig is a fixture)


def _recorded(rig):
    with rig.db.transaction(write=False) as s:
        return set(s.scalars(sa.select(models.IssuedTicket.jti)))


def _gather(group, calls):
    async def main():
        return await asyncio.gather(*(group.issue(t, b) for t, b in calls), return_exceptions=True)
    return asyncio.run(main())


def test_a_lone_request_is_committed_at_once(rig):
    group = GroupIssuer(rig.issuer)
    out = _gather(group, [(rig.token, rig.ticket_body())])[0]
    assert group.commits == 1 and _recorded(rig) == {out["jti"]} and rig.check_ticket(out["ticket"]).granted


def test_concurrent_requests_share_commits_and_keep_their_own_answers(rig):
    narrow = rig.authorizer("narrow", fays=(rig.fay,), max_validity_s=HOUR)
    calls = [(rig.token, rig.ticket_body(valid_for_s=60 + i)) for i in range(30)]
    calls += [(narrow, rig.ticket_body(fay_id=new_fay_id())),      # beyond its policy
              ("not-a-token", rig.ticket_body()),                   # unknown token
              (narrow, rig.ticket_body(valid_for_s=0)),             # malformed
              (narrow, rig.ticket_body())]                          # fine
    group = GroupIssuer(rig.issuer)
    results = _gather(group, calls)
    assert group.commits < len(calls)                 # shared: 34 requests ready together
    assert [r["exp"] for r in results[:30]] == [NOW + 60 + i for i in range(30)]
    assert isinstance(results[30], Forbidden) and "fay_ids" in str(results[30])
    assert isinstance(results[31], Unauthenticated)
    assert isinstance(results[32], InvalidRequest)
    assert rig.check_ticket(results[33]["ticket"]).granted
    issued = {r["jti"] for r in results if isinstance(r, dict)}
    assert len(issued) == 31 and _recorded(rig) == issued


def test_groups_are_bounded(rig):
    group = GroupIssuer(rig.issuer, max_group=4)
    results = _gather(group, [(rig.token, rig.ticket_body())] * 10)
    assert all(isinstance(r, dict) for r in results) and group.commits == 3 and len(_recorded(rig)) == 10


def test_a_failed_commit_fails_the_whole_group_and_records_nothing(rig, monkeypatch):
    real = issuance.issue.ticket_claims
    made = []

    def claims(*a, **kw):
        c = real(*a, **kw)
        if len(made) == 3:
            c["jti"] = made[0]         # a duplicated id: the database refuses the group's INSERT
        made.append(c["jti"])
        return c
    monkeypatch.setattr(issuance.issue, "ticket_claims", claims)
    group = GroupIssuer(rig.issuer)
    results = _gather(group, [(rig.token, rig.ticket_body())] * 6)
    assert group.commits == 1 and all(isinstance(r, sa.exc.IntegrityError) for r in results)
    assert _recorded(rig) == set()
    monkeypatch.undo()
    assert isinstance(_gather(group, [(rig.token, rig.ticket_body())])[0], dict) and len(_recorded(rig)) == 1


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_the_http_route_answers_as_before(rig):
    """POST /v1/tickets through the group: the same answer and error shape as one at a time."""
    from fastapi.testclient import TestClient

    from capwarden.trust.config import ServiceConfig
    from capwarden.trust.service import create_app

    app = create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, clock=rig.clock))
    with TestClient(app) as client:
        r = client.post("/v1/tickets", json=rig.ticket_body(), headers={"Authorization": "Bearer " + rig.token})
        assert r.status_code == 200 and set(r.json()) == {"ticket", "jti", "exp"}
        r = client.post("/v1/tickets", json=rig.ticket_body(), headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and set(r.json()) == {"error", "message"}
        assert app.state.tickets.commits == 2
