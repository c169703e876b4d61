# The shared link vectors, checked by code that runs under both CPython and MicroPython.
# test_shared.py runs each test_ here in-process (CPython) and under the unix port.
import json


from capshared import messages
from capshared.framing import BAD, FRAME, INTERRUPT, NONE, FrameDecoder, FrameEncoder, cobs_decode, cobs_encode, crc16
from capshared.limits import MAX_WIRE

try:
    import micropython
except ImportError:
    micropython = None


def _vectors():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    with open(here + "/vectors.json") as f:
        return json.load(f)


def _unhex(s):
    return bytes.fromhex(s) if hasattr(bytes, "fromhex") else bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def test_crc16_check_values():
    for v in _vectors()["crc16"]:
        d = _unhex(v["data"])
        assert crc16(d, 0, len(d)) == v["crc"], v


def test_cobs_examples_both_ways():
    for v in _vectors()["cobs"]:
        d = _unhex(v["data"])
        e = _unhex(v["encoded"])
        out = bytearray(len(d) + len(d) // 254 + 2)
        n = cobs_encode(d, len(d), out)
        assert bytes(out[:n]) == e, v["data"][:16]
        buf = bytearray(e)
        m = cobs_decode(buf, len(buf))
        assert m == len(d) and bytes(buf[:m]) == d


def _encode_from_table(enc, v):
    # The device's way: field by field from the table, into preallocated buffers.
    mid = messages.ID[v["name"]]
    enc.seq = v["seq"]
    enc.begin(mid, v["rid"])
    for fname, ftype in messages.FIELDS[mid]:
        val = v["fields"].get(fname)
        if ftype == "B":
            enc.u8(val)
        elif ftype == "H":
            enc.u16(val)
        elif ftype == "I":
            enc.u32(val)
        else:
            t = _unhex(val or "")
            enc.tail(t, 0, len(t))
    return enc.finish()


def test_frames_encode_to_vectors():
    enc = FrameEncoder()
    for v in _vectors()["frames"]:
        n = _encode_from_table(enc, v)
        assert bytes(enc.wire[:n]) == _unhex(v["wire"]), v["name"]
        w = enc.wire
        for i in range(n):
            assert w[i] != 0x03, "Ctrl-C on the wire"
            assert (w[i] == 0) == (i == n - 1), "delimiter inside a frame"


def test_frames_decode_from_vectors():
    dec = FrameDecoder()
    for v in _vectors()["frames"]:
        wire = _unhex(v["wire"])
        res = [dec.feed(b) for b in wire]
        assert res[-1] == FRAME and FRAME not in res[:-1], v["name"]
        mid = messages.ID[v["name"]]
        assert dec.mid() == mid and dec.rid() == v["rid"] and dec.seq() == v["seq"]
        offs = messages.OFFSETS[v["name"]]
        for fname, ftype in messages.FIELDS[mid]:
            if ftype == "B":
                assert dec.u8(offs[fname]) == v["fields"][fname]
            elif ftype == "H":
                assert dec.u16(offs[fname]) == v["fields"][fname]
            elif ftype == "I":
                assert dec.u32(offs[fname]) == v["fields"][fname]
            else:
                t = _unhex(v["fields"].get(fname) or "")
                assert bytes(dec.buf[4 + offs[fname]:4 + dec.payload_len()]) == t


def test_resync_after_garbage_and_corruption():
    dec = FrameDecoder()
    wire = _unhex(_vectors()["frames"][2]["wire"])
    bad = bytearray(wire)
    bad[7] ^= 0x40  # corrupt a data byte (not a COBS code): the CRC must catch it
    stream = b"\x11\x22\x00" + bytes(bad) + bytes(300) + b"\xff" * 400 + b"\x00" + wire
    frames = 0
    for b in stream:
        r = dec.feed(b)
        if r == FRAME:
            frames += 1
    assert frames == 1
    assert dec.bad_crc == 1
    assert dec.bad_frame >= 1 and dec.overrun == 1


def test_bare_ctrl_c_is_an_interrupt_not_a_frame():
    dec = FrameDecoder()
    assert dec.feed(0x03) == INTERRUPT
    wire = _unhex(_vectors()["frames"][0]["wire"])
    res = [dec.feed(b) for b in wire]
    assert res[-1] == FRAME


def test_encode_decode_allocate_nothing():
    if micropython is None:
        return  # the allocation check needs MicroPython's heap_lock
    enc = FrameEncoder()
    dec = FrameDecoder()
    v = _vectors()["frames"][4]
    args = _unhex(v["fields"]["args"])
    mid = messages.ID[v["name"]]
    _encode_from_table(enc, v)  # warm up: first calls may intern or cache
    micropython.heap_lock()
    try:
        for _ in range(50):
            enc.begin(mid, 1)
            enc.u8(3)
            enc.u32(0x031B0303)
            enc.u32(0x1B1B)
            enc.u8(3)
            enc.tail(args, 0, len(args))
            n = enc.finish()
            got = 0
            for i in range(n):
                if dec.feed(enc.wire[i]) == FRAME:
                    got += dec.u32(1) == 0x031B0303
            assert got == 1
    finally:
        micropython.heap_unlock()


def test_max_frame_fits_wire_limit():
    enc = FrameEncoder()
    enc.begin(0x15, 3)
    three = b"\x03" * 200
    enc.tail(three, 0, len(three))
    n = enc.finish()
    assert n <= MAX_WIRE
    dec = FrameDecoder()
    r = [dec.feed(enc.wire[i]) for i in range(n)]
    assert r[-1] == FRAME


def test_ctrl_c_is_heard_while_a_bad_frame_is_discarded():
    # Issue 9, defect 9: the decoder ignored a bare Ctrl-C while it dropped a bad frame.
    dec = FrameDecoder()
    for b in b"\x05\x1b\x41\x07":      # a bad escape: the rest of the frame is discarded
        dec.feed(b)
    assert dec.bad_frame == 1
    assert dec.feed(0x03) == INTERRUPT
    long = FrameDecoder()
    for _ in range(200):                # over-long: discarded up to the next delimiter
        long.feed(0x41)
    assert long.overrun == 1 and long.feed(0x03) == INTERRUPT
    wire = _unhex(_vectors()["frames"][0]["wire"])
    assert [long.feed(b) for b in wire][-1] == FRAME   # and the next frame is whole


def test_lone_escape_before_the_delimiter_is_a_bad_frame():
    dec = FrameDecoder()
    dec.feed(0x1B)
    dec.feed(0x00)
    assert dec.bad_frame == 1


def make_stream(seed):
    # A seeded line: good frames, flipped bits, noise, over-long runs, escapes, Ctrl-C. A
    # small generator both Pythons compute alike (no big ints, no random module).
    frames = [_unhex(v["wire"]) for v in _vectors()["frames"]]
    x = seed
    out = bytearray()
    for _ in range(14):
        x = (x * 75 + 74) % 65537
        kind = x % 7
        x = (x * 75 + 74) % 65537
        if kind == 0:
            out += frames[x % len(frames)]
        elif kind == 1:
            f = bytearray(frames[x % len(frames)])
            f[x % (len(f) - 1)] ^= 1 << (x % 8)
            out += f
        elif kind == 2:
            for _k in range(x % 40):
                x = (x * 75 + 74) % 65537
                out.append(x & 0xFF)
        elif kind == 3:
            out += b"\x41" * (100 + x % 300)
        elif kind == 4:
            out += b"\x1b\x23" * (x % 140)
        elif kind == 5:
            out.append(0x03)
        else:
            out.append(0x00)
    out.append(0x00)
    return bytes(out)


def device_decode(stream, on_frame):
    """Feed `stream` to the board's decoder byte by byte, calling on_frame(decoder) for each good
    frame. Returns the counters (bad_crc, bad_frame, overrun, interrupts). Raises AssertionError
    if feed() answers anything but its four results. (tests/shared/test_framing_agree.py too.)"""
    dec = FrameDecoder()
    ints = 0
    for b in stream:
        r = dec.feed(b)
        if r == FRAME:
            on_frame(dec)
        elif r == INTERRUPT:
            ints += 1
        elif r != NONE and r != BAD:
            raise AssertionError("feed() answered %r" % (r,))
    return dec.bad_crc, dec.bad_frame, dec.overrun, ints


def device_counts(stream):
    frames = []
    c = device_decode(stream, lambda dec: frames.append([dec.mid(), dec.rid(), dec.seq()]))
    return {"frames": frames, "bad_crc": c[0], "bad_frame": c[1], "overrun": c[2], "interrupts": c[3]}


def test_seeded_streams_decode_as_the_host_decoded_them():
    # vectors.json "streams" holds what the host's StreamDecoder made of each stream
    # (tests/shared/test_framing_agree.py checks that); the board's decoder must agree.
    for v in _vectors()["streams"]:
        assert device_counts(make_stream(v["seed"])) == v["expect"], v["seed"]
