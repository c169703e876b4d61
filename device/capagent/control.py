# Control: the board enforces who may drive what. Every lock, lease, fencing epoch, handover,
# suspension and actuation decision is made here, on the board, so a crashed or misbehaving
# host cannot make two parties drive one motor, and a silent host cannot leave one running.
#
# Message glue over capagent.grants (the table and lock rules) and capagent.supervisor (the
# watchdog). Responses are built in the link's preallocated encoder; nothing here allocates
# in steady state (tests/device checks the heap over 10,000 cycles).
from capagent.driver import OpError
from capagent.grants import FREE, MAX_GRANTS, MAX_WAITERS, PEND, QUEUED, SUSP, Grants, _u32s
from capagent.supervisor import Supervisor
from capshared import wire as W
from capshared.errors import (
    E_DEV_BAD_MESSAGE, E_DEV_BAD_OPERATION, E_DEV_DRIVER_FAULT, E_DEV_FAILSAFE_PENDING, E_DEV_NOT_HOLDER,
    E_DEV_STALE_EPOCH, E_DEV_STALE_REQUEST, E_DEV_SUSPENDED, E_RESOURCE_BUSY, E_RESOURCE_UNAVAILABLE,
)
from capshared.limits import MODES_EXCLUSIVE, RES_ABSENT, RES_FAULT, RES_PRESENT, U32_LIMIT
from capshared.wire import (
    AUD_DELAY, AUD_END, AUD_GRANT, AUD_HANDOVER, AUD_HOLD, AUD_RESUMED, AUD_SAFE, AUDIT_PER_PAGE,
    CFG_FAILSAFE_DELAY_MS, CFG_FAILSAFE_MS, CFG_LINK_LOSS_HOLD, CFG_LOCK_DELAY_MS, CFG_WATCHDOG_MS,
    FAILSAFE_DELAY_MAX_MS, GRANTS_PER_PAGE,
)

# Reason codes (capshared.limits.REASONS).
R_RELEASED = 1
R_LEASE = 2
R_REMOVED = 3
R_FAULT = 4
R_FAILSAFE = 6
R_SESSION_ENDED = 7
R_REPLUGGED = 9

MAX_LEASE_MS = 3600000
AUDIT_SLOTS = 32   # the audit ring's entries (faults.md 70)
OUT_SIZE = 100   # the largest driver answer (fits ACTUATE_R's tail)


class Control:
    def __init__(self, link, resources, clock, board):
        self.link = link
        self.resources = resources
        self.clock = clock
        self.board = board
        self.sim = getattr(board, "SIM", False)
        # Each resource's state as the agent last saw it (poll(), or a plug on the virtual
        # board): the one view that locks, actuation and reports use, so that a driver whose
        # poll() raised counts as faulted whatever its own attribute says.
        self.r_state = bytearray(len(resources))
        for k in range(len(resources)):
            self.r_state[k] = resources[k].state
        self.g = Grants(self.r_state, clock, getattr(board, "MAX_GRANTS", MAX_GRANTS))
        self.sup = Supervisor(clock, board)
        self.out = bytearray(OUT_SIZE)
        self.hb_seq = 0
        self.frozen = 0
        self.failsafes = 0
        self.pending_failsafe = 0
        self.last_hb = clock.ticks_ms()
        self.delay_ms = 0         # CFG_FAILSAFE_DELAY_MS (faults.md 68)
        self.hold_mask = 0        # CFG_LINK_LOSS_HOLD: bit k, resource k keeps its state (69)
        # The audit ring (faults.md 70): the last AUDIT_SLOTS grant, end, handover and failsafe
        # events with their epochs, for the host to read after it was away (AUDIT). Entry k
        # (from 1) is in slot (k - 1) % AUDIT_SLOTS: kind, res, reason in a_b; session, epoch
        # and the board's ms clock in a_s, a_e, a_t. When full the oldest gives way, so the
        # last entry (what happened last) is never lost; the host counts the lost ones.
        self.a_b = bytearray(3 * AUDIT_SLOTS)
        self.a_s = _u32s(AUDIT_SLOTS)
        self.a_e = _u32s(AUDIT_SLOTS)
        self.a_t = _u32s(AUDIT_SLOTS)
        self.a_count = 0

    # ---- called by the agent ---------------------------------------------------------------
    def host_seen(self, now):
        if self.pending_failsafe:
            # The host is back: tell it what the failsafe did while it was away.
            e = self.link.enc
            e.begin(W.EV_FAILSAFE, 0)
            e.u8(R_FAILSAFE)
            e.u8(self.pending_failsafe)
            e.u32(self.clock.ticks_diff(now, self.last_hb) & 0x3FFFFFFF)
            self.link.send(False)
            self.pending_failsafe = 0

    def sleep_ms(self, longest):
        now = self.clock.ticks_ms()
        g = self.g
        best = longest
        for i in range(g.n_slots):
            if g.res[i] != FREE:
                d = self.clock.ticks_diff(g.deadline[i], now)
                if d < best:
                    best = d
        for j in range(MAX_WAITERS):
            if g.w_used[j]:
                d = self.clock.ticks_diff(g.w_until[j], now)
                if d < best:
                    best = d
        return best if best > 0 else 0

    def tick(self, now):
        g = self.g
        # Leases: a grant whose lease ran out without a heartbeat ends, and its hardware goes
        # to its safe state (the failsafe); the host hears of it when it speaks again.
        for i in range(g.n_slots):
            if g.res[i] != FREE and g.expired(i, now):
                self._lapse(i, now)
        # Resource events: unplug or fault ends every grant on the resource.
        for k in range(len(self.resources)):
            st = self._poll(k)
            if st != self.r_state[k]:
                self._resource_changed(k, st, now)
        # Waiters: grant whoever the lock now allows, time out the rest.
        for k in range(len(self.resources)):
            self._serve(k, now)
        for j in range(MAX_WAITERS):
            if g.w_used[j] and self.clock.ticks_diff(now, g.w_until[j]) >= 0:
                g.drop_waiter(j)
                self.link.remember_for(g.w_rid[j], g.w_key[j])
                self.link.error(g.w_rid[j], E_RESOURCE_BUSY, g.conflicts(g.w_res[j], g.w_modes[j], g.w_session[j]))
        self.sup.tick(now)

    def stop(self):
        for r in self.resources:
            try:
                r.safe()
            except Exception:
                pass

    # ---- messages ----------------------------------------------------------------------------
    def handle(self, mid, rid):
        d = self.link.dec
        now = self.clock.ticks_ms()
        if mid == W.HEARTBEAT:
            self._heartbeat(rid, d.u32(W.HEARTBEAT_HB_SEQ), now)
        elif mid == W.AUDIT:
            self._audit_page(rid, d.u32(W.AUDIT_FROM_SEQ))
        elif mid == W.ACQUIRE:
            self._acquire(rid, d.u8(W.ACQUIRE_RES), d.u8(W.ACQUIRE_MODES), d.u32(W.ACQUIRE_SESSION),
                          d.u32(W.ACQUIRE_LEASE_MS), d.u32(W.ACQUIRE_WAIT_MS), now)
        elif mid == W.ACTUATE:
            self._actuate(rid, d.u8(W.ACTUATE_RES), d.u32(W.ACTUATE_SESSION), d.u32(W.ACTUATE_EPOCH),
                          d.u8(W.ACTUATE_OP), now)
        elif mid == W.RELEASE:
            self._release(rid, d.u8(W.RELEASE_RES), d.u32(W.RELEASE_SESSION), d.u32(W.RELEASE_EPOCH), now)
        elif mid == W.HANDOVER:
            self._handover(rid, d.u8(W.HANDOVER_RES), d.u32(W.HANDOVER_FROM_SESSION),
                           d.u32(W.HANDOVER_FROM_EPOCH), d.u32(W.HANDOVER_TO_SESSION), d.u8(W.HANDOVER_MODES),
                           d.u32(W.HANDOVER_LEASE_MS), now)
        elif mid == W.SUSPEND:
            self._suspend(rid, d.u32(W.SUSPEND_SESSION), d.u8(W.SUSPEND_SUSPENDED))
        elif mid == W.END_SESSION:
            self._end_session(rid, d.u32(W.END_SESSION_SESSION), now)
        elif mid == W.GRANTS:
            self._list(rid, d.u8(W.GRANTS_RES), d.u16(W.GRANTS_START))
        elif mid == W.CONFIG:
            self._config(rid, d.u8(W.CONFIG_KEY), d.u32(W.CONFIG_VALUE))
        elif mid == W.SIM_PLUG:
            self._plug(rid, d.u8(W.SIM_PLUG_RES), d.u8(W.SIM_PLUG_PRESENT), now)
        else:
            return False
        return True

    def _bad_res(self, rid, res):
        if res >= len(self.resources):
            self.link.error(rid, E_RESOURCE_UNAVAILABLE, res)
            return True
        return False

    def _heartbeat(self, rid, seq, now):
        # One frame renews every lease. The payload must move on: a repeated (frozen) sequence
        # number is a missed heartbeat (faults.md 26), so a stuck sender cannot keep leases.
        # The board tells every new host its high-water mark (HELLO_R.hb_seq), so a restarted
        # engine's heartbeats start above it rather than at 0 (issue 9, defect 1).
        if seq > self.hb_seq:
            self.hb_seq = seq
            self.last_hb = now
            g = self.g
            for i in range(g.n_slots):
                if g.flag[i] & PEND and g.res[i] != FREE:
                    self._note(AUD_RESUMED, i, 0)  # back within the failsafe delay window
            g.renew_all(now)
        else:
            self.frozen += 1
        e = self.link.enc
        e.begin(W.HEARTBEAT_R, rid)
        e.u32(seq)
        e.u16(self.g.count())
        e.u16(self.failsafes & 0xFFFF)
        self.link.send()

    def _acquire(self, rid, res, modes, session, lease, wait_ms, now):
        if self._bad_res(rid, res):
            return
        if modes == 0 or modes & ~self.resources[res].modes or session == 0 or lease == 0 or lease > MAX_LEASE_MS:
            self.link.error(rid, E_DEV_BAD_MESSAGE, 0)
            return
        g = self.g
        key = self.link.request_key()
        e0 = g.r_epoch[res]
        i = g.acquire(res, modes, session, lease, wait_ms, rid, key, now)
        if i >= 0 and g.r_epoch[res] != e0:
            self._note(AUD_GRANT, i, 0)  # a new epoch: a grant or an upgrade
        if i == QUEUED:
            e = self.link.enc
            e.begin(W.QUEUED, rid)
            e.u8(res)
            e.u8(g.position(rid, key))
            self.link.send(False)  # provisional: the final answer comes later, and is the one replayed
        elif i < 0:
            # A busy answer names the holder's session (faults.md 64) in the detail field.
            self.link.error(rid, -i, g.last_busy_holder if -i == E_RESOURCE_BUSY else 0)
        else:
            self._granted(rid, i)

    def _granted(self, rid, i):
        g = self.g
        e = self.link.enc
        e.begin(W.ACQUIRE_R, rid)
        e.u8(g.res[i])
        e.u8(g.modes[i])
        e.u32(g.session[i])
        e.u32(g.epoch[i])
        e.u32(g.lease[i])
        self.link.send()

    def _serve(self, res, now):
        g = self.g
        while True:
            i = g.grant_head(res, now)
            if i < 0:
                return
            j = g.served
            g.drop_waiter(j)
            self._note(AUD_GRANT, i, 0)
            self.link.remember_for(g.w_rid[j], g.w_key[j])
            self._granted(g.w_rid[j], i)

    def _holder(self, rid, res, session, epoch):
        # The slot of session's grant on res under `epoch`, or -1 after answering the error.
        # An epoch older than the resource's newest is stale: a deposed holder (faults.md 27).
        g = self.g
        i = g.find(res, session)
        if i >= 0 and g.epoch[i] == epoch:
            return i
        if 0 < epoch <= g.r_epoch[res]:  # issued once, no longer current
            self.link.error(rid, E_DEV_STALE_EPOCH, g.r_epoch[res])
        else:
            self.link.error(rid, E_DEV_NOT_HOLDER, 0)
        return -1

    def _release(self, rid, res, session, epoch, now):
        if self._bad_res(rid, res):
            return
        i = self._holder(rid, res, session, epoch)
        if i < 0:
            return
        self._end(i, R_RELEASED, now, False)
        e = self.link.enc
        e.begin(W.RELEASE_R, rid)
        e.u8(res)
        e.u32(session)
        e.u32(epoch)
        self.link.send()
        self._serve(res, now)  # a clean release re-grants at once: no lock-delay

    def _handover(self, rid, res, frm, frm_epoch, to, modes, lease, now):
        # Atomic: the slot changes owner in one step, so no frame sees both or neither holding.
        # Any failed check leaves the original holder untouched.
        if self._bad_res(rid, res):
            return
        g = self.g
        if to == 0 or modes == 0 or modes & ~self.resources[res].modes or lease == 0 or lease > MAX_LEASE_MS:
            self.link.error(rid, E_DEV_BAD_MESSAGE, 0)
            return
        i = self._holder(rid, res, frm, frm_epoch)
        if i < 0:
            return
        if self.r_state[res] != RES_PRESENT:
            self.link.error(rid, E_RESOURCE_UNAVAILABLE, res)
            return
        if g.find(res, to) >= 0 or g.conflicts(res, modes, frm):
            self.link.error(rid, E_RESOURCE_BUSY, g.conflicts(res, modes, frm))
            return
        if g.modes[i] & MODES_EXCLUSIVE and not modes & MODES_EXCLUSIVE:
            self.resources[res].safe()  # the new holder only reads: nobody drives it any more
        # The slot takes on its new holder's suspension; a handover in the failsafe delay
        # window is an override: the new holder's lease starts afresh.
        g.flag[i] = SUSP if g.suspended(to) else 0
        g.session[i] = to
        g.modes[i] = modes
        g.lease[i] = lease
        g.deadline[i] = self.clock.ticks_add(now, g.span(lease))
        g.epoch[i] = g.next_epoch(res)
        self._note(AUD_HANDOVER, i, 0)
        e = self.link.enc
        e.begin(W.HANDOVER_R, rid)
        e.u8(res)
        e.u32(to)
        e.u32(g.epoch[i])
        self.link.send()

    def _suspend(self, rid, session, on):
        # S3: a suspended session keeps its locks but may not write, execute or configure, and
        # its actuators are put in safe hold at once (faults.md 11).
        # Recorded on each grant the session holds (it cannot be lost, and a session with no
        # grant here has nothing to hold back: grants = 0 says so); what it acquires while
        # suspended is suspended too.
        g = self.g
        held = g.set_suspended(session, on)
        if on:
            for i in range(g.n_slots):
                if g.res[i] != FREE and g.session[i] == session and g.modes[i] & MODES_EXCLUSIVE:
                    self.resources[g.res[i]].safe()
        e = self.link.enc
        e.begin(W.SUSPEND_R, rid)
        e.u32(session)
        e.u8(1 if on else 0)
        e.u8(held)
        self.link.send()

    def _actuate(self, rid, res, session, epoch, op, now):
        if self._bad_res(rid, res):
            return
        g = self.g
        r = self.resources[res]
        i = self._holder(rid, res, session, epoch)
        if i < 0:
            return
        if g.expired(i, now):
            # The lease ran out (perhaps between ticks): never act on it. With a failsafe delay
            # the grant waits for a heartbeat; otherwise (or after the delay) it ends now.
            if self._lapse(i, now):
                self.link.error(rid, E_DEV_FAILSAFE_PENDING, res)
            else:
                self.link.error(rid, E_DEV_STALE_EPOCH, g.r_epoch[res])
            return
        if g.flag[i] & PEND:
            self.link.error(rid, E_DEV_FAILSAFE_PENDING, res)
            return
        need = r.OPS.get(op, 0)
        if not need:
            self.link.error(rid, E_DEV_BAD_OPERATION, op)  # every op is classified; unknown ones refused
            return
        if not g.modes[i] & need:
            self.link.error(rid, E_DEV_NOT_HOLDER, need)
            return
        if need & MODES_EXCLUSIVE and g.suspended(session):
            self.link.error(rid, E_DEV_SUSPENDED, 0)
            return
        if self.r_state[res] != RES_PRESENT:
            self.link.error(rid, E_RESOURCE_UNAVAILABLE, res)
            return
        d = self.link.dec
        start = 4 + W.ACTUATE_ARGS
        try:
            n = r.op(op, d.buf, start, d.n, self.out)
        except OpError as exc:
            self.link.error(rid, exc.args[0] if exc.args else E_DEV_BAD_OPERATION, op)
            return
        except Exception:
            self.link.error(rid, E_DEV_DRIVER_FAULT, op)
            return
        e = self.link.enc
        e.begin(W.ACTUATE_R, rid)
        e.u8(res)
        e.u8(op)
        e.tail(self.out, 0, n)
        self.link.send()

    def _end_session(self, rid, session, now):
        g = self.g
        n = 0
        for i in range(g.n_slots):
            if g.res[i] != FREE and g.session[i] == session:
                res = g.res[i]
                self._end(i, R_SESSION_ENDED, now, False)
                n += 1
        for j in range(MAX_WAITERS):
            if g.w_used[j] and g.w_session[j] == session:
                g.drop_waiter(j)
                self.link.remember_for(g.w_rid[j], g.w_key[j])
                self.link.error(g.w_rid[j], E_RESOURCE_BUSY, 0)
        e = self.link.enc
        e.begin(W.END_SESSION_R, rid)
        e.u32(session)
        e.u8(n)
        self.link.send()
        for k in range(len(self.resources)):
            self._serve(k, now)

    def _list(self, rid, res, start):
        if self._bad_res(rid, res):
            return
        g = self.g
        total = 0
        for i in range(g.n_slots):
            if g.res[i] == res:
                total += 1
        e = self.link.enc
        e.begin(W.GRANTS_R, rid)
        e.u8(res)
        e.u16(total)
        e.u16(start)
        k = 0
        sent = 0
        for i in range(g.n_slots):
            if g.res[i] == res:
                if k >= start and sent < GRANTS_PER_PAGE:
                    e.u32(g.session[i])
                    e.u32(g.epoch[i])
                    e.u8(g.modes[i])
                    sent += 1
                k += 1
        self.link.send()

    def _config(self, rid, key, value):
        if key == CFG_LOCK_DELAY_MS:
            self.g.lock_delay_ms = value
        elif key == CFG_WATCHDOG_MS:
            if not self.sup.arm(value):
                self.link.error(rid, E_DEV_BAD_OPERATION, key)
                return
        elif key == CFG_FAILSAFE_MS:
            # No grant outlives this much heartbeat silence, whatever its lease (0: each lease).
            # Applies from each grant's next renewal.
            self.g.cap_ms = value
        elif key == CFG_FAILSAFE_DELAY_MS:
            if value > FAILSAFE_DELAY_MAX_MS:
                self.link.error(rid, E_DEV_BAD_OPERATION, key)
                return
            self.delay_ms = value
        elif key == CFG_LINK_LOSS_HOLD:
            # Bit k is resource k. A bit for a resource the board does not have is refused
            # whole: a mask meant for another board (or read in the wrong order) must not
            # half-apply. Unset bits, the default, go safe.
            if value >> len(self.resources):
                self.link.error(rid, E_DEV_BAD_OPERATION, key)
                return
            self.hold_mask = value
        else:
            self.link.error(rid, E_DEV_BAD_MESSAGE, key)
            return
        e = self.link.enc
        e.begin(W.CONFIG_R, rid)
        e.u8(key)
        e.u32(value)
        self.link.send()

    def _plug(self, rid, res, present, now):
        if not self.sim:
            self.link.error(rid, E_DEV_BAD_OPERATION, 0)  # real boards detect this themselves
            return
        if self._bad_res(rid, res):
            return
        self.resources[res].plug(present)
        st = self._poll(res)
        e = self.link.enc
        e.begin(W.SIM_PLUG_R, rid)
        e.u8(res)
        e.u8(st)
        self.link.send()
        if st != self.r_state[res]:
            self._resource_changed(res, st, now)

    def stale(self, mid, rid):
        # A late copy of a request already answered whose answer the replay cache no longer
        # holds (capagent.link): never executed again. A retried ACQUIRE still gets the grant
        # its session holds (what executing it again would answer); anything else is refused.
        d = self.link.dec
        if mid == W.ACQUIRE:
            res = d.u8(W.ACQUIRE_RES)
            i = self.g.find(res, d.u32(W.ACQUIRE_SESSION)) if res < len(self.resources) else -1
            if i >= 0 and not d.u8(W.ACQUIRE_MODES) & ~self.g.modes[i]:
                self._granted(rid, i)
                return
        self.link.error(rid, E_DEV_STALE_REQUEST, mid)

    def _audit_page(self, rid, first):
        c = self.a_count
        if first <= c - AUDIT_SLOTS:
            first = c - AUDIT_SLOTS + 1   # the oldest entry still held
        if first < 1:
            first = 1
        e = self.link.enc
        e.begin(W.AUDIT_R, rid)
        e.u32(c)
        e.u32(first)
        k = first
        while k <= c and k < first + AUDIT_PER_PAGE:
            j = (k - 1) % AUDIT_SLOTS
            e.u8(self.a_b[3 * j])
            e.u8(self.a_b[3 * j + 1])
            e.u8(self.a_b[3 * j + 2])
            e.u32(self.a_s[j])
            e.u32(self.a_e[j])
            e.u32(self.a_t[j])
            k += 1
        self.link.send()

    # ---- internals ---------------------------------------------------------------------------
    def _note(self, kind, i, reason):
        # One audit ring entry about grant slot i. Allocates nothing.
        g = self.g
        if self.a_count >= U32_LIMIT - 1:
            self.a_count = 0   # after 2**30 events: documented wrap, numbering starts again
        j = self.a_count % AUDIT_SLOTS
        b = self.a_b
        b[3 * j] = kind
        b[3 * j + 1] = g.res[i]
        b[3 * j + 2] = reason
        self.a_s[j] = g.session[i]
        self.a_e[j] = g.epoch[i]
        self.a_t[j] = self.clock.ticks_ms() & 0x3FFFFFFF
        self.a_count += 1

    def _lapse(self, i, now):
        # Grant i's lease ran out. With a failsafe delay (faults.md 68) it first waits that long
        # for a heartbeat, refusing actuation meanwhile; a heartbeat in the window renews it,
        # a release or handover still works (the host's override). Returns True while waiting.
        g = self.g
        if self.delay_ms and not g.flag[i] & PEND:
            g.flag[i] |= PEND
            g.deadline[i] = self.clock.ticks_add(now, self.delay_ms)
            self._note(AUD_DELAY, i, R_LEASE)
            return True
        self._end(i, R_LEASE, now, True)
        self.failsafes += 1
        self.pending_failsafe += 1
        return False

    def _poll(self, k):
        # A driver whose poll() raises, or answers anything but present or absent, is at fault:
        # its resource counts as faulted (its grants end, nothing new is granted) and the loop
        # goes on serving the others. No allocation unless it raises.
        try:
            st = self.resources[k].poll()
        except Exception:
            return RES_FAULT
        if st == RES_PRESENT or st == RES_ABSENT:
            return st
        return RES_FAULT

    def _end(self, i, reason, now, lost):
        # End grant i. `lost`: not a clean release, so the hardware goes safe and the resource
        # stays in safe hold for the lock-delay before it is granted again (faults.md 33).
        g = self.g
        res = g.res[i]
        session = g.session[i]
        epoch = g.epoch[i]
        excl = g.modes[i] & MODES_EXCLUSIVE
        # A lost lease: the link-loss action (faults.md 69), safe unless this resource's bit
        # in CFG_LINK_LOSS_HOLD says it keeps its state. The ring's last word is the action.
        keep = reason == R_LEASE and (self.hold_mask >> res) & 1
        self._note(AUD_END if reason != R_LEASE else (AUD_HOLD if keep else AUD_SAFE), i, reason)
        g.end(i)
        if (excl or lost) and not keep:
            try:
                self.resources[res].safe()
            except Exception:
                pass
        if lost:
            g.hold(res, now)
        if reason != R_RELEASED and reason != R_SESSION_ENDED:
            e = self.link.enc
            e.begin(W.EV_GRANT_ENDED, 0)
            e.u8(res)
            e.u32(session)
            e.u32(epoch)
            e.u8(reason)
            self.link.send(False)

    def _resource_changed(self, k, st, now):
        g = self.g
        self.r_state[k] = st
        if st != RES_PRESENT:
            reason = R_REMOVED if st == RES_ABSENT else R_FAULT
            for i in range(g.n_slots):
                if g.res[i] == k:
                    self._end(i, reason, now, False)
            for j in range(MAX_WAITERS):
                if g.w_used[j] and g.w_res[j] == k:
                    g.drop_waiter(j)
                    self.link.remember_for(g.w_rid[j], g.w_key[j])
                    self.link.error(g.w_rid[j], E_RESOURCE_UNAVAILABLE, k)
        else:
            reason = R_REPLUGGED  # available again; no session resumes (faults.md 61)
        e = self.link.enc
        e.begin(W.EV_RESOURCE, 0)
        e.u8(k)
        e.u8(st)
        e.u8(reason)
        self.link.send(False)
