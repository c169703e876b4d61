"""Build hook: compile the descriptor scanner with mypyc where a compiler is at hand.

Everything else is in pyproject.toml. host/capwarden/credentials/cborscan.py is plain Python and
runs as such; compiled, it reads a descriptor about four times faster, which is what lets full
validation stay within 15% of the bare signature check (docs/DECISIONS.md). A build without mypyc
or a C compiler (CAPWARDEN_PURE=1 forces one) installs the same code uncompiled.
"""

import os
import sys

from setuptools import setup

SCANNER = "host/capwarden/credentials/cborscan.py"


def extensions():
    if os.environ.get("CAPWARDEN_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify

        # The scanner imports nothing from the project; its package's other modules are not
        # type-annotated and are not compiled, so mypy looks at them silently.
        return mypycify(["--follow-imports=silent", SCANNER], opt_level="3")
    except (Exception, SystemExit) as exc:  # no mypyc, or it could not compile: the pure module works
        print("capwarden: building without the compiled scanner (%s)" % exc, file=sys.stderr)
        return []


setup(ext_modules=extensions())
