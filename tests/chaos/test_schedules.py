"""Random fault schedules against the real virtual board (issue 9, "the harness").

`make test` runs a bounded number of schedules (SCHEDULE_PARTS items of about PART_SECONDS each,
so the chaos part of the suite stays near a minute); `make chaos` (CAPWARDEN_CHAOS=1) runs
schedules for CAPWARDEN_CHAOS_SECONDS (default 300). Each schedule comes from a seed printed
with any failure; CAPWARDEN_CHAOS_SEED=N replays from N. A violation fails the test with the
schedule shrunk to a short reproduction, written as Python to paste into test_regressions.py.
"""

import os
import random
import time

import pytest

from .rig import chaos_mode
from .schedule import STATS, VIOLATIONS, generate, literal, run, shrink

CHAOS = chaos_mode()
SCHEDULE_PARTS = 1 if CHAOS else 2
PART_SECONDS = float(os.environ.get("CAPWARDEN_CHAOS_SECONDS") or 300) if CHAOS else 25.0
MAX_SCHEDULES = 100000 if CHAOS else 40
SHRINK_SECONDS = 240.0 if CHAOS else 20.0
MAX_STEPS = 30 if CHAOS else 16


def _base_seed(part):
    given = os.environ.get("CAPWARDEN_CHAOS_SEED")
    if given:
        return int(given) + part * 1000003
    return random.SystemRandom().randrange(1 << 40)


@pytest.mark.timeout(int(PART_SECONDS + SHRINK_SECONDS * 3 + 120))
@pytest.mark.parametrize("part", range(SCHEDULE_PARTS))
def test_random_fault_schedules_keep_every_invariant(part):
    seed0 = _base_seed(part)
    end = time.monotonic() + PART_SECONDS
    found = {}                      # invariant name -> (seed, schedule, run)
    n = 0
    while n < MAX_SCHEDULES and time.monotonic() < end:
        seed = seed0 + n
        n += 1
        steps = generate(seed, MAX_STEPS)
        r = run(steps)
        if r.violation is not None:
            VIOLATIONS[r.violation.name] += 1
            STATS["violations"] += 1
            found.setdefault(r.violation.name, (seed, steps, r))
            if not CHAOS:
                break               # make test: report the first one, shrunk, and stop
    if not found:
        return
    report = []
    shrink_end = time.monotonic() + SHRINK_SECONDS * (2 if CHAOS else 1)
    for name, (seed, steps, r) in found.items():
        budget = max(5.0, min(SHRINK_SECONDS, shrink_end - time.monotonic()))
        small, small_run = shrink(steps, name, budget)
        shown = small_run or r
        report.append("invariant %s violated by the schedule of seed %d (%d steps, shrunk to %d):\n  %s\n"
                      "reproduction (CAPWARDEN_CHAOS_SEED=%d replays the original):\nSTEPS = %s\ntrace of the "
                      "shrunk run:\n%s" % (name, seed, len(steps), len(small), shown.violation, seed, literal(small),
                                           "\n".join(shown.trace[-40:])))
    pytest.fail("\n\n".join(report), pytrace=False)
