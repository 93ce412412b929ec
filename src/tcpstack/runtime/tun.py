"""A Linux TUN device inside a network namespace: the wire between tcpstack and the kernel.

Topology (addresses from the RFC 2544 benchmarking range)::

    kernel TCP/IP (in namespace)           tcpstack (this process)
    198.18.0.1/24 on tcpsN  <--- TUN fd --->  answers for 198.18.0.2
    fd00:198:18::1/64 (optional)              answers for fd00:198:18::2

The kernel routes the whole prefix into the TUN; the stack's own address is
*not* assigned to the device, tcpstack simply answers for it.

The device is created from inside the namespace (``/dev/net/tun`` opened and
``TUNSETIFF`` issued while this thread is switched in with :func:`in_netns`),
so it is born there and never moves; its fd keeps working from any namespace.
It is configured with ioctls and per-device sysctls inside the namespace, the
same way: no subprocess, ~1-1.5 ms for the whole device setup.

I/O is built around syscall cost, which dominates (measured on kernel 6.18,
CPython 3.11: ~1.2-1.5 us per frame read in a batch, ~2 us for an empty read
that ends in EAGAIN, ~2.1 us per write the kernel drops at once and ~4.2-5 us
per write it answers, since the kernel's receive path runs inside the
writer's call). The fd is non-blocking: wait for readability with a selector on
:meth:`TunDevice.fileno`, then :meth:`TunDevice.read_batch` drains up to
``max_packets`` with ``os.read`` until EAGAIN. A write never blocks; if the
kernel refuses it (EAGAIN/ENOBUFS) the packet is counted in ``tx_drops`` and
dropped, as a NIC would.

Offload (``offload=True``)
--------------------------
The device is opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD(TUN_F_CSUM |
TUN_F_TSO4 | TUN_F_TSO6)`` is requested, falling back to ``TUN_F_CSUM`` alone,
then to no offload at all (the device is re-created without ``IFF_VNET_HDR``).
What the kernel accepted is in :attr:`TunDevice.offload` (bool) and
:attr:`TunDevice.offload_flags` (the ``TUN_F_*`` mask). With offload every
frame on the fd starts with a ``virtio_net_hdr`` of :attr:`TunDevice.vnet_hdr_len`
bytes (10, or 12 with ``vnet_hdr_len=12``; fields in host byte order, which is
what TUN uses unless ``TUNSETVNETLE``/``BE`` is set). The API:

- :meth:`~TunDevice.read_batch_vnet` -> ``[(VnetHdr, memoryview_of_ip_packet)]``
  (works with offload off too, every header is then :data:`VNET_HDR_NONE`).
  Received packets may be GRO/TSO super-segments up to 64 KiB
  (``gso_type`` TCPV4/TCPV6, ``gso_size`` = the MSS the kernel used): treat one
  as a single TCP segment carrying all its payload. ``flags & NEEDS_CSUM``
  means the L4 checksum was never computed (the bytes come straight from the
  kernel's memory): do not verify it.
- :meth:`~TunDevice.write` / :meth:`~TunDevice.write_batch` take complete IP
  packets in both modes (a zero header is prepended with ``writev`` when
  offload is on).
- :meth:`~TunDevice.write_vnet` / :meth:`~TunDevice.write_batch_vnet` send a
  packet with its header, e.g. :meth:`VnetHdr.tcp_gso` for a 64 KiB TCP
  super-segment that the kernel splits into ``gso_size`` segments, or
  :meth:`VnetHdr.tcp_csum` to let the kernel finish the checksum. With
  ``NEEDS_CSUM`` the TCP checksum field must hold the folded one's-complement
  sum of the pseudo-header, not inverted (Linux's CHECKSUM_PARTIAL
  convention), computed with the TCP length of the whole packet, super-segment
  included; the IPv4 total length covers the whole packet too. The local kernel
  trusts partial checksums on input, but build them right so a forwarded
  packet stays valid.

:meth:`~TunDevice.read_batch` returns the raw frames (header included when
offload is on).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from typing import NamedTuple

from .netns import NetnsLease, in_netns, require_privileges

__all__ = [
    "DEFAULT_NETNS",
    "KERNEL_ADDR4",
    "KERNEL_ADDR6",
    "STACK_ADDR4",
    "STACK_ADDR6",
    "NetnsTun",
    "TunDevice",
    "VnetHdr",
    "VNET_HDR_NONE",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_ECN",
]

#: The namespace `tcpstack up` uses unless told otherwise.
DEFAULT_NETNS = "tcpstack-0"
#: The kernel's side of the link (assigned to the TUN device).
KERNEL_ADDR4 = "198.18.0.1/24"
KERNEL_ADDR6 = "fd00:198:18::1/64"
#: The user-space stack's own addresses (never assigned to the device).
STACK_ADDR4 = "198.18.0.2"
STACK_ADDR6 = "fd00:198:18::2"

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04

# linux/virtio_net.h
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80

# linux/sockios.h, linux/if.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
SIOCGIFTXQLEN = 0x8942
SIOCSIFTXQLEN = 0x8943
IFF_UP = 0x1
IFNAMSIZ = 16
_IFREQ_SIZE = 40  # sizeof(struct ifreq) on LP64 and ILP32 alike

#: Largest frame the fd can deliver: a 64 KiB GSO packet plus a 12-byte header.
_MAX_FRAME = 65535 + 12
# A write the kernel could not queue: dropped and counted, never raised.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})

_VNET10 = struct.Struct("=BBHHHH")
_VNET12 = struct.Struct("=BBHHHHH")


class VnetHdr(NamedTuple):
    """``struct virtio_net_hdr`` (linux/virtio_net.h), the prefix of every frame with offload on."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self, size: int = 10) -> bytes:
        if size == 12:
            return _VNET12.pack(*self, 0)
        return _VNET10.pack(*self)

    @classmethod
    def unpack(cls, frame: bytes | bytearray | memoryview) -> VnetHdr:
        return cls._make(_VNET10.unpack_from(frame))

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def is_gso(self) -> bool:
        return self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE

    @classmethod
    def tcp_csum(cls, ip_header_len: int) -> VnetHdr:
        """One TCP segment whose checksum the kernel completes (field holds the pseudo-header sum)."""
        return cls(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, ip_header_len, 16)

    @classmethod
    def tcp_gso(
        cls, ip_header_len: int, tcp_header_len: int, mss: int, *, ipv6: bool = False
    ) -> VnetHdr:
        """A TCP super-segment the kernel splits into ``mss``-byte segments (checksums completed)."""
        gso = VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else VIRTIO_NET_HDR_GSO_TCPV4
        return cls(
            VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso,
            ip_header_len + tcp_header_len,
            mss,
            ip_header_len,
            16,
        )


#: The header of a complete packet: no GSO, checksum already correct.
VNET_HDR_NONE = VnetHdr()


def _ifname_bytes(name: str) -> bytes:
    b = name.encode("ascii")
    if not b or len(b) >= IFNAMSIZ or b"/" in b or b.strip() != b:
        raise ValueError(
            f"invalid interface name {name!r} (1-15 ASCII characters, no '/' or space)"
        )
    return b


def _ifreq(name: bytes, payload: bytes = b"") -> bytes:
    # bytes, not bytearray: fcntl.ioctl then returns the kernel's answer as bytes
    return name.ljust(IFNAMSIZ, b"\0") + payload.ljust(_IFREQ_SIZE - IFNAMSIZ, b"\0")


def _sockaddr_in(addr: ipaddress.IPv4Address) -> bytes:
    # struct sockaddr_in: sa_family (host order), port, addr, 8 bytes zero
    return struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", addr.packed)


def _write_sysctl(path: str, value: str) -> bool:
    """Write a /proc/sys entry of the *current thread's* namespace; False if it does not exist."""
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


class TunDevice:
    """A TUN device (IFF_TUN | IFF_NO_PI, non-blocking), optionally created in namespace ``netns``.

    ``name`` may hold a ``%d`` for the kernel to fill in (read back into
    :attr:`name`). ``addr4``/``addr6`` are the *kernel's* addresses with a
    prefix length (``None`` for none); without ``addr6`` IPv6 is disabled on the
    device, so it carries no IPv6 chatter. With ``addr6``, DAD, router
    solicitations and link-local autoconfiguration are turned off on the
    device first, so the address is usable at once.

    Counters (plain ints, IP bytes, virtio headers not counted): ``rx_packets``,
    ``rx_bytes``, ``tx_packets``, ``tx_bytes``, ``tx_drops``.
    """

    def __init__(
        self,
        name: str = "tcps%d",
        *,
        netns: str | None = None,
        mtu: int = 1500,
        txqueuelen: int = 10000,
        addr4: str | None = KERNEL_ADDR4,
        addr6: str | None = None,
        offload: bool = False,
        vnet_hdr_len: int = 10,
        up: bool = True,
    ) -> None:
        ifname = _ifname_bytes(name)
        if not 68 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} out of range 68..65535")
        if addr6 is not None and mtu < 1280:
            raise ValueError(f"IPv6 needs an MTU of at least 1280, got {mtu}")
        if vnet_hdr_len not in (10, 12):
            raise ValueError("vnet_hdr_len must be 10 or 12")
        if txqueuelen < 1:
            raise ValueError("txqueuelen must be positive")
        iface4 = ipaddress.IPv4Interface(addr4) if addr4 is not None else None
        iface6 = ipaddress.IPv6Interface(addr6) if addr6 is not None else None
        require_privileges("creating a TUN device", net_admin=True)

        self.netns = netns
        self.mtu = mtu
        self.txqueuelen = txqueuelen
        self.addr4 = iface4
        self.addr6 = iface6
        self.offload_requested = offload
        #: True when the kernel accepted TUNSETOFFLOAD with at least TUN_F_CSUM.
        self.offload = False
        #: The TUN_F_* flags the kernel accepted (0 without offload).
        self.offload_flags = 0
        #: Bytes of virtio_net_hdr before each frame on the fd (0 without offload).
        self.vnet_hdr_len = 0
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        self.tx_drops = 0
        self._fd = -1
        self.name = name
        self.ifindex = 0

        if netns is None:
            self._create(ifname, offload, vnet_hdr_len, up)
        else:
            with in_netns(netns):
                self._create(ifname, offload, vnet_hdr_len, up)
        self._zero_hdr = VNET_HDR_NONE.pack(self.vnet_hdr_len) if self.vnet_hdr_len else b""
        # Always room for the largest frame: a GSO frame can reach 64 KiB, and
        # the MTU may be changed from outside. os.read costs the same for a
        # 1500-byte or a 64 KiB buffer (measured: 1.1 us either way).
        self._rx_size = _MAX_FRAME

    # -- creation (runs inside the namespace) ---------------------------------

    def _open(self, ifname: bytes, vnet_hdr: bool) -> tuple[int, str]:
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            raise PermissionError(
                "tcpstack up needs CAP_NET_ADMIN (run as root, or `sudo setcap "
                "cap_net_admin+ep` on the interpreter) and read-write access to "
                "/dev/net/tun, which this process was refused"
            ) from None
        except FileNotFoundError:
            raise FileNotFoundError(
                "/dev/net/tun is missing: load the tun module (`modprobe tun`) or, in a "
                "container, pass the device in (docker: --device /dev/net/tun --cap-add NET_ADMIN)"
            ) from None
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        try:
            res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname, flags))
        except BaseException as e:
            os.close(fd)
            if isinstance(e, PermissionError):
                raise PermissionError(
                    "tcpstack up needs CAP_NET_ADMIN (run as root, or `sudo setcap "
                    "cap_net_admin+ep` on the interpreter) to create a TUN device"
                ) from None
            raise
        return fd, res[:IFNAMSIZ].split(b"\0", 1)[0].decode("ascii")

    def _create(self, ifname: bytes, offload: bool, vnet_hdr_len: int, up: bool) -> None:
        fd, name = self._open(ifname, offload)
        try:
            if offload:
                accepted = self._negotiate_offload(fd, vnet_hdr_len)
                if accepted:
                    self.offload, self.offload_flags = True, accepted
                    self.vnet_hdr_len = vnet_hdr_len
                else:
                    # Fall back cleanly: a device without IFF_VNET_HDR, so frames
                    # are bare IP packets as with offload=False.
                    os.close(fd)
                    fd = -1
                    fd, name = self._open(ifname, False)
            self._fd = fd
            self.name = name
            self.ifindex = socket.if_nametoindex(name)
            self._configure(up)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            self._fd = -1
            raise

    @staticmethod
    def _negotiate_offload(fd: int, vnet_hdr_len: int) -> int:
        try:
            if vnet_hdr_len != 10:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", vnet_hdr_len))
        except OSError:
            return 0
        for flags in (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM):
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            except OSError:
                continue
            return flags
        return 0

    def _configure(self, up: bool) -> None:
        name = self.name
        bname = name.encode("ascii")
        v6conf = f"/proc/sys/net/ipv6/conf/{name}/"
        if self.addr6 is None:
            # No IPv6 on this link: no MLD/RS chatter for the driver to skip.
            _write_sysctl(v6conf + "disable_ipv6", "1")
        else:
            if not os.path.isdir(v6conf):
                raise OSError(errno.EAFNOSUPPORT, "IPv6 is disabled in this kernel")
            for key, value in (
                ("disable_ipv6", "0"),
                ("accept_dad", "0"),  # the address is usable at once, not tentative
                ("accept_ra", "0"),  # no router solicitations
                ("router_solicitations", "0"),
                ("addr_gen_mode", "1"),  # IN6_ADDR_GEN_MODE_NONE: no link-local address
            ):
                _write_sysctl(v6conf + key, value)

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fd = s.fileno()
            fcntl.ioctl(fd, SIOCSIFMTU, _ifreq(bname, struct.pack("i", self.mtu)))
            fcntl.ioctl(fd, SIOCSIFTXQLEN, _ifreq(bname, struct.pack("i", self.txqueuelen)))
            if self.addr4 is not None:
                fcntl.ioctl(fd, SIOCSIFADDR, _ifreq(bname, _sockaddr_in(self.addr4.ip)))
                fcntl.ioctl(
                    fd, SIOCSIFNETMASK, _ifreq(bname, _sockaddr_in(self.addr4.network.netmask))
                )
            if up:
                res = fcntl.ioctl(fd, SIOCGIFFLAGS, _ifreq(bname))
                (flags,) = struct.unpack_from("H", res, IFNAMSIZ)
                fcntl.ioctl(fd, SIOCSIFFLAGS, _ifreq(bname, struct.pack("H", flags | IFF_UP)))
        if self.addr6 is not None:
            # struct in6_ifreq { in6_addr; u32 prefixlen; int ifindex; }
            req = struct.pack(
                "=16sIi", self.addr6.ip.packed, self.addr6.network.prefixlen, self.ifindex
            )
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s.fileno(), SIOCSIFADDR, req)

    # -- I/O ------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Read up to ``max_packets`` frames without blocking (``[]`` if none is waiting).

        Frames are IP packets, preceded by :attr:`vnet_hdr_len` header bytes when
        offload is on (see :meth:`read_batch_vnet`).
        """
        out: list[bytes] = []
        append = out.append
        read = os.read
        fd = self._fd
        size = self._rx_size
        try:
            for _ in range(max_packets):
                append(read(fd, size))
        except BlockingIOError:
            pass
        n = len(out)
        if n:
            self.rx_packets += n
            self.rx_bytes += sum(map(len, out)) - n * self.vnet_hdr_len
        return out

    def read_batch_vnet(self, max_packets: int = 64) -> list[tuple[VnetHdr, memoryview]]:
        """Like :meth:`read_batch`, split into (header, IP packet); headers are
        :data:`VNET_HDR_NONE` when offload is off. The memoryviews are zero-copy."""
        frames = self.read_batch(max_packets)
        hlen = self.vnet_hdr_len
        if not hlen:
            return [(VNET_HDR_NONE, memoryview(f)) for f in frames]
        unpack = _VNET10.unpack_from
        make = VnetHdr._make
        return [(make(unpack(f)), memoryview(f)[hlen:]) for f in frames]

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Send one complete IP packet to the kernel. False (and ``tx_drops`` += 1) if dropped."""
        try:
            if self.vnet_hdr_len:
                os.writev(self._fd, (self._zero_hdr, packet))
            else:
                os.write(self._fd, packet)
        except OSError as e:
            if e.errno in _DROP_ERRNOS:
                self.tx_drops += 1
                return False
            raise
        self.tx_packets += 1
        self.tx_bytes += len(packet)
        return True

    def write_batch(self, packets: Iterable[bytes | bytearray | memoryview]) -> int:
        """Send complete IP packets; returns how many the kernel took (the rest count as drops)."""
        fd = self._fd
        sent = nbytes = drops = 0
        try:
            if self.vnet_hdr_len:
                writev = os.writev
                zero = self._zero_hdr
                for p in packets:
                    try:
                        writev(fd, (zero, p))
                    except OSError as e:
                        if e.errno not in _DROP_ERRNOS:
                            raise
                        drops += 1
                        continue
                    sent += 1
                    nbytes += len(p)
            else:
                write = os.write
                for p in packets:
                    try:
                        write(fd, p)
                    except OSError as e:
                        if e.errno not in _DROP_ERRNOS:
                            raise
                        drops += 1
                        continue
                    sent += 1
                    nbytes += len(p)
        finally:
            self.tx_packets += sent
            self.tx_bytes += nbytes
            self.tx_drops += drops
        return sent

    def write_vnet(self, hdr: VnetHdr, packet: bytes | bytearray | memoryview) -> bool:
        """Send one IP packet with its virtio header (GSO and/or checksum offload)."""
        return self.write_batch_vnet(((hdr, packet),)) == 1

    def write_batch_vnet(
        self, items: Iterable[tuple[VnetHdr, bytes | bytearray | memoryview]]
    ) -> int:
        """Send (header, IP packet) pairs; returns how many the kernel took."""
        hlen = self.vnet_hdr_len
        if not hlen:
            items = list(items)
            if any(h != VNET_HDR_NONE for h, _ in items):
                raise ValueError(
                    "offload is off on this device: only complete packets (VNET_HDR_NONE) "
                    "can be written"
                )
            return self.write_batch(p for _, p in items)
        pack = (_VNET12 if hlen == 12 else _VNET10).pack
        extra = (0,) if hlen == 12 else ()
        fd = self._fd
        writev = os.writev
        sent = nbytes = drops = 0
        try:
            for hdr, p in items:
                try:
                    writev(fd, (pack(*hdr, *extra), p))
                except OSError as e:
                    if e.errno not in _DROP_ERRNOS:
                        raise
                    drops += 1
                    continue
                sent += 1
                nbytes += len(p)
        finally:
            self.tx_packets += sent
            self.tx_bytes += nbytes
            self.tx_drops += drops
        return sent

    def counters(self) -> dict[str, int]:
        return {
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "tx_drops": self.tx_drops,
        }

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Close the fd; the kernel removes the (non-persistent) device with it. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns!r}" if self.netns else ""
        state = "closed" if self.closed else f"fd={self._fd}"
        return (
            f"<TunDevice {self.name}{where} {state} mtu={self.mtu} "
            f"offload={self.offload} flags={self.offload_flags:#x}>"
        )


class NetnsTun:
    """A namespace (created if missing) with a configured TUN device in it; a context manager.

    ``close()`` removes the device and, if this object created it, the
    namespace: nothing is left behind. ``stack_addr4``/``stack_addr6`` are the
    addresses the user-space stack answers for (informational; they are not
    configured anywhere, the kernel routes the prefix into the TUN).
    """

    def __init__(
        self,
        netns: str = DEFAULT_NETNS,
        *,
        ifname: str = "tcps%d",
        mtu: int = 1500,
        txqueuelen: int = 10000,
        addr4: str | None = KERNEL_ADDR4,
        addr6: str | None = None,
        stack_addr4: str | None = STACK_ADDR4,
        stack_addr6: str | None = STACK_ADDR6,
        offload: bool = False,
        vnet_hdr_len: int = 10,
    ) -> None:
        self.stack_addr4 = _stack_addr(addr4, stack_addr4)
        self.stack_addr6 = _stack_addr(addr6, stack_addr6)
        self.lease = NetnsLease(netns)
        self.netns = self.lease.name
        self.lease.acquire()
        try:
            self.tun = TunDevice(
                ifname,
                netns=self.netns,
                mtu=mtu,
                txqueuelen=txqueuelen,
                addr4=addr4,
                addr6=addr6,
                offload=offload,
                vnet_hdr_len=vnet_hdr_len,
            )
        except BaseException:
            self.lease.close()
            raise

    @property
    def created_netns(self) -> bool:
        return self.lease.created

    @property
    def ifname(self) -> str:
        return self.tun.name

    def fileno(self) -> int:
        return self.tun.fileno()

    def close(self) -> None:
        """Remove the device, then the namespace if we created it. Idempotent."""
        try:
            self.tun.close()
        finally:
            self.lease.close()

    def __enter__(self) -> NetnsTun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NetnsTun netns={self.netns!r} created={self.created_netns} tun={self.tun!r}>"


def _stack_addr(kernel: str | None, stack: str | None) -> str | None:
    if kernel is None or stack is None:
        return None
    iface = ipaddress.ip_interface(kernel)
    addr = ipaddress.ip_address(stack)
    if addr not in iface.network or addr == iface.ip:
        raise ValueError(
            f"stack address {stack} must be in {iface.network} and differ from the kernel's {iface.ip}"
        )
    return str(addr)
