# The board's lock policy: who holds which resource in which modes, under which epoch and lease;
# the read-write lock rules; upgrade, handover, suspension, the lock-delay after a lost holder;
# and the FIFO of waiting requests. capagent.control only reads and writes messages around these
# methods. Everything lives in slots allocated at start-up (arrays, bytearrays): granting,
# renewing and releasing allocate nothing, so the agent's heap stays flat however long it runs.
#
# Lock rules (blueprint 2.5, faults.md 1-9):
# - read is shared; write, execute and configure are exclusive; read and exclusive exclude
#   each other. A request that asks for read plus an exclusive mode is exclusive.
# - Fair: requests wait in one FIFO ordered by the agent's own arrival numbers (never ticks).
#   A new request on a resource that already has waiters queues behind them, so a stream of
#   readers cannot starve a queued writer, and readers queued behind a writer wait for it.
# - Re-acquiring what a session already holds returns the same grant (no self-deadlock).
# - Upgrade (e.g. read -> write) is atomic when the session is the resource's only holder
#   (one step, new epoch, nobody can slip in between); otherwise it is refused, never queued:
#   two readers that both wait to upgrade would deadlock each other.
#
# What the table decides, it tells `out` (the control layer): out.answer(rid, key, i, detail)
# when a queued request (rid, key) is granted slot i, or leaves the queue refused (i = -code);
# out.ended(res, session, epoch, reason) after a grant ended; out.note(kind, i, reason) for the
# audit ring at every new epoch, handover and end.
from array import array

from micropython import const

from capshared.errors import (
    E_DEV_BAD_MESSAGE, E_DEV_FAILSAFE_PENDING, E_DEV_LOCK_DELAY, E_DEV_NO_SPACE, E_DEV_NOT_HOLDER, E_DEV_STALE_EPOCH,
    E_DEV_UPGRADE_REFUSED, E_RESOURCE_BUSY, E_RESOURCE_UNAVAILABLE,
)
from capshared.limits import (
    MAX_LEASE_MS, MODES_EXCLUSIVE, R_LEASE_EXPIRED, R_SESSION_ENDED, RES_PRESENT, U32_LIMIT,
)
from capshared.wire import AUD_END, AUD_GRANT, AUD_HANDOVER, AUD_HOLD, AUD_RESUMED, AUD_SAFE

MAX_GRANTS = 16   # default table size; a board description may set its own (board.MAX_GRANTS)
_MAX_WAITERS = const(8)
FREE = 0xFF       # a free slot's resource; never a resource index
QUEUED = -1000    # acquire() result: the request waits in the queue
_SUSP = const(1)  # flag bits of a grant slot
PEND = 2


def u32s(n):
    # n zeros, each slot an unsigned int below 2**30, in 4 bytes: half a list's cost on a 64-bit
    # port. Built from a range (one block of exactly that size, no temporary: a board's heap is
    # fragmented by the time the agent starts), then zeroed.
    a = array("I", range(n))
    for i in range(n):
        a[i] = 0
    return a


class Grants:
    def __init__(self, resources, state, clock, out, max_grants=MAX_GRANTS):
        # state: each resource's state as the agent last saw it (Control.r_state), the one view
        # every lock decision reads; a driver's own attribute may say otherwise.
        self.resources = resources
        self.state = state
        self.clock = clock
        self.out = out
        self.n_slots = max_grants
        n = len(state)
        g = max_grants
        self.res = bytearray(b"\xff" * g)     # FREE or resource index
        self.session = u32s(g)
        self.epoch = u32s(g)
        self.modes = bytearray(g)
        self.lease = u32s(g)
        self.deadline = u32s(g)
        self.r_epoch = u32s(n)                # last epoch issued per resource
        self.r_hold = bytearray(n)            # 1 while in lock-delay (safe hold)
        self.r_hold_until = u32s(n)
        self.lock_delay_ms = 0                # CFG_LOCK_DELAY_MS
        self.cap_ms = 0                       # CFG_FAILSAFE_MS: no lease outlives this silence
        self.hold_mask = 0                    # CFG_LINK_LOSS_HOLD: bit k, resource k keeps its state
        self.ov = 0                           # the manual override (Control): bit k, no exclusive grant on k
        # Per grant slot, so that they end with the grant on every path and cannot leak:
        self.flag = bytearray(g)              # _SUSP: holder suspended; PEND: in the failsafe delay
        w = _MAX_WAITERS
        self.w_used = bytearray(w)
        self.w_seq = u32s(w)
        self.w_res = bytearray(w)
        self.w_modes = bytearray(w)
        self.w_session = u32s(w)
        self.w_lease = u32s(w)
        self.w_until = u32s(w)
        self.w_rid = u32s(w)
        self.w_key = u32s(w)
        self.seq = 0

    # ---- queries ------------------------------------------------------------------------
    def find(self, res, session):
        for i in range(self.n_slots):
            if self.res[i] == res and self.session[i] == session:
                return i
        return -1

    def count(self):
        n = 0
        for i in range(self.n_slots):
            if self.res[i] != FREE:
                n += 1
        return n

    def conflicts(self, res, modes, session):
        # The session holding a conflicting grant on res (other than `session`), or 0.
        excl = modes & MODES_EXCLUSIVE
        for i in range(self.n_slots):
            if self.res[i] == res and self.session[i] != session:
                if excl or (self.modes[i] & MODES_EXCLUSIVE):
                    return self.session[i]
        return 0

    def holder(self, res, session, epoch):
        # The slot of session's grant on res under `epoch`; else -E_DEV_STALE_EPOCH for an epoch
        # issued once and no longer current (a deposed holder, faults.md 27), or -E_DEV_NOT_HOLDER.
        i = self.find(res, session)
        if i >= 0 and self.epoch[i] == epoch:
            return i
        return -E_DEV_STALE_EPOCH if 0 < epoch <= self.r_epoch[res] else -E_DEV_NOT_HOLDER

    def overridden(self, res, modes):
        # Under the board's manual override a resource is a human's: nothing exclusive is granted.
        return modes & MODES_EXCLUSIVE and (self.ov >> res) & 1

    def suspended(self, session):
        for i in range(self.n_slots):
            if self.flag[i] & _SUSP and self.res[i] != FREE and self.session[i] == session:
                return True
        return False

    def span(self, lease):
        # How long one renewal keeps a grant: its lease, capped by CFG_FAILSAFE_MS if set.
        c = self.cap_ms
        return c if 0 < c < lease else lease

    def expired(self, i, now):
        return self.clock.ticks_diff(now, self.deadline[i]) >= 0

    def sleep_ms(self, longest, now):
        # How long the agent may sleep: until the next lease or wait runs out, at most `longest`.
        best = longest
        t = self.clock
        for i in range(self.n_slots):
            if self.res[i] != FREE:
                d = t.ticks_diff(self.deadline[i], now)
                if d < best:
                    best = d
        for j in range(_MAX_WAITERS):
            if self.w_used[j]:
                d = t.ticks_diff(self.w_until[j], now)
                if d < best:
                    best = d
        return best if best > 0 else 0

    def _valid(self, res, modes, session, lease):
        # The checks every request that makes a grant passes (ACQUIRE, HANDOVER's new holder).
        return modes and not modes & ~self.resources[res].modes and session and 0 < lease <= MAX_LEASE_MS

    # ---- requests -----------------------------------------------------------------------
    def acquire(self, res, modes, session, lease, wait_ms, rid, key, now):
        # Returns a slot (>= 0) when granted (or already held), QUEUED when queued (its final
        # answer comes through out.answer), or -code when refused.
        if not self._valid(res, modes, session, lease):
            return -E_DEV_BAD_MESSAGE
        if self.state[res] != RES_PRESENT:
            return -E_RESOURCE_UNAVAILABLE
        ovr = self.overridden(res, modes)
        i = self.find(res, session)
        if i >= 0:
            if modes & ~self.modes[i] == 0:
                return i  # already held: the same grant, no new epoch
            if ovr or self.conflicts(res, modes, session):
                return -E_DEV_UPGRADE_REFUSED
            if self.flag[i] & PEND:
                return -E_DEV_FAILSAFE_PENDING  # a lost lease comes back only by a heartbeat
            self.modes[i] |= modes           # atomic upgrade: one step, fenced by a new epoch
            self.epoch[i] = self.next_epoch(res)
            self.deadline[i] = self.clock.ticks_add(now, self.span(self.lease[i]))
            self.out.note(AUD_GRANT, i, 0)
            return i
        for j in range(_MAX_WAITERS):          # a retry of a request already queued
            if self.w_used[j] and self.w_rid[j] == rid and self.w_key[j] == key:
                return QUEUED
        held = self.r_hold[res] and self.clock.ticks_diff(now, self.r_hold_until[res]) < 0
        holder = self.conflicts(res, modes, session)
        if not held and not holder and not ovr and self.head(res) < 0:
            return self._grant(res, modes, session, lease, now)
        if wait_ms <= 0:
            return -E_DEV_LOCK_DELAY if held and not holder else -E_RESOURCE_BUSY
        for j in range(_MAX_WAITERS):
            if not self.w_used[j]:
                self.seq += 1
                self.w_used[j] = 1
                self.w_seq[j] = self.seq
                self.w_res[j] = res
                self.w_modes[j] = modes
                self.w_session[j] = session
                self.w_lease[j] = lease
                self.w_until[j] = self.clock.ticks_add(now, wait_ms)
                self.w_rid[j] = rid
                self.w_key[j] = key
                return QUEUED
        return -E_DEV_NO_SPACE

    def position(self, rid, key):
        # 1-based place of a queued request among the waiters of its resource.
        for j in range(_MAX_WAITERS):
            if self.w_used[j] and self.w_rid[j] == rid and self.w_key[j] == key:
                n = 1
                for k in range(_MAX_WAITERS):
                    if self.w_used[k] and self.w_res[k] == self.w_res[j] and self.w_seq[k] < self.w_seq[j]:
                        n += 1
                return n
        return 0

    def handover(self, res, frm, frm_epoch, to, modes, lease, now):
        # Atomic: the slot changes owner in one step, so no frame sees both or neither holding.
        # Returns the slot, or -code with the original holder untouched.
        if not self._valid(res, modes, to, lease):
            return -E_DEV_BAD_MESSAGE
        i = self.holder(res, frm, frm_epoch)
        if i < 0:
            return i
        if self.state[res] != RES_PRESENT:
            return -E_RESOURCE_UNAVAILABLE
        if self.find(res, to) >= 0 or self.conflicts(res, modes, frm) or self.overridden(res, modes):
            return -E_RESOURCE_BUSY
        if self.modes[i] & MODES_EXCLUSIVE and not modes & MODES_EXCLUSIVE:
            self.safe(res)  # the new holder only reads: nobody drives it any more
        # The slot takes on its new holder's suspension; a handover in the failsafe delay
        # window is an override: the new holder's lease starts afresh.
        self.flag[i] = _SUSP if self.suspended(to) else 0
        self.session[i] = to
        self.modes[i] = modes
        self.lease[i] = lease
        self.deadline[i] = self.clock.ticks_add(now, self.span(lease))
        self.epoch[i] = self.next_epoch(res)
        self.out.note(AUD_HANDOVER, i, 0)
        # The new holder's own wait for the resource (an operator handing it back to a Fay's
        # pending request) is answered with the moved grant: it must not queue a second one.
        for j in range(_MAX_WAITERS):
            if self.w_used[j] and self.w_res[j] == res and self.w_session[j] == to:
                self.w_used[j] = 0
                self.out.answer(self.w_rid[j], self.w_key[j], i, 0)
        return i

    def suspend(self, session, on):
        # S3: a suspended session keeps its locks but may not write, execute or configure, and
        # its actuators are put in safe hold at once (faults.md 11). Marked on each grant the
        # session holds, so the mark ends with its grant on every path (release, lease, handover,
        # removal, fault, session end); what it acquires while suspended is suspended too.
        # Returns how many grants the session holds here (0: nothing to hold back).
        n = 0
        for i in range(self.n_slots):
            if self.res[i] != FREE and self.session[i] == session:
                self.flag[i] = (self.flag[i] | _SUSP) if on else (self.flag[i] & PEND)
                n += 1
                if on and self.modes[i] & MODES_EXCLUSIVE:
                    self.safe(self.res[i])
        return n

    def end_all(self, res, session, reason, now):
        # Ends every grant on res or of session (FREE and 0 match nothing) for `reason`, and
        # refuses the matching queued requests: E_RESOURCE_BUSY when the session ended,
        # E_RESOURCE_UNAVAILABLE when the resource went away or faulted. Returns how many grants
        # ended. Freed resources go to their waiters at serve(), after the caller's answer.
        n = 0
        for i in range(self.n_slots):
            if self.res[i] != FREE and (self.res[i] == res or self.session[i] == session):
                self.end(i, reason, now)
                n += 1
        busy = reason == R_SESSION_ENDED
        for j in range(_MAX_WAITERS):
            if self.w_used[j] and (self.w_res[j] == res or self.w_session[j] == session):
                self.w_used[j] = 0
                self.out.answer(self.w_rid[j], self.w_key[j], -E_RESOURCE_BUSY if busy else -E_RESOURCE_UNAVAILABLE,
                                0 if busy else res)
        return n

    def renew_all(self, now):
        # A heartbeat: every lease starts again, and every failsafe delay window (PEND) closes:
        # the host is back in time.
        for i in range(self.n_slots):
            if self.res[i] != FREE:
                if self.flag[i] & PEND:
                    self.out.note(AUD_RESUMED, i, 0)
                self.deadline[i] = self.clock.ticks_add(now, self.span(self.lease[i]))
                self.flag[i] &= _SUSP

    def end(self, i, reason, now):
        # End grant i. An exclusive holder's hardware goes safe. A clean release leaves no hold:
        # serve() passes the lock on at once. A lease that ran out is a holder lost without a
        # clean release: its resource goes safe whatever the modes, and stays in safe hold for
        # the lock-delay before it is granted again (faults.md 33), unless its bit in the
        # link-loss hold mask says it keeps its state (faults.md 69). The ring's last word is
        # the action.
        res = self.res[i]
        session = self.session[i]
        lost = reason == R_LEASE_EXPIRED
        keep = lost and (self.hold_mask >> res) & 1
        excl = self.modes[i] & MODES_EXCLUSIVE
        self.out.note(AUD_END if not lost else (AUD_HOLD if keep else AUD_SAFE), i, reason)
        self.res[i] = FREE
        self.session[i] = 0
        self.flag[i] = 0
        if (excl or lost) and not keep:
            self.safe(res)
        if lost and self.lock_delay_ms > 0:
            self.r_hold[res] = 1
            self.r_hold_until[res] = self.clock.ticks_add(now, self.lock_delay_ms)
        self.out.ended(res, session, self.epoch[i], reason)

    def safe(self, res):
        # Drive resource res to its safe state; a driver that raises there cannot stop the rest.
        try:
            self.resources[res].safe()
        except Exception:
            pass

    # ---- waiters ------------------------------------------------------------------------
    def tick(self, now):
        # Grant whoever the lock now allows, time out the rest.
        self.serve(FREE, now)
        for j in range(_MAX_WAITERS):
            if self.w_used[j] and self.clock.ticks_diff(now, self.w_until[j]) >= 0:
                self.w_used[j] = 0
                self.out.answer(self.w_rid[j], self.w_key[j], -E_RESOURCE_BUSY,
                                self.conflicts(self.w_res[j], self.w_modes[j], self.w_session[j]))

    def serve(self, res, now):
        # Grant the waiters of res (FREE: of every resource), first come first served, while
        # the lock allows.
        if res == FREE:
            for k in range(len(self.state)):
                self.serve(k, now)
            return
        while True:
            j = self.head(res)
            if j < 0:
                return
            if self.r_hold[res]:
                if self.clock.ticks_diff(now, self.r_hold_until[res]) < 0:
                    return
                self.r_hold[res] = 0
            if self.state[res] != RES_PRESENT or self.conflicts(res, self.w_modes[j], self.w_session[j]) \
                    or self.overridden(res, self.w_modes[j]):
                return
            i = self._grant(res, self.w_modes[j], self.w_session[j], self.w_lease[j], now)
            if i < 0:
                return
            self.w_used[j] = 0
            self.out.answer(self.w_rid[j], self.w_key[j], i, 0)

    def head(self, res):
        # The waiter that arrived first on res, or -1.
        best = -1
        for j in range(_MAX_WAITERS):
            if self.w_used[j] and self.w_res[j] == res and (best < 0 or self.w_seq[j] < self.w_seq[best]):
                best = j
        return best

    # ---- internals ----------------------------------------------------------------------
    def next_epoch(self, res):
        e = self.r_epoch[res] + 1
        if e >= U32_LIMIT:
            e = 1  # after 2**30 grants of one resource; documented wrap
        self.r_epoch[res] = e
        return e

    def _grant(self, res, modes, session, lease, now):
        for i in range(self.n_slots):
            if self.res[i] == FREE:
                # A suspended session stays suspended on what it acquires meanwhile.
                self.flag[i] = _SUSP if self.suspended(session) else 0
                self.res[i] = res
                self.session[i] = session
                self.modes[i] = modes
                self.lease[i] = lease
                self.deadline[i] = self.clock.ticks_add(now, self.span(lease))
                self.epoch[i] = self.next_epoch(res)
                self.out.note(AUD_GRANT, i, 0)
                return i
        return -E_DEV_NO_SPACE
