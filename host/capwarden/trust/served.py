"""Which revocation-list version each terminal was last served (`capwarden trust status`).

A revocation is fetched by its terminal once a list of at least its version went to that
terminal; being in touch with the service (a key-set check, a ticket-status query) is not
enough. The list route notes the version it served; the notes are written in one transaction
every FLUSH_S (a fleet fetching after a push would otherwise add a durable write per terminal
to every revocation), and at shutdown. A note lost in a crash only makes `status` report a
revocation as not fetched a little longer: the error is on the side of caution.
"""

import asyncio
import logging
import threading

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from capwarden.trust.models_registry import RegisteredTerminal

log = logging.getLogger("capwarden.trust.served")
FLUSH_S = 1.0


def record(session, served):
    """Raise ra_terminals.revocations_served to the versions of {terminal_id: version} (never
    lower it). One UPDATE per terminal in the caller's transaction."""
    t = RegisteredTerminal.__table__
    stmt = (sa.update(t).where(t.c.terminal_id == sa.bindparam("tid"), t.c.revocations_served < sa.bindparam("v"))
            .values(revocations_served=sa.bindparam("v")))
    session.connection().execute(stmt, [{"tid": tid, "v": v} for tid, v in sorted(served.items())])


class ServedVersions:
    """note(terminal_id, version) from the list route; flush() writes what was noted."""

    def __init__(self, db):
        self.db = db
        self._lock = threading.Lock()
        self._pending = {}

    def note(self, terminal_id, version):
        with self._lock:
            if version > self._pending.get(terminal_id, 0):
                self._pending[terminal_id] = version

    def flush(self):
        """Write the pending notes (blocking). Notes that fail to be written are kept."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            self.db.run(record, pending)
        except Exception:
            with self._lock:
                for tid, v in pending.items():
                    if v > self._pending.get(tid, 0):
                        self._pending[tid] = v
            raise
        return len(pending)

    async def run(self, every_s=None):
        """Flush every `every_s` seconds (default FLUSH_S) until cancelled."""
        failing = False
        while True:
            await asyncio.sleep(FLUSH_S if every_s is None else every_s)
            try:
                await run_in_threadpool(self.flush)
                failing = False
            except Exception as exc:   # noqa: BLE001 - kept for the next flush
                if not failing:
                    log.warning("recording the revocation-list versions served failed: %s", exc.__class__.__name__)
                failing = True
