"""Verification_Key material (S1): import checks and signature verification.

Ed25519 goes through libsodium (PyNaCl): it rejects non-canonical S (S >= L) and small-order
points, and measured faster than OpenSSL here. Key import additionally rejects small-order and
non-canonical public keys outright (attacks.md B15, B16). P-256 goes through `cryptography`:
import rejects points off the curve; signatures are raw r||s (64 bytes, as JWS ES256), r and s
in 1..n-1; DER is refused. High-S is accepted (S1), which is why nothing is keyed on signature
bytes anywhere in capwarden.
"""

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ED25519 = "ed25519"
P256 = "ecdsa-p256-sha256"
ALGORITHMS = (ED25519, P256)
JWS_ALG = {ED25519: "EdDSA", P256: "ES256"}
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class KeyError_(ValueError):
    """Key material that must not be used (wrong size, off the curve, small order)."""


class PublicKey:
    """A checked public key that verifies signatures of its algorithm. Build with load()."""

    __slots__ = ("algorithm", "raw", "_key")

    def __init__(self, algorithm, raw, key):
        self.algorithm = algorithm
        self.raw = raw
        self._key = key

    def verify(self, message, signature):
        """True when `signature` is valid for `message`. Never raises for bad signatures."""
        if type(signature) is not bytes or len(signature) != 64:
            return False
        if self.algorithm == ED25519:
            try:
                self._key.verify(message, signature)
                return True
            except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
                return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < P256_N and 0 < s < P256_N):
            return False
        try:
            self._key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False


def load(algorithm, raw):
    """A PublicKey for raw key material (S1 encodings). Raises KeyError_ when unusable."""
    if type(raw) is not bytes:
        raise KeyError_("key material must be bytes")
    if algorithm == ED25519:
        if len(raw) != 32:
            raise KeyError_("an ed25519 key is 32 bytes, not %d" % len(raw))
        # libsodium: canonical encoding, on the curve, not of small order, in the main subgroup.
        if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
            raise KeyError_("ed25519 key is of small order or not canonically encoded")
        return PublicKey(algorithm, raw, nacl.signing.VerifyKey(raw))
    if algorithm == P256:
        if len(raw) != 65 or raw[0] != 4:
            raise KeyError_("a P-256 key is a 65-byte uncompressed point 04||X||Y")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise KeyError_("P-256 point is not on the curve") from None
        return PublicKey(algorithm, raw, key)
    raise KeyError_("unknown algorithm %r (known: %s)" % (algorithm, ", ".join(ALGORITHMS)))


class PrivateKey:
    """A signing key. Generated or loaded from its 32-byte secret (Ed25519 seed, P-256 scalar)."""

    def __init__(self, algorithm, secret):
        self.algorithm = algorithm
        self.secret = secret
        if algorithm == ED25519:
            self._key = nacl.signing.SigningKey(secret)
            self.public = bytes(self._key.verify_key)
        elif algorithm == P256:
            self._key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
            from cryptography.hazmat.primitives import serialization

            self.public = self._key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        else:
            raise KeyError_("unknown algorithm %r" % (algorithm,))

    @classmethod
    def generate(cls, algorithm):
        if algorithm == ED25519:
            import os

            return cls(algorithm, os.urandom(32))
        if algorithm == P256:
            k = ec.generate_private_key(ec.SECP256R1())
            return cls(algorithm, k.private_numbers().private_value.to_bytes(32, "big"))
        raise KeyError_("unknown algorithm %r (known: %s)" % (algorithm, ", ".join(ALGORITHMS)))

    def sign(self, message):
        """A 64-byte signature: Ed25519, or raw r||s for P-256."""
        if self.algorithm == ED25519:
            return self._key.sign(message).signature
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
