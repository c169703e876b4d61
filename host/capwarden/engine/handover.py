"""Handover, first form: the holder's consent (blueprint 2.4, faults.md 35-45).

The requester names the resource, the Fay to receive it, the mode and that Fay's credential.
The credential is checked first; the holder is then offered the handover (HandoverOffered,
state handover_pending) and answers with HandoverResponse. While the offer is open the holder
stays in control. Consent moves the grant on the board in one operation (the agent swaps the
slot's owner under a new epoch: release before acquire, no instant with both or neither);
the engine then ends the holder's session before it activates the new one, so the runtimes are
told in that order too. Refusal, a timeout or a failed move leave the holder as it was, and both
parties are told (the requester by HandoverResult, the holder by SessionStateChanged).

One offer per resource at a time: a second request while one is open is refused (faults.md
42). A shared (read) resource with several holders is not handed over: there is no single
holder to ask. Nobody holding the resource makes the request a plain acquisition.

A resource whose handover policy is priority, model or human (policy.py) is not offered to its
holder: the policy decides, and a grant is carried out by `preempt()`, the same board move
without the holder's consent; the holder's session ends with reason "preempted".
"""

import asyncio

from capshared.limits import mode_bits
from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.engine import admission, policy, protocol
from capwarden.errors import DeviceError, LinkError


class Handover:
    """An open offer: who holds, who asked, for whom, and the holder's answer to come."""

    def __init__(self, holder, runtime_id, new, timeout_ms):
        self.handover_id = uuid_text(new_uuid7())
        self.holder = holder
        self.runtime_id = runtime_id
        self.new = new
        self.timeout_ms = timeout_ms
        self.answer = asyncio.get_running_loop().create_future()

    def settle(self, accept):
        if not self.answer.done():
            self.answer.set_result(bool(accept))


async def request_handover(engine, runtime_id, b, origin=None):
    """The HandoverResult body for a HandoverRequest the enforcement point allowed."""
    result = {"resource_id": b["resource_id"]}
    new, decision = admission.new_session(engine, runtime_id, b["to_fay_id"], b["resource_id"], b["access_mode"],
                                          b["credential"], origin=origin, action="handover")
    if new is None:
        result.update(result="rejected", error_code=decision.error_code, error_message=decision.message)
        return result
    pol = policy.decides(engine, new)
    if pol is not None and policy.contended_holder(engine, new) is not None:
        # A priority, model or human policy decides instead of the holder's consent (policy.py).
        answer, body = await policy.contend(engine, pol, new, "handover", request_timeout_ms=b["timeout_ms"])
        if answer == "granted":
            result.update(result="completed", **_session_fields(body))
            return result
        if answer == "denied":
            result.update(result="rejected", **body)
            return result
    holders = engine.registry.holders(b["resource_id"])
    if not holders:
        # Nobody holds it: the handover is a plain acquisition.
        body = await admission.lock(engine, new)
        if body["result"] == "granted":
            result.update(result="completed", **_session_fields(body))
        else:
            result.update(result="rejected", error_code=body["error_code"], error_message=body["error_message"])
        return result
    if len(holders) > 1:
        return await _rollback(engine, None, new, result, "E_HANDOVER_REJECTED",
                         "the resource is shared by %d sessions: a handover moves one holder's grant" % len(holders))
    holder = holders[0]
    from capwarden.engine.takeover import is_operator   # here: takeover imports this module

    if is_operator(holder):
        # A human holds it (issue 15 item 5): nobody to ask, and no Fay's request moves it.
        return await _rollback(engine, None, new, result, "E_HANDOVER_REJECTED",
                               "an operator holds the resource: it comes back by the operator's hand-back")
    if holder.state == "handover_pending":
        return await _rollback(engine, None, new, result, "E_HANDOVER_REJECTED",
                         "another handover of this resource is pending")
    # A consent policy's own timeout, when configured, caps the request's (blueprint 2.4).
    limit = engine.policies.for_resource(new.resource_id).timeout_ms
    h = Handover(holder, runtime_id, new, min(b["timeout_ms"], limit) if limit else b["timeout_ms"])
    holder.handover = h
    engine.registry.handovers[h.handover_id] = h
    result["handover_id"] = h.handover_id
    engine.move(holder, "handover_pending", "handover_offered")
    engine.push(holder.runtime_id, "HandoverOffered", {
        "handover_id": h.handover_id, "session_id": holder.session_id, "resource_id": holder.resource_id,
        "to_fay_id": new.fay_id, "access_mode": new.access_mode, "timeout_ms": h.timeout_ms})
    try:
        accepted = await asyncio.wait_for(asyncio.shield(h.answer), h.timeout_ms / 1000.0)
        why = "" if accepted else "refused"
    except asyncio.TimeoutError:
        accepted, why = False, "timeout"
    finally:
        engine.registry.handovers.pop(h.handover_id, None)   # a late answer now finds nothing (faults.md 39)
        holder.handover = None
    if holder.state != "handover_pending":
        return await _rollback(engine, None, new, result, "E_HANDOVER_REJECTED", "the holder's session ended")
    if new.state != "creating":
        return await _rollback(engine, holder, new, result, "E_HANDOVER_REJECTED", "the requester went away")
    if not accepted:
        code = "E_HANDOVER_TIMEOUT" if why == "timeout" else "E_HANDOVER_REJECTED"
        return await _rollback(engine, holder, new, result, code,
                                     "the holder did not answer in time" if why == "timeout" else "the holder refused")
    # The requester's credential was checked before the holder was asked, which may have been
    # long ago: checked again at the moment of use (a revoked Fay gets nothing).
    why = admission.recheck(engine, new, refresh=True)
    if why is not None:
        return await _rollback(engine, holder, new, result, protocol.refusal_code(new.credential_ref["type"], why),
                               "the requester's credential is no longer valid (%s)" % why.replace("_", " "))
    try:
        grant = await holder.board.board.handover(holder.res, holder.token, holder.epoch, new.token,
                                                  mode_bits([new.access_mode]), engine.lease_ms)
    except DeviceError as exc:
        return await _rollback(engine, holder, new, result, protocol.api_code(exc.code),
                               "the board refused the move: %s" % protocol.refusal_text(exc))
    except LinkError as exc:
        # The board's answer is lost: it may or may not have moved. Read back who holds it.
        return await _unknown_outcome(engine, holder, new, result, exc)
    return await _commit(engine, runtime_id, holder, new, grant.epoch, result)


async def _commit(engine, runtime_id, holder, new, epoch, result, ended="handover", how="consent", activated="handover",
                  audit=None):
    # Release before acquire, also in what the runtimes are told (blueprint 2.4).
    await engine.terminate(holder, ended)
    if new.state != "creating":
        # The requester went away during the move; its withdrawal ended the moved grant too.
        return await _rollback(engine, None, new, result, "E_HANDOVER_REJECTED", "the requester went away")
    why = admission.recheck(engine, new)    # revoked during the move itself: the moved grant is ended, not activated
    if why is not None:
        return await _rollback(engine, None, new, result, protocol.refusal_code(new.credential_ref["type"], why),
                               "the requester's credential is no longer valid (%s)" % why.replace("_", " "),
                               withdraw=True)
    new.epoch = epoch
    new.last_hb_mono = engine.clock()
    engine.move(new, "active", activated)
    engine.audit.record("handover", "completed", how, runtime=runtime_id, fay=new.fay_id,
                        resource=new.resource_id, mode=new.access_mode, session=new.session_id,
                        from_session=holder.session_id, from_fay=holder.fay_id, credential=new.credential_ref["id"],
                        key_id=new.credential_ref["key_id"], issuer=new.credential_ref["issuer_id"], epoch=epoch,
                        **(audit or {}))
    result.update(result="completed", **admission.auth_fields(new))
    return result


async def preempt(engine, holder, new, how, audit=None):
    """Move `holder`'s grant to `new` now, without asking the holder (a policy decided: priority,
    model or human). The same atomic move as a consent handover: the board swaps the slot's
    owner under a new epoch, the holder's session ends with reason "preempted" (what it is told),
    then `new` becomes active. Returns {"result": "completed", ...} or {"result": "rejected",
    "error_code", "error_message", "retry": bool}; on rejection the holder keeps the resource
    (rollback) and `new` stays `creating` when `retry` is true (the move may be tried again).
    Raises StoreError when it cannot be audited."""
    result = {"resource_id": new.resource_id}
    if new.state != "creating":
        return dict(result, result="rejected", error_code="E_SESSION_NOT_FOUND", retry=False,
                    error_message="the request was withdrawn before the move")
    if holder.state != "active":
        return dict(result, result="rejected", error_code="E_HANDOVER_REJECTED", retry=False,
                    error_message="the holder is %s: a policy preempts only an active holder" % holder.state)
    why = admission.recheck(engine, new, refresh=True)
    if why is not None:
        return dict(result, result="rejected", error_code=protocol.refusal_code(new.credential_ref["type"], why),
                    retry=False, error_message="the credential is no longer valid (%s)" % why.replace("_", " "))
    try:
        epoch = (await holder.board.board.handover(holder.res, holder.token, holder.epoch, new.token,
                                                   mode_bits([new.access_mode]), engine.lease_ms)).epoch
    except DeviceError as exc:
        return dict(result, result="rejected", error_code=protocol.api_code(exc.code), retry=True,
                    error_message="the board refused the move: %s" % protocol.refusal_text(exc))
    except LinkError as exc:
        # The answer is lost: the board may or may not have moved it. Read back who holds it.
        try:
            held = await holder.board.board.grants(holder.res)
        except LinkError:
            held = None
        epoch = next((e for session, e, _modes in held or () if session == new.token), None)
        if epoch is None and held is None:
            # Cannot tell who holds it: end both rather than guess (as _unknown_outcome).
            await engine.terminate(holder, "board_unreachable")
            await engine.cancel(new, withdraw=True)
            return dict(result, result="rejected", error_code="E_DEVICE_UNREACHABLE", retry=False,
                        error_message="the board did not answer: %s" % exc)
        if epoch is None:
            return dict(result, result="rejected", error_code="E_DEVICE_UNREACHABLE", retry=True,
                        error_message="the board did not answer: %s" % exc)
    # Moved on the board: the holder's session ends ("preempted", what it is told), then new's
    # starts (and if new's requester went away meanwhile, its withdrawal ended the moved grant).
    out = await _commit(engine, new.runtime_id, holder, new, epoch, result, ended="preempted", how=how,
                        activated="granted", audit=audit)
    out.setdefault("retry", False)
    return out


async def _unknown_outcome(engine, holder, new, result, exc):
    try:
        held = await holder.board.board.grants(holder.res)
    except LinkError:
        held = None
    for session, epoch, _modes in held or ():
        if session == new.token:
            return await _commit(engine, new.runtime_id, holder, new, epoch, result)
    if held is None:
        # Cannot tell who holds it: end both rather than guess; whatever the board holds for
        # either is withdrawn when it answers again (or its lease makes the hardware safe).
        await engine.terminate(holder, "board_unreachable")
        return await _rollback(engine, None, new, result, "E_DEVICE_UNREACHABLE",
                               "the board did not answer: %s" % exc, withdraw=True)
    return await _rollback(engine, holder, new, result, "E_DEVICE_UNREACHABLE", "the board did not answer: %s" % exc)


def _session_fields(auth_body):
    return {k: auth_body[k] for k in ("session_id", "granted_modes", "expires_at", "heartbeat_interval_ms",
                                      "heartbeat_timeout_ms")}


async def _rollback(engine, holder, new, result, code, message, withdraw=False):
    if holder is not None and holder.state == "handover_pending":
        engine.move(holder, "active", "handover_timeout" if code == "E_HANDOVER_TIMEOUT" else "handover_rejected")
    await engine.cancel(new, withdraw=withdraw)
    engine.audit.record("handover", "rejected", code, runtime=new.runtime_id, fay=new.fay_id, resource=new.resource_id,
                        mode=new.access_mode, credential=new.credential_ref["id"] if new.credential_ref else None,
                        from_session=holder.session_id if holder is not None else None, detail=message[:200])
    result.update(result="rejected", error_code=code, error_message=message)
    return result
