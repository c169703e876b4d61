"""`python -m bench [NAME ...]`: run the benchmarks and write bench-results.json."""

import importlib
import os
import sys

from bench import BENCHES, Results


def main(argv):
    wanted = [a for a in argv if not a.startswith("-")]
    results = Results()
    print("%-58s %12s %-8s" % ("figure", "value", "unit"))
    failed = []
    for modname in BENCHES:
        short = modname.split(".")[-1]
        if wanted and short not in wanted:
            continue
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue  # not built yet
            raise
        try:
            module.run(results)
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            failed.append(short)
            print("benchmark %s failed: %s: %s" % (short, type(exc).__name__, exc), file=sys.stderr)
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench-results.json")
    results.write(out)
    print("\nwrote %s (%d figures)" % (out, len(results.rows)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
