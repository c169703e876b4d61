"""Build hooks: compile the descriptor scanner with mypyc where a compiler is at hand, and ship
the files capwarden reads at run time as package data.

Everything else is in pyproject.toml. host/capwarden/credentials/cborscan.py is plain Python and
runs as such; compiled, it reads a descriptor about four times faster, which is what lets full
validation stay within 15% of the bare signature check (docs/DECISIONS.md). A build without mypyc
or a C compiler (CAPWARDEN_PURE=1 forces one) installs the same code uncompiled.

The runtime API's schema, the device agent and the board descriptions live in their own folders
of the repository (shared/schema, device, boards). A wheel gets copies of them under
capwarden/data/, where capwarden.resources finds them; an editable install has none and reads
the repository's folders, so edits there are live. MANIFEST.in puts them into the sdist.
"""

import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

SCANNER = "host/capwarden/credentials/cborscan.py"

# (folder in the repository, folder under capwarden/data/ in the wheel): capwarden.resources.
SHIPPED = (("shared/schema", "schema"), ("device", "device"), ("boards", "boards"), ("models", "models"))
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mpy", "*.so")


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


class build_py_with_data(build_py):
    """build_py, then the shipped folders copied into the built package (not when editable)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source, target in SHIPPED:
            if not os.path.isdir(source):   # a build from an sdist that lost them must not pass
                raise SystemExit("capwarden: %s is missing; it is shipped in the wheel (MANIFEST.in)" % source)
            shutil.copytree(source, os.path.join(self.build_lib, "capwarden", "data", target),
                            ignore=NOT_SHIPPED, dirs_exist_ok=True)


setup(ext_modules=extensions(), cmdclass={"build_py": build_py_with_data})
