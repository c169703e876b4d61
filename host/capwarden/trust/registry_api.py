"""HTTP routes of the Registration_Authority (docs/trust-api.md "Registration_Authority").

`router` is included under the prefix /v1 by the service's app (capwarden.trust.service
create_app), which turns every trust.errors.TrustError into {"error", "message"} with its
status. The routes use the registry.RegistrationAuthority in `app.state.ra`, made on first use
from the app's `state.db`, `state.config.keys` (the key ring), `state.config.clock` and
`state.publisher` when the app did not set one (install() sets it and includes the router).
`terminal_states` is registry.terminal_states, for the issuers. `current_terminal` is the
dependency for every route a terminal calls with its bearer token: it answers 401 for a missing
or unknown token, 403 for a suspended terminal (no key sets, no lists, no credentials) and 410
for a deregistered one; the revocation-list and ticket-status routes use it too. `that_terminal`
additionally requires the path's {tid} to be the caller's own.

The routes are plain `def`s: FastAPI runs them in its thread pool, where the database calls
may block.
"""

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from capwarden.trust.errors import Forbidden, Unauthenticated
from capwarden.trust.registry import RegistrationAuthority, terminal_state, terminal_states  # noqa: F401 (for the service)

PREFIX = "/v1"
router = APIRouter(tags=["Registration_Authority"])
_bearer = HTTPBearer(auto_error=False, description="the terminal's token from its registration")


def install(app, ra):
    """Serve `ra` (a registry.RegistrationAuthority) on `app`."""
    app.state.ra = ra
    app.include_router(router, prefix=PREFIX)


def get_ra(request: Request):
    state = request.app.state
    ra = getattr(state, "ra", None)
    if ra is None:
        config = state.config
        ra = state.ra = RegistrationAuthority(state.db, config.keys, clock=config.clock,
                                              publisher=getattr(state, "publisher", None))
    return ra


def current_terminal(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(_bearer)):
    """The RegisteredTerminal holding the request's bearer token; see registry.authenticate."""
    if cred is None or cred.scheme.lower() != "bearer" or not cred.credentials:
        raise Unauthenticated("a terminal's bearer token is required")
    return get_ra(request).authenticate(cred.credentials)


def that_terminal(tid: str, terminal=Depends(current_terminal)):
    """current_terminal, when the path's {tid} is its own Terminal_ID."""
    if tid != terminal.terminal_id:
        raise Forbidden("a terminal may only ask about itself")
    return terminal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceKey(_Strict):
    algorithm: str
    key_material: str


class RegistrationRequest(_Strict):
    enrollment_secret: str
    terminal_id: str | None = None
    device_key: DeviceKey
    proof: str


class SignedDocument(_Strict):
    payload: str
    signatures: list[dict]


@router.post("/registrations", summary="One-time registration with an enrollment secret (§4.4)")
def post_registration(body: RegistrationRequest, request: Request):
    return get_ra(request).register(body.model_dump(exclude_none=True))


@router.get("/keysets/latest", summary="The newest key-set version")
def get_latest_keyset(request: Request, terminal=Depends(current_terminal)):
    return {"version": get_ra(request).latest()}


@router.get("/keysets/{version}", summary="Signed key set N")
def get_keyset(version: int, request: Request, terminal=Depends(current_terminal)):
    return get_ra(request).keyset(version)


@router.post("/keysets/{version}/ack", summary="The terminal's signed acknowledgement of key set N")
def post_keyset_ack(version: int, body: SignedDocument, request: Request, terminal=Depends(current_terminal)):
    acked = get_ra(request).ack(terminal, version, body.model_dump())
    return {"terminal_id": terminal.terminal_id, "version": version, "key_set_acked": acked}


@router.get("/terminals/{tid}", summary="The terminal's registration status")
def get_terminal(tid: str, request: Request, terminal=Depends(that_terminal)):
    return get_ra(request).terminal_info(tid)
