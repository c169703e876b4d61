"""The descriptor fast path against the reference parser.

Every test runs twice: with the scanner as installed (compiled by mypyc when the build could)
and with its source, so that neither can drift from the reference.

The fast path (credentials/fastparse.py) may only ever accept a subset of what the reference
parser accepts, with identical fields, and it must accept the common valid shapes (or the
benchmark measures the wrong thing). Encodings are produced here by a small test encoder that
can write every non-deterministic form S1 forbids: non-minimal heads, indefinite lengths,
duplicate keys, tags (bignums, value sharing), trailing bytes and reordered keys.
"""

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from capwarden.credentials import fastparse, memo, model
from capwarden.credentials.validate import parse_descriptor, parse_descriptor_reference
from capwarden.errors import CapError
from credrig import World

SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck))   # counts: the profile (tests/conftest.py)
FIELDS = ("algorithm", "key_id", "signature", "credential_id", "issuer_id", "subject", "terminal_id", "issued_at",
          "not_before", "not_after", "grantor_id", "metadata", "convertible", "raw", "signed_bytes")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(str(tmp_path_factory.mktemp("fast")))


SOURCE = fastparse.load_source(fastparse.cborscan.__file__.rsplit("/", 1)[0] + "/cborscan.py")


@pytest.fixture(autouse=True, params=["installed", "source"])
def scanner(request, monkeypatch):
    if request.param == "source":
        monkeypatch.setattr(fastparse, "_scan", SOURCE.scan_descriptor)
    return request.param


def test_the_source_scanner_is_the_source():
    assert SOURCE.__file__.endswith("cborscan.py")
    assert SOURCE.MAX_FILE == model.MAX_DESCRIPTOR and SOURCE.MAX_GRANTS == model.MAX_GRANTS


def same(a, b):
    for f in FIELDS:
        assert getattr(a, f) == getattr(b, f), f
    assert [(g.resource_pattern, g.modes, g.constraints, g.parsed, g.mask) for g in a.grants] == \
        [(g.resource_pattern, g.modes, g.constraints, g.parsed, g.mask) for g in b.grants]


def reference(data):
    try:
        return parse_descriptor_reference(data)
    except CapError as exc:
        assert exc.code == "E_DESCRIPTOR_MALFORMED"
        return None


def agrees(data):
    """The property: fast accepts => reference accepts the same; reference refuses => fast refuses."""
    fast = fastparse.descriptor(data)
    ref = reference(data)
    if fast is not None:
        assert ref is not None, "the fast path accepted what the reference parser refuses"
        same(fast, ref)
    return fast, ref


# ---- the shapes the fast path must take ------------------------------------------------------
def shapes(w):
    yield w.descriptor()
    yield w.descriptor(key=w.p256)
    yield w.descriptor(grants=w.grants() + w.grants("sim/led", ("write",)) + w.grants("sim/**", ("read",)))
    yield w.descriptor(grantor_id="owner:alice")
    yield w.descriptor(metadata={"origin": "x", "b": "y", "aa": "z"})
    yield w.descriptor(grantor_id="owner:alice", metadata={"note": "ünïcode ok"})
    yield w.descriptor(grants=[{"resource_pattern": w.tid + "/sim/*/x", "modes": ["configure", "read", "write",
                                                                                   "execute"]}])


def test_common_valid_shapes_take_the_fast_path_with_the_reference_fields(world):
    for data in shapes(world):
        fast, ref = agrees(data)
        assert fast is not None and ref is not None
        assert parse_descriptor(data).credential_id == ref.credential_id


def test_valid_shapes_left_to_the_reference_parser(world):
    # Constraints (chapter 7) and text that is not printable are valid, and rare: the reference
    # parser takes them, and validation then treats them as it always has.
    w = world
    for data in (w.descriptor(grants=[dict(w.grants()[0], constraints={"max_rate": "1"})]),
                 w.descriptor(grantor_id="owner:\u00a0alice")):
        fast, ref = agrees(data)
        assert fast is None and ref is not None
        assert parse_descriptor(data).credential_id == ref.credential_id


# ---- a test encoder that can write what S1 forbids ---------------------------------------------
def head(major, n, width=None):
    """A CBOR head; width 0 means the one-byte form, 1/2/4/8 the longer ones (maybe non-minimal)."""
    if width is None or n >= 256 ** width:   # a width too small for n: the shortest form
        width = 0 if n < 24 else 1 if n < 256 else 2 if n < 65536 else 4 if n < 2 ** 32 else 8
    if width == 0:
        return bytes([major << 5 | n])
    code = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | code]) + n.to_bytes(width, "big")


class Enc:
    """Encodes like the deterministic encoder, except at item number `at` where it applies `how`."""

    def __init__(self, at, how):
        self.at = at
        self.how = how
        self.count = 0

    def __call__(self, v):
        n = self.count
        self.count += 1
        how = self.how if n == self.at else None
        if how == "tag":  # wrap in a harmless-looking tag (e.g. 55799, self-described CBOR)
            return b"\xd9\xd9\xf7" + self.plain(v, None)
        if how == "share" and type(v) in (str, bytes, list, dict):
            return b"\xd8\x1c" + self.plain(v, None)   # tag 28: value sharing
        return self.plain(v, how)

    def plain(self, v, how):
        # wide1..wide8: the head's argument in 1, 2, 4 or 8 bytes, whether or not it needs them.
        wide = int(how[4:]) if how and how.startswith("wide") else None
        t = type(v)
        if t is int:
            if how == "bignum" and v >= 0:
                b = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")
                return b"\xc2" + head(2, len(b)) + b
            return head(0, v, wide) if v >= 0 else head(1, -1 - v, wide)
        if t is bytes or t is str:
            raw = v if t is bytes else v.encode()
            major = 2 if t is bytes else 3
            if how == "indefinite":
                return bytes([major << 5 | 31]) + head(major, len(raw)) + raw + b"\xff"
            return head(major, len(raw), wide) + raw
        if t is list:
            body = b"".join(self(x) for x in v)
            if how == "indefinite":
                return b"\x9f" + body + b"\xff"
            return head(4, len(v), wide) + body
        if t is dict:
            items = list(v.items())
            if how == "reorder" and len(items) > 1:
                items = items[1:] + items[:1]
            body = b"".join(self(k) + self(x) for k, x in items)
            count = len(items)
            if how == "duplicate":
                k, x = items[0]
                body += self(k) + self(x)
                count += 1
            if how == "indefinite":
                return b"\xbf" + body + b"\xff"
            return head(5, count, wide) + body
        raise TypeError(t)


def test_the_test_encoder_reproduces_the_deterministic_encoding(world):
    for data in shapes(world):
        assert Enc(-1, None)(cbor2.loads(data)) == data


HOWS = ("wide1", "wide2", "wide4", "wide8", "indefinite", "reorder", "duplicate", "tag", "share", "bignum")


@SETTINGS
@given(at=st.integers(0, 80), how=st.sampled_from(HOWS), which=st.integers(0, 6), trailing=st.booleans())
def test_no_forbidden_encoding_takes_the_fast_path(world, at, how, which, trailing):
    data = list(shapes(world))[which]
    enc = Enc(at, how)
    again = enc(cbor2.loads(data)) + (b"\x00" if trailing else b"")
    fast, ref = agrees(again)
    if again != data:
        assert fast is None and ref is None


def test_each_forbidden_form_is_refused_somewhere(world):
    # Not vacuous: every transformation changes the bytes at some item of the descriptor.
    data = world.descriptor(grantor_id="owner:alice", metadata={"a": "b", "c": "d"})
    obj = cbor2.loads(data)
    for how in HOWS:
        changed = [Enc(at, how)(obj) for at in range(60)]
        assert any(c != data for c in changed), how
        for c in changed:
            if c != data:
                assert fastparse.descriptor(c) is None and reference(c) is None, how


def test_every_count_byte_changed(world):
    # Every byte that could be the head of a map or an array (the payload, grants, a grant, its
    # modes, metadata, the signature map among them) set to every other count of either type: a
    # count that does not match what follows makes a different CBOR item, which the reference
    # refuses, whatever the bytes after it look like.
    data = world.descriptor(grants=world.grants() * 2, grantor_id="owner:alice", metadata={"a": "b"})
    places = [i for i, b in enumerate(data) if 0x80 <= b <= 0xbf]
    assert len(places) >= 6
    refused = 0
    for i in places:
        for b in range(0x80, 0xc0):
            if b != data[i]:
                fast, ref = agrees(data[:i] + bytes([b]) + data[i + 1:])
                refused += ref is None
    assert refused > 6 * 60


def test_small_integers_in_longer_heads(world):
    # Timestamps of every head size (0, 30, 300, 70000) written with every longer head.
    for stamps in ((0, 30, 300), (30, 300, 70000), (0, 0, 2 ** 40)):
        data = world.descriptor(issued_at=stamps[0], not_before=stamps[1], not_after=stamps[2])
        assert fastparse.descriptor(data) is not None
        obj = cbor2.loads(data)
        for how in ("wide1", "wide2", "wide4", "wide8"):
            for at in range(40):
                c = Enc(at, how)(obj)
                if c != data:
                    assert fastparse.descriptor(c) is None and reference(c) is None, (stamps, how, at)


def test_a_bignum_timestamp_is_not_an_integer_of_the_same_value(world):
    # A timestamp past 2**32 written as tag 2 is two bytes shorter than its deterministic form,
    # so a check by length alone would be fooled; the fast path compares bytes.
    data = world.descriptor(not_after=2 ** 33)
    obj = cbor2.loads(data)
    for at in range(60):
        c = Enc(at, "bignum")(obj)
        if c != data:
            assert fastparse.descriptor(c) is None and reference(c) is None


# ---- values of the wrong type or shape, deterministically encoded ---------------------------
def sign_any(w, payload):
    """Signed over plain cbor2's canonical encoding, whatever the types (the project's encoder
    would refuse to write most of these)."""
    sig = w.ed.private.sign(cbor2.dumps(payload, canonical=True))
    return cbor2.dumps({"version": 1, "payload": payload, "signature": {
        "algorithm": w.ed.algorithm, "key_id": w.ed.key_id, "signature_value": sig}}, canonical=True)


WRONG = (None, True, 1.5, -1, 0, 2 ** 53, 2 ** 64 - 1, "", "x" * 300, "a\x00b", "a\u202eb", b"", b"\x00" * 16,
         [], [1], {}, {"a": 1})


@SETTINGS
@given(field=st.sampled_from(["descriptor_id", "issuer_id", "subject_fay_id", "terminal_id", "grants", "issued_at",
                              "not_before", "not_after", "grantor_id", "metadata", "extra"]),
       value=st.sampled_from(WRONG))
def test_wrong_payload_values(world, field, value):
    payload = cbor2.loads(cbor2.dumps(world.payload()))
    payload[field] = value
    agrees(sign_any(world, payload))


@SETTINGS
@given(index=st.integers(0, 2), field=st.sampled_from(["resource_pattern", "modes", "constraints", "x"]),
       value=st.sampled_from(WRONG + (["read", "read"], ["READ"], ["read", 1], ["read"] * 5, "t/../x")))
def test_wrong_grant_values(world, index, field, value):
    payload = cbor2.loads(cbor2.dumps(world.payload(grants=world.grants() * 3)))
    payload["grants"][index][field] = value
    agrees(sign_any(world, payload))


@SETTINGS
@given(pos=st.integers(0, 10 ** 6), byte=st.integers(0, 255), cut=st.integers(0, 10 ** 6), which=st.integers(0, 6))
def test_byte_mutations(world, pos, byte, cut, which):
    good = bytearray(list(shapes(world))[which])
    good[pos % len(good)] = byte
    agrees(bytes(good[: cut % len(good)]) if cut % 3 == 0 else bytes(good))


def test_envelope_variants(world):
    data = world.descriptor()
    obj = cbor2.loads(data)
    for mutate in (lambda o: o.update(version=2), lambda o: o.update(version=True), lambda o: o.pop("version"),
                   lambda o: o["signature"].update(algorithm="none"),
                   lambda o: o["signature"].update(signature_value=b"\x00" * 63),
                   lambda o: o["signature"].update(key_id="k\n"), lambda o: o["signature"].update(extra=1)):
        o = cbor2.loads(data)
        mutate(o)
        again = cbor2.dumps(o, canonical=True)
        fast, ref = agrees(again)
        assert fast is None and ref is None
    # The size limit comes before decoding, in both.
    big = data + b"\x00" * (model.MAX_DESCRIPTOR + 1 - len(data))
    assert fastparse.descriptor(big) is None and reference(big) is None
    assert fastparse.descriptor(bytearray(data)) is None   # bytes only; the reference takes the rest
    assert reference(bytearray(data)) is not None


def test_a_compiled_scanner_older_than_its_source_is_not_used(monkeypatch):
    mod, compiled = fastparse._load_scanner()
    assert compiled == mod.__file__.endswith(".so") and compiled == fastparse.COMPILED
    if not compiled:
        pytest.skip("the scanner is not compiled here (no mypyc build, or an edit made it older than its "
                    "source): there is no compiled module to pass over; `make` builds it")
    # The source edited after the build: one second newer than the compiled module, however long
    # ago that was built (a fixed offset failed once the build was hours newer than the source).
    real = fastparse.os.path.getmtime
    built = real(mod.__file__)
    monkeypatch.setattr(fastparse.os.path, "getmtime", lambda p: built + 1 if p.endswith(".py") else real(p))
    again, compiled_again = fastparse._load_scanner()
    assert not compiled_again and again.__file__.endswith("cborscan.py")


# ---- random valid descriptors: the fast path takes them, with the reference's fields ----------
_segment = st.text("abcXYZ019._-", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs", "Cf", "Co", "Cn")),
                     min_size=1, max_size=256)


@SETTINGS
@given(segments=st.lists(st.lists(_segment, min_size=1, max_size=4), min_size=1, max_size=30),
       modes=st.lists(st.permutations(["read", "write", "execute", "configure"]), min_size=30, max_size=30),
       counts=st.lists(st.integers(1, 4), min_size=30, max_size=30),
       issuer=_printable, grantor=st.none() | _printable,
       metadata=st.none() | st.dictionaries(st.text(min_size=1, max_size=64), st.text(max_size=300), max_size=30),
       stamps=st.tuples(st.integers(0, 2 ** 53 - 3), st.integers(0, 2 ** 20), st.integers(1, 2 ** 40)),
       p256=st.booleans())
def test_random_valid_descriptors(world, segments, modes, counts, issuer, grantor, metadata, stamps, p256):
    w = world
    grants = [{"resource_pattern": w.tid + "/" + "/".join(seg), "modes": modes[k][:counts[k]]}
              for k, seg in enumerate(segments)]
    iat = stamps[0]
    nbf = min(iat + stamps[1], 2 ** 53 - 2)
    exp = min(nbf + stamps[2], 2 ** 53 - 1)
    data = w.descriptor(key=w.p256 if p256 else None, grants=grants, issuer_id=issuer, grantor_id=grantor,
                        metadata=metadata or None, issued_at=iat, not_before=nbf, not_after=exp)
    fast, ref = agrees(data)
    assert ref is not None
    assert fast is not None


def test_memo_tables_stay_small_whatever_is_asked(world):
    from capwarden.credentials import jws, validate

    for k in range(50):
        d = world.check_d(world.descriptor(), resource="x" * 100000 + str(k))
        assert not d.granted and d.error_code == "E_DESCRIPTOR_RESOURCE_NOT_GRANTED"
    assert all(type(r) is not str or len(r) <= 256 for r in validate._RESOURCES)
    for table in (fastparse._GRANTS, fastparse._TEXTS, fastparse._FAYS, fastparse._TERMINALS, fastparse._KEY_IDS,
                  validate._RESOURCES, jws._HEADERS):
        assert len(table) <= memo.LIMIT


@SETTINGS
@given(raw=st.binary(min_size=16, max_size=16))
def test_uuid_text_is_the_rfc_text_form(raw):
    import uuid

    from capwarden.credentials.ids import uuid_text

    assert uuid_text(raw) == str(uuid.UUID(bytes=raw))
