"""The host's fast codec must agree with the device's reference framing, byte for byte."""

import os
import random

from hypothesis import given, settings, strategies as st

from capshared import codec, messages
from capshared.framing import FRAME, FrameDecoder, FrameEncoder, cobs_encode
from hypo import examples


def reference_frames(stream):
    dec = FrameDecoder()
    out = []
    for b in stream:
        if dec.feed(b) == FRAME:
            out.append((dec.seq(), dec.mid(), dec.rid(), bytes(dec.buf[4:dec.n])))
    return out


def fast_frames(stream, chunk):
    dec = codec.StreamDecoder()
    out = []
    for i in range(0, len(stream), chunk):
        for f in dec.feed(stream[i:i + chunk]):
            out.append((f.seq, f.mid, f.rid, codec.encode_payload(f.name, f.fields)))
    return out


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=300))
def test_fast_cobs_equals_reference(data):
    ref = bytearray(len(data) + len(data) // 254 + 2)
    n = cobs_encode(data, len(data), ref)
    assert codec._cobs(data) == bytes(ref[:n])
    assert codec._uncobs(bytes(ref[:n])) == data


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(m for m in messages.NAME if messages.FIXED[m] >= 0)),
                          st.integers(1, 65535), st.integers(0, 255), st.binary(max_size=40)), max_size=6),
       st.binary(max_size=30), st.integers(1, 64))
def test_fast_decoder_equals_reference_on_streams(frames, noise, chunk):
    stream = b""
    for mid, rid, seq, tail in frames:
        enc = FrameEncoder()
        enc.seq = seq
        enc.begin(mid, rid)
        fixed = bytes(random.Random(rid).getrandbits(8) for _ in range(messages.FIXED[mid]))
        # u32 fields must stay below 2**30: clear the top bits of every 4-byte field
        body = bytearray(fixed)
        off = 0
        for _f, t in messages.FIELDS[mid]:
            if t == "I":
                body[off + 3] &= 0x3F
            off += messages.SIZES[t]
        payload = bytes(body) + (tail if messages.HAS_TAIL[mid] else b"")
        enc.tail(payload, 0, len(payload))
        n = enc.finish()
        stream += bytes(enc.wire[:n])
        # encode_frame (host) must produce the very same bytes
        name, fields = codec.decode_payload(mid, payload[:enc.n - 4])
        assert codec.encode_frame(name, rid, fields, seq) == bytes(enc.wire[:n])
    stream = noise.replace(b"\x03", b"") + b"\x00" + stream
    assert fast_frames(stream, chunk) == reference_frames(stream)


def test_fast_decoder_counts_corruption():
    f = codec.encode_frame("PING", 9, {"nonce": 77})
    bad = bytearray(f)
    bad[3] ^= 0x40
    dec = codec.StreamDecoder()
    assert dec.feed(bytes(bad) + os.urandom(0) + f)[0].fields == {"nonce": 77}
    assert dec.bad_crc + dec.bad_frame == 1
