"""A batch of revocation statements (a sync after an offline period): verified all, written once,
all or none; the listeners hear each new one (converted descriptors deleted)."""

import os

import pytest

from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.credentials.issue import sign_revocation
from capwarden.errors import CapError
from credrig import NOW, w  # noqa: F401 (fixture)


def test_a_batch_is_recorded_with_one_write(w, monkeypatch):
    from capwarden.credentials import revocation

    writes = []
    real = revocation.write_json
    monkeypatch.setattr(revocation, "write_json", lambda *a, **kw: writes.append(a[0]) or real(*a, **kw))
    heard = []
    w.t.revocations.listeners.append(heard.append)
    ids = [uuid_text(new_uuid7()) for _ in range(50)]
    recs = w.t.import_revocations([sign_revocation(w.tix, i, NOW) for i in ids], NOW)
    assert [r["target"] for r in recs] == ids and len(writes) == 1
    assert all(w.t.revocations.revoked("tickets:acme", i) for i in ids)
    assert [h["target"] for h in heard] == ids
    again = w.t.import_revocations([sign_revocation(w.tix, ids[0], NOW)], NOW)     # already there: no write
    assert again[0]["target"] == ids[0] and len(writes) == 1


def test_one_bad_statement_holds_back_no_other_and_is_raised(w):
    # Fail closed: the good revocation is in force although its neighbour's signature is bad,
    # and the caller still hears of the bad one (the list version is not taken as applied).
    target = uuid_text(new_uuid7())
    good = sign_revocation(w.tix, target, NOW)
    bad = bytearray(sign_revocation(w.tix, uuid_text(new_uuid7()), NOW))
    bad[-1] ^= 1
    with pytest.raises(CapError) as exc:
        w.t.import_revocations([bytes(bad), good], NOW)
    assert exc.value.code == "E_INVALID_SIGNATURE"
    assert w.t.revocations.revoked("tickets:acme", target) and len(w.t.revocations.entries) == 1


def test_a_batch_deletes_the_converted_descriptors_of_its_tickets(w):
    tok = w.ticket()
    did = w.t.convert_ticket(tok, NOW)
    w.t.import_revocations([sign_revocation(w.tix, uuid_text(new_uuid7()), NOW),
                            sign_revocation(w.tix, did, NOW)], NOW)
    assert did not in w.t.stored_ids()
