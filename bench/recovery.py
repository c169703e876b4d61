"""Recovery after an offline period (issue 14, chapter 4 section 4.5.3): the trust service is
stopped, N revocations concerning the terminal are issued meanwhile (10,000 by default), the
service comes back; measured: the time from the service answering again to the terminal back
online with every affected session ended (the runtime told, SessionStateChanged revoked).

What runs (this machine, two shared cores):
- `capwarden trust serve` (SQLite, plain HTTP on loopback, a fixed port so it comes back where
  the terminal looks) pushing through a real mosquitto;
- `capwarden serve --board sim` with the config's "trust" section (the broker named; a degraded
  terminal tries again every RETRY_S), its own process;
- a runtime in this process (SDK over WebSocket) holding SESSIONS sessions on tickets of the
  service (shared reads of the virtual board's gps), all among the tickets revoked;
- the offline revocations made as the operator's `capwarden trust revoke` makes them, on the
  database while the service is down (in this process: 10,000 CLI runs would measure Python's
  start-up). The other N - SESSIONS revoked tickets were issued to the same terminal beforehand
  (the batch endpoint's code, in this process), still valid, so all N are in its list.

Per round: mode.json (the terminal's own record) polled every 10 ms for "online"; the runtime's
pushes for each session's end. Baseline, same run and deployment: a first offline period with
only the SESSIONS revocations. A round not recovered within WAIT_S fails the benchmark.

    python -m bench.recovery [N]
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import test_helper

N = int(os.environ.get("CAPWARDEN_BENCH_REVOCATIONS", "10000"))
SESSIONS = 8                  # shared reads of the gps: within the board's grant table
RETRY_S = 0.2
WAIT_S = float(os.environ.get("CAPWARDEN_BENCH_RECOVERY_WAIT_S", "900"))
TOKEN = "bench-recovery-token"
BATCH = 1000                  # tickets per issuance batch (issuance.MAX_BATCH)


def _capwarden():
    exe = os.path.join(os.path.dirname(sys.executable), "capwarden")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "capwarden"]


def _progress(what, t0):
    if os.environ.get("CAPWARDEN_BENCH_VERBOSE"):
        print("  %7.1f s  %s" % (time.perf_counter() - t0, what), file=sys.stderr, flush=True)


class Deployment:
    def __init__(self, folder):
        self.folder = folder
        self.data = os.path.join(folder, "service")
        self.services = test_helper("", "services")
        self.trustrig = test_helper("", "trustrig")
        self.broker = None
        self.service = None
        self.engine = None
        self.port = None

    # ---- the trust service ------------------------------------------------------------------
    def start(self):
        self.services.require_mosquitto()
        self.broker = self.services.MosquittoBroker().start()
        self.auth_token = self.trustrig.init(self.data, None, "issuer:bench")["authorizer"]["token"]
        self.port = self.services.free_port()
        self.start_service()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start_service(self):
        self.service = self.trustrig.Serve(self.data, listen="127.0.0.1:%d" % self.port,
                                           extra=["--mqtt", self.broker.url])

    def stop_service(self):
        self.service.stop()
        self.service = None

    def _db(self):
        from capwarden.trust import servicekeys
        from capwarden.trust.config import default_db_url
        from capwarden.trust.db import open_db

        return open_db(default_db_url(self.data)), servicekeys.KeyRing.open(servicekeys.ring_folder(self.data))

    def issue(self, fay, n, valid_for=3600):
        """n tickets [(jti, JWS)] for `fay` on the terminal's gps, issued by the service's own
        code (POST /v1/tickets/batch), the service running or not."""
        from capwarden.trust.issuance import Issuer

        db, ring = self._db()
        try:
            issuer = Issuer(db, ring)
            body = {"fay_id": fay, "terminal_id": self.tid, "valid_for_s": valid_for,
                    "grants": [{"resource_pattern": self.tid + "/sim/gps", "modes": ["read"]}]}
            out = []
            while len(out) < n:
                out += [(o["jti"], o["ticket"]) for o in issuer.issue_tickets(self.auth_token,
                                                                             [body] * min(BATCH, n - len(out)))]
            return out
        finally:
            db.dispose()

    def revoke(self, jtis):
        """The operator's revocations (`capwarden trust revoke`'s code), the service down."""
        from capwarden.trust.revocations import RevocationService

        db, ring = self._db()
        try:
            svc = RevocationService(db, ring)
            for jti in jtis:
                svc.revoke_as_operator(jti)
        finally:
            db.dispose()

    # ---- the terminal -------------------------------------------------------------------------
    def start_engine(self):
        from capwarden.credentials import Terminal

        self.store = os.path.join(self.folder, "terminal")
        t = Terminal.init(self.store)
        self.tid = t.terminal_id
        code, out, err = self.trustrig.run_cli("trust", "terminal", "enroll", "--data", self.data, "--terminal-id",
                                               self.tid, "--json")
        if code != 0:
            raise RuntimeError("enroll failed: %s" % err)
        os.makedirs(os.path.join(self.store, "trust"), mode=0o700)
        with open(os.path.join(self.store, "trust", "enrollment.json"), "w") as f:
            f.write(out)
        conf = os.path.join(self.store, "engine.json")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"runtimes": {"rt": {"token": TOKEN}},
                       "trust": {"url": self.url, "mqtt_url": self.broker.url, "unreachable_s": 1.0,
                                 "retry_s": RETRY_S, "tick_s": 0.05, "poll_min_s": 0.5, "poll_max_s": 1.0}}, f)
        self._log = open(os.path.join(self.folder, "engine.log"), "w")
        self.engine = subprocess.Popen(_capwarden() + ["serve", "--store", self.store, "--listen", "127.0.0.1:0",
                                                       "--board", "sim", "-q"], stdout=subprocess.PIPE,
                                       stderr=self._log, text=True, env=dict(os.environ, TMPDIR=self.folder))
        line = self.engine.stdout.readline()
        if not line.startswith("serving "):
            raise RuntimeError("serve did not start: %r (see %s)" % (line, self._log.name))
        self.engine_url = line.split()[1]

    def mode(self):
        try:
            with open(os.path.join(self.store, "trust", "mode.json")) as f:
                return json.load(f)["mode"]
        except (OSError, ValueError, KeyError):
            return None

    async def until_mode(self, mode, seconds):
        end = time.monotonic() + seconds
        while self.mode() != mode:
            if time.monotonic() > end:
                raise RuntimeError("the terminal did not go %s within %s s (see %s)" % (mode, seconds, self._log.name))
            await asyncio.sleep(0.01)
        return time.perf_counter()

    def stop(self):
        procs = test_helper("", "procs")
        if self.engine is not None:
            procs.stop(self.engine)
            self._log.close()
        if self.service is not None:
            self.service.stop()
        if self.broker is not None:
            self.broker.stop()


async def _round(dep, rt, extra):
    """One offline period: SESSIONS sessions on tickets, the service stopped, those tickets and
    `extra` others revoked, the service back. Returns (to online, to every session ended) in s."""
    from capwarden.credentials.ids import new_fay_id

    fay = new_fay_id()
    tickets = await asyncio.to_thread(dep.issue, fay, SESSIONS)
    sessions = [await rt.acquire(fay, dep.tid + "/sim/gps", "read", {"type": "ticket", "ticket": tok})
                for _jti, tok in tickets]
    revoked = [jti for jti, _tok in tickets]
    if extra:
        revoked += [jti for jti, _tok in await asyncio.to_thread(dep.issue, new_fay_id(), extra)]
    dep.stop_service()
    await dep.until_mode("degraded", 30)
    await asyncio.to_thread(dep.revoke, revoked)
    await asyncio.sleep(0.5)
    if any(s.state != "active" for s in sessions):
        raise RuntimeError("a session ended before the service came back")
    dep.start_service()                 # returns once it answers
    t0 = time.perf_counter()
    online_at = asyncio.ensure_future(dep.until_mode("online", WAIT_S))
    ended = []
    for s in sessions:
        reason = await s.ended(WAIT_S)
        if reason != "revoked":
            raise RuntimeError("a session ended %s, not revoked" % reason)
        ended.append(time.perf_counter())
    t_online = await online_at
    return t_online - t0, max(ended + [t_online]) - t0


async def _main(folder, n):
    from capwarden.sdk import connect

    t0 = time.perf_counter()
    dep = Deployment(folder)
    try:
        dep.start()
        dep.start_engine()
        await dep.until_mode("online", 60)
        rt = await connect(dep.engine_url, "rt", TOKEN)
        try:
            _progress("deployed", t0)
            base = await _round(dep, rt, 0)
            _progress("baseline round: %.2f s online, %.2f s all ended" % base, t0)
            full = await _round(dep, rt, n - SESSIONS)
            _progress("round of %d: %.2f s online, %.2f s all ended" % ((n,) + full), t0)
        finally:
            await rt.close()
        return base, full
    finally:
        dep.stop()


def run(results, n=N):
    folder = tempfile.mkdtemp(prefix="cw-bench-recovery-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        base, full = asyncio.run(_main(folder, n))
        results.add("recovery, %d revocations while offline: online" % n, round(full[0], 3), "s",
                    baseline=round(base[0], 3), note="baseline: %d revocations (the sessions' own)" % SESSIONS)
        results.add("recovery, %d revocations while offline: online, %d sessions ended" % (n, SESSIONS),
                    round(full[1], 3), "s", baseline=round(base[1], 3),
                    note="from the service answering again; baseline: %d revocations" % SESSIONS)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    from bench import Results

    run(Results(), int(sys.argv[1]) if len(sys.argv) > 1 else N)
