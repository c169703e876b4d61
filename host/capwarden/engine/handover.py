"""Handover, first form: the holder's consent (blueprint 2.4, faults.md 35-45).

The requester names the resource, the Fay to receive it, the mode and that Fay's credential.
The credential is checked first; the holder is then offered the handover (HandoverOffered) and
answers with HandoverResponse. Consent moves the grant on the board in one operation (release
before acquire inside the agent); refusal, a timeout or a failed move leave the holder as it
was, and both parties are told. One offer per resource at a time: a second request is refused.
"""

import asyncio

from capshared.errors import DEVICE_TO_API
from capshared.limits import mode_bits
from capwarden.engine.engine import Handover
from capwarden.errors import DeviceError, LinkError


async def request_handover(engine, runtime_id, b):
    result = {"resource_id": b["resource_id"]}
    holder = None
    for s in engine.sessions.values():
        if s.resource_id == b["resource_id"] and s.state in ("active", "handover_pending"):
            holder = s
            break
    new, decision = engine._new_session(runtime_id, b["to_fay_id"], b["resource_id"], b["access_mode"], b["credential"])
    if new.state == "terminated":
        result.update(result="rejected", error_code=decision.error_code, error_message=decision.message)
        return result
    if holder is None:
        # Nobody holds it: the handover is a plain acquisition.
        body = await engine._do_AuthRequest_for(new)
        if body["result"] == "granted":
            result.update(result="completed", session_id=new.session_id)
        else:
            result.update(result="rejected", error_code=body["error_code"], error_message=body["error_message"])
        return result
    if holder.state == "handover_pending":
        new.move("terminated")
        engine.sessions.pop(new.session_id, None)
        result.update(result="rejected", error_code="E_HANDOVER_REJECTED",
                      error_message="another handover of this resource is pending")
        return result
    loop = asyncio.get_running_loop()
    h = Handover(holder, runtime_id, b["to_fay_id"], b["access_mode"], decision, b["timeout_ms"], loop)
    holder.handover = h
    engine.handovers[h.handover_id] = h
    result["handover_id"] = h.handover_id
    engine._move(holder, "handover_pending", "handover_offered")
    engine.push(holder.runtime_id, "HandoverOffered", {
        "handover_id": h.handover_id, "session_id": holder.session_id, "resource_id": holder.resource_id,
        "to_fay_id": h.to_fay, "access_mode": h.mode, "timeout_ms": h.timeout_ms})
    try:
        accepted = await asyncio.wait_for(asyncio.shield(h.answer), h.timeout_ms / 1000.0)
        why = "refused" if not accepted else ""
    except asyncio.TimeoutError:
        accepted, why = False, "timeout"
    finally:
        engine.handovers.pop(h.handover_id, None)   # a late answer now finds nothing (faults.md 39)
        holder.handover = None
    if accepted and holder.state == "handover_pending":
        try:
            grant = await holder.board.board.handover(holder.res, holder.token, holder.epoch, new.token,
                                                      mode_bits([new.access_mode]), engine.lease_ms)
        except (DeviceError, LinkError) as exc:
            code = DEVICE_TO_API.get(getattr(exc, "code", ""), "E_DEVICE_UNREACHABLE")
            return _rollback(engine, holder, new, result, code, "the board refused the move: %s" % exc)
        new.epoch = grant.epoch
        new.last_hb_mono = engine.clock()
        engine._move(new, "active", "handover")
        await engine._terminate(holder, "handover")
        engine.audit.record("handover", "completed", "consent", runtime=runtime_id, fay=new.fay_id,
                            resource=new.resource_id, session=new.session_id, from_session=holder.session_id,
                            credential=new.credential_ref["id"], epoch=new.epoch)
        result.update(result="completed", session_id=new.session_id)
        return result
    if holder.state != "handover_pending":
        return _rollback(engine, None, new, result, "E_HANDOVER_REJECTED", "the holder's session ended")
    code = "E_HANDOVER_TIMEOUT" if why == "timeout" else "E_HANDOVER_REJECTED"
    return _rollback(engine, holder, new, result, code, "the holder %s" % ("did not answer in time"
                                                                           if why == "timeout" else "refused"))


def _rollback(engine, holder, new, result, code, message):
    if holder is not None and holder.state == "handover_pending":
        engine._move(holder, "active", "handover_timeout" if code == "E_HANDOVER_TIMEOUT" else "handover_rejected")
    if new.state == "creating":
        new.move("terminated")
    engine.sessions.pop(new.session_id, None)
    engine.audit.record("handover", "rejected", code, runtime=new.runtime_id, fay=new.fay_id, resource=new.resource_id,
                        credential=new.credential_ref["id"] if new.credential_ref else None)
    result.update(result="rejected", error_code=code, error_message=message)
    return result
