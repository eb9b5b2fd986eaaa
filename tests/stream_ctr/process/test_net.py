"""Ports handed to child processes without races (:mod:`stream_ctr.process.net`)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from stream_ctr.process.net import listens, port_taken, reserve_port

SERVE = """
import asyncio, sys
async def main():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", int(sys.argv[1]))  # SO_REUSEADDR, as aiohttp
    print(server.sockets[0].getsockname()[1])
asyncio.run(main())
"""


def test_a_reserved_port_is_refused_to_others_yet_its_server_binds_it():
    with reserve_port() as held:
        port = held.getsockname()[1]
        with socket.socket() as other, pytest.raises(OSError) as err:
            other.bind(("127.0.0.1", port))
        assert err.value.errno == errno.EADDRINUSE
        served = subprocess.run([sys.executable, "-c", SERVE, str(port)], capture_output=True, text=True)
        assert served.returncode == 0 and served.stdout.strip() == str(port), served.stderr


def test_a_port_in_use_is_not_reserved_again_another_is():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with reserve_port("127.0.0.1", port) as held:
            assert held.getsockname()[1] not in (port, 0)
    with reserve_port("127.0.0.1", port) as held:  # free again: that very port
        assert held.getsockname()[1] == port


def test_port_taken_reads_the_exception_chain():
    def exit_after(exc):
        try:
            try:
                raise exc
            except OSError:
                sys.exit(1)  # what mode's Worker does with a failed start
        except SystemExit as done:
            return done

    assert port_taken(exit_after(OSError(errno.EADDRINUSE, "address already in use")))
    assert not port_taken(exit_after(OSError(errno.ECONNREFUSED, "refused")))
    assert not port_taken(None)


def test_listens_tells_which_process_listens_on_a_port():
    with socket.create_server(("127.0.0.1", 0)) as listener, reserve_port() as held:
        port = listener.getsockname()[1]
        assert listens(os.getpid(), port)
        assert not listens(os.getpid(), held.getsockname()[1])  # bound, not listening
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket, sys, time\n"
                "s = socket.create_server(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True)\n"
                "time.sleep(60)",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            theirs = int(child.stdout.readline())
            assert listens(child.pid, theirs)
            assert listens(os.getpid(), theirs)  # a descendant's socket counts (a trainer group's rank 0)
            assert not listens(child.pid, port)  # an ancestor's does not
        finally:
            child.kill()
            child.wait()
