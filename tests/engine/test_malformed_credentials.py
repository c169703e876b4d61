"""Issue 9 defect 6 through the engine: a ticket whose protected header has a member of the
wrong type (an `alg` that is an array or an object) is a malformed ticket (S2 step 1), denied
with E_TICKET_MALFORMED and audited; it used to answer E_INTERNAL and audit nothing. And a
store file another process left unreadable never stops the engine's sweeps."""

import asyncio
import json
import logging
import os

from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.issue import sign_revocation, ticket_claims
from capwarden.engine.audit import read


def _ticket(world, header):
    claims = ticket_claims(world.C, world.tid, [world.grant("imu", "read")], "issuer:acme", world.now - 60,
                           world.now + 3600)
    h = b64u_encode(json.dumps(header, separators=(",", ":")).encode())
    p = b64u_encode(json.dumps(claims, separators=(",", ":")).encode())
    sig = world.key.private.sign((h + "." + p).encode("ascii"))
    return h + "." + p + "." + b64u_encode(sig)


def test_issue9_6_a_header_member_of_the_wrong_type_is_malformed_and_audited(world, client, run, served):
    a = client()
    base = {"fay_id": world.C, "resource_id": world.res("imu"), "access_mode": "read"}
    headers = [{"alg": ["EdDSA"], "typ": "cap-ticket+jws", "kid": "acme-1"},
               {"alg": {"EdDSA": 1}, "typ": "cap-ticket+jws", "kid": "acme-1"},
               {"alg": "EdDSA", "typ": ["cap-ticket+jws"], "kid": "acme-1"},
               {"alg": "EdDSA", "typ": "cap-ticket+jws", "kid": {"id": "acme-1"}},
               {"alg": None, "typ": "cap-ticket+jws", "kid": "acme-1"}]
    for header in headers:
        r = run(a.request("AuthRequest", dict(base, credential={"type": "ticket", "ticket": _ticket(world, header)})))
        assert r["result"] == "denied" and r["error_code"] == "E_TICKET_MALFORMED", (header, r)
    entries, problem = read(os.path.join(world.store, "audit.log"))[:2]
    assert problem is None
    denied = [e for e in entries if e["action"] == "acquire" and e["outcome"] == "denied"]
    assert [e["reason"] for e in denied][-len(headers):] == ["E_TICKET_MALFORMED"] * len(headers)
    assert not [e for e in entries if e.get("reason") == "E_INTERNAL"]


def test_issue9_6_a_corrupt_revocation_file_keeps_the_last_good_list(tmp_path, caplog):
    """Another process leaves revocations.json unreadable: the sweep neither raises nor forgets
    what was revoked; once the file reads again, what it adds is applied."""
    from capwarden.engine.authorizer import StoreAuthorizer
    from enginerig import World

    w = World(str(tmp_path))
    auth = StoreAuthorizer(w.store)
    first = w.descriptor(w.A, [w.grant("gps", "read")])
    second = w.descriptor(w.A, [w.grant("gps", "read")])
    w.t.import_revocation(sign_revocation(w.key, first, w.now), w.now)
    auth.refresh(w.now)
    assert auth.check(w.cred(first), w.A, w.res("gps"), "read", w.now).error_code == "E_DESCRIPTOR_REVOKED"
    path = auth.terminal.revocations.path
    good = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(b"[" * 100000)
    caplog.set_level(logging.ERROR, logger="capwarden.engine")
    for _ in range(3):
        assert auth.refresh(w.now) is False                  # no exception out of the sweep
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1   # said once
    assert auth.check(w.cred(first), w.A, w.res("gps"), "read", w.now).error_code == "E_DESCRIPTOR_REVOKED"
    with open(path, "wb") as f:
        f.write(good)
    w.t.import_revocation(sign_revocation(w.key, second, w.now), w.now)
    assert auth.refresh(w.now) is True
    assert auth.check(w.cred(second), w.A, w.res("gps"), "read", w.now).error_code == "E_DESCRIPTOR_REVOKED"
