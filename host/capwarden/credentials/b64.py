"""base64url without padding (supplement S1), strict: no padding, no other alphabet."""

import base64
import re

_B64U = re.compile(r"[A-Za-z0-9_-]*\Z")


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    """Bytes of a base64url string without padding. Raises ValueError for anything else."""
    if type(text) is not str or not _B64U.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    # The unused low bits of the last character must be zero (one encoding per byte string).
    rem = len(text) % 4
    if rem and text[-1] not in _CANONICAL_LAST[rem]:
        raise ValueError("non-canonical base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = {2: set(_ALPHABET[::16]), 3: set(_ALPHABET[::4])}
