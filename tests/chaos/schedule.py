"""Random fault schedules against the real virtual board, their runner and their shrinker.

A schedule is a list of steps, each a tuple ("name", arg, ...) of plain values, so a failing
schedule prints as Python that tests/chaos/test_regressions.py keeps verbatim. Steps are
runtime requests through Engine.handle() and faults; `generate(seed)` draws a schedule from a
seed, `run(steps)` plays it on a freshly reset board and checks every invariant
(invariants.py) after every step and as answers and pushes arrive, and `shrink()` removes
steps while the same invariant still fails (delta debugging), so a failure ends as a short
reproduction.

Two runtimes: rtA (Fays A and C) and rtB (Fay B, by descriptor and by ticket), and one operator
at the console (OPERATOR: take, act, hand back, release through engine/takeover.py). A runtime
heartbeats every live session it knows every RUNTIME_HB_S, unless a `silence` step stopped it;
sessions of a silenced runtime, and sessions whose leases a fault put at risk, are "excused"
from the liveness invariant. Every other session is healthy: it must never end or be
suspended for liveness reasons, whatever the schedule does to the engine.
"""

import asyncio
import collections
import logging
import random
import time

from capwarden.credentials.b64 import b64u_encode
from capwarden.engine import protocol, takeover
from capwarden.engine.audit import AuditLog
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.engine.engine import Engine
from capwarden.errors import CapError, DeviceError, LinkError
from capwarden.link import open_board
from capwarden.sim import TO_BOARD, TO_HOST

from . import invariants as inv
from .invariants import Violation
from .rig import (ANSWER_SLACK_S, BOARD_HB_MS, CREDENTIALS, DETECT_S, EXPIRE_STEP_S, GRACE_S, JUMP_S, LEASE_MS,
                  LINK_RETRIES, LIVENESS, LINK_TIMEOUT, RESOURCES, RUNTIME_HB_S, RUNTIMES, SETTLE_S, Creds, policy,
                  shared_board)

# How long after the engine has seen a revocation (or its wall clock passed an expiry) it may
# still act on the old verdict: not at all. A command or a grant is checked at the moment of
# use, not only by the next sweep of the timers.
CRED_GRACE_S = 0.0
# A revocation imported into the store must reach the engine within this.
REVOCATION_SEEN_S = 2.0

# Totals over every schedule run in this process (the chaos report reads them).
STATS = collections.Counter()
VIOLATIONS = collections.Counter()

# What a command does on each resource (op 1: set motor speed / led level / read gps), and
# whether that op drives it (write) or only reads.
OPS = {"motor_left": (1, (100).to_bytes(2, "little", signed=True)), "led": (1, b"\x05"), "gps": (1, b"")}
DRIVES = {"motor_left": True, "led": True, "gps": False}
MODES = {"motor_left": ("write", "write", "read"), "led": ("write", "read"), "gps": ("read",)}
TO_BOARD_MSGS = ("ACQUIRE", "RELEASE", "HEARTBEAT", "SUSPEND", "ACTUATE", "END_SESSION", "HANDOVER")
TO_HOST_MSGS = ("ACQUIRE_R", "RELEASE_R", "HEARTBEAT_R", "SUSPEND_R", "ACTUATE_R", "END_SESSION_R", "HANDOVER_R",
                "EV_GRANT_ENDED", "EV_RESOURCE", "QUEUED", "ERROR")
FAULTS = ("drop", "duplicate", "delay", "corrupt")
OPERATOR = "op1"        # the person at the console (takeover.py); one is enough to contend with Fays


# ---- generating -------------------------------------------------------------------------------

def _step(rng):
    rt = rng.choice(RUNTIMES)
    creds = [k for k, v in CREDENTIALS.items() if v[0] == rt]
    res = rng.choice(RESOURCES)
    kinds = [
        (14, lambda: ("acquire", rt, rng.choice(creds), res, rng.choice(MODES[res]), rng.choice((0, 0, 0, 1500)))),
        (6, lambda: ("heartbeat", rt)),
        (8, lambda: ("release", rt, rng.randrange(4))),
        (10, lambda: ("command", rt, rng.randrange(4))),
        (4, lambda: ("handover", rt, rng.choice(creds), res, rng.choice(MODES[res]))),
        (4, lambda: ("answer_handover", rt, rng.random() < 0.6)),
        (2, lambda: ("revoke", rng.choice(list(CREDENTIALS)))),
        (1, lambda: ("expire",)),
        (3, lambda: ("silence", rt, rng.random() < 0.4)),
        (4, lambda: ("tick",)),
        (2, lambda: ("reconnect", rt)),
        (3, lambda: ("retry_last", rt)),
        (8, lambda: _fault(rng)),
        (2, lambda: ("cut", rng.choice((0.15, 0.3, 1.5)))),
        (3, lambda: ("kill_engine",)),
        (1, lambda: ("power_cycle",)),
        (2, lambda: ("reboot",)),
        (2, lambda: ("plug", res, rng.random() < 0.5)),
        (4, lambda: ("wait", rng.choice((0.3, 1.5)))),
        (1, lambda: ("churn", rt, rng.choice((1, 3, 8, 18, 24)))),
        (2, lambda: ("zombie_actuate",)),
        (4, lambda: ("race", [_racer(rng) for _ in range(rng.randint(2, 4))])),
        (3, lambda: ("take", rng.choice(("motor_left", "led", "gps")))),
        (2, lambda: ("op_act", rng.choice(("motor_left", "led")))),
        (2, lambda: ("hand_back", rng.choice(("motor_left", "led", "gps")), rng.choice(list(CREDENTIALS)))),
        (2, lambda: ("op_release", rng.choice(("motor_left", "led", "gps")))),
    ]
    total = sum(w for w, _ in kinds)
    x = rng.uniform(0, total)
    for w, make in kinds:
        x -= w
        if x <= 0:
            return make()
    return kinds[-1][1]()


def _racer(rng):
    """A request for a `race` step: sent at the same moment as the others."""
    rt = rng.choice(RUNTIMES)
    res = rng.choice(("motor_left", "led"))
    cred = rng.choice([k for k, v in CREDENTIALS.items() if v[0] == rt])
    return rng.choice((("acquire", rt, cred, res, "write", rng.choice((0, 800))), ("release", rt, rng.randrange(3)),
                       ("command", rt, rng.randrange(3)), ("heartbeat", rt),
                       ("handover", rt, cred, res, "write"), ("answer_handover", rt, True), ("expire",),
                       ("revoke", cred), ("take", res), ("op_release", res), ("hand_back", res, cred)))


def _fault(rng):
    if rng.random() < 0.55:
        direction, name = TO_BOARD, rng.choice(TO_BOARD_MSGS)
    else:
        direction, name = TO_HOST, rng.choice(TO_HOST_MSGS)
    fault = rng.choice(FAULTS)
    delay = rng.choice((LINK_TIMEOUT * 1.5, 1.5)) if fault == "delay" else None
    return ("fault", direction, fault, name, rng.choice((1, 1, 2)), delay)


def _contention(rng):
    """A fragment: one runtime holds a resource, the other waits for it (wait_ms), something
    happens meanwhile, the holder lets go. Where queued requests meet every other fault."""
    a, b = rng.sample(RUNTIMES, 2)
    ca = rng.choice([k for k, v in CREDENTIALS.items() if v[0] == a])
    cb = rng.choice([k for k, v in CREDENTIALS.items() if v[0] == b])
    res = rng.choice(("motor_left", "led"))
    end = rng.choice((("release", a, 0), ("silence", a, True), ("kill_engine",), ("plug", res, False)))
    return [("acquire", a, ca, res, "write", 0), ("acquire", b, cb, res, "write", 1500), _step(rng), end]


def _operator(rng):
    """A fragment: a Fay holds a resource, the operator takes it at once, a Fay asks for it
    with a wait, something happens meanwhile, the operator hands it back to that Fay (or lets
    go). Where the hand-back's two board answers meet every other fault."""
    a = rng.choice(RUNTIMES)
    ca = rng.choice([k for k, v in CREDENTIALS.items() if v[0] == a])
    cb = rng.choice(list(CREDENTIALS))
    res = rng.choice(("motor_left", "led"))
    end = rng.choice((("hand_back", res, cb), ("hand_back", res, cb), ("op_release", res)))
    return [("acquire", a, ca, res, "write", 0), ("take", res),
            ("acquire", CREDENTIALS[cb][0], cb, res, "write", 1500), _step(rng), end]


def generate(seed, max_steps=24):
    rng = random.Random(seed)
    n = rng.randint(4, max_steps)
    steps = []
    while len(steps) < n:
        x = rng.random()
        steps += _contention(rng) if x < 0.08 else _operator(rng) if x < 0.14 else [_step(rng)]
    return steps


# ---- the runtimes' side -------------------------------------------------------------------------

class SessionRec:
    def __init__(self, sid, rt, cred, res, mode, gen, token, epoch):
        self.sid, self.rt, self.cred, self.res, self.mode, self.gen = sid, rt, cred, res, mode, gen
        self.token, self.epoch = token, epoch
        self.ended = None          # the reason, once the engine said it ended
        self.suspended = False
        self.excused = set()       # why liveness may end it (silence, a lease fault, a restart...)

    def __repr__(self):
        return "<%s %s %s %s %s>" % (self.sid[-6:], self.res, self.mode, self.ended or "live", sorted(self.excused))


class Req:
    def __init__(self, rt, msg, gen, bound, extra=None):
        self.rt, self.msg, self.gen, self.bound = rt, msg, gen, bound
        self.sent = time.monotonic()
        self.extra = extra or {}
        self.task = None
        self.reply = None
        self.excused = False       # the engine it went to was killed: no answer is owed
        self.jumped = False        # the engine clock jumped while it was in flight


class Rt:
    def __init__(self, name):
        self.name = name
        self.connected = True
        self.silent = False
        self.sessions = []         # SessionRec, oldest first
        self.offers = []           # handover ids offered to this runtime, newest last
        self.last = None           # the last Req, for retry_last
        self.send = None           # the push receiver for the current engine

    def live(self, gen):
        return [s for s in self.sessions if s.ended is None and s.gen == gen]


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append((time.monotonic(), record))


class Runner:
    def __init__(self, steps):
        self.steps = steps
        self.trace = []             # what happened, step by step (printed with a failure)
        self.violation = None
        self.steps_run = 0

    # ---- the clocks the engine is given ----------------------------------------------------
    def mono(self):
        return time.monotonic() + self.mono_offset

    def wall(self):
        return time.time() + self.wall_offset

    def note(self, text):
        self.trace.append("%7.3f %s" % (time.monotonic() - self.t0, text))

    def fail(self, name, detail):
        if self.violation is None:
            self.violation = Violation(name, detail)
        raise self.violation

    # ---- running -----------------------------------------------------------------------------
    def run(self):
        """Play the schedule. Returns self (.violation is None or the first Violation)."""
        self.t0 = time.monotonic()
        loop = asyncio.new_event_loop()
        cap = _LogCapture()
        root = logging.getLogger("capwarden")
        old_level = root.level
        root.addHandler(cap)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        self.log = cap
        try:
            loop.run_until_complete(self._run())
        finally:
            root.removeHandler(cap)
            root.setLevel(old_level)
            try:
                loop.run_until_complete(self._teardown())
            except Exception:
                pass
            loop.run_until_complete(asyncio.sleep(0))
            for t in asyncio.all_tasks(loop):
                t.cancel()
            try:
                loop.run_until_complete(asyncio.sleep(0.01))
            except Exception:
                pass
            loop.close()
            self.creds.cleanup()
        STATS["schedules"] += 1
        STATS["steps"] += self.steps_run
        STATS["seconds"] += time.monotonic() - self.t0
        return self

    async def _run(self):
        self.vb = shared_board().reset()
        self.creds = Creds()
        self.mono_offset = 0.0
        self.wall_offset = 0.0
        self.invalid_since = {}          # credential id -> when it became revoked or expired
        self.rts = {name: Rt(name) for name in RUNTIMES}
        self.reqs = []
        self.denies = collections.Counter()
        self.ownership = inv.Ownership(GRACE_S)
        self.gen = 0
        self.engine = None
        self.dead = []                   # (token, epoch, res) of sessions of engines since killed
        self.errors_seen = 0
        self.risk_until = 0.0            # until then, a new session may lose its lease to a fault
        await self._start_engine()
        self.hb_task = asyncio.ensure_future(self._heartbeats())
        try:
            for i, step in enumerate(self.steps):
                self.note("step %d %r" % (i, step))
                await getattr(self, "do_" + step[0])(*step[1:])
                self.steps_run = i + 1
                await asyncio.sleep(SETTLE_S)
                await self.check()
            await self._finish()
        except Violation as v:
            self.violation = self.violation or v
            self.note("VIOLATION %s" % v)

    async def _teardown(self):
        if getattr(self, "hb_task", None):
            self.hb_task.cancel()
        if self.engine is not None:
            await self._kill_engine(note=False)

    # ---- the engine --------------------------------------------------------------------------
    async def _start_engine(self):
        self.gen += 1
        gen = self.gen
        board = await open_board(self.vb.port, timeout=LINK_TIMEOUT, retries=LINK_RETRIES)
        authorizer = StoreAuthorizer(self.creds.store, leeway=0)
        audit = AuditLog(self.creds.audit_path)
        e = Engine(authorizer, {"sim": board}, audit, liveness=policy(), lease_ms=LEASE_MS,
                   board_heartbeat_ms=BOARD_HB_MS, clock=self.mono, wall=self.wall, tick_s=0.05)
        for rt in self.rts.values():
            e.add_runtime(rt.name)
            rt.send = self._receiver(rt, gen)
            if rt.connected:
                e.connected(rt.name, rt.send)
        self.engine, self.board, self.audit = e, board, audit
        self.handle = e.registry.boards["sim"]
        self.names = {r.index: r.name for r in board.info.resources}
        self.index = {r.name: r.index for r in board.info.resources}
        self.ownership.forget()
        await e.start()
        self.note("engine %d started" % gen)

    async def _kill_engine(self, note=True):
        """Drop the engine without any cleanup, as kill -9 would: its timers stop, its requests
        get no answer, its board port closes. The board keeps whatever it holds."""
        e, board, gen = self.engine, self.board, self.gen
        self.engine = None
        for t in e._tasks:
            t.cancel()
        for r in self.reqs:
            if r.gen == gen and r.reply is None and not r.task.done():
                r.excused = True
                r.task.cancel()
        for rt in self.rts.values():
            for s in rt.sessions:
                if s.gen == gen and s.ended is None:
                    s.ended = "engine_killed"
                    self.dead.append((s.token, s.epoch, s.res))
            rt.offers.clear()
        try:
            await asyncio.wait_for(board.close(), 2)
        except Exception:
            pass
        if note:
            self.note("engine %d killed" % gen)

    # ---- requests ----------------------------------------------------------------------------
    def _receiver(self, rt, gen):
        async def send(msg):
            if gen == self.gen:
                self._push(rt, msg)
        return send

    def _push(self, rt, msg):
        body = msg.get("body", {})
        if msg["message_type"] == "HandoverOffered":
            rt.offers.append(body["handover_id"])
            return
        if msg["message_type"] != "SessionStateChanged":
            return
        rec = self._rec(rt, body["session_id"])
        if rec is None:
            return
        reason = body.get("reason")
        if body["state"] == "terminated":
            rec.ended = reason
            if reason not in inv.NOT_LIVENESS and not rec.excused:
                self._late_fail("healthy_session_ended", "session %s (%s %s of %s, heartbeated in time) ended: %s" % (
                    rec.sid, rec.res, rec.mode, rt.name, reason))
        elif body.get("suspended") and not rec.suspended:
            rec.suspended = True
            if not rec.excused:
                self._late_fail("healthy_session_suspended", "session %s (%s %s of %s, heartbeated in time) suspended: %s"
                          % (rec.sid, rec.res, rec.mode, rt.name, reason))
        elif not body.get("suspended"):
            rec.suspended = False

    def _rec(self, rt, sid):
        for s in rt.sessions:
            if s.sid == sid:
                return s
        return None

    def request(self, rt, mtype, body, bound=None, extra=None):
        """Send one request to the current engine in the background; returns its Req."""
        msg = protocol.make(mtype, body, rt.name)
        return self._send(rt, msg, bound, extra)

    def _send(self, rt, msg, bound=None, extra=None):
        r = Req(rt, msg, self.gen, bound if bound is not None else ANSWER_SLACK_S, extra)
        r.task = asyncio.ensure_future(self.engine.handle(rt.name, msg, origin=rt.send))
        r.task.add_done_callback(lambda t, r=r: self._answered(r))
        self.reqs.append(r)
        rt.last = r
        return r

    async def wait(self, r, seconds=None):
        try:
            await asyncio.wait_for(asyncio.shield(r.task), seconds if seconds is not None else r.bound)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        except Exception:
            pass
        if self.violation:
            raise self.violation
        return r.reply

    def _answered(self, r):
        if r.task.cancelled():
            return
        exc = r.task.exception()
        if exc is not None:
            self._late_fail("request_raised", "%s raised %r" % (r.msg["message_type"], exc))
            return
        r.reply = r.task.result()
        if r.gen != self.gen:
            return
        try:
            self._judge(r)
        except Violation:
            pass

    def _late_fail(self, name, detail):
        if self.violation is None:
            self.violation = Violation(name, detail)

    def _judge(self, r):
        """Check one answer as it arrives (exactly one final answer; grants and actuation)."""
        try:
            code = inv.final_answer(r.msg, r.reply)
        except Violation as v:
            self._late_fail(v.name, v.detail)
            raise
        rt, body, mtype = r.rt, r.reply.get("body", {}), r.msg["message_type"]
        self.note("  %s %s -> %s %s" % (rt.name, mtype, r.reply["message_type"],
                                        code or body.get("result") or ""))
        if code is not None:
            self.denies[(rt.name, code)] += 1
            return
        now = time.monotonic()
        try:
            if mtype == "AuthRequest" and body.get("result") == "granted" or \
                    mtype == "HandoverRequest" and body.get("result") == "completed":
                cred = r.extra["cred"]
                inv.grant_for_invalid_credential(mtype, body["session_id"], self.creds.items[cred]["id"],
                                                 self.invalid_since, now, CRED_GRACE_S)
                s = self.engine.sessions.get(body["session_id"])
                rec = SessionRec(body["session_id"], rt.name, cred, r.extra["res"], r.extra["mode"], r.gen,
                                 s.token if s else 0, s.epoch if s else 0)
                if rt.silent or r.jumped or r.extra.get("excused"):
                    rec.excused.add("silent")
                if now < self.risk_until:
                    rec.excused.add("fault_window")
                if s is None or s.state not in inv.LIVE:
                    rec.ended = "gone before its answer"
                rt.sessions.append(rec)
            elif mtype == "ResourceCommand":
                s = self.engine.sessions.get(r.extra["sid"])
                after = (s.state, s.suspended, s.credential_ref["id"]) if s else None
                inv.actuation_accepted(r.extra["before"], after, self.invalid_since, r.sent, CRED_GRACE_S,
                                       DRIVES[r.extra["res"]])
        except Violation as v:
            self._late_fail(v.name, v.detail)
            raise

    def _snapshot(self, sid):
        s = self.engine.sessions.get(sid)
        return (s.state, s.suspended, s.credential_ref["id"]) if s else None

    def _pick(self, rt, k, live=True):
        ss = rt.live(self.gen) if live else [s for s in rt.sessions if s.gen == self.gen]
        return ss[k % len(ss)] if ss else None

    async def _heartbeat_now(self, rt):
        ids = [s.sid for s in rt.live(self.gen)]
        if not ids or not rt.connected or self.engine is None:
            return
        msg = protocol.make("Heartbeat", {"session_ids": ids}, rt.name)
        r = Req(rt, msg, self.gen, ANSWER_SLACK_S)
        self.reqs.append(r)
        # Awaited inline, not as a task: a heartbeat of sessions that are not suspended does
        # not yield, so no engine timer runs between a clock jump and this heartbeat.
        r.task = asyncio.get_running_loop().create_future()
        try:
            r.task.set_result(await self.engine.handle(rt.name, msg, origin=rt.send))
        except Exception as exc:
            r.task.set_exception(exc)
        self._answered(r)

    async def _heartbeats(self):
        while True:
            await asyncio.sleep(RUNTIME_HB_S)
            if self.engine is None:
                continue
            try:
                inv.engine_tables(self.engine)    # continuously, where cheap: between the steps too
            except Violation as v:
                self._late_fail(v.name, v.detail)
            for rt in self.rts.values():
                if not rt.silent and rt.connected:
                    ids = [s.sid for s in rt.live(self.gen)]
                    if ids:
                        self.request(rt, "Heartbeat", {"session_ids": ids})

    def _excuse_all(self, why, rts=None):
        for rt in (rts or self.rts.values()):
            for s in rt.live(self.gen):
                s.excused.add(why)
        for r in self.reqs:
            if r.reply is None and (rts is None or r.rt in rts):
                r.extra["excused"] = True

    # ---- steps: runtime requests ---------------------------------------------------------
    async def do_acquire(self, rt, cred, res, mode, wait_ms):
        rt = self.rts[rt]
        c = self.creds.items[cred]
        body = {"fay_id": c["fay_id"], "resource_id": self.creds.res(res), "access_mode": mode,
                "credential": c["credential"]}
        if wait_ms:
            body["wait_ms"] = wait_ms
        r = self.request(rt, "AuthRequest", body, bound=wait_ms / 1000.0 + ANSWER_SLACK_S,
                         extra={"cred": cred, "res": res, "mode": mode})
        if not wait_ms:
            await self.wait(r, 3.0)

    async def do_heartbeat(self, rt):
        rt = self.rts[rt]
        if not rt.connected:
            await self.do_reconnect(rt.name)
        rt.silent = False
        await self._heartbeat_now(rt)

    async def do_release(self, rt, k):
        rt = self.rts[rt]
        s = self._pick(rt, k)
        if s is not None:
            await self.wait(self.request(rt, "SessionRelease", {"session_id": s.sid}), 3.0)

    async def do_command(self, rt, k):
        rt = self.rts[rt]
        s = self._pick(rt, k, live=False)
        if s is not None:
            await self._command(rt, s)

    async def _command(self, rt, s):
        op, args = OPS[s.res]
        body = {"session_id": s.sid, "op": op, "args": b64u_encode(args)}
        await self.wait(self.request(rt, "ResourceCommand", body, extra={"sid": s.sid, "res": s.res,
                                                                        "before": self._snapshot(s.sid)}), 3.0)

    async def do_handover(self, rt, cred, res, mode):
        rt = self.rts[rt]
        c = self.creds.items[cred]
        body = {"resource_id": self.creds.res(res), "to_fay_id": c["fay_id"], "access_mode": mode,
                "credential": c["credential"], "timeout_ms": 1500}
        self.request(rt, "HandoverRequest", body, bound=1.5 + ANSWER_SLACK_S,
                     extra={"cred": cred, "res": res, "mode": mode})
        await asyncio.sleep(0.05)

    async def do_answer_handover(self, rt, accept):
        rt = self.rts[rt]
        if rt.offers:
            hid = rt.offers.pop()
            await self.wait(self.request(rt, "HandoverResponse", {"handover_id": hid, "accept": bool(accept)}), 3.0)

    async def do_retry_last(self, rt):
        """The runtime sends its last request again, same message id (a retry after a lost
        answer): the answer must be the first one, and nothing is done twice."""
        rt = self.rts[rt]
        r = rt.last
        if r is None or r.gen != self.gen or r.reply is None or r.msg["message_type"] == "Heartbeat":
            return
        before = len(self.engine.sessions)
        again = await self.engine.handle(rt.name, r.msg, origin=rt.send)
        if again != r.reply:
            self.fail("wrong_answer", "a retried %s was answered %r, first %r" % (r.msg["message_type"], again,
                                                                                  r.reply))
        if r.msg["message_type"] == "AuthRequest" and len(self.engine.sessions) > before:
            self.fail("wrong_answer", "a retried AuthRequest made a new session")

    async def do_revoke(self, cred):
        c = self.creds.items[cred]
        if c["id"] in self.invalid_since:
            return
        gen = self.engine.authorizer.generation
        await asyncio.get_running_loop().run_in_executor(None, self.creds.revoke, cred, int(self.wall()))
        # The engine re-reads the store on its own: from the moment it has, nothing may be
        # granted or actuated under this credential any more.
        end = time.monotonic() + REVOCATION_SEEN_S
        while self.engine.authorizer.generation == gen:
            if time.monotonic() > end:
                self.fail("revocation_not_seen", "the engine did not pick up a revocation imported into its store "
                          "within %.1f s" % REVOCATION_SEEN_S)
            await asyncio.sleep(0.01)
        self.invalid_since[c["id"]] = time.monotonic()

    async def do_expire(self):
        self.wall_offset += EXPIRE_STEP_S
        now = time.monotonic()
        for c in self.creds.items.values():
            if c["not_after"] <= self.wall():
                self.invalid_since.setdefault(c["id"], now)
        # A runtime that has not noticed drives on at once, before any timer of the engine ran.
        for rt in self.rts.values():
            for s in rt.live(self.gen):
                if self.creds.items[s.cred]["id"] in self.invalid_since:
                    await self._command(rt, s)

    async def do_silence(self, rt, disconnect):
        """The runtime stops heartbeating for longer than its timeout (the engine clock jumps);
        with `disconnect` its connection drops too (the AND rule then ends its sessions)."""
        rt = self.rts[rt]
        rt.silent = True
        self._excuse_all("silent", [rt])
        if disconnect and rt.connected:
            self.engine.disconnected(rt.name, rt.send)
            rt.connected = False
        others = [o for o in self.rts.values() if o is not rt and not o.silent]
        for o in others:
            await self._heartbeat_now(o)
        for r in self.reqs:
            if r.reply is None:
                r.jumped = True
        self.mono_offset += JUMP_S
        for o in others:
            await self._heartbeat_now(o)

    async def do_tick(self):
        """Time passes: the engine clock moves on by 0.8 of the heartbeat timeout, every runtime
        that is not silenced heartbeating just before and just after (in time)."""
        healthy = [o for o in self.rts.values() if not o.silent and o.connected]
        for o in healthy:
            await self._heartbeat_now(o)
        for r in self.reqs:
            if r.reply is None:
                r.jumped = True
        self.mono_offset += 0.8 * LIVENESS[1] / 1000.0
        for o in healthy:
            await self._heartbeat_now(o)

    async def do_reconnect(self, rt):
        rt = self.rts[rt] if isinstance(rt, str) else rt
        if not rt.connected:
            rt.connected = True
            self.engine.connected(rt.name, rt.send)

    # ---- steps: the operator (a person at the console: takeover.py) --------------------------
    async def _operator(self, call, *args):
        """One control-room call; its refusals (CapError) are answers, anything else raised is
        a violation, as a runtime request's would be."""
        try:
            return await asyncio.wait_for(call(self.engine, OPERATOR, *args), ANSWER_SLACK_S)
        except CapError as exc:
            self.note("  operator %s -> %s" % (call.__name__, exc.code))
            if exc.code == "E_INTERNAL":
                self.fail("internal_error", "operator %s answered E_INTERNAL: %s" % (call.__name__, exc))
            return None
        except asyncio.TimeoutError:
            self.fail("no_answer", "operator %s had no answer in %.0f s" % (call.__name__, ANSWER_SLACK_S))
        except Exception as exc:
            self.fail("request_raised", "operator %s raised %r" % (call.__name__, exc))

    async def do_take(self, res):
        """The operator takes the resource at once: its holder's session ends (operator_takeover)."""
        hold = await self._operator(takeover.take, self.creds.res(res))
        if hold is not None:
            self.note("  operator take -> epoch %d" % hold.epoch)

    async def do_op_act(self, res):
        op, args = OPS[res]
        hold = takeover.hold_of(self.engine, self.creds.res(res), OPERATOR)
        if await self._operator(takeover.act, self.creds.res(res), op, args) is not None:
            # Accepted: the operator must hold it, live, in the engine and (checked next) on the board.
            if hold is None or hold.state not in inv.LIVE:
                self.fail("actuation_accepted", "an operator command on %s was accepted without a live hold" % res)

    async def do_hand_back(self, res, cred):
        """The operator gives the resource to the Fay behind `cred`: its waiting AuthRequest now,
        or its next one within 1.5 s (in the background, as the console's hand-back is)."""
        r = await self._operator(takeover.hand_back, self.creds.res(res), self.creds.items[cred]["fay_id"], 1.5)
        if r is not None:
            self.note("  operator hand_back -> %s" % r["result"])

    async def do_op_release(self, res):
        await self._operator(takeover.release, self.creds.res(res))

    # ---- steps: faults -------------------------------------------------------------------------
    async def do_fault(self, direction, fault, name, count, delay):
        # Lost frames may cost a request all its tries (LinkDown), and heartbeats a lease: the
        # sessions live now, and those granted while the fault may still act, are excused.
        self._risk("link_fault", 3 * LINK_TIMEOUT * (LINK_RETRIES + 1) + (delay or 0))
        self.vb.cable.inject_matching(direction, fault, (name,), count, delay)

    async def do_cut(self, seconds):
        self._risk("cable_cut", seconds + LINK_TIMEOUT * (LINK_RETRIES + 1) + 0.5)
        self.vb.cable.disconnect()
        await asyncio.sleep(seconds)
        self.vb.cable.reconnect()

    def _risk(self, why, seconds):
        self._excuse_all(why)
        self.risk_until = max(self.risk_until, time.monotonic() + seconds)

    async def do_kill_engine(self):
        await self._kill_engine()
        await self._start_engine()

    async def do_power_cycle(self):
        """The board dies under the running engine (power lost), which must notice within a
        heartbeat period, end or suspend the sessions on it and say so in its log; then the
        board comes back (a new port: the engine is restarted in front of it)."""
        live = [s for s in self.engine.registry.live()]
        self._excuse_all("board_died")
        mark = time.monotonic()
        self.vb.crash()
        await asyncio.sleep(DETECT_S)
        still = [s for s in live if s.state == "active" and not s.suspended]
        if still:
            self.fail("dead_board_unnoticed", "%.1f s after the board died the engine still calls %d session(s) "
                      "active and unsuspended: %s" % (DETECT_S, len(still), [s.resource_id for s in still]))
        said = [rec for t, rec in self.log.records if t >= mark and rec.levelno >= logging.INFO
                and rec.name.startswith("capwarden")]
        if not said:
            self.fail("dead_board_unlogged", "%.1f s after the board died the engine's log says nothing" % DETECT_S)
        await self._kill_engine()
        await asyncio.get_running_loop().run_in_executor(None, shared_board().power_cycle)
        await self._start_engine()

    async def do_reboot(self):
        """The board resets under the running engine, on the same port: the engine hears the new
        boot id and must end every session on it (board_reset), and hold nothing stale."""
        self._risk("board_reset", LINK_TIMEOUT * (LINK_RETRIES + 1) + 1.0)
        await asyncio.get_running_loop().run_in_executor(None, shared_board().reboot_in_place)

    async def do_plug(self, res, present):
        try:
            await self.board.sim_plug(self.index[res], present)
        except (DeviceError, LinkError):
            pass

    async def do_wait(self, seconds):
        await asyncio.sleep(seconds)

    async def do_churn(self, rt, n):
        """n sessions, one after another: granted, suspended (their runtime goes silent), a
        command tried (it must be refused), released. Load on the board's per-session tables."""
        name = rt
        rt = self.rts[rt]
        cred = [k for k, v in CREDENTIALS.items() if v[0] == name and v[2] == "descriptor"][0]
        for _ in range(n):
            before = {s.sid for s in rt.sessions}
            await self.do_acquire(name, cred, "led", "write", 0)
            new = [s for s in rt.sessions if s.sid not in before and s.ended is None]
            await self.do_silence(name, False)
            for _ in range(40):
                if all(s.suspended or s.ended for s in new):
                    break
                await asyncio.sleep(0.025)
            for s in new:
                if s.ended is None:
                    await self._command(rt, s)           # a suspended session: refused
                    await self.wait(self.request(rt, "SessionRelease", {"session_id": s.sid}), 3.0)
            await self.do_heartbeat(name)

    async def do_race(self, steps):
        """Several requests at the same moment (two runtimes after one motor, a release
        crossing a command...): where the engine's awaits interleave."""
        await asyncio.gather(*(getattr(self, "do_" + st[0])(*st[1:]) for st in steps))

    async def do_zombie_actuate(self):
        """A host that still has an old grant's token and epoch (a killed engine, an ended
        session) drives the resource directly: the board must refuse."""
        held = {(s.token, s.epoch) for s in self.engine.registry.live()}
        old = [(s.token, s.epoch, s.res) for rt in self.rts.values() for s in rt.sessions
               if s.ended is not None and s.epoch] + self.dead
        old = [o for o in old if (o[0], o[1]) not in held]
        if not old:
            return
        token, epoch, res = old[-1]
        op, args = OPS[res]
        try:
            await self.board.actuate(self.index[res], token, epoch, op, args)
        except (DeviceError, LinkError):
            return
        self.fail("stale_actuation_accepted", "the board accepted op %d on %s from token %d epoch %d, a grant that "
                  "had ended" % (op, res, token, epoch))

    # ---- checking ------------------------------------------------------------------------------
    async def check(self):
        if self.violation:
            raise self.violation
        e = self.engine
        now = time.monotonic()
        inv.engine_tables(e)
        inv.live_with_invalid_credential(e, self.invalid_since, now, GRACE_S)
        for r in self.reqs:
            if r.reply is None and not r.excused and now - r.sent > r.bound:
                self.fail("no_answer", "%s sent %.1f s ago has no answer" % (r.msg["message_type"], now - r.sent))
        entries = inv.audit_entries(self.creds.audit_path)
        if len(entries) != self.audit.seq:
            self.fail("audit_chain", "the log holds %d entries, the engine wrote %d" % (len(entries), self.audit.seq))
        inv.denies_audited(self.denies, entries)
        errors = [rec for _t, rec in self.log.records if rec.levelno >= logging.ERROR]
        if len(errors) > self.errors_seen:
            rec = errors[self.errors_seen]
            self.fail("engine_error_logged", "%s: %s %s" % (rec.name, rec.getMessage(),
                                                            rec.exc_text or (rec.exc_info and rec.exc_info[1])))
        if self.vb.cable is None or not self.vb.cable.connected or not self.vb.alive():
            return
        try:
            grants = await asyncio.wait_for(inv.board_grants(self.board, [self.index[n] for n in RESOURCES]), 5)
        except (LinkError, DeviceError, asyncio.TimeoutError):
            return   # the board cannot be read now (a fault on the line); checked at the next step
        inv.exclusive_holders_board(grants, self.names)
        self.ownership.check(e, self.handle, grants, self.names, time.monotonic())

    async def _finish(self):
        """Heal every fault, let the system converge, and check once more: nothing may be left
        that a heartbeat period should have cleared."""
        cable = self.vb.cable
        cable.clear_faults()
        cable.reconnect()
        for rt in self.rts.values():
            await self.do_reconnect(rt.name)
        # Frames the cable still holds (delays) reach their end first.
        while any(d.held for d in cable._dirs.values()):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        await self.check()
        # Anything the ownership check has seen but not yet judged gets its full grace.
        deadline = time.monotonic() + GRACE_S + 0.3
        while (self.ownership.orphans or self.ownership.phantoms) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await self.check()
        pending = [r for r in self.reqs if r.reply is None and not r.excused and not r.task.done()]
        for r in pending:
            await self.wait(r, max(0.0, r.sent + r.bound - time.monotonic()))
        await self.check()


def run(steps):
    return Runner(steps).run()


# ---- shrinking -------------------------------------------------------------------------------

def shrink(steps, name, budget_s, tries=2):
    """Remove steps while the schedule still fails with invariant `name` (delta debugging).
    Each candidate is tried up to `tries` times: timing faults do not fail every run.
    Returns (shortest failing schedule, its last run)."""
    end = time.monotonic() + budget_s
    best, best_run = list(steps), None
    n = 2
    while len(best) > 1 and time.monotonic() < end:
        chunk = max(1, len(best) // n)
        shrunk = False
        for start in range(0, len(best), chunk):
            if time.monotonic() >= end:
                break
            cand = best[:start] + best[start + chunk:]
            if not cand:
                continue
            for _ in range(tries):
                STATS["shrink_runs"] += 1
                r = run(cand)
                if r.violation is not None and r.violation.name == name:
                    best, best_run, shrunk = cand, r, True
                    break
            if shrunk:
                break
        if shrunk:
            n = max(2, n - 1)
        elif chunk == 1:
            break
        else:
            n = min(len(best), n * 2)
    return best, best_run


def literal(steps):
    """The schedule as Python source, one step a line (for test_regressions.py)."""
    return "[\n" + "".join("    %r,\n" % (s,) for s in steps) + "]"
