"""Interop tests: the real Linux kernel as the peer, through a TUN device in a namespace.

These prove the stack is real, so they must not vanish quietly: where they
cannot run (not root, no /dev/net/tun, no `ip`), every test FAILS with the
reason, unless TCPSTACK_ALLOW_SKIP_INTEROP=1 is set, which turns the failures
into skips (for a developer laptop; CI runs as root and never sets it).

Every namespace a test uses is named ``tcpstack-t<pid>-<n>`` and removed at
teardown, whatever the test did.  ``host`` is a Host on a TUN in such a
namespace that ``tcpstack.socket`` uses (a module may define its own).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime import KERNEL_ADDR6, STACK_ADDR6
from tcpstack.runtime.host import Host

from ..kernel_env import require_kernel

HERE = Path(__file__).resolve().parent
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture(autouse=True)
def _interop_environment() -> None:
    require_kernel("interop tests")


_counter = itertools.count()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def netns_name() -> Iterator[str]:
    """A fresh namespace name; whatever exists under it at teardown is removed."""
    name = f"tcpstack-t{os.getpid()}-{next(_counter)}"
    yield name
    if os.path.exists(f"/run/netns/{name}"):
        _ip("netns", "del", name)


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """Threads for the kernel side's blocking socket calls (each bounded by a socket timeout)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kernel") as ex:
        yield ex


@pytest.fixture
def host(netns_name: str) -> Iterator[Host]:
    """A Host (IPv4 and IPv6) in a fresh namespace, the driver of ``tcpstack.socket``."""
    with Host(netns_name, seed=1, kernel_addr6=KERNEL_ADDR6, stack_addr6=STACK_ADDR6) as h:
        tsocket.set_default_driver(h)
        try:
            yield h
        finally:
            tsocket.set_default_driver(None)
