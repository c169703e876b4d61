"""The demo's control steps (issue 15): a priority policy preempting a holder, and an operator
taking a motor from a Fay and handing it back (what the console's Take and Return buttons do,
through engine/controlroom.py).
"""

import asyncio
import importlib.util

from capwarden.cli.demo import say

PRIORITY_RESOURCE = "motor_right"
RULE = "role == 'emergency' ? 100 : 10"
OPERATOR = "alice"


def policy_available():
    """Priority rules are CEL, evaluated by the common-expression-language package."""
    return importlib.util.find_spec("cel") is not None


def console_available():
    """The console is a Starlette app on uvicorn, its pages package data."""
    from importlib import resources

    if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn")):
        return False
    try:
        return (resources.files("capwarden.engine.console") / "static" / "console.html").is_file()
    except (ImportError, OSError):
        return False


async def show_console(url):
    """The console's address, and that it answers (its login page: operators log in there)."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:   # loopback: no proxy
            page = await http.get(url + "login")
    except httpx.HTTPError as exc:
        raise OSError("the console did not answer: %s" % (exc or exc.__class__.__name__)) from None
    if page.status_code != 200:
        raise ValueError("the console answered GET /login with %d" % page.status_code)
    say("operator console at %s (GET /login: %d; while the demo runs. capwarden serve --console HOST:PORT, "
        "accounts: capwarden operator add)" % (url, page.status_code))


def handover_settings(ifay, cofay):
    """The engine's "handover" section: a priority rule on motor_right, consent elsewhere. The
    roles come from this configuration only: a runtime cannot name its own."""
    from capwarden.engine import policyconfig

    return policyconfig.parse({
        "rules": {"roles": RULE},
        "fays": {ifay: {"role": "routine"}, cofay: {"role": "emergency"}},
        "policies": [{"resource": "sim/" + PRIORITY_RESOURCE, "policy": "priority", "rule": "roles",
                      "timeout_ms": 5000}]})


async def priority(ifay_rt, cofay_rt, ifay, cofay, res, cred_i, cred_c, ifay_sessions, cofay_sessions):
    say("policy for sim/%s: priority, rule %r; the iFay is 'routine', the coFay 'emergency'"
        % (PRIORITY_RESOURCE, RULE))
    held = await ifay_rt.acquire(ifay, res(PRIORITY_RESOURCE), "write", cred_i)
    ifay_sessions.append(held)
    await held.command(1, (300).to_bytes(2, "little", signed=True))
    say("iFay drives %s at 300 (session %s)" % (PRIORITY_RESOURCE, held.session_id[:13]))
    won = await cofay_rt.acquire(cofay, res(PRIORITY_RESOURCE), "write", cred_c)
    cofay_sessions.append(won)
    reason = await asyncio.wait_for(held.ended(), 10)
    say("coFay asks for it: score 100 against 10, granted at once (session %s); the iFay's session: %s (%s)"
        % (won.session_id[:13], held.state, reason))


async def take_and_hand_back(engine, ifay_rt, ifay, rid, cred_i, ifay_sessions):
    """The operator takes `rid` from the iFay, drives it, and hands it back to the iFay."""
    from capwarden.engine import controlroom

    fay_session = next(s for s in ifay_sessions if s.resource_id == rid and s.state == "active")
    holder = await controlroom.take(engine, OPERATOR, rid)
    reason = await asyncio.wait_for(fay_session.ended(), 10)
    name = rid.rsplit("/", 1)[-1]
    say("operator %s takes %s: no consent asked; the iFay's session ends (%s); the board holds it for the "
        "operator under epoch %d" % (OPERATOR, name, reason, holder["epoch"]))
    await controlroom.act(engine, OPERATOR, rid, 1, (0).to_bytes(2, "little", signed=True))
    say("the operator stops the motor (speed 0)")
    # The iFay asks again and waits; the operator returns the motor to it.
    again = asyncio.ensure_future(ifay_rt.acquire(ifay, rid, "write", cred_i, wait_ms=15000))
    try:
        out = await controlroom.hand_back(engine, OPERATOR, rid, ifay, timeout_s=15)
        back = await asyncio.wait_for(again, 20)
    finally:
        if not again.done():
            again.cancel()
    ifay_sessions.append(back)
    how = ("its waiting request is granted" if out["result"] == "completed"
           else "the engine waits for its request, then grants it")
    say("the operator hands %s back to the iFay: %s by moving the operator's grant (session %s, a new epoch)"
        % (name, how, back.session_id[:13]))
    await back.command(1, (650).to_bytes(2, "little", signed=True))
    say("iFay drives %s at 650 again" % name)
    return back
