"""Several processes share one store (`capwarden serve` and the command line beside it).

Every read-modify-write (revocations, keys, ticket conversions) happens under the store's lock,
after re-reading the file: no import is lost to another process's write, and nothing revoked
comes back, whichever process wrote last.
"""

import os
import subprocess
import sys

from capwarden.credentials.ids import new_uuid7, uuid_text
from capwarden.credentials.issue import SigningKey, sign_revocation
from capwarden.credentials.keystore import KeyStore
from capwarden.credentials.revocation import RevocationList
from credrig import NOW


def test_two_revocation_lists_on_one_store_keep_both_imports(w):
    folder = w.t.folder
    a = RevocationList(folder, w.t.keys)
    b = RevocationList(folder, w.t.keys)          # loaded before a's import: stale
    first, second = uuid_text(new_uuid7()), uuid_text(new_uuid7())
    a.import_statement(sign_revocation(w.ed, first, NOW), NOW)
    heard = []
    b.listeners.append(heard.append)
    b.import_statement(sign_revocation(w.ed, second, NOW), NOW)
    # b's write kept a's entry, and b's listeners heard of both.
    fresh = RevocationList(folder, w.t.keys)
    assert fresh.revoked("issuer:acme", first) and fresh.revoked("issuer:acme", second)
    assert sorted(r["target"] for r in heard) == sorted([first, second])
    a.reload()
    assert a.revoked("issuer:acme", second)


def test_a_revocation_missing_from_the_file_stays_revoked_in_a_running_process(w):
    target = uuid_text(new_uuid7())
    w.t.import_revocation(sign_revocation(w.ed, target, NOW), NOW)
    os.unlink(os.path.join(w.t.folder, "revocations.json"))    # e.g. an old backup restored
    w.t.revocations.reload()
    assert w.t.revocations.revoked("issuer:acme", target)
    other = uuid_text(new_uuid7())
    w.t.import_revocation(sign_revocation(w.ed, other, NOW), NOW)
    again = RevocationList(w.t.folder, w.t.keys)
    assert again.revoked("issuer:acme", target) and again.revoked("issuer:acme", other)


def test_a_revoked_key_stays_revoked(w):
    folder = w.t.folder
    stale = KeyStore(folder)
    w.t.keys.revoke(w.ed.key_id)
    # A process that loaded the keys before the revocation imports another key: the revoked
    # flag written by the first survives its write.
    extra = SigningKey.generate("ed25519", "acme-ed-2", "issuer:acme")
    stale.add(extra.public_json(valid_from=NOW - 10))
    fresh = KeyStore(folder)
    assert fresh.records[w.ed.key_id]["revoked"] and "acme-ed-2" in fresh.records
    # Importing the revoked key's JSON again does not bring it back.
    fresh.add(w.ed.public_json(valid_from=NOW - 365 * 86400))
    assert KeyStore(folder).records[w.ed.key_id]["revoked"]
    assert fresh.usable(w.ed.key_id, "ed25519", "issuer:acme", NOW)[0] is None


IMPORTER = r"""
import sys
from capwarden.credentials import Terminal
t = Terminal.open(sys.argv[1])
for path in sys.argv[3:]:
    with open(path, "rb") as f:
        t.import_revocation(f.read(), int(sys.argv[2]))
"""


def test_concurrent_imports_by_separate_processes_are_all_kept(w, tmp_path):
    per_process, processes = 15, 4
    targets = []
    batches = []
    for p in range(processes):
        batch = []
        for i in range(per_process):
            target = uuid_text(new_uuid7())
            targets.append(target)
            path = tmp_path / ("r%d-%d.cbor" % (p, i))
            path.write_bytes(sign_revocation(w.ed, target, NOW))
            batch.append(str(path))
        batches.append(batch)
    procs = [subprocess.Popen([sys.executable, "-c", IMPORTER, w.t.folder, str(NOW)] + b) for b in batches]
    assert [p.wait(timeout=120) for p in procs] == [0] * processes
    fresh = RevocationList(w.t.folder, w.t.keys)
    assert all(fresh.revoked("issuer:acme", t) for t in targets)
    assert len(fresh.entries) == processes * per_process

