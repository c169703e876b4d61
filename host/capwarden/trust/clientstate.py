"""What a terminal's trust client keeps between runs (capwarden.trust.client), in one folder.

    STATE_DIR/            mode 0700
      state.json          0600: base URL, terminal id, token, the RA anchor from enrollment,
                          the last key set verified (the signed document as received), the
                          key-set version held and the one acknowledged, the revocation-list
                          version held, the key-set version current at registration
      device.key          0600: the device key (credentials SigningKey format), made once
      device.pub.json     its public part

Every file is written atomically (credentials.store.write_atomic), so a crash leaves the old
state or the new one. state.json holds the token: it is refused when readable by others, as
every secret file of the store is. Versions only move forward in it (the client's rule), and
one is recorded only after what it brought was handed to the caller.
"""

import os
import stat

from capwarden.credentials import keys
from capwarden.credentials.issue import SigningKey
from capwarden.credentials.store import read_json, write_json
from capwarden.errors import StoreError
from capwarden.trust import keysets

STATE = "state.json"
DEVICE_KEY = "device"          # device.key / device.pub.json
STATE_FORMAT = 1
FIELDS = ("format", "base_url", "anchor", "terminal_id", "token", "registered_key_set", "keyset",
          "keyset_version", "keyset_acked", "revocations_version")


def open_folder(state_dir):
    """Create `state_dir` (mode 0700) if needed and make it owner-only."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)


def load(state_dir, base_url, anchor):
    """The state in `state_dir`, or a new one for `base_url` trusting `anchor` (the RA public
    keys handed over at enrollment) when there is none. Raises StoreError (unreadable, corrupt,
    readable by others, another service's), SignedDocError (a malformed anchor), ValueError
    (no state and no anchor)."""
    path = os.path.join(state_dir, STATE)
    if not os.path.exists(path):
        if anchor is None:
            raise ValueError("a new trust client needs the RA's public keys (anchor) from enrollment")
        keysets.ra_trust(anchor)    # a malformed anchor fails here, not at the first fetch
        return {"format": STATE_FORMAT, "base_url": base_url, "anchor": anchor, "terminal_id": None,
                "token": None, "registered_key_set": 0, "keyset": None, "keyset_version": 0, "keyset_acked": 0,
                "revocations_version": 0}
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError("%s is readable by others (mode %o): chmod 600 it" % (path, mode & 0o777))
    st = read_json(path, kind=dict)
    if st.get("format") != STATE_FORMAT or set(st) != set(FIELDS):
        raise StoreError("%s is not a trust client state of format %d" % (path, STATE_FORMAT))
    if st["base_url"] != base_url:
        raise StoreError("%s belongs to the trust service %s, not %s" % (path, st["base_url"], base_url))
    return st


def save(state_dir, state):
    write_json(os.path.join(state_dir, STATE), state, mode=0o600)


def device_key(state_dir, now):
    """The device key in `state_dir` (a SigningKey), generated (Ed25519) the first time."""
    prefix = os.path.join(state_dir, DEVICE_KEY)
    if not os.path.exists(prefix + ".key"):
        SigningKey.generate(keys.ED25519, "device", "device").save(prefix, int(now))
    return SigningKey.load(prefix + ".key")
