"""Helpers for the wire tests: slow reference checksums, hand-made packets, strategies.

Everything here is deliberately naive (loops over 16-bit words, bytearray
surgery) so that it shares no code and no tricks with ``tcpstack.wire``.
"""

from __future__ import annotations

import socket
import struct

from hypothesis import strategies as st

from tcpstack.wire import (
    EOL,
    NOP,
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TS,
    OPT_WSCALE,
    SACK_PERM_OPT,
    Opt,
    Segment,
    mss_opt,
    sack_opt,
    ts_opt,
    wscale_opt,
)

V4_SRC, V4_DST = "198.18.0.1", "198.18.0.2"
V6_SRC, V6_DST = "fd00::1", "fd00::2"


def packed(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


# ---------------------------------------------------------------- reference checksum


def ref_ones_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1, word by word with end-around carry."""
    if len(data) % 2:
        data = data + b"\0"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes, initial: int = 0) -> int:
    return ~ref_ones_sum(data, initial) & 0xFFFF


def ref_pseudo_header(src: bytes, dst: bytes, length: int, proto: int = 6) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


# ---------------------------------------------------------------- hand-made packets


def raw_tcp(
    src: str,
    dst: str,
    *,
    sport: int = 40000,
    dport: int = 80,
    seq: int = 1000,
    ack: int = 0,
    flags: int = 0x10,
    window: int = 1024,
    urg: int = 0,
    options: bytes = b"",
    payload: bytes = b"",
    doff: int | None = None,
    reserved: int = 0,
    checksum: int | None = None,
) -> bytes:
    """A TCP segment from raw parts; options are not padded for you."""
    if doff is None:
        doff = (20 + len(options)) // 4
    off_flags = (doff << 12) | (reserved << 9) | flags
    hdr = struct.pack("!HHIIHHHH", sport, dport, seq, ack, off_flags, window, 0, urg)
    seg = hdr + options + payload
    if checksum is None:
        checksum = ref_checksum(
            seg, ref_ones_sum(ref_pseudo_header(packed(src), packed(dst), len(seg)))
        )
    return seg[:16] + struct.pack("!H", checksum) + seg[18:]


def raw_ipv4(
    src: str,
    dst: str,
    payload: bytes,
    *,
    proto: int = 6,
    ttl: int = 64,
    ident: int = 0,
    frag: int = 0x4000,
    options: bytes = b"",
    total: int | None = None,
    ihl: int | None = None,
    checksum: int | None = None,
) -> bytes:
    if ihl is None:
        ihl = 5 + len(options) // 4
    if total is None:
        total = 20 + len(options) + len(payload)
    hdr = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            total,
            ident,
            frag,
            ttl,
            proto,
            0,
            packed(src),
            packed(dst),
        )
        + options
    )
    if checksum is None:
        checksum = ref_checksum(hdr)
    return hdr[:10] + struct.pack("!H", checksum) + hdr[12:] + payload


def raw_ipv6(
    src: str,
    dst: str,
    payload: bytes,
    *,
    nh: int = 6,
    hlim: int = 64,
    plen: int | None = None,
    exts: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """IPv6 with extension headers ``exts``: (type, body after next-header/length)."""
    chain = b""
    types = [t for t, _ in exts] + [nh]
    for i, (_t, body) in enumerate(exts):
        assert (len(body) + 2) % 8 == 0, "extension header length must be a multiple of 8"
        chain += bytes((types[i + 1], (len(body) + 2) // 8 - 1)) + body
    if plen is None:
        plen = len(chain) + len(payload)
    hdr = struct.pack("!IHBB16s16s", 6 << 28, plen, types[0], hlim, packed(src), packed(dst))
    return hdr + chain + payload


def ipv4_insert_options(pkt: bytes, options: bytes) -> bytes:
    """Give a plain IPv4 packet header options (fixing IHL, total length, checksum)."""
    assert len(options) % 4 == 0
    hdr = bytearray(pkt[:20])
    hdr[0] = 0x40 | (5 + len(options) // 4)
    struct.pack_into("!H", hdr, 2, len(pkt) + len(options))
    struct.pack_into("!H", hdr, 10, 0)
    full = bytes(hdr) + options
    full = full[:10] + struct.pack("!H", ref_checksum(full)) + full[12:]
    return full + pkt[20:]


def ipv6_insert_exts(pkt: bytes, exts: tuple[tuple[int, bytes], ...]) -> bytes:
    """Put extension headers between a plain IPv6 header and its TCP segment."""
    src, dst = pkt[8:24], pkt[24:40]
    return raw_ipv6(
        socket.inet_ntop(socket.AF_INET6, src), socket.inet_ntop(socket.AF_INET6, dst), pkt[40:],
        hlim=pkt[7], exts=exts,
    )  # fmt: skip


def fix_ipv4_checksum(pkt: bytes) -> bytes:
    hl = (pkt[0] & 15) * 4
    hdr = pkt[:10] + b"\0\0" + pkt[12:hl]
    return hdr[:10] + struct.pack("!H", ref_checksum(hdr)) + pkt[12:]


# ---------------------------------------------------------------- strategies

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

# Kinds with no special meaning to us (everything but EOL..SACK and TS).
unknown_kinds = st.integers(6, 255).filter(lambda k: k != OPT_TS)

single_option = st.one_of(
    st.just(NOP),
    u16.map(mss_opt),
    st.integers(0, 255).map(wscale_opt),
    st.just(SACK_PERM_OPT),
    st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(sack_opt),
    st.tuples(u32, u32).map(lambda t: ts_opt(*t)),
    st.builds(Opt, unknown_kinds, st.binary(max_size=12)),
)


def option_len(opt: Opt) -> int:
    kind, value = opt
    if kind in (OPT_NOP, OPT_EOL):
        return 1
    if kind == OPT_MSS:
        return 4
    if kind == OPT_WSCALE:
        return 3
    if kind == OPT_SACK_PERM:
        return 2
    if kind == OPT_SACK:
        return 2 + 8 * len(value)  # type: ignore[arg-type]
    if kind == OPT_TS:
        return 10
    return 2 + len(value)  # type: ignore[arg-type]


@st.composite
def option_lists(draw: st.DrawFn) -> tuple[Opt, ...]:
    """Options that survive a round trip: at most 40 bytes, and an EOL last
    whenever zero padding would otherwise be read back as one."""
    out: list[Opt] = []
    used = 0
    for opt in draw(st.lists(single_option, max_size=10)):
        if used + option_len(opt) <= 39:
            out.append(opt)
            used += option_len(opt)
    if used % 4 or (used < 40 and draw(st.booleans())):
        out.append(EOL)
    return tuple(out)


payloads = st.one_of(st.binary(max_size=64), st.binary(min_size=1000, max_size=1600))

segments = st.builds(
    Segment,
    u16,
    u16,
    u32,
    u32,
    st.integers(0, 0x1FF),
    u16,
    u16,
    option_lists(),
    payloads,
)

ipv4_addrs = st.ip_addresses(v=4).map(str)
ipv6_addrs = st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed))
