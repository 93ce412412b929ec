"""scapy as an independent oracle, in both directions.

What we build, scapy dissects field by field (and recomputes both checksums
after deleting them); what scapy builds -- including IPv4 options and IPv6
extension headers -- we parse to the same fields.  scapy is a test-only
dependency; it never runs on the data path.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import (
    IP,
    TCP,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    TCPOptions,
    fragment,
    in4_chksum,
)
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    RouterAlert,
    in6_chksum,
)
from scapy.packet import Raw
from scapy.utils import checksum
from wire_testlib import (
    V4_DST,
    V4_SRC,
    V6_DST,
    V6_SRC,
    ipv4_addrs,
    ipv6_addrs,
    option_lists,
    packed,
    payloads,
    u16,
    u32,
)

from tcpstack.wire import (
    ACK,
    EOL,
    NOP,
    PSH,
    SACK_PERM_OPT,
    SYN,
    ChecksumError,
    IPChecksumError,
    MalformedPacket,
    Opt,
    Segment,
    build_ip_tcp,
    mss_opt,
    parse_ip_tcp,
    sack_opt,
    ts_opt,
    wscale_opt,
)

oracle = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

# Option kinds scapy decodes itself (UTO, TFO, MD5, ...) would come back in
# scapy's own spelling; the unknown kinds we compare are the ones it keeps raw.
SCAPY_KNOWN_KINDS = set(TCPOptions[0])


def scapy_options(options) -> list:
    out: list = []
    for kind, value in options:
        if kind == 0:
            out.append(("EOL", None))
        elif kind == 1:
            out.append(("NOP", None))
        elif kind == 2:
            out.append(("MSS", value))
        elif kind == 3:
            out.append(("WScale", value))
        elif kind == 4:
            out.append(("SAckOK", b""))
        elif kind == 5:
            out.append(("SAck", tuple(e for block in value for e in block)))
        elif kind == 8:
            out.append(("Timestamp", tuple(value)))
        else:
            out.append((kind, bytes(value)))
    return out


def our_options(scapy_opts) -> tuple[Opt, ...]:
    names = {"EOL": EOL, "NOP": NOP, "SAckOK": SACK_PERM_OPT}
    out = []
    for name, value in scapy_opts:
        if name in names:
            out.append(names[name])
        elif name == "MSS":
            out.append(mss_opt(value))
        elif name == "WScale":
            out.append(wscale_opt(value))
        elif name == "SAck":
            out.append(sack_opt(zip(value[::2], value[1::2], strict=True)))
        elif name == "Timestamp":
            out.append(ts_opt(*value))
        else:
            assert isinstance(name, int), f"scapy decoded option {name!r}"
            out.append(Opt(name, value))
    return tuple(out)


def scapy_comparable(opts: tuple[Opt, ...]) -> bool:
    return all(k in (0, 1, 2, 3, 4, 5, 8) or k not in SCAPY_KNOWN_KINDS for k, _ in opts)


scapy_segments = st.builds(
    Segment,
    u16,
    u16,
    u32,
    u32,
    st.integers(0, 0x1FF),
    u16,
    u16,
    option_lists().filter(scapy_comparable),
    payloads,
)


def assert_scapy_sees(pkt: bytes, src: str, dst: str, seg: Segment) -> None:
    """Dissect ``pkt`` with scapy and compare every field with ``seg``."""
    v6 = ":" in src
    p = IPv6(pkt) if v6 else IP(pkt)
    assert packed(p.src) == packed(src) and packed(p.dst) == packed(dst)
    t = p[TCP]
    assert (t.sport, t.dport, t.seq, t.ack) == (seg.src_port, seg.dst_port, seg.seq, seg.ack)
    assert int(t.flags) == seg.flags and t.reserved == 0
    assert (t.window, t.urgptr) == (seg.window, seg.urg)
    assert our_options(t.options) == seg.options
    assert bytes(t.payload) == bytes(seg.payload)
    assert t.dataofs * 4 == len(pkt) - (40 if v6 else 20) - len(seg.payload)
    # Checksums: valid by scapy's own arithmetic...
    if v6:
        assert (p.nh, p.plen) == (6, len(pkt) - 40)
        assert in6_chksum(6, t, raw(t)) == 0
    else:
        assert (p.version, p.ihl, p.len, p.proto, p.frag) == (4, 5, len(pkt), 6, 0)
        assert p.flags == "DF"
        assert checksum(pkt[:20]) == 0
        assert in4_chksum(6, p, raw(t)) == 0
    # ... and equal to what scapy computes itself once they are deleted.
    q = p.copy()
    del q[TCP].chksum
    if not v6:
        del q.chksum
    rebuilt = (IPv6 if v6 else IP)(raw(q))
    assert raw(rebuilt) == pkt
    assert rebuilt[TCP].chksum == t.chksum
    if not v6:
        assert rebuilt.chksum == p.chksum


# ---------------------------------------------------------------- ours -> scapy


@oracle
@given(scapy_segments, ipv4_addrs, ipv4_addrs, st.integers(0, 255), u16)
def test_scapy_dissects_our_ipv4(seg, src, dst, ttl, ident):
    pkt = build_ip_tcp(src, dst, seg, ttl=ttl, ident=ident)
    assert_scapy_sees(pkt, src, dst, seg)
    p = IP(pkt)
    assert (p.ttl, p.id) == (ttl, ident)


@oracle
@given(scapy_segments, ipv6_addrs, ipv6_addrs, st.integers(0, 255))
def test_scapy_dissects_our_ipv6(seg, src, dst, hlim):
    pkt = build_ip_tcp(src, dst, seg, ttl=hlim)
    assert_scapy_sees(pkt, src, dst, seg)
    p = IPv6(pkt)
    assert (p.hlim, p.tc, p.fl) == (hlim, 0, 0)


def test_scapy_dissects_a_linux_like_syn_and_data():
    syn = Segment(
        40000, 80, 1, 0, SYN, 64240, 0,
        (mss_opt(1460), SACK_PERM_OPT, ts_opt(7, 0), NOP, wscale_opt(7)),
    )  # fmt: skip
    data = Segment(40000, 80, 2, 9, PSH | ACK, 502, 0, (NOP, NOP, ts_opt(8, 3)), b"x" * 1448)
    for seg in (syn, data):
        assert_scapy_sees(build_ip_tcp(V4_SRC, V4_DST, seg), V4_SRC, V4_DST, seg)
        assert_scapy_sees(build_ip_tcp(V6_SRC, V6_DST, seg), V6_SRC, V6_DST, seg)


# ---------------------------------------------------------------- scapy -> ours


def scapy_tcp(seg: Segment) -> TCP:
    t = TCP(
        sport=seg.src_port, dport=seg.dst_port, seq=seg.seq, ack=seg.ack, flags=seg.flags,
        window=seg.window, urgptr=seg.urg, options=scapy_options(seg.options),
    )  # fmt: skip
    return t / Raw(bytes(seg.payload)) if seg.payload else t


IP_OPTION_SETS = [
    [],
    [IPOption_NOP()],
    [IPOption_Router_Alert()],
    [IPOption_RR(routers=["198.18.0.9"])],
    [IPOption_NOP(), IPOption_RR(routers=["198.18.0.9", "198.18.0.10"]), IPOption_Router_Alert()],
]


@oracle
@given(scapy_segments, ipv4_addrs, ipv4_addrs, st.sampled_from(range(len(IP_OPTION_SETS))))
def test_we_parse_scapys_ipv4(seg, src, dst, which):
    ip = IP(src=src, dst=dst, ttl=33, options=IP_OPTION_SETS[which])
    pkt = raw(ip / scapy_tcp(seg))
    assert parse_ip_tcp(pkt) == (src, dst, seg)


def ext_chain(which: int):
    return [
        None,
        IPv6ExtHdrHopByHop(options=[RouterAlert()]),
        IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 4)]),
        IPv6ExtHdrHopByHop(options=[RouterAlert()]) / IPv6ExtHdrDestOpt(),
        IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 12)]),
    ][which]


@oracle
@given(scapy_segments, ipv6_addrs, ipv6_addrs, st.integers(0, 4))
def test_we_parse_scapys_ipv6(seg, src, dst, which):
    chain = ext_chain(which)
    ip = IPv6(src=src, dst=dst, hlim=17)
    pkt = raw(ip / chain / scapy_tcp(seg) if chain is not None else ip / scapy_tcp(seg))
    src_txt, dst_txt, got = parse_ip_tcp(pkt)
    assert packed(src_txt) == packed(src) and packed(dst_txt) == packed(dst)
    assert src_txt == socket.inet_ntop(socket.AF_INET6, packed(src))
    assert got == seg


def test_we_parse_scapys_ipv4_options_and_report_header_length():
    from tcpstack.wire import parse_ip

    pkt = raw(
        IP(src=V4_SRC, dst=V4_DST, options=[IPOption_RR(routers=["198.18.0.9"])])
        / TCP(flags="S", options=[("MSS", 1400)])
    )
    ip = parse_ip(pkt)
    assert ip.header_len == 28 and ip.proto == 6
    assert parse_ip_tcp(pkt)[2].mss == 1400


def test_scapy_fragments_are_refused():
    big = IP(src=V4_SRC, dst=V4_DST) / TCP(flags="PA") / Raw(b"x" * 2980)  # 3000 bytes of TCP
    frags = fragment(big, fragsize=1000)
    assert len(frags) == 3
    reasons = []
    for frag in frags:
        with pytest.raises(MalformedPacket) as info:
            parse_ip_tcp(raw(frag))
        reasons.append(info.value.reason)
    assert reasons == [
        "IPv4 fragment (offset 0, MF=1) not supported",
        "IPv4 fragment (offset 125, MF=1) not supported",
        "IPv4 fragment (offset 250, MF=0) not supported",
    ]
    frag6 = IPv6(src=V6_SRC, dst=V6_DST) / IPv6ExtHdrFragment(m=1) / TCP()
    with pytest.raises(MalformedPacket, match=r"IPv6 next header 44 \(Fragment\) not supported"):
        parse_ip_tcp(raw(frag6))
    routed = IPv6(src=V6_SRC, dst=V6_DST) / IPv6ExtHdrRouting(addresses=["fd00::9"]) / TCP()
    with pytest.raises(MalformedPacket, match=r"IPv6 next header 43 \(Routing\) not supported"):
        parse_ip_tcp(raw(routed))


def test_scapy_bad_checksums_are_caught():
    bad_tcp = IP(src=V4_SRC, dst=V4_DST) / TCP(flags="A", chksum=0x1234) / Raw(b"abc")
    with pytest.raises(ChecksumError, match="bad TCP checksum 0x1234"):
        parse_ip_tcp(raw(bad_tcp))
    bad_ip = IP(src=V4_SRC, dst=V4_DST, chksum=0x1234) / TCP(flags="A")
    with pytest.raises(IPChecksumError, match="bad IPv4 header checksum 0x1234"):
        parse_ip_tcp(raw(bad_ip))
    bad6 = IPv6(src=V6_SRC, dst=V6_DST) / TCP(flags="A", chksum=0x1234)
    with pytest.raises(ChecksumError):
        parse_ip_tcp(raw(bad6))


def test_scapy_udp_is_not_tcp():
    from scapy.layers.inet import UDP

    with pytest.raises(MalformedPacket, match=r"not TCP: protocol 17 \(UDP\)"):
        parse_ip_tcp(raw(IP(src=V4_SRC, dst=V4_DST) / UDP()))


def test_scapy_ack_flag_constant_agrees():
    assert int(TCP(flags="A").flags) == ACK and int(TCP(flags="S").flags) == SYN
