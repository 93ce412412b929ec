"""IPv4 (RFC 791) and IPv6 (RFC 8200) around TCP: the per-packet entry points.

``parse_ip_tcp`` is the one call the stack makes per received packet, and
``build_ip_tcp`` the one per sent packet.  Both have a fast path for the
plain case (IPv4 without options, IPv6 without extension headers) that
unpacks IP and TCP headers with a single precompiled ``struct.Struct`` and
checks both checksums with one ``int.from_bytes`` over the packet; anything
else -- and every error -- goes through the general path, which names the
problem precisely.

What is accepted, and why the rest is refused:

- IPv4 (RFC 791 §3.1): IHL >= 5 with options validated (type, length) and
  skipped; the total length is honoured and link-layer padding after it is
  ignored; the header checksum is verified.  Fragments (MF set or a non-zero
  fragment offset) are refused: there is no reassembly here, and TCP peers
  avoid fragmentation with DF and MSS (RFC 9293 §3.7.1, §3.7.2).  Source
  route options (LSRR, SSRR) are refused because the pseudo-header would need
  the final destination from the route (Linux drops them too by default,
  ``accept_source_route = 0``).
- IPv6 (RFC 8200 §3, §4): Hop-by-Hop Options (only directly after the
  header, §4.1) and Destination Options (§4.6) are walked and skipped; an
  option whose type we do not process and whose two high-order bits ask for
  a discard (§4.2) -- Jumbo Payload, Home Address -- makes the packet
  malformed.  Routing, Fragment, AH, ESP and the other extension headers are
  refused: each would change what the pseudo-header (§8.1) or the payload
  means.

With ``verify_checksum=False`` neither the IPv4 header checksum nor the TCP
checksum is verified -- for input whose checksums were offloaded (a
virtio-net header with NEEDS_CSUM) or captures taken before offload.

Addresses are returned as ``socket.inet_ntop`` spells them ("198.18.0.2",
"fd00::2"); the conversions are memoized in small bounded dicts because an
``inet_ntop`` per packet costs more than the header parse.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .checksum import Buffer
from .errors import IPChecksumError, MalformedPacket, NotTcp
from .tcp import (
    _FLAGS_MASK,
    IP_ECN_SHIFT,
    Segment,
    _checksum_error,
    _options,
    _parse_tcp,
    _tcp_header,
)

__all__ = ["IPPacket", "build_ip_tcp", "ip_version", "parse_ip", "parse_ip_tcp"]

PROTO_TCP = 6

# Fast paths: IP and TCP headers in one unpack.  IPv4 fields as 16-bit words
# and addresses as 32-bit ints, which is what the checksum arithmetic wants.
_IP4_TCP = struct.Struct("!HHHHHHIIHHIIHHHH")  # 40 bytes
_IP6_TCP = struct.Struct("!IHBB16s16sHHIIHHHH")  # 60 bytes
# General path, and building.
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")

_IP4_DF = 0x4000
_IP4_MF = 0x2000
_IP4_OFFMASK = 0x1FFF

_PROTO_NAMES = {
    1: "ICMP",
    2: "IGMP",
    4: "IPv4-in-IP",
    17: "UDP",
    41: "IPv6-in-IP",
    47: "GRE",
    58: "ICMPv6",
    59: "No Next Header",
    132: "SCTP",
}

# RFC 8200 §4 and the IANA "IPv6 Extension Header Types" registry, minus the
# two we skip (0 Hop-by-Hop Options, 60 Destination Options).
_IPV6_UNSUPPORTED = {
    43: "Routing",
    44: "Fragment",
    50: "ESP",
    51: "AH",
    135: "Mobility",
    139: "HIP",
    140: "Shim6",
    253: "Experimental",
    254: "Experimental",
}
_IPV6_SKIPPED = {0: "Hop-by-Hop Options", 60: "Destination Options"}
_IPV6_OPT_NAMES = {0xC2: "Jumbo Payload", 0xC9: "Home Address"}

_IPV4_SOURCE_ROUTE = {131: "loose source route", 137: "strict source route"}


@dataclass(slots=True)
class IPPacket:
    """The IP layer only, for tools (the pcap tracer) that want it.

    ``header_len`` counts the IPv6 extension headers that were skipped;
    ``payload`` is the upper-layer bytes (to the total/payload length, a
    memoryview into the packet).  ``ttl`` is the IPv6 hop limit for IPv6.
    ``src_packed``/``dst_packed`` are the addresses as ``parse_tcp`` wants them.
    """

    version: int
    src: str
    dst: str
    proto: int
    ttl: int
    header_len: int
    payload: memoryview
    src_packed: bytes
    dst_packed: bytes


# ---------------------------------------------------------------- address memos

_CACHE_MAX = 4096
_ntop4_int: dict[int, str] = {}  # IPv4 address as int -> text (fast path)
_ntop_bytes: dict[bytes, str] = {}  # packed 4 or 16 bytes -> text
_pton_str: dict[str, tuple[bytes, int, bool]] = {}  # text -> (packed, sum mod 0xFFFF, is IPv6)


def _ntop4(addr: int) -> str:
    if len(_ntop4_int) >= _CACHE_MAX:
        _ntop4_int.clear()
    text = _ntop4_int[addr] = socket.inet_ntop(socket.AF_INET, addr.to_bytes(4, "big"))
    return text


def _ntop(packed: bytes) -> str:
    text = _ntop_bytes.get(packed)
    if text is None:
        if len(_ntop_bytes) >= _CACHE_MAX:
            _ntop_bytes.clear()
        family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
        text = _ntop_bytes[packed] = socket.inet_ntop(family, packed)
    return text


def _pton(addr: str) -> tuple[bytes, int, bool]:
    try:
        v6 = ":" in addr
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr)
    except (OSError, TypeError, ValueError):
        raise ValueError(f"invalid IP address {addr!r}") from None
    if len(_pton_str) >= _CACHE_MAX:
        _pton_str.clear()
    entry = _pton_str[addr] = (packed, int.from_bytes(packed, "big") % 0xFFFF, v6)
    return entry


# ---------------------------------------------------------------- general parse


def ip_version(buf: Buffer) -> int:
    """The IP version nibble of ``buf`` (4 or 6 for packets we parse)."""
    if not len(buf):
        raise MalformedPacket("empty packet")
    return buf[0] >> 4


def _check_ipv4_options(buf: Buffer, hl: int) -> None:
    """RFC 791 §3.1 options: single-octet EOL/NOP or type, length (>= 2), data."""
    i = 20
    while i < hl:
        kind = buf[i]
        if kind == 0:  # End of Option List
            return
        if kind == 1:  # No Operation
            i += 1
            continue
        if i + 1 >= hl:
            raise MalformedPacket(f"IPv4 option {kind} truncated: no length octet")
        olen = buf[i + 1]
        if olen < 2:
            raise MalformedPacket(f"IPv4 option {kind} length {olen} is illegal (minimum 2)")
        if i + olen > hl:
            raise MalformedPacket(
                f"IPv4 option {kind} length {olen} overruns header ({hl - i} bytes left)"
            )
        if kind in _IPV4_SOURCE_ROUTE:
            raise MalformedPacket(f"IPv4 option {kind} ({_IPV4_SOURCE_ROUTE[kind]}) not supported")
        i += olen


def _parse_ipv4(buf: Buffer, n: int, verify_checksum: bool) -> IPPacket:
    if n < 20:
        raise MalformedPacket(f"truncated IPv4 header: {n} bytes, need 20")
    vihl, _tos, total, _ident, frag, ttl, proto, csum, src, dst = _IP4.unpack_from(buf)
    ihl = vihl & 0x0F
    hl = ihl << 2
    if ihl < 5:
        raise MalformedPacket(f"bad IPv4 header length {hl} (IHL {ihl})")
    if hl > n:
        raise MalformedPacket(f"truncated IPv4 header: {n} bytes, IHL {ihl} says {hl}")
    if verify_checksum:
        s = int.from_bytes(buf[:hl], "big")  # never 0: the version nibble is 4
        if s % 0xFFFF:
            expected = -(s - csum) % 0xFFFF
            raise IPChecksumError(
                f"bad IPv4 header checksum 0x{csum:04x} (expected 0x{expected:04x})"
            )
    if total < hl:
        raise MalformedPacket(f"IPv4 total length {total} shorter than header {hl}")
    if total > n:
        raise MalformedPacket(f"truncated IPv4 packet: total length {total}, have {n} bytes")
    if frag & (_IP4_MF | _IP4_OFFMASK):
        raise MalformedPacket(
            f"IPv4 fragment (offset {frag & _IP4_OFFMASK}, MF={frag >> 13 & 1}) not supported"
        )
    if hl > 20:
        _check_ipv4_options(buf, hl)
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    return IPPacket(4, _ntop(src), _ntop(dst), proto, ttl, hl, mv[hl:total], src, dst)


def _check_ipv6_options(buf: Buffer, i: int, end: int, header: str) -> None:
    """RFC 8200 §4.2 TLV-encoded options of a Hop-by-Hop or Destination Options header."""
    while i < end:
        kind = buf[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 2 > end:
            raise MalformedPacket(f"IPv6 {header} option 0x{kind:02x} truncated: no length octet")
        olen = buf[i + 1]
        if i + 2 + olen > end:
            raise MalformedPacket(
                f"IPv6 {header} option 0x{kind:02x} length {olen} overruns header"
            )
        # PadN (1) and anything whose action bits are 00 ("skip over this
        # option") are skipped; 01, 10 and 11 all say "discard the packet".
        if kind & 0xC0:
            name = _IPV6_OPT_NAMES.get(kind)
            label = f"0x{kind:02x} ({name})" if name else f"0x{kind:02x}"
            raise MalformedPacket(f"IPv6 {header} option {label} not supported")
        i += 2 + olen


def _parse_ipv6(buf: Buffer, n: int) -> IPPacket:
    if n < 40:
        raise MalformedPacket(f"truncated IPv6 header: {n} bytes, need 40")
    _vtf, plen, nh, hlim, src, dst = _IP6.unpack_from(buf)
    end = 40 + plen
    if end > n:
        raise MalformedPacket(f"truncated IPv6 packet: payload length {plen}, have {n - 40} bytes")
    off = 40
    while nh in _IPV6_SKIPPED:
        header = _IPV6_SKIPPED[nh]
        if nh == 0 and off != 40:
            raise MalformedPacket(
                "IPv6 Hop-by-Hop Options header not directly after the IPv6 header"
            )
        if off + 8 > end:
            raise MalformedPacket(f"truncated IPv6 {header} header: {end - off} bytes, need 8")
        hlen = (buf[off + 1] + 1) << 3
        if off + hlen > end:
            raise MalformedPacket(
                f"IPv6 {header} header length {hlen} overruns payload ({end - off} bytes left)"
            )
        _check_ipv6_options(buf, off + 2, off + hlen, header)
        nh = buf[off]
        off += hlen
    if nh in _IPV6_UNSUPPORTED:
        raise MalformedPacket(f"IPv6 next header {nh} ({_IPV6_UNSUPPORTED[nh]}) not supported")
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    return IPPacket(6, _ntop(src), _ntop(dst), nh, hlim, off, mv[off:end], src, dst)


def parse_ip(buf: Buffer, verify_checksum: bool = True) -> IPPacket:
    """Parse the IP layer (IPv4 or IPv6) of ``buf``; the payload is not looked at.

    Raises ``MalformedPacket`` (``IPChecksumError`` for a bad IPv4 header
    checksum) and nothing else for any content of ``buf``.
    """
    n = len(buf)
    if not n:
        raise MalformedPacket("empty packet")
    version = buf[0] >> 4
    if version == 4:
        return _parse_ipv4(buf, n, verify_checksum)
    if version == 6:
        return _parse_ipv6(buf, n)
    raise MalformedPacket(f"unsupported IP version {version}")


def _parse_ip_tcp_general(buf: Buffer, verify_checksum: bool) -> tuple[str, str, Segment]:
    pkt = parse_ip(buf, verify_checksum)
    if pkt.proto != PROTO_TCP:
        name = _PROTO_NAMES.get(pkt.proto)
        raise NotTcp(f"not TCP: protocol {pkt.proto}" + (f" ({name})" if name else ""), pkt)
    addr_sum = int.from_bytes(pkt.src_packed, "big") + int.from_bytes(pkt.dst_packed, "big")
    return pkt.src, pkt.dst, _parse_tcp(pkt.payload, addr_sum, verify_checksum)


# ---------------------------------------------------------------- per-packet calls


def parse_ip_tcp(buf: Buffer, verify_checksum: bool = True, ecn: bool = False) -> tuple[str, str, Segment]:
    """Parse an IPv4 or IPv6 packet carrying TCP: (src address, dst address, Segment).

    The segment's payload is a memoryview into ``buf`` (b"" when empty): pass
    an immutable ``bytes``, or a buffer that is not reused while the payload
    is held.  Raises ``MalformedPacket`` -- ``IPChecksumError`` for a bad
    IPv4 header checksum, ``ChecksumError`` for a bad TCP checksum -- and
    nothing else.

    ``ecn``: the IP header's ECN field goes into the segment's flags as the
    pseudo flags ``IP_ECT0``/``IP_ECT1``/``IP_CE`` (``wire.tcp``), for the
    engine; a not-ECT packet costs one test of a word already unpacked.
    """
    n = len(buf)
    if n >= 40:
        b0 = buf[0]
        if b0 == 0x45:  # IPv4 without options
            (
                w0,  # version, IHL, TOS
                total,
                ident,
                frag,
                w4,  # TTL, protocol
                ipsum,
                src,
                dst,
                sport,
                dport,
                seq,
                ack,
                off_flags,
                window,
                tcpsum,
                urg,
            ) = _IP4_TCP.unpack_from(buf)
            hl = (off_flags >> 12) << 2
            if (
                w4 & 0xFF == PROTO_TCP
                and not frag & (_IP4_MF | _IP4_OFFMASK)
                and 40 <= total <= n
                and 20 <= hl <= total - 20
            ):
                if verify_checksum:
                    ipw = w0 + total + ident + frag + w4 + ipsum
                    if (ipw + src + dst) % 0xFFFF:  # 32-bit words ≡ sum of halves mod 0xFFFF
                        return _parse_ip_tcp_general(buf, verify_checksum)  # names the error
                    s = int.from_bytes(buf if total == n else memoryview(buf)[:total], "big")
                    if total & 1:
                        s <<= 8
                    # Whole packet minus the IPv4 header words except the
                    # addresses, plus PTCL and TCP length: the TCP checksum sum.
                    s += 6 + total - 20 - ipw
                    if s % 0xFFFF:
                        raise _checksum_error(s, tcpsum)
                seg = Segment(
                    sport,
                    dport,
                    seq,
                    ack,
                    off_flags & _FLAGS_MASK,
                    window,
                    urg,
                    _options(buf, 40, 20 + hl) if hl > 20 else (),
                    memoryview(buf)[20 + hl : total] if total > 20 + hl else b"",
                )
                if w0 & 3 and ecn:  # RFC 3168 §5: the ECN field, low bits of the TOS octet
                    seg.flags |= (w0 & 3) << IP_ECN_SHIFT
                return _ntop4_int.get(src) or _ntop4(src), _ntop4_int.get(dst) or _ntop4(dst), seg
        elif b0 >> 4 == 6 and n >= 60 and buf[6] == PROTO_TCP:  # IPv6, no extension headers
            (
                vtf,
                plen,
                nh,
                hlim,
                src6,
                dst6,
                sport,
                dport,
                seq,
                ack,
                off_flags,
                window,
                tcpsum,
                urg,
            ) = _IP6_TCP.unpack_from(buf)
            hl = (off_flags >> 12) << 2
            end = 40 + plen
            if end <= n and 20 <= hl <= plen:
                if verify_checksum:
                    s = int.from_bytes(buf if end == n else memoryview(buf)[:end], "big")
                    if end & 1:
                        s <<= 8
                    # Drop the first 8 header bytes; the payload length in them
                    # stands for the pseudo-header's upper-layer length; add NH.
                    s += 6 - vtf - (nh << 8 | hlim)
                    if s % 0xFFFF:
                        raise _checksum_error(s, tcpsum)
                seg = Segment(
                    sport,
                    dport,
                    seq,
                    ack,
                    off_flags & _FLAGS_MASK,
                    window,
                    urg,
                    _options(buf, 60, 40 + hl) if hl > 20 else (),
                    memoryview(buf)[40 + hl : end] if end > 40 + hl else b"",
                )
                if vtf & 0x300000 and ecn:  # the ECN field, low bits of the Traffic Class
                    seg.flags |= (vtf >> 20 & 3) << IP_ECN_SHIFT
                return _ntop_bytes.get(src6) or _ntop(src6), _ntop_bytes.get(dst6) or _ntop(dst6), seg
    src_s, dst_s, seg = _parse_ip_tcp_general(buf, verify_checksum)
    if ecn:
        field = buf[1] & 3 if buf[0] >> 4 == 4 else buf[1] >> 4 & 3
        seg.flags |= field << IP_ECN_SHIFT
    return src_s, dst_s, seg


_IP4_FIXED_WORDS = 0x4500 + _IP4_DF  # version/IHL/TOS word + flags/fragment word


def build_ip_tcp(
    src: str,
    dst: str,
    seg: Segment,
    ttl: int = 64,
    ident: int = 0,
    partial_csum: bool = False,
    tos: int = 0,
) -> bytes:
    """One packet: IPv4 (DF set) if ``src`` has no ':', else IPv6 (hop limit ``ttl``).

    ``partial_csum``: checksum offload -- the TCP checksum field holds only the
    pseudo-header sum for the device to complete (see ``tcp._tcp_header``).
    ``tos``: the IPv4 TOS octet / IPv6 Traffic Class (RFC 2474 DSCP in the top
    six bits, RFC 3168 ECN in the low two), 0..255.

    Raises ``ValueError`` for addresses, ``ttl``/``ident`` or a segment that
    cannot be put on the wire.
    """
    s_packed, s_sum, v6 = _pton_str.get(src) or _pton(src)
    d_packed, d_sum, d_v6 = _pton_str.get(dst) or _pton(dst)
    if v6 != d_v6:
        raise ValueError(f"source {src!r} and destination {dst!r} are different IP versions")
    payload = seg.payload
    try:
        if not v6:
            tcp = _tcp_header(seg, s_sum + d_sum + PROTO_TCP, 0xFFFF - 20, partial_csum)
            total = 20 + len(tcp) + len(payload)
            csum = -(_IP4_FIXED_WORDS + tos + total + ident + (ttl << 8 | PROTO_TCP) + s_sum + d_sum)
            ip = _IP4.pack(
                0x45, tos, total, ident, _IP4_DF, ttl, PROTO_TCP, csum % 0xFFFF, s_packed, d_packed
            )
        else:
            tcp = _tcp_header(seg, s_sum + d_sum + PROTO_TCP, 0xFFFF, partial_csum)
            if tos and not 0 <= tos <= 255:
                raise struct.error
            ip = _IP6.pack(
                0x60000000 | tos << 20, len(tcp) + len(payload), PROTO_TCP, ttl, s_packed, d_packed
            )
    except (struct.error, TypeError):
        raise ValueError(
            f"cannot build IP header: ttl={ttl!r} (0..255), ident={ident!r} (0..65535), "
            f"tos={tos!r} (0..255)"
        ) from None
    return b"".join((ip, tcp, payload))
