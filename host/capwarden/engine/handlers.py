"""One handler per runtime request; routes.py maps each message type to its handler, its
enforcement rule and its response.

A handler is `async handler(engine, runtime_id, body, target, origin)` and returns the response
body. `target` is what the enforcement rule resolved (the session, the offer, the owned subset
of heartbeat ids), so a handler never looks up a raw id by itself; `origin` is the connection
the request came on. A refusal raises CapError with an S2 code, which the engine answers and
audits.
"""

from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.engine import admission, handover, protocol
from capwarden.engine.registry import LIVE
from capwarden.errors import CapError, DeviceError, LinkError


async def auth_request(engine, runtime_id, b, _target, origin):
    s, decision = admission.new_session(engine, runtime_id, b["fay_id"], b["resource_id"], b["access_mode"],
                                        b["credential"], origin=origin)
    if s is None:
        return {"resource_id": b["resource_id"], "access_mode": b["access_mode"], "result": "denied",
                "error_code": decision.error_code, "error_message": decision.message}
    wait_ms = b.get("wait_ms", 0)
    return await admission.lock(engine, s, wait_ms, audit_first=not wait_ms)


async def heartbeat(engine, runtime_id, b, target, _origin):
    alive, unknown = target
    now = engine.clock()
    wall = int(engine.wall())
    # busy_ms (faults.md 18): the runtime is in a long but healthy operation and promises its
    # next heartbeat within that time; bounded by the engine's maximum, which the ack reports.
    busy = min(b.get("busy_ms", 0), engine.max_busy_ms)
    kept = []
    for s in alive:
        why = admission.recheck(engine, s)   # a heartbeat must not renew what a fresh request would not get
        if why is not None:
            await engine.terminate(s, why)
            unknown.append(s.session_id)
            continue
        kept.append(s)
        s.last_hb_mono = now
        s.last_heartbeat_at = wall
        s.busy_ms = busy
        if s.suspended:
            await engine.set_suspended(s, False, "heartbeat_resumed")
    body = {"alive": [s.session_id for s in kept], "unknown": unknown}
    if "busy_ms" in b:
        body["busy_ms"] = busy
        if busy and kept:
            engine.audit.record("busy", "granted", "heartbeat_busy", runtime=runtime_id,
                                sessions=[s.session_id for s in kept], requested_ms=b["busy_ms"], busy_ms=busy)
    return body


async def session_release(engine, _runtime_id, _b, s, _origin):
    await engine.terminate(s, "released")
    return {"session_id": s.session_id}


async def fay_terminated(engine, runtime_id, b, _target, _origin):
    ids = []
    for s in engine.registry.of_runtime(runtime_id, b["fay_id"], live_only=False):
        if s.state == "creating":
            await engine.cancel(s, withdraw=True)    # its requester is told by its own answer
        elif s.state in LIVE:
            ids.append(s.session_id)
            await engine.terminate(s, "fay_terminated")
    return {"session_ids": ids}


async def session_query(_engine, _runtime_id, _b, sessions, _origin):
    return {"sessions": [s.to_json() for s in sessions]}


async def handover_request(engine, runtime_id, b, _target, origin):
    return await handover.request_handover(engine, runtime_id, b, origin)


async def handover_response(_engine, _runtime_id, b, h, _origin):
    h.settle(b["accept"])
    return {"handover_id": h.handover_id}


async def resource_command(engine, runtime_id, b, s, _origin):
    # Allowed while active or while a handover is offered (the holder keeps control until it
    # consents). Suspension, mode and epoch are enforced by the board itself.
    try:
        raw = b64u_decode(b.get("args", ""))
    except ValueError:
        raise CapError("E_MALFORMED_REQUEST", "args must be base64url without padding") from None
    why = admission.recheck(engine, s)   # the grant was decided earlier: its credential is checked now
    if why is not None:
        await engine.terminate(s, why)
        raise CapError(protocol.refusal_code(s.credential_ref["type"], why), "the session's credential is no "
                       "longer valid (%s): the session ended" % why.replace("_", " "))
    try:
        data = await s.board.board.actuate(s.res, s.token, s.epoch, b["op"], raw)
    except DeviceError as exc:
        engine.audit.record("command", "denied", exc.code, runtime=runtime_id, session=s.session_id, op=b["op"],
                            detail=exc.message[:200])
        raise CapError(protocol.api_code(exc.code), protocol.refusal_text(exc)) from None
    except LinkError as exc:
        raise CapError("E_DEVICE_UNREACHABLE", str(exc)) from None
    return {"session_id": s.session_id, "op": b["op"], "data": b64u_encode(data)}
