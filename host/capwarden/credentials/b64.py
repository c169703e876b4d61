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
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u_encode(data) != text:  # non-canonical trailing bits
        raise ValueError("non-canonical base64url")
    return data
