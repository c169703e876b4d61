"""Revocation propagation (issue 13): from a revocation posted to the trust service to each of
1,000 terminals having fetched, verified and applied it, through the MQTT push, against polling
alone at a 5 s interval, both measured in the same run.

What runs (all on this machine, two shared cores):
- the real service, `capwarden trust serve` on SQLite (one process, plain HTTP on loopback),
  pushing through a real mosquitto (`--mqtt`);
- N simulated terminals in this process, each a capwarden.trust.client.TrustClient with its own
  registration, token, state folder (on /dev/shm when there is one: the state's fsync is a
  terminal's own cost, not a fleet's) and key set; "lightweight": one process holds them all,
  over one shared HTTP connection pool, and their MQTT subscriptions share one broker
  connection per group of GROUP terminals (a subscription per terminal topic on that
  connection, so the broker still routes per terminal; 1,000 paho clients in one Python process
  would measure the process, not the propagation);
- an operator posting one revocation per terminal (a ticket issued to it), one after the other.

A terminal has applied its revocation when TrustClient.sync_revocations handed the verified
statement to its store callback (the list's signature, its version and base, and the
statement's own signature all checked). The time counted runs from just before the POST is sent
to that moment. Poll-only: the same terminals without push, each polling every 5 s from a random
phase (the phase a fleet would have), for a second round of revocations.
"""

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from bench import percentile, test_helper

N = int(os.environ.get("CAPWARDEN_BENCH_TERMINALS", "1000"))
GROUP = 100             # terminal subscriptions per broker connection
POLL_S = 5.0
TARGET_P99_MS = 1000
SETUP_CONCURRENCY = 32
POST_CONCURRENCY = 8    # revocations in flight at once: an operator revoking a batch
WAIT_S = 60.0           # a propagation not complete by then fails the benchmark


def _capwarden():
    exe = os.path.join(os.path.dirname(sys.executable), "capwarden")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "capwarden"]


class Fleet:
    def __init__(self, folder):
        self.folder = folder
        self.data = os.path.join(folder, "service")
        self.broker = None
        self.service = None
        self.url = None
        self.token = None

    # ---- the service and the broker ----------------------------------------------------
    def start(self):
        services = test_helper("trust", "services")
        self.broker = services.MosquittoBroker().start()
        out = subprocess.run(_capwarden() + ["trust", "init", "--data", self.data, "--issuer", "issuer:bench",
                                             "--json"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("capwarden trust init failed: %s" % out.stderr[-2000:])
        self.token = json.loads(out.stdout)["authorizer"]["token"]
        self.log = open(os.path.join(self.folder, "serve.log"), "wb")
        self.service = subprocess.Popen(
            _capwarden() + ["trust", "serve", "--data", self.data, "--listen", "127.0.0.1:0", "--mqtt", self.broker.url,
                            "--json", "-q"],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.service.stdout.readline()
        if not line:
            raise RuntimeError("capwarden trust serve did not start (see %s)" % self.log.name)
        self.url = json.loads(line)["url"]

    def stop(self):
        procs = test_helper("trust", "procs")
        if self.service is not None:
            procs.stop(self.service)
            self.log.close()
        if self.broker is not None:
            self.broker.stop()

    def enroll(self, n):
        """n one-time enrollment secrets, made as `capwarden trust terminal enroll` makes them."""
        from capwarden.trust import registry, servicekeys
        from capwarden.trust.config import default_db_url
        from capwarden.trust.db import open_db

        db = open_db(default_db_url(self.data))
        try:
            ra = registry.RegistrationAuthority(db, servicekeys.KeyRing.open(servicekeys.ring_folder(self.data)))
            return [ra.enroll() for _ in range(n)]
        finally:
            db.dispose()


class Sim:
    """One simulated terminal: its TrustClient and what it has applied."""

    __slots__ = ("client", "waiting", "applied_at", "fetches")

    def __init__(self):
        self.client = None
        self.waiting = None      # the jti whose revocation we wait for
        self.applied_at = None
        self.fetches = 0

    def on_revocations(self, statements, full):
        if self.waiting is None or self.applied_at is not None:
            return
        from capwarden.credentials import cbor
        from capwarden.credentials.ids import uuid_text

        for st in statements:
            if uuid_text(cbor.decode(st, 4096)["target_descriptor_id"]) == self.waiting:
                self.applied_at = time.perf_counter()
                return


async def _bounded(n, coros):
    sem = asyncio.Semaphore(n)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def _progress(what, t0):
    if os.environ.get("CAPWARDEN_BENCH_VERBOSE"):
        print("  %6.1f s  %s" % (time.perf_counter() - t0, what), file=sys.stderr, flush=True)


def _terminal_http(ssl_context):
    """A terminal's own HTTP client: one connection, as a real terminal has (one shared pool for
    1,000 terminals would measure httpcore's pool scan, which grows with its size)."""
    import httpx

    return httpx.AsyncClient(timeout=30, verify=ssl_context, limits=httpx.Limits(max_connections=1))


async def _setup(fleet, n, state_root):
    import ssl

    from capwarden.trust.client import TrustClient

    ctx = ssl.create_default_context()     # one CA bundle loaded, not 1,000 (the service is plain HTTP here)

    t0 = time.perf_counter()
    enrollments = await asyncio.get_running_loop().run_in_executor(None, fleet.enroll, n)
    _progress("enrolled %d" % n, t0)
    sims = [Sim() for _ in range(n)]

    async def register(sim, en, i):
        sim.client = TrustClient(fleet.url, os.path.join(state_root, "t%04d" % i), anchor=en["ra_keys"],
                                 http=_terminal_http(ctx),
                                 on_revocations=sim.on_revocations)
        await sim.client.register(en["enrollment_secret"])
        await sim.client.sync_keysets()

    await _bounded(SETUP_CONCURRENCY, [register(s, e, i) for i, (s, e) in enumerate(zip(sims, enrollments))])
    return sims


async def _issue(fleet, http, sims):
    from capwarden.credentials.ids import new_fay_id

    fay = new_fay_id()
    auth = {"Authorization": "Bearer " + fleet.token}

    async def one(sim):
        tid = sim.client.terminal_id
        r = await http.post(fleet.url + "/v1/tickets", headers=auth, json={
            "fay_id": fay, "terminal_id": tid, "valid_for_s": 3600,
            "grants": [{"resource_pattern": tid + "/camera", "modes": ["read"]}]})
        r.raise_for_status()
        return r.json()["jti"]

    return await _bounded(SETUP_CONCURRENCY, [one(s) for s in sims])


async def _revoke_all(fleet, http, sims, jtis):
    """Post one revocation per terminal, POST_CONCURRENCY at a time, in a random order;
    returns {sim index: time the POST was sent}."""
    auth = {"Authorization": "Bearer " + fleet.token}
    order = list(range(len(sims)))
    random.shuffle(order)
    posted = {}
    for i in order:
        sims[i].waiting, sims[i].applied_at = jtis[i], None

    async def one(i):
        posted[i] = time.perf_counter()
        r = await http.post(fleet.url + "/v1/revocations", headers=auth, json={"target_id": jtis[i]})
        r.raise_for_status()

    await _bounded(POST_CONCURRENCY, [one(i) for i in order])
    return posted


async def _wait_applied(sims, seconds=WAIT_S):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if all(s.applied_at is not None for s in sims):
            return
        await asyncio.sleep(0.02)
    missing = sum(s.applied_at is None for s in sims)
    raise RuntimeError("%d of %d terminals had not applied their revocation after %.0f s" % (missing, len(sims), seconds))


def _latencies_ms(sims, posted):
    return [(sims[i].applied_at - t0) * 1e3 for i, t0 in posted.items()]


async def _push_group(broker, group, ready):
    """One broker connection carrying the subscriptions of `group` (a list of Sim)."""
    from capwarden.trust import push

    by_topic = {push.terminal_topic(s.client.terminal_id): s for s in group}
    tasks = set()

    async def fetch(sim):
        sim.fetches += 1
        await sim.client.sync_revocations()

    async with broker.client(max_queued_incoming_messages=0) as c:
        for topic in by_topic:
            await c.subscribe(topic, qos=push.QOS)
        ready.append(1)
        async for msg in c.messages:
            sim = by_topic.get(str(msg.topic))
            try:
                kind, version = push.decode_message(msg.payload)
            except push.PushError:
                continue
            if sim is not None and kind == push.REVOCATIONS and version > sim.client.revocations_version:
                t = asyncio.get_running_loop().create_task(fetch(sim))
                tasks.add(t)
                t.add_done_callback(tasks.discard)


async def _poller(sim, stop):
    await asyncio.sleep(random.random() * POLL_S)
    while not stop.is_set():
        sim.fetches += 1
        try:
            await sim.client.sync_revocations()
        except Exception as exc:   # a poll that fails is retried at the next one, as a terminal would
            print("poll failed: %s" % exc, file=sys.stderr)
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except asyncio.TimeoutError:
            pass


async def _measure(fleet, n):
    import httpx

    from capwarden.trust import push

    root = tempfile.mkdtemp(prefix="cw-bench-terminals-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    operator = httpx.AsyncClient(timeout=30)
    sims = []
    try:
        t0 = time.perf_counter()
        sims = await _setup(fleet, n, root)
        _progress("registered %d terminals" % n, t0)
        jtis_push = await _issue(fleet, operator, sims)
        jtis_poll = await _issue(fleet, operator, sims)
        _progress("issued %d tickets" % (2 * n), t0)
        setup_s = time.perf_counter() - t0

        # Push: subscriptions in place, then the revocations.
        broker = push.Broker(fleet.broker.url)
        ready = []
        groups = [asyncio.get_running_loop().create_task(_push_group(broker, sims[i:i + GROUP], ready))
                  for i in range(0, n, GROUP)]
        while len(ready) < len(groups):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        t1 = time.perf_counter()
        posted = await _revoke_all(fleet, operator, sims, jtis_push)
        post_push_s = time.perf_counter() - t1
        await _wait_applied(sims)
        _progress("push round done", t0)
        push_ms = _latencies_ms(sims, posted)
        push_fetches = sum(s.fetches for s in sims)
        for g in groups:
            g.cancel()
        await asyncio.gather(*groups, return_exceptions=True)

        # Poll only, every 5 s from a random phase each.
        for s in sims:
            s.fetches = 0
        stop = asyncio.Event()
        pollers = [asyncio.get_running_loop().create_task(_poller(s, stop)) for s in sims]
        await asyncio.sleep(POLL_S)       # every terminal in its steady poll rhythm
        t2 = time.perf_counter()
        posted = await _revoke_all(fleet, operator, sims, jtis_poll)
        post_poll_s = time.perf_counter() - t2
        await _wait_applied(sims)
        _progress("poll round done", t0)
        poll_ms = _latencies_ms(sims, posted)
        stop.set()
        await asyncio.gather(*pollers, return_exceptions=True)
        return {"push": push_ms, "poll": poll_ms, "setup_s": setup_s, "post_push_s": post_push_s,
                "post_poll_s": post_poll_s, "push_fetches": push_fetches}
    finally:
        for s in sims:
            await s.client.http.aclose()
        await operator.aclose()
        shutil.rmtree(root, ignore_errors=True)


def run(results, n=N):
    folder = tempfile.mkdtemp(prefix="cw-bench-trust-")
    fleet = Fleet(folder)
    try:
        fleet.start()
        r = asyncio.run(_measure(fleet, n))
    finally:
        fleet.stop()
        shutil.rmtree(folder, ignore_errors=True)
    push50, push99 = percentile(r["push"], 50), percentile(r["push"], 99)
    poll50, poll99 = percentile(r["poll"], 50), percentile(r["poll"], 99)
    note = ("%d terminals (TrustClient each; MQTT subscriptions on one broker connection per %d), SQLite service, "
            "revocations posted one after another (%.1f s for %d with push, %.1f s polling); setup %.0f s"
            % (n, GROUP, r["post_push_s"], n, r["post_poll_s"], r["setup_s"]))
    results.add("revocation to %d terminals applied, push p50" % n, round(push50, 1), "ms",
                baseline=round(poll50, 1), note=note)
    results.add("revocation to %d terminals applied, push p99" % n, round(push99, 1), "ms",
                baseline=round(poll99, 1), target="<= %d ms" % TARGET_P99_MS)
    results.add("revocation to %d terminals applied, poll-only (5 s) p50" % n, round(poll50, 1), "ms")
    results.add("revocation to %d terminals applied, poll-only (5 s) p99" % n, round(poll99, 1), "ms")
    results.add("revocation list fetches per terminal, push", round(r["push_fetches"] / n, 2), "fetches")


if __name__ == "__main__":
    from bench import Results

    run(Results(), int(sys.argv[1]) if len(sys.argv) > 1 else N)
