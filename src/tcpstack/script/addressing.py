"""Which IP version a script runs over, and the addresses that go with it.

packetdrill chooses with ``--ip_version``: ``ipv4`` (the default), ``ipv6``,
or ``ipv4-mapped-ipv6`` (IPv4 packets, AF_INET6 sockets that see the peer as
``::ffff:a.b.c.d``).  The flag is given on packetdrill's command line or on a
line at the top of the script; the Linux selftests' runner
(tools/testing/selftests/net/packetdrill/ksft_runner.sh) reads that line to
run a script only under the version it names.  ``tcpstack script`` takes
both; the script's own line wins.

The addresses mirror the IPv4 ones: the stack under test is ``.2`` / ``::2``
and the script's peer ``.1`` / ``::1`` (the roles of packetdrill's
192.168.0.1 and 192.0.2.1, or fd3d:0a0b:17d6::1 and fd3d:fa7b:d17d::1),
in 198.18.0.0/24 and fd00:198:18::/64, the ranges tcpstack's TUN runtime
uses inside its own namespaces.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IP_VERSIONS = ("ipv4", "ipv6", "ipv4-mapped-ipv6")
AF_INET, AF_INET6 = 2, 10  # Linux's numbers (symbols.SYMBOLS)
_MAPPED_PREFIX = "::ffff:"


@dataclass(frozen=True)
class Addressing:
    ip_version: str
    local: str  # the stack under test, as on the wire
    remote: str  # the script's peer, as on the wire
    prefixlen: int  # of the kernel's address on the TUN device

    @property
    def wire_v6(self) -> bool:
        """Packets are IPv6 (only with --ip_version=ipv6)."""
        return self.ip_version == "ipv6"

    @property
    def domain(self) -> int:
        """The socket family ``socket(..., ...)`` means (packetdrill's socket_domain)."""
        return AF_INET if self.ip_version == "ipv4" else AF_INET6

    @property
    def unspecified(self) -> str:
        return "::" if self.wire_v6 else "0.0.0.0"

    def sockaddr(self, wire_addr: str) -> str:
        """The address an AF_INET6 socket uses for a wire address (IPv4-mapped form)."""
        if self.ip_version == "ipv4-mapped-ipv6" and ":" not in wire_addr:
            return _MAPPED_PREFIX + wire_addr
        return wire_addr

    @staticmethod
    def wire(addr: str) -> str:
        """The wire form of an address a socket reported (``::ffff:a.b.c.d`` -> ``a.b.c.d``;
        IPv6 text in canonical compressed form, as the packet parser writes it)."""
        if ":" not in addr:
            return addr
        ip = ipaddress.IPv6Address(addr.split("%", 1)[0])
        return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def addressing(ip_version: str = "ipv4") -> Addressing:
    """The addresses for one of IP_VERSIONS; ValueError names the choices otherwise."""
    if ip_version == "ipv6":
        return Addressing("ipv6", "fd00:198:18::2", "fd00:198:18::1", 64)
    if ip_version in ("ipv4", "ipv4-mapped-ipv6"):
        return Addressing(ip_version, "198.18.0.2", "198.18.0.1", 24)
    raise ValueError(f"--ip_version={ip_version}: unknown IP version (choose one of {', '.join(IP_VERSIONS)})")
