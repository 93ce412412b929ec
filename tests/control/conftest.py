"""Fixtures for the control socket tests.

Tests that need root (another uid for the permission checks, a namespace and
a TUN device for `tcpstack up`) follow tests/interop/conftest.py's rule: they
FAIL with the reason where they cannot run, unless
TCPSTACK_ALLOW_SKIP_INTEROP=1 turns that into a skip (CI runs as root and
never sets it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.runtime.control import AioControlServer

from ..kernel_env import require_kernel
from .lab import Lab, known_sockets


def require_root(what: str, *, tun: bool = False) -> None:
    """Root (and, with ``tun``, /dev/net/tun and iproute2): see tests/kernel_env.py."""
    require_kernel(what, tun=tun)


@pytest.fixture
def lab() -> Lab:
    return known_sockets()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for socket files (AF_UNIX paths are limited to 107
    bytes), traversable by other users so that permission tests reach the
    socket itself."""
    d = tempfile.mkdtemp(prefix="tcpstack-ctl-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


class LoopThread:
    """An asyncio loop in a thread, serving the control socket for a stack that
    the test does not touch while a request runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="control-loop", daemon=True
        )
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, stack, path: str, now, **kw) -> AioControlServer:  # type: ignore[no-untyped-def]
        return self.run(AioControlServer.start(stack, path, now, **kw))

    def close(self) -> None:
        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def served(
    lab: Lab, loop_thread: LoopThread, sockdir: Path
) -> Iterator[tuple[Lab, str, AioControlServer]]:
    """The lab's server stack behind an asyncio control socket; time stands still at lab.now."""
    path = str(sockdir / "ctl.sock")
    srv = loop_thread.serve(lab.server, path, lambda: lab.now)
    try:
        yield lab, path, srv
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)
