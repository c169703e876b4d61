"""Key sets of the Registration_Authority (§4.4 Verification_Key distribution, key update and
rotation, confirmation of receipt) and the service's key ring, on both database backends.

The terminal's side is keysets.verify_next, exactly what the client runs; the attacker holds
whatever the test says it holds (a stolen new RA key, its own keys), never the old RA key."""

import json
import os
import stat

import pytest
import sqlalchemy as sa
from ra_setup import ISSUER, T0, clock, device, ra, register, walk_and_ack  # noqa: F401 (fixtures)

from capwarden.credentials import keys
from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.issue import SigningKey
from capwarden.credentials.model import parse_key_json
from capwarden.trust import keysets, registry, signed
from capwarden.trust.errors import Conflict, Forbidden, NotFound
from capwarden.trust.models_registry import KeySetAck
from capwarden.trust.servicekeys import ISSUER as ISSUER_ROLE
from capwarden.trust.servicekeys import RA, KeyRing, KeyRingError
from capwarden.trust.signed import SignedDocError
from issuerig import SQLITE_ONLY


def _anchor(ra):
    return ra.enroll()["ra_keys"]


def _published(ring, kid):
    """What a published key set carrying `kid` tells the ring (keydist.finish_rotation)."""
    return ring.confirm({kid: ring.valid_from(kid)})


def _resign(doc, payload_changes, signers):
    p = dict(signed.payload_of(doc, signed.KEY_SET), **payload_changes)
    return signed.sign(p, signers)


# ---- the key ring ------------------------------------------------------------------------------
def test_ring_secrets_are_owner_only_files_in_an_owner_only_folder(tmp_path):
    ring = KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    ring.rotate(ISSUER_ROLE, now=T0, effective_at=T0 + 10)
    ring.rotate(RA, now=T0)
    folder = tmp_path / "keys"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    secrets_ = [f for f in os.listdir(folder) if f.endswith(".key")]
    assert len(secrets_) == 4
    for f in secrets_:
        assert stat.S_IMODE(os.stat(folder / f).st_mode) == 0o600
    os.chmod(folder / secrets_[0], 0o644)
    with pytest.raises(Exception, match="readable by others"):
        KeyRing.open(str(folder))


def test_ring_is_never_overwritten(tmp_path):
    ring = KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    with pytest.raises(KeyRingError, match="already holds"):
        KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    assert KeyRing.open(str(tmp_path / "keys")).issuer_key(T0).key_id == ring.issuer_key(T0).key_id
    with pytest.raises(KeyRingError, match="no key ring"):
        KeyRing.open(str(tmp_path / "elsewhere"))


def test_ring_shows_no_secret(tmp_path):
    ring = KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    text = repr(ring) + json.dumps(ring.describe()) + json.dumps(ring.ra_public()) + json.dumps(ring.verification_keys())
    for k in ring.issuer_keys() + ring.ra_keys():
        assert b64u_encode(k.private.secret) not in text
        assert k.private.secret.hex() not in text
    with pytest.raises(KeyRingError) as e:
        ring.get("issuer-nope")
    assert "nope" in str(e.value)


def test_issuer_key_in_force_follows_the_effective_time(tmp_path):
    ring = KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    old = ring.issuer_key(T0).key_id
    new = ring.rotate(ISSUER_ROLE, now=T0 + 1, effective_at=T0 + 100)
    assert ring.issuer_key(T0 + 100).key_id == old          # pending: no key set carries it yet
    assert _published(ring, new) == [new]
    assert ring.issuer_key(T0 + 99).key_id == old
    assert ring.issuer_key(T0 + 100).key_id == new
    assert [k.key_id for k in ring.issuer_keys()] == [old, new]
    with pytest.raises(KeyRingError, match="not before now"):
        ring.rotate(ISSUER_ROLE, now=T0 + 5, effective_at=T0 + 4)


def test_a_rotation_by_another_process_reaches_a_running_ring(tmp_path):
    serving = KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    assert serving.refresh() is False
    cli = KeyRing.open(str(tmp_path / "keys"))
    new = cli.rotate(ISSUER_ROLE, now=T0 + 1, effective_at=T0 + 1)
    _published(cli, new)
    assert serving.issuer_key(T0 + 2).key_id != new
    assert serving.refresh() is True
    assert serving.issuer_key(T0 + 2).key_id == new


def test_retired_key_file_is_gone_and_the_key_in_force_cannot_be_retired(tmp_path):
    ring = KeyRing.init(str(tmp_path / "keys"), ISSUER, now=T0)
    old = ring.issuer_key(T0).key_id
    with pytest.raises(KeyRingError, match="in force"):
        ring.retire(old, now=T0)
    with pytest.raises(KeyRingError, match="current RA key"):
        ring.retire(ring.ra_keys()[0].key_id, now=T0)
    _published(ring, ring.rotate(ISSUER_ROLE, now=T0, effective_at=T0 + 10))
    with pytest.raises(KeyRingError, match="in force"):
        ring.retire(old, now=T0 + 9)      # the new key does not sign yet
    ring.retire(old, now=T0 + 10)
    assert not os.path.exists(tmp_path / "keys" / (old + ".key"))
    with pytest.raises(KeyRingError, match="retired"):
        ring.get(old)
    assert [m["retired_at"] for m in ring.describe() if m["key_id"] == old] == [T0 + 10]


# ---- §4.4 Verification_Key distribution ----------------------------------------------------------
def test_must_distribute_the_issuer_verification_keys_as_ra_distributed(ra):
    doc = ra.keyset(1)
    p = keysets.verify_next(_anchor(ra), doc)
    assert [k["key_id"] for k in p["keys"]] == [ra.ring.issuer_key(T0).key_id]
    for k in p["keys"]:
        rec = parse_key_json(k)
        assert rec["source"] == "ra-distributed" and rec["issuer_id"] == ISSUER
        assert rec["key_material"] == ra.ring.issuer_key(T0).private.public
    # What the terminal gets verifies what the issuer signs.
    pub = keys.load(p["keys"][0]["algorithm"], b64u_decode(p["keys"][0]["key_material"]))
    assert pub.verify(b"m", ra.ring.issuer_key(T0).private.sign(b"m"))


def test_must_support_offline_pre_provisioning_then_online_updates(ra, clock, tmp_path):
    """At the factory: the anchor and key set 1 written to the terminal's image, verified there
    without a network; in the field: the online walk starts from what was pre-provisioned."""
    factory = tmp_path / "image.json"
    factory.write_text(json.dumps({"anchor": _anchor(ra), "keyset": ra.keyset(1)}))
    image = json.loads(factory.read_text())
    held = keysets.verify_next(image["anchor"], image["keyset"])
    assert held["version"] == 1
    ra.rotate(RA)
    out = ra.rotate(ISSUER_ROLE, effective_at=clock.t)
    for v in (2, 3):
        held = keysets.verify_next(held, ra.keyset(v))
    assert out["key_id"] in [k["key_id"] for k in held["keys"]]


def test_must_carry_a_version_and_an_effective_time(ra, clock):
    p1 = signed.payload_of(ra.keyset(1), signed.KEY_SET)
    assert (p1["version"], p1["effective_at"]) == (1, T0)
    out = ra.rotate(ISSUER_ROLE, effective_at=T0 + 3600)
    p2 = signed.payload_of(ra.keyset(out["version"]), signed.KEY_SET)
    assert (p2["version"], p2["effective_at"]) == (2, T0 + 3600)
    new = [k for k in p2["keys"] if k["key_id"] == out["key_id"]]
    assert new[0]["valid_from"] == T0 + 3600


def test_issuer_rotation_defaults_to_a_lead_time_for_terminals_to_fetch(ra):
    out = ra.rotate(ISSUER_ROLE)
    assert ra.ring.valid_from(out["key_id"]) == T0 + registry.ROTATION_LEAD_S
    assert ra.ring.issuer_key(T0).key_id != out["key_id"]


def test_must_rotate_smoothly_old_and_new_key_both_distributed(ra, clock):
    old = ra.ring.issuer_key(T0).key_id
    out = ra.rotate(ISSUER_ROLE, effective_at=T0 + 100)
    p2 = keysets.verify_next(keysets.verify_next(_anchor(ra), ra.keyset(1)), ra.keyset(2))
    assert [k["key_id"] for k in p2["keys"]] == [old, out["key_id"]]
    assert ra.ring.issuer_key(T0 + 99).key_id == old        # credentials signed meanwhile still verify
    assert ra.ring.issuer_key(T0 + 100).key_id == out["key_id"]


def test_an_unchanged_ra_key_signs_the_next_version_alone(ra):
    ra.rotate(ISSUER_ROLE, effective_at=T0)
    doc = ra.keyset(2)
    assert [s["kid"] for s in doc["signatures"]] == [ra.ring.ra_keys()[0].key_id]


def test_ra_rotation_is_signed_by_the_old_ra_key_and_the_new(ra):
    old = ra.ring.ra_keys()[0].key_id
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    out = ra.rotate(RA)
    doc = ra.keyset(out["version"])
    assert sorted(s["kid"] for s in doc["signatures"]) == sorted([old, out["key_id"]])
    assert keysets.verify_next(p1, doc)["ra_keys"] == ra.ring.ra_public()


# ---- refused key sets --------------------------------------------------------------------------
@SQLITE_ONLY
def test_tampered_keyset_refused(ra, clock):
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    ra.rotate(ISSUER_ROLE, effective_at=T0)
    doc = ra.keyset(2)
    raw = bytearray(b64u_decode(doc["payload"]))
    raw[-3] ^= 1
    with pytest.raises(SignedDocError):
        keysets.verify_next(p1, dict(doc, payload=b64u_encode(bytes(raw))))
    # A key of the attacker's swapped in, the payload re-encoded: the signatures no longer cover it.
    mallory = SigningKey.generate(keys.ED25519, "issuer-mallory", ISSUER)
    p = signed.payload_of(doc, signed.KEY_SET)
    p["keys"] = [{k: v for k, v in mallory.public_json(T0).items() if v is not None}]
    forged = {"payload": signed.sign(p, [mallory])["payload"], "signatures": doc["signatures"]}
    with pytest.raises(SignedDocError):
        keysets.verify_next(p1, forged)
    bad_sig = dict(doc, signatures=[dict(doc["signatures"][0], sig=b64u_encode(bytes(64)))])
    with pytest.raises(SignedDocError):
        keysets.verify_next(p1, bad_sig)


@SQLITE_ONLY
def test_keyset_signed_only_by_the_new_key_refused(ra):
    """A stolen (or made-up) new RA key cannot install itself: version N+1 needs the old trust."""
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    thief = SigningKey.generate(keys.ED25519, "ra-thief", ISSUER)
    mallory = SigningKey.generate(keys.ED25519, "issuer-mallory", ISSUER)
    p = dict(p1, version=2, ra_keys=[{"key_id": thief.key_id, "algorithm": thief.algorithm,
                                       "key_material": b64u_encode(thief.private.public)}],
             keys=[{k: v for k, v in mallory.public_json(T0).items() if v is not None}])
    with pytest.raises(SignedDocError, match="trusted"):
        keysets.verify_next(p1, signed.sign(p, [thief]))
    # The real rotation, but only the new key's signature kept.
    out = ra.rotate(RA)
    doc = ra.keyset(out["version"])
    only_new = dict(doc, signatures=[s for s in doc["signatures"] if s["kid"] == out["key_id"]])
    with pytest.raises(SignedDocError):
        keysets.verify_next(p1, only_new)


@SQLITE_ONLY
def test_keyset_signed_only_by_the_old_key_refused(ra):
    """The old RA key alone cannot name a new RA key nobody vouches for."""
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    out = ra.rotate(RA)
    doc = ra.keyset(out["version"])
    only_old = dict(doc, signatures=[s for s in doc["signatures"] if s["kid"] != out["key_id"]])
    with pytest.raises(SignedDocError, match="not signed by"):
        keysets.verify_next(p1, only_old)


def test_version_skip_and_rollback_refused(ra):
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    ra.rotate(ISSUER_ROLE, effective_at=T0)
    ra.rotate(ISSUER_ROLE, effective_at=T0)
    with pytest.raises(SignedDocError, match="one step at a time"):
        keysets.verify_next(p1, ra.keyset(3))
    p2 = keysets.verify_next(p1, ra.keyset(2))
    with pytest.raises(SignedDocError, match="one step at a time"):
        keysets.verify_next(p2, ra.keyset(1))
    with pytest.raises(SignedDocError, match="one step at a time"):
        keysets.verify_next(p2, ra.keyset(2))


def test_effective_time_going_back_refused(ra):
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    ra_key = ra.ring.ra_keys()[0]
    back = signed.sign(dict(p1, version=2, effective_at=T0 - 1), [ra_key])
    with pytest.raises(SignedDocError, match="before the set it follows"):
        keysets.verify_next(p1, back)


@SQLITE_ONLY
def test_ra_key_id_reused_with_other_material_refused(ra):
    p1 = keysets.verify_next(_anchor(ra), ra.keyset(1))
    old = ra.ring.ra_keys()[0]
    twin = SigningKey.generate(keys.ED25519, old.key_id, ISSUER)
    p = dict(p1, version=2, ra_keys=[{"key_id": old.key_id, "algorithm": twin.algorithm,
                                       "key_material": b64u_encode(twin.private.public)}])
    with pytest.raises(SignedDocError, match="changes its material"):
        keysets.verify_next(p1, signed.sign(p, [old, twin]))


@SQLITE_ONLY
def test_a_keyset_is_not_a_revocation_list_or_an_ack(ra):
    doc = ra.keyset(1)
    trust = keysets.ra_trust(_anchor(ra))
    with pytest.raises(SignedDocError, match="expected a revocation-list"):
        signed.verify(doc, signed.REVOCATION_LIST, trust)
    dev = device()
    ack = keysets.build_ack(dev, "terminal:x", doc)
    with pytest.raises(SignedDocError, match="expected a key-set"):
        keysets.verify_next(_anchor(ra), ack)


@SQLITE_ONLY
def test_anchor_not_among_the_signers_refused(ra):
    other = SigningKey.generate(keys.ED25519, "ra-other", ISSUER)
    anchor = [{"key_id": other.key_id, "algorithm": other.algorithm, "key_material": b64u_encode(other.private.public)}]
    with pytest.raises(SignedDocError):
        keysets.verify_next(anchor, ra.keyset(1))


def test_terminal_offline_across_two_rotations_walks_both_one_at_a_time(ra, clock):
    tid, token, dev, bundle = register(ra)
    p1 = walk_and_ack(ra, tid, token, dev, bundle["ra_keys"])
    ra_keys_1 = p1["ra_keys"]
    r2 = ra.rotate(RA)
    clock.advance(10)
    r3 = ra.rotate(RA)
    issuer = ra.rotate(ISSUER_ROLE, effective_at=clock.t)
    assert (r2["version"], r3["version"], issuer["version"]) == (2, 3, 4)
    # Version 3 is not signed by anything version 1 trusts: no shortcut.
    with pytest.raises(SignedDocError):
        keysets.verify_next(p1, ra.keyset(3))
    p2 = keysets.verify_next(p1, ra.keyset(2))
    p3 = keysets.verify_next(p2, ra.keyset(3))
    p4 = keysets.verify_next(p3, ra.keyset(4))
    assert [k["key_id"] for k in p4["ra_keys"]] == [r3["key_id"]] != [k["key_id"] for k in ra_keys_1]
    assert issuer["key_id"] in [k["key_id"] for k in p4["keys"]]
    # And it acknowledges each step.
    assert walk_and_ack(ra, tid, token, dev, p1)["version"] == 4
    assert ra.db.run(lambda s: s.scalars(sa.select(KeySetAck.version).where(KeySetAck.terminal_id == tid)
                                         .order_by(KeySetAck.version)).all(), write=False) == [1, 2, 3, 4]


def test_walk_still_works_after_the_old_ra_keys_are_retired(ra, clock):
    tid, token, dev, bundle = register(ra)
    p1 = walk_and_ack(ra, tid, token, dev, bundle["ra_keys"])
    old = ra.ring.ra_keys()[0].key_id
    ra.rotate(RA)
    ra.retire(old, force=True)
    p2 = keysets.verify_next(p1, ra.keyset(2))          # the stored document keeps its signatures
    ra.rotate(ISSUER_ROLE, effective_at=clock.t)        # signed by the new RA key alone now
    assert keysets.verify_next(p2, ra.keyset(3))["version"] == 3


# ---- §4.4 confirmation of receipt --------------------------------------------------------------
def test_must_confirm_receipt_with_a_signed_ack_counted_per_version(ra, clock):
    a = register(ra)
    b = register(ra)
    st = {r["version"]: r for r in ra.keyset_status()}
    assert (st[1]["acknowledged"], st[1]["registered_behind"]) == (0, 2)
    pa = walk_and_ack(ra, a[0], a[1], a[2], a[3]["ra_keys"])
    ra.rotate(ISSUER_ROLE, effective_at=clock.t)
    walk_and_ack(ra, a[0], a[1], a[2], pa)
    walk_and_ack(ra, b[0], b[1], b[2], b[3]["ra_keys"], upto=1)
    st = {r["version"]: r for r in ra.keyset_status()}
    assert (st[1]["acknowledged"], st[1]["registered_behind"]) == (2, 0)
    assert (st[2]["acknowledged"], st[2]["registered_behind"]) == (1, 1)
    assert ra.terminal_info(a[0])["key_set_acked"] == 2
    assert ra.terminal_info(b[0])["key_set_acked"] == 1


def test_ack_is_idempotent(ra):
    tid, token, dev, bundle = register(ra)
    t = ra.authenticate(token)
    ack = keysets.build_ack(dev, tid, ra.keyset(1))
    assert ra.ack(t, 1, ack) == 1
    assert ra.ack(t, 1, ack) == 1
    assert ra.keyset_status()[0]["acknowledged"] == 1


def test_ack_replayed_for_another_terminal_refused(ra):
    a_tid, a_token, a_dev, _ = register(ra)
    b_tid, b_token, b_dev, _ = register(ra)
    doc = ra.keyset(1)
    ack_a = keysets.build_ack(a_dev, a_tid, doc)
    with pytest.raises(Forbidden):
        ra.ack(ra.authenticate(b_token), 1, ack_a)         # B sends A's ack
    # B's device key signing an ack that names A: names the wrong terminal for B's token.
    with pytest.raises(Forbidden):
        ra.ack(ra.authenticate(b_token), 1, keysets.build_ack(b_dev, a_tid, doc))
    assert ra.terminal_info(b_tid)["key_set_acked"] == 0
    assert ra.keyset_status()[0]["acknowledged"] == 0


def test_ack_of_another_version_or_digest_refused(ra, clock):
    tid, token, dev, _ = register(ra)
    ra.rotate(ISSUER_ROLE, effective_at=clock.t)
    t = ra.authenticate(token)
    ack1 = keysets.build_ack(dev, tid, ra.keyset(1))
    with pytest.raises(Forbidden):
        ra.ack(t, 2, ack1)                                  # replayed as the ack of version 2
    forged = signed.sign(keysets.ack_payload(tid, 2, keysets.digest(ra.keyset(1))), [SigningKey(tid, tid, dev)])
    with pytest.raises(Forbidden, match="digest"):
        ra.ack(t, 2, forged)                                # version 2 acked with version 1's digest
    with pytest.raises(Forbidden):
        ra.ack(t, 1, keysets.build_ack(device(), tid, ra.keyset(1)))   # not its device key
    with pytest.raises(NotFound):
        ra.ack(t, 9, ack1)
    assert ra.terminal_info(tid)["key_set_acked"] == 0


# ---- retirement ----------------------------------------------------------------------------
def test_retire_refused_while_unacknowledged(ra, clock):
    a = register(ra)
    b = register(ra)
    old = ra.ring.issuer_key(clock.t).key_id
    ra.rotate(ISSUER_ROLE, effective_at=clock.t + 10)
    clock.advance(10)
    pa = walk_and_ack(ra, a[0], a[1], a[2], a[3]["ra_keys"])
    assert pa["version"] == 2
    with pytest.raises(Conflict) as e:
        ra.retire(old)
    assert "1 registered terminal" in str(e.value) and b[0] in str(e.value)
    assert ra.ring.get(old)                                   # still there
    assert ra.latest() == 2
    walk_and_ack(ra, b[0], b[1], b[2], b[3]["ra_keys"])
    out = ra.retire(old)
    assert out == {"key_id": old, "version": 3, "forced": False, "needing": []}
    p3 = signed.payload_of(ra.keyset(3), signed.KEY_SET)
    assert old not in [k["key_id"] for k in p3["keys"]]


def test_forced_retire(ra, clock):
    a = register(ra)
    old = ra.ring.issuer_key(clock.t).key_id
    ra.rotate(ISSUER_ROLE, effective_at=clock.t)
    out = ra.retire(old, force=True)
    assert out["forced"] is True and out["needing"] == [a[0]] and out["version"] == 3
    with pytest.raises(KeyRingError, match="retired"):
        ra.ring.get(old)
    register(ra)                        # one more terminal behind: still "retired", not "needed"
    with pytest.raises(KeyRingError, match="retired"):
        ra.retire(old)
    with pytest.raises(KeyRingError, match="unknown"):
        ra.retire("issuer-nope")


def test_suspended_and_deregistered_terminals_do_not_hold_up_retirement(ra, clock):
    a = register(ra)
    b = register(ra)
    old = ra.ring.issuer_key(clock.t).key_id
    ra.rotate(ISSUER_ROLE, effective_at=clock.t)
    ra.set_status(a[0], "suspended")
    ra.set_status(b[0], "deregistered")
    assert ra.retire(old)["forced"] is False


def test_retiring_an_ra_key_waits_for_the_set_that_replaces_it(ra, clock):
    a = register(ra)
    old = ra.ring.ra_keys()[0].key_id
    ra.rotate(RA)
    with pytest.raises(Conflict, match="key set 2"):
        ra.retire(old)
    walk_and_ack(ra, a[0], a[1], a[2], a[3]["ra_keys"])
    assert ra.retire(old) == {"key_id": old, "version": None, "forced": False, "needing": []}


def test_key_in_use_or_pending_cannot_be_retired(ra, clock):
    current = ra.ring.issuer_key(clock.t).key_id
    with pytest.raises(KeyRingError, match="in use"):
        ra.retire(current)
    new = ra.rotate(ISSUER_ROLE, effective_at=clock.t + 100)["key_id"]
    with pytest.raises(KeyRingError, match="not in force yet"):
        ra.retire(new)
    with pytest.raises(KeyRingError, match="in use"):
        ra.retire(current)             # still the one in force until clock.t + 100


def test_publish_refuses_when_no_key_of_the_previous_set_can_sign(ra):
    old = ra.ring.ra_keys()[0].key_id
    ra.ring.rotate(RA, now=T0)          # rotated in the ring only, never published
    ra.ring.retire(old, now=T0)
    with pytest.raises(KeyRingError, match="no RA key of key set 1"):
        ra.publish()
    assert ra.latest() == 1


def _race(n, fn):
    """fn() in n threads started together; their results (or exceptions) in completion order."""
    import threading

    results, barrier = [], threading.Barrier(n)

    def go():
        barrier.wait()
        try:
            results.append(fn())
        except Exception as e:    # noqa: BLE001 (the test looks at what came back)
            results.append(e)
    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_publishers_never_fork_the_chain(ra, db_url, tmp_path, clock):
    """Two service processes (two databases handles here) publishing at once: every version is
    published once, and the chain verifies from version 1 to the end."""
    from capwarden.trust.db import open_db
    from capwarden.trust.registry import RegistrationAuthority

    import itertools

    other = RegistrationAuthority(open_db(db_url), KeyRing.open(ra.ring.folder), clock=clock)
    turn = itertools.count()
    try:
        got = _race(4, lambda: (ra, other)[next(turn) % 2].publish())
    finally:
        other.db.dispose()
    assert sorted(got) == [2, 3, 4, 5]
    current = _anchor(ra)
    for v in range(1, 6):
        current = keysets.verify_next(current, ra.keyset(v))


def test_the_same_ack_twice_at_once_is_stored_once(ra):
    tid, token, dev, _ = register(ra)
    t = ra.authenticate(token)
    ack = keysets.build_ack(dev, tid, ra.keyset(1))
    assert _race(4, lambda: ra.ack(t, 1, ack)) == [1, 1, 1, 1]
    assert ra.keyset_status()[0]["acknowledged"] == 1
