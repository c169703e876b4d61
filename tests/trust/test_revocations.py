"""The revocation service on both backends: revocation by the issuing authorizer, per-terminal
versioned lists (full, delta, unknown or ahead base), the statements a terminal imports, and
the TicketRevocationQuery of §4.3.2 step 5."""

import threading

import pytest
import sqlalchemy as sa

from capwarden.credentials import cbor, keys
from capwarden.credentials.b64 import b64u_decode
from capwarden.credentials.ids import new_terminal_id, uuid_text
from capwarden.credentials.model import parse_revocation_obj
from capwarden.credentials.revocation import MAX_STATEMENT, statement_signed_bytes
from capwarden.trust import models, signed
from capwarden.trust.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated

from issuerig import HOUR, NOW, SQLITE_ONLY, rig  # noqa: F401  (rig is a fixture)


def trusted(rig):
    k = rig.ring.issuer_key(NOW)
    return {k.key_id: keys.load(k.algorithm, k.private.public)}


def the_list(rig, since=None, tid=None):
    doc = rig.revocations.revocation_list(tid or rig.tid, since)
    return signed.verify(doc, signed.REVOCATION_LIST, trusted(rig))


def targets(payload):
    return [uuid_text(cbor.decode(e, MAX_STATEMENT)["target_descriptor_id"]) for e in payload["entries"]]


# ---- revoking ----------------------------------------------------------------------------------

def test_revocation_statement_is_signed_by_the_issuer_key_and_names_the_target(rig):
    d = rig.descriptor()
    out = rig.revocations.revoke(rig.token, {"target_id": d["descriptor_id"], "reason": "compromised"})
    r = out["revocation"]
    assert (r["target_id"], r["kind"], r["reason"], r["revoked_at"]) == (d["descriptor_id"], "descriptor",
                                                                        "compromised", NOW)
    assert out["versions"] == {rig.tid: 1}
    raw = b64u_decode(r["statement"])
    obj = cbor.decode(raw, MAX_STATEMENT)
    rec = parse_revocation_obj(obj)
    key = rig.ring.issuer_key(NOW)
    assert (rec["target"], rec["issuer_id"], rec["key_id"], rec["reason"]) == (d["descriptor_id"], "issuer:rig",
                                                                               key.key_id, "compromised")
    assert keys.load(key.algorithm, key.private.public).verify(statement_signed_bytes(obj), rec["signature"])
    assert rec["revocation_id"] == r["revocation_id"]


def test_revoked_ticket_and_descriptor_are_refused_by_a_terminal_after_import(rig):
    t = rig.ticket()
    d = rig.descriptor()
    assert rig.check_ticket(t["ticket"]).granted and rig.check_descriptor(b64u_decode(d["descriptor"])).granted
    rig.revocations.revoke(rig.token, {"target_id": t["jti"]})
    rig.revocations.revoke(rig.token, {"target_id": d["descriptor_id"]})
    for entry in the_list(rig)["entries"]:
        rig.terminal.revocations.import_statement(entry, NOW)
    assert rig.check_ticket(t["ticket"]).error_code == "E_TICKET_REVOKED"
    assert rig.check_descriptor(b64u_decode(d["descriptor"])).error_code == "E_DESCRIPTOR_REVOKED"


def test_only_the_issuing_authorizer_revokes(rig):
    t = rig.ticket()
    bob = rig.authorizer("bob")
    with pytest.raises(Forbidden, match="only the authorizer"):
        rig.revocations.revoke(bob, {"target_id": t["jti"]})
    with pytest.raises(Unauthenticated):
        rig.revocations.revoke("nope", {"target_id": t["jti"]})
    assert _count(rig) == 0


def test_revoking_twice_is_a_conflict_and_takes_no_version(rig):
    t = rig.ticket()
    rig.revocations.revoke(rig.token, {"target_id": t["jti"]})
    with pytest.raises(Conflict, match="already revoked"):
        rig.revocations.revoke(rig.token, {"target_id": t["jti"]})
    assert the_list(rig)["version"] == 1


@pytest.mark.parametrize("body, error", [
    ({"target_id": "01900000-0000-7000-8000-000000000000"}, NotFound),
    ({"target_id": "not-a-uuid"}, InvalidRequest),
    ({"target_id": None}, InvalidRequest),
    ({}, InvalidRequest),
    ({"target_id": "01900000-0000-7000-8000-000000000000", "extra": 1}, InvalidRequest),
])
@SQLITE_ONLY
def test_bad_revocation_requests(rig, body, error):
    with pytest.raises(error):
        rig.revocations.revoke(rig.token, body)


@SQLITE_ONLY
def test_bad_reason_is_refused(rig):
    t = rig.ticket()
    with pytest.raises(InvalidRequest, match="reason"):
        rig.revocations.revoke(rig.token, {"target_id": t["jti"], "reason": "because"})


def test_operator_revokes_any_credential_under_its_authorizer(rig):
    bob = rig.authorizer("bob")
    t = rig.ticket(token=bob)
    out = rig.revocations.revoke_as_operator(t["jti"], "no_longer_needed")
    assert out["versions"] == {rig.tid: 1}
    with rig.db.transaction(write=False) as s:
        rev = s.scalar(sa.select(models.Revocation))
        bob_id = s.scalar(sa.select(models.Authorizer.authorizer_id).where(models.Authorizer.name == "bob"))
        assert rev.authorizer_id == bob_id and rev.reason == "no_longer_needed"
    with pytest.raises(Conflict):
        rig.revocations.revoke_as_operator(t["jti"])


# ---- lists: versions, full and delta -----------------------------------------------------------

def test_each_terminal_has_its_own_version_sequence(rig):
    other = new_terminal_id()
    mine = [rig.ticket()["jti"] for _ in range(3)]
    theirs = [rig.ticket(terminal_id=other, grants=rig.grants(tid=other))["jti"] for _ in range(2)]
    got = [rig.revocations.revoke(rig.token, {"target_id": j})["versions"] for j in mine[:2] + theirs + mine[2:]]
    assert got == [{rig.tid: 1}, {rig.tid: 2}, {other: 1}, {other: 2}, {rig.tid: 3}]
    new = new_terminal_id()
    assert rig.revocations.versions([rig.tid, other, new]) == {rig.tid: 3, other: 2, new: 0}
    assert targets(the_list(rig)) == mine and targets(the_list(rig, tid=other)) == theirs


def test_a_terminal_without_revocations_gets_an_empty_full_list_at_version_0(rig):
    p = the_list(rig)
    assert (p["type"], p["terminal_id"], p["version"], p["base"], p["entries"], p["issued_at"]) == (
        signed.REVOCATION_LIST, rig.tid, 0, 0, [], NOW)
    assert the_list(rig, since=5)["base"] == 0


def test_full_list_when_since_is_absent_or_zero(rig):
    ids = [rig.ticket()["jti"] for _ in range(3)]
    for j in ids:
        rig.revocations.revoke(rig.token, {"target_id": j})
    for since in (None, 0):
        p = the_list(rig, since)
        assert (p["version"], p["base"]) == (3, 0) and targets(p) == ids


def test_delta_since_a_known_version_has_only_what_came_after(rig):
    ids = [rig.ticket()["jti"] for _ in range(4)]
    for j in ids:
        rig.revocations.revoke(rig.token, {"target_id": j})
    for since in (1, 2, 3):
        p = the_list(rig, since)
        assert (p["version"], p["base"]) == (4, since) and targets(p) == ids[since:]
    p = the_list(rig, 4)
    assert (p["version"], p["base"], p["entries"]) == (4, 4, [])


def test_a_base_ahead_of_the_service_gets_the_full_list(rig):
    # A terminal holding a version the service never handed out (a restored database, a
    # wrong base, another service's numbering) gets base 0: it replaces, never merges.
    j = rig.ticket()["jti"]
    rig.revocations.revoke(rig.token, {"target_id": j})
    p = the_list(rig, 7)
    assert (p["version"], p["base"]) == (1, 0) and targets(p) == [j]


def test_versions_have_no_gap_for_a_terminal_holding_an_old_version(rig):
    # A terminal at version 1 that missed versions 2 and 3 (a gap on its side) asks since=1 and
    # gets exactly 2 and 3; a terminal asking since=3 gets nothing it already had.
    ids = [rig.ticket()["jti"] for _ in range(3)]
    for j in ids:
        rig.revocations.revoke(rig.token, {"target_id": j})
    assert targets(the_list(rig, 1)) == ids[1:] and targets(the_list(rig, 3)) == []


def test_lists_only_hold_what_concerns_that_terminal(rig):
    other = new_terminal_id()
    j = rig.ticket(terminal_id=other, grants=rig.grants(tid=other))["jti"]
    rig.revocations.revoke(rig.token, {"target_id": j})
    assert the_list(rig)["entries"] == [] and the_list(rig)["version"] == 0


def test_expired_credentials_leave_the_full_list_but_the_version_stays(rig):
    short = rig.ticket(valid_for_s=60)["jti"]
    long = rig.ticket(valid_for_s=HOUR)["jti"]
    for j in (short, long):
        rig.revocations.revoke(rig.token, {"target_id": j})
    rig.clock.now += 61
    p = the_list(rig)
    assert p["version"] == 2 and targets(p) == [long]


@SQLITE_ONLY
def test_negative_or_huge_since_is_refused(rig):
    for since in (-1, 1 << 60, "1"):
        with pytest.raises(InvalidRequest):
            rig.revocations.revocation_list(rig.tid, since)


@SQLITE_ONLY
def test_list_is_signed_and_a_tampered_one_fails(rig):
    j = rig.ticket()["jti"]
    rig.revocations.revoke(rig.token, {"target_id": j})
    doc = rig.revocations.revocation_list(rig.tid, 0)
    p = cbor.decode(b64u_decode(doc["payload"]), 1 << 20)
    p["version"] = 99
    from capwarden.credentials.b64 import b64u_encode

    forged = {"payload": b64u_encode(cbor.encode(p)), "signatures": doc["signatures"]}
    with pytest.raises(signed.SignedDocError):
        signed.verify(forged, signed.REVOCATION_LIST, trusted(rig))
    with pytest.raises(signed.SignedDocError, match="expected a ticket-status"):
        signed.verify(doc, signed.TICKET_STATUS, trusted(rig))


def test_concurrent_revocations_on_one_terminal_get_distinct_versions_without_gaps(rig):
    ids = [rig.ticket()["jti"] for _ in range(12)]
    errors, answers = [], []

    def worker(chunk):
        try:
            for j in chunk:
                answers.append(rig.revocations.revoke(rig.token, {"target_id": j})["versions"][rig.tid])
        except Exception as exc:   # noqa: BLE001  (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(ids[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(answers) == list(range(1, 13))
    p = the_list(rig)
    assert p["version"] == 12 and sorted(targets(p)) == sorted(ids)


def test_concurrent_revocations_of_one_credential_give_one_revocation(rig):
    j = rig.ticket()["jti"]
    results = []
    barrier = threading.Barrier(4)

    def worker():
        barrier.wait()
        try:
            results.append(rig.revocations.revoke(rig.token, {"target_id": j})["versions"])
        except Conflict:
            results.append("conflict")
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(str, results)) == sorted(["conflict"] * 3 + [str({rig.tid: 1})])
    assert _count(rig) == 1 and the_list(rig)["version"] == 1


# ---- TicketRevocationQuery (§4.3.2 step 5) -----------------------------------------------------

def test_ticket_status_before_and_after_revocation(rig):
    t = rig.ticket()
    doc = rig.revocations.ticket_status(t["jti"])
    p = signed.verify(doc, signed.TICKET_STATUS, trusted(rig))
    assert p == {"type": signed.TICKET_STATUS, "jti": t["jti"], "revoked": 0, "checked_at": NOW}
    rig.clock.now += 5
    rig.revocations.revoke(rig.token, {"target_id": t["jti"]})
    rig.clock.now += 5
    p = signed.verify(rig.revocations.ticket_status(t["jti"]), signed.TICKET_STATUS, trusted(rig))
    assert (p["revoked"], p["revoked_at"], p["checked_at"]) == (1, NOW + 5, NOW + 10)


def test_ticket_status_of_unknown_or_malformed_jti(rig):
    with pytest.raises(NotFound):
        rig.revocations.ticket_status("01900000-0000-7000-8000-000000000000")
    d = rig.descriptor()
    with pytest.raises(NotFound):
        rig.revocations.ticket_status(d["descriptor_id"])   # a descriptor is not a ticket
    with pytest.raises(InvalidRequest):
        rig.revocations.ticket_status("x")


def _count(rig):
    with rig.db.transaction(write=False) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(models.Revocation))
