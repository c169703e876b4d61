"""Run test functions under the MicroPython unix port, one process per test.

A MicroPython test module is a plain Python file with `def test_...():` functions that use
`assert`. `collect(path)` lists them (parsed with ast on CPython, never imported here), and
`run(path, name)` runs one under `micropython` with the device import path, returning what
failed (or None). Tests parametrize over collect() so each MicroPython test is a pytest item.
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

# What the board's filesystem holds, in import-path order: board files at the root.
DEVICE_PATH = [
    os.path.join(ROOT, "boards", "sim"),
    os.path.join(ROOT, "device"),
    os.path.join(ROOT, "shared"),
]

RUNNER = r"""
import sys
sys.path[:0] = {path!r}
mod = __import__({module!r})
try:
    getattr(mod, {name!r})()
    print("MPTEST-PASS")
except Exception as e:
    sys.print_exception(e)
    print("MPTEST-FAIL")
"""


def collect(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def run(path, name, heapsize="256K", extra_path=(), timeout=60):
    """Run test `name` of file `path` under MicroPython. Returns None on success, else output."""
    folder, fname = os.path.split(os.path.abspath(path))
    code = RUNNER.format(path=list(extra_path) + [folder] + DEVICE_PATH, module=fname[:-3], name=name)
    proc = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=" + heapsize, "-c", code],
        capture_output=True, text=True, timeout=timeout, cwd=folder,
    )
    out = proc.stdout + proc.stderr
    if "MPTEST-PASS" in out and proc.returncode == 0:
        return None
    return out or ("micropython exited with %d and no output" % proc.returncode)
