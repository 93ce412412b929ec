"""The TCP header and its options: bytes <-> ``Segment``.

RFC 9293 §3.1 (header format)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Source Port          |       Destination Port        |
    |                        Sequence Number                        |
    |                    Acknowledgment Number                      |
    |  Data |       |A|C|E|U|A|P|R|S|F|                             |
    | Offset| Rsrvd |E|W|C|R|C|S|S|Y|I|            Window           |
    |       |       | |R|E|G|K|H|T|N|N|                             |
    |           Checksum            |         Urgent Pointer        |
    |                    Options                    |    Padding    |

``flags`` is the 9-bit field from AE (RFC 9768, the old RFC 3540 NS bit)
down to FIN.  The three remaining reserved bits are ignored on receipt and
sent as zero (RFC 9293 §3.1: "Reserved: A set of control bits reserved for
future use.  Must be zero in generated segments and must be ignored in
received segments").

Options (RFC 9293 §3.1, §3.2) are kept in wire order as ``Opt(kind, value)``:
MSS (RFC 9293 §3.7.1), Window Scale and Timestamps (RFC 7323 §2.2, §3.2),
SACK-Permitted and SACK (RFC 2018 §2, §3).  "The list of options may be
terminated by an EOL option"; we keep that EOL once, as ``Opt(0, None)``,
and ignore whatever follows it (padding).  A length octet below 2, an option
that overruns the header, or a known option with the wrong length makes the
segment malformed (RFC 9293 §3.1: "a TCP implementation MUST be prepared to
handle an illegal option length (e.g., zero); a suggested procedure is to
reset the connection and log the error cause" -- here the wire layer reports
it and the engine drops the segment).  Unknown options are kept as raw bytes
and re-emitted verbatim.

Parsing reads the fixed header with one precompiled ``struct.Struct``, takes
the payload as a memoryview slice (no copy), and has a fast path for the
option block every Linux data segment carries (NOP, NOP, Timestamps).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from .checksum import Buffer
from .errors import ChecksumError, MalformedPacket

__all__ = [
    "ACK",
    "AE",
    "CWR",
    "ECE",
    "EOL",
    "FIN",
    "NOP",
    "OPT_EOL",
    "OPT_MSS",
    "OPT_NOP",
    "OPT_SACK",
    "OPT_SACK_PERM",
    "OPT_TS",
    "OPT_WSCALE",
    "PSH",
    "RST",
    "SACK_PERM_OPT",
    "SYN",
    "URG",
    "Opt",
    "Segment",
    "build_tcp",
    "format_options",
    "mss_opt",
    "parse_tcp",
    "sack_opt",
    "ts_opt",
    "wscale_opt",
]

# Control bits (RFC 9293 §3.1; ECE/CWR RFC 3168 §6.1; AE RFC 9768 §2).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80
AE = 0x100
_FLAGS_MASK = 0x1FF
# The IP header's ECN field (RFC 3168 §5) as two pseudo flags above the TCP
# ones, set only by ``parse_ip_tcp(..., ecn=True)``: how a received CE mark
# reaches the engine without a field per segment.  Never on the wire.
IP_ECT1 = 0x400  # ECN field 01
IP_ECT0 = 0x800  # ECN field 10
IP_CE = 0xC00  # ECN field 11 (Congestion Experienced)
IP_ECN_SHIFT = 10

# Option kinds (RFC 9293 §3.2; RFC 7323; RFC 2018).
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TS = 8

MAX_OPTIONS_LEN = 40  # data offset is 4 bits: at most 15 * 4 = 60 header bytes


class Opt(NamedTuple):
    """One TCP option, in wire order.

    ``value`` by kind: EOL, NOP, SACK_PERM -> None; MSS, WSCALE -> int (the
    raw shift as sent); SACK -> ((left, right), ...); TS -> (tsval, tsecr);
    any other kind -> the raw value bytes (without kind and length octets).
    """

    kind: int
    value: object


NOP = Opt(OPT_NOP, None)
EOL = Opt(OPT_EOL, None)
SACK_PERM_OPT = Opt(OPT_SACK_PERM, None)


def mss_opt(n: int) -> Opt:
    """Maximum Segment Size (RFC 9293 §3.7.1), only in a SYN."""
    return Opt(OPT_MSS, n)


def wscale_opt(n: int) -> Opt:
    """Window Scale shift count (RFC 7323 §2.2), only in a SYN."""
    return Opt(OPT_WSCALE, n)


def sack_opt(blocks: Iterable[tuple[int, int]]) -> Opt:
    """SACK blocks (RFC 2018 §3): ((left edge, right edge), ...), at most 4."""
    return Opt(OPT_SACK, tuple((left, right) for left, right in blocks))


def ts_opt(val: int, ecr: int) -> Opt:
    """Timestamps (RFC 7323 §3.2): TSval and TSecr."""
    return Opt(OPT_TS, (val, ecr))


# ---------------------------------------------------------------- formatting

# tcpdump's order and letters (print-tcp.c tcp_flag_values): ACK is "." and
# comes after PSH; no flag at all prints as "none".
_FLAG_LETTERS = (
    (FIN, "F"),
    (SYN, "S"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "."),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "W"),
    (AE, "e"),
)
_FLAGS_STR = tuple(
    "".join(ch for bit, ch in _FLAG_LETTERS if f & bit) or "none" for f in range(_FLAGS_MASK + 1)
)


def flags_to_str(flags: int) -> str:
    """tcpdump's flag string for a flags value: ``S``, ``S.``, ``P.``, ``FP.``, ``R.``..."""
    return _FLAGS_STR[flags & _FLAGS_MASK]

# tcpdump's option names (print-tcp.c tcp_option_values); others "unknown-N".
_TCPDUMP_OPT_NAMES = {
    0: "eol",
    1: "nop",
    2: "mss",
    3: "wscale",
    4: "sackOK",
    5: "sack",
    6: "echo",
    7: "echoreply",
    8: "TS",
    11: "cc",
    12: "ccnew",
    13: "ccecho",
    19: "md5",
    20: "scps",
    28: "uto",
    29: "tcp-ao",
    30: "mptcp",
    34: "tfo",
    254: "exp",
}

# Names used in error messages.
_OPT_NAMES = {0: "EOL", 1: "NOP", 2: "MSS", 3: "WSCALE", 4: "SACK_PERM", 5: "SACK", 8: "TS"}


def _opt_name(kind: int) -> str:
    return _OPT_NAMES.get(kind) or f"kind {kind}"


def format_options(options: Iterable[Opt]) -> str:
    """Options in tcpdump's spelling: ``mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7``."""
    parts = []
    for kind, value in options:
        v: Any = value
        if kind == OPT_MSS or kind == OPT_WSCALE:
            parts.append(f"{_TCPDUMP_OPT_NAMES[kind]} {v}")
        elif kind == OPT_TS:
            parts.append(f"TS val {v[0]} ecr {v[1]}")
        elif kind == OPT_SACK:
            edges = "".join(f"{{{left}:{right}}}" for left, right in v)
            parts.append(f"sack {len(v)} {edges}")
        else:
            name = _TCPDUMP_OPT_NAMES.get(kind) or f"unknown-{kind}"
            parts.append(f"{name} 0x{bytes(v).hex()}" if v else name)
    return ",".join(parts)


# ---------------------------------------------------------------- the value type


@dataclass(slots=True)
class Segment:
    """A TCP segment as the engine sees it: validated fields, no bytes to pick at.

    ``window`` is the raw 16-bit field (unscaled).  ``payload`` is a
    memoryview into the received packet when parsed (no copy); equality
    compares payload contents whether bytes or memoryview.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urg: int = 0
    options: tuple[Opt, ...] = ()
    payload: bytes | memoryview = b""

    # Options are a handful of entries: a scan is cheaper than a dict built
    # per segment.  The first occurrence of a kind wins.
    @property
    def mss(self) -> int | None:
        for kind, value in self.options:
            if kind == OPT_MSS:
                return cast(int, value)
        return None

    @property
    def wscale(self) -> int | None:
        for kind, value in self.options:
            if kind == OPT_WSCALE:
                return cast(int, value)
        return None

    @property
    def sack_permitted(self) -> bool:
        for kind, _ in self.options:
            if kind == OPT_SACK_PERM:
                return True
        return False

    @property
    def sack_blocks(self) -> tuple[tuple[int, int], ...]:
        opts = self.options
        if len(opts) == 3 and opts[0][0] == opts[1][0] == OPT_NOP and opts[2][0] == OPT_TS:
            return ()  # Linux's NOP, NOP, TS on every data segment and ACK: no SACK
        for kind, value in opts:
            if kind == OPT_SACK:
                return cast("tuple[tuple[int, int], ...]", value)
        return ()

    @property
    def ts(self) -> tuple[int, int] | None:
        opts = self.options
        if len(opts) == 3 and opts[0][0] == opts[1][0] == OPT_NOP and opts[2][0] == OPT_TS:
            return cast("tuple[int, int]", opts[2][1])  # NOP, NOP, TS: the common case
        for kind, value in opts:
            if kind == OPT_TS:
                return cast("tuple[int, int]", value)
        return None

    @property
    def seg_len(self) -> int:
        """SEG.LEN (RFC 9293 §3.4): octets of data plus one each for SYN and FIN."""
        flags = self.flags
        return len(self.payload) + (flags & SYN and 1) + (flags & FIN and 1)

    @property
    def flags_str(self) -> str:
        """tcpdump's flag string: ``S``, ``S.``, ``.``, ``P.``, ``F.``, ``FP.``, ``R``, ``R.``."""
        return _FLAGS_STR[self.flags & _FLAGS_MASK]

    def describe(self) -> str:
        """One line, tcpdump-like: ``S. seq=1 ack=2 win=65535 len=0 <mss 1460,...>``."""
        flags = self.flags
        parts = [self.flags_str, f"seq={self.seq}"]
        if flags & ACK:
            parts.append(f"ack={self.ack}")
        parts.append(f"win={self.window}")
        if flags & URG:
            parts.append(f"urg={self.urg}")
        parts.append(f"len={len(self.payload)}")
        if self.options:
            parts.append(f"<{format_options(self.options)}>")
        return " ".join(parts)


# ---------------------------------------------------------------- parsing

_TCP_HDR = struct.Struct("!HHIIHHHH")  # ports, seq, ack, offset+flags, window, checksum, urgent
_NOP_NOP_TS = struct.Struct("!III")  # 0x0101080A, TSval, TSecr
_NOP_NOP_TS_WORD = 0x0101080A
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")
_SACK_BLOCKS = {n: struct.Struct(f"!{2 * n}I") for n in range(1, 5)}

# Exact total lengths of the options whose layout is fixed.
_FIXED_LEN = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERM: 2, OPT_TS: 10}

# Opt(kind, value) runs NamedTuple's Python-level __new__ (~0.3 µs); on the
# per-segment path we build the tuple directly (~0.15 µs).
_new_opt = tuple.__new__


def _parse_options(buf: Buffer, start: int, end: int) -> tuple[Opt, ...]:
    """Options between ``start`` and ``end`` (the data offset) of ``buf``."""
    out: list[Opt] = []
    i = start
    while i < end:
        kind = buf[i]
        if kind == OPT_NOP:
            out.append(NOP)
            i += 1
            continue
        if kind == OPT_EOL:
            out.append(EOL)  # the rest is padding (RFC 9293 §3.2)
            break
        if i + 1 >= end:
            raise MalformedPacket(f"option {_opt_name(kind)} truncated: no length octet")
        olen = buf[i + 1]
        if olen < 2:
            raise MalformedPacket(f"option {_opt_name(kind)} length {olen} is illegal (minimum 2)")
        if i + olen > end:
            raise MalformedPacket(
                f"option {_opt_name(kind)} length {olen} overruns header ({end - i} bytes left)"
            )
        want = _FIXED_LEN.get(kind)
        if want is not None and olen != want:
            raise MalformedPacket(
                f"option {_opt_name(kind)} length {olen} is wrong (must be {want})"
            )
        if kind == OPT_TS:
            out.append(_new_opt(Opt, (OPT_TS, _U32X2.unpack_from(buf, i + 2))))
        elif kind == OPT_MSS:
            out.append(_new_opt(Opt, (OPT_MSS, _U16.unpack_from(buf, i + 2)[0])))
        elif kind == OPT_WSCALE:
            out.append(_new_opt(Opt, (OPT_WSCALE, buf[i + 2])))
        elif kind == OPT_SACK_PERM:
            out.append(SACK_PERM_OPT)
        elif kind == OPT_SACK:
            n, rem = divmod(olen - 2, 8)
            if rem or not n:
                raise MalformedPacket(
                    f"option SACK length {olen} is wrong (must be 2 + 8*n, n >= 1)"
                )
            edges = _SACK_BLOCKS[n].unpack_from(buf, i + 2)  # n <= 4 since olen <= 40
            out.append(Opt(OPT_SACK, tuple(zip(edges[::2], edges[1::2], strict=True))))
        else:
            out.append(Opt(kind, bytes(buf[i + 2 : i + olen])))
        i += olen
    return tuple(out)


def _options(buf: Buffer, start: int, end: int) -> tuple[Opt, ...]:
    """Options, with a fast path for Linux's NOP, NOP, TS on every data segment."""
    if end - start == 12:
        word, tsval, tsecr = _NOP_NOP_TS.unpack_from(buf, start)
        if word == _NOP_NOP_TS_WORD:
            return (NOP, NOP, _new_opt(Opt, (OPT_TS, (tsval, tsecr))))
    return _parse_options(buf, start, end)


def _checksum_error(total: int, field: int) -> ChecksumError:
    """The error for a one's complement ``total`` (incl. the checksum ``field``) that is not -0."""
    expected = -(total - field) % 0xFFFF
    return ChecksumError(f"bad TCP checksum 0x{field:04x} (expected 0x{expected:04x})")


def _parse_tcp(buf: Buffer, addr_sum: int, verify_checksum: bool) -> Segment:
    """``buf`` is exactly the segment; ``addr_sum`` the sum of both addresses as integers."""
    n = len(buf)
    if n < 20:
        raise MalformedPacket(f"truncated TCP header: {n} bytes, need 20")
    sport, dport, seq, ack, off_flags, window, csum, urg = _TCP_HDR.unpack_from(buf)
    doff = off_flags >> 12
    hl = doff << 2
    if doff < 5:
        raise MalformedPacket(f"bad data offset {doff}")
    if hl > n:
        raise MalformedPacket(f"data offset {doff} ({hl} bytes) overruns segment of {n} bytes")
    if verify_checksum:
        total = int.from_bytes(buf, "big")
        if n & 1:
            total <<= 8
        total += addr_sum + 6 + n  # pseudo-header: addresses, PTCL, TCP length
        if total % 0xFFFF:  # a valid segment sums to -0 (0xFFFF); never +0, PTCL is 6
            raise _checksum_error(total, csum)
    options = _options(buf, 20, hl) if hl > 20 else ()
    payload = memoryview(buf)[hl:] if n > hl else b""  # a view, not a copy; b"" for none
    return Segment(sport, dport, seq, ack, off_flags & _FLAGS_MASK, window, urg, options, payload)


def _addr_sum(src: bytes, dst: bytes) -> int:
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError(
            f"addresses must both be 4 (IPv4) or 16 (IPv6) bytes, got {len(src)} and {len(dst)}"
        )
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big")


def parse_tcp(buf: Buffer, src: bytes, dst: bytes, verify_checksum: bool = True) -> Segment:
    """Parse one TCP segment (header + payload, nothing else) into a ``Segment``.

    ``src``/``dst`` are the packed IP addresses for the pseudo-header.
    Raises ``MalformedPacket`` (``ChecksumError`` for a bad checksum) and
    nothing else for any content of ``buf``.
    """
    return _parse_tcp(buf, _addr_sum(src, dst), verify_checksum)


# ---------------------------------------------------------------- building

_TCP_HDR_TS = struct.Struct("!HHIIHHHHIII")  # header + NOP, NOP, TS (32 bytes)
_MSS_PACK = struct.Struct("!BBH")
_WS_PACK = struct.Struct("!BBB")
_TS_PACK = struct.Struct("!BBII")
_SACK_PACK = {n: struct.Struct(f"!BB{2 * n}I") for n in range(1, 5)}
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by len % 4


def _build_options(options: tuple[Opt, ...]) -> bytes:
    """Serialise options in order and zero-pad to a multiple of 4 (RFC 9293 §3.1 Padding)."""
    parts: list[bytes] = []
    last = len(options) - 1
    for i, opt in enumerate(options):
        try:
            kind, value = opt
            v: Any = value
            if kind == OPT_NOP or kind == OPT_EOL or kind == OPT_SACK_PERM:
                if v is not None:
                    raise ValueError("takes no value (must be None)")
                if kind == OPT_NOP:
                    parts.append(b"\x01")
                elif kind == OPT_SACK_PERM:
                    parts.append(b"\x04\x02")
                else:
                    if i != last:
                        raise ValueError("EOL must be the last option")
                    parts.append(b"\x00")
            elif kind == OPT_TS:
                tsval, tsecr = v
                parts.append(_TS_PACK.pack(OPT_TS, 10, tsval, tsecr))
            elif kind == OPT_MSS:
                parts.append(_MSS_PACK.pack(OPT_MSS, 4, v))
            elif kind == OPT_WSCALE:
                parts.append(_WS_PACK.pack(OPT_WSCALE, 3, v))
            elif kind == OPT_SACK:
                n = len(v)
                if not 1 <= n <= 4:
                    raise ValueError(f"{n} SACK blocks (1 to 4 fit in the option space)")
                parts.append(_SACK_PACK[n].pack(OPT_SACK, 2 + 8 * n, *(e for b in v for e in b)))
            else:
                if not 0 <= kind <= 255:
                    raise ValueError("kind out of range 0..255")
                if not isinstance(v, bytes | bytearray | memoryview):
                    raise ValueError("value of an unknown kind must be the raw bytes")
                raw = bytes(v)
                if len(raw) > MAX_OPTIONS_LEN - 2:
                    raise ValueError(f"{len(raw)} value bytes do not fit in 40 bytes of options")
                parts.append(bytes((kind, 2 + len(raw))) + raw)
        except (struct.error, TypeError, ValueError) as exc:
            raise ValueError(f"cannot build option {opt!r}: {exc}") from None
    out = b"".join(parts)
    if len(out) > MAX_OPTIONS_LEN:
        raise ValueError(f"options need {len(out)} bytes, more than the 40 the header allows")
    return out + _PAD[len(out) & 3]


_FIELD_LIMITS = (
    ("src_port", 0xFFFF),
    ("dst_port", 0xFFFF),
    ("seq", 0xFFFFFFFF),
    ("ack", 0xFFFFFFFF),
    ("flags", _FLAGS_MASK),
    ("window", 0xFFFF),
    ("urg", 0xFFFF),
)


def _field_error(seg: Segment) -> ValueError:
    """Name the field that made packing fail (only on the error path)."""
    for name, limit in _FIELD_LIMITS:
        value = getattr(seg, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            return ValueError(
                f"cannot build segment: {name}={value!r} is not an integer 0..{limit}"
            )
    if not isinstance(seg.payload, bytes | bytearray | memoryview):
        return ValueError(f"cannot build segment: payload is {type(seg.payload).__name__}")
    return ValueError(f"cannot build segment {seg!r}")


def _tcp_header(seg: Segment, phsum: int, max_len: int = 0xFFFF, partial: bool = False) -> bytes:
    """Header and options with the checksum filled in.

    With ``partial`` (checksum offload, Linux's CHECKSUM_PARTIAL convention) the
    field holds the folded, *not* inverted, sum of the pseudo-header only, and
    the device (the kernel through a TUN with NEEDS_CSUM, or a simulated link
    that trusts its endpoints) completes it: the per-byte sum is skipped.

    ``phsum`` is the pseudo-header sum without the length (addresses + 6).
    The checksum is computed from the field values before packing (a 32-bit
    field is congruent to the sum of its two 16-bit halves mod 0xFFFF), so
    the header is packed once -- in one struct with the options when they
    are the usual NOP, NOP, TS.
    """
    options = seg.options
    ts_block = (
        len(options) == 3 and options[2][0] == OPT_TS and options[0] == NOP and options[1] == NOP
    )
    if ts_block:
        opt_bytes = b""
        hl = 32
    elif options:
        opt_bytes = _build_options(options)
        hl = 20 + len(opt_bytes)
    else:
        opt_bytes = b""
        hl = 20
    payload = seg.payload
    try:
        plen = len(payload)
    except TypeError:
        raise _field_error(seg) from None
    if hl + plen > max_len:
        raise ValueError(
            f"segment of {hl + plen} bytes (header {hl} + data {plen}) exceeds {max_len}"
        )
    flags = seg.flags
    if type(flags) is not int or flags & ~_FLAGS_MASK:
        raise _field_error(seg)
    off_flags = (hl << 10) | flags
    sport = seg.src_port
    dport = seg.dst_port
    sseq = seg.seq
    sack = seg.ack
    wnd = seg.window
    urg = seg.urg
    try:
        if partial:
            return _partial_header(seg, options, ts_block, opt_bytes, off_flags, phsum + hl + plen)
        total = sport + dport + sseq + sack + off_flags + wnd + urg + phsum + hl + plen
        if plen:
            data = int.from_bytes(payload, "big")
            total += data << 8 if plen & 1 else data
        # -total % 0xFFFF is the one's complement of the folded sum (a sum
        # of -0, 0xFFFF, gives 0).
        if ts_block:
            tsval, tsecr = cast("tuple[int, int]", options[2][1])
            total += _NOP_NOP_TS_WORD + tsval + tsecr
            return _TCP_HDR_TS.pack(
                sport, dport, sseq, sack, off_flags, wnd, -total % 0xFFFF, urg,
                _NOP_NOP_TS_WORD, tsval, tsecr,
            )  # fmt: skip
        if opt_bytes:
            total += int.from_bytes(opt_bytes, "big")  # header is 20 bytes: stays word-aligned
        header = _TCP_HDR.pack(sport, dport, sseq, sack, off_flags, wnd, -total % 0xFFFF, urg)
    except (struct.error, TypeError, ValueError, OverflowError):
        if ts_block:
            _build_options(options)  # raises the precise error for a bad TS value
        raise _field_error(seg) from None
    return header + opt_bytes if opt_bytes else header


def _partial_header(
    seg: Segment, options: tuple[Opt, ...], ts_block: bool, opt_bytes: bytes, off_flags: int, pseudo: int
) -> bytes:
    csum = (pseudo - 1) % 0xFFFF + 1  # folded one's-complement sum of the pseudo-header
    if ts_block:
        tsval, tsecr = cast("tuple[int, int]", options[2][1])
        return _TCP_HDR_TS.pack(
            seg.src_port, seg.dst_port, seg.seq, seg.ack, off_flags, seg.window, csum, seg.urg,
            _NOP_NOP_TS_WORD, tsval, tsecr,
        )  # fmt: skip
    header = _TCP_HDR.pack(seg.src_port, seg.dst_port, seg.seq, seg.ack, off_flags, seg.window, csum, seg.urg)
    return header + opt_bytes if opt_bytes else header


def build_tcp(seg: Segment, src: bytes, dst: bytes) -> bytes:
    """Serialise ``seg`` (header, options padded to 4 bytes, payload) with its checksum.

    ``src``/``dst`` are the packed IP addresses for the pseudo-header.
    Raises ``ValueError`` for a segment that cannot be put on the wire.
    """
    header = _tcp_header(seg, _addr_sum(src, dst) + 6)
    return b"".join((header, seg.payload)) if seg.payload else header
