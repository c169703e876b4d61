"""One route per runtime request (issue 10, item 1): engine/routes.py is the one table, and this
holds it to the shipped schema, the enforcement point, the SDK and the tests.

Every message_type of shared/schema/v1/schema.json is exactly one of: a runtime request (a
route), the response of one route, a push, or Error. A message added to the schema fails here
until it has a route (its response, enforcement rule and handler), an SDK method that sends it
and a test that uses it; the engine and the enforcement point need no edit of their own.
"""

import asyncio
import inspect
import os
import re
import types

import pytest

from capwarden import runtimeapi
from capwarden.engine import handlers, routes
from capwarden.engine.audit import AuditLog
from capwarden.engine.engine import Engine
from capwarden.engine.pep import PolicyEnforcementPoint
from capwarden.sdk import client as sdk_client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# These mention every message type by construction (samples of the schema, this table): a
# mention there is not a test of the message.
NOT_A_USE = {"test_routes.py", "test_schema.py", "test_schema_parts.py"}


def schema_types():
    return set(runtimeapi.message_types())


def requests_of_schema():
    """The runtime requests the schema defines: what is neither a response, a push nor Error."""
    responses = {r.response for r in routes.ROUTES.values()}
    return schema_types() - responses - set(routes.PUSHES) - {routes.ERROR}


def test_every_message_type_of_the_schema_is_a_request_a_response_a_push_or_error():
    requests = set(routes.ROUTES)
    responses = [r.response for r in routes.ROUTES.values()]
    kinds = [requests, set(responses), set(routes.PUSHES), {routes.ERROR}]
    assert len(set(responses)) == len(responses), "two requests share a response type"
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            assert not a & b, a & b
    assert set().union(*kinds) == schema_types()
    # Nothing in the table that the schema does not define ...
    assert requests | set(responses) <= schema_types()
    # ... and every request of the schema has a route (a missing one used to answer E_INTERNAL).
    assert requests_of_schema() == requests


def test_every_route_names_its_own_request_a_rule_and_a_handler():
    for mtype, route in routes.ROUTES.items():
        assert route.request == mtype
        assert getattr(PolicyEnforcementPoint, route.rule.__name__) is route.rule, mtype
        assert getattr(handlers, route.handler.__name__) is route.handler, mtype
        assert inspect.iscoroutinefunction(route.handler), mtype
        assert len(inspect.signature(route.handler).parameters) == 5, mtype    # (engine, runtime_id, body, target, origin)
        assert len(inspect.signature(route.rule).parameters) == 3, mtype      # (pep, runtime_id, body)


def _sdk_senders():
    """message_type -> names of the SDK methods marked as sending it (sdk.client.sends)."""
    out = {}
    for cls in (sdk_client.Client, sdk_client.Session):
        for name, fn in vars(cls).items():
            for mtype in getattr(fn, "sends", ()):
                out.setdefault(mtype, set()).add(name)
    return out


def test_every_request_has_an_sdk_method_and_the_sdk_sends_nothing_else():
    senders = _sdk_senders()
    for mtype in requests_of_schema():
        assert senders.get(mtype), "%s: no SDK method sends it (mark one with @sends)" % mtype
    assert set(senders) <= set(routes.ROUTES), set(senders) - set(routes.ROUTES)


def _test_sources():
    for top in ("tests", "hil"):
        for folder, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py") and name not in NOT_A_USE:
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        yield name, f.read()


def test_every_request_is_used_by_a_test():
    sources = list(_test_sources())
    senders = _sdk_senders()
    for mtype in sorted(requests_of_schema()):
        calls = [re.compile(r"\.%s\(" % re.escape(m)) for m in senders.get(mtype, ()) if not m.startswith("_")]
        users = [name for name, text in sources if '"%s"' % mtype in text or any(c.search(text) for c in calls)]
        assert users, "%s: no test sends it (by name or through its SDK method)" % mtype


def test_the_engine_serves_a_new_route_with_no_edit_of_its_own(monkeypatch):
    """A route added to the table is enforced and answered; what has none is denied."""
    seen = []

    def rule(pep, runtime_id, body):
        seen.append(("rule", runtime_id, body))
        return "target"

    async def handler(engine, runtime_id, body, target, origin):
        seen.append(("handler", target))
        return {"echo": body["x"]}

    monkeypatch.setitem(routes.ROUTES, "EchoRequest", routes.Route("EchoRequest", "EchoResult", rule, handler))
    authorizer = types.SimpleNamespace(terminal_id="terminal:01927b34-7e21-7c4d-a89f-1234567890ab", listeners=[])
    engine = Engine(authorizer, {}, AuditLog(None))
    engine.add_runtime("rtA")

    async def ask(mtype):
        return await engine.handle("rtA", runtimeapi.make(mtype, {"x": 7}, "rtA"))

    reply = asyncio.run(ask("EchoRequest"))
    assert reply["message_type"] == "EchoResult" and reply["body"] == {"echo": 7}
    assert seen == [("rule", "rtA", {"x": 7}), ("handler", "target")]
    monkeypatch.delitem(routes.ROUTES, "EchoRequest")
    reply = asyncio.run(ask("EchoRequest"))
    assert reply["message_type"] == "Error" and reply["body"]["error_code"] == "E_PERMISSION_DENIED"


@pytest.mark.parametrize("mtype", sorted(routes.PUSHES) + [routes.ERROR])
def test_pushes_and_error_have_no_route(mtype):
    assert mtype not in routes.ROUTES
