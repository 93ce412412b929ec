"""The socket API over a real-time stack that talks to itself (LoopbackHost):
no namespace, no privileges, the same driver and engine as against the kernel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tcpstack import socket
from tcpstack.runtime.host import LoopbackHost

ADDR4 = "198.18.0.2"
ADDR6 = "fd00:198:18::2"
T = 10.0  # every blocking call in these tests is bounded by this (seconds)


@pytest.fixture
def host() -> Iterator[LoopbackHost]:
    with LoopbackHost((ADDR4, ADDR6), seed=1) as h:
        prev = socket.set_default_driver(h)
        try:
            yield h
        finally:
            socket.set_default_driver(prev)
