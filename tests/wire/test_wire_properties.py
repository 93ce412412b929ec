"""Properties: round trips, fast path == general path, and robustness to any bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wire_testlib import (
    ipv4_addrs,
    ipv4_insert_options,
    ipv6_addrs,
    ipv6_insert_exts,
    packed,
    segments,
)

from tcpstack.wire import (
    ChecksumError,
    IPChecksumError,
    MalformedPacket,
    NotTcp,
    build_ip_tcp,
    build_tcp,
    parse_ip,
    parse_ip_tcp,
    parse_tcp,
)
from tcpstack.wire import ip as ipmod

# Property tests build kilobyte payloads and re-parse several times per
# example; a shared CI machine must not turn that into a deadline flake.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

addr_pairs = st.one_of(
    st.tuples(ipv4_addrs, ipv4_addrs),
    st.tuples(ipv6_addrs, ipv6_addrs),
)

# Valid IPv4 option blocks and IPv6 extension-header chains to wrap packets in.
IPV4_OPTION_BLOCKS = [
    b"",
    b"\x01\x01\x01\x00",
    b"\x07\x07\x04" + bytes(4) + b"\x00",  # Record Route, one slot
    b"\x44\x0c\x05\x01" + bytes(8),  # Timestamp, two slots
    b"\x94\x04\x00\x00",  # Router Alert
]
PADN4 = b"\x01\x04\x00\x00\x00\x00"
IPV6_EXT_CHAINS = [
    (),
    ((0, PADN4),),
    ((60, PADN4),),
    ((0, b"\x05\x02\x00\x00\x01\x00"), (60, b"\x01\x0c" + bytes(12))),
]


@st.composite
def valid_packets(draw: st.DrawFn) -> bytes:
    src, dst = draw(addr_pairs)
    pkt = build_ip_tcp(src, dst, draw(segments), ttl=draw(st.integers(0, 255)))
    if ":" in src:
        return ipv6_insert_exts(pkt, draw(st.sampled_from(IPV6_EXT_CHAINS)))
    return ipv4_insert_options(pkt, draw(st.sampled_from(IPV4_OPTION_BLOCKS)))


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2000), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 2000), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.integers(0, 255)),
)


def mutate(pkt: bytes, ops) -> bytes:
    buf = bytearray(pkt)
    for op, a, b in ops:
        if op == "flip" and buf:
            buf[a % len(buf)] ^= 1 << b
        elif op == "set" and buf:
            buf[a % len(buf)] = b
        elif op == "truncate":
            del buf[a % (len(buf) + 1) :]
        elif op == "extend":
            buf += bytes([b]) * a
    return bytes(buf)


def check_robust(pkt: bytes) -> None:
    """Parsing returns a packet or raises MalformedPacket -- nothing else; and
    whatever is accepted can be re-emitted and re-parses to the same thing."""
    for verify in (True, False):
        try:
            src, dst, seg = parse_ip_tcp(pkt, verify)
        except MalformedPacket as exc:
            assert isinstance(exc.reason, str) and exc.reason
            assert type(exc) in (MalformedPacket, ChecksumError, IPChecksumError, NotTcp)
        else:
            seg.describe()
            again = build_ip_tcp(src, dst, seg)
            assert parse_ip_tcp(again) == (src, dst, seg)
        try:
            ip = parse_ip(pkt, verify)
        except MalformedPacket:
            pass
        else:
            assert ip.version in (4, 6)
    for addr_len in (4, 16):
        try:
            parse_tcp(pkt, bytes(addr_len), bytes(addr_len))
        except MalformedPacket:
            pass


# ---------------------------------------------------------------- round trips


@relaxed
@given(segments, addr_pairs)
def test_tcp_round_trip(seg, addrs):
    src, dst = (packed(a) for a in addrs)
    assert parse_tcp(build_tcp(seg, src, dst), src, dst) == seg


@relaxed
@given(segments, addr_pairs, st.integers(0, 255), st.integers(0, 0xFFFF))
def test_ip_tcp_round_trip(seg, addrs, ttl, ident):
    src, dst = addrs
    pkt = build_ip_tcp(src, dst, seg, ttl=ttl, ident=ident)
    assert parse_ip_tcp(pkt) == (src, dst, seg)
    ip = parse_ip(pkt)
    assert (ip.src, ip.dst, ip.ttl, ip.proto) == (src, dst, ttl, 6)
    assert ip.version == (6 if ":" in src else 4)
    # build_tcp inside build_ip_tcp: the same TCP bytes.
    assert bytes(ip.payload) == build_tcp(seg, packed(src), packed(dst))


@relaxed
@given(valid_packets())
def test_fast_path_agrees_with_general_path(pkt):
    assert parse_ip_tcp(pkt) == ipmod._parse_ip_tcp_general(pkt, True)
    assert parse_ip_tcp(pkt, False) == ipmod._parse_ip_tcp_general(pkt, False)


# ---------------------------------------------------------------- robustness


@relaxed
@given(st.binary(max_size=120))
def test_random_bytes_raise_only_malformed(data):
    check_robust(data)


@relaxed
@given(
    st.sampled_from([0x45, 0x46, 0x4F, 0x60, 0x65]),
    st.sampled_from([0, 6, 17, 43, 44, 60]),
    st.binary(max_size=120),
)
def test_random_bytes_behind_plausible_first_bytes(b0, proto, rest):
    # Steer random data into the deeper branches: IPv4/6 headers with TCP or
    # extension headers as the next protocol.
    data = bytearray(bytes([b0]) + rest)
    if len(data) > 9 and b0 >> 4 == 4:
        data[9] = proto
    if len(data) > 6 and b0 >> 4 == 6:
        data[6] = proto
    check_robust(bytes(data))


@relaxed
@given(valid_packets(), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_packets_raise_only_malformed(pkt, ops):
    check_robust(mutate(pkt, ops))


@relaxed
@given(valid_packets())
def test_valid_packets_pass_robustness_check(pkt):
    check_robust(pkt)
    parse_ip_tcp(pkt)  # and they do parse


# ---------------------------------------------------------------- checksums catch flips


@relaxed
@given(segments.filter(lambda s: len(s.payload) > 0), addr_pairs, st.data())
def test_flipped_payload_bit_is_a_checksum_error(seg, addrs, data):
    src, dst = addrs
    pkt = bytearray(build_ip_tcp(src, dst, seg))
    i = data.draw(st.integers(len(pkt) - len(seg.payload), len(pkt) - 1))
    pkt[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ChecksumError):
        parse_ip_tcp(bytes(pkt))


@relaxed
@given(segments, addr_pairs, st.data())
def test_flipped_bit_in_tcp_fields_is_a_checksum_error(seg, addrs, data):
    src, dst = addrs
    pkt = bytearray(build_ip_tcp(src, dst, seg))
    ip_len = 40 if ":" in src else 20
    # Ports, seq, ack (0..11), flags byte (13), window/checksum/urgent (14..19).
    off = data.draw(st.sampled_from([*range(12), *range(13, 20)]))
    pkt[ip_len + off] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ChecksumError):
        parse_ip_tcp(bytes(pkt))


@relaxed
@given(segments, ipv4_addrs, ipv4_addrs, st.data())
def test_flipped_bit_in_ipv4_ttl_ident_tos_is_an_ip_checksum_error(seg, src, dst, data):
    pkt = bytearray(build_ip_tcp(src, dst, seg))
    off = data.draw(st.sampled_from([1, 4, 5, 8, 10, 11]))  # TOS, ident, TTL, checksum
    pkt[off] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(IPChecksumError):
        parse_ip_tcp(bytes(pkt))


@relaxed
@given(segments, addr_pairs)
def test_flipped_source_address_bit_is_a_checksum_error(seg, addrs):
    # The pseudo-header binds the segment to its addresses.
    src, dst = addrs
    assume(src != dst)
    pkt = bytearray(build_ip_tcp(src, dst, seg))
    if ":" in src:
        pkt[8] ^= 0x01
        with pytest.raises(ChecksumError):
            parse_ip_tcp(bytes(pkt))
    else:
        pkt[12] ^= 0x01  # IPv4: the header checksum catches it first
        with pytest.raises(IPChecksumError):
            parse_ip_tcp(bytes(pkt))
