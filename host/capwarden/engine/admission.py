"""Admitting a request for a resource: the credential checked, a session in `creating`, the
board's lock taken, and the credential checked again at the moment of use.

AuthRequest (handlers.py) and HandoverRequest (handover.py) both come through here: the
decision and its audit entries are made the same way whichever message asked.
"""

import contextvars

from capshared.limits import mode_bits
from capwarden.engine import policy, protocol
from capwarden.engine.registry import LIVE
from capwarden.engine.sessions import Session
from capwarden.errors import DeviceError, LinkError, StoreError

# Set by a handler whose answer needs only the audit entries up to this seq on disk (the rest
# are facts recorded after the decision, synced with the next flush): read by the server in
# the request's own task, after handle() returns. Unset: every entry recorded so far.
ANSWER_SEQ = contextvars.ContextVar("ANSWER_SEQ", default=None)
# The body of the request being decided, set by Engine._decide in the request's own task: a
# handover policy reads the urgency the request claims from it (policy.py; input, not authority).
REQUEST = contextvars.ContextVar("REQUEST", default=None)


def new_session(engine, runtime_id, fay_id, resource_id, mode, credential, origin=None, action="acquire"):
    """(session in `creating`, decision) when the credential grants it and the resource is
    there; (None, decision) when denied (audited). Raises StoreError when the deny cannot be
    audited."""
    wall = int(engine.wall())
    decision = engine.authorizer.check(credential, fay_id, resource_id, mode, wall)
    target = engine.registry.resolve(resource_id) if decision.granted else None
    if decision.granted and target is None:
        decision.granted = False
        decision.error_code = "E_RESOURCE_UNAVAILABLE"
        decision.message = "no board has the resource %s, or it is absent or faulty" % resource_id
    elif decision.granted and target[0].down:
        decision.granted = False
        decision.error_code = "E_DEVICE_UNREACHABLE"
        decision.message = "the board %s does not answer (%s)" % (target[0].name, target[0].down)
    if not decision.granted:
        engine.audit.record(action, "denied", decision.error_code, runtime=runtime_id, fay=fay_id,
                            resource=resource_id, mode=mode, credential=decision.credential_id,
                            key_id=decision.key_id, issuer=decision.issuer_id, detail=decision.message[:200])
        return None, decision
    s = Session(fay_id, runtime_id, resource_id, mode, engine.clock(), wall)
    s.board, s.res, cls = target
    s.interval_ms, s.timeout_ms = engine.liveness.for_class(cls)
    s.granted_modes = decision.granted_modes
    s.credential_ref = engine.authorizer.reference(decision)
    s.checked_generation = engine.authorizer.generation
    s.origin = origin
    s.token = engine.registry.new_token()
    engine.registry.add(s)
    engine.policies.note(s, cls, (REQUEST.get() or {}).get("urgency", 0))
    s.to_convert = decision     # a convertible ticket -> a local descriptor (4.4.1), once it is granted (Engine.move)
    return s, decision


async def lock(engine, s, wait_ms=0, audit_first=False):
    """Take a checked session's lock on its board: the AuthResult body. Raises StoreError when
    the decision cannot be audited.

    `audit_first` (an AuthRequest that does not wait): the grant's audit entry is written
    before the board is asked, so that its sync runs while the board answers; the board's
    epoch follows in a `lock` entry, and a board that refuses gets its `denied` entry after
    it (docs/DECISIONS.md, "The grant's audit entry before the board's lock").
    """
    result = {"resource_id": s.resource_id, "access_mode": s.access_mode}
    pol = policy.decides(engine, s)
    if pol is not None and policy.contended_holder(engine, s) is not None:
        # A busy resource under a priority, model or human policy: the policy answers (policy.py).
        answer, body = await policy.contend(engine, pol, s, "acquire", wait_ms)
        if answer == "granted":
            result.update(result="granted", **auth_fields(s))
            return result
        if answer == "denied":
            result.update(result="denied", **body)
            return result
        # "queue" (it asked to wait) or "free" (the holder went meanwhile): the board's way.
    early = None
    if audit_first:
        try:
            early = _granted_entry(engine, s, None)   # "authorized": no epoch before the board's
        except StoreError:
            await engine.cancel(s)          # nothing asked of the board yet
            raise
    try:
        grant = await s.board.board.acquire(s.res, mode_bits([s.access_mode]), s.token, engine.lease_ms, wait_ms)
    except DeviceError as exc:
        if s.moved_from is not None:
            s.moved_from.moved(None)        # the board moved nothing to this request
        return await _denied_after_board(engine, s, result, protocol.api_code(exc.code), protocol.refusal_text(exc),
                                         exc.message)
    except LinkError as exc:
        # The board may have granted it with the answer lost: withdraw whatever it holds.
        if s.moved_from is not None:
            s.moved_from.moved("lost", "board_unreachable")   # what it moved here is withdrawn below
        return await _denied_after_board(engine, s, result, "E_DEVICE_UNREACHABLE", str(exc), withdraw=True)
    if s.state != "creating":  # withdrawn while it waited (faults.md 28): the grant is voided
        await _void(engine, s, grant.epoch)
        engine.audit.record("acquire", "denied", "E_SESSION_NOT_FOUND", runtime=s.runtime_id, fay=s.fay_id,
                            resource=s.resource_id, mode=s.access_mode, credential=s.credential_ref["id"],
                            detail="withdrawn while it waited")
        result.update(result="denied", error_code="E_SESSION_NOT_FOUND",
                      error_message="the request was withdrawn while it waited")
        return result
    # The credential was checked before the board was asked; a queued request may have waited
    # while it was revoked or ran out. Checked again at the moment of use.
    why = recheck(engine, s, refresh=bool(wait_ms))
    if why is not None:
        await _void(engine, s, grant.epoch)
        code = protocol.refusal_code(s.credential_ref["type"], why)
        return await _denied_after_board(engine, s, result, code, "the credential is no longer valid (%s): checked "
                                         "again when the resource was granted" % why.replace("_", " "))
    # A hand-back (takeover.py) moves an operator's grant to a request waiting on the board,
    # and the board answers that wait before the HANDOVER itself: the operator's hold ends
    # here, before this session is active, so the engine never has two exclusive holders.
    if s.moved_from is not None:
        hold, s.moved_from = s.moved_from, None
        hold.moved("taken")
        await engine.terminate(hold, "handover")
    s.epoch = grant.epoch
    s.last_hb_mono = engine.clock()
    engine.move(s, "active", "granted")
    if early is None:
        _granted_entry(engine, s, s.epoch)
    else:
        # The answer's own entry is `early` (on disk by the time the answer goes); the epoch
        # is the board's fact, synced with the next flush, before anything else is answered.
        engine.audit.record("lock", "granted", "", runtime=s.runtime_id, resource=s.resource_id,
                            session=s.session_id, epoch=s.epoch)
        ANSWER_SEQ.set(early["seq"])
    result.update(result="granted", **auth_fields(s))
    return result


async def _void(engine, s, epoch):
    """The board granted `s` what it may not keep (withdrawn meanwhile, or its credential no
    longer holds): released, or, when a hand-back moved an operator's grant to it
    (takeover.py), moved back to the operator in one step, so the resource is neither freed nor
    driven safe under the operator's hand."""
    hold, s.moved_from = s.moved_from, None
    if hold is None or hold.state not in LIVE:     # a hold that ended meanwhile takes nothing back
        await engine.release_on_board(s.board, s.res, s.token, epoch)
        if hold is not None:
            hold.moved("lost", "handover")
        return
    try:
        back = await s.board.board.handover(s.res, s.token, epoch, hold.token, hold.bits, engine.lease_ms)
    except (DeviceError, LinkError) as exc:
        await engine.release_on_board(s.board, s.res, s.token, epoch)
        hold.moved("lost", "board_unreachable" if isinstance(exc, LinkError) else "handover")
        return
    hold.epoch = back.epoch
    hold.moved("back")


def _granted_entry(engine, s, epoch):
    ref = s.credential_ref
    # Written before the board was asked (epoch None), the entry says what the engine
    # decided, "authorized"; the board's answer follows (lock granted, or acquire denied).
    # Written after, it says what happened, "granted". "granted" always means the board did.
    return engine.audit.record("acquire", "granted" if epoch is not None else "authorized", "",
                               runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                               mode=s.access_mode, session=s.session_id, credential=ref["id"],
                               credential_type=ref["type"], key_id=ref["key_id"], issuer=ref["issuer_id"],
                               epoch=epoch)


def auth_fields(s):
    """The granted session's fields of an AuthResult (and of a completed HandoverResult)."""
    return {"session_id": s.session_id, "granted_modes": list(s.granted_modes),
            "expires_at": s.credential_ref["ends_at"], "heartbeat_interval_ms": s.interval_ms,
            "heartbeat_timeout_ms": s.timeout_ms}


async def _denied_after_board(engine, s, result, code, message, detail=None, withdraw=False):
    already = s.state != "creating"
    await engine.cancel(s, withdraw=withdraw)
    if already:
        code, message = "E_SESSION_NOT_FOUND", "the request was withdrawn while it waited"
    engine.audit.record("acquire", "denied", code, runtime=s.runtime_id, fay=s.fay_id, resource=s.resource_id,
                        mode=s.access_mode, credential=s.credential_ref["id"], detail=(detail or message)[:200])
    result.update(result="denied", error_code=code, error_message=message)
    return result


def recheck(engine, s, refresh=False):
    """None while the credential behind `s` would still be granted now, else the reason
    (authorizer.still_valid). Cheap when nothing changed since the last check; `refresh`
    first picks up what other processes wrote into the store (after a wait)."""
    wall = int(engine.wall())
    auth = engine.authorizer
    if refresh:
        auth.refresh(wall)
    if s.checked_generation == auth.generation and wall < s.credential_ref["ends_at"]:
        return None
    why = auth.still_valid(s.credential_ref, wall)
    if why is None:
        s.checked_generation = auth.generation
    return why
