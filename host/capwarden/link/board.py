"""The host's client for one board: async requests with timeouts, retries and flow control.

    board = Board(open_transport("/dev/ttyACM0"))
    info = await board.open()                  # HELLO + resource table
    grant = await board.acquire(res, MODE_WRITE, session, lease_ms=3000)
    await board.actuate(res, session, grant.epoch, op=1, args=b"...")
    await board.release(res, session, grant.epoch)

- Every request carries a request id; a retry re-sends the same id (with a new link sequence
  number), and the agent answers a retried request from its replay cache, so retries are
  idempotent (faults.md 31, 49).
- Flow control: the bytes of requests not yet answered never exceed the receive buffer the
  board announced, so the host cannot overrun a 256-byte UART or USB buffer.
- A new boot id (ANNOUNCE, or HELLO_R after a retry) means the board reset: pending requests
  fail with DeviceReset and subscribers get a Reset event (every grant on it is gone).
- A request that exhausts its retries marks the link down (LinkDown event); the next frame
  from the board marks it up again.
- Restarts (issue 9): HELLO_R tells a new host the board's heartbeat high-water mark and newest
  request id. heartbeat(n) sends the board's mark at open plus n, so a restarted engine's
  counter, which starts again at 1, renews leases at once (a frozen n still renews nothing);
  request ids continue from the board's newest, so the board's late-copy window (capagent.link)
  takes them as new.
- An ACQUIRE_R or HANDOVER_R for a request that is no longer pending (the host gave up, or a
  late copy was executed) and that is not the answer this host already took is reported as
  an OrphanGrant: nobody here owns that grant.
"""

import asyncio
import collections
import logging
import random
import time

from capshared import codec, errors, messages
from capshared.limits import (CLASSES, DEFAULT_RX_BUFFER, MODE_NAMES, PROTOCOL_VERSION, REASONS, RES_STATE_NAMES, RID_MAX,
                              U32_LIMIT)
from capwarden.errors import DeviceError, DeviceReset, LinkClosed, LinkError, LinkTimeout
from capwarden.link.events import (Failsafe, GrantEnded, LinkDown, LinkUp, OrphanGrant, Reset, ResourceEvent)
from capwarden.link.types import AuditEntry, AuditRing, BoardInfo, Grant, ResourceInfo

# Grants this host took (rid -> (session, epoch)), so a replayed copy of an answer already
# taken is not mistaken for an orphan. Bounded: the oldest go first.
SETTLED_GRANTS = 256


# Every frame in and out, readable after a failed run: `capwarden ping --trace`, or
# logging.getLogger("capwarden.link").setLevel(logging.DEBUG) in a test.
log = logging.getLogger("capwarden.link")


class _Pending:
    __slots__ = ("name", "fields", "future", "size", "credited", "queued")

    def __init__(self, name, fields, future):
        self.name = name
        self.fields = fields
        self.future = future
        self.size = 0
        self.credited = False
        self.queued = False


class Board:
    """One board on one transport. Use from a single event loop."""

    def __init__(self, transport, timeout=1.0, retries=2, clock=time.monotonic):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.clock = clock
        self.info = None
        self.up = False
        self.tx_frames = 0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self._decoder = codec.StreamDecoder()
        self._pending = {}
        self._subscribers = []
        self._rid = random.randint(1, RID_MAX)  # a fresh host never collides with a replay cache
        self._seq = random.randint(0, 255)
        self._rx_buf = DEFAULT_RX_BUFFER
        self._inflight = 0
        self.max_inflight = 0  # the most request bytes ever unanswered (<= the board's rx_buf)
        self._credit_waiters = []
        self._closed = False
        self._last_rx = float("-inf")   # when the last frame came from the board (self.clock)
        self._refresh = None
        self._hb_base = 0          # the board's heartbeat high-water mark when we said HELLO
        self._settled = collections.OrderedDict()

    # ---- lifecycle ------------------------------------------------------------------------
    async def open(self):
        """Open the transport, say HELLO, read the resource table. Returns BoardInfo."""
        self.transport.set_receiver(self._on_bytes, self._on_lost)
        await self.transport.open()
        # A bare delimiter ends whatever partial frame the line holds (mpremote's exit bytes,
        # noise), so our first frame is not glued to garbage.
        self._write(b"\x00")
        self.info = await self._read_info(number_on=True)
        self.up = True
        return self.info

    async def close(self):
        self._closed = True
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(LinkClosed("link closed"))
        self._pending.clear()
        await self.transport.close()

    async def __aenter__(self):
        await self.open()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def subscribe(self, callback):
        """callback(event) for every ResourceEvent, GrantEnded, Failsafe, Reset, LinkDown, LinkUp."""
        self._subscribers.append(callback)

    # ---- requests -------------------------------------------------------------------------
    async def request(self, name, fields=None, timeout=None, retries=None, extra_wait=0.0):
        """Send request `name` and return the final response's fields.

        Raises DeviceError (the board refused: .code is the code name), LinkTimeout (no answer
        after the retries), DeviceReset (the board rebooted meanwhile), LinkClosed.
        """
        if self._closed:
            raise LinkClosed("link closed")
        fields = fields or {}
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        payload = codec.encode_payload(name, fields)  # CodecError before anything is sent
        mid = messages.ID[name]
        rid = self._next_rid()
        loop = asyncio.get_running_loop()
        p = _Pending(name, fields, loop.create_future())
        self._pending[rid] = p
        started = self.clock()
        try:
            for attempt in range(retries + 1):
                wire = codec.frame_bytes(mid, rid, payload, self._next_seq())
                if attempt:
                    wire = b"\x00" + wire  # resynchronise the board's decoder before a retry
                await self._take_credit(p, len(wire))
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("-> %s rid=%d try=%d %r (%d bytes)", name, rid, attempt + 1, fields, len(wire))
                self._write(wire)
                wait = timeout + (extra_wait if attempt == 0 or p.queued else 0.0)
                if await self._answered(p, wait):
                    return p.future.result()
                # No answer in time: retry with the same request id. A board that queued the
                # request (QUEUED) had wait_ms more; a retry then replays its final answer.
            if self._last_rx < started:
                # Nothing at all came from the board meanwhile: the link is down. A board that
                # went on speaking (heartbeats answered, events) lost this one request only,
                # which fails; its leases and sessions are not at risk.
                self._set_up(False, "no answer to %s after %d tries" % (name, retries + 1))
            raise LinkTimeout("the board did not answer %s within %.1f s (%d tries)" % (name, timeout, retries + 1))
        finally:
            self._release_credit(p)
            self._pending.pop(rid, None)

    async def _answered(self, p, wait):
        """Wait up to `wait` s for p's answer. True when settled (result or exception).

        The timer settles the request's own future with a sentinel, so an answer costs one
        event-loop hop; wait_for(shield(...)) would make a Task per request on the hot path.
        """
        if not p.future.done():
            timer = asyncio.get_running_loop().call_later(wait, _expire, p.future)
            try:
                await p.future
            except Exception:
                pass  # inspected below
            finally:
                timer.cancel()
        if p.future.done() and not p.future.cancelled() and p.future.exception() is None \
                and p.future.result() is _TIMEOUT:
            p.future = asyncio.get_running_loop().create_future()  # the next attempt's
            return False
        return True

    def _next_rid(self):
        while True:
            self._rid = self._rid % RID_MAX + 1
            if self._rid not in self._pending:
                return self._rid

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    async def _take_credit(self, p, size):
        self._release_credit(p)
        while not (self._inflight == 0 or self._inflight + size <= self._rx_buf):
            waiter = asyncio.get_running_loop().create_future()
            self._credit_waiters.append(waiter)
            await waiter
        self._inflight += size
        self.max_inflight = max(self.max_inflight, self._inflight)
        p.size = size
        p.credited = True

    def _release_credit(self, p):
        if p.credited:
            p.credited = False
            self._inflight -= p.size
            waiters, self._credit_waiters = self._credit_waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def _write(self, data):
        self.transport.write(data)
        self.tx_frames += 1
        self.tx_bytes += len(data)

    # ---- receiving ------------------------------------------------------------------------
    def _on_bytes(self, data):
        self.rx_bytes += len(data)
        for frame in self._decoder.feed(data):
            self._on_frame(frame)

    def _on_lost(self, exc):
        self._set_up(False, str(exc))
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(exc)

    def _on_frame(self, f):
        self._last_rx = self.clock()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<- %s rid=%d seq=%d %r", f.name, f.rid, f.seq, f.fields)
        if not self.up and self.info is not None:
            self._set_up(True, "frame received")
        if f.rid:
            p = self._pending.get(f.rid)
            if p is not None and f.name != "QUEUED" and _timed_out(p.future):
                # The answer came just after this attempt's timer: it is the answer still.
                p.future = asyncio.get_running_loop().create_future()
            if p is None or p.future.done():
                # A late or replayed answer to a request already settled: harmless, unless it
                # is a grant this host never took (issue 9, defect 3).
                if f.name in _GRANT_ANSWERS and self._settled.get(f.rid) != _grant_key(f):
                    res = f.fields["res"]
                    session = f.fields["session"] if f.name == "ACQUIRE_R" else f.fields["to_session"]
                    log.warning("orphan grant: %s rid=%d for a request no longer pending %r", f.name, f.rid, f.fields)
                    self._emit(OrphanGrant(res, self._res_name(res), session, f.fields["epoch"]))
                return
            if f.name == "QUEUED":
                p.queued = True
                self._release_credit(p)
                return
            if f.name in _GRANT_ANSWERS:
                self._settle_grant(f)
            if f.name == "ERROR":
                code = errors.NAME.get(f.fields["code"], "E_INTERNAL")
                p.future.set_exception(DeviceError(code, "%s (%s refused by the board, detail %d)" % (
                    errors.text(f.fields["code"]), p.name, f.fields["detail"])))
            elif f.name == "HELLO_R" and self.info is not None and f.fields["boot_id"] != self.info.boot_id:
                p.future.set_result(f.fields)
                self._reset(f.fields)
            else:
                p.future.set_result(f.fields)
            return
        if f.name == "ANNOUNCE":
            if self.info is not None and f.fields["boot_id"] != self.info.boot_id:
                self._reset(f.fields)
        elif f.name == "EV_RESOURCE":
            self._resource_changed(f.fields)
        elif f.name == "EV_GRANT_ENDED":
            self._emit(GrantEnded(f.fields["res"], self._res_name(f.fields["res"]), f.fields["session"],
                                  f.fields["epoch"], _reason(f.fields["reason"])))
        elif f.name == "EV_FAILSAFE":
            self._emit(Failsafe(_reason(f.fields["reason"]), f.fields["resources"], f.fields["silent_ms"]))

    def _resource_changed(self, fields):
        i = fields["res"]
        state = RES_STATE_NAMES[fields["state"]] if fields["state"] < len(RES_STATE_NAMES) else "fault"
        if self.info and i < len(self.info.resources):
            self.info.resources[i].state = state
        self._emit(ResourceEvent(i, self._res_name(i), state, _reason(fields["reason"])))

    def _reset(self, hello):
        old = self.info.boot_id if self.info else None
        exc = DeviceReset("the board rebooted (boot id %s -> %s): every grant on it is gone" % (old, hello["boot_id"]))
        for p in list(self._pending.values()):
            if not p.future.done() and p.name != "HELLO":
                p.future.set_exception(exc)
        if self.info is not None:
            self.info.boot_id = hello["boot_id"]
        self._emit(Reset(old, hello["boot_id"]))
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._refresh_info())

    async def _refresh_info(self):
        try:
            self.info = await self._read_info()
        except LinkError:
            pass

    def _settle_grant(self, f):
        self._settled[f.rid] = _grant_key(f)
        self._settled.move_to_end(f.rid)
        while len(self._settled) > SETTLED_GRANTS:
            self._settled.popitem(last=False)

    def _set_up(self, up, why):
        if up != self.up:
            self.up = up
            if not up:
                # A request the board queued would otherwise wait out its whole wait_ms (up to
                # minutes) for an answer from a board that no longer answers anything: it fails
                # now. Should the board grant it after all, that answer comes as an OrphanGrant.
                exc = LinkTimeout("the board stopped answering (%s) while this request waited in its queue" % why)
                for p in list(self._pending.values()):
                    if p.queued and not p.future.done():
                        p.future.set_exception(exc)
            self._emit(LinkUp(why) if up else LinkDown(why))

    def _emit(self, event):
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:  # a subscriber's bug must not break the link
                log.exception("event subscriber failed")

    def _res_name(self, i):
        if self.info and i < len(self.info.resources):
            return self.info.resources[i].name
        return "#%d" % i

    async def _read_info(self, number_on=False):
        hello = await self.request("HELLO")
        if hello["proto"] != PROTOCOL_VERSION:
            # Another layout: its fields would be misread (a board flashed by another version).
            raise LinkError("the board speaks link protocol %d, this host %d: flash it again with "
                            "capwarden flash" % (hello["proto"], PROTOCOL_VERSION))
        self._rx_buf = max(64, hello["rx_buf"])
        self._hb_base = hello["hb_seq"]
        if number_on and hello["rid_hw"]:
            self._rid = hello["rid_hw"]  # our next request ids follow the board's newest
        version, _, name = hello["info"].decode("utf-8", "replace").partition(" ")
        resources = []
        for i in range(hello["n_res"]):
            r = await self.request("RES_INFO", {"res": i})
            resources.append(ResourceInfo(
                index=i, name=r["name"].decode("utf-8", "replace"),
                cls=CLASSES[r["cls"]] if r["cls"] < len(CLASSES) else "other",
                modes=[n for n, bit in MODE_NAMES if r["modes"] & bit],
                state=RES_STATE_NAMES[r["state"]] if r["state"] < len(RES_STATE_NAMES) else "fault",
            ))
        return BoardInfo(name=name, agent_version=version, boot_id=hello["boot_id"], protocol=hello["proto"],
                         rx_buf=hello["rx_buf"], uptime_ms=hello["uptime_ms"], resources=resources)

    # ---- the board's operations -----------------------------------------------------------
    async def ping(self, nonce=None):
        """Round trip and the board's memory. Returns dict(rtt_s, mem_free, mem_alloc, uptime_ms)."""
        nonce = random.randint(0, (1 << 30) - 1) if nonce is None else nonce
        t0 = self.clock()
        r = await self.request("PING", {"nonce": nonce})
        rtt = self.clock() - t0
        if r["nonce"] != nonce:
            raise LinkError("ping answered with the wrong nonce")
        return {"rtt_s": rtt, "mem_free": r["mem_free"], "mem_alloc": r["mem_alloc"], "uptime_ms": r["uptime_ms"]}

    async def stats(self):
        return await self.request("STATS")

    def host_counts(self):
        """What the host's own decoder dropped or heard: the other half of STATS."""
        d = self._decoder
        return {"bad_crc": d.bad_crc, "bad_frame": d.bad_frame, "overrun": d.overrun, "interrupts": d.interrupts}

    async def acquire(self, res, modes, session, lease_ms, wait_ms=0):
        r = await self.request("ACQUIRE", {"res": res, "modes": modes, "session": session,
                                           "lease_ms": lease_ms, "wait_ms": wait_ms},
                               extra_wait=wait_ms / 1000.0)
        return Grant(r["res"], r["modes"], r["session"], r["epoch"], r["lease_ms"])

    async def release(self, res, session, epoch):
        await self.request("RELEASE", {"res": res, "session": session, "epoch": epoch})

    async def handover(self, res, from_session, from_epoch, to_session, modes, lease_ms):
        r = await self.request("HANDOVER", {"res": res, "from_session": from_session, "from_epoch": from_epoch,
                                            "to_session": to_session, "modes": modes, "lease_ms": lease_ms})
        return Grant(r["res"], modes, r["to_session"], r["epoch"], lease_ms)

    async def heartbeat(self, hb_seq):
        """One frame renews every lease on the board. hb_seq must grow (a frozen one does not renew).

        Counted from this host's HELLO: the board receives its high-water mark at that time plus
        hb_seq, so a new host's first heartbeat (1) renews. Returns HEARTBEAT_R's fields, hb_seq
        back in this host's count; `grants` is how many grants the board holds.
        """
        seq = self._hb_base + hb_seq
        if seq >= U32_LIMIT:
            raise LinkError("heartbeat sequence exhausted (2**30 beats since the board booted)")
        r = dict(await self.request("HEARTBEAT", {"hb_seq": seq}))
        r["hb_seq"] -= self._hb_base
        return r

    async def audit_ring(self, from_seq=1):
        """The board's audit ring from entry `from_seq` on (faults.md 70): AuditRing(count,
        lost, entries). Read it after a failsafe: its last entry says what the board did last."""
        out = []
        lost = 0
        seq = max(1, from_seq)
        while True:
            r = await self.request("AUDIT", {"from_seq": seq})
            if not out and r["first"] > seq:
                lost = r["first"] - seq          # overwritten before we asked
            e = r["entries"]
            size = messages.AUDIT_ENTRY_SIZE
            for k in range(len(e) // size):
                b = e[k * size:(k + 1) * size]
                kind = messages.AUDIT_KINDS.get(b[0], "unknown")
                res = b[1]
                out.append(AuditEntry(
                    seq=r["first"] + k, kind=kind, res=res, name=self._res_name(res),
                    session=int.from_bytes(b[3:7], "little"), epoch=int.from_bytes(b[7:11], "little"),
                    reason=_reason(b[2]) if b[2] else "", t_ms=int.from_bytes(b[11:15], "little")))
            seq = r["first"] + len(e) // size
            if not e or seq > r["count"]:
                return AuditRing(count=r["count"], lost=lost, entries=out)

    async def suspend(self, session, suspended):
        return await self.request("SUSPEND", {"session": session, "suspended": 1 if suspended else 0})

    async def actuate(self, res, session, epoch, op, args=b""):
        r = await self.request("ACTUATE", {"res": res, "session": session, "epoch": epoch, "op": op, "args": args})
        return r["data"]

    async def end_session(self, session):
        r = await self.request("END_SESSION", {"session": session})
        return r["released"]

    async def grants(self, res):
        """[(session, epoch, modes)] held on resource `res`, all pages."""
        out = []
        start = 0
        while True:
            r = await self.request("GRANTS", {"res": res, "start": start})
            e = r["entries"]
            for i in range(0, len(e) - 8, 9):
                out.append((int.from_bytes(e[i:i + 4], "little"), int.from_bytes(e[i + 4:i + 8], "little"), e[i + 8]))
            start += len(e) // 9
            if not e or start >= r["total"]:
                return out

    async def configure(self, key, value):
        return await self.request("CONFIG", {"key": key, "value": value})

    async def sim_plug(self, res, present):
        """Unplug or replug a resource of the virtual board."""
        return await self.request("SIM_PLUG", {"res": res, "present": 1 if present else 0})

    async def to_repl(self):
        """Stop the agent (resources go safe) and return the board to its REPL."""
        await self.request("REPL", retries=0)

    def resource_index(self, name):
        for r in self.info.resources:
            if r.name == name:
                return r.index
        raise DeviceError("E_RESOURCE_UNAVAILABLE", "the board has no resource %r" % name)


_TIMEOUT = object()
_GRANT_ANSWERS = ("ACQUIRE_R", "HANDOVER_R")


def _grant_key(f):
    return (f.fields["res"], f.fields.get("session", f.fields.get("to_session")), f.fields["epoch"])


def _timed_out(future):
    return future.done() and not future.cancelled() and future.exception() is None and future.result() is _TIMEOUT


def _expire(future):
    if not future.done():
        future.set_result(_TIMEOUT)


def _reason(code):
    return REASONS[code] if code < len(REASONS) else "unknown"
