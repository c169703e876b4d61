"""Helpers of the handover-policy tests (tests/engine/test_policy_*.py): an engine in this
process with a "handover" configuration, and requests that claim an urgency."""

import asyncio

from capwarden.engine import policyconfig
from capwarden.errors import CapError
from capwarden.sdk.session import Session
from enginerig import runtime, wait_until  # noqa: F401


def settings(world, policies, fays=None, **kw):
    """policyconfig Settings for `policies` [(resource name on sim, policy, extra dict)]; `fays`
    maps "A"/"B"/"C" to {"role", "max_urgency"}."""
    obj = dict(kw)
    obj["policies"] = [dict({"resource": "sim/" + name, "policy": kind}, **extra) for name, kind, extra in policies]
    obj["fays"] = {getattr(world, who): f for who, f in (fays or {}).items()}
    clock = obj.pop("clock", None)
    return policyconfig.parse(obj, clock=clock)


async def take(world, client, name, mode, who, urgency=None, wait_ms=0, timeout=30):
    """AuthRequest for Fay `who` with a claimed urgency: a tracked Session, or raises CapError."""
    body = world.auth_body(name, mode, who)
    if urgency is not None:
        body["urgency"] = urgency
    if wait_ms:
        body["wait_ms"] = wait_ms
    r = await client.request("AuthRequest", body, timeout=timeout + wait_ms / 1000.0)
    if r["result"] != "granted":
        raise CapError(r["error_code"], r["error_message"])
    return client._track(Session(client, r, getattr(world, who), world.res(name), mode))


async def hand(world, client, name, mode, who, urgency=None, timeout_ms=2000):
    """HandoverRequest to Fay `who` with a claimed urgency: the HandoverResult body."""
    body = {"resource_id": world.res(name), "to_fay_id": getattr(world, who), "access_mode": mode,
            "credential": world.cred(getattr(world, "d" + who)), "timeout_ms": timeout_ms}
    if urgency is not None:
        body["urgency"] = urgency
    r = await client.request("HandoverRequest", body, timeout=timeout_ms / 1000.0 + 30)
    if r["result"] == "completed":
        r["session"] = client._track(Session(client, r, getattr(world, who), world.res(name), mode))
    return r


def audit_entries(app, action=None):
    """The audit log's entries so far (its file), optionally of one action."""
    from capwarden.engine.audit import read

    app.engine.audit.sync()
    entries, problem = read(app.audit_path)
    assert problem is None, problem
    return [e for e in entries if action is None or e["action"] == action]


async def ended(session, timeout=5):
    return await session.ended(timeout)


def gather(*aws):
    return asyncio.gather(*aws, return_exceptions=True)
