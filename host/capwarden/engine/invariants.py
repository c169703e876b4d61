"""The engine's safety invariants, as one checker that tests and the chaos harness call.

Each function returns a list of violations (human-readable strings); an empty list means the
invariant holds. None of them changes anything, and none waits.

    check(engine, audit_path, requests=(), replies=())   every invariant below, at once
    check_engine(engine)                                  the engine's own tables
    check_audit(audit_path)                               the audit chain verifies
    check_replies(replies, audit_path, requests=())       one final answer per request; denies audited
    await check_boards(engine)                            the boards' grant tables (asks each board)

What is checked:
- never two exclusive holders of a resource in the engine, and never an exclusive holder next
  to a reader (the read-write lock, blueprint 2.5);
- no ownerless session: every session the engine tracks belongs to a registered runtime, has
  a board, a credential and a token no other session has, and is in a state the registry keeps;
- every request answered exactly once: each request's message_id has exactly one final answer
  (correlation_id), and no answer correlates to a request not sent;
- every deny audited: for each S2 code, at least as many audit entries refuse with it as
  answers carried it (Error messages and AuthResult/HandoverResult denials);
- the audit chain verifies up to its last line;
- (check_boards, which talks to the boards) every grant on a board is owned by a session the
  engine tracks, and no resource has two exclusive grants. Call it a board heartbeat period
  (plus the link's retries) after the last fault: that is how long the engine may take.
"""

from collections import Counter

from capshared.limits import MODES_EXCLUSIVE, mode_bits
from capwarden.engine import audit
from capwarden.engine.registry import LIVE
from capwarden.errors import DeviceError, LinkError

KEPT_STATES = ("creating", "active", "handover_pending", "terminating")
FINAL = {"AuthResult", "HeartbeatAck", "SessionReleased", "SessionsReleased", "SessionList", "HandoverResult",
         "HandoverResponseAck", "ResourceCommandResult", "Error"}


def check(engine, audit_path, requests=(), replies=()):
    """Every invariant: the engine's tables, the audit chain, and (when given) the requests sent
    and the final answers received (message dicts)."""
    out = check_engine(engine)
    if audit_path:
        out += check_audit(audit_path)
    if replies or requests:
        out += check_replies(replies, audit_path, requests)
    return out


def check_engine(engine):
    out = []
    holders = {}
    tokens = Counter()
    for sid, s in engine.registry.sessions.items():
        if s.session_id != sid:
            out.append("session %s is registered under another id %s" % (s.session_id, sid))
        if s.state not in KEPT_STATES:
            out.append("session %s is %s but still registered" % (sid, s.state))
        if engine.registry.runtime(s.runtime_id) is None:
            out.append("session %s belongs to no registered runtime (%r)" % (sid, s.runtime_id))
        if s.board is None or s.credential_ref is None or not s.token:
            out.append("session %s has no board, credential or token" % sid)
        tokens[(id(s.board), s.token)] += 1
        if s.state in LIVE:
            holders.setdefault(s.resource_id, []).append(s)
    for (_board, token), n in tokens.items():
        if n > 1:
            out.append("board token %d is held by %d sessions" % (token, n))
    for rid, live in holders.items():
        exclusive = [s for s in live if mode_bits([s.access_mode]) & MODES_EXCLUSIVE]
        if len(exclusive) > 1:
            out.append("resource %s has %d exclusive holders: %s" % (
                rid, len(exclusive), ", ".join(s.session_id for s in exclusive)))
        elif exclusive and len(live) > 1:
            out.append("resource %s has an exclusive holder %s and %d other holder(s)" % (
                rid, exclusive[0].session_id, len(live) - 1))
    return out


async def check_boards(engine):
    """The boards' grant tables against the engine's sessions. A board that does not answer is
    skipped (nothing can be said of it)."""
    out = []
    for h in engine.registry.boards.values():
        for r in list(h.board.info.resources):
            try:
                held = await h.board.grants(r.index)
            except (DeviceError, LinkError):
                continue
            owners = {s.token: s for s in engine.registry.on_board(h, r.index)}
            exclusive = [t for t, _e, modes in held if modes & MODES_EXCLUSIVE]
            if len(exclusive) > 1:
                out.append("board %s resource %s has %d exclusive grants" % (h.name, r.name, len(exclusive)))
            for token, epoch, _modes in held:
                s = owners.get(token)
                if s is None:
                    out.append("board %s resource %s: grant of token %d epoch %d has no session"
                               % (h.name, r.name, token, epoch))
                elif s.state in LIVE and s.epoch != epoch:
                    out.append("board %s resource %s: token %d holds epoch %d, its session %s epoch %d"
                               % (h.name, r.name, token, epoch, s.session_id, s.epoch))
    return out


def check_audit(audit_path):
    try:
        _entries, problem = audit.read(audit_path)
    except FileNotFoundError:
        return []
    return [] if problem is None else ["audit log %s: %s" % (audit_path, problem)]


def _refusal(reply):
    """The S2 code a final answer refuses with, or None."""
    body = reply.get("body") or {}
    if reply.get("message_type") == "Error":
        return body.get("error_code")
    if body.get("result") in ("denied", "rejected"):
        return body.get("error_code")
    return None


def check_replies(replies, audit_path=None, requests=()):
    out = []
    finals = [r for r in replies if r.get("message_type") in FINAL]
    answered = Counter(r.get("correlation_id") for r in finals)
    sent = Counter(m["message_id"] for m in requests)
    for mid, n in sent.items():
        if answered[mid] != n:
            out.append("request %s got %d final answer(s)" % (mid, answered[mid]))
    if sent:
        for mid, n in answered.items():
            if mid not in sent:
                out.append("%d answer(s) correlate to %s, which was not sent" % (n, mid))
    if audit_path:
        try:
            entries, _problem = audit.read(audit_path)
        except FileNotFoundError:
            entries = []
        audited = Counter(e.get("reason") for e in entries if e.get("outcome") in ("denied", "rejected"))
        refused = Counter(c for c in (_refusal(r) for r in finals) if c)
        for code, n in refused.items():
            if audited[code] < n:
                out.append("%d answer(s) refused with %s, only %d audited" % (n, code, audited[code]))
    return out

