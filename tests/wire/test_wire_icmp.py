"""ICMP / ICMPv6 error messages (wire/icmp.py) and the TOS octet of build_ip_tcp:
round trips, scapy as the independent dissector in both directions, and
fuzzing (any bytes parse or raise MalformedPacket, nothing else)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6

from tcpstack.wire import ChecksumError, MalformedPacket, Segment, build_ip_tcp, parse_ip
from tcpstack.wire.icmp import IcmpMessage, build_icmp_error, parse_icmp

A, B, R = "198.18.0.2", "198.18.0.1", "198.18.0.254"
A6, B6, R6 = "2001:2::2", "2001:2::1", "2001:2::fe"


def parse(pkt: bytes, verify: bool = True) -> IcmpMessage:
    ip = parse_ip(pkt)
    return parse_icmp(ip.version, ip.src, ip.dst, ip.payload, ip.src_packed, ip.dst_packed, verify)


def offending(src: str, dst: str, sport: int = 40000, dport: int = 80, seq: int = 123456789) -> bytes:
    return build_ip_tcp(src, dst, Segment(sport, dport, seq, 0, 0x02, 65535, 0, (), b""))


@pytest.mark.parametrize("mtype,code,info", [(3, 1, 0), (3, 3, 0), (3, 4, 1280), (11, 0, 0), (12, 0, 20 << 24), (4, 0, 0)])
def test_icmpv4_error_round_trip(mtype, code, info):
    msg = parse(build_icmp_error(R, A, mtype, code, offending(A, B)[:28], info))
    assert (msg.version, msg.src, msg.dst, msg.type, msg.code, msg.info, msg.quoted) == (4, R, A, mtype, code, info, True)
    assert (msg.orig_src, msg.orig_dst, msg.orig_proto, msg.orig_sport, msg.orig_dport, msg.orig_seq) == (
        A, B, 6, 40000, 80, 123456789)
    assert msg.mtu == (1280 if (mtype, code) == (3, 4) else 0)


@pytest.mark.parametrize("mtype,code,info", [(1, 4, 0), (2, 0, 1280), (3, 0, 0), (4, 0, 6)])
def test_icmpv6_error_round_trip(mtype, code, info):
    msg = parse(build_icmp_error(R6, A6, mtype, code, offending(A6, B6), info))
    assert (msg.version, msg.type, msg.code, msg.orig_src, msg.orig_dst, msg.orig_sport, msg.orig_seq) == (
        6, mtype, code, A6, B6, 40000, 123456789)
    assert msg.mtu == (1280 if mtype == 2 else 0)


def test_informational_messages_parse_without_a_quote():
    echo = bytes(IP(src=R, dst=A) / ICMP(type=8, id=1, seq=2) / b"ping")
    msg = parse(echo)
    assert (msg.type, msg.quoted, msg.orig_proto) == (8, False, 0)


# ---------------------------------------------------------------- scapy builds, we parse
def test_scapy_icmpv4_errors_parse_to_the_same_fields():
    for t, c, kw in ((3, 1, {}), (3, 4, {"nexthopmtu": 1400}), (11, 0, {}), (12, 0, {"ptr": 9})):
        inner = IPerror(src=A, dst=B, ttl=1) / TCPerror(sport=41000, dport=443, seq=0xDEADBEEF)
        pkt = raw(IP(src=R, dst=A) / ICMP(type=t, code=c, **kw) / inner)
        msg = parse(pkt)
        assert (msg.type, msg.code, msg.orig_src, msg.orig_dst, msg.orig_sport, msg.orig_dport, msg.orig_seq) == (
            t, c, A, B, 41000, 443, 0xDEADBEEF)
        if t == 3 and c == 4:
            assert msg.mtu == 1400
        if t == 12:
            assert msg.info >> 24 == 9


def test_scapy_icmpv6_errors_parse_to_the_same_fields():
    inner = IPv6(src=A6, dst=B6) / TCP(sport=41000, dport=443, seq=77, flags="S")
    for layer, mtu in ((ICMPv6PacketTooBig(mtu=1300), 1300), (ICMPv6DestUnreach(code=3), 0), (ICMPv6TimeExceeded(), 0)):
        msg = parse(raw(IPv6(src=R6, dst=A6) / layer / inner))
        assert (msg.orig_src, msg.orig_dst, msg.orig_sport, msg.orig_seq, msg.mtu) == (A6, B6, 41000, 77, mtu)


# ---------------------------------------------------------------- we build, scapy dissects
def test_our_icmp_errors_dissect_in_scapy_with_valid_checksums():
    pkt = build_icmp_error(R, A, 3, 4, offending(A, B)[:28], 1280)
    s = IP(pkt)
    assert s[ICMP].type == 3 and s[ICMP].code == 4 and s[ICMP].nexthopmtu == 1280
    assert s[IPerror].src == A and s[TCPerror].sport == 40000 and s[TCPerror].seq == 123456789
    ck, ick = s[ICMP].chksum, s[IP].chksum
    del s[ICMP].chksum, s[IP].chksum
    again = IP(raw(s))
    assert (again[ICMP].chksum, again[IP].chksum) == (ck, ick)
    s6 = IPv6(build_icmp_error(R6, A6, 2, 0, offending(A6, B6), 1280))
    assert s6[ICMPv6PacketTooBig].mtu == 1280
    ck = s6[ICMPv6PacketTooBig].cksum
    del s6[ICMPv6PacketTooBig].cksum
    assert IPv6(raw(s6))[ICMPv6PacketTooBig].cksum == ck


@given(st.integers(0, 255))
@settings(max_examples=60, deadline=None)
def test_tos_octet_is_what_scapy_reads_and_checksums_hold(tos):
    seg = Segment(40000, 80, 1, 2, 0x10, 1000, 0, (), b"x")
    s = IP(build_ip_tcp(A, B, seg, tos=tos))
    assert s.tos == tos
    ck = s.chksum
    del s.chksum
    assert IP(raw(s)).chksum == ck
    assert IPv6(build_ip_tcp(A6, B6, seg, tos=tos)).tc == tos
    assert parse_ip(build_ip_tcp(A, B, seg, tos=tos)).src == A


def test_scapy_tos_is_read_back_by_our_builder_equivalently():
    seg = Segment(40000, 80, 1, 2, 0x10, 1000, 0, (), b"")
    ours = build_ip_tcp(A, B, seg, tos=0xB8)
    theirs = raw(IP(src=A, dst=B, tos=0xB8, flags="DF", ttl=64, id=0) / TCP(sport=40000, dport=80, seq=1, ack=2, flags="A", window=1000))
    assert ours == theirs


def test_bad_tos_is_a_value_error():
    seg = Segment(40000, 80, 1, 2, 0x10, 1000, 0, (), b"")
    for bad in (256, -1):
        with pytest.raises(ValueError, match="tos"):
            build_ip_tcp(A, B, seg, tos=bad)
        with pytest.raises(ValueError, match="tos"):
            build_ip_tcp(A6, B6, seg, tos=bad)


# ---------------------------------------------------------------- malformed
def test_malformed_messages_name_the_problem():
    good = build_icmp_error(R, A, 3, 1, offending(A, B)[:28])
    ip = parse_ip(good)
    payload = bytes(ip.payload)
    with pytest.raises(ChecksumError):
        parse_icmp(4, R, A, payload[:2] + b"\0\0" + payload[4:])
    with pytest.raises(MalformedPacket, match="truncated ICMP header"):
        parse_icmp(4, R, A, payload[:7])
    with pytest.raises(MalformedPacket, match="need 8"):
        parse_icmp(4, R, A, payload[:8 + 20 + 4], verify_checksum=False)
    with pytest.raises(MalformedPacket, match="IPv4 header"):
        parse_icmp(4, R, A, payload[:8 + 10], verify_checksum=False)
    wrong = bytearray(payload)
    wrong[8] = 0x65
    with pytest.raises(MalformedPacket, match="version"):
        parse_icmp(4, R, A, bytes(wrong), verify_checksum=False)
    with pytest.raises(ChecksumError):
        parse_icmp(4, R, A, bytes(8))  # all zeros sum to 0, not 0xFFFF


@given(st.integers(0, 1), st.binary(max_size=120))
@settings(max_examples=400, deadline=None)
def test_random_icmp_bytes_parse_or_raise_malformed(v6, data):
    for verify in (True, False):
        try:
            msg = parse_icmp(6 if v6 else 4, R, A, data, bytes(16), bytes(16), verify)
        except MalformedPacket as exc:
            assert exc.reason
        else:
            assert isinstance(msg, IcmpMessage)


@given(st.integers(0, 39), st.integers(0, 255), st.sampled_from([(3, 1), (3, 4), (11, 0), (12, 0), (4, 0)]))
@settings(max_examples=300, deadline=None)
def test_mutated_quotes_parse_or_raise_malformed(pos, val, tc):
    body = bytearray(offending(A, B))
    body[pos] = val
    pkt = build_icmp_error(R, A, tc[0], tc[1], bytes(body))
    try:
        parse(pkt)
    except MalformedPacket as exc:
        assert exc.reason
