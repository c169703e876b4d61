"""The trust service over HTTP (docs/trust-api.md) on both database backends: issuance,
renewal, revocation, lists and ticket status through the ASGI app, the error shape, the
OpenAPI document, and one real uvicorn process serving HTTPS with a self-signed certificate."""

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from capwarden.credentials import keys
from capwarden.credentials.b64 import b64u_decode
from capwarden.credentials.ids import new_terminal_id
from capwarden.errors import UsageError
from capwarden.trust import models, registry, signed
from capwarden.trust.config import ServiceConfig
from capwarden.trust.keysets import device_key_json, sign_proof
from capwarden.trust.service import create_app, run

import procs
import services
from issuerig import HOUR, NOW, SQLITE_ONLY, rig  # noqa: F401  (rig is a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Publisher:
    """Records what the service pushes, and whether the revocation was committed by then."""

    def __init__(self, db=None, fail=False):
        self.db, self.fail = db, fail
        self.revoked, self.committed, self.started, self.closed = [], [], 0, 0

    async def start(self):
        self.started += 1

    async def revocations(self, versions):
        self.revoked.append(dict(versions))
        if self.db is not None:
            import sqlalchemy as sa

            with self.db.transaction(write=False) as s:
                self.committed.append(s.scalar(sa.select(sa.func.count()).select_from(models.Revocation)))
        if self.fail:
            raise RuntimeError("broker on fire")

    async def keyset(self, version):
        pass

    async def aclose(self):
        self.closed += 1


class Http:
    def __init__(self, rig, publisher=None, keys_=None, **client_kw):
        self.rig = rig
        self.publisher = publisher or Publisher(rig.db)
        self.config = ServiceConfig(db_url=rig.db.url, keys=keys_ or rig.ring, publisher=self.publisher,
                                    clock=rig.clock)
        self.app = create_app(self.config)
        self.client = TestClient(self.app, **client_kw)
        self.auth = {"Authorization": "Bearer " + rig.token}

    def post(self, path, body, token=None):
        return self.client.post("/v1" + path, json=body, headers=self._h(token))

    def get(self, path, token=None, **params):
        return self.client.get("/v1" + path, params=params, headers=self._h(token))

    def _h(self, token):
        return {"Authorization": "Bearer " + (self.rig.token if token is None else token)}

    def register(self, tid=None):
        """Register terminal `tid` (the rig's by default) with the RA; returns its token."""
        tid = tid or self.rig.tid
        with self.rig.db.transaction() as s:
            registry.init_keysets(s, self.rig.ring, NOW)
            secret = registry.enroll(s, self.rig.ring, tid, now=NOW)["enrollment_secret"]
        device = keys.PrivateKey.generate("ed25519")
        r = self.client.post("/v1/registrations", json={"enrollment_secret": secret, "terminal_id": tid,
                                                         "device_key": device_key_json(device),
                                                         "proof": sign_proof(device, secret, tid)})
        assert r.status_code == 200, r.text
        return r.json()["token"]


@pytest.fixture
def http(rig):
    h = Http(rig)
    with h.client:
        yield h


def trusted(rig):
    k = rig.ring.issuer_key(NOW)
    return {k.key_id: keys.load(k.algorithm, k.private.public)}


def error_of(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == code and body["message"]
    assert "Traceback" not in r.text
    return body["message"]


# ---- the document and the error shape ----------------------------------------------------------

@SQLITE_ONLY
def test_openapi_document_lists_the_contract(http):
    r = http.client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p, method in (("/v1/tickets", "post"), ("/v1/tickets", "get"), ("/v1/descriptors", "post"),
                      ("/v1/descriptors/{descriptor_id}/renew", "post"), ("/v1/revocations", "post"),
                      ("/v1/terminals/{tid}/revocations", "get"), ("/v1/tickets/{jti}/status", "get"),
                      ("/v1/registrations", "post"), ("/v1/keysets/latest", "get")):
        assert method in paths.get(p, {}), (p, method)


@SQLITE_ONLY
def test_missing_or_unknown_token_is_401(http):
    body = http.rig.ticket_body()
    error_of(http.client.post("/v1/tickets", json=body), 401, "unauthenticated")
    error_of(http.client.post("/v1/tickets", json=body, headers={"Authorization": "Basic eDp5"}), 401,
             "unauthenticated")
    error_of(http.post("/tickets", body, token="not-a-token"), 401, "unauthenticated")


def test_beyond_policy_is_403_naming_the_rule(http):
    token = http.rig.authorizer("short", max_validity_s=60)
    msg = error_of(http.post("/tickets", http.rig.ticket_body(valid_for_s=61), token=token), 403, "forbidden")
    assert "max_validity_s" in msg


@SQLITE_ONLY
def test_malformed_bodies_are_bad_request(http):
    body = http.rig.ticket_body()
    del body["grants"]
    error_of(http.post("/tickets", body), 422, "bad_request")
    error_of(http.post("/tickets", http.rig.ticket_body(valid_for_s="60")), 422, "bad_request")
    error_of(http.post("/tickets", http.rig.ticket_body(extra=1)), 422, "bad_request")
    error_of(http.post("/tickets", http.rig.ticket_body(valid_for_s=8 * 86400)), 400, "bad_request")
    r = http.client.post("/v1/tickets", content=b"{not json", headers={**http.auth, "content-type": "application/json"})
    error_of(r, 422, "bad_request")


@SQLITE_ONLY
def test_unknown_route_and_method_answer_json(http):
    error_of(http.client.get("/v1/nothing-here"), 404, "not_found")
    error_of(http.client.delete("/v1/tickets", headers=http.auth), 405, "bad_request")


@SQLITE_ONLY
def test_an_unexpected_error_is_500_without_a_traceback(rig):
    class BrokenKeys:
        def issuer_key(self, now):
            raise RuntimeError("the secret detail /var/lib/keys")
    h = Http(rig, keys_=BrokenKeys(), raise_server_exceptions=False)
    with h.client:
        r = h.post("/tickets", rig.ticket_body())
    msg = error_of(r, 500, "internal")
    assert "secret detail" not in r.text and "RuntimeError" not in msg
    assert _count(rig, models.IssuedTicket) == 0


# ---- issuance ----------------------------------------------------------------------------------

def test_ticket_over_http_is_recorded_and_accepted_by_the_terminal(http):
    r = http.post("/tickets", http.rig.ticket_body())
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"ticket", "jti", "exp"} and out["exp"] == NOW + HOUR
    assert http.rig.check_ticket(out["ticket"]).granted
    listed = http.get("/tickets").json()["tickets"]
    assert [t["jti"] for t in listed] == [out["jti"]]
    assert http.get("/tickets", fay_id="fay:none").json() == {"tickets": []}


def test_descriptor_and_renewal_over_http_push_the_superseded_revocation(http):
    r = http.post("/descriptors", http.rig.descriptor_body())
    assert r.status_code == 200, r.text
    old = r.json()
    assert http.rig.check_descriptor(b64u_decode(old["descriptor"])).granted
    r = http.post("/descriptors/%s/renew" % old["descriptor_id"], {"not_after": NOW + 2 * 86400})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["superseded"] == old["descriptor_id"] and new["versions"] == {http.rig.tid: 1}
    assert http.publisher.revoked == [{http.rig.tid: 1}] and http.publisher.committed == [1]
    error_of(http.post("/descriptors/%s/renew" % old["descriptor_id"], {"not_after": NOW + 3 * 86400}), 409,
             "conflict")
    error_of(http.post("/descriptors/%s/renew" % "01900000-0000-7000-8000-000000000000",
                       {"not_after": NOW + 3 * 86400}), 404, "not_found")


def test_a_suspended_terminal_gets_no_credential_and_a_deregistered_one_is_gone(http):
    http.register()
    assert http.post("/tickets", http.rig.ticket_body()).status_code == 200
    with http.rig.db.transaction() as s:
        registry.set_status(s, http.rig.tid, "suspended", NOW)
    assert "suspended" in error_of(http.post("/tickets", http.rig.ticket_body()), 403, "forbidden")
    error_of(http.post("/descriptors", http.rig.descriptor_body()), 403, "forbidden")
    with http.rig.db.transaction() as s:
        registry.set_status(s, http.rig.tid, "deregistered", NOW)
    error_of(http.post("/tickets", http.rig.ticket_body()), 410, "gone")


# ---- revocation, lists, status -----------------------------------------------------------------

def test_revocation_is_committed_before_the_push_and_the_answer(http):
    jti = http.post("/tickets", http.rig.ticket_body()).json()["jti"]
    r = http.post("/revocations", {"target_id": jti, "reason": "compromised"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["versions"] == {http.rig.tid: 1} and out["revocation"]["target_id"] == jti
    assert http.publisher.revoked == [{http.rig.tid: 1}] and http.publisher.committed == [1]
    error_of(http.post("/revocations", {"target_id": jti}), 409, "conflict")
    bob = http.rig.authorizer("bob")
    other = http.post("/tickets", http.rig.ticket_body()).json()["jti"]
    error_of(http.post("/revocations", {"target_id": other}, token=bob), 403, "forbidden")


def test_a_failing_publisher_does_not_fail_the_revocation(rig):
    h = Http(rig, publisher=Publisher(fail=True))
    with h.client:
        jti = h.post("/tickets", rig.ticket_body()).json()["jti"]
        r = h.post("/revocations", {"target_id": jti})
    assert r.status_code == 200 and r.json()["versions"] == {rig.tid: 1}
    assert _count(rig, models.Revocation) == 1


def test_terminal_fetches_its_signed_list_full_then_delta(http):
    token = http.register()
    jtis = [http.post("/tickets", http.rig.ticket_body()).json()["jti"] for _ in range(3)]
    for j in jtis[:2]:
        http.post("/revocations", {"target_id": j})
    r = http.get("/terminals/%s/revocations" % http.rig.tid, token=token)
    assert r.status_code == 200, r.text
    full = signed.verify(r.json(), signed.REVOCATION_LIST, trusted(http.rig))
    assert (full["version"], full["base"], len(full["entries"])) == (2, 0, 2)
    http.post("/revocations", {"target_id": jtis[2]})
    delta = signed.verify(http.get("/terminals/%s/revocations" % http.rig.tid, token=token, since=2).json(),
                          signed.REVOCATION_LIST, trusted(http.rig))
    assert (delta["version"], delta["base"], len(delta["entries"])) == (3, 2, 1)
    ahead = signed.verify(http.get("/terminals/%s/revocations" % http.rig.tid, token=token, since=9).json(),
                          signed.REVOCATION_LIST, trusted(http.rig))
    assert (ahead["version"], ahead["base"], len(ahead["entries"])) == (3, 0, 3)
    for entry in ahead["entries"]:
        http.rig.terminal.revocations.import_statement(entry, NOW)
    assert http.rig.terminal.revocations.revoked("issuer:rig", jtis[0])
    error_of(http.get("/terminals/%s/revocations" % http.rig.tid, token=token, since=-1), 422, "bad_request")


def test_lists_need_that_terminals_token(http):
    token = http.register()
    other = new_terminal_id()
    other_token = http.register(other)
    error_of(http.get("/terminals/%s/revocations" % http.rig.tid, token="nope"), 401, "unauthenticated")
    error_of(http.client.get("/v1/terminals/%s/revocations" % http.rig.tid), 401, "unauthenticated")
    error_of(http.get("/terminals/%s/revocations" % http.rig.tid, token=other_token), 403, "forbidden")
    error_of(http.get("/terminals/%s/revocations" % http.rig.tid, token=http.rig.token), 401, "unauthenticated")
    with http.rig.db.transaction() as s:
        registry.set_status(s, http.rig.tid, "suspended", NOW)
    error_of(http.get("/terminals/%s/revocations" % http.rig.tid, token=token), 403, "forbidden")


def test_ticket_status_query_over_http(http):
    token = http.register()
    jti = http.post("/tickets", http.rig.ticket_body()).json()["jti"]
    p = signed.verify(http.get("/tickets/%s/status" % jti, token=token).json(), signed.TICKET_STATUS,
                      trusted(http.rig))
    assert (p["jti"], p["revoked"]) == (jti, 0)
    http.post("/revocations", {"target_id": jti})
    p = signed.verify(http.get("/tickets/%s/status" % jti, token=token).json(), signed.TICKET_STATUS,
                      trusted(http.rig))
    assert (p["revoked"], p["revoked_at"]) == (1, NOW)
    error_of(http.get("/tickets/%s/status" % "01900000-0000-7000-8000-000000000000", token=token), 404, "not_found")
    error_of(http.get("/tickets/%s/status" % jti, token=http.rig.token), 401, "unauthenticated")
    # Another terminal learns nothing of a ticket issued for this one, not even that it exists.
    other = http.register(new_terminal_id())
    error_of(http.get("/tickets/%s/status" % jti, token=other), 404, "not_found")


# ---- serving -----------------------------------------------------------------------------------

@SQLITE_ONLY
def test_run_refuses_plain_http_off_loopback(rig):
    config = ServiceConfig(db_url=rig.db.url, keys=rig.ring)
    with pytest.raises(UsageError, match="loopback"):
        run(config, host="0.0.0.0", port=1)
    with pytest.raises(UsageError, match="go together"):
        run(config, host="0.0.0.0", port=1, tls_cert="x.pem")


def _self_signed(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capwarden-trust-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


SERVE = """
import sys
from capwarden.trust.config import ServiceConfig
from capwarden.trust.servicekeys import KeyRing
from capwarden.trust.service import run
db_url, ring, port, cert, key = sys.argv[1:]
run(ServiceConfig(db_url=db_url, keys=KeyRing.open(ring)), "127.0.0.1", int(port), cert, key, log_level="warning")
"""


def test_real_uvicorn_serves_https_and_issues(rig, tmp_path):
    cert, key = _self_signed(str(tmp_path))
    port = services.free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, rig.db.url, rig.ring.folder, str(port), cert, key],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = "https://127.0.0.1:%d" % port
        with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=cert), timeout=10) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    r = c.get("/openapi.json")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read().decode()
                    assert time.monotonic() < deadline, "the service did not start"
                    time.sleep(0.2)
            assert r.status_code == 200 and "/v1/tickets" in r.json()["paths"]
            body = rig.ticket_body()
            r = c.post("/v1/tickets", json=body, headers={"Authorization": "Bearer " + rig.token})
            assert r.status_code == 200, r.text
            out = r.json()
            assert rig.check_ticket(out["ticket"], now=out["exp"] - HOUR).granted
        with pytest.raises(httpx.TransportError):
            httpx.get("http://127.0.0.1:%d/openapi.json" % port, timeout=5)   # no plain HTTP on it
    finally:
        procs.stop(proc)
    assert _count(rig, models.IssuedTicket) == 1


def _count(rig, model):
    import sqlalchemy as sa

    with rig.db.transaction(write=False) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def test_the_terminal_client_against_the_service_end_to_end(rig, tmp_path):
    """TrustClient (trust.client) registers, walks the key set, takes a full list then a delta,
    and asks a ticket's status, every document checked against the keys it holds."""
    import asyncio

    from capwarden.trust.client import TrustClient

    with rig.db.transaction() as s:
        registry.init_keysets(s, rig.ring, NOW)
        enrolled = registry.enroll(s, rig.ring, rig.tid, now=NOW)
    app = create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, publisher=Publisher(), clock=rig.clock))
    got = []

    async def scenario():
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        auth = {"Authorization": "Bearer " + rig.token}
        client = TrustClient("http://127.0.0.1", str(tmp_path / "client"), anchor=enrolled["ra_keys"], http=http,
                             on_revocations=lambda st, full: got.append((full, list(st))), now=rig.clock)
        assert await client.register(enrolled["enrollment_secret"], rig.tid) == rig.tid
        await client.sync_keysets()
        t = (await http.post("/v1/tickets", json=rig.ticket_body(), headers=auth)).json()
        d = (await http.post("/v1/descriptors", json=rig.descriptor_body(), headers=auth)).json()
        assert (await http.post("/v1/revocations", json={"target_id": t["jti"]}, headers=auth)).status_code == 200
        assert await client.sync_revocations() == 1
        assert (await http.post("/v1/revocations", json={"target_id": d["descriptor_id"]},
                                headers=auth)).status_code == 200
        assert await client.sync_revocations() == 2
        status = await client.ticket_status(t["jti"])
        await http.aclose()
        return t, d, status

    t, d, status = asyncio.run(scenario())
    assert [(full, len(st)) for full, st in got] == [(True, 1), (False, 1)]
    for _full, statements in got:
        for entry in statements:
            rig.terminal.revocations.import_statement(entry, NOW)
    assert rig.check_ticket(t["ticket"]).error_code == "E_TICKET_REVOKED"
    assert rig.check_descriptor(b64u_decode(d["descriptor"])).error_code == "E_DESCRIPTOR_REVOKED"
    assert status.revoked and status.revoked_at == NOW


@SQLITE_ONLY
def test_an_oversized_body_is_refused_413(http):
    from capwarden.trust.service import MAX_BODY

    big = b'{"x": "' + b"a" * MAX_BODY + b'"}'
    error_of(http.client.post("/v1/tickets", content=big, headers={**http.auth, "content-type": "application/json"}),
             413, "bad_request")

    def chunks():   # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"a" * 65536
    r = http.client.post("/v1/tickets", content=chunks(), headers={**http.auth, "content-type": "application/json"})
    error_of(r, 413, "bad_request")
    assert _count(http.rig, models.IssuedTicket) == 0


@SQLITE_ONLY
def test_issuance_revocation_and_refusals_are_logged_without_tokens(http, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="capwarden.trust.service")
    jti = http.post("/tickets", http.rig.ticket_body()).json()["jti"]
    http.post("/revocations", {"target_id": jti})
    http.post("/tickets", http.rig.ticket_body(), token="wrong-" + http.rig.token)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "event=issued kind=ticket id=%s" % jti in text
    assert "event=revoked id=%s terminal=%s version=1" % (jti, http.rig.tid) in text
    assert "event=refused code=unauthenticated" in text
    assert http.rig.token not in text
