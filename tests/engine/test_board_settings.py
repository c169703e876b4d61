"""Issue 9 defect 11 at the engine: the board's failsafe settings are given by the engine (at
start and again after a reset), and the board's audit ring is read into the engine's audit log
after a failsafe (faults.md 68, 69, 70). Before this the board had the CONFIG keys and no host
ever sent them, and the ring was read by nobody."""

import asyncio
import json
import os
import subprocess

import pytest

from capwarden.engine import boardconfig, boards
from capwarden.engine.audit import AuditLog, read
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.engine.engine import Engine
from capwarden.errors import UsageError
from capwarden.link import Reset
from capwarden.link.types import BoardInfo, ResourceInfo
from capshared import wire as W
from enginerig import EXE, TOKENS, World, runtime, speed, wait_until


# ---- parsing: every bad setting is a usage error, said at once ------------------------------
@pytest.mark.parametrize("obj, why", [
    ({"failsafe": 1}, "unknown setting"),
    ({"failsafe_ms": "2000"}, "whole number"),
    ({"failsafe_ms": -1}, "whole number"),
    ({"failsafe_ms": True}, "whole number"),
    ({"failsafe_delay_ms": W.FAILSAFE_DELAY_MAX_MS + 1}, "0..%d" % W.FAILSAFE_DELAY_MAX_MS),
    ({"link_loss_hold": "led"}, "list of resource names"),
    ({"link_loss_hold": [""]}, "list of resource names"),
    ([], "an object"),
])
def test_bad_board_settings_are_refused(obj, why):
    with pytest.raises(UsageError, match=why):
        boardconfig.parse(obj)


def test_board_setting_items_parse_like_the_config_file():
    assert boardconfig.parse_items(["failsafe_ms=2000", "link_loss_hold=led, camera"]) == {
        "failsafe_ms": 2000, "link_loss_hold": ["led", "camera"]}
    with pytest.raises(UsageError, match="whole number"):
        boardconfig.parse_items(["failsafe_ms=banana"])
    with pytest.raises(UsageError, match="NAME=VALUE"):
        boardconfig.parse_items(["failsafe_ms"])


class ConfigBoard:
    """Just enough of a Board to see what the engine configures."""

    def __init__(self, refuse=()):
        self.info = BoardInfo("sim", "0.2.0", 7, 2, 256, 0, [
            ResourceInfo(0, "motor_left", "motor", ["write"], "present"),
            ResourceInfo(1, "led", "led", ["write"], "present")])
        self.config = []
        self.refuse = refuse
        self.up = True

    def subscribe(self, cb):
        pass

    async def configure(self, key, value):
        if key in self.refuse:
            from capwarden.errors import DeviceError
            raise DeviceError("E_DEV_BAD_OPERATION", "refused")
        self.config.append((key, value))

    async def grants(self, res):
        return []

    async def heartbeat(self, seq):
        return {"grants": 0}


def _engine(tmp_path, board, settings):
    w = World(str(tmp_path))
    return Engine(StoreAuthorizer(w.store), {"sim": board}, AuditLog(str(tmp_path / "audit.log")),
                  board_settings=settings)


def test_settings_are_given_at_start_and_again_after_a_reset(tmp_path):
    board = ConfigBoard()
    e = _engine(tmp_path, board, {"failsafe_ms": 2000, "failsafe_delay_ms": 500, "link_loss_hold": ["led"]})

    async def scenario():
        await e.start()
        assert sorted(board.config) == sorted([(W.CFG_FAILSAFE_MS, 2000), (W.CFG_FAILSAFE_DELAY_MS, 500),
                                               (W.CFG_LINK_LOSS_HOLD, 1 << 1)])
        board.config.clear()
        await boards.on_event(e, e.registry.boards["sim"], Reset(7, 8))     # the board forgot them
        assert sorted(board.config) == sorted([(W.CFG_FAILSAFE_MS, 2000), (W.CFG_FAILSAFE_DELAY_MS, 500),
                                               (W.CFG_LINK_LOSS_HOLD, 1 << 1)])
        await e.stop()

    asyncio.run(scenario())
    entries, problem = read(str(tmp_path / "audit.log"))[:2]
    assert problem is None
    assert [x["reason"] for x in entries if x["action"] == "board"] == ["settings_applied"]


def test_a_board_that_refuses_a_setting_is_not_driven(tmp_path):
    from capwarden.errors import DeviceError

    board = ConfigBoard(refuse=(W.CFG_FAILSAFE_MS,))
    e = _engine(tmp_path, board, {"failsafe_ms": 2000})
    with pytest.raises(DeviceError):
        asyncio.run(e.start())


def test_a_hold_for_a_resource_the_board_lacks_is_refused(tmp_path):
    e = _engine(tmp_path, ConfigBoard(), {"link_loss_hold": ["rotor"]})
    with pytest.raises(UsageError, match="rotor.*it has: motor_left, led"):
        asyncio.run(e.start())


# ---- end to end on the virtual board ------------------------------------------------------
def test_fault_69_70_link_loss_hold_given_by_the_engine_and_the_ring_audited(world, run, in_process):
    """The engine gives the board its hold mask; the cable is cut longer than a lease; when it
    is back, the board's ring says what its failsafe did (the motor driven safe, the held LED
    left as it was) and those entries are in the engine's audit log, chain intact."""
    
    async def scenario():
        app = await in_process(lease_ms=600, board_heartbeat_ms=150,
                               board_settings={"link_loss_hold": ["led"], "failsafe_delay_ms": 0})
        a = await runtime(app, "rtA")
        c = await runtime(app, "rtC")
        m = await world.take(a, "motor_left", "write")
        led = await world.take(c, "led", "write", who="C")
        await m.command(1, speed(40))
        app.vboard.cable.disconnect()
        await asyncio.sleep(1.5)                                   # > the lease: the board's failsafe runs
        app.vboard.cable.reconnect()
        ring = None

        def audited():
            nonlocal ring
            ring = [x for x in read(app.audit_path)[0] if x["action"] == "board_ring"]
            return any(x["outcome"] == "failsafe_hold" for x in ring) and \
                any(x["outcome"] == "failsafe_safe" for x in ring)
        assert await wait_until(audited, 15), ring
        held = [x for x in ring if x["outcome"] == "failsafe_hold"]
        safe = [x for x in ring if x["outcome"] == "failsafe_safe"]
        assert [x["resource"] for x in held] == ["led"] and [x["resource"] for x in safe] == ["motor_left"]
        assert all(x["board"] == "sim" and x["board_seq"] >= 1 for x in ring)
        seqs = [x["board_seq"] for x in ring]
        assert seqs == sorted(set(seqs))                           # each board entry once, in order
        assert read(app.audit_path)[1] is None
        await a.close()
        await c.close()
        del led

    run(scenario())


def test_serve_refuses_a_bad_board_setting_before_deploying(world, tmp_path):
    p = subprocess.run([EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim",
                        "--runtime-token", "rtA=%s" % TOKENS["rtA"], "--board-setting", "failsafe_delay_ms=99999"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "failsafe_delay_ms" in p.stderr and "Traceback" not in p.stderr
    assert "deploy" not in p.stderr.lower()


def test_the_config_file_carries_board_settings(world, tmp_path):
    from capwarden.engine import config

    path = str(tmp_path / "engine.json")
    with open(path, "w") as f:
        json.dump({"runtimes": {"rt1": {"token": "a-long-token"}}, "board": {"failsafe_ms": 1500}}, f)
    os.chmod(path, 0o600)
    assert config.load(path).board == {"failsafe_ms": 1500}
    with open(path, "w") as f:
        json.dump({"board": {"failsafe_ms": "soon"}}, f)
    with pytest.raises(UsageError, match="failsafe_ms"):
        config.load(path)


class _Captured(Exception):
    pass


@pytest.mark.parametrize("given, flag, want", [(1500, None, 1500), (1500, 2500, 2500), (None, None, 60000)])
def test_max_busy_ms_comes_from_the_config_file_unless_the_flag_says(world, tmp_path, monkeypatch, given, flag, want):
    # Issue 9 left it a flag only; the config file carries it now, and the flag overrides it.
    from capwarden import cli
    from capwarden.engine import app

    path = str(tmp_path / "engine.json")
    conf = {"runtimes": {"rt1": {"token": "a-long-token"}}}
    if given is not None:
        conf["max_busy_ms"] = given
    with open(path, "w") as f:
        json.dump(conf, f)
    os.chmod(path, 0o600)
    seen = {}

    def capture(*a, **kw):
        seen.update(kw)
        raise _Captured()

    monkeypatch.setattr(app, "EngineApp", capture)
    argv = ["serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim", "--config", path]
    with pytest.raises(_Captured):
        cli.main(argv + (["--max-busy-ms", str(flag)] if flag is not None else []))
    assert seen["max_busy_ms"] == want


@pytest.mark.parametrize("bad", [-1, 600001, "long", 1.5])
def test_a_bad_max_busy_ms_in_the_config_file_is_refused(tmp_path, bad):
    from capwarden.engine import config

    path = str(tmp_path / "engine.json")
    with open(path, "w") as f:
        json.dump({"max_busy_ms": bad}, f)
    os.chmod(path, 0o600)
    with pytest.raises(UsageError, match="max_busy_ms"):
        config.load(path)
