"""The terminal online (issue 14): the cost of the online revocation query answered from its
cache, and the time from a revocation posted at the trust service to the runtime told its
session ended, through the broker push, against the poll-only configuration.

1. Ticket validation, online against offline, same run, alternating rounds. Offline: the
   engine's authorizer checks a ticket of the trust service's issuer (StoreAuthorizer.check:
   steps 1-5, signature included). Online: the same ticket with the revocation query on,
   answered from its cache (fresh), as the engine does it: authorizer.prepare() then check().
   The store, keys and ticket come from a real registration at the real trust service (SQLite,
   in process). Target: online >= 0.95 of the offline rate.

2. Revocation to session end: `capwarden trust serve` (SQLite) pushing through a real mosquitto,
   `capwarden serve --trust URL` on the virtual board (processes of their own), a runtime over
   WebSocket in this process. Per sample: a ticket issued, a session granted on it, then the
   time from just before `POST /v1/revocations` to the SessionStateChanged(revoked) the runtime
   receives. Push: the engine's trust section names the broker, its poll is the backstop
   (5-30 s). Poll-only: the same without the broker; its sessions are revoked together (each
   timed on its own), since each waits for the next poll. Target: push p99 <= 1 s.

    python -c "from bench import Results; import bench.online as m; m.run(Results())"
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import median, percentile, test_helper

ROUNDS = 12                 # ABBA rounds: offline, online, online, offline (drift cancels)
CHECKS = 500                # checks per configuration and half-round
PUSH_SAMPLES = 40
POLL_SAMPLES = 10
TARGET_RATIO = 0.95
TARGET_P99_MS = 1000
WAIT_S = 60.0               # a session not ended by then fails the benchmark
TOKEN = "bench-online-token"


def _capwarden():
    exe = os.path.join(os.path.dirname(sys.executable), "capwarden")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "capwarden"]


# ---- 1. validation rate -------------------------------------------------------------------
async def _validation(folder):
    enginerig = test_helper("engine", "enginerig")
    onlinerig = test_helper("engine", "onlinerig")
    from capwarden.engine.app import EngineApp

    world = enginerig.World(folder)
    svc = onlinerig.TrustService(folder)
    onlinerig.enroll(world, svc)
    app = EngineApp(world.store, "127.0.0.1:0", {"rt": TOKEN}, sim=True)
    await app.start()
    try:
        from capwarden.engine import online

        link = online.TrustLink(app.engine, onlinerig.settings(world, revocation_query={"enabled": True}),
                                world.store, http=svc.terminal_http())
        await link.step()
        assert link.mode == online.ONLINE
        _jti, jws = await svc.ticket(world.tid, world.A)
        auth = app.engine.authorizer
        body = {"fay_id": world.A, "resource_id": world.res("camera"), "access_mode": "read",
                "credential": {"type": "ticket", "ticket": jws}}
        cred = body["credential"]
        query = auth.revquery

        def offline(n, now):
            from capwarden.engine.authorizer import _PREPARED

            auth.revquery = None
            _PREPARED.set(None)        # no request prepared: every check validates the ticket
            t0 = time.perf_counter()
            for _ in range(n):
                d = auth.check(cred, world.A, body["resource_id"], "read", now)
            dt = time.perf_counter() - t0
            assert d.granted, d.error_code
            return n / dt

        async def online_cached(n, now):
            auth.revquery = query
            t0 = time.perf_counter()
            for _ in range(n):
                await auth.prepare("AuthRequest", body, now)
                d = auth.check(cred, world.A, body["resource_id"], "read", now)
            dt = time.perf_counter() - t0
            assert d.granted, d.error_code
            return n / dt

        now = int(time.time())
        await online_cached(50, now)              # the first query fills the cache (fresh for 60 s)
        asked = query.asked
        off, on, ratios = [], [], []
        for _ in range(ROUNDS):
            a1 = offline(CHECKS, now)
            b1 = await online_cached(CHECKS, now)
            b2 = await online_cached(CHECKS, now)
            a2 = offline(CHECKS, now)
            off += [a1, a2]
            on += [b1, b2]
            ratios.append((b1 + b2) / (a1 + a2))
        assert query.asked == asked, "the cache did not answer"
        return median(off), median(on), median(ratios)
    finally:
        await app.stop()


# ---- 2. revocation to session end -----------------------------------------------------------
class Deployment:
    """trust serve + mosquitto + `capwarden serve --trust` processes in `folder`."""

    def __init__(self, folder):
        self.folder = folder
        self.procs = []
        self.broker = None

    def start_service(self):
        services = test_helper("", "services")
        trustrig = test_helper("", "trustrig")
        services.require_mosquitto()
        self.broker = services.MosquittoBroker().start()
        self.data = os.path.join(self.folder, "service")
        info = trustrig.init(self.data)
        self.auth_token = info["authorizer"]["token"]
        self.service = trustrig.Serve(self.data, extra=["--mqtt", self.broker.url])
        self.url = self.service.url

    def start_engine(self, name, push):
        """A terminal: its store, an enrollment, `capwarden serve --trust` (with the broker or
        poll-only). Returns (runtime url, terminal id, store)."""
        from capwarden.credentials import Terminal

        trustrig = test_helper("", "trustrig")
        store = os.path.join(self.folder, name)
        t = Terminal.init(store)
        code, out, err = trustrig.run_cli("trust", "terminal", "enroll", "--data", self.data, "--terminal-id",
                                          t.terminal_id, "--json")
        if code != 0:
            raise RuntimeError("enroll failed: %s" % err)
        os.makedirs(os.path.join(store, "trust"), mode=0o700)
        with open(os.path.join(store, "trust", "enrollment.json"), "w") as f:
            f.write(out)
        trust = {"url": self.url}
        if push:
            trust["mqtt_url"] = self.broker.url
        conf = os.path.join(store, "engine.json")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"runtimes": {"rt": {"token": TOKEN}}, "trust": trust}, f)
        log = open(os.path.join(self.folder, name + ".log"), "w")
        proc = subprocess.Popen(_capwarden() + ["serve", "--store", store, "--listen", "127.0.0.1:0", "--board", "sim",
                                                "-q"], stdout=subprocess.PIPE, stderr=log, text=True,
                                env=dict(os.environ, TMPDIR=self.folder))
        self.procs.append((proc, log))
        line = proc.stdout.readline()
        if not line.startswith("serving "):
            raise RuntimeError("serve did not start: %r" % line)
        mode_file = os.path.join(store, "trust", "mode.json")
        end = time.monotonic() + WAIT_S
        while time.monotonic() < end:
            try:
                with open(mode_file) as f:
                    if json.load(f)["mode"] == "online":
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the terminal %s did not go online" % name)
        return line.split()[1], t.terminal_id

    def stop(self):
        procs = test_helper("", "procs")
        for proc, log in self.procs:
            procs.stop(proc)
            log.close()
        if getattr(self, "service", None):
            self.service.stop()
        if self.broker:
            self.broker.stop()


async def _sessions(http, dep, url, tid, count):
    """`count` sessions on tickets of the trust service: [(session, jti)] and the client."""
    from capwarden.credentials.ids import new_fay_id
    from capwarden.sdk import connect

    rt = await connect(url, "rt", TOKEN)
    out = []
    for _ in range(count):
        fay = new_fay_id()
        r = await http.post(dep.url + "/v1/tickets", headers={"Authorization": "Bearer " + dep.auth_token},
                            json={"fay_id": fay, "terminal_id": tid, "valid_for_s": 600,
                                  "grants": [{"resource_pattern": tid + "/sim/gps", "modes": ["read"]}]})
        r.raise_for_status()
        s = await rt.acquire(fay, tid + "/sim/gps", "read", {"type": "ticket", "ticket": r.json()["ticket"]})
        out.append((s, r.json()["jti"]))
    return rt, out


async def _revoke_timed(http, dep, session, jti):
    t0 = time.perf_counter()
    r = await http.post(dep.url + "/v1/revocations", headers={"Authorization": "Bearer " + dep.auth_token},
                        json={"target_id": jti})
    r.raise_for_status()
    reason = await session.ended(WAIT_S)
    dt = time.perf_counter() - t0
    if reason != "revoked":
        raise RuntimeError("the session ended %s, not revoked" % reason)
    return dt


async def _revocation_latency(folder):
    import httpx

    dep = Deployment(folder)
    try:
        dep.start_service()
        push_url, push_tid = dep.start_engine("pushed", push=True)
        poll_url, poll_tid = dep.start_engine("polled", push=False)
        async with httpx.AsyncClient() as http:
            await asyncio.sleep(1.0)                   # the engine's subscription is in place
            pushed = []
            for _ in range(PUSH_SAMPLES):               # one at a time: each measured alone
                rt, [(s, jti)] = await _sessions(http, dep, push_url, push_tid, 1)
                pushed.append(await _revoke_timed(http, dep, s, jti))
                await rt.close()
            rt, sessions = await _sessions(http, dep, poll_url, poll_tid, POLL_SAMPLES)
            polled = await asyncio.gather(*(_revoke_timed(http, dep, s, jti) for s, jti in sessions))
            await rt.close()
        return pushed, list(polled)
    finally:
        dep.stop()


def run(results):
    folder = tempfile.mkdtemp(prefix="cw-bench-online-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        os.makedirs(os.path.join(folder, "v"))
        off, on, paired = asyncio.run(_validation(os.path.join(folder, "v")))
        results.add("ticket validation, online query from its cache", round(on), "checks/s", baseline=round(off),
                    target=">= %.2f of offline" % TARGET_RATIO, note="baseline: the same validation offline")
        results.add("ticket validation online/offline, median of ABBA rounds", round(paired, 3), "ratio",
                    target=">= %.2f" % TARGET_RATIO)
        os.makedirs(os.path.join(folder, "r"))
        pushed, polled = asyncio.run(_revocation_latency(os.path.join(folder, "r")))
        ms = lambda v: round(v * 1000.0, 1)       # noqa: E731
        results.add("revocation to SessionStateChanged(revoked), push p50", ms(median(pushed)), "ms")
        results.add("revocation to SessionStateChanged(revoked), push p99", ms(percentile(pushed, 99)), "ms",
                    baseline=ms(percentile(polled, 99)), target="<= %d ms" % TARGET_P99_MS,
                    note="baseline: poll-only (5-30 s jittered poll) p99")
        results.add("revocation to SessionStateChanged(revoked), poll-only p50", ms(median(polled)), "ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    from bench import Results

    run(Results())
