"""Benchmarks (`make bench`): measured figures, each beside a baseline measured in the same run.

Tests never assert on speed; this is where speed and memory targets are checked. Each module
listed in BENCHES exposes `run(results)` and calls `results.add(...)` for every figure.
"""

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time

BENCHES = (
    "bench.link",
    "bench.credentials",
    "bench.device",
    "bench.engine",
    "bench.linkauth",
    "bench.signing",
    "bench.trust_issuance",
    "bench.trust_propagation",
    "bench.online",
    "bench.recovery",
    "bench.policy",
    "bench.console",
    "bench.chaos",
)


class Results:
    """Collects figures, prints them as a table and writes bench-results.json."""

    def __init__(self):
        self.rows = []

    def add(self, name, value, unit, baseline=None, target=None, note=""):
        """Add one figure. With `baseline` (same unit, same run) the ratio value/baseline is kept.

        `target` is a human-readable statement of the goal ("<= 3x", ">= 0.85"), printed beside
        the figure; whether it is met is for the reader, since the direction differs per figure.
        """
        row = {"name": name, "value": value, "unit": unit}
        if baseline is not None:
            row["baseline"] = baseline
            row["ratio"] = (value / baseline) if baseline else None
        if target:
            row["target"] = target
        if note:
            row["note"] = note
        self.rows.append(row)
        self._print(row)

    @staticmethod
    def _print(row):
        ratio = ""
        if "ratio" in row and row["ratio"] is not None:
            ratio = "  baseline %s  ratio %.2f" % (_fmt(row["baseline"]), row["ratio"])
        target = ("  target " + row["target"]) if "target" in row else ""
        print("%-58s %12s %-8s%s%s" % (row["name"], _fmt(row["value"]), row["unit"], ratio, target), flush=True)

    def write(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"measured_at": int(time.time()), "figures": self.rows}, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


def _fmt(v):
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def percentile(samples, p):
    """The p-th percentile (0-100) of a list of numbers, nearest-rank."""
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


@contextlib.contextmanager
def scratch(prefix):
    """A temporary folder for one benchmark's stores and logs, removed when it is done (each
    `make bench` used to leave some 45 MB of them in the temporary folder)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def median(samples):
    return statistics.median(samples)


def test_helper(folder, name):
    """The module NAME of tests/FOLDER (the test fixtures' builders, e.g. engine/enginerig):
    their names are unique, so two benchmarks' helpers never shadow each other."""
    import importlib
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for where in (os.path.join(root, "tests"), os.path.join(root, "tests", folder)):
        if where not in sys.path:
            sys.path.insert(0, where)
    return importlib.import_module(name)
