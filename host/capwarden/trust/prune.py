"""Pruning the trust service's tables: records that can no longer matter (issue 13 follow-up).

Without it every ticket ever issued (its whole JWS), every revocation and every enrollment stays
in the database for good: a fleet issuing thousands of tickets a second fills a disk. What goes,
once it is `keep_s` (KEEP_S: 30 days) past the moment it stopped mattering, and why that is safe:

- issued tickets past `exp`, issued descriptors past `not_after`: a terminal refuses an expired
  credential whatever any list says, so nothing can use one or usefully revoke it. The record
  stays queryable (GET /v1/tickets, the ticket-status query) for `keep_s` after that. A kept
  descriptor whose renewal goes loses only the `superseded_by` link (its `superseded`
  revocation, kept as long as it is, still says so);
- revocations past `target_expires_at`: they have left every list already, full and delta
  (revocations.list_payload leaves out an entry whose credential expired), so no terminal can
  tell they are gone; the per-terminal list versions stay (a version never goes backwards);
- enrollments spent, or expired unspent, before the cut: a spent secret can never be used again
  and an expired one never could (registry.enroll checks both first).

Deletes go in batches of `batch` rows, one short transaction each, so that SQLite's one writer
is never held for long while the service issues. `capwarden trust prune` runs it (with
--dry-run to count only); `capwarden trust serve` runs it once an hour (serve --prune-every).
"""

import sqlalchemy as sa

from capwarden.trust.authorizers import now_s
from capwarden.trust.models import IssuedDescriptor, IssuedTicket, Revocation
from capwarden.trust.models_registry import Enrollment
from capwarden.trust.periods import KEEP_S

BATCH = 5000                # rows a transaction

# (what, table, primary key, the condition that makes a row prunable before `cut`)
_TABLES = (
    ("tickets", IssuedTicket, IssuedTicket.jti, lambda cut: IssuedTicket.exp < cut),
    ("descriptors", IssuedDescriptor, IssuedDescriptor.descriptor_id, lambda cut: IssuedDescriptor.not_after < cut),
    ("revocations", Revocation, Revocation.revocation_id, lambda cut: Revocation.target_expires_at < cut),
    ("enrollments", Enrollment, Enrollment.enrollment_id,
     lambda cut: sa.or_(Enrollment.used_at < cut, sa.and_(Enrollment.used_at.is_(None), Enrollment.expires_at < cut))),
)


def prune(db, now=None, keep_s=KEEP_S, batch=BATCH, dry_run=False, progress=None):
    """Delete what `keep_s` past its end can no longer matter (module docstring). Returns
    {"tickets", "descriptors", "revocations", "enrollments": rows deleted (or, dry_run, that
    would be)}. progress(what, deleted so far) after each batch. Raises ValueError for a
    negative keep_s, the database's errors as they come (what was deleted is committed)."""
    if type(keep_s) is not int or keep_s < 0:
        raise ValueError("keep_s is a number of seconds >= 0")
    cut = (now_s() if now is None else now) - keep_s
    out = {}
    for what, table, pk, old in _TABLES:
        if dry_run:
            out[what] = db.run(lambda s: s.scalar(sa.select(sa.func.count()).select_from(table).where(old(cut))),
                               write=False)
            continue
        total = 0
        while True:
            n = db.run(_delete_batch, table, pk, old(cut), batch)
            total += n
            if progress is not None and n:
                progress(what, total)
            if n < batch:
                break
        out[what] = total
    return out


def _delete_batch(s, table, pk, condition, batch):
    ids = list(s.scalars(sa.select(pk).where(condition).limit(batch)))
    if not ids:
        return 0
    if table is IssuedDescriptor:
        # A renewal that goes leaves the descriptor it renewed (if that one stays) unlinked.
        s.execute(sa.update(IssuedDescriptor).where(IssuedDescriptor.superseded_by.in_(ids))
                  .values(superseded_by=None))
    s.execute(sa.delete(table).where(pk.in_(ids)))
    return len(ids)
