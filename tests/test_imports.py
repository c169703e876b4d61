"""Every module imports on its own, in a fresh interpreter: no import cycle, no module that
works only because another was imported first (issue 10, item 4; `import capshared.names`
alone used to fail on the limits <-> names cycle, `import capshared.errtext` on errors <->
errtext).

- CPython: every module of capshared and of capwarden.
- The MicroPython unix port: the capshared modules a board gets, from source, and every
  capagent module as deployed (mpharness.firmware_path: folded and precompiled).
"""

import os
import subprocess
import sys

import pytest

import mpharness
from capwarden.sim import firmware

ROOT = mpharness.ROOT
SHARED = os.path.join(ROOT, "shared", "capshared")
HOST = os.path.join(ROOT, "host", "capwarden")
AGENT = os.path.join(ROOT, "device", "capagent")


def _modules(folder, package):
    out = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")) and d != "data")
        rel = os.path.relpath(here, folder)
        prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
        for f in sorted(files):
            if f.endswith(".py"):
                out.append(prefix if f == "__init__.py" else prefix + "." + f[:-3])
    return out


# Alembic's migration scripts are run by Alembic inside its own context (alembic.context is
# configured only there); the migration test in tests/trust runs them for real.
CPYTHON = _modules(SHARED, "capshared") + [m for m in _modules(HOST, "capwarden")
                                          if not m.startswith("capwarden.trust.migrations.")]
DEPLOYED_SHARED = ["capshared." + f[:-3] for f in sorted(os.listdir(SHARED))
                   if f.endswith(".py") and f != "__init__.py" and f not in firmware.HOST_ONLY]
AGENT_MODULES = ["capagent." + f[:-3] for f in sorted(os.listdir(AGENT)) if f.endswith(".py") and f != "__init__.py"]


def test_the_lists_are_not_empty():
    # A moved folder must not leave these tests importing nothing.
    assert "capshared.names" in CPYTHON and "capshared.errtext" in CPYTHON and "capwarden.link.board" in CPYTHON
    assert "capshared.framing" in DEPLOYED_SHARED and "capagent.grants" in AGENT_MODULES


@pytest.mark.parametrize("module", CPYTHON)
def test_imports_alone_under_cpython(module):
    proc = subprocess.run([sys.executable, "-c", "import " + module], capture_output=True, text=True,
                          cwd=os.path.dirname(ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr


def _micropython(module, paths):
    code = "import sys\nsys.path[:0] = %r\nimport %s\nprint('IMPORTED')" % (list(paths), module)
    return subprocess.run([mpharness.MICROPYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(ROOT))


@pytest.mark.micropython
@pytest.mark.parametrize("module", DEPLOYED_SHARED)
def test_shared_module_imports_alone_under_micropython(module):
    proc = _micropython(module, mpharness.SHARED_PATH)
    assert "IMPORTED" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.micropython
@pytest.mark.parametrize("module", AGENT_MODULES)
def test_agent_module_imports_alone_under_micropython(module):
    proc = _micropython(module, mpharness.firmware_path())
    assert "IMPORTED" in proc.stdout, proc.stdout + proc.stderr
