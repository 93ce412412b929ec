"""IPv4 and IPv6 around TCP: known bytes, options, extension headers, every refusal."""

from __future__ import annotations

import struct

import pytest
from wire_testlib import (
    V4_DST,
    V4_SRC,
    V6_DST,
    V6_SRC,
    ipv4_insert_options,
    ipv6_insert_exts,
    packed,
    raw_ipv4,
    raw_ipv6,
    raw_tcp,
    ref_checksum,
    ref_pseudo_header,
)

from tcpstack.wire import (
    ACK,
    NOP,
    PSH,
    SACK_PERM_OPT,
    SYN,
    ChecksumError,
    IPChecksumError,
    IPPacket,
    MalformedPacket,
    Segment,
    build_ip_tcp,
    ip_version,
    mss_opt,
    parse_ip,
    parse_ip_tcp,
    ts_opt,
    wscale_opt,
)
from tcpstack.wire import ip as ipmod

# The same Linux SYN as in test_wire_tcp, with its IPv4 header (id 0x1c46, DF, TTL 64).
LINUX_SYN_V4 = bytes.fromhex(
    "4500003c1c4640004006924ec6120001c6120002"
    "9c4000509a3f2c1100000000a002faf07bc40000"
    "020405b40402080a0001e2400000000001030307"
)
LINUX_SYN_SEG = Segment(
    40000, 80, 0x9A3F2C11, 0, SYN, 64240, 0,
    (mss_opt(1460), SACK_PERM_OPT, ts_opt(123456, 0), NOP, wscale_opt(7)),
)  # fmt: skip
# scapy: IPv6(fd00::1 > fd00::2, hlim 64)/TCP(PA, nop,nop,TS val 5 ecr 6)/"GET / HTTP/1.0\r\n\r\n"
DATA_V6 = bytes.fromhex(
    "6000000000320640"
    "fd000000000000000000000000000001"
    "fd000000000000000000000000000002"
    "9c4000500000000100000002801801f6ff6a0000"
    "0101080a0000000500000006"
    "474554202f20485454502f312e300d0a0d0a"
)
DATA_V6_SEG = Segment(
    40000, 80, 1, 2, PSH | ACK, 502, 0, (NOP, NOP, ts_opt(5, 6)), b"GET / HTTP/1.0\r\n\r\n"
)


def v4(tcp: bytes | None = None, **kw) -> bytes:
    return raw_ipv4(V4_SRC, V4_DST, raw_tcp(V4_SRC, V4_DST) if tcp is None else tcp, **kw)


def v6(tcp: bytes | None = None, **kw) -> bytes:
    return raw_ipv6(V6_SRC, V6_DST, raw_tcp(V6_SRC, V6_DST) if tcp is None else tcp, **kw)


def reason_of(pkt, verify=True) -> str:
    with pytest.raises(MalformedPacket) as info:
        parse_ip_tcp(pkt, verify)
    return info.value.reason


# ---------------------------------------------------------------- known bytes


def test_parse_linux_syn_ipv4():
    assert parse_ip_tcp(LINUX_SYN_V4) == ("198.18.0.1", "198.18.0.2", LINUX_SYN_SEG)


def test_build_linux_syn_ipv4_is_byte_identical():
    assert build_ip_tcp("198.18.0.1", "198.18.0.2", LINUX_SYN_SEG, ident=0x1C46) == LINUX_SYN_V4


def test_parse_and_build_ipv6_known_bytes():
    assert parse_ip_tcp(DATA_V6) == ("fd00::1", "fd00::2", DATA_V6_SEG)
    assert build_ip_tcp("fd00::1", "fd00::2", DATA_V6_SEG) == DATA_V6


def test_ipv4_header_as_built():
    seg = Segment(1, 2, 3, 4, ACK, 5, 0, (), b"abc")
    pkt = build_ip_tcp(V4_SRC, V4_DST, seg, ttl=7, ident=0xBEEF)
    ver_ihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = struct.unpack_from(
        "!BBHHHBBH4s4s", pkt
    )
    assert (ver_ihl, tos, total, ident, frag, ttl, proto) == (0x45, 0, 43, 0xBEEF, 0x4000, 7, 6)
    assert (src, dst) == (packed(V4_SRC), packed(V4_DST))
    assert ref_checksum(pkt[:20]) == 0  # header checksum
    assert ref_checksum(ref_pseudo_header(src, dst, 23) + pkt[20:]) == 0  # TCP checksum
    assert len(pkt) == 43


def test_ipv6_header_as_built():
    seg = Segment(1, 2, 3, 4, ACK, 5, 0, (), b"abcd")
    pkt = build_ip_tcp(V6_SRC, V6_DST, seg, ttl=9)
    vtf, plen, nh, hlim, src, dst = struct.unpack_from("!IHBB16s16s", pkt)
    assert (vtf, plen, nh, hlim) == (0x60000000, 24, 6, 9)
    assert (src, dst) == (packed(V6_SRC), packed(V6_DST))
    assert ref_checksum(ref_pseudo_header(src, dst, 24) + pkt[40:]) == 0


def test_addresses_are_inet_ntop_spelling():
    seg = Segment(1, 2, 3, 4, ACK, 5)
    for src, dst in [
        ("0.0.0.0", "255.255.255.255"),
        ("2001:db8:0:0:0:0:0:1", "FD00:0000::0002"),
        ("::ffff:198.18.0.1", "::"),
    ]:
        got_src, got_dst, _ = parse_ip_tcp(build_ip_tcp(src, dst, seg))
        assert got_src == ipmod.socket.inet_ntop(
            ipmod.socket.AF_INET6 if ":" in src else ipmod.socket.AF_INET, packed(src)
        )
        assert packed(got_dst) == packed(dst)
    assert parse_ip_tcp(build_ip_tcp("2001:db8:0:0:0:0:0:1", "fd00::2", seg))[0] == "2001:db8::1"


def test_payload_is_a_view_of_the_packet():
    pkt = build_ip_tcp(V4_SRC, V4_DST, Segment(1, 2, 3, 4, ACK, 5, 0, (), b"payload"))
    seg = parse_ip_tcp(pkt)[2]
    assert isinstance(seg.payload, memoryview) and seg.payload.obj is pkt
    pkt6 = build_ip_tcp(V6_SRC, V6_DST, Segment(1, 2, 3, 4, ACK, 5, 0, (), b"payload"))
    assert parse_ip_tcp(pkt6)[2].payload.obj is pkt6


@pytest.mark.parametrize("pkt", [LINUX_SYN_V4, DATA_V6])
def test_bytearray_and_memoryview_input(pkt):
    expected = parse_ip_tcp(pkt)
    assert parse_ip_tcp(bytearray(pkt)) == expected
    assert parse_ip_tcp(memoryview(pkt)) == expected
    assert parse_ip_tcp(memoryview(b"\0" * 10 + pkt)[10:]) == expected


# ---------------------------------------------------------------- IPv4


def test_ipv4_trailing_link_padding_is_ignored():
    # A 40-byte ACK padded to Ethernet's 46-byte minimum payload.
    pkt = v4() + b"\0" * 6
    src, dst, seg = parse_ip_tcp(pkt)
    assert (src, dst, seg.payload) == (V4_SRC, V4_DST, b"")
    data = v4(raw_tcp(V4_SRC, V4_DST, payload=b"abc")) + b"\xee" * 3
    assert parse_ip_tcp(data)[2].payload == b"abc"
    assert bytes(parse_ip(data).payload) == raw_tcp(V4_SRC, V4_DST, payload=b"abc")


def test_ipv4_without_df_and_other_ttl_is_fine():
    src, _, seg = parse_ip_tcp(v4(frag=0, ttl=1))
    assert src == V4_SRC and seg.seq == 1000


def test_ipv4_options_are_validated_and_skipped():
    base = v4(raw_tcp(V4_SRC, V4_DST, payload=b"xy"))
    # NOP, Record Route (7, len 7, ptr 4, one empty slot), EOL
    opts = b"\x01" + b"\x07\x07\x04" + bytes(4) + b"\x00" * 4
    pkt = ipv4_insert_options(base, opts)
    assert pkt[0] == 0x48
    assert parse_ip_tcp(pkt) == parse_ip_tcp(base)
    ip = parse_ip(pkt)
    assert (ip.version, ip.header_len, ip.proto, ip.ttl) == (4, 32, 6, 64)


@pytest.mark.parametrize(
    "opts,reason",
    [
        (b"\x07\x01\x00\x00", "IPv4 option 7 length 1 is illegal (minimum 2)"),
        (b"\x07\x09\x04\x00", "IPv4 option 7 length 9 overruns header (4 bytes left)"),
        (b"\x01\x01\x01\x44", "IPv4 option 68 truncated: no length octet"),
        (b"\x83\x07\x04" + bytes(5), "IPv4 option 131 (loose source route) not supported"),
        (b"\x89\x07\x04" + bytes(5), "IPv4 option 137 (strict source route) not supported"),
    ],
)
def test_ipv4_bad_options(opts, reason):
    assert reason_of(ipv4_insert_options(v4(), opts)) == reason


def test_ipv4_options_after_eol_are_not_read():
    assert parse_ip_tcp(ipv4_insert_options(v4(), b"\x00\x83\x07\x04"))[2].seq == 1000


@pytest.mark.parametrize(
    "frag,text",
    [
        (0x2000, "IPv4 fragment (offset 0, MF=1) not supported"),
        (0x2000 | 185, "IPv4 fragment (offset 185, MF=1) not supported"),
        (185, "IPv4 fragment (offset 185, MF=0) not supported"),
        (0x4000 | 1, "IPv4 fragment (offset 1, MF=0) not supported"),
    ],
)
def test_ipv4_fragments_are_refused(frag, text):
    assert reason_of(v4(frag=frag)) == text


def test_ipv4_reserved_flag_is_ignored():
    assert parse_ip_tcp(v4(frag=0x8000 | 0x4000))[2].seq == 1000


def test_ipv4_header_checksum():
    good = v4()
    bad = good[:8] + b"\x3f" + good[9:]  # TTL 64 -> 63, checksum not updated
    with pytest.raises(IPChecksumError) as info:
        parse_ip_tcp(bad)
    good_csum = struct.unpack_from("!H", good, 10)[0]
    expected = ref_checksum(bad[:10] + b"\0\0" + bad[12:20])
    assert (
        info.value.reason
        == f"bad IPv4 header checksum 0x{good_csum:04x} (expected 0x{expected:04x})"
    )
    assert not isinstance(info.value, ChecksumError)
    assert parse_ip_tcp(bad, verify_checksum=False)[2].seq == 1000
    with pytest.raises(IPChecksumError):
        parse_ip(bad)


def test_ipv4_header_checksum_checked_with_options_too():
    pkt = bytearray(ipv4_insert_options(v4(), b"\x01\x01\x01\x00"))
    pkt[21] = 0x00  # an option byte changes, checksum does not
    with pytest.raises(IPChecksumError):
        parse_ip_tcp(bytes(pkt))


@pytest.mark.parametrize(
    "pkt,reason",
    [
        (b"", "empty packet"),
        (b"\x45" + bytes(10), "truncated IPv4 header: 11 bytes, need 20"),
        (bytes.fromhex("44") + bytes(39), "bad IPv4 header length 16 (IHL 4)"),
        (bytes.fromhex("40") + bytes(39), "bad IPv4 header length 0 (IHL 0)"),
        (b"\x20" + bytes(39), "unsupported IP version 2"),
        (b"\xf5" + bytes(39), "unsupported IP version 15"),
    ],
)
def test_ipv4_structural_errors(pkt, reason):
    assert reason_of(pkt) == reason


def test_ipv4_ihl_beyond_packet():
    pkt = v4(ihl=15)  # says 60 header bytes; packet has 40
    assert reason_of(pkt, verify=False) == "truncated IPv4 header: 40 bytes, IHL 15 says 60"


def test_ipv4_total_length_shorter_than_header():
    assert reason_of(v4(total=19)) == "IPv4 total length 19 shorter than header 20"


def test_ipv4_total_length_beyond_packet():
    assert reason_of(v4(total=41)) == "truncated IPv4 packet: total length 41, have 40 bytes"


def test_ipv4_total_length_cuts_the_tcp_header():
    assert reason_of(v4(total=30)) == "truncated TCP header: 10 bytes, need 20"


def test_not_tcp():
    assert reason_of(v4(proto=17)) == "not TCP: protocol 17 (UDP)"
    assert reason_of(v4(proto=200)) == "not TCP: protocol 200"
    assert parse_ip(v4(proto=17)).proto == 17
    assert reason_of(v6(nh=58)) == "not TCP: protocol 58 (ICMPv6)"
    assert reason_of(v6(nh=59)) == "not TCP: protocol 59 (No Next Header)"


def test_tcp_checksum_error_through_ip():
    pkt = bytearray(build_ip_tcp(V4_SRC, V4_DST, Segment(1, 2, 3, 4, ACK, 5, 0, (), b"abc")))
    pkt[-1] ^= 0x10
    with pytest.raises(ChecksumError, match="bad TCP checksum"):
        parse_ip_tcp(bytes(pkt))
    assert parse_ip_tcp(bytes(pkt), verify_checksum=False)[2].payload == b"abs"


# ---------------------------------------------------------------- IPv6


def hbh(body: bytes) -> tuple[int, bytes]:
    return (0, body)


def dst_opts(body: bytes) -> tuple[int, bytes]:
    return (60, body)


PADN4 = b"\x01\x04\x00\x00\x00\x00"  # PadN filling a minimal 8-byte header
ROUTER_ALERT = b"\x05\x02\x00\x00\x01\x00"  # Router Alert (type 5, action 00) + Pad...


def test_ipv6_hop_by_hop_and_destination_options_are_skipped():
    base = build_ip_tcp(V6_SRC, V6_DST, Segment(1, 2, 3, 4, ACK, 5, 0, (), b"hello"))
    for exts in [
        (hbh(PADN4),),
        (dst_opts(PADN4),),
        (hbh(ROUTER_ALERT), dst_opts(b"\x00" * 6)),
        (hbh(b"\x01\x0c" + bytes(12)),),  # a 16-byte header
        (dst_opts(PADN4), dst_opts(PADN4)),
    ]:
        pkt = ipv6_insert_exts(base, exts)
        assert parse_ip_tcp(pkt) == parse_ip_tcp(base), exts
        ip = parse_ip(pkt)
        assert ip.header_len == 40 + sum(len(b) + 2 for _, b in exts)
        assert (ip.version, ip.proto, ip.ttl) == (6, 6, 64)
        assert bytes(ip.payload) == base[40:]


def test_ipv6_payload_length_honoured_with_trailing_bytes():
    base = build_ip_tcp(V6_SRC, V6_DST, Segment(1, 2, 3, 4, ACK, 5, 0, (), b"hello"))
    assert parse_ip_tcp(base + b"junk") == parse_ip_tcp(base)
    pkt = ipv6_insert_exts(base, (hbh(PADN4),))
    assert parse_ip_tcp(pkt + b"junk") == parse_ip_tcp(base)


@pytest.mark.parametrize(
    "nh,name",
    [
        (43, "Routing"),
        (44, "Fragment"),
        (50, "ESP"),
        (51, "AH"),
        (135, "Mobility"),
        (139, "HIP"),
        (140, "Shim6"),
        (253, "Experimental"),
    ],
)
def test_ipv6_unsupported_extension_headers(nh, name):
    text = f"IPv6 next header {nh} ({name}) not supported"
    assert reason_of(v6(nh=nh)) == text
    # Also when reached through a skipped header.
    assert reason_of(raw_ipv6(V6_SRC, V6_DST, bytes(8), nh=nh, exts=(hbh(PADN4),))) == text
    with pytest.raises(MalformedPacket) as info:
        parse_ip(v6(nh=nh))
    assert info.value.reason == text


def test_ipv6_fragment_header_exact_reason():
    frag_hdr = bytes((6, 0, 0, 0, 0, 0, 0, 1))  # next header TCP, offset 0, M=0, id 1
    pkt = raw_ipv6(V6_SRC, V6_DST, frag_hdr + raw_tcp(V6_SRC, V6_DST), nh=44)
    assert reason_of(pkt) == "IPv6 next header 44 (Fragment) not supported"


def test_ipv6_hop_by_hop_must_come_first():
    pkt = raw_ipv6(V6_SRC, V6_DST, raw_tcp(V6_SRC, V6_DST), exts=(dst_opts(PADN4), hbh(PADN4)))
    assert reason_of(pkt) == "IPv6 Hop-by-Hop Options header not directly after the IPv6 header"


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"\xc2\x04" + struct.pack("!I", 70000), "option 0xc2 (Jumbo Payload) not supported"),
        (b"\xc9\x04" + bytes(4), "option 0xc9 (Home Address) not supported"),
        (b"\x7f\x04" + bytes(4), "option 0x7f not supported"),  # 01: discard
        (b"\x8f\x04" + bytes(4), "option 0x8f not supported"),  # 10: discard + ICMP
        (b"\x01\x05" + bytes(4), "option 0x01 length 5 overruns header"),
        (b"\x00" * 5 + b"\x01", "option 0x01 truncated: no length octet"),
    ],
)
def test_ipv6_options_that_say_discard_or_are_broken(body, reason):
    for kind, header in ((0, "Hop-by-Hop Options"), (60, "Destination Options")):
        pkt = raw_ipv6(V6_SRC, V6_DST, raw_tcp(V6_SRC, V6_DST), exts=((kind, body),))
        assert reason_of(pkt) == f"IPv6 {header} {reason}"


def test_ipv6_unknown_option_with_skip_action_is_skipped():
    body = b"\x3e\x04" + bytes(4)  # type 0x3e, action 00: "skip over this option"
    pkt = raw_ipv6(V6_SRC, V6_DST, raw_tcp(V6_SRC, V6_DST), exts=(hbh(body),))
    assert parse_ip_tcp(pkt)[2].seq == 1000


@pytest.mark.parametrize(
    "pkt,reason",
    [
        (b"\x60" + bytes(30), "truncated IPv6 header: 31 bytes, need 40"),
    ],
)
def test_ipv6_structural_errors(pkt, reason):
    assert reason_of(pkt) == reason


def test_ipv6_payload_length_beyond_packet():
    pkt = v6(plen=21)
    assert reason_of(pkt) == "truncated IPv6 packet: payload length 21, have 20 bytes"


def test_ipv6_payload_length_cuts_tcp_header():
    assert reason_of(v6(plen=8)) == "truncated TCP header: 8 bytes, need 20"


def test_ipv6_extension_header_overruns_payload():
    pkt = bytearray(raw_ipv6(V6_SRC, V6_DST, raw_tcp(V6_SRC, V6_DST), exts=(hbh(PADN4),)))
    pkt[41] = 10  # says (10 + 1) * 8 = 88 bytes
    assert reason_of(bytes(pkt)) == (
        "IPv6 Hop-by-Hop Options header length 88 overruns payload (28 bytes left)"
    )
    short = raw_ipv6(V6_SRC, V6_DST, b"\x06\x00\x01", nh=0)
    assert reason_of(short) == "truncated IPv6 Hop-by-Hop Options header: 3 bytes, need 8"


def test_ipv6_checksum_with_extension_headers_uses_upper_layer_length():
    # Corrupt the TCP payload behind a Destination Options header.
    base = build_ip_tcp(V6_SRC, V6_DST, Segment(1, 2, 3, 4, ACK, 5, 0, (), b"hello"))
    pkt = bytearray(ipv6_insert_exts(base, (dst_opts(PADN4),)))
    pkt[-1] ^= 1
    with pytest.raises(ChecksumError):
        parse_ip_tcp(bytes(pkt))


# ---------------------------------------------------------------- parse_ip, ip_version


def test_parse_ip_fields():
    ip = parse_ip(LINUX_SYN_V4)
    assert ip == IPPacket(
        4, "198.18.0.1", "198.18.0.2", 6, 64, 20, memoryview(LINUX_SYN_V4)[20:],
        packed("198.18.0.1"), packed("198.18.0.2"),
    )  # fmt: skip
    ip6 = parse_ip(DATA_V6)
    assert (ip6.version, ip6.src, ip6.dst, ip6.proto, ip6.ttl, ip6.header_len) == (
        6, "fd00::1", "fd00::2", 6, 64, 40,
    )  # fmt: skip
    assert ip6.payload == DATA_V6[40:] and ip6.payload.obj is DATA_V6


def test_ip_version():
    assert ip_version(LINUX_SYN_V4) == 4
    assert ip_version(DATA_V6) == 6
    assert ip_version(b"\x1f") == 1
    with pytest.raises(MalformedPacket, match="empty packet"):
        ip_version(b"")


# ---------------------------------------------------------------- build errors


@pytest.mark.parametrize(
    "src,dst,kw,reason",
    [
        ("198.18.0.1", "fd00::2", {}, "are different IP versions"),
        ("198.18.0.256", "198.18.0.2", {}, "invalid IP address '198.18.0.256'"),
        ("fd00::g", "fd00::2", {}, "invalid IP address 'fd00::g'"),
        ("", "198.18.0.2", {}, "invalid IP address ''"),
        ("198.18.0.1", "198.18.0.2", {"ttl": 256}, "ttl=256 (0..255)"),
        ("198.18.0.1", "198.18.0.2", {"ttl": -1}, "ttl=-1"),
        ("198.18.0.1", "198.18.0.2", {"ident": 65536}, "ident=65536 (0..65535)"),
        ("fd00::1", "fd00::2", {"ttl": 300}, "ttl=300"),
        ("198.18.0.1", "198.18.0.2", {"ttl": "64"}, "ttl='64'"),
    ],
)
def test_build_ip_tcp_errors(src, dst, kw, reason):
    with pytest.raises(ValueError) as info:
        build_ip_tcp(src, dst, Segment(1, 2, 3, 4, ACK, 5), **kw)
    assert reason in str(info.value)


def test_build_ip_tcp_size_limits():
    big = Segment(1, 2, 3, 4, ACK, 5, 0, (), bytes(65535 - 40))
    assert len(build_ip_tcp(V4_SRC, V4_DST, big)) == 65535
    assert len(build_ip_tcp(V6_SRC, V6_DST, big)) == 65535 - 20 + 40
    bigger = Segment(1, 2, 3, 4, ACK, 5, 0, (), bytes(65535 - 39))
    with pytest.raises(ValueError, match="exceeds 65515"):
        build_ip_tcp(V4_SRC, V4_DST, bigger)
    jumbo = Segment(1, 2, 3, 4, ACK, 5, 0, (), bytes(65535 - 19))
    with pytest.raises(ValueError, match="exceeds 65535"):
        build_ip_tcp(V6_SRC, V6_DST, jumbo)
    assert parse_ip_tcp(build_ip_tcp(V4_SRC, V4_DST, big))[2] == big


# ---------------------------------------------------------------- address memos


def test_address_memos_stay_bounded():
    seg = Segment(1, 2, 3, 4, ACK, 5)
    for i in range(ipmod._CACHE_MAX + 100):
        a = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        b = f"fd00::{i:x}"
        assert parse_ip_tcp(build_ip_tcp(a, V4_DST, seg))[0] == a
        assert packed(parse_ip_tcp(build_ip_tcp(b, V6_DST, seg))[0]) == packed(b)
        assert parse_ip(build_ip_tcp(a, V4_DST, seg)).src == a
    for memo in (ipmod._ntop4_int, ipmod._ntop_bytes, ipmod._pton_str):
        assert 0 < len(memo) <= ipmod._CACHE_MAX
