"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages, as TCP needs them.

The stack never sends ICMP; it reads the error messages a router or the peer
sends about one of *our* packets (RFC 9293 §3.9.2.2 / RFC 1122 §4.2.3.9).
An error message quotes the start of the packet that caused it: its IP
header and at least the first 8 bytes of its transport header (RFC 792;
RFC 4443 §2.4 (c) quotes as much as fits in 1280 bytes) -- for TCP, the
ports and the sequence number, which is all the stack needs to find the
connection and to check that the error is about data in flight (RFC 5927
§4.1).

``parse_icmp`` takes the IP layer (``ip.parse_ip``'s ``IPPacket``) and returns
an ``IcmpMessage``; informational messages (echo and the like) parse too,
with no quoted packet.  Everything malformed raises ``MalformedPacket``
(``ChecksumError`` for a bad ICMP checksum), like the rest of the wire layer:
a message shorter than its header, a quoted IP header that is not an IP
header of the same version or too short to hold 8 transport bytes.

``build_icmp_error`` makes error messages (tests, the simulator).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .checksum import Buffer
from .errors import ChecksumError, MalformedPacket

__all__ = [
    "ICMP4_DEST_UNREACH",
    "ICMP4_PARAMETER_PROBLEM",
    "ICMP4_REDIRECT",
    "ICMP4_SOURCE_QUENCH",
    "ICMP4_TIME_EXCEEDED",
    "ICMP6_DEST_UNREACH",
    "ICMP6_PACKET_TOO_BIG",
    "ICMP6_PARAMETER_PROBLEM",
    "ICMP6_TIME_EXCEEDED",
    "PROTO_ICMP",
    "PROTO_ICMPV6",
    "IcmpMessage",
    "build_icmp_error",
    "parse_icmp",
]

PROTO_ICMP = 1
PROTO_ICMPV6 = 58

# RFC 792 types that quote a packet (errors).
ICMP4_DEST_UNREACH = 3
ICMP4_SOURCE_QUENCH = 4  # deprecated by RFC 6633, still parsed
ICMP4_REDIRECT = 5
ICMP4_TIME_EXCEEDED = 11
ICMP4_PARAMETER_PROBLEM = 12
ICMP4_FRAG_NEEDED = 4  # destination unreachable code 4 (RFC 1191)
_ICMP4_ERRORS = frozenset({ICMP4_DEST_UNREACH, ICMP4_SOURCE_QUENCH, ICMP4_REDIRECT,
                           ICMP4_TIME_EXCEEDED, ICMP4_PARAMETER_PROBLEM})

# RFC 4443 §2.1: types 0-127 are errors; these four are defined.
ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAMETER_PROBLEM = 4
_ICMP6_ERRORS = frozenset({ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED,
                           ICMP6_PARAMETER_PROBLEM})

# IPv6 extension headers a quoted packet may carry before its transport header
# (RFC 8200 §4): generic length encoding; the Fragment header (44) is 8 bytes.
_IPV6_EXT = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44

_HDR = struct.Struct("!BBHI")  # type, code, checksum, rest-of-header word
_QUOTE_L4 = struct.Struct("!HHI")  # source port, destination port, sequence number


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """One ICMP or ICMPv6 message.

    ``version`` is the IP version (4: ICMP, 6: ICMPv6); ``src``/``dst`` are the
    outer addresses (who sent the message, to whom).  ``info`` is the 32-bit
    word after the checksum: the next-hop MTU of a fragmentation-needed
    message is its low 16 bits (RFC 1191 §4), the MTU of an ICMPv6 Packet Too
    Big all 32 (RFC 4443 §3.2); a parameter problem's pointer is its top
    byte (ICMPv4) or all of it (ICMPv6).  For error messages ``quoted`` is
    True and the ``orig_*`` fields describe the quoted packet: its addresses,
    protocol, ports and (for TCP) sequence number.
    """

    version: int
    src: str
    dst: str
    type: int
    code: int
    info: int
    quoted: bool = False
    orig_src: str = ""
    orig_dst: str = ""
    orig_proto: int = 0
    orig_sport: int = 0
    orig_dport: int = 0
    orig_seq: int = 0

    @property
    def mtu(self) -> int:
        """The MTU a fragmentation-needed (ICMPv4 3/4) or Packet Too Big message reports, else 0."""
        if self.version == 4:
            if self.type == ICMP4_DEST_UNREACH and self.code == ICMP4_FRAG_NEEDED:
                return self.info & 0xFFFF
            return 0
        return self.info if self.type == ICMP6_PACKET_TOO_BIG else 0


def _ntop(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def _verify(data: Buffer, start: int) -> None:
    """One's-complement sum over ``data`` (a bytes-like whose sum includes any
    pseudo-header) must be 0xFFFF (RFC 1071)."""
    n = len(data)
    s = int.from_bytes(data, "big")
    if n & 1:
        s <<= 8
    s += start
    if not s or s % 0xFFFF:  # an all-zero message sums to 0, not 0xFFFF
        raise ChecksumError("bad ICMP checksum")


def _quoted_v4(q: memoryview) -> tuple[str, str, int, int]:
    """The quoted IPv4 header: (src, dst, protocol, offset of the transport header)."""
    n = len(q)
    if n < 20:
        raise MalformedPacket(f"ICMP quotes {n} bytes, need an IPv4 header (20)")
    if q[0] >> 4 != 4:
        raise MalformedPacket(f"ICMP quotes IP version {q[0] >> 4}, not 4")
    hl = (q[0] & 0x0F) << 2
    if hl < 20:
        raise MalformedPacket(f"ICMP quotes a bad IPv4 header length {hl}")
    if (q[6] << 8 | q[7]) & 0x1FFF:
        raise MalformedPacket("ICMP quotes a non-first IPv4 fragment (no transport header)")
    return _ntop(bytes(q[12:16])), _ntop(bytes(q[16:20])), q[9], hl


def _quoted_v6(q: memoryview) -> tuple[str, str, int, int]:
    """The quoted IPv6 header (extension headers skipped): (src, dst, next header, offset)."""
    n = len(q)
    if n < 40:
        raise MalformedPacket(f"ICMPv6 quotes {n} bytes, need an IPv6 header (40)")
    if q[0] >> 4 != 6:
        raise MalformedPacket(f"ICMPv6 quotes IP version {q[0] >> 4}, not 6")
    nh, off = q[6], 40
    while nh in _IPV6_EXT or nh == _IPV6_FRAGMENT:
        if off + 8 > n:
            raise MalformedPacket("ICMPv6 quotes a truncated IPv6 extension header")
        if nh == _IPV6_FRAGMENT:
            if (q[off + 2] << 8 | q[off + 3]) & 0xFFF8:
                raise MalformedPacket("ICMPv6 quotes a non-first fragment (no transport header)")
            hlen = 8
        else:
            hlen = (q[off + 1] + 1) << 3
        nh = q[off]
        off += hlen
    return _ntop(bytes(q[8:24])), _ntop(bytes(q[24:40])), nh, off


def parse_icmp(version: int, src: str, dst: str, payload: Buffer,
               src_packed: bytes = b"", dst_packed: bytes = b"", verify_checksum: bool = True) -> IcmpMessage:
    """Parse the ICMP (``version`` 4) or ICMPv6 (6) message ``payload``, sent
    from ``src`` to ``dst``.  The ICMPv6 checksum covers a pseudo-header
    (RFC 4443 §2.3), so IPv6 needs the packed addresses when verifying."""
    mv = payload if isinstance(payload, memoryview) else memoryview(payload)
    n = len(mv)
    if n < 8:
        raise MalformedPacket(f"truncated ICMP header: {n} bytes, need 8")
    mtype, code, _csum, info = _HDR.unpack_from(mv)
    if verify_checksum:
        if version == 4:
            _verify(mv, 0)
        else:
            pseudo = int.from_bytes(src_packed, "big") + int.from_bytes(dst_packed, "big")
            _verify(mv, pseudo % 0xFFFF + n + 58)
    errors = _ICMP4_ERRORS if version == 4 else _ICMP6_ERRORS
    if mtype not in errors:
        return IcmpMessage(version, src, dst, mtype, code, info)
    q = mv[8:]
    osrc, odst, proto, off = _quoted_v4(q) if version == 4 else _quoted_v6(q)
    if len(q) < off + 8:
        raise MalformedPacket(
            f"ICMP quotes {len(q) - off} transport bytes, need 8 (RFC 792: 64 bits of the datagram)")
    sport, dport, sseq = _QUOTE_L4.unpack_from(q, off)
    return IcmpMessage(version, src, dst, mtype, code, info, True, osrc, odst, proto, sport, dport, sseq)


def _ones(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def build_icmp_error(src: str, dst: str, mtype: int, code: int, quoted: bytes, info: int = 0,
                     ttl: int = 64) -> bytes:
    """An ICMP (``src`` IPv4) or ICMPv6 error from ``src`` to ``dst`` quoting
    ``quoted`` (the start of the offending packet), with correct checksums."""
    v6 = ":" in src
    s_packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, src)
    d_packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, dst)
    body = _HDR.pack(mtype, code, 0, info & 0xFFFFFFFF) + quoted
    if v6:
        plen = len(body)
        pseudo = s_packed + d_packed + struct.pack("!II", plen, PROTO_ICMPV6)
        csum = 0xFFFF - _ones(pseudo + body)
        body = body[:2] + struct.pack("!H", csum) + body[4:]
        return struct.pack("!IHBB", 0x60000000, plen, PROTO_ICMPV6, ttl) + s_packed + d_packed + body
    csum = 0xFFFF - _ones(body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(body), 0, 0, ttl, PROTO_ICMP, 0, s_packed, d_packed)
    ip = ip[:10] + struct.pack("!H", 0xFFFF - _ones(ip)) + ip[12:]
    return ip + body
