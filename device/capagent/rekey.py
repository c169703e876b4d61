# REKEY (capwarden link rekey; docs/link-auth.md "Rekey"): a new link key, sent encrypted under
# the current one (AES-128, one block), in force once the answer has gone out under the current
# session. A module of its own, imported for the one frame and dropped (capagent.agent): a rekey
# is rare, and the 64 KB heap has no room for code that waits for it. Allocates, once per rekey.
import os

import cryptolib

from capshared import wire as W
from capshared.errors import E_DEV_BAD_MESSAGE
from capshared.limits import HEADER_SIZE


def rekey(link, rid):
    a = link.auth
    dec = link.dec
    if dec.payload_len() != 16 or a.key is None:
        link.error(rid, E_DEV_BAD_MESSAGE, W.REKEY)
        return
    new = bytearray(16)
    # An aes object either encrypts or decrypts: a new one for this block.
    (cryptolib.aes(a.key, 1) if a.aes is None else a.aes(a.key)).decrypt(
        bytes(dec.buf[HEADER_SIZE:HEADER_SIZE + 16]), new)
    # The key file through a temporary one renamed over it: a reset leaves the old key or the new.
    tmp = link.key_file + ".new"
    with open(tmp, "wb") as f:
        f.write(new)
    try:
        os.rename(tmp, link.key_file)
    except OSError:             # a filesystem that does not rename over a file
        os.remove(link.key_file)
        os.rename(tmp, link.key_file)
    e = link.enc
    e.begin(W.REKEY_R, rid)
    link.send()                 # under the current session: the host knows the key is stored
    a.set_key(new)              # every session ends: the host's next frame is a HELLO
