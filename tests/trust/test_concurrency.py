"""Two `capwarden trust serve` processes on one PostgreSQL database (issue 13), issuing and
revoking at once for the same terminals: no duplicated id, no lost revocation, a credential
revoked through both at the same moment revoked exactly once, and each terminal's revocation
list versions 1..N with no gap and no duplicate, the same list served by both processes.

Sizes: 80 tickets, or 400 under CAPWARDEN_CHAOS=1.
"""

import asyncio
import os
import random

import httpx
import sqlalchemy as sa

import trustrig
from capwarden.credentials import cbor
from capwarden.credentials.b64 import b64u_decode
from capwarden.credentials.ids import uuid_text
from capwarden.credentials.issue import SigningKey
from capwarden.credentials.revocation import MAX_STATEMENT
from capwarden.trust import keysets, registry, signed
from capwarden.trust.db import open_db
from capwarden.trust.servicekeys import KeyRing, ring_folder

TICKETS = 400 if os.environ.get("CAPWARDEN_CHAOS") == "1" else 80
RACED = TICKETS // 8           # tickets revoked through both processes at the same moment
WORKERS = 4                    # per process


def _register(url, data, n):
    """n terminals registered with the RA: [(terminal_id, token)]."""
    db = open_db(url)
    ring = KeyRing.open(ring_folder(data))
    out = []
    try:
        for _ in range(n):
            device = SigningKey.generate("ed25519", "device", "device")

            def reg(s):
                secret = registry.enroll(s, ring)["enrollment_secret"]
                return registry.register(s, ring, secret, keysets.device_key_json(device),
                                         keysets.sign_proof(device, secret))
            r = db.run(reg)
            out.append((r["terminal_id"], r["token"]))
    finally:
        db.dispose()
    return out


async def _scenario(urls, token, terminals):
    issued = []                       # (jti, ticket, which process)
    revoked = []                      # (jti, revocation_id, terminal_id, version, which process)
    refused = []                      # (jti, status) of the losing side of a raced revocation
    queue = asyncio.Queue()
    for i in range(TICKETS):
        queue.put_nowait(i)

    async with httpx.AsyncClient(timeout=120) as client:
        async def issue(side):
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                tid = random.choice(terminals)
                r = await client.post(urls[side] + "/v1/tickets", json=trustrig.ticket_body(tid),
                                      headers=trustrig.auth(token))
                assert r.status_code == 200, r.text
                issued.append((r.json()["jti"], r.json()["ticket"], side))

        async def revoke(side, jti):
            r = await client.post(urls[side] + "/v1/revocations", json={"target_id": jti},
                                  headers=trustrig.auth(token))
            if r.status_code != 200:
                refused.append((jti, r.status_code, r.json().get("error")))
                return
            out = r.json()
            (tid, version), = out["versions"].items()
            revoked.append((jti, out["revocation"]["revocation_id"], tid, version, side))

        # Issue through both at once.
        await asyncio.gather(*(issue(side) for side in (0, 1) for _ in range(WORKERS)))
        # Revoke through both at once: each ticket through the process that did not issue it,
        # and RACED of them through both processes at the same moment.
        order = list(issued)
        random.shuffle(order)
        raced, single = order[:RACED], order[RACED:]
        jobs = [revoke(1 - side, jti) for jti, _t, side in single]
        jobs += [revoke(s, jti) for jti, _t, _side in raced for s in (0, 1)]
        random.shuffle(jobs)
        sem = asyncio.Semaphore(2 * WORKERS)

        async def limited(job):
            async with sem:
                await job
        await asyncio.gather(*(limited(j) for j in jobs))
    return issued, revoked, refused, {jti for jti, _t, _s in raced}


async def _lists(urls, terminals):
    """{terminal_id: [payload from process 0, payload from process 1]} of the full lists, and
    every delta from each version, from alternating processes."""
    out = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for tid, tok in terminals:
            fulls = []
            for u in urls:
                r = await client.get(u + "/v1/terminals/%s/revocations" % tid, headers=trustrig.auth(tok))
                assert r.status_code == 200, r.text
                fulls.append(signed.payload_of(r.json(), signed.REVOCATION_LIST))
            deltas = []
            for since in range(1, fulls[0]["version"]):
                r = await client.get(urls[since % 2] + "/v1/terminals/%s/revocations?since=%d" % (tid, since),
                                     headers=trustrig.auth(tok))
                deltas.append((since, signed.payload_of(r.json(), signed.REVOCATION_LIST)))
            out[tid] = (fulls, deltas)
    return out


def _target(entry):
    """The credential id a list entry (a RevocationStatement) revokes."""
    raw = b64u_decode(entry) if isinstance(entry, str) else entry
    return uuid_text(cbor.decode(raw, MAX_STATEMENT)["target_descriptor_id"])


def test_two_service_processes_on_one_postgresql(pg_server, tmp_path):
    url = pg_server.create_database()
    data = str(tmp_path / "trust")
    token = trustrig.init(data, url)["authorizer"]["token"]
    terminals = _register(url, data, 4)
    tids = [t for t, _tok in terminals]
    a, b = trustrig.Serve(data), trustrig.Serve(data)
    try:
        issued, revoked, refused, raced = asyncio.run(_scenario([a.url, b.url], token, tids))
        lists = asyncio.run(_lists([a.url, b.url], terminals))
    finally:
        a.stop()
        b.stop()

    # No duplicated id: every ticket answered is a distinct jti, recorded as it was answered.
    jtis = [j for j, _t, _s in issued]
    assert len(jtis) == TICKETS and len(set(jtis)) == TICKETS
    assert {s for _j, _t, s in issued} == {0, 1}                         # both processes issued
    db = open_db(url)
    try:
        with db.engine.connect() as conn:
            recorded = dict(conn.execute(sa.text("SELECT jti, ticket FROM issued_tickets")).all())
            rows = conn.execute(sa.text("SELECT target_id, revocation_id, terminal_id, list_version "
                                        "FROM revocations")).all()
    finally:
        db.dispose()
    assert recorded == {j: t for j, t, _s in issued}

    # No lost revocation, none twice: every ticket revoked exactly once; of a raced pair one
    # process answered and the other refused it as already revoked.
    assert sorted(j for j, *_ in revoked) == sorted(jtis)
    assert len({r for _j, r, *_ in revoked}) == TICKETS                  # distinct revocation ids
    assert sorted(j for j, *_ in refused) == sorted(raced) and all(st == 409 for _j, st, _e in refused), refused
    assert {tuple(r) for r in rows} == {(j, rid, tid, v) for j, rid, tid, v, _s in revoked}

    # Each terminal's versions: 1..N, no gap, no duplicate, and each answered once.
    for tid in tids:
        vs = sorted(v for _j, _r, t, v, _s in revoked if t == tid)
        assert vs == list(range(1, len(vs) + 1)), (tid, vs)
        fulls, deltas = lists[tid]
        assert fulls[0]["version"] == fulls[1]["version"] == len(vs)
        mine = {j for j, _r, t, _v, _s in revoked if t == tid}
        for full in fulls:                                               # the same list from both
            assert full["base"] == 0 and sorted(_target(e) for e in full["entries"]) == sorted(mine)
        by_version = {v: j for j, _r, t, v, _s in revoked if t == tid}
        for since, delta in deltas:
            assert delta["base"] == since and delta["version"] == len(vs)
            assert [_target(e) for e in delta["entries"]] == [by_version[v] for v in range(since + 1, len(vs) + 1)]
