"""The Registration_Authority's registration and status (§4.4 Terminal Registration,
Registration Status Management) and its schema, on both database backends."""

import threading

import pytest
import sqlalchemy as sa
from ra_setup import T0, clock, device, ra, register, registration_body, walk_and_ack  # noqa: F401 (fixtures)

from capwarden.credentials.ids import TERMINAL_RE, new_terminal_id
from capwarden.trust import keysets, models_registry, registry, signed
from capwarden.trust.db import Base
from capwarden.trust.errors import Conflict, Forbidden, Gone, InvalidRequest, NotFound, Unauthenticated
from capwarden.trust.models_registry import Enrollment, RegisteredTerminal
from capwarden.trust.servicekeys import RA
from issuerig import SQLITE_ONLY


# ---- schema -------------------------------------------------------------------------------
REGISTRY_TABLES = ("ra_terminals", "ra_enrollments", "ra_key_sets", "ra_key_set_acks")


def test_migrations_0002_0003_match_the_models(ra):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from capwarden.trust.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    assert ra.db.revision() == ScriptDirectory.from_config(cfg).get_current_head() == "0004"
    insp = sa.inspect(ra.db.engine)
    for name in REGISTRY_TABLES:
        table = Base.metadata.tables[name]
        got = {c["name"]: c for c in insp.get_columns(name)}
        assert set(got) == set(table.columns.keys()), name
        for col in table.columns:
            assert got[col.name]["nullable"] == col.nullable, (name, col.name)
        assert insp.get_pk_constraint(name)["constrained_columns"] == [c.name for c in table.primary_key.columns]
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(name)}
        for col in table.columns:
            if col.unique:
                assert (col.name,) in uniques, (name, col.name)
        indexed = {tuple(i["column_names"]) for i in insp.get_indexes(name)}
        for col in table.columns:
            if col.index:
                assert (col.name,) in indexed, (name, col.name)
    assert models_registry.RegisteredTerminal.__tablename__ in insp.get_table_names()


def test_migration_0002_downgrades_to_0001(ra):
    from alembic import command
    from alembic.config import Config

    from capwarden.trust.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    with ra.db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    names = set(sa.inspect(ra.db.engine).get_table_names())
    assert not names & set(REGISTRY_TABLES) and "revocations" in names
    ra.db.migrate()
    assert set(REGISTRY_TABLES) <= set(sa.inspect(ra.db.engine).get_table_names())


def test_migration_0003_adds_revocations_served_to_existing_terminals(ra):
    from alembic import command
    from alembic.config import Config

    from capwarden.trust.db import MIGRATIONS

    tid = register(ra)[0]
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    with ra.db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "revocations_served" not in {c["name"] for c in sa.inspect(ra.db.engine).get_columns("ra_terminals")}
    ra.db.migrate()
    assert ra.db.revision() == "0004"       # the head: 0003 and what came after it
    assert [(t["terminal_id"], t["revocations_served"]) for t in ra.list_terminals()] == [(tid, 0)]


# ---- §4.4 terminal registration ------------------------------------------------------------
def test_must_register_a_terminal_and_assign_a_unique_terminal_id(ra):
    ids = {register(ra)[0] for _ in range(3)}
    assert len(ids) == 3 and all(TERMINAL_RE.match(t) for t in ids)
    assert ra.terminal_state(ids.pop()) == "registered"


def test_ra_confirms_the_enrolled_terminal_id(ra):
    tid = new_terminal_id()
    assert register(ra, terminal_id=tid)[0] == tid
    # The terminal may name it as well, with the proof over it.
    tid2 = new_terminal_id()
    bundle = ra.enroll(terminal_id=tid2)
    dev = device()
    assert ra.register(registration_body(bundle["enrollment_secret"], dev, terminal_id=tid2))["terminal_id"] == tid2


def test_terminal_may_propose_its_own_id_when_the_ra_assigns_none(ra):
    tid = new_terminal_id()
    bundle = ra.enroll()
    out = ra.register(registration_body(bundle["enrollment_secret"], device(), terminal_id=tid))
    assert out["terminal_id"] == tid


def test_another_id_than_the_enrolled_one_refused(ra):
    bundle = ra.enroll(terminal_id=new_terminal_id())
    with pytest.raises(Forbidden, match="another Terminal_ID"):
        ra.register(registration_body(bundle["enrollment_secret"], device(), terminal_id=new_terminal_id()))


def test_enrollment_secret_works_once(ra):
    bundle = ra.enroll()
    ra.register(registration_body(bundle["enrollment_secret"], device()))
    with pytest.raises(Unauthenticated, match="already used"):
        ra.register(registration_body(bundle["enrollment_secret"], device()))
    with pytest.raises(Unauthenticated, match="unknown"):
        ra.register(registration_body("not-a-secret", device()))


def test_enrollment_secret_expires(ra, clock):
    bundle = ra.enroll(ttl_s=60)
    clock.advance(60)
    with pytest.raises(Unauthenticated, match="expired"):
        ra.register(registration_body(bundle["enrollment_secret"], device()))


@SQLITE_ONLY
def test_registration_needs_proof_of_the_device_key(ra):
    bundle = ra.enroll()
    s = bundle["enrollment_secret"]
    dev = device()
    with pytest.raises(Unauthenticated, match="proof"):
        ra.register(registration_body(s, dev, proof_key=device()))        # signed by another key
    tid = new_terminal_id()
    with pytest.raises(Unauthenticated, match="proof"):
        ra.register(registration_body(s, dev, terminal_id=tid, proof_id=""))   # proof over another id
    with pytest.raises(Unauthenticated, match="proof"):
        ra.register(dict(registration_body(s, dev), proof=keysets.sign_proof(dev, "other secret")))
    with pytest.raises(InvalidRequest):
        ra.register(dict(registration_body(s, dev), device_key={"algorithm": "ed25519", "key_material": "AAAA"}))
    # None of these spent the secret.
    assert TERMINAL_RE.match(ra.register(registration_body(s, dev))["terminal_id"])


def test_a_registered_terminal_id_cannot_register_again(ra):
    tid, *_ = register(ra)
    with pytest.raises(Conflict):
        ra.enroll(terminal_id=tid)
    bundle = ra.enroll()
    with pytest.raises(Conflict):
        ra.register(registration_body(bundle["enrollment_secret"], device(), terminal_id=tid))
    # The refused registration left the secret unspent.
    ra.register(registration_body(bundle["enrollment_secret"], device()))


def test_registration_is_signed_by_the_trust_anchor_handed_out_at_enrollment(ra):
    bundle = ra.enroll()
    dev = device()
    out = ra.register(registration_body(bundle["enrollment_secret"], dev))
    p = keysets.verify_registration(bundle["ra_keys"], out["registration"])
    assert p["terminal_id"] == out["terminal_id"] and p["device_key"] == keysets.device_key_json(dev)
    assert p["key_set_version"] == bundle["key_set_version"] == 1
    assert bundle["ra_keys"] == ra.ring.ra_public()


def test_registration_verifies_with_the_anchor_after_an_ra_rotation(ra):
    bundle = ra.enroll()
    ra.rotate(RA)
    ra.rotate(RA)
    dev = device()
    out = ra.register(registration_body(bundle["enrollment_secret"], dev))
    reg = keysets.verify_registration(bundle["ra_keys"], out["registration"])
    # The terminal starts from the version its anchor signs and walks on, across both rotations.
    assert reg["key_set_version"] == bundle["key_set_version"] == 1
    p = walk_and_ack(ra, out["terminal_id"], out["token"], dev, bundle["ra_keys"], start=reg["key_set_version"])
    assert p["version"] == 3


def test_secret_and_token_are_stored_hashed_only(ra):
    bundle = ra.enroll()
    out = ra.register(registration_body(bundle["enrollment_secret"], device()))

    def dump(s):
        rows = []
        for model in (Enrollment, RegisteredTerminal):
            for obj in s.scalars(sa.select(model)):
                rows.extend(repr(getattr(obj, c.name)) for c in model.__table__.columns)
        return " ".join(rows)
    text = ra.db.run(dump, write=False)
    assert bundle["enrollment_secret"] not in text and out["token"] not in text
    assert registry.secret_hash(out["token"]) == ra.db.run(
        lambda s: s.get(RegisteredTerminal, out["terminal_id"]).token_sha256, write=False)


def test_two_registrations_racing_with_one_secret_one_wins(ra):
    bundle = ra.enroll()
    results = []
    barrier = threading.Barrier(4)

    def go():
        barrier.wait()
        try:
            results.append(ra.register(registration_body(bundle["enrollment_secret"], device()))["terminal_id"])
        except Unauthenticated:
            results.append("refused")
    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results).count("refused") == 3 and len(results) == 4
    assert len(ra.list_terminals()) == 1


def test_enroll_needs_a_published_key_set_and_sane_arguments(db_url, tmp_path):
    from capwarden.trust.db import open_db

    db = open_db(db_url)
    try:
        db.migrate()
        with pytest.raises(NotFound, match="trust init"):
            db.run(lambda s: registry.enroll(s, None))
    finally:
        db.dispose()


@SQLITE_ONLY
def test_enroll_refuses_bad_arguments(ra):
    for kw in ({"terminal_id": "terminal:nope"}, {"group": ""}, {"group": "g" * 129}, {"ttl_s": 0},
               {"ttl_s": registry.MAX_ENROLLMENT_TTL_S + 1}):
        with pytest.raises(InvalidRequest):
            ra.enroll(**kw)


def test_enroll_refused_while_the_ring_holds_an_unpublished_ra_key(ra):
    ra.ring.rotate(RA)                 # in the ring only: no key set carries the new RA key
    with pytest.raises(Conflict, match="publish the key set first"):
        ra.enroll()
    ra.publish()
    assert ra.enroll()["ra_keys"] == ra.ring.ra_public()


def test_group_is_recorded(ra):
    tid, *_ = register(ra, group="hangar-2")
    assert [t["group"] for t in ra.list_terminals() if t["terminal_id"] == tid] == ["hangar-2"]


# ---- §4.4 registration status management -------------------------------------------------------
def test_must_keep_registered_suspended_deregistered(ra):
    tid, token, *_ = register(ra)
    assert ra.set_status(tid, "suspended") == "registered"
    assert ra.terminal_state(tid) == "suspended"
    assert ra.set_status(tid, "registered") == "suspended"
    assert ra.set_status(tid, "deregistered") == "registered"
    assert ra.terminal_state(tid) == "deregistered"
    assert ra.terminal_state(new_terminal_id()) is None
    with pytest.raises(InvalidRequest):
        ra.set_status(tid, "paused")
    with pytest.raises(NotFound):
        ra.set_status(new_terminal_id(), "suspended")


def test_suspended_terminal_receives_no_key_set_updates(ra):
    tid, token, dev, bundle = register(ra)
    ra.set_status(tid, "suspended")
    with pytest.raises(Forbidden, match="suspended"):
        ra.authenticate(token)
    ra.set_status(tid, "registered")
    assert ra.authenticate(token).terminal_id == tid
    # An ack it sent while suspended is not taken either.
    t = ra.authenticate(token)
    ra.set_status(tid, "suspended")
    with pytest.raises(Forbidden):
        ra.db.run(lambda s: registry.store_ack(s, registry._find(s, token), 1,
                                               keysets.build_ack(dev, tid, ra.keyset(1))))
    assert t.terminal_id == tid


def test_deregistration_is_final(ra):
    tid, token, *_ = register(ra)
    ra.set_status(tid, "deregistered")
    with pytest.raises(Gone):
        ra.authenticate(token)
    with pytest.raises(Conflict, match="deregistered"):
        ra.set_status(tid, "registered")
    assert ra.set_status(tid, "deregistered") == "deregistered"


def test_unknown_token_refused(ra):
    register(ra)
    for token in ("", "x" * 43, None):
        with pytest.raises(Unauthenticated):
            ra.authenticate(token)


def test_last_sync_time_is_recorded_at_most_once_a_minute(ra, clock):
    tid, token, *_ = register(ra)
    assert ra.terminal_info(tid)["status"] == "registered"
    sync = lambda: [t["last_sync_at"] for t in ra.list_terminals() if t["terminal_id"] == tid][0]  # noqa: E731
    assert sync() == T0
    clock.advance(registry.SYNC_RESOLUTION_S - 1)
    ra.authenticate(token)
    assert sync() == T0
    clock.advance(1)
    ra.authenticate(token)
    assert sync() == T0 + registry.SYNC_RESOLUTION_S


def test_terminal_info_reads_the_revocation_list_version(ra):
    from capwarden.trust.models import RevocationListVersion

    tid, *_ = register(ra)
    assert ra.terminal_info(tid) == {"terminal_id": tid, "status": "registered", "key_set_acked": 0,
                                     "revocations_version": 0}
    ra.db.run(lambda s: s.add(RevocationListVersion(terminal_id=tid, version=7)))
    assert ra.terminal_info(tid)["revocations_version"] == 7
    with pytest.raises(NotFound):
        ra.terminal_info(new_terminal_id())


def test_status_shows_terminals_key_sets_and_keys_without_secrets(ra):
    tid, token, *_ = register(ra)
    st = ra.status()
    assert [t["terminal_id"] for t in st["terminals"]] == [tid]
    assert st["key_sets"][0]["version"] == 1
    assert {k["role"] for k in st["keys"]} == {"issuer", "ra"}
    assert token not in repr(st)
    signed.payload_of(ra.keyset(1), signed.KEY_SET)
