"""Crash safety (issue 13): `capwarden trust serve` killed with SIGKILL while it issues tickets
and revokes them, again and again, on SQLite and on PostgreSQL. What the service answered is
what it committed: every ticket a client got is in the issuance record as it was handed out,
every revocation a client got is recorded with the version it was answered with, each
terminal's list versions run 1..N with no gap and no duplicate, and the database opens cleanly
for the next process (which must start and serve on it).

Kills per backend: 3, or 25 under CAPWARDEN_CHAOS=1 (make chaos).
"""

import asyncio
import os
import random
import signal

import httpx
import sqlalchemy as sa

import trustrig
from capwarden.trust.db import open_db

KILLS = 25 if os.environ.get("CAPWARDEN_CHAOS") == "1" else 3
TERMINALS = ["terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a%02x" % i for i in range(3)]
ISSUERS = 3
REVOKERS = 2


class Answered:
    """What clients were told, across every run of the service."""

    def __init__(self):
        self.tickets = {}          # jti -> the ticket text answered
        self.revocations = {}      # target jti -> (revocation_id, terminal_id, version)
        self.to_revoke = []        # answered tickets not yet sent for revocation

    def counts(self):
        return len(self.tickets), len(self.revocations)


async def _issue(client, url, token, seen, stop):
    while not stop.is_set():
        body = trustrig.ticket_body(random.choice(TERMINALS))
        try:
            r = await client.post(url + "/v1/tickets", json=body, headers=trustrig.auth(token))
        except httpx.HTTPError:
            return                                   # the service is gone: nothing was answered
        assert r.status_code == 200, r.text
        out = r.json()
        seen.tickets[out["jti"]] = out["ticket"]
        seen.to_revoke.append(out["jti"])


async def _revoke(client, url, token, seen, stop):
    while not stop.is_set():
        if not seen.to_revoke:
            await asyncio.sleep(0.005)
            continue
        jti = seen.to_revoke.pop(random.randrange(len(seen.to_revoke)))
        try:
            r = await client.post(url + "/v1/revocations", json={"target_id": jti, "reason": "compromised"},
                                  headers=trustrig.auth(token))
        except httpx.HTTPError:
            return
        assert r.status_code == 200, r.text
        out = r.json()
        (tid, version), = out["versions"].items()
        seen.revocations[jti] = (out["revocation"]["revocation_id"], tid, version)


async def _load_then_kill(serve, token, seen):
    """Issue and revoke from several clients at once; SIGKILL the service while both are in
    flight (once this run has answered some of each), then let the clients see it gone."""
    stop = asyncio.Event()
    start = seen.counts()
    async with httpx.AsyncClient(timeout=60) as client:
        tasks = [asyncio.ensure_future(_issue(client, serve.url, token, seen, stop)) for _ in range(ISSUERS)]
        tasks += [asyncio.ensure_future(_revoke(client, serve.url, token, seen, stop)) for _ in range(REVOKERS)]
        want = (random.randint(2, 10), random.randint(1, 6))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            t, r = seen.counts()
            if t - start[0] >= want[0] and r - start[1] >= want[1]:
                break
            if any(x.done() for x in tasks):
                for x in tasks:
                    if x.done():
                        x.result()                   # a client's assertion, said here
            await asyncio.sleep(0.002)
        else:
            raise AssertionError("the service answered too little in 60 s: %r" % (seen.counts(),))
        await asyncio.sleep(random.uniform(0, 0.03))
        serve.proc.send_signal(signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, serve.proc.wait, 30)
        stop.set()
        await asyncio.gather(*tasks)


def _check(url, seen):
    db = open_db(url)
    try:
        db.migrate()                                 # opens cleanly, and the schema is whole
        with db.engine.connect() as conn:
            if db.dialect == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            tickets = dict(conn.execute(sa.text("SELECT jti, ticket FROM issued_tickets")).all())
            revs = {row[0]: tuple(row[1:]) for row in conn.execute(sa.text(
                "SELECT target_id, revocation_id, terminal_id, list_version FROM revocations"))}
            versions = conn.execute(sa.text("SELECT terminal_id, list_version FROM revocations")).all()
            heads = dict(conn.execute(sa.text("SELECT terminal_id, version FROM revocation_list_versions")).all())
    finally:
        db.dispose()
    lost = [j for j, t in seen.tickets.items() if tickets.get(j) != t]
    assert not lost, "%d answered ticket(s) missing or changed after the kill: %s" % (len(lost), lost[:3])
    lost = [j for j, r in seen.revocations.items() if revs.get(j) != r]
    assert not lost, "%d answered revocation(s) missing or changed after the kill: %s" % (len(lost), lost[:3])
    per = {}
    for tid, v in versions:
        per.setdefault(tid, []).append(v)
    for tid, vs in per.items():
        assert sorted(vs) == list(range(1, len(vs) + 1)), (tid, sorted(vs))   # no gap, no duplicate
        assert heads[tid] == len(vs), (tid, heads[tid], len(vs))             # the head is the last one


def test_kill_9_during_issuance_and_revocation_loses_nothing_answered(db_url, tmp_path):
    data = str(tmp_path / "trust")
    dep = trustrig.init(data, db_url)
    token = dep["authorizer"]["token"]
    seen = Answered()
    for _ in range(KILLS):
        serve = trustrig.Serve(data, db_url)
        try:
            asyncio.run(_load_then_kill(serve, token, seen))
        finally:
            serve.stop()
        _check(db_url, seen)
    t, r = seen.counts()
    assert t >= 2 * KILLS and r >= KILLS
    # And the last database serves again: the record of a killed run is there to query.
    serve = trustrig.Serve(data, db_url)
    try:
        jti = next(iter(seen.revocations))
        r = httpx.get(serve.url + "/v1/tickets", headers=trustrig.auth(token), timeout=30)
        listed = {x["jti"]: x for x in r.json()["tickets"]}
        assert set(seen.tickets) <= set(listed) and "revoked_at" in listed[jti]
    finally:
        serve.stop()
