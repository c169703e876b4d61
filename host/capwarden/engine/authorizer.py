"""The engine's view of the credential layer: one narrow interface over a store folder.

The engine asks three things of credentials, and only through this class (constructor-injected,
so unit tests pass a fake with the same methods):

- `check(credential, fay_id, resource_id, mode, now) -> Decision`: supplement S2, in its order,
  for the `credential` object of an AuthRequest or HandoverRequest.
- `still_valid(ref, now) -> None | reason`: whether a running session's credential would still
  be accepted by a fresh request: its key usable (step 2), not expired with the same clock-skew
  leeway (step 3), not revoked (step 5). A session lives exactly as long as its credential would
  be granted again, so a grant inside the leeway is not ended a moment later.
- `refresh(now) -> bool`: pick up keys and revocations that another process (`capwarden keys
  import`, `capwarden revocations import`) wrote into the store while the engine runs; True
  when anything changed, so the engine re-checks every running session.

`generation` grows whenever the answer of `still_valid` may have changed for a reason other than
time (a revocation or a key change); `listeners` hear of each new revocation at once.

Online (engine/online.py, issue 14): `prepare(message_type, body, now)` runs before the request's
check, in the request's own task: for a ticket that steps 1-5 grant locally it runs the online
revocation query (revquery.py, section 4.3.2 step 5) and leaves the result for `check()` in a
context variable, so the ticket is validated once and the query never holds anything that
another request waits on. `set_degraded(on)` makes new tickets E_TICKET_OFFLINE_REJECTED
(section 4.5.2), across a reopened store too.
"""

import contextvars
import logging
import os

from capwarden.credentials import Terminal
from capwarden.errors import StoreError

PURGE_EVERY_S = 60
log = logging.getLogger("capwarden.engine")
RA_DISTRIBUTED = "ra-distributed"
# Requests whose credential prepare() looks at: message type -> the body field naming the Fay.
CREDENTIAL_REQUESTS = {"AuthRequest": "fay_id", "HandoverRequest": "to_fay_id"}
# What prepare() left for check() in this request's task: (credential object, fay, resource,
# mode, terminal view, decision, revocation-query outcome, time). Each request runs in a task of
# its own, and the entry matches only that request's credential object, so it is not cleared.
_PREPARED = contextvars.ContextVar("capwarden_prepared", default=None)


class StoreAuthorizer:
    def __init__(self, store, leeway=60, opener=Terminal.open):
        self.store = store
        self.leeway = leeway
        self._opener = opener
        self.listeners = []
        self.generation = 0
        self._next_purge = None
        self.degraded = False      # new tickets refused (section 4.5.2 item 1)
        self.revquery = None       # revquery.RevocationQuery when the policy asks for the query
        self._open()

    def _open(self):
        self.terminal = self._opener(self.store, leeway=self.leeway)
        self.terminal_id = self.terminal.terminal_id
        self.terminal.validator.degraded = self.degraded
        self.terminal.revocations.listeners.append(self._revoked)
        self._stamps = self._file_stamps()
        self._bad_stamps = None     # the revocation file's stamps when it last failed to read
        self.generation += 1

    def _file_stamps(self):
        out = []
        for path in (self.terminal.keys.path, self.terminal.revocations.path):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return out

    def _revoked(self, entry):
        self.generation += 1
        for cb in list(self.listeners):
            cb(entry)

    def set_degraded(self, on):
        """Refuse new tickets (E_TICKET_OFFLINE_REJECTED) while `on`; descriptors are unaffected."""
        self.degraded = bool(on)
        self.terminal.validator.degraded = self.degraded

    # ---- the interface ------------------------------------------------------------------------
    def check(self, credential, fay_id, resource_id, mode, now):
        """The S2 decision for an AuthRequest `credential` object (descriptor_ref or ticket)."""
        if credential["type"] == "descriptor_ref":
            return self.terminal.decide_descriptor(credential["descriptor_id"], fay_id, resource_id, mode, now)
        pre = _PREPARED.get()
        if pre is not None and pre[0] is credential and pre[1:4] == (fay_id, resource_id, mode) \
                and pre[4] is self.terminal:
            d, outcome = pre[5], pre[6]
            if pre[7] != now:        # the query took a while: the local steps again, at this time
                again = self.terminal.validator.check_ticket(credential["ticket"], fay_id, resource_id, mode, now)
                # A terminal that degraded meanwhile (this very query's timeout may have been the
                # third) does not turn the query's own answer into E_TICKET_OFFLINE_REJECTED:
                # that code is for requests that arrive while degraded.
                if again.granted or again.error_code != "E_TICKET_OFFLINE_REJECTED":
                    d = again
        else:
            d = self.terminal.validator.check_ticket(credential["ticket"], fay_id, resource_id, mode, now)
            outcome = None
            if self._asks(d):
                # Not prepared (a caller that did not run prepare()): a valid cached answer, else
                # as a query that did not complete. Fail closed.
                from capwarden.engine import revquery

                hit = self.revquery.cached(d.credential_id)
                outcome = revquery.Outcome(revquery.ANSWER, hit[0], hit[1], cached=True) if hit else \
                    revquery.Outcome(revquery.UNREACHABLE, detail="no query was made for this request")
        if d.granted and outcome is not None and self.revquery is not None:
            d = self.revquery.decide(d, outcome, fay_id, resource_id)
        return d

    def _asks(self, d):
        """Whether the revocation query applies to decision `d`: a ticket granted locally,
        signed by a key the Registration_Authority distributed, the policy asking for it."""
        cred = d.credential
        if self.revquery is None or not d.granted or cred.kind != "ticket":
            return False
        rec = self.terminal.keys.records.get(cred.key_id)
        return rec is not None and rec["source"] == RA_DISTRIBUTED

    async def prepare(self, message_type, body, now):
        """Before a request's check: the online revocation query for its ticket (module doc).
        Does nothing without a query policy, for other requests and for descriptors."""
        field = CREDENTIAL_REQUESTS.get(message_type)
        if self.revquery is None or field is None:
            return
        credential = body.get("credential")
        if not isinstance(credential, dict) or credential.get("type") != "ticket":
            return
        fay_id, resource_id, mode = body.get(field), body.get("resource_id"), body.get("access_mode")
        terminal = self.terminal
        d = terminal.validator.check_ticket(credential.get("ticket"), fay_id, resource_id, mode, now)
        outcome = None
        if self._asks(d):
            # A fresh cached answer without a coroutine (the common case: bench/online.py).
            outcome = self.revquery.fresh(d.credential_id) or await self.revquery.ask(d.credential_id)
        _PREPARED.set((credential, fay_id, resource_id, mode, terminal, d, outcome, now))

    def reference(self, decision):
        """The session's CredentialRef (section 2.5) plus what `still_valid` needs."""
        cred = decision.credential
        ref = {"type": decision.kind, "id": decision.credential_id, "not_after": decision.not_after,
               "issuer_id": decision.issuer_id, "key_id": decision.key_id, "algorithm": cred.algorithm}
        md = getattr(cred, "metadata", None)
        if md and md.get("origin") == "converted_from_ticket":
            # A descriptor converted from a ticket dies with the ticket (attacks.md F59), also mid-session.
            ref["origin"] = (md.get("origin_iss", ""), md.get("origin_jti", ""))
        ref["ends_at"] = self._ends_at(ref)
        return ref

    def _ends_at(self, ref):
        """The first second at which a fresh request with this credential would be refused for time."""
        end = ref["not_after"] + self.leeway
        rec = self.terminal.keys.records.get(ref["key_id"])
        if rec is not None and rec.get("valid_until") is not None:
            end = min(end, rec["valid_until"])
        return end

    def still_valid(self, ref, now):
        """None while the credential behind a session would still be granted, else the reason."""
        t = self.terminal
        pub, _why = t.keys.usable(ref["key_id"], ref["algorithm"], ref["issuer_id"], now)
        if pub is None:
            return "key_invalid"
        if now >= ref["not_after"] + self.leeway:
            return "credential_expired"
        revs = t.revocations
        if revs.revoked(ref["issuer_id"], ref["id"]) or ("origin" in ref and revs.revoked(*ref["origin"])):
            return "revoked"
        if self.revquery is not None and ref["type"] == "ticket":
            # The issuer said revoked (online query, section 4.3.2 step 5) but its statement
            # has not reached the local list yet: a request that waited (a queue, a holder's
            # consent, a person) is not granted on it, and a live session ends.
            hit = self.revquery.cached(ref["id"])
            if hit is not None and hit[0]:
                return "revoked"
        return None

    def refresh(self, now):
        """Reload what other processes changed in the store. True when anything did."""
        changed = False
        stamps = self._file_stamps()
        if stamps[0] != self._stamps[0]:
            old = self.terminal
            try:
                self._open()  # keys changed: a fresh view (the verification cache is per key set)
            except Exception:  # a store we cannot read now: keep the last good view, say so
                log.exception("the store's keys changed but cannot be read; keeping the previous keys")
                self.terminal, self._stamps = old, stamps
                return False
            changed = True
        elif stamps[1] != self._stamps[1]:
            try:
                self.terminal.revocations.reload()    # listeners hear each new entry
            except StoreError as exc:
                # Revocations only ever add, so the last good view still holds every revocation
                # it held; the file is read again on every sweep until it reads, said once.
                if self._bad_stamps != stamps:
                    self._bad_stamps = stamps
                    log.error("the store's revocations changed but cannot be read (%s); keeping the previous "
                              "list and trying again", exc)
                return False
            self._stamps = stamps
            self._bad_stamps = None
            self.generation += 1
            changed = True
        if self._next_purge is None or now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            self.terminal.purge(now)              # converted descriptors go 24 h after they expire
        return changed
