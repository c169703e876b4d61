"""The board's operations: one method per request, typed arguments in, records out.

BoardOperations is half of Board (capwarden.link.board): it needs only `request`, the
resource names (`_res_name`), the heartbeat base the board told us at HELLO (`_hb_base`) and
where the override mask a heartbeat answer carries goes (`_override_is`).
"""

import random

from capshared import messages
from capshared.limits import MAX_LEASE_MS, U32_LIMIT
from capshared.names import REASONS
from capwarden.errors import BadReply, BadRequest, DeviceError, LinkError
from capwarden.link.types import AuditEntry, AuditRing, Grant


class BoardOperations:

    async def ping(self, nonce=None):
        """Round trip and the board's memory. Returns dict(rtt_s, mem_free, mem_alloc, uptime_ms)."""
        nonce = random.randrange(U32_LIMIT) if nonce is None else nonce
        t0 = self.clock()
        r = await self.request("PING", {"nonce": nonce})
        rtt = self.clock() - t0
        if r["nonce"] != nonce:
            raise LinkError("ping answered with the wrong nonce")
        return {"rtt_s": rtt, "mem_free": r["mem_free"], "mem_alloc": r["mem_alloc"], "uptime_ms": r["uptime_ms"]}

    async def stats(self):
        return await self.request("STATS")

    def host_counts(self):
        """What the host's own decoder dropped or heard: the other half of STATS. `unknown`:
        frames whose CRC held but whose message id or size the table does not know; on an
        authenticated link also bad_tag, replay, no_key (refused frames) and sessions."""
        d = self._decoder
        out = {"bad_crc": d.bad_crc, "bad_frame": d.bad_frame, "overrun": d.overrun, "interrupts": d.interrupts,
               "unknown": d.unknown}
        a = self.auth
        if a is not None:   # frames dropped before any handler: no valid tag, replayed, no session
            out.update(bad_tag=a.bad_tag, replay=a.replay, no_key=a.no_key, sessions=a.sessions)
        return out

    async def acquire(self, res, modes, session, lease_ms, wait_ms=0):
        """Lock `res` in `modes` for `session`. Returns Grant. Raises BadRequest for a lease the
        board would refuse (over MAX_LEASE_MS, or 0), DeviceError, LinkError."""
        _check_lease(lease_ms)
        r = await self.request("ACQUIRE", {"res": res, "modes": modes, "session": session,
                                           "lease_ms": lease_ms, "wait_ms": wait_ms},
                               extra_wait=wait_ms / 1000.0)
        return Grant(r["res"], r["modes"], r["session"], r["epoch"], r["lease_ms"])

    async def release(self, res, session, epoch):
        await self.request("RELEASE", {"res": res, "session": session, "epoch": epoch})

    async def handover(self, res, from_session, from_epoch, to_session, modes, lease_ms):
        """Move the grant to `to_session` in one step. Returns the new Grant. Raises as acquire."""
        _check_lease(lease_ms)
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
        self._override_is(r["override"], None)      # a lost EV_OVERRIDE made good
        return r

    async def audit_ring(self, from_seq=1):
        """The board's audit ring from entry `from_seq` on (faults.md 70): AuditRing(count,
        lost, entries). Read it after a failsafe: its last entry says what the board did last.
        Raises BadReply for a page that is not whole entries, DeviceError, LinkError."""
        out = []
        lost = 0
        seq = max(1, from_seq)
        size = messages.AUDIT_ENTRY_SIZE
        while True:
            r = await self.request("AUDIT", {"from_seq": seq})
            if not out and r["first"] > seq:
                lost = r["first"] - seq          # overwritten before we asked
            e = _whole_entries("AUDIT_R", r["entries"], size)
            for k in range(len(e) // size):
                b = e[k * size:(k + 1) * size]
                kind = messages.AUDIT_KINDS.get(b[0], "unknown")
                res = b[1]
                out.append(AuditEntry(
                    seq=r["first"] + k, kind=kind, res=res, name=self._res_name(res),
                    session=int.from_bytes(b[3:7], "little"), epoch=int.from_bytes(b[7:11], "little"),
                    reason=reason_name(b[2]) if b[2] else "", t_ms=int.from_bytes(b[11:15], "little")))
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
        """[(session, epoch, modes)] held on resource `res`, all pages. Raises BadReply for a
        page that is not whole entries, DeviceError, LinkError."""
        out = []
        start = 0
        size = messages.GRANT_ENTRY_SIZE
        while True:
            r = await self.request("GRANTS", {"res": res, "start": start})
            e = _whole_entries("GRANTS_R", r["entries"], size)
            for i in range(0, len(e), size):
                out.append((int.from_bytes(e[i:i + 4], "little"), int.from_bytes(e[i + 4:i + 8], "little"), e[i + 8]))
            start += len(e) // size
            if not e or start >= r["total"]:
                return out

    async def configure(self, key, value):
        return await self.request("CONFIG", {"key": key, "value": value})

    async def sim_plug(self, res, present):
        """Unplug or replug a resource of the virtual board."""
        return await self.request("SIM_PLUG", {"res": res, "present": 1 if present else 0})

    async def rekey(self, new_key):
        """Replace the board's link key with `new_key` (a LinkKey) over this authenticated
        link, then start a session under it (docs/link-auth.md "Rekey"). Keep `new_key` safe
        BEFORE calling (linkauth.stage): once REKEY is sent the board may hold either key, and
        open_board finds the staged one by the key id the board announces. Never retried: a
        board that took the new key refuses a copy sealed under the old one."""
        from capwarden.link.linkauth import HostAuth, wrap

        if self.auth is None:
            raise BadRequest("this link has no key to rekey from")
        await self.request("REKEY", {"wrapped": wrap(self.auth.key, new_key)}, retries=0)
        self.auth = HostAuth(new_key)
        hello = await self._handshake()
        self._hb_base = hello["hb_seq"]
        return hello

    async def to_repl(self):
        """Stop the agent (resources go safe) and return the board to its REPL."""
        await self.request("REPL", retries=0)

    def resource_index(self, name):
        for r in self.info.resources:
            if r.name == name:
                return r.index
        raise DeviceError("E_RESOURCE_UNAVAILABLE", "the board has no resource %r" % name)


def reason_name(code):
    """The name of a grant-ended or resource-event reason code (limits.REASONS)."""
    return REASONS[code] if code < len(REASONS) else "unknown"


def _check_lease(lease_ms):
    # The board refuses these too (E_DEV_BAD_MESSAGE); refused here, the caller learns why
    # and no frame is spent on it.
    if not isinstance(lease_ms, int) or not 0 < lease_ms <= MAX_LEASE_MS:
        raise BadRequest("lease_ms must be 1..%d (MAX_LEASE_MS), not %r" % (MAX_LEASE_MS, lease_ms))


def _whole_entries(name, entries, size):
    if len(entries) % size:
        raise BadReply("%s carried %d bytes of entries, not a whole number of %d-byte entries: flash the board "
                       "again with capwarden flash" % (name, len(entries), size))
    return entries
