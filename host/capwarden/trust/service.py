"""The trust service's HTTP API (docs/trust-api.md): `create_app(config)` and `run(...)`.

One FastAPI app holds the Ticket_Issuer, the Descriptor_Issuer and the revocation service (here)
and the Registration_Authority (trust.registry_api's router). Database work runs in the thread
pool, each request in its own transaction that is committed before the answer is built, so
nothing is handed out that a crash could lose (issue 13 item 2); single ticket requests that
arrive together share one such transaction (trust.groupcommit), and so do batches. The push
publisher is told only after the commit. Every error answers {"error", "message"} and never a traceback.
"""

import asyncio
import logging

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from capwarden.engine.server import is_loopback, load_tls
from capwarden.errors import UsageError
from capwarden.logfmt import kv
from capwarden.trust import push, registry_api
from capwarden.trust.db import open_db
from capwarden.trust.errors import TrustError, Unauthenticated
from capwarden.trust.groupcommit import GroupIssuer
from capwarden.trust.issuance import MAX_BATCH, Issuer
from capwarden.trust.keydist import latest_keyset_version
from capwarden.trust.revocations import RevocationService
from capwarden.trust.served import ServedVersions

log = logging.getLogger("capwarden.trust.service")
PREFIX = "/v1"
MAX_BODY = 1024 * 1024     # a ticket request with 256 grants is under 100 KB; a key-set ack far less
_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "bad_request",
               409: "conflict", 410: "gone", 413: "bad_request", 415: "bad_request", 422: "bad_request"}


# ---- request bodies (for the OpenAPI document; the issuers check every field again) ------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GrantIn(_Body):
    resource_pattern: str
    modes: list[str]
    constraints: dict[str, str] | None = None


class TicketRequest(_Body):
    fay_id: str
    terminal_id: str
    grants: list[GrantIn]
    valid_for_s: int
    convertible: bool | None = None


class TicketBatchRequest(_Body):
    # Items are checked by the issuer one by one, so that one malformed request is refused on
    # its own (per-item answer) rather than failing the batch; their shape is TicketRequest's.
    requests: list[dict]


class DescriptorRequest(_Body):
    fay_id: str
    terminal_id: str
    grants: list[GrantIn]
    not_before: int | None = None
    not_after: int


class RenewRequest(_Body):
    not_after: int


class RevocationRequest(_Body):
    target_id: str
    reason: str | None = None


def _plain(body):
    return body.model_dump(exclude_unset=True)


# ---- authentication ----------------------------------------------------------------------------

async def bearer_token(request: Request):
    """The bearer token of the request. Raises Unauthenticated when there is none; whose token
    it is (authorizer or terminal) is checked inside the request's transaction. A coroutine:
    FastAPI would run a plain function in the thread pool, a thread hop per request."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer TOKEN")
    return token.strip()


class BodyLimit:
    """Refuses a request body longer than `limit` bytes (413) as it arrives, declared length
    or not, so a client cannot make the service hold an unbounded body in memory. Past the
    limit the app is told the client went away and anything it still sends is dropped."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                return await _refuse(send, self.limit)
        seen = 0
        refused = False

        async def limited_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                await _refuse(send, self.limit)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)
        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:   # past the limit the app fails on the "disconnect": already answered
                raise


async def _refuse(send, limit):
    import json

    body = json.dumps({"error": "bad_request", "message": "the request body is over %d bytes" % limit}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- the app -----------------------------------------------------------------------------------

def create_app(config):
    """The ASGI app for `config` (trust.config.ServiceConfig). Migrates the database first
    when config.migrate. Raises trust.db.DatabaseError."""
    db = open_db(config.db_url)
    if config.migrate:
        db.migrate()
    publisher = config.publisher or push.NullPublisher()
    served = ServedVersions(db)

    async def lifespan(app):
        await publisher.start()
        tasks = [asyncio.ensure_future(served.run())]
        if not isinstance(publisher, push.NullPublisher) and config.keyset_watch_s:
            tasks.append(asyncio.ensure_future(watch_keysets(db, publisher, config.keyset_watch_s)))
        if config.prune_every_s:
            tasks.append(asyncio.ensure_future(prune_regularly(db, config)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await run_in_threadpool(served.flush)
            except Exception:   # noqa: BLE001 - status only: never fail the shutdown for it
                log.warning("recording the revocation-list versions served failed at shutdown")
            await publisher.aclose()
            db.dispose()

    app = FastAPI(title="capwarden trust service", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.state.config = config
    app.state.db = db
    app.state.publisher = publisher
    app.state.served = served
    app.state.issuer = Issuer(db, config.keys, terminal_states=registry_api.terminal_states, clock=config.clock,
                              require_registration=config.require_registration)
    app.state.tickets = GroupIssuer(app.state.issuer)     # POST /v1/tickets: group commit
    app.state.batches = GroupIssuer(app.state.issuer, batches=True)   # POST /v1/tickets/batch: the same
    app.state.revocations = RevocationService(db, config.keys, clock=config.clock)
    _errors(app)
    app.include_router(registry_api.router, prefix=PREFIX)
    _issuance_routes(app)
    _revocation_routes(app)
    return app


def _issuance_routes(app):
    issuer = app.state.issuer

    @app.post(PREFIX + "/tickets", tags=["Ticket_Issuer"])
    async def issue_ticket(body: TicketRequest, token: str = Depends(bearer_token)):
        out = await app.state.tickets.issue(token, _plain(body))
        log.info("%s", kv(event="issued", kind="ticket", id=out["jti"], terminal=body.terminal_id, exp=out["exp"]))
        return out

    @app.post(PREFIX + "/tickets/batch", tags=["Ticket_Issuer"],
              openapi_extra={"requestBody": {"content": {"application/json": {"schema": {
                  "type": "object", "required": ["requests"], "additionalProperties": False,
                  "properties": {"requests": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                                              "items": {"$ref": "#/components/schemas/TicketRequest"}}}}}}}})
    async def issue_ticket_batch(request: Request, token: str = Depends(bearer_token)):
        body = await _json_body(request, TicketBatchRequest)
        results = await app.state.batches.issue(token, body.requests)
        issued = sum(1 for r in results if "jti" in r)
        log.info("%s", kv(event="issued", kind="ticket-batch", requested=len(results), issued=issued))
        # JSONResponse directly: FastAPI's encoder walks every value again, a third of the time here
        return JSONResponse({"results": results})

    @app.get(PREFIX + "/tickets", tags=["Ticket_Issuer"])
    async def list_tickets(token: str = Depends(bearer_token), fay_id: str | None = None,
                           terminal_id: str | None = None):
        return {"tickets": await run_in_threadpool(issuer.list_tickets, token, fay_id, terminal_id)}

    @app.post(PREFIX + "/descriptors", tags=["Descriptor_Issuer"])
    async def issue_descriptor(body: DescriptorRequest, token: str = Depends(bearer_token)):
        out = await run_in_threadpool(issuer.issue_descriptor, token, _plain(body))
        log.info("%s", kv(event="issued", kind="descriptor", id=out["descriptor_id"], terminal=body.terminal_id))
        return out

    @app.post(PREFIX + "/descriptors/{descriptor_id}/renew", tags=["Descriptor_Issuer"])
    async def renew_descriptor(descriptor_id: str, body: RenewRequest, request: Request,
                               token: str = Depends(bearer_token)):
        out = await run_in_threadpool(issuer.renew_descriptor, token, descriptor_id, _plain(body))
        log.info("%s", kv(event="renewed", id=out["descriptor_id"], superseded=out["superseded"]))
        await _announce(request.app, out["versions"])
        return out


def _revocation_routes(app):
    service = app.state.revocations
    served = app.state.served

    @app.post(PREFIX + "/revocations", tags=["revocations"])
    async def revoke(body: RevocationRequest, request: Request, token: str = Depends(bearer_token)):
        out = await run_in_threadpool(service.revoke, token, _plain(body))
        for tid, version in out["versions"].items():
            log.info("%s", kv(event="revoked", id=body.target_id, terminal=tid, version=version))
        await _announce(request.app, out["versions"])
        return out

    # registry_api.that_terminal: the caller's own list only; suspended 403, deregistered 410.
    @app.get(PREFIX + "/terminals/{tid}/revocations", tags=["revocations"])
    async def revocation_list(tid: str, since: int | None = Query(None, ge=0),
                              terminal=Depends(registry_api.that_terminal)):
        doc, version = await run_in_threadpool(service.revocation_list_versioned, tid, since)
        if version > terminal.revocations_served:
            served.note(tid, version)      # for `capwarden trust status` (trust.served)
        return doc

    @app.get(PREFIX + "/tickets/{jti}/status", tags=["revocations"])
    async def ticket_status(jti: str, terminal=Depends(registry_api.current_terminal)):
        return await run_in_threadpool(service.ticket_status, jti, terminal.terminal_id)


async def _json_body(request, model):
    """The request body as `model`, parsed here rather than by FastAPI's dependency layer (the
    batch's items are plain dicts, checked by the issuer). Raises RequestValidationError."""
    import json

    from pydantic import ValidationError

    try:
        return model.model_validate(json.loads(await request.body()))
    except ValueError as exc:   # JSONDecodeError, UnicodeDecodeError
        if isinstance(exc, ValidationError):
            raise RequestValidationError(exc.errors()) from None
        raise RequestValidationError([{"loc": ("body",), "msg": "the body is not JSON"}]) from None


async def _announce(app, versions):
    """Tell the fleet (after the commit): a failing publisher never fails the answer."""
    try:
        await app.state.publisher.revocations(versions)
    except Exception:   # the signed list stays the source of truth; terminals poll too
        log.exception("push: publishing revocation versions failed")


async def watch_keysets(db, publisher, every_s):
    """Push `keyset(version)` whenever a newer key-set version appears in the database. Key sets
    are published by `capwarden trust rotate|retire` in another process, so the service looks
    (one indexed query every `every_s` seconds) rather than being told. The version found at
    start is not pushed: terminals poll too. Runs until cancelled; a failing query or publisher
    is logged (once per run of failures) and tried again."""
    seen, failing = None, False
    while True:
        try:
            latest = await run_in_threadpool(db.run, latest_keyset_version, write=False)
            if seen is not None and latest > seen:
                await publisher.keyset(latest)
                log.info("%s", kv(event="keyset-pushed", version=latest))
            seen = latest if seen is None else max(seen, latest)
            failing = False
        except Exception as exc:   # noqa: BLE001 - the watcher must outlive a database hiccup
            if not failing:
                log.warning("push: watching key-set versions failed: %s", exc.__class__.__name__)
            failing = True
        await asyncio.sleep(every_s)


async def prune_regularly(db, config):
    """trust.prune every config.prune_every_s seconds, the first time one period after start
    (a restart loop never prunes more often). In the thread pool, in short transactions; a
    failure is logged and tried again next time. Runs until cancelled."""
    from capwarden.trust import prune

    while True:
        await asyncio.sleep(config.prune_every_s)
        try:
            done = await run_in_threadpool(prune.prune, db, int(config.clock()), config.prune_keep_s)
            if any(done.values()):
                log.info("%s", kv(event="pruned", **done))
        except Exception as exc:   # noqa: BLE001 - pruning must not take the service down
            log.warning("pruning the trust tables failed: %s: %s", exc.__class__.__name__, exc)


def _errors(app):
    def answer(status, code, message):
        return JSONResponse({"error": code, "message": message}, status_code=status)

    @app.exception_handler(TrustError)
    async def trust_error(request, exc):
        log.info("%s", kv(event="refused", code=exc.code, path=request.url.path[:120], why=str(exc)[:200]))
        return answer(exc.status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return answer(422, "bad_request", "%s: %s" % (where or "request", first.get("msg", "invalid")))

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc):
        return answer(exc.status_code, _HTTP_CODES.get(exc.status_code, "internal"), str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_request, exc):
        log.error("trust service: unexpected %s", exc.__class__.__name__, exc_info=exc)
        return answer(500, "internal", "internal error (see the service log)")


# ---- serving -----------------------------------------------------------------------------------

def freeze_startup_heap():
    """Move every object made so far (modules, the app, its schemas and routes: the largest part
    of the service's heap, and never garbage) out of the collector's sight (gc.freeze). A full
    collection otherwise walks all of them again and again while a batch's thousands of small
    objects are made, and that cost each ticket more than parsing its request (thread CPU time
    in an instrumented service, measured once, issue 13). Call once, when the service is up."""
    import gc

    gc.collect()
    gc.freeze()


def run(config, host="127.0.0.1", port=8443, tls_cert=None, tls_key=None, log_level="info"):
    """Serve `config` with uvicorn until stopped. HTTPS with tls_cert/tls_key; plain HTTP only
    on a loopback address (as `capwarden serve`). Raises UsageError before binding anything."""
    import uvicorn

    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        load_tls(tls_cert, tls_key)   # a clear error for a bad file, before uvicorn's
    elif not is_loopback(host):
        raise UsageError("plain HTTP is only allowed on loopback: give --tls-cert and --tls-key to listen on %s"
                         % host)
    app = create_app(config)
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key, log_level=log_level,
                server_header=False, proxy_headers=False)
