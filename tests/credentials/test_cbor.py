"""Deterministic CBOR (S1): cbor2's canonical mode pinned against RFC 8949, and strict decoding."""

import cbor2
import pytest

from capwarden.credentials import cbor

# RFC 8949 Appendix A: the encodings that are deterministic and of types we allow.
APPENDIX_A = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
    (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"), (-1, "20"), (-10, "29"), (-100, "3863"),
    (-1000, "3903e7"), (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"), ("", "60"), ("a", "6161"),
    ("IETF", "6449455446"), ("\"\\", "62225c"), ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"), (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, "a56161614161626142616361436164614461656145"),
]


@pytest.mark.parametrize("value,hexa", APPENDIX_A)
def test_rfc8949_appendix_a_vectors_encode_and_decode(value, hexa):
    assert cbor.encode(value).hex() == hexa
    assert cbor.decode(bytes.fromhex(hexa), 4096) == value


def test_cbor2_canonical_equals_bytewise_order_for_text_keys():
    """RFC 8949 4.2.1 sorts by encoded bytes; cbor2 sorts length-first; equal for text keys."""
    keys = ["b", "a", "aa", "z", "zz", "aaa", "x" * 23, "y" * 24, "w" * 24, "v" * 300, "\u00e9", "B", "_"]
    enc = cbor.encode({k: 0 for k in keys})
    by_bytes = sorted(keys, key=lambda k: cbor2.dumps(k))
    assert list(cbor2.loads(enc).keys()) == by_bytes


def test_integer_keys_are_refused_where_the_orders_differ():
    # For 100 and -1 cbor2 (length-first) and RFC 8949 (bytewise) disagree: we admit text keys only.
    with pytest.raises(cbor.CborError):
        cbor.encode({100: 1, -1: 2})
    with pytest.raises(cbor.CborError):
        cbor.decode(bytes.fromhex("a2186401 2002".replace(" ", "")), 100)


@pytest.mark.parametrize("hexa,why", [
    ("a2616201616102", "keys out of order"),
    ("a2647465737412647465737413", "duplicate key"),
    ("1b000000000000000b", "non-minimal integer"),
    ("5f42010243030405ff", "indefinite bytes"),
    ("9f0102ff", "indefinite array"),
    ("bf616101ff", "indefinite map"),
    ("bf6161ff", "truncated indefinite map"),
    ("0102", "trailing bytes"),
    ("c11a514b67b0", "tag 1"),
    ("d8201a514b67b0", "unknown tag"),
    ("f93c00", "half float"),
    ("fb3ff199999999999a", "double"),
    ("f97e00", "NaN"),
    ("f97c00", "infinity"),
    ("f5", "true"),
    ("f6", "null"),
    ("c249010000000000000000", "bignum"),
    ("6261", "truncated text"),
    ("62c328", "invalid UTF-8"),
    ("", "empty"),
    ("9b00000000ffffffff", "huge declared length"),
])
def test_strict_decoder_rejects(hexa, why):
    with pytest.raises(cbor.CborError):
        cbor.decode(bytes.fromhex(hexa), 4096)


def test_size_limit_checked_before_decoding():
    with pytest.raises(cbor.CborError, match="more than"):
        cbor.decode(b"\x40" * 5000, 4096)


def test_recursion_bomb_is_refused():
    with pytest.raises(cbor.CborError):
        cbor.decode(b"\x81" * 2000 + b"\x00", 4096)
