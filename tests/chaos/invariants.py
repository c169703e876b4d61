"""The invariants of issue 9, written once. The schedule runner (schedule.py) calls these after
every step and as answers and pushes arrive; each raises Violation naming the invariant.

Engine-side checks look only at the engine's public state (registry sessions, their state,
suspension, token and epoch). Board-side checks ask the board itself (GRANTS) through the
engine's own Board client: it is the only client a pty can have.

    never two exclusive holders        exclusive_holders_engine, exclusive_holders_board
    no actuation for a non-holder,     actuation_accepted (not live / suspended / revoked /
      suspended, revoked or expired      expired), stale_actuation_accepted (at the board)
    every board grant owned within     orphan_grant (board grant no live session owns, past
      one heartbeat period               GRACE_S), engine_board_disagree (a session the engine
                                         calls active whose grant the board no longer holds)
    a session heartbeating in time     healthy_session_ended, healthy_session_suspended
      never ends for liveness reasons
    a dead board is noticed            dead_board_unnoticed, dead_board_unlogged
    exactly one final answer           no_answer, wrong_answer, request_raised, internal_error
    every deny audited                 deny_not_audited
    the audit chain verifies           audit_chain
    credentials stay checked           grant_for_invalid_credential, live_with_invalid_credential
"""

import collections

from capshared.limits import MODE_NAMES, MODES_EXCLUSIVE
from capwarden.engine import audit as audit_mod
from capwarden.engine.routes import ROUTES

LIVE = ("active", "handover_pending")
MODE_BIT = dict(MODE_NAMES)
# Reasons a session may end for that are not about liveness. Any other reason (heartbeat_timeout,
# lease_expired, failsafe, board_unreachable, whatever a later engine adds) ending a session
# whose runtime heartbeated in time is a violation.
NOT_LIVENESS = {"released", "fay_terminated", "credential_expired", "revoked", "key_invalid", "resource_removed",
                "resource_fault", "handover", "engine_stopped", "board_reset", "operator_takeover"}


class Violation(AssertionError):
    def __init__(self, name, detail):
        super().__init__("%s: %s" % (name, detail))
        self.name = name
        self.detail = detail


def exclusive(mode_name):
    return bool(MODE_BIT.get(mode_name, 0) & MODES_EXCLUSIVE)


# ---- engine side ------------------------------------------------------------------------------

def exclusive_holders_engine(engine):
    by_res = collections.defaultdict(list)
    for s in engine.registry.sessions.values():
        if s.state in LIVE:
            by_res[s.resource_id].append(s)
    for rid, ss in by_res.items():
        if any(exclusive(s.access_mode) for s in ss) and len(ss) > 1:
            raise Violation("exclusive_holders_engine", "%s has %d live sessions, one exclusive: %s" % (
                rid, len(ss), [(s.session_id[-6:], s.access_mode, s.state) for s in ss]))


def engine_tables(engine):
    """The engine's own tables: the engine-side checker (capwarden.engine.invariants, helper B's)
    when the code under test has it, else this module's exclusive-holder check alone (so the
    harness also runs against code older than that checker)."""
    try:
        from capwarden.engine.invariants import check_engine
    except ImportError:
        return exclusive_holders_engine(engine)
    bad = check_engine(engine)
    if bad:
        raise Violation("engine_tables", "; ".join(bad))


def live_with_invalid_credential(engine, invalid_since, now, grace):
    """invalid_since: credential id -> real monotonic time it became revoked or expired."""
    for s in engine.registry.sessions.values():
        if s.state in LIVE and s.credential_ref:
            t = invalid_since.get(s.credential_ref["id"])
            if t is not None and now - t > grace:
                raise Violation("live_with_invalid_credential", "session %s on %s still %s %.2f s after its "
                                "credential was revoked or expired" % (s.session_id, s.resource_id, s.state, now - t))


def grant_for_invalid_credential(kind, session_id, cred_id, invalid_since, answered_at, grace):
    t = invalid_since.get(cred_id)
    if t is not None and answered_at - t > grace:
        raise Violation("grant_for_invalid_credential", "%s granted session %s %.2f s after its credential was "
                        "revoked or expired" % (kind, session_id, answered_at - t))


def actuation_accepted(before, after, invalid_since, sent_at, grace, drives=True):
    """A ResourceCommand was accepted. before/after: the engine's session (or None) just before
    the request and just after the answer, as (state, suspended, credential id). `drives`: the
    op needs write, execute or configure, which a suspended session may not do (S3; reading
    stays allowed)."""
    if before is None or before[0] not in LIVE:
        raise Violation("actuation_accepted", "a command was accepted for a session that was %s" % (
            "unknown to the engine" if before is None else before[0]))
    if drives and before[1] and after is not None and after[1]:
        raise Violation("actuation_accepted", "a command was accepted for a session suspended before and after it")
    t = invalid_since.get(before[2])
    if t is not None and sent_at - t > grace:
        raise Violation("actuation_accepted", "a command was accepted %.2f s after the session's credential was "
                        "revoked or expired" % (sent_at - t))


# ---- board side -------------------------------------------------------------------------------

async def board_grants(board, indexes):
    """{res index: [(token, epoch, modes)]} read from the board."""
    return {i: await board.grants(i) for i in indexes}


def exclusive_holders_board(grants, names):
    for i, held in grants.items():
        if len(held) > 1 and any(m & MODES_EXCLUSIVE for _t, _e, m in held):
            raise Violation("exclusive_holders_board", "the board holds %d grants on %s, one exclusive: %s" % (
                len(held), names.get(i, i), held))


class Ownership:
    """Board grants owned by no engine session, and engine sessions whose grant the board does
    not hold: each allowed to last GRACE_S (one heartbeat period and one request's retries),
    no longer."""

    def __init__(self, grace):
        self.grace = grace
        self.orphans = {}       # (res, token, epoch) -> first seen
        self.phantoms = {}      # session id -> first seen

    def forget(self):
        self.orphans.clear()
        self.phantoms.clear()

    def check(self, engine, handle, grants, names, now):
        sessions = list(engine.registry.sessions.values())
        by_token = collections.defaultdict(list)
        for s in sessions:
            by_token[s.token].append(s)
        seen = set()
        for res, held in grants.items():
            for token, epoch, _m in held:
                owners = [s for s in by_token.get(token, ()) if s.board is handle and s.res == res and (
                    s.state == "creating" or s.state == "terminating" or (s.state in LIVE and s.epoch == epoch))]
                if owners:
                    continue
                key = (res, token, epoch)
                seen.add(key)
                first = self.orphans.setdefault(key, now)
                if now - first > self.grace:
                    raise Violation("orphan_grant", "the board has held a grant on %s for session token %d epoch %d "
                                    "for %.2f s that no live engine session owns (retired: %s)" % (
                                        names.get(res, res), token, epoch, now - first, token in handle.retired))
        for key in list(self.orphans):
            if key not in seen:
                del self.orphans[key]
        seen = set()
        for s in sessions:
            if s.board is not handle or s.state != "active" or s.handover is not None or s.res not in grants:
                continue
            if (s.token, s.epoch) in {(t, e) for t, e, _m in grants[s.res]}:
                continue
            seen.add(s.session_id)
            first = self.phantoms.setdefault(s.session_id, now)
            if now - first > self.grace:
                raise Violation("engine_board_disagree", "the engine has called session %s on %s active for %.2f s "
                                "while the board holds no grant for it (token %d epoch %d)" % (
                                    s.session_id, s.resource_id, now - first, s.token, s.epoch))
        for sid in list(self.phantoms):
            if sid not in seen:
                del self.phantoms[sid]


# ---- answers and the audit log ------------------------------------------------------------------

# Each request's one final response: the engine's route table is its one home (its agreement
# with the schema is tests/test_routes.py's).
FINAL = {t: r.response for t, r in ROUTES.items()}


def final_answer(msg, reply):
    """The one final answer to `msg`: its response type or Error, correlated. Returns the deny
    code when the answer is a refusal (None otherwise)."""
    if not isinstance(reply, dict) or reply.get("correlation_id") != msg["message_id"]:
        raise Violation("wrong_answer", "%s %s answered with %r" % (msg["message_type"], msg["message_id"], reply))
    mtype = reply.get("message_type")
    body = reply.get("body") or {}
    if mtype == "Error":
        if body.get("error_code") == "E_INTERNAL":
            raise Violation("internal_error", "%s answered E_INTERNAL: %s" % (msg["message_type"],
                                                                               body.get("error_message")))
        return body.get("error_code")
    if mtype != FINAL[msg["message_type"]]:
        raise Violation("wrong_answer", "%s answered with %s" % (msg["message_type"], mtype))
    if body.get("result") in ("denied", "rejected"):
        return body.get("error_code")
    return None


def audit_entries(path):
    import os

    if not os.path.exists(path):
        return []               # nothing audited yet
    entries, problem = audit_mod.read(path)
    if problem is not None:
        raise Violation("audit_chain", "%s (after %d good entries)" % (problem, len(entries)))
    return entries


def denies_audited(denies, entries):
    """denies: Counter of (runtime, code) answered. Each must have its own audit entry."""
    audited = collections.Counter((e.get("runtime"), e.get("reason")) for e in entries
                                  if e.get("outcome") in ("denied", "rejected"))
    for key, n in denies.items():
        if audited[key] < n:
            raise Violation("deny_not_audited", "%d refusal(s) %s answered to %s, %d audited" % (
                n, key[1], key[0], audited[key]))
