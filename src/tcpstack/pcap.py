"""Packet captures: write classic libpcap, read libpcap and pcapng.

Why this module exists rather than using scapy or dpkt: captures are written
on the simulator's data path (every segment of a run can be recorded), so the
writer is two ``struct`` packs and two ``write`` calls per packet, with no
dependency. The reader lets tests and the CLI load what *other* tools wrote
(tcpdump, tshark, editcap, Wireshark's pcapng), so it accepts both classic
byte orders and timestamp precisions, pcapng with per-interface link types and
timestamp resolutions, and the link layers a Linux capture usually has, and
always hands back the bare IP packet — the unit the TCP engine consumes.

Timestamps are integers in microseconds everywhere, as in the rest of tcpstack.

References: the libpcap file format (draft-ietf-opsawg-pcap) and pcapng
(draft-ietf-opsawg-pcapng); link-type numbers from tcpdump.org/linktypes.html.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from os import PathLike
from typing import IO, BinaryIO

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "PcapWriter",
    "read_packets",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_LINUX_SLL = 113  # "cooked" capture, e.g. tcpdump -i any on older libpcap
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # "cooked" v2, tcpdump -i any on libpcap >= 1.10

_SUPPORTED_LINKTYPES = (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL2,
)

# Classic libpcap magic numbers, as read with the file's own byte order.
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D

# pcapng block types.
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 0x00000001
_PCAPNG_OPB = 0x00000002  # obsolete Packet Block, still written by old tools
_PCAPNG_SPB = 0x00000003
_PCAPNG_EPB = 0x00000006
_PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
# 802.1Q, 802.1ad (QinQ) and the pre-standard 0x9100 QinQ tag: each adds 4 bytes.
_ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)

# A record longer than this is not a packet but a corrupt length field; refuse
# it rather than trying to allocate gigabytes (the same bound Wireshark uses).
_MAX_RECORD = 256 * 1024 * 1024

_GLOBAL_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")

_PathOrFile = str | PathLike[str] | BinaryIO | IO[bytes]


class PcapWriter:
    """Write a classic libpcap file (little-endian, microsecond timestamps).

    Classic pcap rather than pcapng because every tool reads it and it costs a
    16-byte header per packet. The default link type is LINKTYPE_RAW (101):
    the simulator carries bare IP packets, and RAW lets one file hold IPv4 and
    IPv6 without inventing Ethernet addresses.

    ``file_or_path`` is a path (the writer opens, owns and closes the file) or
    a binary file object (the writer writes to it and flushes on ``close()``,
    but leaves closing it to the caller, who opened it).
    """

    __slots__ = ("_file", "_owns", "_snaplen", "_pack", "_write", "closed", "linktype", "snaplen")

    def __init__(
        self,
        file_or_path: _PathOrFile,
        linktype: int = LINKTYPE_RAW,
        snaplen: int = 262144,
    ) -> None:
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen must be a positive 32-bit integer, got {snaplen}")
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"linktype must fit in 16 bits, got {linktype}")
        if isinstance(file_or_path, (str, PathLike)):
            self._file: IO[bytes] = open(file_or_path, "wb")  # owned: closed in close()
            self._owns = True
        else:
            self._file = file_or_path
            self._owns = False
        self.linktype = linktype
        self.snaplen = snaplen
        self._snaplen = snaplen
        self._pack = _REC_HDR.pack
        self._write = self._file.write
        self.closed = False
        # Version 2.4, thiszone 0 (timestamps are UTC), sigfigs 0.
        self._write(_GLOBAL_HDR.pack(_MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_us: int, packet: bytes | bytearray | memoryview) -> None:
        """Append one packet captured at ``ts_us`` (microseconds since the epoch).

        Packets longer than the snap length are truncated, with the original
        length kept in the record so readers can tell (as tcpdump -s does).
        """
        n = len(packet)
        if n > self._snaplen:
            caplen = self._snaplen
            packet = packet[:caplen]
        else:
            caplen = n
        sec, usec = divmod(ts_us, 1_000_000)
        self._write(self._pack(sec, usec, caplen, n))
        self._write(packet)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._owns:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_packets(path_or_file: _PathOrFile) -> Iterator[tuple[int, bytes]]:
    """Yield ``(timestamp_us, ip_packet)`` for every IPv4/IPv6 packet in a capture.

    Reads classic libpcap (either byte order, microsecond or nanosecond magic)
    and pcapng (SHB, IDB, EPB, SPB and the obsolete PB; other blocks such as
    name resolution or statistics are skipped). Link layers RAW, IPV4, IPV6,
    ETHERNET (802.1Q/QinQ tags stripped), LINUX_SLL and LINUX_SLL2 are
    unwrapped to the IP packet; frames carrying anything else (ARP, LLDP...)
    are skipped, and link-layer padding or an Ethernet FCS after the IP packet
    is trimmed using the IP length field.

    A file that is not a capture, is truncated, or uses a link type this
    reader does not know raises ``ValueError`` saying what and where.
    """
    if isinstance(path_or_file, (str, PathLike)):
        with open(path_or_file, "rb") as f:
            yield from _read_stream(f)
    else:
        yield from _read_stream(path_or_file)


def _read_exact(f: IO[bytes], n: int, what: str, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(
            f"truncated capture: {what} at offset {offset} needs {n} bytes, file has {len(data)}"
        )
    return data


def _read_stream(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"not a pcap or pcapng file: only {len(head)} bytes")
    if head == b"\x0a\x0d\x0d\x0a":
        yield from _read_pcapng(f, head)
        return
    for order in ("<", ">"):
        (magic,) = struct.unpack(order + "I", head)
        if magic in (_MAGIC_US, _MAGIC_NS):
            yield from _read_classic(f, order, magic == _MAGIC_NS)
            return
    raise ValueError(f"not a pcap or pcapng file: bad magic number 0x{head.hex()}")


def _read_classic(f: IO[bytes], order: str, nanos: bool) -> Iterator[tuple[int, bytes]]:
    rest = _read_exact(f, 20, "pcap global header", 4)
    major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", rest)
    if major != 2:
        raise ValueError(f"unsupported pcap version {major} (only 2.x exists)")
    # The upper bits of the link-type field carry FCS information (pcap draft
    # section 4); the link type proper is the low 16 bits.
    linktype = network & 0xFFFF
    unwrap = _unwrapper(linktype)
    rec = struct.Struct(order + "IIII")
    offset = 24
    while True:
        hdr = f.read(16)
        if not hdr:
            return
        if len(hdr) < 16:
            raise ValueError(
                f"truncated capture: packet record header at offset {offset} "
                f"has {len(hdr)} of 16 bytes"
            )
        sec, frac, caplen, _origlen = rec.unpack(hdr)
        if caplen > _MAX_RECORD:
            raise ValueError(f"corrupt pcap record at offset {offset}: captured length {caplen}")
        data = _read_exact(f, caplen, "packet data", offset + 16)
        offset += 16 + caplen
        ts = sec * 1_000_000 + (frac // 1000 if nanos else frac)
        packet = unwrap(data)
        if packet is not None:
            yield ts, packet


class _Interface:
    """What a pcapng Interface Description Block says about later packets."""

    __slots__ = ("linktype", "snaplen", "unwrap", "units_per_s", "offset_us")

    def __init__(self, linktype: int, snaplen: int, units_per_s: int, offset_us: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.units_per_s = units_per_s
        self.offset_us = offset_us
        # Resolved lazily: an interface we cannot decode is only an error if
        # a packet is actually captured on it (multi-interface files often
        # describe interfaces that carried nothing).
        self.unwrap: Callable[[bytes], bytes | None] | None = None

    def to_us(self, ts: int) -> int:
        if self.units_per_s == 1_000_000:
            return ts + self.offset_us
        return ts * 1_000_000 // self.units_per_s + self.offset_us


def _read_pcapng(f: IO[bytes], first_type: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    order = "<"
    interfaces: list[_Interface] = []
    block_type_raw: bytes | None = first_type
    last_ts = 0
    while True:
        if block_type_raw is None:
            block_type_raw = f.read(4)
            if not block_type_raw:
                return
            if len(block_type_raw) < 4:
                raise ValueError(f"truncated pcapng block header at offset {offset}")
        if block_type_raw == b"\x0a\x0d\x0d\x0a":
            # A Section Header Block fixes the byte order of its section, so it
            # must be parsed before we can even read its own length.
            length_raw = _read_exact(f, 8, "pcapng section header", offset + 4)
            bom = length_raw[4:8]
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise ValueError(
                    f"corrupt pcapng section header at offset {offset}: "
                    f"byte-order magic 0x{bom.hex()}"
                )
            (total,) = struct.unpack(order + "I", length_raw[:4])
            if total < 28 or total % 4:
                raise ValueError(
                    f"corrupt pcapng section header at offset {offset}: length {total}"
                )
            body = _read_exact(f, total - 12, "pcapng section header", offset + 12)
            _check_trailer(body, total, order, offset)
            interfaces = []  # interface ids are numbered per section
            offset += total
            block_type_raw = None
            continue
        (btype,) = struct.unpack(order + "I", block_type_raw)
        (total,) = struct.unpack(order + "I", _read_exact(f, 4, "pcapng block length", offset + 4))
        if total < 12 or total % 4 or total > _MAX_RECORD:
            raise ValueError(
                f"corrupt pcapng block at offset {offset}: type 0x{btype:08x}, length {total}"
            )
        body = _read_exact(f, total - 8, f"pcapng block 0x{btype:08x}", offset + 8)
        _check_trailer(body, total, order, offset)
        body = body[:-4]
        if btype == _PCAPNG_IDB:
            interfaces.append(_parse_idb(body, order, offset))
        elif btype in (_PCAPNG_EPB, _PCAPNG_OPB, _PCAPNG_SPB):
            if btype == _PCAPNG_EPB:
                if len(body) < 20:
                    raise ValueError(f"truncated pcapng enhanced packet block at offset {offset}")
                if_id, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(order + "IIIII", body)
                start = 20
            elif btype == _PCAPNG_OPB:
                if len(body) < 20:
                    raise ValueError(f"truncated pcapng packet block at offset {offset}")
                if_id, _drops, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(
                    order + "HHIIII", body
                )
                start = 20
            else:
                # A Simple Packet Block has no interface id (always 0), no
                # timestamp and no captured length: the data runs to the end of
                # the block, capped by the interface's snap length.
                if len(body) < 4:
                    raise ValueError(f"truncated pcapng simple packet block at offset {offset}")
                (orig,) = struct.unpack_from(order + "I", body)
                if_id, ts_hi, ts_lo = 0, -1, 0
                start = 4
                caplen = min(orig, len(body) - 4)
            if if_id >= len(interfaces):
                raise ValueError(
                    f"corrupt pcapng at offset {offset}: packet on interface {if_id}, "
                    f"but only {len(interfaces)} interface(s) described"
                )
            iface = interfaces[if_id]
            if btype == _PCAPNG_SPB and iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            if start + caplen > len(body):
                raise ValueError(
                    f"truncated pcapng packet at offset {offset}: captured length {caplen} "
                    f"exceeds the block"
                )
            if ts_hi == -1:
                # No timestamp in an SPB: keep the previous packet's so the
                # sequence stays monotone rather than jumping back to 1970.
                ts = last_ts
            else:
                ts = iface.to_us((ts_hi << 32) | ts_lo)
            last_ts = ts
            unwrap = iface.unwrap
            if unwrap is None:
                unwrap = iface.unwrap = _unwrapper(iface.linktype)
            packet = unwrap(body[start : start + caplen])
            if packet is not None:
                yield ts, packet
        # Every other block type (NRB, ISB, DSB, custom...) carries no packets.
        offset += total
        block_type_raw = None


def _check_trailer(body: bytes, total: int, order: str, offset: int) -> None:
    (trailer,) = struct.unpack(order + "I", body[-4:])
    if trailer != total:
        raise ValueError(
            f"corrupt pcapng block at offset {offset}: leading length {total} "
            f"!= trailing length {trailer}"
        )


def _parse_idb(body: bytes, order: str, offset: int) -> _Interface:
    if len(body) < 8:
        raise ValueError(f"truncated pcapng interface description block at offset {offset}")
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
    units_per_s = 1_000_000  # if_tsresol default: 10^-6 s
    offset_us = 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        pos += 4
        if code == 0:  # opt_endofopt
            break
        value = body[pos : pos + length]
        if len(value) < length:
            raise ValueError(
                f"truncated option {code} in pcapng interface block at offset {offset}"
            )
        if code == 9 and length >= 1:  # if_tsresol
            r = value[0]
            # MSB clear: resolution 10^-r s; MSB set: 2^-(r & 0x7f) s.
            units_per_s = 10**r if r < 0x80 else 1 << (r & 0x7F)
        elif code == 14 and length == 8:  # if_tsoffset, whole seconds
            (secs,) = struct.unpack(order + "q", value)
            offset_us = secs * 1_000_000
        pos += (length + 3) & ~3
    return _Interface(linktype, snaplen, units_per_s, offset_us)


def _unwrapper(linktype: int) -> Callable[[bytes], bytes | None]:
    """Return a function turning one captured frame into its IP packet (or None)."""
    if linktype == LINKTYPE_RAW:
        return _unwrap_raw
    if linktype == LINKTYPE_IPV4:
        return _unwrap_ipv4
    if linktype == LINKTYPE_IPV6:
        return _unwrap_ipv6
    if linktype == LINKTYPE_ETHERNET:
        return _unwrap_ethernet
    if linktype == LINKTYPE_LINUX_SLL:
        return _unwrap_sll
    if linktype == LINKTYPE_LINUX_SLL2:
        return _unwrap_sll2
    raise ValueError(
        f"unsupported link type {linktype}; supported: "
        + ", ".join(str(t) for t in _SUPPORTED_LINKTYPES)
    )


def _unwrap_raw(frame: bytes) -> bytes | None:
    if frame and frame[0] >> 4 in (4, 6):
        return frame
    return None


def _unwrap_ipv4(frame: bytes) -> bytes | None:
    return frame if frame and frame[0] >> 4 == 4 else None


def _unwrap_ipv6(frame: bytes) -> bytes | None:
    return frame if frame and frame[0] >> 4 == 6 else None


def _ip_payload(frame: bytes, start: int, ethertype: int) -> bytes | None:
    """The IP packet at ``frame[start:]``, trimmed of link-layer padding/FCS."""
    if ethertype == _ETHERTYPE_IPV4:
        if len(frame) - start >= 4 and frame[start] >> 4 == 4:
            total = int.from_bytes(frame[start + 2 : start + 4], "big")
            end = start + total
            # Trim only when the IP length is plausible; a TSO capture may
            # show total length 0, and a truncated capture is shorter.
            if total >= 20 and end < len(frame):
                return frame[start:end]
            return frame[start:]
        return None
    if ethertype == _ETHERTYPE_IPV6:
        if len(frame) - start >= 6 and frame[start] >> 4 == 6:
            plen = int.from_bytes(frame[start + 4 : start + 6], "big")
            end = start + 40 + plen
            if plen and end < len(frame):  # plen 0 may mean a jumbogram
                return frame[start:end]
            return frame[start:]
        return None
    return None


def _unwrap_ethernet(frame: bytes) -> bytes | None:
    if len(frame) < 14:
        return None
    pos = 12
    ethertype = int.from_bytes(frame[pos : pos + 2], "big")
    while ethertype in _ETHERTYPE_VLAN:
        pos += 4
        if len(frame) < pos + 2:
            return None
        ethertype = int.from_bytes(frame[pos : pos + 2], "big")
    return _ip_payload(frame, pos + 2, ethertype)


def _unwrap_sll(frame: bytes) -> bytes | None:
    # packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2)
    if len(frame) < 16:
        return None
    return _ip_payload(frame, 16, int.from_bytes(frame[14:16], "big"))


def _unwrap_sll2(frame: bytes) -> bytes | None:
    # protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1) addr len(1) addr(8)
    if len(frame) < 20:
        return None
    return _ip_payload(frame, 20, int.from_bytes(frame[0:2], "big"))
