"""Group commit of ticket batches (GroupIssuer(batches=True) behind POST /v1/tickets/batch,
Issuer.issue_batches) on both backends: batches arriving together share a transaction, each
keeps its own checks and answers (a batch refused as a whole still refuses only itself), groups
stay within MAX_BATCH tickets, and a failed commit records none of the group."""

import sqlalchemy as sa

from capwarden.credentials.ids import new_fay_id
from capwarden.trust import issuance, models
from capwarden.trust.errors import Forbidden, InvalidRequest, Unauthenticated
from capwarden.trust.groupcommit import GroupIssuer

from issuerig import NOW, rig  # noqa: F401  (rig is a fixture)
from test_groupcommit import _gather, _recorded


def test_concurrent_batches_share_one_commit_and_keep_their_own_answers(rig):
    narrow = rig.authorizer("narrow", fays=(rig.fay,))
    suspended = rig.authorizer("gone", fays=(rig.fay,))
    issuance.suspend_authorizer(rig.db, "gone")
    calls = [(rig.token, [rig.ticket_body(valid_for_s=60 + i) for i in range(5)]),
             ("not-a-token", [rig.ticket_body()]),                                 # unknown token: the batch
             (rig.token, []),                                                      # malformed batch
             (suspended, [rig.ticket_body()]),                                     # suspended authorizer
             (narrow, [rig.ticket_body(fay_id=new_fay_id()), rig.ticket_body()])]  # one item beyond policy
    group = GroupIssuer(rig.issuer, batches=True)
    results = _gather(group, calls)
    assert group.commits == 1
    assert [r["exp"] for r in results[0]] == [NOW + 60 + i for i in range(5)]
    assert isinstance(results[1], Unauthenticated)
    assert isinstance(results[2], InvalidRequest)
    assert isinstance(results[3], Forbidden)
    refused, fine = results[4]
    assert refused["error"] == "forbidden" and refused["status"] == 403 and "fay_ids" in refused["message"]
    assert rig.check_ticket(fine["ticket"]).granted
    issued = {r["jti"] for r in results[0] + [fine]}
    assert len(issued) == 6 and _recorded(rig) == issued


def test_batch_groups_stay_within_max_batch_tickets(rig):
    group = GroupIssuer(rig.issuer, max_group=5, batches=True)
    results = _gather(group, [(rig.token, [rig.ticket_body()] * 3)] * 4 + [(rig.token, [rig.ticket_body()] * 7)])
    assert [len(r) for r in results] == [3, 3, 3, 3, 7]
    assert group.commits == 5                      # 3+3 > 5: one batch a group; 7 alone though over
    assert len(_recorded(rig)) == 19


def test_a_failed_commit_fails_every_batch_of_the_group_and_records_nothing(rig, monkeypatch):
    real = issuance.issue.ticket_claims
    made = []

    def claims(*a, **kw):
        c = real(*a, **kw)
        if len(made) == 4:
            c["jti"] = made[0]         # a duplicated id in the second batch: the INSERT is refused
        made.append(c["jti"])
        return c
    monkeypatch.setattr(issuance.issue, "ticket_claims", claims)
    group = GroupIssuer(rig.issuer, batches=True)
    results = _gather(group, [(rig.token, [rig.ticket_body()] * 3)] * 2)
    assert group.commits == 1 and all(isinstance(r, sa.exc.IntegrityError) for r in results)
    assert _recorded(rig) == set()


def test_issue_tickets_alone_still_raises_for_the_batch(rig):
    for token, bodies, error in (("not-a-token", [rig.ticket_body()], Unauthenticated),
                                 (rig.token, "x", InvalidRequest),
                                 (rig.token, [rig.ticket_body()] * (issuance.MAX_BATCH + 1), InvalidRequest)):
        try:
            rig.issuer.issue_tickets(token, bodies)
        except error:
            continue
        raise AssertionError("no %s for %r" % (error.__name__, bodies))
    assert _recorded(rig) == set()
