"""A tcpstack host on the real network: a Stack on a TUN device in a
namespace, fed by the threaded Driver.  What ``tcpstack nc``, the socket API
and the interop tests bring up::

    with Host(netns="tcpstack-test") as h:       # kernel side 198.18.0.1/24, stack 198.18.0.2
        s = tcpstack.socket.create_connection(("198.18.0.1", 7), driver=h.driver)
"""

from __future__ import annotations

from typing import Any

from ..tcp import Config, Stack
from .driver import Driver
from .tun import DEFAULT_NETNS, KERNEL_ADDR4, STACK_ADDR4, NetnsTun


class Host:
    def __init__(
        self,
        netns: str = DEFAULT_NETNS,
        *,
        kernel_addr4: str | None = KERNEL_ADDR4,
        stack_addr4: str | None = STACK_ADDR4,
        kernel_addr6: str | None = None,
        stack_addr6: str | None = None,
        config: Config | None = None,
        mtu: int = 1500,
        offload: bool = False,
        pcap: Any = None,
        ifname: str = "tcps%d",
        seed: int | None = None,
    ) -> None:
        self.tun = NetnsTun(
            netns, ifname=ifname, mtu=mtu, addr4=kernel_addr4, addr6=kernel_addr6,
            stack_addr4=stack_addr4, stack_addr6=stack_addr6, offload=offload,
        )
        addrs = [a for a in (self.tun.stack_addr4, self.tun.stack_addr6) if a]
        self.stack = Stack(addrs, config or Config(), mtu=mtu, seed=seed, name=f"tcpstack@{netns}")
        self.driver = Driver(self.stack, self.tun.tun, pcap=pcap)
        self.driver.start()

    @property
    def netns(self) -> str:
        return self.tun.netns

    def close(self) -> None:
        self.driver.stop()
        self.tun.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
