"""Requests and their answers over one transport: ids, retries, timeouts, flow control, link state.

- Every request carries a request id; a retry re-sends the same id (with a new link sequence
  number), and the agent answers a retried request from its replay cache, so retries are
  idempotent (faults.md 31, 49).
- Flow control: the bytes of requests not yet answered never exceed the receive buffer the
  board announced, so the host cannot overrun a 256-byte UART or USB buffer.
- A request that exhausts its retries while the board said nothing at all marks the link down
  (LinkDown event); the next frame from the board marks it up again.
- Every request gets one final answer: its own response (request id | 0x80) or ERROR; ACQUIRE
  may first get QUEUED. Any other answer is a BadReply, never fields misread as another's.

- Authentication (issue 12, docs/link-auth.md): with a link key every frame out is sealed (a
  counter and a tag after the payload) and every frame in is verified before anything else
  looks at it; one that fails is dropped and counted (`auth.bad_tag`, `.replay`, `.no_key`).
  ANNOUNCE alone is taken unauthenticated, and only as a reason to say HELLO again. Without a
  key (`key=None`) frames carry no trailer: only the tests' scripted boards speak that way; a
  board refuses every such frame.

What the answers and events mean for a board (grants, resets, the resource table) is Board's
(capwarden.link.board); this module knows only frames, ids and time.
"""

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from capshared import codec, errors, messages
from capshared.limits import AUTH_SIZE, DEFAULT_RX_BUFFER, RID_MAX
from capwarden.errors import BadReply, BadRequest, DeviceError, LinkClosed, LinkError, LinkTimeout
from capwarden.link.events import LinkDown, LinkUp
from capwarden.link.linkauth import OK, HostAuth

_HELLO = messages.ID["HELLO"]

# Every frame in and out, readable after a failed run: `capwarden ping --trace`, or
# logging.getLogger("capwarden.link").setLevel(logging.DEBUG) in a test.
log = logging.getLogger("capwarden.link")


@dataclass(slots=True)
class _Pending:
    name: str
    fields: dict
    future: asyncio.Future  # replaced after each attempt's timeout, for the next attempt
    size: int = 0           # the bytes of its last frame, held against the board's rx_buf
    credited: bool = False  # those bytes are held now
    queued: bool = False    # the board answered QUEUED: the request waits on the board


class RequestLink:
    """Requests over one transport, and the frames that answer them. Use from a single event loop.

    Subclasses give the frames a meaning through four hooks: _on_event (a frame with request id
    0), _on_answer (the final answer to a pending request), _on_late_answer (an answer to a
    request no longer pending), _heard (any frame came).
    """

    def __init__(self, transport, timeout=1.0, retries=2, clock=time.monotonic, key=None):
        self.auth = HostAuth(key) if key is not None else None
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.clock = clock
        self.up = False
        self.tx_frames = 0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self._decoder = codec.StreamDecoder(trailer=self.auth is not None)
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

    def subscribe(self, callback):
        """callback(event) for every ResourceEvent, GrantEnded, Failsafe, Reset, LinkDown, LinkUp."""
        self._subscribers.append(callback)

    async def request(self, name, fields=None, timeout=None, retries=None, extra_wait=0.0, resync=True):
        """Send request `name` and return the final response's fields.

        Raises BadRequest (fields the message cannot carry: nothing was sent), DeviceError (the
        board refused: .code is the code name), BadReply (the board answered with another
        message), LinkTimeout (no answer after the retries), DeviceReset (the board rebooted
        meanwhile), LinkClosed. `resync`: on an authenticated link without a session (none yet,
        or ended when a request went unanswered while the board said nothing), say HELLO first
        (the board's one shared handshake, _resync); when it fails, its LinkTimeout or LinkError,
        which says why, is this request's. The handshake's own requests pass False.
        """
        if self._closed:
            raise LinkClosed("link closed")
        fields = fields or {}
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        try:
            payload = codec.encode_payload(name, fields)  # checked before anything is sent
        except codec.CodecError as exc:
            raise BadRequest("cannot send %s: %s" % (name, exc)) from None
        mid = messages.ID[name]
        rid = None
        loop = asyncio.get_running_loop()
        p = _Pending(name, fields, loop.create_future())
        started = self.clock()
        try:
            for attempt in range(retries + 1):
                if self.auth is not None and resync and not self.auth.has_session():
                    await self._resync()
                await self._take_credit(p, len(wire) if attempt else (lambda: self._estimate(mid, payload)))
                # From here to the write nothing is awaited, so request id, link sequence and
                # counter are taken in the order the frames go out: a frame that waited for
                # credit while others went first would otherwise carry a counter below the
                # board's newest (refused as a replay) or a request id far behind its newest
                # (refused as stale), and with many runtimes at once that was most of them.
                if rid is None:
                    rid = self._next_rid()
                    self._pending[rid] = p
                if self.auth is None:
                    wire = codec.frame_bytes(mid, rid, payload, self._next_seq())
                elif self.auth.has_session() or mid == _HELLO:
                    wire = self._sealed(mid, rid, payload)
                else:
                    raise LinkError("no authenticated session with the board (a HELLO failed meanwhile)")
                if attempt:
                    wire = b"\x00" + wire  # resynchronise the board's decoder before a retry
                self._resize_credit(p, len(wire))
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
                if self.auth is not None and resync:
                    # The board may have rebooted unheard, or taken another engine's session:
                    # the next request says HELLO first.
                    self.auth.retire()
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
        if _timed_out(p.future):
            p.future = asyncio.get_running_loop().create_future()  # the next attempt's
            return False
        return True

    def _sealed(self, mid, rid, payload):
        # header | payload | counter | tag, framed. A HELLO is tagged under the key alone.
        raw = bytes((self._next_seq(), mid, rid & 0xFF, (rid >> 8) & 0xFF)) + payload
        if mid == _HELLO:
            ctr, tag = 0, self.auth.hello_tag(raw)
        else:
            ctr, tag = self.auth.seal(raw)
        return codec.raw_frame_bytes(raw + ctr.to_bytes(4, "little") + tag)

    async def _resync(self):
        """Make a new authenticated session (the Board says HELLO, one handshake for all who
        need it). Raises the handshake's LinkError."""

    def _next_rid(self):
        while True:
            self._rid = self._rid % RID_MAX + 1
            if self._rid not in self._pending:
                return self._rid

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    async def _take_credit(self, p, size):
        # size: the frame's wire size, or a function that bounds it from above, called only
        # when other requests are in flight (an idle link takes any frame: the estimate, a
        # whole encoding of the frame, was a tenth of a request's time on the host). The caller
        # corrects the credit to the real size before anything is awaited (_resize_credit).
        self._release_credit(p)
        while self._inflight != 0:
            if callable(size):
                size = size()
            if self._inflight + size <= self._rx_buf:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._credit_waiters.append(waiter)
            await waiter
        if callable(size):
            size = 0            # nothing in flight: corrected once the frame is made
        self._inflight += size
        self.max_inflight = max(self.max_inflight, self._inflight)
        p.size = size
        p.credited = True

    def _estimate(self, mid, payload):
        # The wire size of a frame not made yet, from above: the same frame unsealed, plus the
        # trailer and every byte of it (and of the request id) escaped. Credited first, then
        # corrected to the real size once the frame is sealed (_resize_credit).
        n = len(codec.frame_bytes(mid, 1, payload, 0)) + 4
        return n + 2 * AUTH_SIZE if self.auth is not None else n

    def _resize_credit(self, p, size):
        if p.credited:
            self._inflight += size - p.size
            p.size = size
            self.max_inflight = max(self.max_inflight, self._inflight)

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

    def _fail_pending(self, exc, only=None):
        """Settle every pending request (those for which only(p) holds) with `exc`."""
        for p in list(self._pending.values()):
            if not p.future.done() and (only is None or only(p)):
                p.future.set_exception(exc)

    # ---- receiving ------------------------------------------------------------------------
    def _on_bytes(self, data):
        self.rx_bytes += len(data)
        for frame in self._decoder.feed(data):
            self._on_frame(frame)

    def _on_lost(self, exc):
        self._set_up(False, str(exc))
        self._fail_pending(exc)

    def _authentic(self, f):
        # Verified before its meaning is looked at; a HELLO_R first starts the session it
        # proposes (its board nonce and boot id), which its own tag must then prove.
        a = self.auth
        if a is None or f.name == "ANNOUNCE":
            return True
        raw, ctr, tag = f.auth
        if f.name == "HELLO_R" and not a.has_session() and a.nh is not None:
            p = self._pending.get(f.rid)
            if p is None or p.name != "HELLO" or p.fields.get("nh") != a.nh:
                a.no_key += 1
                return False
            a.begin(f.fields["nb"], f.fields["boot_id"])
            if a.verify(raw, ctr, tag) != OK:
                a.end()
                return False
            return True
        return a.verify(raw, ctr, tag) == OK

    def _on_frame(self, f):
        if not self._authentic(f):
            a = self.auth
            n = a.bad_tag + a.replay + a.no_key
            if n & (n - 1) == 0:    # the 1st, 2nd, 4th, 8th... : counted, never a flood of lines
                log.warning("dropped a %s frame that is not authentic: %d so far (bad tag %d, replay %d, "
                            "no session %d)", f.name, n, a.bad_tag, a.replay, a.no_key)
            return
        self._last_rx = self.clock()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<- %s rid=%d seq=%d %r", f.name, f.rid, f.seq, f.fields)
        self._heard()
        if not f.rid:
            self._on_event(f)
            return
        p = self._pending.get(f.rid)
        if p is not None and f.name != "QUEUED" and _timed_out(p.future):
            # The answer came just after this attempt's timer: it is the answer still.
            p.future = asyncio.get_running_loop().create_future()
        if p is None or p.future.done():
            self._on_late_answer(f)   # a late or replayed answer to a request already settled
        elif f.name == "QUEUED":
            p.queued = True
            self._release_credit(p)
        elif f.name == "ERROR":
            code = errors.NAME.get(f.fields["code"], "E_INTERNAL")
            p.future.set_exception(DeviceError(code, "%s (%s refused by the board, detail %d)" % (
                errors.text(f.fields["code"]), p.name, f.fields["detail"])))
        elif f.mid != messages.ID[p.name] | 0x80:
            # Its fields would be read as another message's (a board flashed by another version,
            # a replay cache answering a request id reused after 65535 others).
            p.future.set_exception(BadReply("the board answered %s with %s (rid %d): flash it again with "
                                            "capwarden flash if this repeats" % (p.name, f.name, f.rid)))
        else:
            self._on_answer(p, f)

    def _set_up(self, up, why):
        if up != self.up:
            self.up = up
            if not up:
                # A request the board queued would otherwise wait out its whole wait_ms (up to
                # minutes) for an answer from a board that no longer answers anything: it fails
                # now. Should the board grant it after all, that answer comes as an OrphanGrant.
                self._fail_pending(LinkTimeout("the board stopped answering (%s) while this request waited in "
                                               "its queue" % why), only=lambda p: p.queued)
            self._emit(LinkUp(why) if up else LinkDown(why))

    def _emit(self, event):
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:  # a subscriber's bug must not break the link
                log.exception("event subscriber failed")

    # ---- hooks ----------------------------------------------------------------------------
    def _heard(self):
        """A frame came from the board (any frame, before its meaning is looked at)."""

    def _on_event(self, f):
        """A frame with request id 0: an event or announce."""

    def _on_answer(self, p, f):
        """The final answer `f` to pending request `p`: settles p.future."""
        p.future.set_result(f.fields)

    def _on_late_answer(self, f):
        """An answer to a request no longer pending (given up, or a replayed copy)."""


_TIMEOUT = object()


def _timed_out(future):
    return future.done() and not future.cancelled() and future.exception() is None and future.result() is _TIMEOUT


def _expire(future):
    if not future.done():
        future.set_result(_TIMEOUT)
