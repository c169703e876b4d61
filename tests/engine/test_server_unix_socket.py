"""serve --listen unix:PATH: the socket file is the engine's while it runs and gone after it,
and a second engine never takes the path of one that is listening (asyncio would unlink the
file and listen in its place, so the first engine's runtimes would reach the second)."""

import asyncio
import os
import socket

import pytest

from capwarden.engine.server import Server
from capwarden.errors import UsageError


class NoEngine:
    audit = None

    def add_runtime(self, rid):
        pass


def test_the_socket_is_removed_when_the_server_closes(tmp_path):
    path = str(tmp_path / "cap.sock")

    async def main():
        srv = await Server({"rtA": "tok-A"}, "unix:" + path).start(NoEngine())
        assert os.path.exists(path)
        await srv.close()
        assert not os.path.exists(path)            # the previous server left it behind

    asyncio.run(main())


def test_a_second_server_on_a_live_socket_is_refused(tmp_path):
    path = str(tmp_path / "cap.sock")

    async def main():
        first = await Server({"rtA": "tok-A"}, "unix:" + path).start(NoEngine())
        try:
            with pytest.raises(UsageError, match="another process is listening"):
                await Server({"rtA": "tok-A"}, "unix:" + path).start(NoEngine())
            assert os.path.exists(path)            # the first keeps its socket
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)                    # and still accepts
        finally:
            await first.close()

    asyncio.run(main())


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "cap.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()                                      # a file nobody listens on (a killed engine's)

    async def main():
        srv = await Server({"rtA": "tok-A"}, "unix:" + path).start(NoEngine())
        await srv.close()

    asyncio.run(main())
