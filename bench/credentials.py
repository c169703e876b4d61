"""Credential benchmarks, each against a baseline measured in the same run on one core.

- Full validation of fresh descriptors (parse, determinism check, key, signature, every S2
  step) per second, against raw PyNaCl Ed25519 verifies of the same payloads. Target >= 85%.
- Decisions per second for a stored descriptor verified at import. Target 100,000/s.
- Ticket validation per second against PyJWT's decode of the same ticket. Target: faster.
"""

import os
import statistics
import time

N_DESCRIPTORS = 3000
ROUNDS = 7


def _rate(fn, items, seconds=2.0):
    """Calls per second of fn over items, repeated until `seconds` have passed."""
    done = 0
    t0 = time.perf_counter()
    while True:
        for it in items:
            fn(it)
        done += len(items)
        el = time.perf_counter() - t0
        if el >= seconds:
            return done / el


def run(results):
    from bench import scratch

    with scratch("capwarden-bench-") as folder:
        _run(results, folder)


def _run(results, folder):
    import jwt
    import nacl.signing
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey

    from bench import test_helper
    from capwarden.credentials import cbor, fastparse
    from capwarden.credentials.validate import parse_descriptor, parse_descriptor_reference

    helper = test_helper("credentials", "credrig")
    NOW, World = helper.NOW, helper.World

    w = World(folder)
    fresh = [w.descriptor() for _ in range(N_DESCRIPTORS)]
    payloads = []
    for data in fresh:
        obj = cbor.decode(data, 1 << 20)
        payloads.append((cbor.encode(obj["payload"]), obj["signature"]["signature_value"]))
    vk = nacl.signing.VerifyKey(w.ed.private.public)
    res = w.res()

    def full(data):
        d = w.t.validator.check_descriptor(data, w.fay, res, "read", NOW)
        assert d.granted

    def raw(item):
        vk.verify(item[0], item[1])

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    ossl = Ed25519PublicKey.from_public_bytes(w.ed.private.public)

    def openssl(item):
        ossl.verify(item[1], item[0])

    results.add("OpenSSL (cryptography) Ed25519 verifies/s", round(_rate(openssl, payloads)), "1/s",
                baseline=round(_rate(raw, payloads)), note="why libsodium: faster here, and it refuses small-order points")
    # Rounds alternate between the baseline and the full validation, so that a neighbour's load
    # hits both alike; the figures are the medians over the rounds.
    raws, fulls = [], []
    for _ in range(ROUNDS):
        raws.append(_rate(raw, payloads, 0.6))
        fulls.append(_rate(full, fresh, 0.6))
    raw_rate = statistics.median(raws)
    full_rate = statistics.median(fulls)
    results.add("raw PyNaCl Ed25519 verifies/s (same payloads)", round(raw_rate), "1/s")
    results.add("full descriptor validations/s (fresh, one core)", round(full_rate), "1/s", baseline=round(raw_rate),
                target="ratio >= 0.85",
                note="scanner %s; median of %d interleaved rounds; round ratios %s" % (
                    "compiled (mypyc)" if fastparse.COMPILED else "interpreted", ROUNDS,
                    " ".join("%.2f" % (f / r) for f, r in zip(fulls, raws))))
    # The same with the scanner's source, interpreted: what an install without a compiler gets.
    source = fastparse.load_source(os.path.join(os.path.dirname(fastparse.__file__), "cborscan.py"))
    compiled_scan = fastparse._scan
    fastparse._scan = source.scan_descriptor
    try:
        raws, fulls = [], []
        for _ in range(3):
            raws.append(_rate(raw, payloads, 0.6))
            fulls.append(_rate(full, fresh, 0.6))
        interpreted_parse = 1e6 / _rate(parse_descriptor, fresh, 0.6)
    finally:
        fastparse._scan = compiled_scan
    results.add("full descriptor validations/s, scanner interpreted", round(statistics.median(fulls)), "1/s",
                baseline=round(statistics.median(raws)), note="without a C compiler at install (median of 3 rounds)")
    # Where the time of step 1 goes, against one verify (docs/DECISIONS.md cites these).
    verify_us = 1e6 / raw_rate
    for name, us in (("reference parser (cbor2 decode + canonical re-encode + model)",
                      1e6 / _rate(parse_descriptor_reference, fresh, 0.6)),
                     ("fast path, scanner interpreted", interpreted_parse),
                     ("fast path, scanner as installed", 1e6 / _rate(parse_descriptor, fresh, 0.6))):
        results.add("descriptor parse: " + name, round(us, 2), "us", baseline=round(verify_us, 2),
                    note="baseline: one raw PyNaCl verify")

    did = w.t.import_descriptor(fresh[0], NOW)

    def stored(_):
        d = w.t.decide_descriptor(did, w.fay, res, "read", NOW)
        assert d.granted

    results.add("stored descriptor decisions/s (verified at import)", round(_rate(stored, range(1000))), "1/s",
                target=">= 100000")

    # A ticket valid now, so that PyJWT's decode runs with its default checks (signature, exp,
    # nbf, iat, aud) against ours (every S2 step) on the same token.
    real_now = int(time.time())
    tok = w.ticket(iat=real_now - 60, nbf=real_now - 60, exp=real_now + 3600)
    pub = EllipticCurvePublicKey.from_encoded_point(SECP256R1(), w.tix.private.public)

    def ours(_):
        assert w.check_t(tok, now=real_now).granted

    def pyjwt(_):
        jwt.decode(tok, pub, algorithms=["ES256"], audience=w.tid)

    pjs, ours_ = [], []
    for _ in range(5):
        pjs.append(_rate(pyjwt, range(200), 0.6))
        ours_.append(_rate(ours, range(200), 0.6))
    pj = statistics.median(pjs)
    results.add("PyJWT decode/s (same ES256 ticket, default checks)", round(pj), "1/s")
    results.add("ticket validations/s (every S2 step)", round(statistics.median(ours_)), "1/s", baseline=round(pj),
                target="ratio > 1", note="median of 5 interleaved rounds; round ratios %s" % " ".join(
                    "%.2f" % (o / p) for o, p in zip(ours_, pjs)))
