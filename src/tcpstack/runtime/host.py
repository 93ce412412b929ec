"""A tcpstack host on the real network: a Stack on a TUN device in a
namespace, fed by the threaded Driver.  What ``tcpstack nc``, the socket API
and the interop tests bring up::

    with Host(netns="tcpstack-test") as h:       # kernel side 198.18.0.1/24, stack 198.18.0.2
        s = tcpstack.socket.create_connection(("198.18.0.1", 7), driver=h.driver)

Several hosts can share one namespace (``tcpstack up`` and a few ``tcpstack
nc``): each has its own TUN device and its own subnet.  ``subnet=N`` puts the
kernel's side of the device at 198.18.N.1/24 and the stack at 198.18.N.2
(IPv6: fd00:198:18::N:1/112 and ::N:2, N in hex); ``subnet="auto"`` picks the
first N whose /24 no address in the namespace overlaps, under a lock file so
that hosts started at the same moment do not pick the same one.

:class:`LoopbackHost` is a stack that talks to itself through a
:class:`~.driver.LoopbackDevice`: no namespace, no privileges -- for the
socket API's unit tests and for trying the API on a laptop.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from ..tcp import Config, Stack
from .driver import Driver, Impairment, LoopbackDevice
from .tun import DEFAULT_NETNS, KERNEL_ADDR4, STACK_ADDR4, TUN_F_TSO4, TUN_F_TSO6, NetnsTun

#: Payload bytes of one TSO super-segment: whole MSSs within the 64 KiB an IP
#: packet can carry, headers included (as runtime.aio_driver.GSO_MAX).
GSO_MAX = 65535 - 40 - 60


def stack_on_tun(ntun: NetnsTun, config: Config | None, *, mtu: int, seed: int | None, name: str) -> Stack:
    """The Stack for a TUN device, using the offloads the kernel accepted (the
    device falls back cleanly): checksum offload with the virtio-net header, and
    TSO super-segments only when both TSO4 and TSO6 were accepted."""
    dev = ntun.tun
    both = TUN_F_TSO4 | TUN_F_TSO6
    tso = dev.offload and dev.offload_flags & both == both
    addrs = [a for a in (ntun.stack_addr4, ntun.stack_addr6) if a]
    return Stack(addrs, config or Config(), mtu=mtu, seed=seed, name=name,
                 checksum_offload=dev.offload, gso_max=GSO_MAX if tso else 0)

#: Where hosts look for a free subnet: 198.18.N.0/24 for N in this range.
SUBNET_RANGE = range(0, 256)
_LOCK_PATH = "/run/lock/tcpstack-subnets.lock"


def subnet_addresses(n: int) -> tuple[str, str, str, str]:
    """(kernel IPv4/prefix, stack IPv4, kernel IPv6/prefix, stack IPv6) of subnet ``n``."""
    if n not in SUBNET_RANGE:
        raise ValueError(f"subnet must be 0..255 (198.18.N.0/24), got {n}")
    k6, s6 = (str(ipaddress.IPv6Address(f"fd00:198:18::{n:x}:{i}")) for i in (1, 2))
    return (f"198.18.{n}.1/24", f"198.18.{n}.2", f"{k6}/112", s6)


def _namespace_networks(netns: str | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks of every address configured in ``netns`` (``ip -j addr``)."""
    cmd = ["ip", "-j"] + (["-n", netns] if netns else []) + ["addr", "show"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
        links = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for link in links:
        for a in link.get("addr_info", []):
            with contextlib.suppress(KeyError, ValueError):
                nets.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
    return nets


def free_subnet(netns: str | None) -> int:
    """The first N whose 198.18.N.0/24 overlaps no address in ``netns``."""
    nets = [n for n in _namespace_networks(netns) if n.version == 4]
    for n in SUBNET_RANGE:
        mine = ipaddress.ip_network(f"198.18.{n}.0/24")
        if not any(mine.overlaps(other) for other in nets):
            return n
    raise OSError(f"no free 198.18.N.0/24 subnet left in namespace {netns!r}")


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Serialise subnet choice + device creation between processes (flock)."""
    try:
        os.makedirs(os.path.dirname(_LOCK_PATH), exist_ok=True)
        fd = os.open(_LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield  # no lock possible (read-only /run): best effort
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class _HostBase:
    stack: Stack
    driver: Driver

    def _start(self, device: Any, pcap: Any, egress: Impairment | None, ingress: Impairment | None,
               direct: bool = True) -> None:
        self.driver = Driver(self.stack, device, pcap=pcap, egress=egress, ingress=ingress, direct=direct)
        self.driver.start()

    @property
    def addresses(self) -> list[str]:
        return list(self.stack.addresses)

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TunBacked:
    """What a host on a TUN device tells about it (shared by Host and AioHost)."""

    tun: NetnsTun

    @property
    def netns(self) -> str:
        return self.tun.netns

    @property
    def created_netns(self) -> bool:
        return self.tun.created_netns

    @property
    def ifname(self) -> str:
        return self.tun.ifname

    @property
    def stack_addr4(self) -> str | None:
        return self.tun.stack_addr4

    @property
    def stack_addr6(self) -> str | None:
        return self.tun.stack_addr6


class Host(TunBacked, _HostBase):
    """A Stack on its own TUN device in namespace ``netns`` (created if missing,
    then removed on close), driven by a started :class:`Driver`.

    Addresses: ``subnet`` (an int N, or ``"auto"``) chooses them as described
    in the module doc; otherwise ``kernel_addr4``/``stack_addr4`` (and the
    optional ``kernel_addr6``/``stack_addr6``) are used as given. ``ipv6=True``
    with ``subnet`` adds the subnet's IPv6 pair. ``egress``/``ingress``
    impair the stack->kernel / kernel->stack direction in the driver.

    ``offload=True`` opens the device with virtio-net offload: the kernel
    hands over TSO/GRO super-segments of up to 64 KiB (one engine call per
    64 KiB instead of ~45) and completes checksums both ways, and the engine
    sends super-segments of whole MSSs that the kernel cuts (TSO). No
    per-byte work is left in Python on either path.

    ``direct=False`` leaves all engine work to the driver's loop thread (see
    "Direct processing" in :mod:`tcpstack.runtime.driver`).
    """

    def __init__(
        self,
        netns: str = DEFAULT_NETNS,
        *,
        subnet: int | str | None = None,
        ipv6: bool = False,
        kernel_addr4: str | None = KERNEL_ADDR4,
        stack_addr4: str | None = STACK_ADDR4,
        kernel_addr6: str | None = None,
        stack_addr6: str | None = None,
        config: Config | None = None,
        mtu: int = 1500,
        pcap: Any = None,
        ifname: str = "tcps%d",
        seed: int | None = None,
        egress: Impairment | None = None,
        ingress: Impairment | None = None,
        offload: bool = False,
        direct: bool = True,
    ) -> None:
        with _subnet_lock():
            if subnet is not None:
                n = free_subnet(netns) if subnet == "auto" else int(subnet)
                kernel_addr4, stack_addr4, k6, s6 = subnet_addresses(n)
                if ipv6:
                    kernel_addr6, stack_addr6 = k6, s6
            self.subnet = None if subnet is None else n
            self.tun = NetnsTun(
                netns, ifname=ifname, mtu=mtu, addr4=kernel_addr4, addr6=kernel_addr6,
                stack_addr4=stack_addr4, stack_addr6=stack_addr6, offload=offload,
            )
        self.kernel_addr4 = kernel_addr4.split("/")[0] if kernel_addr4 else None
        self.kernel_addr6 = kernel_addr6.split("/")[0] if kernel_addr6 else None
        try:
            self.stack = stack_on_tun(self.tun, config, mtu=mtu, seed=seed, name=f"tcpstack@{netns}/{self.tun.ifname}")
            self._start(self.tun.tun, pcap, egress, ingress, direct)
        except BaseException:
            self.tun.close()
            raise

    def close(self) -> None:
        """Stop the driver, remove the device and the namespace if we created it. Idempotent."""
        try:
            self.driver.stop()
        finally:
            self.tun.close()

    def __repr__(self) -> str:
        return f"<Host netns={self.netns!r} dev={self.ifname} stack={self.addresses} kernel={self.kernel_addr4}>"


class LoopbackHost(_HostBase):
    """A Stack that talks to itself over a LoopbackDevice, driven in real time.

    Connect to one of its own ``addresses`` to reach its listeners, as a
    program does over ``lo``. Needs no privileges.
    """

    def __init__(
        self,
        addresses: tuple[str, ...] | list[str] = ("198.18.0.2", "fd00:198:18::2"),
        *,
        config: Config | None = None,
        mtu: int = 1500,
        pcap: Any = None,
        seed: int | None = None,
        egress: Impairment | None = None,
        direct: bool = True,
    ) -> None:
        self.device = LoopbackDevice()
        self.stack = Stack(list(addresses), config or Config(), mtu=mtu, seed=seed, name="tcpstack@loopback")
        try:
            self._start(self.device, pcap, egress, None, direct)
        except BaseException:
            self.device.close()
            raise

    def close(self) -> None:
        try:
            self.driver.stop()
        finally:
            self.device.close()

    def __repr__(self) -> str:
        return f"<LoopbackHost {self.addresses}>"
