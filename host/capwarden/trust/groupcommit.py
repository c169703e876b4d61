"""Group commit of single ticket requests (POST /v1/tickets) in the trust service.

Each ticket must be recorded, durably, before its answer is sent (§4.2.2 step 8, issue 13 item
2). One transaction per request makes the commit's fsync the cost of a ticket (about 2.5 ms on
SQLite with synchronous=FULL, more on a durable PostgreSQL), whatever the signing costs. So the
requests that arrive together share one transaction, as the engine's audit log shares one
fdatasync between the decisions of one turn (engine/audit.py, AuditLog.durable):

- a request joins the pending group and waits for its answer;
- when no commit is running, the first one lets the event loop run the other ready requests
  (one `sleep(0)`, so an idle service adds no delay), then a worker thread issues the whole
  group in one transaction (Issuer.issue_group: each request gets exactly its own checks);
- requests arriving during that commit wait for the next one, which starts as soon as it ends.

A request refused on its own (policy, malformed, unknown token) gets its own error; a failed
commit fails every request of its group and hands out none of its tickets.

Batches (POST /v1/tickets/batch) are grouped the same way (Issuer.issue_batches), up to
MAX_BATCH tickets a group.

Two groups are in flight at most (DEPTH): the issuer signs a group in a reading transaction and
records it in a writing one (Issuer._issue, which checks each ticket again there), so the next
group is signed while the one before waits on its commit's fsync, and one core is not left
idle during every commit (on PostgreSQL a fifth of the time in a traced run, issue 13).
"""

import asyncio

from starlette.concurrency import run_in_threadpool

from capwarden.trust.issuance import MAX_BATCH

DEPTH = 2       # groups signed or committed at once


class GroupIssuer:
    """issue(token, body) -> the answer of POST /v1/tickets, group-committed. Owned by one
    event loop (the service's). With `batches`, issue(token, bodies) -> the answer list of
    POST /v1/tickets/batch (Issuer.issue_batches) instead. A group holds at most `max_group`
    tickets (a batch counts its requests; one entry at least)."""

    def __init__(self, issuer, max_group=MAX_BATCH, batches=False):
        self.issuer = issuer
        self.max_group = max_group
        self._issue_group = issuer.issue_batches if batches else issuer.issue_group
        self._size = _batch_size if batches else (lambda _body: 1)
        self._pending = []
        self._running = 0         # drains at work (at most DEPTH)
        self.commits = 0          # transactions run (for tests and the bench)

    async def issue(self, token, body):
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((token, body, fut))
        if self._running < DEPTH:
            self._running += 1
            asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self):
        try:
            await asyncio.sleep(0)      # the requests ready in this turn join the first group
            while self._pending:
                n = self._taken()
                group, self._pending = self._pending[:n], self._pending[n:]
                try:
                    results = await run_in_threadpool(self._issue_group, [(t, b) for t, b, _f in group])
                except asyncio.CancelledError:
                    for _t, _b, fut in group:
                        fut.cancel()
                    raise
                except Exception as exc:   # noqa: BLE001 - handed to every waiter: none got a ticket
                    for _t, _b, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                finally:
                    self.commits += 1
                for (_t, _b, fut), result in zip(group, results):
                    if fut.done():          # the caller went away: its ticket is recorded, not handed out
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
        except asyncio.CancelledError:
            for _t, _b, fut in self._pending:    # the service is stopping: nobody will drain them
                if not fut.done():
                    fut.cancel()
            self._pending = []
            raise
        finally:
            self._running -= 1

    def _taken(self):
        """How many pending entries the next group takes: up to max_group tickets, one at least."""
        total = 0
        for n, (_t, body, _f) in enumerate(self._pending):
            total += self._size(body)
            if total > self.max_group and n:
                return n
        return len(self._pending)


def _batch_size(bodies):
    return len(bodies) if type(bodies) is list else 1
