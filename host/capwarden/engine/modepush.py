"""Telling runtimes that the terminal went degraded or came back online (chapter 4 section
4.5.2 item 4, section 4.5.3's last sentence).

The notice is a SessionStateChanged for every live session (the spec names that message for
it), with the session's state unchanged (`previous_state` == `state`, as a suspension change
is told) and two things that say what happened:

- `reason`: `terminal_degraded` or `terminal_online` (MODE_REASONS);
- `terminal_mode`: `degraded` or `online`, the one field the schema adds to
  SessionStateChanged for it (shared/schema/v1/schema.json; docs/engine.md "Mode notices").

A runtime that holds no session is not told: it learns the mode from its next answer
(`E_TICKET_OFFLINE_REJECTED` for a ticket while degraded), which is all the §4.6 selection in
the SDK needs (capwarden.sdk.dual).

The online side (engine/online.py) calls `notify_mode` after a transition is complete: on
degradation once new tickets are refused, on recovery after the revocation sync and the
re-check of every session (section 4.5.3 steps 1-2), when tickets are accepted again. It
audits the transition itself; this module pushes, and tells the engine's ticket conversion
(conversion.py), which converts nothing granted while degraded.
"""

import logging

from capwarden.engine.registry import LIVE

log = logging.getLogger("capwarden.engine")

ONLINE, DEGRADED = "online", "degraded"
MODE_REASONS = {ONLINE: "terminal_online", DEGRADED: "terminal_degraded"}


def mode_notice(s, mode):
    """The SessionStateChanged body that tells session `s`'s runtime the terminal's mode."""
    return {"session_id": s.session_id, "state": s.state, "previous_state": s.state,
            "reason": MODE_REASONS[mode], "suspended": s.suspended, "terminal_mode": mode}


def notify_mode(engine, online, reason=None):
    """Push the mode notice for every live session to its runtime. `reason` (the trigger:
    `unreachable`, `query_timeouts`, `network_down`, `recovered`...) is logged; the caller
    audits it. It is not sent. Returns the number of notices pushed."""
    mode = ONLINE if online else DEGRADED
    engine.conversion.offline = not online       # no conversion of tickets accepted offline
    sent = 0
    for s in list(engine.registry.live()):
        if s.state in LIVE:
            engine.push(s.runtime_id, "SessionStateChanged", mode_notice(s, mode))
            sent += 1
    from capwarden.engine import controlroom   # here: controlroom imports the engine's session modules

    controlroom.terminal_changed(engine, mode)    # the console shows the mode at once
    log.info("terminal %s (%s): %d live sessions told", mode, reason or "-", sent)
    return sent
