"""The terminal's store folder: atomic files, owner-only secrets, authenticated encryption.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then renamed
over the old file and the folder fsynced: a crash leaves the old state or the new one, never a
torn file. Secrets (storage key, signing keys) are created with mode 0600 and refused when
readable by others. Stored descriptors are sealed with ChaCha20-Poly1305 under the storage key,
with the descriptor id as associated data, so a file moved to another id does not open.
"""

import contextlib
import fcntl
import json
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from capwarden.credentials import strictjson
from capwarden.errors import StoreError
from capwarden.paths import data_dir

TERMINAL = "terminal.json"
STORAGE_KEY = "storage.key"
CONVERSION_KEY = "conversion-key.json"
KEYS = "keys.json"
REVOCATIONS = "revocations.json"
CONVERSIONS = "conversions.json"
DESCRIPTORS = "descriptors"
LOCK = ".lock"
MAX_SECRET = 4096      # a secret file: the storage key, a signing key (about 150 bytes of JSON)


def default_store():
    return data_dir("CAPWARDEN_STORE", "capwarden")


def write_atomic(path, data, mode=0o644):
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path, obj, mode=0o644):
    write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), mode)


@contextlib.contextmanager
def locked(folder):
    """Hold the store's lock for one read-modify-write of its files.

    Several processes share a store (`capwarden serve`, and the command line importing keys or
    revocations beside it): without the lock, two imports that each read, add and write would
    lose one of them. An flock on FOLDER/.lock is released by the kernel when its holder dies,
    so a crash never leaves the store locked.
    """
    fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def corrupt(path, why):
    """The StoreError for a store file that cannot be used as it is."""
    return StoreError("%s is corrupt (%s); restore it from a backup" % (path, why))


def read_json(path, default=None, kind=None):
    """The JSON value of a store file, strictly decoded (strictjson). `kind` (list or dict): the
    type its top level must have. Raises StoreError for a missing (unless `default` is given),
    unreadable or corrupt file: never another exception, whatever the file holds."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if default is not None:
            return default
        raise StoreError("%s is missing: run 'capwarden init' for this store" % path) from None
    except OSError as exc:
        raise StoreError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    try:
        value = strictjson.loads(data)
    except strictjson.JsonError as exc:
        raise corrupt(path, "it %s" % exc) from None
    if kind is not None and type(value) is not kind:
        raise corrupt(path, "not a JSON %s" % ("array" if kind is list else "object"))
    return value


def read_secret(path):
    """A secret file's bytes (at most MAX_SECRET). Raises StoreError when missing, readable
    by others or larger than any secret capwarden writes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StoreError("%s is missing: run 'capwarden init' for this store" % path) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError("%s is readable by others (mode %o): chmod 600 it" % (path, st.st_mode & 0o777))
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET + 1)
    except OSError as exc:
        raise StoreError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    if len(data) > MAX_SECRET:
        raise StoreError("%s is larger than any secret capwarden writes (%d bytes)" % (path, MAX_SECRET))
    return data


class Sealer:
    """Authenticated encryption of stored descriptors under the store's storage key."""

    OVERHEAD = 12 + 16    # nonce, then the Poly1305 tag after the ciphertext

    def __init__(self, key):
        if len(key) != 32:
            raise StoreError("the storage key must be 32 bytes")
        self._aead = ChaCha20Poly1305(key)

    def seal(self, plaintext, ad):
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, ad)

    def open(self, blob, ad):
        if len(blob) < self.OVERHEAD:
            raise StoreError("a stored descriptor is truncated")
        try:
            return self._aead.decrypt(blob[:12], blob[12:], ad)
        except InvalidTag:
            raise StoreError("a stored descriptor failed authentication (tampered or moved)") from None
