"""The cost of checking one runtime message against the shipped schema, as the engine and the
SDK do it (capwarden.engine.protocol.validate): microseconds per message, best of 5 runs.

    .venv/bin/python bench/schema_validation.py

Run in two checkouts to compare validators (docs/DECISIONS.md, "The schema checked by a
compiled validator"). Not part of `make bench`: a figure for that decision, not a regression
guard.
"""

import time

from capwarden.engine import protocol

U = "01927b34-7e21-7c4d-a89f-1234567890ab"
RES = "terminal:%s/sim/gps" % U
BODIES = {
    "AuthRequest": {"fay_id": "fay:" + U, "resource_id": RES, "access_mode": "read",
                    "credential": {"type": "descriptor_ref", "descriptor_id": U}, "wait_ms": 10},
    "Heartbeat": {"session_ids": [U, U]},
    "ResourceCommand": {"session_id": U, "op": 1, "args": "AAE"},
}


def per_message_us(msg, n=20000):
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                protocol.validate(msg)
            except protocol.BadMessage:
                pass
        dt = (time.perf_counter() - t0) / n * 1e6
        best = dt if best is None else min(best, dt)
    return best


def main():
    protocol.validate(protocol.make("SessionQuery", {}, "rtA"))      # compiled before timing
    for mtype, body in BODIES.items():
        print("%-24s %6.2f us" % (mtype, per_message_us(protocol.make(mtype, dict(body), "rtA", U))))
    bad = protocol.make("ResourceCommand", dict(BODIES["ResourceCommand"], op=256), "rtA", U)
    print("%-24s %6.2f us" % ("ResourceCommand, invalid", per_message_us(bad, 5000)))


if __name__ == "__main__":
    main()
