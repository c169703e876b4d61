"""`make chaos` figures in the bench: a bounded chaos run (random fault schedules against the
virtual board, and the runtime-JSON and framing fuzzers under the chaos profile), in a
subprocess as `make chaos` runs it, read back from the chaos-results.json it writes.

These are counts, not speeds, so they have no baseline: violations must be 0, and the fuzz
rate says how many inputs a minute of `make chaos` feeds the parsers.
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = ["tests/engine/test_runtime_fuzz.py", "tests/shared/test_framing_agree.py"]
SECONDS = int(os.environ.get("CAPWARDEN_BENCH_CHAOS_SECONDS") or 60)


def _pytest(paths, env):
    out = os.path.join(ROOT, "chaos-results.json")
    if os.path.exists(out):
        os.unlink(out)                 # never read an older run's figures
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=1800", *paths],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("the chaos run failed:\n" + p.stdout[-3000:])
    with open(out) as f:
        return json.load(f)


def run(results):
    env = dict(os.environ, CAPWARDEN_CHAOS="1", CAPWARDEN_CHAOS_SECONDS=str(SECONDS))
    t0 = time.monotonic()
    r = _pytest(["tests/chaos/test_schedules.py"] + FUZZ, env)
    took = time.monotonic() - t0
    results.add("chaos: fault schedules run", r.get("schedules", 0), "schedules",
                note="random schedules on the virtual board, CAPWARDEN_CHAOS_SECONDS=%d a part; %.0f s with the fuzzers"
                % (SECONDS, took))
    results.add("chaos: schedule steps", r.get("steps", 0), "steps")
    results.add("chaos: invariant violations", r.get("violations", 0), "violations", target="0",
                note=json.dumps(r.get("violations_by_invariant") or {}))
    results.add("chaos: fuzz inputs per second", r.get("fuzz_inputs_per_second", 0), "inputs/s",
                note="%d inputs in %d hypothesis tests (%s), %d failing" % (
                    r.get("fuzz_inputs", 0), r.get("fuzz_tests", 0), ", ".join(FUZZ), r.get("fuzz_failed_inputs", 0)))
