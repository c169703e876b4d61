# Control: the board enforces who may drive what. Every lock, lease, fencing epoch, handover,
# suspension and actuation decision is made here, on the board, so a crashed or misbehaving
# host cannot make two parties drive one motor, and a silent host cannot leave one running.
#
# The messages, the failsafe and the events around capagent.grants (the lock policy) and
# capagent.supervisor (the watchdog). Responses are built in the link's preallocated encoder;
# nothing here allocates in steady state (tests/device checks the heap over 10,000 cycles).
#
# The failsafe: one HEARTBEAT renews every lease; a lease that runs out ends its grant and
# drives the hardware to its safe state (Grants.end: a lost holder, faults.md 33 and 69),
# unless the failsafe delay (CFG_FAILSAFE_DELAY_MS, faults.md 68) first gives the host that
# long to come back. When the host speaks again it hears what the failsafe did (EV_FAILSAFE),
# and can read what happened meanwhile in the audit ring (AUDIT, faults.md 70).
#
# Over 300 lines on purpose: on a 64 KB board every module costs about five interned names and a
# module object, every class and function object its bytes (docs/DECISIONS.md "Device modules").
from capagent.driver import OpError
from capagent.grants import FREE, MAX_GRANTS, PEND, QUEUED, Grants, u32s
from capagent.supervisor import Supervisor
from capshared import wire as W
from capshared.errors import (
    E_DEV_BAD_MESSAGE, E_DEV_BAD_OPERATION, E_DEV_DRIVER_FAULT, E_DEV_FAILSAFE_PENDING, E_DEV_NOT_HOLDER,
    E_DEV_STALE_EPOCH, E_DEV_STALE_REQUEST, E_DEV_SUSPENDED, E_RESOURCE_BUSY, E_RESOURCE_UNAVAILABLE,
)
from capshared.limits import (
    MODES_EXCLUSIVE, R_FAILSAFE, R_FAULT, R_LEASE_EXPIRED, R_OVERRIDE, R_RELEASED, R_REMOVED, R_REPLUGGED,
    R_SESSION_ENDED,
    RES_ABSENT, RES_FAULT, RES_PRESENT, U32_MASK,
)
from capshared.wire import (
    AUD_DELAY, AUDIT_PER_PAGE, CFG_FAILSAFE_DELAY_MS, CFG_FAILSAFE_MS, CFG_LINK_LOSS_HOLD, CFG_LOCK_DELAY_MS,
    CFG_WATCHDOG_MS, FAILSAFE_DELAY_MAX_MS, GRANTS_PER_PAGE,
)
from micropython import const

_OUT_SIZE = const(100)     # the largest driver answer (fits ACTUATE_R's tail)
_AUDIT_SLOTS = const(32)   # the audit ring's entries (faults.md 70)


class Control:
    def __init__(self, link, resources, clock, board):
        self.link = link
        self.resources = resources
        self.clock = clock
        self.sim = getattr(board, "SIM", False)
        # Each resource's state as the agent last saw it (poll(), or a plug on the virtual
        # board): the one view that locks, actuation and reports use, so that a driver whose
        # poll() raised counts as faulted whatever its own attribute says.
        self.r_state = bytearray(len(resources))
        for k in range(len(resources)):
            self.r_state[k] = resources[k].state
        self.g = Grants(resources, self.r_state, clock, self, getattr(board, "MAX_GRANTS", MAX_GRANTS))
        self.sup = Supervisor(board)
        self.out = bytearray(_OUT_SIZE)
        self.hb_seq = 0           # the heartbeat high-water mark (HELLO_R tells a new host)
        self.failsafes = 0
        self.pending_failsafe = 0  # failsafes the host has not heard of yet
        self.last_hb = clock.ticks_ms()
        self.delay_ms = 0         # CFG_FAILSAFE_DELAY_MS
        # The audit ring: the last _AUDIT_SLOTS grant, end, handover and failsafe events with
        # their epochs (Grants notes them), for the host to read after it was away. Entry k
        # (from 1) is in slot (k - 1) % _AUDIT_SLOTS: kind, res, reason in a_b; session, epoch
        # and the board's ms clock in a_s, a_e, a_t. When full the oldest gives way, so the
        # last entry (what happened last) is never lost; the host counts the lost ones.
        self.a_b = bytearray(3 * _AUDIT_SLOTS)
        self.a_s = u32s(_AUDIT_SLOTS)
        self.a_e = u32s(_AUDIT_SLOTS)
        self.a_t = u32s(_AUDIT_SLOTS)
        self.a_count = 0
        # The manual override input (board.override(): a bit mask), its grants ended since the
        # last report, and the link session that report went to (each new host hears it).
        self.ov_in = getattr(board, "override", None)
        self.ov_ended = 0
        self.ov_sess = -1

    # ---- called by the agent ---------------------------------------------------------------
    def host_seen(self, now):
        if self.pending_failsafe:
            # The host is back: tell it what the failsafe did while it was away.
            e = self.link.enc
            e.begin(W.EV_FAILSAFE, 0)
            e.u8(R_FAILSAFE)
            e.u8(self.pending_failsafe)
            e.u32(self.clock.ticks_diff(now, self.last_hb) & U32_MASK)
            self.link.send(False)
            self.pending_failsafe = 0

    def tick(self, now):
        # Leases: a grant whose lease ran out without a heartbeat lapses (the failsafe); the
        # host hears of it when it speaks again.
        g = self.g
        for i in range(g.n_slots):
            if g.res[i] != FREE and g.expired(i, now):
                self.lapse(i, now)
        # Resource events: unplug or fault ends every grant on the resource.
        for k in range(len(self.resources)):
            st = self._poll(k)
            if st != self.r_state[k]:
                self._resource_changed(k, st, now)
        if self.ov_in is not None:
            self._override(now)
        self.g.tick(now)
        self.sup.tick()

    def stop(self):
        for k in range(len(self.resources)):
            self.g.safe(k)

    # ---- messages ----------------------------------------------------------------------------
    def handle(self, mid, rid):
        d = self.link.dec
        now = self.clock.ticks_ms()
        if mid == W.HEARTBEAT:
            self.heartbeat(rid, d.u32(W.HEARTBEAT_HB_SEQ), now)
        elif mid == W.AUDIT:
            self.audit(rid, d.u32(W.AUDIT_FROM_SEQ))
        elif mid == W.ACQUIRE:
            self.acquire(rid, d.u8(W.ACQUIRE_RES), d.u8(W.ACQUIRE_MODES), d.u32(W.ACQUIRE_SESSION),
                          d.u32(W.ACQUIRE_LEASE_MS), d.u32(W.ACQUIRE_WAIT_MS), now)
        elif mid == W.ACTUATE:
            self._actuate(rid, d.u8(W.ACTUATE_RES), d.u32(W.ACTUATE_SESSION), d.u32(W.ACTUATE_EPOCH),
                          d.u8(W.ACTUATE_OP), now)
        elif mid == W.RELEASE:
            self.release(rid, d.u8(W.RELEASE_RES), d.u32(W.RELEASE_SESSION), d.u32(W.RELEASE_EPOCH), now)
        elif mid == W.HANDOVER:
            self.handover(rid, d.u8(W.HANDOVER_RES), d.u32(W.HANDOVER_FROM_SESSION),
                           d.u32(W.HANDOVER_FROM_EPOCH), d.u32(W.HANDOVER_TO_SESSION), d.u8(W.HANDOVER_MODES),
                           d.u32(W.HANDOVER_LEASE_MS), now)
        elif mid == W.SUSPEND:
            self.suspend(rid, d.u32(W.SUSPEND_SESSION), d.u8(W.SUSPEND_SUSPENDED))
        elif mid == W.END_SESSION:
            self.end_session(rid, d.u32(W.END_SESSION_SESSION), now)
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

    def heartbeat(self, rid, seq, now):
        # The payload must move on: a repeated (frozen) sequence number is a missed heartbeat
        # (faults.md 26), so a stuck sender cannot keep leases. The board tells every new host
        # its high-water mark (HELLO_R.hb_seq), so a restarted engine's heartbeats start above
        # it rather than at 0 (issue 9, defect 1).
        if seq > self.hb_seq:
            self.hb_seq = seq
            self.last_hb = now
            self.g.renew_all(now)
        e = self.link.enc
        e.begin(W.HEARTBEAT_R, rid)
        e.u32(seq)
        e.u16(self.g.count())
        e.u16(self.failsafes & 0xFFFF)
        # The override mask in every answer: EV_OVERRIDE is an event, never acknowledged, so a
        # host that lost one learns the mask within a heartbeat period.
        e.u32(self.g.ov)
        self.link.send()
        if self.g.ov and self.ov_sess != self.link.auth.sessions:
            self._ov_report()   # a new host session while the override is on: tell it

    def _holder(self, rid, res, session, epoch):
        # The slot of session's grant on res under `epoch`, or -1 after answering the error.
        i = self.g.holder(res, session, epoch)
        if i < 0:
            self.link.error(rid, -i, self.g.r_epoch[res] if i == -E_DEV_STALE_EPOCH else 0)
        return i

    def acquire(self, rid, res, modes, session, lease, wait_ms, now):
        if self._bad_res(rid, res):
            return
        g = self.g
        key = self.link.request_key()
        i = g.acquire(res, modes, session, lease, wait_ms, rid, key, now)
        if i == QUEUED:
            e = self.link.enc
            e.begin(W.QUEUED, rid)
            e.u8(res)
            e.u8(g.position(rid, key))
            self.link.send(False)  # provisional: the final answer comes later, and is the one replayed
        elif i < 0:
            # A busy answer names the holder's session (faults.md 64) in the detail field.
            self.link.error(rid, -i, g.conflicts(res, modes, session) if i == -E_RESOURCE_BUSY else 0)
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

    def release(self, rid, res, session, epoch, now):
        if self._bad_res(rid, res):
            return
        i = self._holder(rid, res, session, epoch)
        if i < 0:
            return
        self.g.end(i, R_RELEASED, now)
        e = self.link.enc
        e.begin(W.RELEASE_R, rid)
        e.u8(res)
        e.u32(session)
        e.u32(epoch)
        self.link.send()
        self.g.serve(res, now)   # a clean release re-grants at once: no lock-delay

    def handover(self, rid, res, frm, frm_epoch, to, modes, lease, now):
        if self._bad_res(rid, res):
            return
        g = self.g
        i = g.handover(res, frm, frm_epoch, to, modes, lease, now)
        if i < 0:
            c = -i
            self.link.error(rid, c, g.r_epoch[res] if c == E_DEV_STALE_EPOCH else res if c == E_RESOURCE_UNAVAILABLE
                            else g.conflicts(res, modes, frm) if c == E_RESOURCE_BUSY else 0)
            return
        e = self.link.enc
        e.begin(W.HANDOVER_R, rid)
        e.u8(res)
        e.u32(to)
        e.u32(g.epoch[i])
        self.link.send()

    def suspend(self, rid, session, on):
        held = self.g.suspend(session, on)
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
            if self.lapse(i, now):
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
        try:
            n = r.op(op, d.buf, 4 + W.ACTUATE_ARGS, d.n, self.out)
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

    def end_session(self, rid, session, now):
        n = self.g.end_all(FREE, session, R_SESSION_ENDED, now)
        e = self.link.enc
        e.begin(W.END_SESSION_R, rid)
        e.u32(session)
        e.u8(n)
        self.link.send()
        self.g.serve(FREE, now)

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
            self.g.hold_mask = value
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

    def audit(self, rid, first):
        # AUDIT_R: the count, then up to AUDIT_PER_PAGE entries from entry `first` on (from the
        # oldest still held if that one is gone).
        c = self.a_count
        if first <= c - _AUDIT_SLOTS:
            first = c - _AUDIT_SLOTS + 1
        if first < 1:
            first = 1
        e = self.link.enc
        e.begin(W.AUDIT_R, rid)
        e.u32(c)
        e.u32(first)
        k = first
        while k <= c and k < first + AUDIT_PER_PAGE:
            j = (k - 1) % _AUDIT_SLOTS
            e.u8(self.a_b[3 * j])
            e.u8(self.a_b[3 * j + 1])
            e.u8(self.a_b[3 * j + 2])
            e.u32(self.a_s[j])
            e.u32(self.a_e[j])
            e.u32(self.a_t[j])
            k += 1
        self.link.send()

    # ---- the failsafe ------------------------------------------------------------------------
    def lapse(self, i, now):
        # Grant i's lease ran out. With a failsafe delay it first waits that long for a
        # heartbeat, refusing actuation meanwhile; a heartbeat in the window renews it, a
        # release or handover still works (the host's override). Returns True while waiting.
        g = self.g
        if self.delay_ms and not g.flag[i] & PEND:
            g.flag[i] |= PEND
            g.deadline[i] = self.clock.ticks_add(now, self.delay_ms)
            self.note(AUD_DELAY, i, R_LEASE_EXPIRED)
            return True
        g.end(i, R_LEASE_EXPIRED, now)
        self.failsafes += 1
        self.pending_failsafe += 1
        return False

    # ---- what the grant table tells (capagent.grants) ---------------------------------------
    def note(self, kind, i, reason):
        # One audit ring entry about grant slot i. Allocates nothing.
        g = self.g
        if self.a_count >= U32_MASK:
            self.a_count = 0   # after 2**30 events: documented wrap, numbering starts again
        j = self.a_count % _AUDIT_SLOTS
        b = self.a_b
        b[3 * j] = kind
        b[3 * j + 1] = g.res[i]
        b[3 * j + 2] = reason
        self.a_s[j] = g.session[i]
        self.a_e[j] = g.epoch[i]
        self.a_t[j] = self.clock.ticks_ms() & U32_MASK
        self.a_count += 1

    def answer(self, rid, key, i, detail):
        # The final answer (the one replayed) to a queued ACQUIRE (rid, key): slot i granted,
        # or refused with error -i.
        self.link.remember_for(rid, key)
        if i < 0:
            self.link.error(rid, -i, detail)
        else:
            self._granted(rid, i)

    def ended(self, res, session, epoch, reason):
        # The host hears of every end it did not ask for.
        if reason != R_RELEASED and reason != R_SESSION_ENDED:
            e = self.link.enc
            e.begin(W.EV_GRANT_ENDED, 0)
            e.u8(res)
            e.u32(session)
            e.u32(epoch)
            e.u8(reason)
            self.link.send(False)

    # ---- the manual override ------------------------------------------------------------------
    def _override(self, now):
        # The board's manual override input (docs/device.md "Manual override"): a resource whose
        # bit turns on loses every exclusive grant here, on the board, with or without a host;
        # its hardware goes safe (Grants.end), and nothing exclusive is granted on it until the
        # bit clears. Readers keep reading. Allocates nothing.
        g = self.g
        try:
            m = self.ov_in() & ((1 << len(self.resources)) - 1)
        except Exception:
            return  # an unreadable input changes nothing: a glitch must not move control
        if m == g.ov:
            return
        on = m & ~g.ov
        g.ov = m
        for i in range(g.n_slots):
            r = g.res[i]
            if r != FREE and (on >> r) & 1 and g.modes[i] & MODES_EXCLUSIVE:
                g.end(i, R_OVERRIDE, now)
                self.ov_ended += 1
        self._ov_report()

    def _ov_report(self):
        e = self.link.enc
        e.begin(W.EV_OVERRIDE, 0)
        e.u32(self.g.ov)
        e.u8(self.ov_ended & 0xFF)
        self.link.send(False)
        self.ov_ended = 0
        self.ov_sess = self.link.auth.sessions

    # ---- resource events ---------------------------------------------------------------------
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

    def _resource_changed(self, k, st, now):
        self.r_state[k] = st
        if st != RES_PRESENT:
            reason = R_REMOVED if st == RES_ABSENT else R_FAULT
            self.g.end_all(k, 0, reason, now)
        else:
            reason = R_REPLUGGED  # available again; no session resumes (faults.md 61)
        e = self.link.enc
        e.begin(W.EV_RESOURCE, 0)
        e.u8(k)
        e.u8(st)
        e.u8(reason)
        self.link.send(False)
