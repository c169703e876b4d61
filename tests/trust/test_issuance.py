"""Ticket_Issuer and Descriptor_Issuer (spec ch4 §4.2, blueprint §2.1 phase 5) on both database
backends: every MUST of §4.2 as a named test, the authorizer's policy, renewal, the record."""

import json

import pytest
import sqlalchemy as sa

from capwarden.credentials import cbor, jws
from capwarden.credentials.b64 import b64u_decode
from capwarden.credentials.ids import new_fay_id, new_terminal_id
from capwarden.credentials.model import MAX_DESCRIPTOR
from capwarden.trust import db as trustdb
from capwarden.trust import authorizers, issuance, models, revocations
from capwarden.trust.errors import Conflict, Forbidden, Gone, InvalidRequest, NotFound, Unauthenticated

from issuerig import HOUR, NOW, SQLITE_ONLY, policy, rig  # noqa: F401  (rig is a fixture)

WEEK = 7 * 86400
MY_TABLES = {t.name for t in models.Base.metadata.sorted_tables
             if t.name in ("authorizers", "issued_tickets", "issued_descriptors", "revocations",
                           "revocation_list_versions")}


# ---- the database ------------------------------------------------------------------------------

def test_migration_creates_exactly_the_models_tables(rig):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert len(MY_TABLES) == 5
    meta = sa.MetaData()
    for t in models.Base.metadata.sorted_tables:
        if t.name in MY_TABLES:
            t.to_metadata(meta)
    with rig.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), meta)
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name not in MY_TABLES)]
    diff = [d for d in diff if not (d[0] == "remove_index" and d[1].table.name not in MY_TABLES)]
    assert diff == []


def test_migration_0004_keeps_the_tickets_and_leaves_one_index(rig):
    """Upgraded from 0003 with tickets recorded: they stay, listed newest first, and
    issued_tickets has the one (authorizer_id, iat) index; downgrading puts the three back."""
    from alembic import command
    from alembic.config import Config

    from capwarden.trust.db import MIGRATIONS

    jtis = [rig.ticket(valid_for_s=HOUR + i)["jti"] for i in range(3)]
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)

    def indexes():
        return sorted(tuple(i["column_names"]) for i in sa.inspect(rig.db.engine).get_indexes("issued_tickets"))
    with rig.db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert indexes() == [("authorizer_id",), ("fay_id",), ("terminal_id",)]
    rig.db.migrate()
    assert indexes() == [("authorizer_id", "iat")]
    assert {t["jti"] for t in rig.issuer.list_tickets(rig.token)} == set(jtis)


def test_migrate_twice_stays_at_head(rig):
    rev = rig.db.revision()
    rig.db.migrate()
    assert rig.db.revision() == rev is not None


def test_sqlite_runs_in_wal_with_foreign_keys(rig, db_backend):
    if db_backend != "sqlite":
        assert rig.db.dialect == "postgresql"
        return
    with rig.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == trustdb.BUSY_TIMEOUT_MS


def test_foreign_keys_are_enforced(rig):
    with pytest.raises(sa.exc.IntegrityError):
        with rig.db.transaction() as s:
            s.add(models.IssuedTicket(jti="01900000-0000-7000-8000-000000000000", issuer_id="x",
                                      authorizer_id="no-such-authorizer", fay_id=rig.fay, terminal_id=rig.tid,
                                      iat=1, nbf=1, exp=2, grants="[]", ticket="x"))


def test_a_ticket_id_cannot_be_recorded_twice(rig):
    out = rig.ticket()
    with pytest.raises(sa.exc.IntegrityError):
        with rig.db.transaction() as s:
            s.add(models.IssuedTicket(jti=out["jti"], issuer_id="issuer:rig", authorizer_id=rig.aid,
                                      fay_id=rig.fay, terminal_id=rig.tid, iat=1, nbf=1, exp=2, grants="[]",
                                      ticket="x"))


def test_bad_database_urls_are_refused():
    with pytest.raises(trustdb.DatabaseError, match="psycopg"):
        trustdb.open_db("postgresql+psycopg2://u@h/db")
    with pytest.raises(trustdb.DatabaseError, match="not supported"):
        trustdb.open_db("mysql://u@h/db")
    with pytest.raises(trustdb.DatabaseError, match="not a database URL"):
        trustdb.open_db("::nonsense::")


def test_run_retries_a_busy_transaction_then_succeeds(rig):
    calls = []

    def fn(s):
        calls.append(1)
        if len(calls) < 3:
            raise sa.exc.OperationalError("x", {}, Exception("database is locked" if rig.db.dialect == "sqlite"
                                                             else "serialization"))
        return "done"
    if rig.db.dialect == "postgresql":
        class Ser(Exception):
            sqlstate = "40001"

        def fn(s):   # noqa: F811
            calls.append(1)
            if len(calls) < 3:
                raise sa.exc.OperationalError("x", {}, Ser())
            return "done"
    assert rig.db.run(fn) == "done" and len(calls) == 3


def test_run_does_not_retry_other_errors(rig):
    calls = []

    def fn(s):
        calls.append(1)
        raise sa.exc.OperationalError("x", {}, Exception("no such table"))
    with pytest.raises(sa.exc.OperationalError):
        rig.db.run(fn)
    assert len(calls) == 1


# ---- authorizers -------------------------------------------------------------------------------

def test_authorizer_token_is_stored_only_as_its_hash(rig):
    with rig.db.transaction(write=False) as s:
        a = s.get(models.Authorizer, rig.aid)
        assert a.token_sha256 == authorizers.hash_token(rig.token) and rig.token.encode() not in a.token_sha256
    listed = issuance.list_authorizers(rig.db)
    assert [a["name"] for a in listed] == ["alice"] and "token" not in json.dumps(listed)


def test_authorizer_names_are_unique(rig):
    with pytest.raises(Conflict):
        issuance.add_authorizer(rig.db, "alice", policy())


@pytest.mark.parametrize("bad", [
    {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [], "max_validity_s": 60},
    {"fay_ids": ["nobody"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "**", "modes": ["read"]}],
     "max_validity_s": 60},
    {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "a/**/b", "modes": ["read"]}],
     "max_validity_s": 60},
    {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "a", "modes": ["fly"]}],
     "max_validity_s": 60},
    {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "a", "modes": ["read"]}],
     "max_validity_s": 0},
    {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "a", "modes": ["read"]}]},
])
@SQLITE_ONLY
def test_malformed_policies_are_refused(rig, bad):
    with pytest.raises(InvalidRequest):
        issuance.add_authorizer(rig.db, "bob", bad)


def test_policy_pattern_cover():
    from capwarden.trust.policy import covers

    yes = [("**", "a"), ("**", "a/b/c"), ("**", "*"), ("**", "a/**"), ("a/*", "a/b"), ("a/*", "a/*"),
           ("a/**", "a/b/**"), ("a/b", "a/b"), ("*/x", "q/x")]
    no = [("a/*", "a/b/c"), ("a/*", "a/**"), ("a/b", "a/*"), ("a/**", "a"), ("a/**", "**"), ("a/b", "a/c"),
          ("*", "**"), ("a/*/c", "a/**")]
    for p, a in yes:
        assert covers(tuple(p.split("/")), tuple(a.split("/"))), (p, a)
    for p, a in no:
        assert not covers(tuple(p.split("/")), tuple(a.split("/"))), (p, a)


# ---- §4.2.1: before anything is signed ----------------------------------------------------------

def test_4_2_1_item1_unauthenticated_authorizer_is_refused(rig):
    for token in ("", "not-a-token", rig.token + "x"):
        with pytest.raises(Unauthenticated):
            rig.ticket(token=token)
    assert _count(rig, models.IssuedTicket) == 0


def test_4_2_1_item1_suspended_authorizer_is_refused_until_reactivated(rig):
    issuance.suspend_authorizer(rig.db, "alice")
    with pytest.raises(Forbidden, match="suspended"):
        rig.ticket()
    with pytest.raises(Forbidden, match="suspended"):
        rig.descriptor()
    issuance.set_authorizer_status(rig.db, rig.aid, "active")
    assert rig.ticket()["jti"]
    with pytest.raises(NotFound):
        issuance.suspend_authorizer(rig.db, "nobody")


def test_4_2_1_item2_other_fay_is_refused(rig):
    token = rig.authorizer("fay-bound", fays=(rig.fay,))
    assert rig.ticket(token=token)["jti"]
    with pytest.raises(Forbidden, match="policy rule fay_ids"):
        rig.ticket(token=token, fay_id=new_fay_id())
    with pytest.raises(Forbidden, match="policy rule fay_ids"):
        rig.descriptor(token=token, fay_id=new_fay_id())


def test_4_2_1_item2_other_terminal_is_refused(rig):
    token = rig.authorizer("terminal-bound", terminals=(rig.tid,))
    other = new_terminal_id()
    with pytest.raises(Forbidden, match="policy rule terminal_ids"):
        rig.ticket(token=token, terminal_id=other, grants=rig.grants(tid=other))
    with pytest.raises(Forbidden, match="policy rule terminal_ids"):
        rig.descriptor(token=token, terminal_id=other, grants=rig.grants(tid=other))


def test_4_2_1_item2_other_resource_or_mode_is_refused(rig):
    token = rig.authorizer("camera-reader", grants=(("sim/camera", ("read",)), ("arm/*", ("read", "execute"))))
    assert rig.ticket(token=token, grants=rig.grants("sim/camera"))["jti"]
    assert rig.ticket(token=token, grants=rig.grants("arm/left", ("read", "execute")))["jti"]
    for path, modes in (("sim/motor", ("read",)), ("sim/camera", ("write",)), ("sim/*", ("read",)),
                        ("arm/**", ("read",)), ("arm/left/x", ("read",)), ("arm/left", ("configure",))):
        with pytest.raises(Forbidden, match="policy rule grants"):
            rig.ticket(token=token, grants=rig.grants(path, modes))
        with pytest.raises(Forbidden, match="policy rule grants"):
            rig.descriptor(token=token, grants=rig.grants(path, modes))
    # One grant beyond the policy spoils the request: nothing partial is signed.
    with pytest.raises(Forbidden):
        rig.ticket(token=token, grants=rig.grants("sim/camera") + rig.grants("sim/motor"))
    assert _count(rig, models.IssuedTicket) == 2


def test_4_2_1_item3_longer_validity_than_policy_is_refused(rig):
    token = rig.authorizer("short", max_validity_s=HOUR)
    assert rig.ticket(token=token, valid_for_s=HOUR)["jti"]
    with pytest.raises(Forbidden, match="policy rule max_validity_s"):
        rig.ticket(token=token, valid_for_s=HOUR + 1)
    with pytest.raises(Forbidden, match="policy rule max_validity_s"):
        rig.descriptor(token=token, not_after=NOW + HOUR + 1)
    with pytest.raises(Forbidden, match="policy rule max_validity_s"):
        rig.descriptor(token=token, not_before=NOW + 60, not_after=NOW + 60 + HOUR + 1)


@pytest.mark.parametrize("state, error", [("suspended", Forbidden), ("deregistered", Gone)])
def test_suspended_or_deregistered_terminal_gets_no_credential(rig, state, error):
    seen = []
    rig.issuer.terminal_states = lambda s, ids: {tid: seen.append(tid) or (state if tid == rig.tid else None) for tid in ids}
    with pytest.raises(error, match=state):
        rig.ticket()
    with pytest.raises(error, match=state):
        rig.descriptor()
    other = new_terminal_id()
    assert rig.ticket(terminal_id=other, grants=rig.grants(tid=other))["jti"]
    assert seen and _count(rig, models.IssuedTicket) == 1 and _count(rig, models.IssuedDescriptor) == 0


def test_a_never_registered_terminal_is_issued_for_unless_registration_is_required(rig):
    from capwarden.trust import registry

    rig.issuer.terminal_states = registry.terminal_states     # as the service wires it
    assert rig.ticket()["jti"] and rig.descriptor()["descriptor_id"]      # default: allowed
    rig.issuer.require_registration = True
    with pytest.raises(Forbidden, match="not registered"):
        rig.ticket()
    with pytest.raises(Forbidden, match="not registered"):
        rig.descriptor()
    results = rig.issuer.issue_tickets(rig.token, [rig.ticket_body()])
    assert results[0]["status"] == 403 and "not registered" in results[0]["message"]
    assert _count(rig, models.IssuedTicket) == 1 and _count(rig, models.IssuedDescriptor) == 1


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_require_registration_is_a_service_option(rig):
    from fastapi.testclient import TestClient

    from capwarden.trust.config import ServiceConfig
    from capwarden.trust.service import create_app

    auth = {"Authorization": "Bearer " + rig.token}
    for required, status in ((False, 200), (True, 403)):
        app = create_app(ServiceConfig(db_url=rig.db.url, keys=rig.ring, clock=rig.clock,
                                       require_registration=required))
        with TestClient(app) as client:
            r = client.post("/v1/tickets", json=rig.ticket_body(), headers=auth)
            assert r.status_code == status, r.text


@pytest.mark.parametrize("change, match", [
    ({"fay_id": "fay:nope"}, "fay_id"),
    ({"terminal_id": "terminal:nope"}, "terminal_id"),
    ({"grants": []}, "grants"),
    ({"grants": [{"resource_pattern": "terminal:x/a", "modes": ["read"]}]}, "malformed"),
    ({"grants": [{"resource_pattern": "sim/camera", "modes": ["read"]}]}, "malformed"),
    ({"grants": [{"resource_pattern": "SELF/sim", "modes": ["fly"]}]}, "modes"),
    ({"valid_for_s": 0}, "valid_for_s"),
    ({"valid_for_s": "60"}, "valid_for_s"),
    ({"convertible": 1}, "convertible"),
    ({"extra": 1}, "unknown field"),
])
@SQLITE_ONLY
def test_malformed_ticket_requests_are_refused(rig, change, match):
    if "grants" in change:
        change = {"grants": json.loads(json.dumps(change["grants"]).replace("SELF", rig.tid))}
    with pytest.raises(InvalidRequest, match=match):
        rig.ticket(**change)


@SQLITE_ONLY
def test_a_grant_naming_another_terminal_is_refused(rig):
    with pytest.raises(InvalidRequest, match="another terminal"):
        rig.ticket(grants=rig.grants(tid=new_terminal_id()))


# ---- §4.2.2: the ticket ------------------------------------------------------------------------

@SQLITE_ONLY
def test_4_2_2_step1_header_sets_alg_typ_kid(rig):
    out = rig.ticket()
    header = json.loads(b64u_decode(out["ticket"].split(".")[0]))
    key = rig.ring.issuer_key(NOW)
    assert header == {"alg": "EdDSA", "typ": "cap-ticket+jws", "kid": key.key_id}


@SQLITE_ONLY
def test_4_2_2_step2_payload_has_every_required_field(rig):
    out = rig.ticket(convertible=False)
    claims = json.loads(b64u_decode(out["ticket"].split(".")[1]))
    assert set(claims) >= {"jti", "iss", "sub", "aud", "iat", "nbf", "exp", "grants"}
    assert claims["sub"] == rig.fay and claims["aud"] == rig.tid and claims["iss"] == "issuer:rig"
    assert claims["nbf"] == claims["iat"] == NOW and claims["exp"] == NOW + HOUR == out["exp"]
    assert claims["jti"] == out["jti"] and claims["convertible"] is False
    assert claims["grants"] == rig.grants()


@SQLITE_ONLY
def test_4_2_2_step3_ticket_validity_over_7_days_is_refused(rig):
    token = rig.authorizer("generous", max_validity_s=30 * 86400)   # the policy would allow it
    assert rig.ticket(token=token, valid_for_s=WEEK)["exp"] == NOW + WEEK
    with pytest.raises(InvalidRequest, match="7 days"):
        rig.ticket(token=token, valid_for_s=WEEK + 1)


@SQLITE_ONLY
def test_4_2_2_steps4_to_7_compact_jws_verifies_on_a_terminal(rig):
    out = rig.ticket()
    parts = out["ticket"].split(".")
    assert len(parts) == 3 and all(p and "=" not in p for p in parts)
    t = jws.parse(out["ticket"])
    assert t.signed_bytes == (parts[0] + "." + parts[1]).encode()
    assert rig.check_ticket(out["ticket"]).granted
    assert not rig.check_ticket(out["ticket"], mode="write").granted
    tampered = parts[0] + "." + parts[1] + "." + ("A" if parts[2][0] != "A" else "B") + parts[2][1:]
    assert rig.check_ticket(tampered).error_code == "E_INVALID_SIGNATURE"


def test_4_2_2_step8_every_ticket_is_recorded_before_it_is_returned(rig):
    seen = []
    real_sign = issuance.issue.sign_ticket

    def spy(key, claims):
        seen.append(claims["jti"])
        return real_sign(key, claims)
    issuance.issue.sign_ticket = spy
    try:
        out = rig.ticket()
    finally:
        issuance.issue.sign_ticket = real_sign
    # What was returned is committed: a new connection sees it.
    with rig.db.transaction(write=False) as s:
        row = s.get(models.IssuedTicket, out["jti"])
        assert row is not None and row.ticket == out["ticket"] and row.authorizer_id == rig.aid
        assert (row.fay_id, row.terminal_id, row.exp) == (rig.fay, rig.tid, NOW + HOUR)
    assert seen == [out["jti"]]
    listed = rig.issuer.list_tickets(rig.token)
    assert [t["jti"] for t in listed] == [out["jti"]] and "revoked_at" not in listed[0]


def test_4_2_2_step8_a_failed_record_hands_out_nothing(rig, monkeypatch):
    def broken_flush(*a, **kw):
        raise sa.exc.OperationalError("flush", {}, Exception("disk full"))
    from sqlalchemy.orm import Session

    monkeypatch.setattr(Session, "flush", broken_flush)
    with pytest.raises(sa.exc.OperationalError):
        rig.ticket()
    monkeypatch.undo()
    assert _count(rig, models.IssuedTicket) == 0


def test_ticket_record_lists_only_the_callers_tickets_and_filters(rig):
    other = rig.authorizer("bob")
    mine = rig.ticket()["jti"]
    theirs = rig.ticket(token=other)["jti"]
    fay2 = new_fay_id()
    rig.clock.now += 10
    mine2 = rig.ticket(fay_id=fay2)["jti"]
    assert [t["jti"] for t in rig.issuer.list_tickets(rig.token)] == [mine2, mine]
    assert [t["jti"] for t in rig.issuer.list_tickets(rig.token, fay_id=fay2)] == [mine2]
    assert [t["jti"] for t in rig.issuer.list_tickets(other)] == [theirs]
    assert rig.issuer.list_tickets(rig.token, terminal_id=new_terminal_id()) == []
    rig.revocations.revoke(rig.token, {"target_id": mine})
    got = {t["jti"]: t for t in rig.issuer.list_tickets(rig.token)}
    assert got[mine]["revoked_at"] == rig.clock.now and "revoked_at" not in got[mine2]


def test_ids_are_unique_uuid7(rig):
    ids = {rig.ticket()["jti"] for _ in range(20)} | {rig.descriptor()["descriptor_id"] for _ in range(20)}
    assert len(ids) == 40 and all(i[14] == "7" for i in ids)


# ---- descriptors -------------------------------------------------------------------------------

def test_descriptor_is_signed_recorded_and_accepted_by_a_terminal(rig):
    out = rig.descriptor(grants=rig.grants("sim/*", ("read", "execute")))
    raw = b64u_decode(out["descriptor"])
    doc = cbor.decode(raw, MAX_DESCRIPTOR)
    p = doc["payload"]
    assert (p["subject_fay_id"], p["terminal_id"], p["issuer_id"]) == (rig.fay, rig.tid, "issuer:rig")
    assert (p["issued_at"], p["not_before"], p["not_after"]) == (NOW, NOW, NOW + 86400)
    assert doc["signature"]["key_id"] == rig.ring.issuer_key(NOW).key_id
    assert rig.check_descriptor(raw, "sim/motor", "execute").granted
    assert not rig.check_descriptor(raw, "sim/motor", "write").granted
    with rig.db.transaction(write=False) as s:
        row = s.get(models.IssuedDescriptor, out["descriptor_id"])
        assert row.descriptor == raw and row.superseded_by is None


@pytest.mark.parametrize("change, match", [
    ({"not_after": NOW}, "after not_before|past"),
    ({"not_after": NOW - 10, "not_before": NOW - 100}, "past"),
    ({"not_before": NOW + 2 * 86400, "not_after": NOW + 3 * 86400}, "ahead"),
    ({"not_after": NOW + 91 * 86400}, "90 days"),
    ({"not_after": "tomorrow"}, "integer"),
])
@SQLITE_ONLY
def test_descriptor_windows_terminals_would_refuse_are_refused(rig, change, match):
    token = rig.authorizer("long", max_validity_s=365 * 86400)
    with pytest.raises(InvalidRequest, match=match):
        rig.descriptor(token=token, **change)


# ---- renewal (blueprint §2.1 phase 5) ----------------------------------------------------------

def test_renewal_supersedes_the_old_descriptor_with_a_revocation_in_the_same_transaction(rig):
    old = rig.descriptor()
    rig.clock.now += 100
    new = rig.issuer.renew_descriptor(rig.token, old["descriptor_id"], {"not_after": NOW + 5 * 86400})
    assert new["superseded"] == old["descriptor_id"] and new["descriptor_id"] != old["descriptor_id"]
    assert new["versions"] == {rig.tid: 1}
    with rig.db.transaction(write=False) as s:
        assert s.get(models.IssuedDescriptor, old["descriptor_id"]).superseded_by == new["descriptor_id"]
        rev = revocations.revoked_target(s, "issuer:rig", old["descriptor_id"])
        assert rev.reason == "superseded" and rev.list_version == 1 and rev.revoked_at == NOW + 100
    # The old one stops working on the terminal once the list reaches it; the new one works.
    doc = rig.revocations.revocation_list(rig.tid, 0)
    from capwarden.trust import signed

    for entry in signed.payload_of(doc, signed.REVOCATION_LIST)["entries"]:
        rig.terminal.revocations.import_statement(entry, rig.clock.now)
    assert rig.check_descriptor(b64u_decode(old["descriptor"])).error_code == "E_DESCRIPTOR_REVOKED"
    fresh = b64u_decode(new["descriptor"])
    assert rig.check_descriptor(fresh).granted
    p = cbor.decode(fresh, MAX_DESCRIPTOR)["payload"]
    assert p["grants"] == rig.grants() and p["not_before"] == NOW + 100


def test_renewal_twice_or_of_a_revoked_descriptor_is_a_conflict(rig):
    old = rig.descriptor()
    rig.issuer.renew_descriptor(rig.token, old["descriptor_id"], {"not_after": NOW + 2 * 86400})
    with pytest.raises(Conflict, match="already renewed"):
        rig.issuer.renew_descriptor(rig.token, old["descriptor_id"], {"not_after": NOW + 3 * 86400})
    other = rig.descriptor()
    rig.revocations.revoke(rig.token, {"target_id": other["descriptor_id"]})
    with pytest.raises(Conflict, match="revoked"):
        rig.issuer.renew_descriptor(rig.token, other["descriptor_id"], {"not_after": NOW + 3 * 86400})


def test_renewal_only_by_the_issuing_authorizer_and_within_its_policy(rig):
    old = rig.descriptor()
    bob = rig.authorizer("bob")
    with pytest.raises(Forbidden, match="only the authorizer"):
        rig.issuer.renew_descriptor(bob, old["descriptor_id"], {"not_after": NOW + 86400})
    with pytest.raises(NotFound):
        rig.issuer.renew_descriptor(rig.token, "01900000-0000-7000-8000-000000000000", {"not_after": NOW + 86400})
    short = rig.authorizer("short", max_validity_s=HOUR)
    mine = rig.descriptor(token=short, not_after=NOW + HOUR)
    with pytest.raises(Forbidden, match="max_validity_s"):
        rig.issuer.renew_descriptor(short, mine["descriptor_id"], {"not_after": NOW + 2 * HOUR})
    with pytest.raises(InvalidRequest):
        rig.issuer.renew_descriptor(rig.token, old["descriptor_id"], {"not_after": NOW + 86400, "grants": []})
    assert _count(rig, models.Revocation) == 0


def test_renewal_is_all_or_nothing(rig, monkeypatch):
    old = rig.descriptor()

    def broken(*a, **kw):
        raise sa.exc.OperationalError("insert", {}, Exception("disk full"))
    monkeypatch.setattr(revocations, "record", broken)
    with pytest.raises(sa.exc.OperationalError):
        rig.issuer.renew_descriptor(rig.token, old["descriptor_id"], {"not_after": NOW + 2 * 86400})
    monkeypatch.undo()
    assert _count(rig, models.IssuedDescriptor) == 1 and _count(rig, models.Revocation) == 0
    with rig.db.transaction(write=False) as s:
        assert s.get(models.IssuedDescriptor, old["descriptor_id"]).superseded_by is None


def _count(rig, model):
    with rig.db.transaction(write=False) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def test_two_processes_migrating_a_fresh_database_at_once_both_succeed(db_url):
    import threading

    dbs = [trustdb.open_db(db_url) for _ in range(3)]
    errors = []
    barrier = threading.Barrier(len(dbs))

    def go(d):
        barrier.wait()
        try:
            d.migrate()
        except Exception as exc:   # noqa: BLE001  (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=go, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and {d.revision() for d in dbs} == {dbs[0].revision()} != {None}
    finally:
        for d in dbs:
            d.dispose()


@SQLITE_ONLY
def test_sqlite_writers_of_one_process_take_turns_without_busy_retries(rig):
    """Two threads writing through one Database (which now queues them on a lock of its own):
    the second waits for the first, then both are committed; nothing fails or is retried."""
    import threading

    held, release, calls = threading.Event(), threading.Event(), []

    def first():
        with rig.db.transaction() as s:
            s.execute(sa.text("INSERT INTO revocation_list_versions (terminal_id, version) VALUES ('a', 1)"))
            held.set()
            release.wait(20)

    def second(s):
        calls.append(1)
        s.execute(sa.text("INSERT INTO revocation_list_versions (terminal_id, version) VALUES ('b', 1)"))

    t = threading.Thread(target=first)
    t.start()
    assert held.wait(20)
    u = threading.Thread(target=rig.db.run, args=(second,))
    u.start()
    u.join(0.3)
    assert u.is_alive() and calls == []          # waiting for its turn, not failing or retrying
    release.set()
    t.join(20)
    u.join(20)
    assert calls == [1]
    with rig.db.transaction(write=False) as s:
        assert s.scalar(sa.text("SELECT count(*) FROM revocation_list_versions")) == 2
