"""Automatic conversion of granted tickets to local descriptors (chapter 4 section 4.4.1).

A ticket that the engine has just granted is converted when (4.4.1):

1. it passed validation and is `convertible` (the default of a ticket),
2. the terminal's policy permits offline subsequent access (`enabled`, config "conversion"),
3. its `exp` is more than `min_remaining_s` (default one hour) after now.

The conversion itself is the credential layer's (Terminal.convert_verified: 4.4.2 field
mapping and validity bound, 4.4.3 the local key and issuer, sealed storage). Its descriptor's id
is the ticket's jti, so the Fay goes on offline with `descriptor_ref` = jti. It runs in a
worker thread after the grant (two sealed files written and synced): the AuthResult does not
wait for it, and other requests are not held up. Each ticket is converted once (a bounded memo
here, and conversions.json in the store across restarts). Audited: `convert` `done` with the
ticket and the descriptor, or `convert` `skipped`: with the S2 code when the credential layer
refused (e.g. revoked meanwhile), with `offline` for a ticket granted while the terminal is
degraded (offline acceptance: its revocation could not be checked, so it is not made to last).

Removal is the store's (4.4.4): the revocation of the origin ticket deletes its converted
descriptor at once (Terminal's revocation listener, whatever brought the revocation: import,
sync or push), and the engine's sweep purges converted descriptors 24 h after they expire
(StoreAuthorizer.refresh -> Terminal.purge, on the engine's wall clock).
"""

import asyncio
import logging
from collections import OrderedDict

from capwarden.errors import CapError, StoreError, UsageError

DEFAULT_MIN_REMAINING_S = 3600      # 4.4.1 item 3: "recommended > 1 hour"
MEMO = 4096                          # tickets remembered as converted (older ones: the store knows)
KEYS = {"enabled", "min_remaining_s"}

log = logging.getLogger("capwarden.engine")


class Converter:
    """The engine's conversion policy and its conversions under way."""

    def __init__(self, enabled=True, min_remaining_s=DEFAULT_MIN_REMAINING_S):
        if type(enabled) is not bool:
            raise UsageError("conversion \"enabled\" is true or false, not %r" % (enabled,))
        if type(min_remaining_s) is not int or min_remaining_s < 0:
            raise UsageError("conversion \"min_remaining_s\" is a number of seconds >= 0, not %r"
                             % (min_remaining_s,))
        self.enabled = enabled
        self.min_remaining_s = min_remaining_s
        # Set by the mode notice (modepush.notify_mode): while the terminal is degraded, a ticket
        # granted anyway (offline acceptance) is not converted, its revocation unchecked.
        self.offline = False
        self.done = OrderedDict()        # ticket jti -> descriptor id
        self.pending = {}                # ticket jti -> the conversion's task

    @classmethod
    def from_config(cls, obj, where="conversion"):
        """The Converter of the config file's "conversion" object ({"enabled": bool,
        "min_remaining_s": seconds}); None or absent: the defaults. Raises UsageError."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict) or set(obj) - KEYS:
            raise UsageError("%s: an object with only %s" % (where, ", ".join(sorted(KEYS))))
        try:
            return cls(**obj)
        except UsageError as exc:
            raise UsageError("%s: %s" % (where, exc)) from None

    def wants(self, decision, now):
        """True when the granted `decision` is a ticket to convert now (4.4.1)."""
        if not self.enabled or not decision.granted or decision.kind != "ticket":
            return False
        t = decision.credential
        return bool(t.convertible) and t.not_after - now > self.min_remaining_s \
            and t.credential_id not in self.done and t.credential_id not in self.pending

    def after_grant(self, engine, decision):
        """The grant path's hook (admission.new_session): start converting the ticket of a
        granted `decision` when the policy wants it. Returns the task, or None."""
        now = int(engine.wall())
        if not self.wants(decision, now):
            return None
        if self.offline:
            _audit(engine, "skipped", "offline", ticket=decision.credential_id,
                   detail="granted while the terminal is degraded (offline acceptance): not converted")
            return None
        rq = getattr(engine.authorizer, "revquery", None)
        if rq is not None and rq.was_unchecked(decision.credential_id):
            _audit(engine, "skipped", "unchecked", ticket=decision.credential_id,
                   detail="let through without the issuer's revocation answer (risk accepted): not converted")
            return None
        terminal = getattr(engine.authorizer, "terminal", None)
        if terminal is None or not hasattr(terminal, "convert_verified"):
            return None                   # an authorizer without a store (unit-test fakes)
        t = decision.credential
        task = asyncio.ensure_future(self._convert(engine, terminal, t, now))
        self.pending[t.credential_id] = task
        return task

    async def _convert(self, engine, terminal, t, now):
        jti = t.credential_id
        try:
            did = await asyncio.to_thread(terminal.convert_verified, t, now)
        except CapError as exc:
            _audit(engine, "skipped", exc.code, ticket=jti, detail=exc.message[:200])
            return None
        except StoreError as exc:
            log.error("ticket %s not converted: %s", jti, exc)
            _audit(engine, "failed", "E_INTERNAL", ticket=jti, detail=str(exc)[:200])
            return None
        finally:
            self.pending.pop(jti, None)
        self.done[jti] = did
        while len(self.done) > MEMO:
            self.done.popitem(last=False)
        _audit(engine, "done", "", ticket=jti, descriptor=did, issuer=t.issuer_id, key_id=t.key_id)
        return did

    async def settle(self):
        """Wait for the conversions under way (the engine's stop, tests)."""
        while self.pending:
            await asyncio.gather(*list(self.pending.values()), return_exceptions=True)


def _audit(engine, outcome, reason, **fields):
    try:
        engine.audit.record("convert", outcome, reason, **fields)
    except StoreError as exc:     # the conversion stands (the store has it); the log says why not audited
        log.error("conversion not audited: %s", exc)
