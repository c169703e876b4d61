"""Operators: the people an engine lets act from its console (take-over, hand-back, decisions).

They live in the engine's store, `STORE/operators.json` (owner-only, written atomically under
the store's lock, so `capwarden operator add` works beside a running engine, which re-reads
the file when it changes). Each entry keeps the password only as an scrypt hash (RFC 7914,
`hashlib.scrypt`, memory-hard) with its own random salt and the cost it was made with:

    {"version": 1, "operators": {"alice": {"kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
                                           "salt": b64url, "hash": b64url, "created_at": ts}}}

`authenticate(name, password)` costs the same whether the name exists or not (an unknown
name is checked against a dummy entry) and compares with `hmac.compare_digest`.
"""

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.credentials.store import corrupt, locked, read_json, write_json
from capwarden.errors import CapwardenError, StoreError, UsageError

FILE = "operators.json"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
# scrypt cost: N 2**15, r 8 (32 MiB, about 0.1 s here): OWASP's floor for scrypt is N 2**17 at
# r 8 p 1 or an equivalent trade; a console login is rare, but tests and two shared cores set
# the ceiling. Stored per entry, so a higher cost applies to new passwords without a migration.
COST = {"n": 1 << 15, "r": 8, "p": 1}
KEY_LEN = 32
_DUMMY = {"kdf": "scrypt", "n": COST["n"], "r": COST["r"], "p": COST["p"], "salt": b64u_encode(bytes(16)),
          "hash": b64u_encode(bytes(KEY_LEN))}


@dataclass(frozen=True)
class Operator:
    name: str
    created_at: int

    def to_json(self):
        return {"name": self.name, "created_at": self.created_at}


def check_name(name):
    """Raises UsageError unless `name` is an operator name (a-z, 0-9, '.', '_', '-'; 1..64)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise UsageError("an operator name is 1 to 64 of a-z 0-9 . _ - and starts with a letter or digit: %r" % (name,))


def check_password(password):
    """Raises CapwardenError (invalid input, exit 1) unless `password` is MIN_PASSWORD..
    MAX_PASSWORD characters."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise CapwardenError("a password has %d to %d characters" % (MIN_PASSWORD, MAX_PASSWORD))


def _derive(password, entry):
    n, r, p = entry["n"], entry["r"], entry["p"]
    return hashlib.scrypt(password.encode("utf-8"), salt=b64u_decode(entry["salt"]), n=n, r=r, p=p,
                          maxmem=128 * n * r * p + (1 << 20), dklen=KEY_LEN)


class OperatorStore:
    """The operators of the store at `folder`. Raises StoreError for a corrupt file."""

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, FILE)
        self._cache = (None, {})      # (the file's stat key, its operators)

    def _read(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache[0] == key:
            return self._cache[1]
        doc = read_json(self.path, kind=dict)
        ops = doc.get("operators")
        if doc.get("version") != 1 or not isinstance(ops, dict):
            raise corrupt(self.path, "not version 1 with an operators object")
        for name, e in ops.items():
            if (not NAME.match(name) or not isinstance(e, dict) or e.get("kdf") != "scrypt"
                    or not all(isinstance(e.get(k), int) and e[k] > 0 for k in ("n", "r", "p"))
                    or not isinstance(e.get("salt"), str) or not isinstance(e.get("hash"), str)):
                raise corrupt(self.path, "operator %r is not a scrypt entry" % name)
        self._cache = (key, ops)
        return ops

    def _write(self, ops):
        if not os.path.isdir(self.folder):
            raise StoreError("the store %s does not exist: run 'capwarden init' first" % self.folder)
        write_json(self.path, {"version": 1, "operators": ops}, mode=0o600)
        self._cache = (None, {})

    def list(self):
        """Every operator, by name."""
        return [Operator(n, e.get("created_at", 0)) for n, e in sorted(self._read().items())]

    def stamp(self, name):
        """A value that changes whenever `name`'s password is set (its salt), None when there is
        no such operator: a console session logged in under an older stamp is over. Raises
        StoreError."""
        entry = self._read().get(name) if isinstance(name, str) else None
        return entry["salt"] if entry is not None else None

    def add(self, name, password, replace=False):
        """Add operator `name` (or give it a new password, with `replace`). Returns Operator.
        Raises UsageError (a bad name, or it exists), CapwardenError (a bad password), StoreError."""
        check_name(name)
        check_password(password)
        salt = os.urandom(16)
        entry = dict(kdf="scrypt", salt=b64u_encode(salt), created_at=int(time.time()), **COST)
        entry["hash"] = b64u_encode(_derive(password, entry))
        with locked(self.folder):
            ops = dict(self._read())
            if name in ops and not replace:
                raise UsageError("operator %s exists (give --replace to set a new password)" % name)
            ops[name] = entry
            self._write(ops)
        return Operator(name, entry["created_at"])

    def remove(self, name):
        """Remove operator `name`. Returns True when it was there. Raises StoreError."""
        with locked(self.folder):
            ops = dict(self._read())
            if ops.pop(name, None) is None:
                return False
            self._write(ops)
        return True

    def authenticate(self, name, password):
        """The Operator when `password` is `name`'s, else None (never raises for a bad name or
        password; StoreError for a corrupt file). The same work for a known or an unknown name."""
        ops = self._read()
        entry = ops.get(name) if isinstance(name, str) else None
        ok = entry is not None
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            password, ok = "", False
        try:
            got = _derive(password, entry if ok else _DUMMY)
            want = b64u_decode((entry if ok else _DUMMY)["hash"])
        except (ValueError, MemoryError):
            return None
        same = hmac.compare_digest(got, want)
        return Operator(name, entry.get("created_at", 0)) if ok and same else None


def authenticate(folder, name, password):
    """OperatorStore(folder).authenticate(name, password)."""
    return OperatorStore(folder).authenticate(name, password)
