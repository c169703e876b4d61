"""Issue 12 item 5: a serial port is the engine's alone. A second opener (another engine, a
terminal program holding the port, a stranger) is refused with the holder named."""

import asyncio
import os
import pty
import subprocess
import sys
import tty

import pytest

from capwarden.errors import LinkError
from capwarden.link.transport import SerialTransport, port_holders

HOLD = """
import sys, time, serial
s = serial.Serial(sys.argv[1], exclusive=True)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def pty_path():
    master, slave = pty.openpty()
    tty.setraw(master)
    path = os.ttyname(slave)
    yield path
    os.close(slave)
    os.close(master)


def test_a_port_held_by_another_process_is_refused_naming_it(pty_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, pty_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = SerialTransport(pty_path)
        with pytest.raises(LinkError) as e:
            asyncio.run(t.open())
        assert "in use by PID %d" % holder.pid in str(e.value)
        assert "-c" in str(e.value)          # the holder's command line, shortened
    finally:
        holder.kill()
        holder.wait()


def test_the_engine_holds_its_port_exclusively(pty_path):
    async def main():
        t = SerialTransport(pty_path)
        await t.open()
        try:
            # A second opener that asks for the lock (as mpremote or another engine may) fails.
            import serial

            with pytest.raises(serial.SerialException):
                serial.Serial(pty_path, exclusive=True)
        finally:
            await t.close()
        # Closed: the port is free again.
        serial.Serial(pty_path, exclusive=True).close()

    asyncio.run(main())


def test_holders_of_a_free_path_are_nobody_named(tmp_path):
    f = tmp_path / "x"
    f.write_text("")
    assert port_holders(str(f)) == "another process"
