"""The Registration_Authority's HTTP routes (docs/trust-api.md) in the real service app
(trust.service.create_app), on both database backends: registration, key sets, acks, terminal
authentication (current_terminal) for the RA's routes and the revocation service's."""

import pytest
from fastapi.testclient import TestClient
from ra_setup import clock, device, ra, registration_body  # noqa: F401 (fixtures)

from capwarden.credentials.ids import new_fay_id, new_terminal_id
from capwarden.trust import authorizers, keysets
from capwarden.trust.config import ServiceConfig
from capwarden.trust.service import create_app
from issuerig import SQLITE_ONLY


@pytest.fixture
def http(ra, db_url, clock):
    app = create_app(ServiceConfig(db_url=db_url, keys=ra.ring, clock=clock))
    with TestClient(app) as c:
        yield c


def _auth(token):
    return {"Authorization": "Bearer " + token}


def _register(ra, http, **enroll):
    bundle = ra.enroll(**enroll)
    dev = device()
    r = http.post("/v1/registrations", json=registration_body(bundle["enrollment_secret"], dev))
    assert r.status_code == 200, r.text
    out = r.json()
    return out["terminal_id"], out["token"], dev, bundle, out


def _error(r, status, code):
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and set(r.json()) == {"error", "message"}


def test_register_walk_and_acknowledge_over_http(ra, http):
    tid, token, dev, bundle, out = _register(ra, http)
    assert keysets.verify_registration(bundle["ra_keys"], out["registration"])["terminal_id"] == tid
    assert http.get("/v1/keysets/latest", headers=_auth(token)).json() == {"version": 1}
    doc = http.get("/v1/keysets/1", headers=_auth(token)).json()
    keysets.verify_next(bundle["ra_keys"], doc)
    r = http.post("/v1/keysets/1/ack", headers=_auth(token), json=keysets.build_ack(dev, tid, doc))
    assert r.status_code == 200 and r.json() == {"terminal_id": tid, "version": 1, "key_set_acked": 1}
    info = http.get("/v1/terminals/" + tid, headers=_auth(token)).json()
    assert info == {"terminal_id": tid, "status": "registered", "key_set_acked": 1, "revocations_version": 0}
    assert ra.keyset_status()[0]["acknowledged"] == 1


@SQLITE_ONLY
def test_registration_errors_answer_the_contract(ra, http):
    bundle = ra.enroll()
    body = registration_body(bundle["enrollment_secret"], device())
    assert http.post("/v1/registrations", json=body).status_code == 200
    _error(http.post("/v1/registrations", json=body), 401, "unauthenticated")        # the secret works once
    _error(http.post("/v1/registrations", json=dict(body, extra=1)), 422, "bad_request")
    _error(http.post("/v1/registrations", json={"enrollment_secret": "x"}), 422, "bad_request")
    other = ra.enroll(terminal_id=new_terminal_id())
    _error(http.post("/v1/registrations", json=registration_body(other["enrollment_secret"], device(),
                                                                  terminal_id=new_terminal_id())), 403, "forbidden")


@SQLITE_ONLY
def test_terminal_routes_need_a_terminal_token(ra, http):
    _register(ra, http)
    for path in ("/v1/keysets/latest", "/v1/keysets/1"):
        _error(http.get(path), 401, "unauthenticated")
        _error(http.get(path, headers=_auth("nobody")), 401, "unauthenticated")
        _error(http.get(path, headers={"Authorization": "Basic abc"}), 401, "unauthenticated")
    # An authorizer's token is not a terminal's.
    _aid, atoken = authorizers.add_authorizer(ra.db, "alice", {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [
        {"resource_pattern": "**", "modes": ["read"]}], "max_validity_s": 3600})
    _error(http.get("/v1/keysets/latest", headers=_auth(atoken)), 401, "unauthenticated")


def test_suspended_terminal_gets_no_key_sets_no_lists_no_status(ra, http):
    tid, token, dev, _bundle, _ = _register(ra, http)
    ack = keysets.build_ack(dev, tid, ra.keyset(1))
    ra.set_status(tid, "suspended")
    h = _auth(token)
    _error(http.get("/v1/keysets/latest", headers=h), 403, "forbidden")
    _error(http.get("/v1/keysets/1", headers=h), 403, "forbidden")
    _error(http.post("/v1/keysets/1/ack", headers=h, json=ack), 403, "forbidden")
    _error(http.get("/v1/terminals/" + tid, headers=h), 403, "forbidden")
    _error(http.get("/v1/terminals/%s/revocations" % tid, headers=h), 403, "forbidden")
    ra.set_status(tid, "registered")
    assert http.get("/v1/keysets/latest", headers=h).status_code == 200
    assert http.get("/v1/terminals/%s/revocations" % tid, headers=h).status_code == 200


def test_deregistered_terminal_is_gone(ra, http):
    tid, token, *_ = _register(ra, http)
    ra.set_status(tid, "deregistered")
    _error(http.get("/v1/keysets/latest", headers=_auth(token)), 410, "gone")
    _error(http.get("/v1/terminals/%s/revocations" % tid, headers=_auth(token)), 410, "gone")


def test_no_credential_is_issued_for_a_suspended_terminal(ra, http):
    tid, *_ = _register(ra, http)
    _aid, atoken = authorizers.add_authorizer(ra.db, "alice", {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [
        {"resource_pattern": "**", "modes": ["read"]}], "max_validity_s": 3600})
    body = {"fay_id": new_fay_id(), "terminal_id": tid, "valid_for_s": 600,
            "grants": [{"resource_pattern": tid + "/sim/camera", "modes": ["read"]}]}
    assert http.post("/v1/tickets", headers=_auth(atoken), json=body).status_code == 200
    ra.set_status(tid, "suspended")
    _error(http.post("/v1/tickets", headers=_auth(atoken), json=body), 403, "forbidden")
    ra.set_status(tid, "deregistered")
    _error(http.post("/v1/tickets", headers=_auth(atoken), json=body), 410, "gone")


def test_a_terminal_reads_only_its_own_status(ra, http):
    a_tid, a_token, *_ = _register(ra, http)
    b_tid, *_ = _register(ra, http)
    _error(http.get("/v1/terminals/" + b_tid, headers=_auth(a_token)), 403, "forbidden")
    _error(http.get("/v1/terminals/%s/revocations" % b_tid, headers=_auth(a_token)), 403, "forbidden")


def test_ack_replayed_for_another_terminal_refused_over_http(ra, http):
    a_tid, a_token, a_dev, *_ = _register(ra, http)
    b_tid, b_token, *_ = _register(ra, http)
    doc = http.get("/v1/keysets/1", headers=_auth(a_token)).json()
    ack_a = keysets.build_ack(a_dev, a_tid, doc)
    _error(http.post("/v1/keysets/1/ack", headers=_auth(b_token), json=ack_a), 403, "forbidden")
    _error(http.post("/v1/keysets/2/ack", headers=_auth(a_token), json=ack_a), 404, "not_found")
    _error(http.post("/v1/keysets/1/ack", headers=_auth(a_token), json={"payload": "x"}), 422, "bad_request")
    assert ra.keyset_status()[0]["acknowledged"] == 0
    assert http.post("/v1/keysets/1/ack", headers=_auth(a_token), json=ack_a).status_code == 200
    assert ra.terminal_info(b_tid)["key_set_acked"] == 0


def test_unknown_key_set_version_is_not_found(ra, http):
    _tid, token, *_ = _register(ra, http)
    _error(http.get("/v1/keysets/7", headers=_auth(token)), 404, "not_found")
    _error(http.get("/v1/keysets/seven", headers=_auth(token)), 422, "bad_request")


def test_openapi_documents_the_ra_routes(http):
    paths = http.get("/openapi.json").json()["paths"]
    for p, method in (("/v1/registrations", "post"), ("/v1/keysets/latest", "get"), ("/v1/keysets/{version}", "get"),
                      ("/v1/keysets/{version}/ack", "post"), ("/v1/terminals/{tid}", "get")):
        assert method in paths[p], p
