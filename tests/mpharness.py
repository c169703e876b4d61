"""Run test functions under the MicroPython unix port, one process per test.

Device tests import exactly what a board gets (firmware_path); shared-code tests pass
paths=SHARED_PATH. A test may import its folder's helper modules (helpers(): a shared rig).

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

# Shared-code tests see all of shared/ (the host-only table too: they check it).
SHARED_PATH = [os.path.join(ROOT, "shared")]

_firmware = {}


def firmware_path(board="sim"):
    """The import path a board has: exactly the files deployed to it, precompiled with mpy-cross
    as on a board, staged once per test run. Device code that imports a host-only module fails
    here as it would on a board, and memory figures are those of the deployed bytecode.
    """
    if board not in _firmware:
        import atexit
        import shutil

        from capwarden.sim import firmware

        staged, _written = firmware.stage(board, compile=True)
        atexit.register(shutil.rmtree, staged, True)
        _firmware[board] = [staged]
    return _firmware[board]


def helpers(folder):
    """The helper modules of a test folder that a test may import (a shared rig): every .py file
    that is neither a test module (mp_*, test_*) nor conftest."""
    return sorted(n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith(("mp_", "test_", "conftest")))


def _compiled_test(path, compile=True):
    """The test module and its folder's helper modules, built as the firmware is: the shared
    constants folded in (capwarden.sim.inline) and precompiled to .mpy, in a temporary folder.
    So a heap-budget test spends the heap a board spends: neither compiling the test nor the
    constant modules (capshared.wire, .limits, .errors, which a board never loads) count.
    `compile=False`: folded only, left as source (tracebacks keep names of lines). Returns that
    folder."""
    import atexit
    import shutil
    import tempfile

    from capwarden.sim import firmware
    from capwarden.sim.inline import inline

    folder = tempfile.mkdtemp(prefix="capwarden-mptest-")
    atexit.register(shutil.rmtree, folder, True)
    here = os.path.dirname(os.path.abspath(path))
    for name in [os.path.basename(path)] + helpers(here):
        with open(os.path.join(here, name)) as f:
            folded = os.path.join(folder, name)
            with open(folded, "w") as out:
                out.write(inline(f.read()))
        if not compile:
            continue
        subprocess.run([firmware.mpy_cross(), "-o", folded[:-3] + ".mpy", "-s", name, folded], check=True,
                       capture_output=True)
        os.remove(folded)
    return folder


# ---- the 64 KB budget ----------------------------------------------------------------------------
# A board gives the agent a 64 KB heap; a device test runs the agent beside its own rig (an
# in-memory line with its buffers and decoder, the rig's encoder, the rig's and the test's
# modules, the fake clock), which a board never carries. Since link authentication (issue 12)
# the agent leaves too little of 64 KB for that rig as well, so a 64 KB test runs in 64 KB
# plus exactly what the rig occupies, measured under MicroPython before the test: the agent
# gets the room it has on a board, no more. agent_rig.rig_only() makes the rig's objects.
BOARD_HEAP = 64 * 1024

_RIG_COST = r"""
import gc, sys
sys.path[:0] = {path!r}
import capagent.agent, capagent.control, capagent.grants, capagent.link, board
gc.collect()
m0 = gc.mem_alloc()
import agent_rig
mod = __import__({module!r})
keep = agent_rig.rig_only()
gc.collect()
print("RIG-COST", gc.mem_alloc() - m0)
"""
_rig_costs = {}


def rig_cost(path, extra_path=(), board="sim"):
    """Bytes the device tests' rig and the test module `path` occupy beside the agent, measured
    under MicroPython with the modules built as run() builds them (cached per test file)."""
    key = (path, tuple(extra_path), board)
    if key not in _rig_costs:
        folder = _compiled_test(path, compile=True)
        code = _RIG_COST.format(path=list(extra_path) + [folder] + firmware_path(board),
                                module=os.path.basename(path)[:-3])
        proc = subprocess.run([MICROPYTHON, "-X", "heapsize=256K", "-c", code], capture_output=True,
                              text=True, timeout=60, cwd=folder)
        said = [line for line in proc.stdout.splitlines() if line.startswith("RIG-COST ")]
        assert said, "measuring the rig failed: " + proc.stdout + proc.stderr
        _rig_costs[key] = int(said[0].split()[1])
    return _rig_costs[key]


def budget_heap(path, extra_path=(), board="sim"):
    """The -X heapsize for a 64 KB test of `path`: the board's 64 KB plus the rig's own cost,
    rounded up to the next KB."""
    return "%dK" % ((BOARD_HEAP + rig_cost(path, extra_path, board) + 1023) // 1024)


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


def run(path, name, heapsize="256K", extra_path=(), timeout=60, paths=None, compiled=False):
    """Run test `name` of file `path` under MicroPython. Returns None on success, else output.

    The import path is the test's folder, `extra_path`, then `paths` (default: the sim board's
    deployed firmware, see firmware_path()). `compiled`: the test and its folder's helpers are
    built as the firmware is (_compiled_test).
    """
    folder, fname = os.path.split(os.path.abspath(path))
    on_firmware = paths is None or any(paths == p for p in _firmware.values())
    paths = firmware_path() if paths is None else paths
    if compiled or on_firmware:
        # Against the firmware a test imports what a board has: linkauth's constants folded
        # (capwarden.sim.inline), so the test's own imports of them must be folded too.
        folder = _compiled_test(path, compile=compiled)
    code = RUNNER.format(path=list(extra_path) + [folder] + list(paths), module=fname[:-3], name=name)
    proc = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=" + heapsize, "-c", code],
        capture_output=True, text=True, timeout=timeout, cwd=folder,
    )
    out = proc.stdout + proc.stderr
    if "MPTEST-PASS" in out and proc.returncode == 0:
        return None
    return out or ("micropython exited with %d and no output" % proc.returncode)
