import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# ---- hypothesis profiles (issue 9) --------------------------------------------------------------
# "default" for `make test`: bounded so the suite stays well under 10 minutes. "chaos" for
# `make chaos` (CAPWARDEN_CHAOS=1, or HYPOTHESIS_PROFILE=chaos): many more inputs per test.
# Both: no deadline (2 shared cores make timings meaningless), never derandomized, and the
# failing example's blob printed so `@reproduce_failure` replays it. Tests take max_examples
# from the profile, or scale their own with it (tests/hypo.py).
from hypothesis import HealthCheck, settings  # noqa: E402

CHAOS = os.environ.get("CAPWARDEN_CHAOS") == "1" or os.environ.get("HYPOTHESIS_PROFILE") == "chaos"
settings.register_profile("default", max_examples=100, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("chaos", max_examples=5000, deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("chaos" if CHAOS else "default"))

# ---- the chaos report ---------------------------------------------------------------------------
# Fuzz inputs are counted from hypothesis's observations (chaos mode only: observing costs a
# little per input), over the time spent in hypothesis tests.
_FUZZ = {"inputs": 0, "failed": 0, "seconds": 0.0, "tests": 0}


def _observe(obs):
    if getattr(obs, "type", None) == "test_case":
        _FUZZ["inputs"] += 1
        if obs.status == "failed":
            _FUZZ["failed"] += 1


if CHAOS:
    from hypothesis.internal.observability import add_observability_callback

    add_observability_callback(_observe)

import pytest  # noqa: E402

# ---- the compiled-module cache (capwarden.sim.firmware) -------------------------------------------
# One for the whole run, in a folder of its own (never the user's ~/.cache): every virtual board
# the tests start, in this process, its xdist workers and the commands they run, stages from it.
_MADE_CACHE = None
if not os.environ.get("CAPWARDEN_CACHE"):
    import tempfile  # noqa: E402

    _MADE_CACHE = os.environ["CAPWARDEN_CACHE"] = tempfile.mkdtemp(prefix="capwarden-test-cache-")


def pytest_unconfigure(config):
    if _MADE_CACHE is not None:
        import shutil

        shutil.rmtree(_MADE_CACHE, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fuzz = getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
    t0 = time.monotonic()
    yield
    if fuzz:
        _FUZZ["seconds"] += time.monotonic() - t0
        _FUZZ["tests"] += 1


def _chaos_results():
    sched = sys.modules.get("chaos.schedule")
    out = {"mode": "chaos" if CHAOS else "test"}
    if sched is not None:
        s = sched.STATS
        out.update(schedules=s["schedules"], steps=s["steps"], violations=s["violations"],
                   violations_by_invariant=dict(sched.VIOLATIONS), shrink_runs=s["shrink_runs"],
                   schedule_seconds=round(s["seconds"], 1))
        rig = sys.modules.get("chaos.rig")
        out.update(link_faults_aimed=rig.TARGETED["aimed"], link_faults_hit=rig.TARGETED["hit"],
                   link_faults_by_type={n: [rig.TARGETED_BY_TYPE[n, "aimed"], rig.TARGETED_BY_TYPE[n, "hit"]]
                                        for n in sorted({n for n, _ in rig.TARGETED_BY_TYPE})})
    if CHAOS:
        out.update(fuzz_tests=_FUZZ["tests"], fuzz_inputs=_FUZZ["inputs"], fuzz_failed_inputs=_FUZZ["failed"],
                   fuzz_seconds=round(_FUZZ["seconds"], 1),
                   fuzz_inputs_per_second=round(_FUZZ["inputs"] / _FUZZ["seconds"], 1) if _FUZZ["seconds"] else 0)
    return out if (sched is not None or CHAOS) else None


def pytest_terminal_summary(terminalreporter):
    r = _chaos_results()
    if r is None or not (CHAOS or r.get("schedules")):
        return
    tr = terminalreporter
    tr.section("chaos")
    if "schedules" in r:
        tr.write_line("fault schedules: %d run, %d steps, %d invariant violation(s) %s; %d shrink runs; %.1f s" % (
            r["schedules"], r["steps"], r["violations"], r["violations_by_invariant"] or "", r["shrink_runs"],
            r["schedule_seconds"]))
        tr.write_line("targeted link faults: %d aimed at a frame, %d frames hit (a fault aimed at a message the "
                      "schedule never sends again misses)" % (r["link_faults_aimed"], r["link_faults_hit"]))
    if CHAOS:
        tr.write_line("fuzzing: %d inputs in %d hypothesis tests, %.1f s, %.1f inputs/s (%d failing)" % (
            r["fuzz_inputs"], r["fuzz_tests"], r["fuzz_seconds"], r["fuzz_inputs_per_second"],
            r["fuzz_failed_inputs"]))
        path = os.path.join(os.path.dirname(HERE), "chaos-results.json")
        with open(path, "w") as f:
            json.dump(r, f, indent=2, sort_keys=True)
            f.write("\n")
        tr.write_line("written to %s" % path)
