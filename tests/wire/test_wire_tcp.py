"""TCP header and options: known bytes, every flag and option, every malformed case."""

from __future__ import annotations

import struct

import pytest
from wire_testlib import (
    V4_DST,
    V4_SRC,
    V6_DST,
    V6_SRC,
    packed,
    raw_tcp,
    ref_checksum,
    ref_pseudo_header,
)

from tcpstack.wire import (
    ACK,
    AE,
    CWR,
    ECE,
    EOL,
    FIN,
    NOP,
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TS,
    OPT_WSCALE,
    PSH,
    RST,
    SACK_PERM_OPT,
    SYN,
    URG,
    ChecksumError,
    MalformedPacket,
    Opt,
    Segment,
    build_tcp,
    format_options,
    mss_opt,
    parse_tcp,
    sack_opt,
    ts_opt,
    wscale_opt,
)

S4, D4 = packed(V4_SRC), packed(V4_DST)
S6, D6 = packed(V6_SRC), packed(V6_DST)

# A Linux SYN as scapy (an independent encoder) builds it, 198.18.0.1:40000 ->
# 198.18.0.2:80: "mss 1460,sackOK,TS val 123456 ecr 0,nop,wscale 7".
LINUX_SYN = bytes.fromhex(
    "9c400050" "9a3f2c11" "00000000" "a002faf0" "7bc40000"
    "020405b4" "0402" "080a0001e24000000000" "01" "030307"
)  # fmt: skip
LINUX_SYN_OPTIONS = (mss_opt(1460), SACK_PERM_OPT, ts_opt(123456, 0), NOP, wscale_opt(7))


def parse4(seg_bytes: bytes, verify: bool = True) -> Segment:
    return parse_tcp(seg_bytes, S4, D4, verify)


def tcp4(**kw) -> bytes:
    return raw_tcp(V4_SRC, V4_DST, **kw)


# ---------------------------------------------------------------- constants


def test_flag_and_option_constants():
    assert (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, AE) == (
        1,
        2,
        4,
        8,
        0x10,
        0x20,
        0x40,
        0x80,
        0x100,
    )
    assert (OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERM, OPT_SACK, OPT_TS) == (
        0, 1, 2, 3, 4, 5, 8,
    )  # fmt: skip
    assert NOP == Opt(1, None) and EOL == Opt(0, None) and SACK_PERM_OPT == Opt(4, None)
    assert mss_opt(1460) == Opt(2, 1460)
    assert wscale_opt(7) == Opt(3, 7)
    assert sack_opt([(1, 2), (3, 4)]) == Opt(5, ((1, 2), (3, 4)))
    assert ts_opt(5, 6) == Opt(8, (5, 6))
    assert [f.name for f in Segment.__dataclass_fields__.values()] == [
        "src_port", "dst_port", "seq", "ack", "flags", "window", "urg", "options", "payload",
    ]  # fmt: skip


# ---------------------------------------------------------------- known bytes


def test_parse_linux_syn():
    seg = parse4(LINUX_SYN)
    assert seg == Segment(40000, 80, 0x9A3F2C11, 0, SYN, 64240, 0, LINUX_SYN_OPTIONS, b"")
    assert seg.mss == 1460 and seg.wscale == 7 and seg.sack_permitted
    assert seg.ts == (123456, 0) and seg.sack_blocks == ()
    assert seg.seg_len == 1
    assert seg.describe() == (
        "S seq=2587831313 win=64240 len=0 <mss 1460,sackOK,TS val 123456 ecr 0,nop,wscale 7>"
    )


def test_build_linux_syn_is_byte_identical():
    seg = Segment(40000, 80, 0x9A3F2C11, 0, SYN, 64240, 0, LINUX_SYN_OPTIONS)
    assert build_tcp(seg, S4, D4) == LINUX_SYN


def test_parse_ipv6_data_segment_known_bytes():
    # scapy: IPv6(fd00::1 > fd00::2)/TCP(40000 > 80, PA, nop,nop,TS val 5 ecr 6)/request
    seg_bytes = bytes.fromhex(
        "9c4000500000000100000002801801f6ff6a0000"
        "0101080a0000000500000006"
        "474554202f20485454502f312e300d0a0d0a"
    )
    seg = parse_tcp(seg_bytes, S6, D6)
    assert seg == Segment(
        40000, 80, 1, 2, PSH | ACK, 502, 0, (NOP, NOP, ts_opt(5, 6)), b"GET / HTTP/1.0\r\n\r\n"
    )
    assert seg.flags_str == "P." and seg.seg_len == 18
    assert build_tcp(seg, S6, D6) == seg_bytes


def test_payload_is_a_view_of_the_buffer_not_a_copy():
    buf = tcp4(payload=b"hello world")
    seg = parse4(buf)
    assert isinstance(seg.payload, memoryview)
    assert seg.payload.obj is buf
    assert seg.payload == b"hello world"
    # Equality compares contents whether bytes or memoryview.
    assert seg == Segment(40000, 80, 1000, 0, ACK, 1024, 0, (), b"hello world")
    assert Segment(1, 2, 3, 4, ACK, 5, 0, (), b"x") != Segment(1, 2, 3, 4, ACK, 5, 0, (), b"y")


def test_parse_accepts_bytearray_and_memoryview():
    buf = tcp4(payload=b"abc", options=b"\x01\x01\x08\x0a" + bytes(8))
    expected = parse4(buf)
    assert parse4(bytearray(buf)) == expected
    assert parse4(memoryview(buf)) == expected
    framed = b"xx" + buf + b"yy"
    assert parse4(memoryview(framed)[2:-2]) == expected


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "flag,letters",
    [
        (FIN, "F"),
        (SYN, "S"),
        (RST, "R"),
        (PSH, "P"),
        (ACK, "."),
        (URG, "U"),
        (ECE, "E"),
        (CWR, "W"),
        (AE, "e"),
    ],
)
def test_each_flag_parses_builds_and_prints(flag, letters):
    buf = tcp4(flags=flag)
    seg = parse4(buf)
    assert seg.flags == flag
    assert seg.flags_str == letters
    assert build_tcp(seg, S4, D4) == buf


def test_ae_bit_is_the_low_bit_of_byte_12():
    buf = tcp4(flags=AE | ACK)
    assert buf[12] == 0x51 and buf[13] == 0x10
    assert parse4(buf).flags == AE | ACK


def test_reserved_bits_are_ignored_on_receipt_and_sent_as_zero():
    buf = tcp4(flags=SYN, reserved=0b111)
    assert buf[12] == 0x5E
    seg = parse4(buf)
    assert seg.flags == SYN
    assert build_tcp(seg, S4, D4)[12] == 0x50


@pytest.mark.parametrize(
    "flags,text",
    [
        (SYN, "S"),
        (SYN | ACK, "S."),
        (ACK, "."),
        (PSH | ACK, "P."),
        (FIN | ACK, "F."),
        (FIN | PSH | ACK, "FP."),
        (RST, "R"),
        (RST | ACK, "R."),
        (SYN | ECE | CWR, "SEW"),  # tcpdump: an ECN-setup SYN
        (SYN | ACK | ECE, "S.E"),  # tcpdump: an ECN-setup SYN-ACK
        (URG | ACK | PSH, "P.U"),
        (0, "none"),
        (0x1FF, "FSRP.UEWe"),
    ],
)
def test_flags_str_is_tcpdump_order(flags, text):
    assert Segment(1, 2, 0, 0, flags, 0).flags_str == text


def test_seg_len_counts_syn_and_fin():
    assert Segment(1, 2, 0, 0, ACK, 0).seg_len == 0
    assert Segment(1, 2, 0, 0, SYN, 0).seg_len == 1
    assert Segment(1, 2, 0, 0, FIN | ACK, 0, payload=b"abc").seg_len == 4
    assert Segment(1, 2, 0, 0, SYN | FIN, 0, payload=b"ab").seg_len == 4
    assert Segment(1, 2, 0, 0, RST, 0).seg_len == 0


# ---------------------------------------------------------------- header fields


def test_all_header_fields_and_urgent_pointer():
    buf = tcp4(
        sport=65535, dport=1, seq=0xFFFFFFFF, ack=0x80000000, flags=URG | ACK | PSH,
        window=65535, urg=3, payload=b"abcdef",
    )  # fmt: skip
    seg = parse4(buf)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (65535, 1, 0xFFFFFFFF, 0x80000000)
    assert (seg.window, seg.urg, bytes(seg.payload)) == (65535, 3, b"abcdef")
    assert seg.describe() == "P.U seq=4294967295 ack=2147483648 win=65535 urg=3 len=6"
    assert build_tcp(seg, S4, D4) == buf


@pytest.mark.parametrize("doff", range(5, 16))
def test_every_data_offset(doff):
    opts = b"\x01" * (doff * 4 - 20)
    seg = parse4(tcp4(options=opts, payload=b"xyz"))
    assert seg.options == (NOP,) * len(opts)
    assert seg.payload == b"xyz"


@pytest.mark.parametrize("doff", range(0, 5))
def test_bad_data_offset(doff):
    with pytest.raises(MalformedPacket, match=f"^bad data offset {doff}$"):
        parse4(tcp4(doff=doff, payload=bytes(40)))


def test_data_offset_overruns_segment():
    buf = tcp4(doff=15, options=bytes(8))  # says 60 bytes, has 28
    with pytest.raises(
        MalformedPacket, match="data offset 15 \\(60 bytes\\) overruns segment of 28 bytes"
    ):
        parse4(buf)


@pytest.mark.parametrize("n", [0, 1, 12, 19])
def test_truncated_header(n):
    with pytest.raises(MalformedPacket, match=f"^truncated TCP header: {n} bytes, need 20$"):
        parse4(tcp4()[:n])


# ---------------------------------------------------------------- options, one by one


@pytest.mark.parametrize(
    "raw,opt",
    [
        (b"\x02\x04\x05\xb4", mss_opt(1460)),
        (b"\x02\x04\xff\xff", mss_opt(65535)),
        (b"\x03\x03\x07", wscale_opt(7)),
        (b"\x03\x03\xff", wscale_opt(255)),  # raw shift as sent; clamping to 14 is the engine's
        (b"\x04\x02", SACK_PERM_OPT),
        (b"\x08\x0a" + struct.pack("!II", 0xFFFFFFFF, 7), ts_opt(0xFFFFFFFF, 7)),
        (b"\x05\x0a" + struct.pack("!II", 100, 200), sack_opt([(100, 200)])),
        (
            b"\x05\x22" + struct.pack("!8I", 1, 2, 3, 4, 5, 6, 7, 8),
            sack_opt([(1, 2), (3, 4), (5, 6), (7, 8)]),
        ),
        (b"\x1e\x04\xab\xcd", Opt(30, b"\xab\xcd")),  # MPTCP: unknown to us, kept raw
        (b"\xfe\x02", Opt(254, b"")),
        (b"\x4c\x05abc", Opt(76, b"abc")),
    ],
)
def test_each_option_parses_and_round_trips(raw, opt):
    padded = raw + b"\0" * (-len(raw) % 4)
    expected = (opt, EOL) if len(raw) % 4 else (opt,)
    buf = tcp4(options=padded)
    seg = parse4(buf)
    assert seg.options == expected
    assert build_tcp(seg, S4, D4) == buf


def test_option_properties():
    opts = (
        NOP, mss_opt(536), wscale_opt(14), SACK_PERM_OPT,
        sack_opt([(10, 20), (30, 40)]), ts_opt(1, 2),
    )  # fmt: skip
    seg = Segment(1, 2, 0, 0, ACK, 0, 0, opts)
    assert seg.mss == 536 and seg.wscale == 14 and seg.sack_permitted
    assert seg.sack_blocks == ((10, 20), (30, 40)) and seg.ts == (1, 2)
    bare = Segment(1, 2, 0, 0, ACK, 0)
    assert (bare.mss, bare.wscale, bare.sack_permitted, bare.sack_blocks, bare.ts) == (
        None, None, False, (), None,
    )  # fmt: skip
    # wscale 0 is present (not "no option"): the engine must see 0, not None.
    assert Segment(1, 2, 0, 0, SYN, 0, 0, (wscale_opt(0),)).wscale == 0


def test_unknown_options_round_trip_verbatim_between_known_ones():
    raw = b"\x02\x04\x05\xb4" + b"\x22\x0a" + bytes(range(8)) + b"\x01\x01\x04\x02\x01\x01"
    buf = tcp4(flags=SYN, options=raw)
    seg = parse4(buf)
    assert seg.options == (
        mss_opt(1460), Opt(34, bytes(range(8))), NOP, NOP, SACK_PERM_OPT, NOP, NOP,
    )  # fmt: skip
    assert build_tcp(seg, S4, D4) == buf


# ---------------------------------------------------------------- EOL and padding


def test_eol_kept_once_and_padding_after_it_dropped():
    seg = parse4(tcp4(options=b"\x02\x04\x05\xb4\x00\x00\x00\x00"))
    assert seg.options == (mss_opt(1460), EOL)


def test_bytes_after_eol_are_ignored_even_if_not_zero():
    # RFC 9293 §3.2: EOL marks the end of the option list; what follows is padding.
    seg = parse4(tcp4(options=b"\x01\x00\x02\x04\x05\xb4\xff\xff"))
    assert seg.options == (NOP, EOL)


def test_all_zero_option_space_is_one_eol():
    assert parse4(tcp4(options=bytes(12))).options == (EOL,)


def test_nop_padding_without_eol():
    assert parse4(tcp4(options=b"\x01\x01\x01\x01")).options == (NOP,) * 4


def test_macos_style_syn_ending_in_eol():
    # "mss 1460,nop,wscale 6,nop,nop,TS val 1 ecr 0,sackOK,eol" (44-byte header)
    raw = bytes.fromhex("020405b4010303 060101080a000000010000000004020000")
    seg = parse4(tcp4(flags=SYN, options=raw))
    assert seg.options == (
        mss_opt(1460), NOP, wscale_opt(6), NOP, NOP, ts_opt(1, 0), SACK_PERM_OPT, EOL,
    )  # fmt: skip
    assert format_options(seg.options) == (
        "mss 1460,nop,wscale 6,nop,nop,TS val 1 ecr 0,sackOK,eol"
    )


def test_build_pads_with_zeros_to_a_multiple_of_four():
    seg = Segment(1, 2, 0, 0, SYN, 0, 0, (mss_opt(1460), wscale_opt(7), EOL))
    out = build_tcp(seg, S4, D4)
    assert out[12] >> 4 == 7
    assert out[20:] == b"\x02\x04\x05\xb4\x03\x03\x07\x00"
    seg = Segment(1, 2, 0, 0, SYN, 0, 0, (wscale_opt(7),))
    assert build_tcp(seg, S4, D4)[20:] == b"\x03\x03\x07\x00"


# ---------------------------------------------------------------- malformed options


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"\x02\x00\x00\x00", "option MSS length 0 is illegal (minimum 2)"),
        (b"\x02\x01\x00\x00", "option MSS length 1 is illegal (minimum 2)"),
        (b"\x4c\x00\x00\x00", "option kind 76 length 0 is illegal"),
        (b"\x02\x08\x05\xb4", "option MSS length 8 overruns header (4 bytes left)"),
        (b"\x01\x01\x08\x0a\x00\x00\x00\x01", "option TS length 10 overruns header (6 bytes left)"),
        (b"\x01\x01\x01\x02", "option MSS truncated: no length octet"),
        (b"\x02\x03\x05\x00", "option MSS length 3 is wrong (must be 4)"),
        (b"\x03\x04\x07\x00", "option WSCALE length 4 is wrong (must be 3)"),
        (b"\x04\x03\x00\x00", "option SACK_PERM length 3 is wrong (must be 2)"),
        (b"\x08\x08" + bytes(6), "option TS length 8 is wrong (must be 10)"),
        (b"\x05\x02\x00\x00", "option SACK length 2 is wrong (must be 2 + 8*n, n >= 1)"),
        (b"\x05\x06" + bytes(6), "option SACK length 6 is wrong"),
        (b"\x05\x0b" + bytes(10), "option SACK length 11 is wrong"),
    ],
)
def test_malformed_options(raw, reason):
    raw += b"\0" * (-len(raw) % 4)
    with pytest.raises(MalformedPacket) as info:
        parse4(tcp4(options=raw))
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason
    assert not isinstance(info.value, ChecksumError)


def test_option_length_cannot_reach_into_payload():
    # The option says 10 bytes, the header has 8 of options; the payload follows.
    buf = tcp4(options=b"\x01\x01\x08\x0a" + bytes(4), payload=bytes(20))
    with pytest.raises(MalformedPacket, match="option TS length 10 overruns header"):
        parse4(buf)


# ---------------------------------------------------------------- checksum


def test_checksum_error_names_both_values():
    good = tcp4(payload=b"data")
    csum = struct.unpack_from("!H", good, 16)[0]
    bad = good[:16] + struct.pack("!H", csum ^ 0x0101) + good[18:]
    with pytest.raises(ChecksumError) as info:
        parse4(bad)
    assert info.value.reason == f"bad TCP checksum 0x{csum ^ 0x0101:04x} (expected 0x{csum:04x})"
    assert isinstance(info.value, MalformedPacket)
    assert parse4(bad, verify=False).payload == b"data"


def test_checksum_covers_pseudo_header_addresses():
    good = tcp4(payload=b"data")
    with pytest.raises(ChecksumError):
        parse_tcp(good, S4, packed("198.18.0.3"))
    with pytest.raises(ChecksumError):
        parse_tcp(good, packed("198.18.1.1"), D4)


def test_checksum_of_all_ones_is_accepted_as_zero():
    # RFC 1624: 0x0000 and 0xFFFF are the same one's complement number; find a
    # segment whose correct checksum is 0 and check that 0xFFFF verifies too.
    for seq in range(70000):
        buf = tcp4(seq=seq)
        if buf[16:18] == b"\0\0":
            break
    else:  # pragma: no cover
        pytest.fail("no segment with checksum 0 found")
    alt = buf[:16] + b"\xff\xff" + buf[18:]
    assert parse4(alt).seq == seq
    assert build_tcp(parse4(alt), S4, D4) == buf  # we send 0, never 0xFFFF


def test_odd_length_payload_checksum():
    for n in (1, 3, 1447):
        buf = tcp4(payload=bytes(range(256)) * 6)[: 20 + n]
        buf = tcp4(payload=bytes(buf[20:]))
        assert parse4(buf).payload == buf[20:]
        seg = parse4(buf)
        assert build_tcp(seg, S4, D4) == buf


def test_build_checksum_matches_reference_ipv6():
    seg = Segment(1234, 443, 7, 9, ACK | PSH, 100, 0, (NOP, NOP, ts_opt(1, 2)), b"odd!!")
    out = build_tcp(seg, S6, D6)
    pseudo = ref_pseudo_header(S6, D6, len(out))
    assert ref_checksum(pseudo + out) == 0


def test_parse_tcp_rejects_mismatched_addresses():
    with pytest.raises(ValueError, match="4 \\(IPv4\\) or 16 \\(IPv6\\) bytes"):
        parse_tcp(tcp4(), S4, D6)


# ---------------------------------------------------------------- build errors


@pytest.mark.parametrize(
    "kw,reason",
    [
        ({"src_port": 65536}, "src_port=65536 is not an integer 0..65535"),
        ({"dst_port": -1}, "dst_port=-1 is not an integer 0..65535"),
        ({"seq": 1 << 32}, "seq=4294967296 is not an integer 0..4294967295"),
        ({"ack": -5}, "ack=-5 is not an integer"),
        ({"flags": 0x200}, "flags=512 is not an integer 0..511"),
        ({"flags": -1}, "flags=-1"),
        ({"window": 65536}, "window=65536 is not an integer 0..65535"),
        ({"urg": 70000}, "urg=70000"),
        ({"seq": 1.5}, "seq=1.5 is not an integer"),
        ({"src_port": "80"}, "src_port='80' is not an integer"),
        ({"payload": "text"}, "payload is str"),
        ({"payload": 5}, "payload is int"),
    ],
)
def test_build_rejects_bad_fields(kw, reason):
    fields = {"src_port": 1, "dst_port": 2, "seq": 0, "ack": 0, "flags": ACK, "window": 0}
    fields.update(kw)
    with pytest.raises(ValueError) as info:
        build_tcp(Segment(**fields), S4, D4)
    assert reason in str(info.value)
    assert not isinstance(info.value, MalformedPacket)


@pytest.mark.parametrize(
    "options,reason",
    [
        ((sack_opt([(1, 2)] * 4), ts_opt(1, 2)), "options need 44 bytes, more than the 40"),
        ((Opt(99, bytes(39)),), "39 value bytes do not fit in 40 bytes of options"),
        ((sack_opt([(1, 2)] * 5),), "5 SACK blocks"),
        ((Opt(5, ()),), "0 SACK blocks"),
        ((EOL, NOP), "EOL must be the last option"),
        ((mss_opt(65536),), "cannot build option Opt(kind=2, value=65536)"),
        ((mss_opt(None),), "cannot build option Opt(kind=2, value=None)"),
        ((wscale_opt(256),), "cannot build option Opt(kind=3"),
        ((ts_opt(1 << 32, 0),), "cannot build option Opt(kind=8"),
        ((Opt(8, (1, 2, 3)),), "cannot build option Opt(kind=8"),
        ((sack_opt([(1, -2)]),), "cannot build option Opt(kind=5"),
        ((Opt(1, 5),), "takes no value"),
        ((Opt(300, b""),), "kind out of range"),
        ((Opt(77, 5),), "cannot build option Opt(kind=77"),
    ],
)
def test_build_rejects_bad_options(options, reason):
    with pytest.raises(ValueError) as info:
        build_tcp(Segment(1, 2, 0, 0, SYN, 0, 0, options), S4, D4)
    assert reason in str(info.value)


def test_build_rejects_bad_timestamp_in_fast_path_with_precise_message():
    seg = Segment(1, 2, 0, 0, ACK, 0, 0, (NOP, NOP, ts_opt(-1, 0)))
    with pytest.raises(ValueError, match="cannot build option Opt\\(kind=8, value=\\(-1, 0\\)\\)"):
        build_tcp(seg, S4, D4)


def test_build_rejects_segments_longer_than_the_length_field():
    seg = Segment(1, 2, 0, 0, ACK, 0, 0, (), bytes(65536 - 20))
    with pytest.raises(ValueError, match="segment of 65536 bytes .* exceeds 65535"):
        build_tcp(seg, S4, D4)


# ---------------------------------------------------------------- describe


def test_describe_and_format_options():
    seg = Segment(
        80, 40000, 1, 2, SYN | ACK, 65160, 0,
        (mss_opt(1460), SACK_PERM_OPT, ts_opt(1, 0), NOP, wscale_opt(7)),
    )  # fmt: skip
    assert seg.describe() == (
        "S. seq=1 ack=2 win=65160 len=0 <mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>"
    )
    assert Segment(1, 2, 5, 6, RST, 0).describe() == "R seq=5 win=0 len=0"
    assert format_options([sack_opt([(1, 2), (3, 4)])]) == "sack 2 {1:2}{3:4}"
    assert format_options([Opt(76, b"ab"), Opt(30, b"\x01"), Opt(254, b""), EOL]) == (
        "unknown-76 0x6162,mptcp 0x01,exp,eol"
    )


def test_option_lookups_with_and_without_the_linux_layout():
    from tcpstack.wire.tcp import Opt, Segment

    ts = Opt(8, (5, 6))
    sack = Opt(5, ((100, 200),))
    nop = Opt(1, None)
    linux = Segment(1, 2, 3, 4, 0x10, 5, 0, (nop, nop, ts))
    assert linux.ts == (5, 6) and linux.sack_blocks == ()
    # Three options that only look like the fast layout: scanned in full.
    odd = Segment(1, 2, 3, 4, 0x10, 5, 0, (sack, nop, ts))
    assert odd.ts == (5, 6) and odd.sack_blocks == ((100, 200),)
    sacked = Segment(1, 2, 3, 4, 0x10, 5, 0, (nop, nop, ts, nop, nop, sack))
    assert sacked.ts == (5, 6) and sacked.sack_blocks == ((100, 200),)
    assert Segment(1, 2, 3, 4, 0x10, 5, 0, (nop, nop, sack)).ts is None
