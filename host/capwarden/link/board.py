"""The host's client for one board: what the board's frames mean, on top of the request link.

    board = Board(open_transport("/dev/ttyACM0"), key=key_for("/dev/ttyACM0"))
    info = await board.open()                  # HELLO + resource table
    grant = await board.acquire(res, MODE_WRITE, session, lease_ms=3000)
    await board.actuate(res, session, grant.epoch, op=1, args=b"...")
    await board.release(res, session, grant.epoch)

Request ids, retries, timeouts, flow control and link up/down are the request link's
(capwarden.link.requests); the operations, one method per request, are in
capwarden.link.operations. This module holds the board's side of the conversation:
- A new boot id (ANNOUNCE, or HELLO_R after a retry) means the board reset: pending requests
  fail with DeviceReset and subscribers get a Reset event (every grant on it is gone).
- Restarts (issue 9): HELLO_R tells a new host the board's heartbeat high-water mark and newest
  request id. heartbeat(n) sends the board's mark at open plus n, so a restarted engine's
  counter, which starts again at 1, renews leases at once (a frozen n still renews nothing);
  request ids continue from the board's newest, so the board's late-copy window (capagent.link)
  takes them as new.
- An ACQUIRE_R or HANDOVER_R for a request that is no longer pending (the host gave up, or a
  late copy was executed) and that is not the answer this host already took is reported as
  an OrphanGrant: nobody here owns that grant.
- Events (EV_RESOURCE, EV_GRANT_ENDED, EV_FAILSAFE, EV_OVERRIDE) reach subscribers as records with names.
- Link authentication (issue 12): HELLO carries a fresh host nonce and starts the session the
  board's HELLO_R proposes (capwarden.link.linkauth.HostAuth); each try is a new HELLO with a
  new nonce. An attempt that gets no answer says HELLO again before its retry (the board may
  have rebooted, or another engine taken the line). Every HELLO goes through one handshake
  task (_handshake), shared by whoever needs a session meanwhile; its failure is theirs. An
  ANNOUNCE, which is not authenticated, is never taken as a reset by itself: it makes a HELLO,
  and HELLO_R's authenticated boot id decides.
"""

import asyncio
import collections
import os
import time

from capshared.limits import PROTOCOL_VERSION
from capshared.names import CLASSES, MODE_NAMES, RES_STATE_NAMES
from capwarden.errors import DeviceReset, LinkClosed, LinkError, LinkTimeout
from capwarden.link.events import Failsafe, GrantEnded, ManualOverride, OrphanGrant, Reset, ResourceEvent
from capwarden.link.operations import BoardOperations, reason_name
from capwarden.link.requests import RequestLink, _expire, log  # noqa: F401 (_expire: tests fire the timer)
from capwarden.link.types import BoardInfo, ResourceInfo

# Grants this host took (rid -> (session, epoch)), so a replayed copy of an answer already
# taken is not mistaken for an orphan. Bounded: the oldest go first.
SETTLED_GRANTS = 256

_GRANT_ANSWERS = ("ACQUIRE_R", "HANDOVER_R")


class Board(BoardOperations, RequestLink):
    """One board on one transport. Use from a single event loop."""

    def __init__(self, transport, timeout=1.0, retries=2, clock=time.monotonic, key=None):
        """`key`: the board's LinkKey (capwarden.link.linkauth.key_for); None only for the
        tests' scripted boards, which speak without tags."""
        super().__init__(transport, timeout=timeout, retries=retries, clock=clock, key=key)
        self.info = None
        self.announced_key_id = None   # what the board's last ANNOUNCE said (zeros: no key)
        self.override = 0              # the board's manual override mask, as its last EV_OVERRIDE said
        self._handshake_task = None
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
        self._fail_pending(LinkClosed("link closed"))
        self._pending.clear()
        await self.transport.close()

    async def __aenter__(self):
        await self.open()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # ---- what the board's frames mean -----------------------------------------------------
    def _heard(self):
        if not self.up and self.info is not None:
            self._set_up(True, "frame received")

    def _on_answer(self, p, f):
        if f.name in _GRANT_ANSWERS:
            self._settle_grant(f)
        p.future.set_result(f.fields)
        if f.name == "HELLO_R" and self.info is not None and f.fields["boot_id"] != self.info.boot_id:
            self._reset(f.fields)

    def _on_late_answer(self, f):
        # Harmless, unless it is a grant this host never took (issue 9, defect 3).
        if f.name in _GRANT_ANSWERS and self._settled.get(f.rid) != _grant_key(f):
            res = f.fields["res"]
            session = f.fields["session"] if f.name == "ACQUIRE_R" else f.fields["to_session"]
            log.warning("orphan grant: %s rid=%d for a request no longer pending %r", f.name, f.rid, f.fields)
            self._emit(OrphanGrant(res, self._res_name(res), session, f.fields["epoch"]))

    def _on_event(self, f):
        if f.name == "ANNOUNCE":
            self.announced_key_id = f.fields["key_id"]
            if self.info is not None and f.fields["boot_id"] != self.info.boot_id:
                if self.auth is None:
                    self._reset(f.fields)
                elif self._refresh is None or self._refresh.done():
                    # Anyone can send an ANNOUNCE: HELLO_R's authenticated boot id decides.
                    self._refresh = asyncio.ensure_future(self._refresh_info())
        elif f.name == "EV_RESOURCE":
            self._resource_changed(f.fields)
        elif f.name == "EV_GRANT_ENDED":
            self._emit(GrantEnded(f.fields["res"], self._res_name(f.fields["res"]), f.fields["session"],
                                  f.fields["epoch"], reason_name(f.fields["reason"])))
        elif f.name == "EV_FAILSAFE":
            self._emit(Failsafe(reason_name(f.fields["reason"]), f.fields["resources"], f.fields["silent_ms"]))
        elif f.name == "EV_OVERRIDE":
            self._override_is(f.fields["mask"], f.fields["ended"])

    def _override_is(self, mask, ended):
        """The board's override mask, from EV_OVERRIDE or from a HEARTBEAT_R (ended None: the
        event was lost). Each change is told once, whichever frame brings it first."""
        if mask == self.override:
            return
        self.override = mask
        self._emit(ManualOverride(mask, [self._res_name(i) for i in range(30) if mask >> i & 1], ended))

    def _resource_changed(self, fields):
        i = fields["res"]
        state = _state_name(fields["state"])
        if self.info and i < len(self.info.resources):
            self.info.resources[i].state = state
        self._emit(ResourceEvent(i, self._res_name(i), state, reason_name(fields["reason"])))

    def _reset(self, hello):
        old = self.info.boot_id if self.info else None
        exc = DeviceReset("the board rebooted (boot id %s -> %s): every grant on it is gone" % (old, hello["boot_id"]))
        self._fail_pending(exc, only=lambda p: p.name != "HELLO")
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

    def _res_name(self, i):
        if self.info and i < len(self.info.resources):
            return self.info.resources[i].name
        return "#%d" % i

    async def _resync(self):
        await self._handshake()

    async def _handshake(self):
        """Say HELLO and return HELLO_R's fields: every HELLO of this board (open, a request
        without a session, _read_info, rekey) goes through here. One handshake at a time: a
        caller that comes while one runs awaits that one, since a second HELLO with its own
        nonce would make the first's HELLO_R useless (and the first's retry the second's).
        Its failure reaches every caller: LinkTimeout or LinkError saying why."""
        task = self._handshake_task
        if task is None or task.done():
            task = self._handshake_task = asyncio.ensure_future(self._hello())
            task.add_done_callback(_retrieved)
        # Shielded: a caller cancelled (its own timeout) leaves the handshake to the others.
        return await asyncio.shield(task)

    async def _hello(self):
        """HELLO until answered: a new host nonce each try. Returns HELLO_R's fields. Raises
        LinkTimeout naming the likely cause (another key, no key), LinkError."""
        tries = self.retries + 1
        for attempt in range(tries):
            nh = self.auth.hello() if self.auth is not None else os.urandom(8)
            try:
                return await self.request("HELLO", {"nh": nh}, retries=0, resync=False)
            except LinkTimeout:
                if attempt + 1 < tries:
                    self._write(b"\x00")     # resynchronise the board's decoder first
        why = ""
        if self.auth is not None:
            kid = self.announced_key_id
            if kid == bytes(4):
                why = ": the board announced that it has no link key (flash it with capwarden flash)"
            elif kid is not None and kid != self.auth.key.key_id:
                why = (": the board holds another link key (key id %s, the engine's is %s): flash it again or "
                       "give the engine its key" % (kid.hex(), self.auth.key.key_id.hex()))
            else:
                why = " (no answer, or the board holds another link key)"
        raise LinkTimeout("the board did not answer HELLO within %.1f s (%d tries)%s" % (self.timeout, tries, why))

    async def _read_info(self, number_on=False):
        hello = await self._handshake()
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
            r = await self.request("RES_INFO", {"res": i}, resync=False)
            resources.append(ResourceInfo(
                index=i, name=r["name"].decode("utf-8", "replace"),
                cls=CLASSES[r["cls"]] if r["cls"] < len(CLASSES) else "other",
                modes=[n for n, bit in MODE_NAMES if r["modes"] & bit],
                state=_state_name(r["state"]),
            ))
        return BoardInfo(name=name, agent_version=version, boot_id=hello["boot_id"], protocol=hello["proto"],
                         rx_buf=hello["rx_buf"], uptime_ms=hello["uptime_ms"], resources=resources)


def _retrieved(task):
    # The handshake's exception is its callers' (each awaits the task); marked retrieved here
    # so a handshake whose every caller was cancelled logs no "never retrieved".
    if not task.cancelled():
        task.exception()


def _grant_key(f):
    return (f.fields["res"], f.fields.get("session", f.fields.get("to_session")), f.fields["epoch"])


def _state_name(state):
    return RES_STATE_NAMES[state] if state < len(RES_STATE_NAMES) else "fault"
