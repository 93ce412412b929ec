"""Fixtures for the asyncio API in the simulator: two tcpstack hosts on a link."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tcpstack.sim.link import LinkParams
from tcpstack.sim.network import Network
from tcpstack.tcp import Config, Stack

CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "fd00:198:18::1", "fd00:198:18::2"
#: Every simulated test is bounded in virtual time (seconds).
VIRTUAL_LIMIT = 3600.0


@dataclass
class SimPair:
    net: Network
    client: Stack
    server: Stack


def make_pair(
    seed: int = 1, link: LinkParams | None = None, config: Config | None = None
) -> SimPair:
    cfg = config or Config()
    net = Network(seed=seed)
    client = Stack([CLIENT4, CLIENT6], cfg.copy(), seed=seed * 2 + 1, name="client")
    server = Stack([SERVER4, SERVER6], cfg.copy(), seed=seed * 2 + 2, name="server")
    net.add_host("client", client, [CLIENT4, CLIENT6])
    net.add_host("server", server, [SERVER4, SERVER6])
    net.connect("client", "server", link or LinkParams(delay_us=10_000, rate_bps="100mbit"))
    return SimPair(net, client, server)


@pytest.fixture
def pair() -> SimPair:
    return make_pair()
