"""The host's side of link authentication (docs/link-auth.md): link keys, their files, and
frame tags with `cryptography`'s AES-CMAC.

The tags are the same bytes the board's capshared.linkauth makes (tests/shared/test_linkauth.py
holds the two to it), computed here independently: CMAC over the whole string, session prefix
included, where the board continues from a saved midstate.

A link key never appears in a repr, a log line or an error message: LinkKey shows its key id
(4 bytes of CMAC_K(label), which says nothing about K) and hands its bytes out only through
`material()`.
"""

import hmac
import os
import re
import secrets
import struct

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from capshared import linkauth as la
from capshared.linkauth import (
    BAD_TAG, CTR_LIMIT, CTR_SIZE, DIR_TO_BOARD, DIR_TO_HOST, KEY_SIZE, NO_KEY, NONCE_SIZE, OK,
    REPLAY, TAG_SIZE,
)
from capwarden.credentials.store import default_store, read_secret, write_atomic
from capwarden.errors import LinkError, StoreError

__all__ = ["LinkKey", "HostAuth", "ecb", "generate", "read_key", "write_key", "key_for", "key_path", "remember", "forget", "stage", "staged", "promote", "wrap", "known", "OK", "BAD_TAG", "REPLAY",
           "NO_KEY", "TAG_SIZE", "CTR_SIZE", "NONCE_SIZE"]


class LinkKey:
    """A board's 16-byte link key. repr() and str() show only its key id."""

    __slots__ = ("_k", "key_id")

    def __init__(self, material):
        material = bytes(material)
        if len(material) != KEY_SIZE:
            raise ValueError("a link key is %d bytes, not %d" % (KEY_SIZE, len(material)))
        self._k = material
        self.key_id = _cmac(material, la.L_KEYID + bytes(8))[:la.KEY_ID_SIZE]

    def material(self):
        """The key's bytes: for the board's key file and the CMAC, nowhere else."""
        return self._k

    def __repr__(self):
        return "LinkKey(id=%s)" % self.key_id.hex()

    __str__ = __repr__

    def __eq__(self, other):
        return isinstance(other, LinkKey) and hmac.compare_digest(self._k, other._k)

    def __hash__(self):
        return hash(self.key_id)

    def __reduce__(self):
        raise TypeError("a LinkKey is not pickled (it would write the key where nobody guards it)")


def generate():
    """A new random link key."""
    return LinkKey(secrets.token_bytes(KEY_SIZE))


def write_key(path, key):
    """Write `key` to `path`: exactly its 16 bytes (the board's file has the same form), mode
    0600, through a temporary file in the same folder renamed over the old one (a crash
    leaves the old key or the new one). Raises StoreError when the folder cannot be written."""
    try:
        write_atomic(path, key.material(), mode=0o600)
    except OSError as exc:
        raise StoreError("cannot write the link key %s: %s" % (path, exc.strerror or exc)) from None


def read_key(path):
    """The LinkKey in `path`. Raises StoreError when it is missing, readable by others, or not
    a link key file (16 bytes)."""
    if not os.path.exists(path):
        raise StoreError("no link key at %s: 'capwarden flash' makes one for the board" % path)
    data = read_secret(path)
    if len(data) != KEY_SIZE:
        raise StoreError("%s is not a link key (%d bytes, a link key is %d): run 'capwarden link rekey'"
                         % (path, len(data), KEY_SIZE))
    return LinkKey(data)


class _Ecb:
    # An AES-ECB block function for capshared.linkauth on CPython: encrypt(src, dst).
    __slots__ = ("_e", "_d")

    def __init__(self, key):
        c = Cipher(algorithms.AES(bytes(key)), modes.ECB())
        self._e = c.encryptor()
        self._d = c.decryptor()

    def encrypt(self, src, dst):
        dst[0:16] = self._e.update(bytes(src[0:16]))

    def decrypt(self, src, dst):
        dst[0:16] = self._d.update(bytes(src[0:16]))

    def __repr__(self):
        return "_Ecb()"


def ecb(key):
    """The block-function factory capshared.linkauth.LinkAuth takes on CPython (aes=ecb)."""
    return _Ecb(key)


def wrap(old, new):
    """`new`'s 16 bytes encrypted under `old` (AES-128, one block): REKEY's payload. A key is
    uniformly random, so one block of ECB reveals nothing of it without `old`."""
    out = bytearray(16)
    _Ecb(old.material()).encrypt(new.material(), out)
    return bytes(out)


def _cmac(key, data, n=16):
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()[:n]


class HostAuth:
    """The engine's side of one board's link: HELLO nonces, the session, counters.

    seal(frame) -> (ctr, tag); verify(frame, ctr, tag) -> OK, BAD_TAG, REPLAY or NO_KEY, each
    refusal counted (bad_tag, replay, no_key). A new HELLO ends the session for sending. The
    board keeps its session until the host's first frame in the new one arrives (it takes the
    one it proposed then, docs/link-auth.md), so its frames of the previous session are still
    accepted, with that session's own replay counter, after HELLO_R too: until one of the
    board's frames verifies in the new session. One previous session only, never an older one;
    nothing is ever sent in it.
    """

    def __init__(self, key=None):
        self.key = key
        self._bases = {}        # prefix -> CMAC state after it under _bases_of (_mac)
        self._bases_of = key
        self.nh = None
        self._prefix = None
        self._old = None        # (prefix, rx): the session the board may still speak in, or None
        self._tx = 0
        self._rx = 0
        self.bad_tag = 0
        self.replay = 0
        self.no_key = 0
        self.sessions = 0

    def __repr__(self):
        return "HostAuth(key=%r, session=%s)" % (self.key, self._prefix is not None)

    def has_session(self):
        return self._prefix is not None

    def hello(self, frame=None):
        """Start a handshake: a fresh host nonce (returned), the old session ended for sending.
        With the HELLO frame bytes (which must carry the nonce), also returns its tag: (nh, tag)."""
        if self.key is None:
            raise LinkError("no link key for this board: 'capwarden flash' makes one")
        self.nh = os.urandom(NONCE_SIZE)
        self._step_back()
        if frame is None:
            return self.nh
        return self.nh, self.hello_tag(frame)

    def hello_tag(self, frame):
        return self._mac(la.L_HELLO + bytes(24), DIR_TO_BOARD, 0, frame)

    def begin(self, nb, boot_id):
        """Take the session the board proposed in HELLO_R (its nonce and boot id). Verify the
        HELLO_R itself next (verify()); if it fails, end() the session. The previous session is
        still heard until the board speaks in this one (verify)."""
        if self.key is None or self.nh is None:
            raise LinkError("no HELLO sent: no session to begin")
        self._prefix = (la.L_SESSION + self.nh + bytes(nb) + struct.pack("<I", boot_id) + bytes(4))
        self._tx = 0
        self._rx = 0
        self.sessions += 1

    def end(self):
        """Drop the session begin() took (its HELLO_R did not verify): the board never took
        it, so the previous one, if any, is still the board's."""
        self._prefix = None

    def retire(self):
        """Stop sending in this session (the next frame needs a new HELLO) while still taking
        the board's frames of it: a late answer is still the board's."""
        self._step_back()

    def _step_back(self):
        # The current session stops sending and becomes the one still heard, unless the board
        # cannot have taken it yet (not one frame sent in it while an older one is still
        # heard): then the board still speaks the older one, which stays.
        if self._prefix is not None and (self._old is None or self._tx > 0):
            self._old = (self._prefix, self._rx)
        self._prefix = None

    def _mac(self, prefix, d, ctr, frame):
        # CMAC continued from the state after the prefix (a copy of it per frame): the same
        # tag as one CMAC over the whole string, without a new key schedule each time.
        if self._bases_of is not self.key:  # states made under another key are no use
            self._bases, self._bases_of = {}, self.key
        base = self._bases.get(prefix)
        if base is None:
            if len(self._bases) >= 4:       # the session, the one before it, HELLO's
                self._bases.clear()
            base = self._bases[prefix] = cmac.CMAC(algorithms.AES(self.key.material()))
            base.update(prefix)
        c = base.copy()
        c.update(bytes((d,)) + struct.pack("<I", ctr) + bytes(frame))
        return c.finalize()[:TAG_SIZE]

    def seal(self, frame):
        """(counter, tag) for the next frame to the board. Raises LinkError without a session
        or when its counters are spent (a new HELLO is needed)."""
        if self._prefix is None:
            raise LinkError("no authenticated session with the board: HELLO first")
        if self._tx + 1 >= CTR_LIMIT:
            raise LinkError("the link session's counters are spent: HELLO again")
        self._tx += 1
        return self._tx, self._mac(self._prefix, DIR_TO_BOARD, self._tx, frame)

    def verify(self, frame, ctr, tag):
        """A board frame: OK in the current session, or in the previous one while the board may
        still speak it (each with its own counter); else BAD_TAG, REPLAY or NO_KEY, counted."""
        tag = bytes(tag)
        if self._prefix is not None:
            if hmac.compare_digest(self._mac(self._prefix, DIR_TO_HOST, ctr, frame), tag):
                if ctr <= self._rx or ctr >= CTR_LIMIT:
                    self.replay += 1
                    return REPLAY
                if self._rx:
                    # Not the HELLO_R (the session's first frame, sealed in the proposal): the
                    # board has taken this session and never speaks the previous one again.
                    self._old = None
                self._rx = ctr
                return OK
        elif self._old is None:
            self.no_key += 1
            return NO_KEY
        if self._old is not None:
            prefix, rx = self._old
            if hmac.compare_digest(self._mac(prefix, DIR_TO_HOST, ctr, frame), tag):
                if ctr <= rx or ctr >= CTR_LIMIT:
                    self.replay += 1
                    return REPLAY
                self._old = (prefix, ctr)
                return OK
        self.bad_tag += 1
        return BAD_TAG


# ---- where the engine keeps each board's key ---------------------------------------------
# One file per board address in the store's link-keys folder (owner-only, like every secret
# there). A virtual board also registers its key in this process (`remember`), so a test that
# starts one and opens it needs no file lookup.

LINK_KEYS = "link-keys"
_known = {}


def key_path(address, store=None):
    """The engine's key file for the board at `address` (a port or URL)."""
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", address).strip("_") or "board"
    return os.path.join(store or default_store(), LINK_KEYS, name + ".key")


def key_for(address, store=None):
    """The LinkKey of the board at `address`. Raises StoreError (no key: 'capwarden flash')."""
    # The store's file first: another process (capwarden link rekey) may have replaced it.
    path = key_path(address, store)
    key = _known.get(address)
    if key is not None and not os.path.exists(path):
        return key
    if not os.path.exists(path):
        raise StoreError("no link key for the board at %s (looked in %s): 'capwarden flash --port %s --board NAME' "
                         "deploys the agent with a new one" % (address, path, address))
    return read_key(path)


def remember(address, key, store=None, write=True):
    """Record `key` as the link key of the board at `address`: in this process, and (write)
    in the store, owner-only. Raises StoreError."""
    _known[address] = key
    if write:
        path = key_path(address, store)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_key(path, key)


# A rekey in progress: the new key is staged beside the current one (NAME.key.next) before
# REKEY is sent, and promoted over it once the board has answered. A rekey whose answer was
# lost leaves both; open_board then takes the one whose key id the board announces.

def stage(address, key, store=None):
    """Keep `key` as the board's next link key (owner-only) before a rekey. Raises StoreError."""
    path = key_path(address, store) + ".next"
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_key(path, key)


def staged(address, store=None):
    """The staged next key of the board at `address`, or None."""
    path = key_path(address, store) + ".next"
    return read_key(path) if os.path.exists(path) else None


def promote(address, store=None):
    """The staged key becomes the board's key (one rename: a crash leaves one or the other)."""
    path = key_path(address, store)
    try:
        os.replace(path + ".next", path)
    except OSError as exc:
        raise StoreError("cannot make the new link key %s current: %s" % (path, exc.strerror or exc)) from None
    _known[address] = read_key(path)


def known(address):
    """The key this process holds for `address` (remembered or promoted), or None."""
    return _known.get(address)


def forget(address, key, store=None):
    """Drop `key` for `address` (a virtual board stopped): its file too, if it still holds it."""
    if _known.get(address) == key:
        del _known[address]
    path = key_path(address, store)
    for p in (path, path + ".next"):
        try:
            if read_key(p) == key:
                os.unlink(p)
        except (StoreError, OSError):
            pass
