"""The host's StreamDecoder and the device's FrameDecoder must agree on every byte stream:
the same frames, and the same count of each kind of bad frame (issue 9, defect 9), whatever
the chunking, over-long partial frames and bare Ctrl-C anywhere. And neither may raise on any
input: random or mutated bytes end as a counted drop (the hypothesis profile sets the count).
"""

import random

from hypothesis import given, settings, strategies as st

from capshared import codec, messages
from capshared.framing import INTERRUPT, NONE, FrameDecoder
from capshared.limits import MAX_COBS, MAX_WIRE
from mp_vectors import device_decode

REQUESTS = sorted(m for m in messages.NAME)


def device_view(stream):
    """(frames, counters) as the board's decoder sees the stream, byte by byte."""
    frames = []

    def frame(dec):
        body = bytes(dec.buf[4:dec.n])
        try:
            codec.decode_payload(dec.mid(), body)
        except codec.CodecError:
            return  # the host counts these as unknown; the board refuses them at dispatch
        frames.append((dec.seq(), dec.mid(), dec.rid(), body))

    return frames, device_decode(stream, frame)


def host_view(stream, cuts):
    dec = codec.StreamDecoder()
    frames = []
    prev = 0
    for c in sorted(set(cuts)) + [len(stream)]:
        for f in dec.feed(stream[prev:c]):
            frames.append((f.seq, f.mid, f.rid, codec.encode_payload(f.name, f.fields)))
        prev = c
    return frames, (dec.bad_crc, dec.bad_frame, dec.overrun, dec.interrupts)


def a_frame(rnd, mid):
    payload = bytearray(rnd.getrandbits(8) for _ in range(messages.FIXED[mid]))
    off = 0
    for _f, t in messages.FIELDS[mid]:
        if t == "I":
            payload[off + 3] &= 0x3F
        off += messages.SIZES[t]
    if messages.HAS_TAIL[mid]:
        payload += bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 40)))
    payload = bytes(payload[:114])
    return codec.frame_bytes(mid, rnd.randrange(1, 65536), payload, rnd.randrange(256))


# Pieces a stream is made of: good frames, and the ways a line goes wrong.
piece = st.one_of(
    st.tuples(st.just("frame"), st.sampled_from(REQUESTS)),
    st.tuples(st.just("noise"), st.binary(max_size=40)),
    st.tuples(st.just("long"), st.integers(MAX_COBS - 3, 3 * MAX_WIRE)),   # an over-long partial
    st.tuples(st.just("escapes"), st.integers(1, 200)),                    # runs of escape pairs
    st.tuples(st.just("ctrlc"), st.just(0)),
    st.tuples(st.just("delim"), st.just(0)),
    st.tuples(st.just("bitflip"), st.sampled_from(REQUESTS)),
)


def build(pieces, seed):
    rnd = random.Random(seed)
    out = bytearray()
    for kind, arg in pieces:
        if kind == "frame":
            out += a_frame(rnd, arg)
        elif kind == "noise":
            out += arg
        elif kind == "long":
            out += bytes(rnd.choice(b"\x01\x05\x1b\x23\x3b\x41\xfe") for _ in range(arg))
        elif kind == "escapes":
            out += b"\x1b\x23" * arg
        elif kind == "ctrlc":
            out += b"\x03"
        elif kind == "delim":
            out += b"\x00"
        else:
            f = bytearray(a_frame(rnd, arg))
            k = rnd.randrange(len(f))
            f[k] ^= 1 << rnd.randrange(8)
            out += f
    return bytes(out)


@settings(deadline=None)
@given(st.lists(piece, max_size=12), st.integers(0, 2 ** 32), st.lists(st.integers(0, 4000), max_size=12))
def test_host_and_device_decoders_agree_on_any_stream(pieces, seed, cuts):
    stream = build(pieces, seed) + b"\x00"   # a last delimiter settles the last frame on both
    assert host_view(stream, cuts) == device_view(stream)


@settings(deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8))
def test_random_bytes_are_counted_never_raised(data, cuts):
    stream = data + b"\x00"
    assert host_view(stream, cuts) == device_view(stream)


@settings(deadline=None)
@given(st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=4), st.integers(0, 2 ** 32),
       st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=6),
       st.lists(st.integers(0, 1000), max_size=6))
def test_mutated_frames_are_counted_never_raised(mids, seed, edits, cuts):
    rnd = random.Random(seed)
    stream = bytearray(b"".join(a_frame(rnd, m) for m in mids))
    for pos, val in edits:
        stream[pos % len(stream)] = val
    stream = bytes(stream) + b"\x00"
    assert host_view(stream, cuts) == device_view(stream)


def test_defect_9_frame_then_long_partial_in_one_read_keeps_the_frame():
    # A reply, then the start of a boot log longer than any frame, in the same read.
    reply = codec.encode_frame("PING_R", 7, {"nonce": 1, "mem_free": 2, "mem_alloc": 3, "uptime_ms": 4})
    log = b"MicroPython v1.24 boot log " * 12          # 324 bytes, no delimiter yet
    dec = codec.StreamDecoder()
    got = dec.feed(reply + log)
    assert [f.name for f in got] == ["PING_R"]
    assert dec.overrun == 1
    # The rest of the log, then a good frame: the log counts once, the frame arrives.
    got = dec.feed(log + b"\x00" + reply)
    assert [f.name for f in got] == ["PING_R"] and dec.overrun == 1


def test_defect_9_device_hears_ctrl_c_while_discarding_a_bad_frame():
    dec = FrameDecoder()
    for b in b"\x05\x1b\x41":        # a bad escape: the frame is being discarded
        assert dec.feed(b) == NONE
    assert dec.bad_frame == 1
    assert dec.feed(0x03) == INTERRUPT
    over = FrameDecoder()
    for b in b"\x05" * (MAX_COBS + 5):  # an over-long frame, discarded
        over.feed(b)
    assert over.overrun == 1 and over.feed(0x03) == INTERRUPT


def test_lone_escape_before_a_delimiter_counts_on_both():
    assert device_view(b"\x1b\x00")[1] == host_view(b"\x1b\x00", [])[1] == (0, 1, 0, 0)


def host_counts(stream, chunk):
    dec = codec.StreamDecoder()
    frames = []
    for i in range(0, len(stream), chunk):
        frames += [[f.mid, f.rid, f.seq] for f in dec.feed(stream[i:i + chunk])]
    return {"frames": frames, "bad_crc": dec.bad_crc, "bad_frame": dec.bad_frame, "overrun": dec.overrun,
            "interrupts": dec.interrupts}


def stream_vectors():
    import mp_vectors
    return [{"seed": s, "expect": host_counts(mp_vectors.make_stream(s), 1 + s % 97)} for s in range(1, 41)]


def test_stream_vectors_are_what_the_host_decodes():
    """vectors.json "streams" (checked on the board's decoder under MicroPython by
    mp_vectors) is what the host decodes, read in chunks of every size."""
    import json
    import os

    with open(os.path.join(os.path.dirname(__file__), "vectors.json")) as f:
        stored = json.load(f)["streams"]
    assert stored == stream_vectors(), "regenerate: python tests/shared/test_framing_agree.py"
    assert sum(len(v["expect"]["frames"]) for v in stored) > 20
    assert all(sum(v["expect"][k] for v in stored) > 0 for k in ("bad_crc", "bad_frame", "overrun", "interrupts"))


if __name__ == "__main__":
    import json
    import os
    import sys

    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
    p = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    with open(p) as f:
        v = json.load(f)
    v["streams"] = stream_vectors()
    with open(p, "w") as f:
        json.dump(v, f, indent=1)
        f.write("\n")
