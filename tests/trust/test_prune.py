"""Pruning the trust tables (trust.prune) on both backends: what goes is exactly what can no
longer matter, `keep_s` past its end; the revocation lists a terminal fetches are the same bytes
of entries before and after; a renewal's link does not stop a prune; batches; dry runs."""

import pytest
import sqlalchemy as sa

from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.trust import models, prune
from capwarden.trust.models_registry import Enrollment

from issuerig import HOUR, NOW, rig  # noqa: F401  (rig is a fixture)

KEEP = 7 * 86400


def _count(rig, table):
    with rig.db.transaction(write=False) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(table))


def _ids(rig, col):
    with rig.db.transaction(write=False) as s:
        return set(s.scalars(sa.select(col)))


def _enrollment(rig, created, expires, used=None):
    with rig.db.transaction() as s:
        s.add(Enrollment(enrollment_id=uuid_text(new_uuid7()), secret_sha256=new_uuid7() + new_uuid7(),
                         terminal_id=None, group_name=None, key_set_version=1, created_at=created,
                         expires_at=expires, used_at=used, used_by=None))


def test_prune_deletes_what_is_past_its_end_by_the_retention_and_keeps_the_rest(rig):
    short = rig.ticket(valid_for_s=HOUR)                       # ends NOW + 1 h
    long = rig.ticket(valid_for_s=7 * 86400)                   # ends NOW + 7 d
    gone = rig.descriptor(not_after=NOW + 86400)
    kept = rig.descriptor(not_after=NOW + 6 * 86400)
    rig.revocations.revoke(rig.token, {"target_id": short["jti"]})
    rig.revocations.revoke(rig.token, {"target_id": long["jti"]})
    _enrollment(rig, NOW, NOW + HOUR, used=NOW + 60)           # spent
    _enrollment(rig, NOW, NOW + HOUR)                          # expired unspent
    _enrollment(rig, NOW, NOW + 90 * 86400)                    # still usable

    at = NOW + 86400 + KEEP                                    # one day's ends are a week old, not one more second
    assert prune.prune(rig.db, now=at, keep_s=KEEP, dry_run=True) == {
        "tickets": 1, "descriptors": 0, "revocations": 1, "enrollments": 2}
    assert _count(rig, models.IssuedTicket) == 2              # a dry run deletes nothing
    assert prune.prune(rig.db, now=at + 1, keep_s=KEEP) == {
        "tickets": 1, "descriptors": 1, "revocations": 1, "enrollments": 2}
    assert _ids(rig, models.IssuedTicket.jti) == {long["jti"]}
    assert _ids(rig, models.IssuedDescriptor.descriptor_id) == {kept["descriptor_id"]}
    assert _ids(rig, models.Revocation.target_id) == {long["jti"]}
    assert _count(rig, Enrollment) == 1
    assert prune.prune(rig.db, now=at + 1, keep_s=KEEP) == dict.fromkeys(
        ("tickets", "descriptors", "revocations", "enrollments"), 0)


def test_the_lists_a_terminal_fetches_do_not_change(rig):
    """An entry pruned had already left full lists and deltas; the version does not go back."""
    a = rig.ticket(valid_for_s=HOUR)
    b = rig.ticket(valid_for_s=7 * 86400)
    rig.revocations.revoke(rig.token, {"target_id": a["jti"]})
    rig.revocations.revoke(rig.token, {"target_id": b["jti"]})
    rig.clock.now = NOW + 2 * HOUR + KEEP
    before = [rig.revocations.revocation_list_versioned(rig.tid, since) for since in (None, 1)]
    assert prune.prune(rig.db, now=rig.clock.now, keep_s=KEEP)["revocations"] == 1
    after = [rig.revocations.revocation_list_versioned(rig.tid, since) for since in (None, 1)]
    assert [v for _d, v in after] == [v for _d, v in before] == [2, 2]
    assert [d for d, _v in after] == [d for d, _v in before]      # same signed bytes (same clock)


def test_a_renewal_pruned_before_the_descriptor_it_renewed_leaves_it_unlinked(rig):
    old = rig.descriptor(not_after=NOW + 6 * 86400)
    new = rig.issuer.renew_descriptor(rig.token, old["descriptor_id"], {"not_after": NOW + 86400})
    prune.prune(rig.db, now=NOW + 86400 + KEEP + 1, keep_s=KEEP)
    with rig.db.transaction(write=False) as s:
        kept = s.get(models.IssuedDescriptor, old["descriptor_id"])
        assert kept is not None and kept.superseded_by is None
        assert s.get(models.IssuedDescriptor, new["descriptor_id"]) is None


def test_prune_goes_in_batches_of_short_transactions(rig, monkeypatch):
    for _ in range(5):
        rig.ticket(valid_for_s=HOUR)
    runs = []
    real = rig.db.run

    def run(fn, *a, **kw):
        runs.append(fn)
        return real(fn, *a, **kw)
    monkeypatch.setattr(rig.db, "run", run)
    seen = []
    out = prune.prune(rig.db, now=NOW + HOUR + KEEP + 1, keep_s=KEEP, batch=2,
                      progress=lambda what, n: seen.append((what, n)))
    assert out["tickets"] == 5 and seen == [("tickets", 2), ("tickets", 4), ("tickets", 5)]
    assert sum(1 for f in runs if f is prune._delete_batch) == 3 + 3     # 2+2+1 tickets, then one empty look per other table
    assert _count(rig, models.IssuedTicket) == 0


def test_a_negative_retention_is_refused(rig):
    with pytest.raises(ValueError):
        prune.prune(rig.db, keep_s=-1)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_the_service_prunes_on_its_own(rig):
    import time

    from fastapi.testclient import TestClient

    from capwarden.trust.config import ServiceConfig
    from capwarden.trust.service import create_app

    rig.ticket(valid_for_s=HOUR)
    keep = rig.ticket(valid_for_s=7 * 86400)
    config = ServiceConfig(db_url=rig.db.url, keys=rig.ring, clock=lambda: NOW + 2 * HOUR,
                           prune_every_s=0.05, prune_keep_s=HOUR // 2)
    with TestClient(create_app(config)):
        deadline = time.monotonic() + 30
        while _count(rig, models.IssuedTicket) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _ids(rig, models.IssuedTicket.jti) == {keep["jti"]}
