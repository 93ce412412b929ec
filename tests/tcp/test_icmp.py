"""ICMP input (RFC 9293 §3.9.2.2, RFC 1122 §4.2.3.9, RFC 5927, RFC 1191/8201):
crafted ICMP errors quoting the packets the stack sent, exact effects per
type, code and state, as Linux's tcp_v4_err()/tcp_v6_err().  And the TOS /
Traffic Class octet (MUST-48) and the TTL / Hop Limit (MUST-49) of what we send."""

from __future__ import annotations

import errno

from tcpstack.tcp import Config, Stack, State
from tcpstack.wire.icmp import build_icmp_error
from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp

from .conftest import (
    ACK,
    IRS,
    ISS,
    LOCAL,
    LPORT,
    MSS_OPT,
    PSH,
    REMOTE,
    RPORT,
    SYN,
    C,
    Opt,
    P,
    Peer,
    Segment,
    established_client,
    established_server,
    make_stack,
    out,
    seg,
)

ROUTER = "198.18.0.254"
L6, R6, ROUTER6 = "2001:2::2", "2001:2::1", "2001:2::fe"


def quote(src: str, dst: str, s: Segment) -> bytes:
    """What a router quotes of a packet: its IP header and 8 bytes of TCP (RFC 792)."""
    pkt = build_ip_tcp(src, dst, s)
    return pkt[: (40 if ":" in src else 20) + 8]


def icmp(stack: Stack, t: int, mtype: int, code: int, s: Segment, info: int = 0,
         frm: str = ROUTER, local: str = LOCAL, remote: str = REMOTE) -> list[bytes]:
    """An ICMP error from ``frm`` about our segment ``s`` (local -> remote); what the stack sent back."""
    stack.receive(build_icmp_error(frm, local, mtype, code, quote(local, remote, s), info), t)
    return stack.transmit()


def our(sseq: int, ack: int = 0, flags: int = ACK) -> Segment:
    return out(sseq, ack, flags)


def syn_sent(stack: Stack, peer: Peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    return conn


def run_timers(stack: Stack, peer: Peer, t: int, limit: int = 40) -> int:
    for _ in range(limit):
        d = stack.next_deadline()
        if d is None:
            break
        t = d
        peer.poll(t)
    return t


# ---------------------------------------------------------------- SYN-SENT: Linux aborts the attempt
def test_host_unreachable_in_syn_sent_fails_connect_with_ehostunreach(stack, peer):
    conn = syn_sent(stack, peer)
    assert icmp(stack, 500, 3, 1, our(ISS, 0, SYN)) == []
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, OSError) and conn.error.errno == errno.EHOSTUNREACH
    m = stack.mib
    assert (m.IcmpInMsgs, m.IcmpInDestUnreachs, m.IcmpInErrors, m.AttemptFails) == (1, 1, 0, 1)
    assert m.InSegs == 0 and m.InErrs == 0  # ICMP is not a TCP segment


def test_each_code_in_syn_sent_gives_linuxs_errno(peer):
    cases = {(3, 0): errno.ENETUNREACH, (3, 2): errno.ENOPROTOOPT, (3, 3): errno.ECONNREFUSED,
             (3, 5): errno.EOPNOTSUPP, (3, 13): errno.EHOSTUNREACH, (11, 0): errno.EHOSTUNREACH,
             (12, 0): errno.EPROTO}
    for (t, c), want in cases.items():
        stack = make_stack()
        conn = syn_sent(stack, Peer(stack))
        icmp(stack, 500, t, c, our(ISS, 0, SYN))
        assert conn.state is State.CLOSED and conn.error is not None and conn.error.errno == want, (t, c)
    stack = make_stack()
    conn = syn_sent(stack, Peer(stack))
    icmp(stack, 500, 3, 3, our(ISS, 0, SYN))
    assert isinstance(conn.error, ConnectionRefusedError)


def test_source_quench_redirect_and_code_above_15_are_ignored(stack, peer):
    conn = syn_sent(stack, peer)
    icmp(stack, 500, 4, 0, our(ISS, 0, SYN))  # MUST-55: silently discarded
    icmp(stack, 600, 5, 1, our(ISS, 0, SYN), info=0xC6120001)
    icmp(stack, 700, 3, 16, our(ISS, 0, SYN))
    assert conn.state is State.SYN_SENT and conn.error is None and conn.soft_error is None
    m = stack.mib
    assert (m.IcmpInMsgs, m.IcmpInSrcQuenchs, m.IcmpInRedirects, m.IcmpInDestUnreachs) == (3, 1, 1, 1)
    # ... and the SYN is still retransmitted as usual.
    assert peer.poll(1_000_000) == [out(ISS, 0, SYN, opts=MSS_OPT)]


def test_icmp_quoting_another_sequence_number_is_dropped_and_counted(stack, peer):
    conn = syn_sent(stack, peer)
    icmp(stack, 500, 3, 1, our(ISS + 1000, 0, SYN))  # RFC 5927 §4.1: not SND.UNA..SND.NXT
    assert conn.state is State.SYN_SENT and conn.error is None
    assert stack.mib.OutOfWindowIcmps == 1 and stack.mib.IcmpInErrors == 0


# ---------------------------------------------------------------- synchronized: soft errors only
def test_host_unreachable_when_established_is_soft_and_reported_on_timeout(stack, peer):
    stack.config.tcp_retries2 = 3
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    assert peer.recv() == [out(C, P, ACK | PSH, payload=b"data")]
    icmp(stack, 3000, 3, 1, our(C, P, ACK | PSH))
    assert conn.state is State.ESTABLISHED and conn.error is None  # MUST-56: no abort
    assert conn.soft_error is not None and conn.soft_error[1].errno == errno.EHOSTUNREACH
    run_timers(stack, peer, 3000)
    # Linux's tcp_write_err(): sk_err = sk_err_soft ?: ETIMEDOUT (SHLD-25).
    assert conn.state is State.CLOSED and conn.error is not None
    assert conn.error.errno == errno.EHOSTUNREACH and not isinstance(conn.error, TimeoutError)


def test_soft_error_is_forgotten_once_data_is_acknowledged(stack, peer):
    stack.config.tcp_retries2 = 3
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    peer.recv()
    icmp(stack, 3000, 3, 0, our(C, P, ACK | PSH))
    peer.send(4000, seg(P, ISS + 5))  # the path works after all
    conn.send(b"more", 5000)
    peer.recv()
    run_timers(stack, peer, 5000)
    assert conn.state is State.CLOSED and isinstance(conn.error, TimeoutError)


def test_port_and_protocol_unreachable_do_not_abort_a_synchronized_connection(stack, peer):
    # SHLD-26 says abort; Linux keeps them as soft errors once connected (tcp_v4_err).
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    peer.recv()
    for code in (2, 3):
        icmp(stack, 3000, 3, code, our(C, P, ACK | PSH))
        assert conn.state is State.ESTABLISHED and conn.error is None
    assert conn.soft_error is not None and conn.soft_error[1].errno == errno.ECONNREFUSED
    assert peer.send(4000, seg(P, ISS + 5)) == []
    assert conn.send(b"ok", 5000) == 2


def test_time_exceeded_and_parameter_problem_never_abort_a_synchronized_connection(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    peer.recv()
    icmp(stack, 3000, 11, 0, our(C, P, ACK | PSH))
    icmp(stack, 3001, 12, 0, our(C, P, ACK | PSH), info=9 << 24)
    assert conn.state is State.ESTABLISHED and conn.error is None
    assert conn.soft_error is not None and conn.soft_error[1].errno == errno.EPROTO
    assert (stack.mib.IcmpInTimeExcds, stack.mib.IcmpInParmProbs) == (1, 1)


def test_out_of_window_icmp_when_established_is_dropped(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    peer.recv()
    # Quoting SND.UNA - 1 (a keepalive probe's number) and SND.NXT + 1: both outside.
    icmp(stack, 3000, 3, 1, our(ISS, P))
    icmp(stack, 3000, 3, 1, our(ISS + 6, P))
    assert conn.soft_error is None and stack.mib.OutOfWindowIcmps == 2
    icmp(stack, 3000, 3, 1, our(ISS + 5, P))  # SND.NXT itself is inside (Linux's between())
    assert conn.soft_error is not None


# ---------------------------------------------------------------- path MTU (RFC 1191, RFC 8201)
def test_fragmentation_needed_lowers_mss_and_resends_the_flight(stack, peer):
    conn = established_client(stack, peer)
    data = bytes(range(256)) * 18  # 4608 bytes: 1460 + 1460 + 1460 + 228
    conn.send(data, 2000)
    sent = peer.recv()
    assert [len(s.payload) for s in sent] == [1460, 1460, 1460, 228]
    retrans = stack.mib.RetransSegs
    r = [parse_ip_tcp(p)[2] for p in icmp(stack, 3000, 3, 4, sent[0], info=1280)]
    assert conn.snd_mss == 1240 and conn.pmtu == 1280
    got = [(s.seq, len(s.payload)) for s in r]
    assert got == [(ISS + 1, 1240), (ISS + 1241, 1240), (ISS + 2481, 1240), (ISS + 3721, 888)]
    assert b"".join(bytes(s.payload) for s in r) == data
    assert stack.mib.RetransSegs == retrans + 4 and conn.state is State.ESTABLISHED
    assert conn.error is None and conn.soft_error is None


def test_fragmentation_needed_floor_and_no_growth(stack, peer):
    conn = established_client(stack, peer)
    icmp(stack, 3000, 3, 4, our(C, P), info=1400)
    assert (conn.pmtu, conn.snd_mss) == (1400, 1360)
    icmp(stack, 3001, 3, 4, our(C, P), info=1500)  # never grows from ICMP
    assert (conn.pmtu, conn.snd_mss) == (1400, 1360)
    icmp(stack, 3002, 3, 4, our(C, P), info=300)  # Linux's min_pmtu: 552
    assert (conn.pmtu, conn.snd_mss) == (552, 512)
    assert conn.soft_error is not None and conn.soft_error[1].errno == errno.EMSGSIZE
    assert conn.state is State.ESTABLISHED


def test_fragmentation_needed_with_mtu_zero_uses_the_floor(stack, peer):
    conn = established_client(stack, peer)
    icmp(stack, 3000, 3, 4, our(C, P), info=0)  # a pre-RFC 1191 router
    assert (conn.pmtu, conn.snd_mss) == (552, 512)


def test_fragmentation_needed_in_syn_sent_changes_nothing(stack, peer):
    conn = syn_sent(stack, peer)
    icmp(stack, 500, 3, 4, our(ISS, 0, SYN), info=576)
    assert conn.state is State.SYN_SENT and conn.pmtu == 1500 and conn.error is None


def _established6(stack: Stack) -> tuple:
    p6 = Peer(stack, R6)
    conn = stack.connect(R6, RPORT, 0, local_port=LPORT)
    stack.transmit()
    stack.receive(build_ip_tcp(R6, L6, seg(IRS, C, SYN | ACK, opts=(Opt(2, 1440),))), 1000)
    stack.transmit()
    assert conn.state is State.ESTABLISHED and conn.snd_mss == 1440
    return conn, p6


def test_ipv6_packet_too_big_lowers_mss_but_never_below_1280():
    stack = make_stack(addr=L6)
    conn, _ = _established6(stack)
    icmp(stack, 2000, 2, 0, our(C, P), info=1000, frm=ROUTER6, local=L6, remote=R6)
    assert conn.snd_mss == 1440 and stack.mib.Icmp6InPktTooBigs == 1  # RFC 8200 §5: ignored
    icmp(stack, 2001, 2, 0, our(C, P), info=1280, frm=ROUTER6, local=L6, remote=R6)
    assert (conn.pmtu, conn.snd_mss) == (1280, 1220)
    assert stack.mib.Icmp6InMsgs == 2 and stack.mib.IcmpInMsgs == 0


def test_ipv6_errors_map_as_linux():
    for (t, c), want in {(1, 0): errno.ENETUNREACH, (1, 1): errno.EACCES, (1, 3): errno.EHOSTUNREACH,
                         (1, 4): errno.ECONNREFUSED, (3, 0): errno.EHOSTUNREACH, (4, 1): errno.EPROTO}.items():
        stack = make_stack(addr=L6)
        conn = stack.connect(R6, RPORT, 0, local_port=LPORT)
        stack.transmit()
        icmp(stack, 500, t, c, our(ISS, 0, SYN), frm=ROUTER6, local=L6, remote=R6)
        assert conn.state is State.CLOSED and conn.error is not None and conn.error.errno == want, (t, c)


# ---------------------------------------------------------------- the rest of the demultiplexing
def test_icmp_for_no_connection_counts_an_input_error(stack, peer):
    icmp(stack, 0, 3, 1, our(ISS, 0, SYN))
    assert (stack.mib.IcmpInMsgs, stack.mib.IcmpInErrors, stack.mib.InErrs) == (1, 1, 0)


def test_icmp_for_a_half_open_request_drops_it_as_linux(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    key = (LOCAL, LPORT, REMOTE, RPORT)
    assert key in lst.requests
    icmp(stack, 100, 3, 1, our(ISS + 7, P, SYN | ACK))  # tcp_req_err: seq must be the ISS
    assert key in lst.requests and stack.mib.OutOfWindowIcmps == 1
    icmp(stack, 100, 3, 3, our(ISS, P, SYN | ACK))  # port unreachable: not an abort here
    assert key in lst.requests
    icmp(stack, 200, 3, 1, our(ISS, P, SYN | ACK))
    assert key not in lst.requests and stack.mib.ListenDrops == 1
    assert peer.poll(5_000_000) == []  # no SYN-ACK retransmission for a dropped request


def test_icmp_for_time_wait_is_ignored(stack, peer):
    lst, conn = established_server(stack, peer)
    conn.close(2000)
    fin = peer.recv()[0]
    peer.send(3000, seg(P, ISS + 2, ACK | 1))  # ACK of our FIN, and the peer's FIN
    assert stack.timewait
    icmp(stack, 4000, 3, 1, fin)
    assert stack.timewait and stack.mib.IcmpInErrors == 0


def test_malformed_icmp_is_counted_and_dropped(stack, peer):
    conn = syn_sent(stack, peer)
    good = build_icmp_error(ROUTER, LOCAL, 3, 1, quote(LOCAL, REMOTE, our(ISS, 0, SYN)))
    bad_csum = bytearray(good)
    bad_csum[22] ^= 0xFF
    short_quote = build_icmp_error(ROUTER, LOCAL, 3, 1, quote(LOCAL, REMOTE, our(ISS, 0, SYN))[:24])
    hdr = bytearray(good[:24])  # an ICMP header of 4 bytes: shorter than 8
    hdr[2:4] = (24).to_bytes(2, "big")
    hdr[10:12] = b"\0\0"
    words = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, 20, 2))
    hdr[10:12] = (0xFFFF - (words % 0xFFFF)).to_bytes(2, "big")
    for i, pkt in enumerate((bytes(bad_csum), short_quote, bytes(hdr))):
        stack.receive(pkt, 100 + i)
    m = stack.mib
    assert (m.IcmpInMsgs, m.IcmpInErrors, m.IcmpInCsumErrors, m.InErrs) == (3, 3, 1, 0)
    assert conn.state is State.SYN_SENT and stack.transmit() == []


def test_icmp_not_for_us_or_about_udp_has_no_effect(stack, peer):
    conn = syn_sent(stack, peer)
    stack.receive(build_icmp_error(ROUTER, "198.18.9.9", 3, 1, quote(LOCAL, REMOTE, our(ISS, 0, SYN))), 100)
    udp = bytearray(quote(LOCAL, REMOTE, our(ISS, 0, SYN)))
    udp[9] = 17
    stack.receive(build_icmp_error(ROUTER, LOCAL, 3, 3, bytes(udp)), 200)
    assert conn.state is State.SYN_SENT and stack.mib.IcmpInMsgs == 2
    assert stack.mib.IcmpInErrors == 0


# ---------------------------------------------------------------- MUST-20 (R1), as Linux
def test_r1_retransmissions_keep_the_path_and_go_on_to_r2(stack, peer):
    # Linux's negative advice at tcp_retries1 only resets the socket's cached
    # route (ipv4_negative_advice); the learned path MTU survives it.  tcpstack
    # has one route (its interface): the retransmissions after R1 leave at the
    # same size to the same place, and the connection lives on until R2.
    conn = established_client(stack, peer)
    icmp(stack, 1500, 3, 4, our(C, P), info=1280)
    conn.send(b"x" * 3000, 2000)
    first = peer.recv()
    assert [len(s.payload) for s in first] == [1240, 1240, 520]
    t = 2000
    for _ in range(stack.config.tcp_retries1 + 2):
        t = stack.next_deadline()
        assert [len(s.payload) for s in peer.poll(t)] == [1240]
    assert conn.retries == stack.config.tcp_retries1 + 2 and conn.state is State.ESTABLISHED
    assert conn.pmtu == 1280


# ---------------------------------------------------------------- TOS / Traffic Class (MUST-48)
def test_tos_goes_into_every_packet_and_can_change_mid_connection(stack, peer):
    conn = established_client(stack, peer)
    conn.tos = 0xB8  # EF
    conn.send(b"a", 2000)
    pkts = stack.transmit()
    assert [p[1] for p in pkts] == [0xB8]
    assert parse_ip_tcp(pkts[0])[2].payload == b"a"  # header checksum still right
    conn.tos = 0x20
    peer.send(3000, seg(P, ISS + 2, ACK | PSH, payload=b"x" * 10))
    conn.send(b"b", 3000)
    assert {p[1] for p in stack.transmit()} == {0x20}


def test_listener_tos_on_syn_ack_and_inherited_by_the_child(stack, peer):
    lst = stack.listen(LPORT, 0)
    lst.tos = 0x28
    synack = peer.send_ip(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    assert [p[1] for p in synack] == [0x28]
    peer.send(1000, seg(P, C, ACK))
    conn = lst.accept()
    assert conn is not None and conn.tos == 0x28


def test_ipv6_traffic_class_in_packets():
    stack = make_stack(addr=L6)
    conn = stack.connect(R6, RPORT, 0, local_port=LPORT, setup=lambda c: setattr(c, "tos", 0xB8))
    (pkt,) = stack.transmit()
    assert conn.tos == 0xB8
    assert (int.from_bytes(pkt[:4], "big") >> 20) & 0xFF == 0xB8


# ---------------------------------------------------------------- TTL / Hop Limit (MUST-49)
def test_ttl_is_the_tunable_then_the_connections_own_value(stack, peer):
    stack.config.set("net.ipv4.ip_default_ttl", 99)
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    (syn,) = stack.transmit()
    assert syn[8] == 99 and conn.ttl == 99
    peer.send(1000, seg(IRS, C, SYN | ACK, 65535, opts=MSS_OPT))
    conn.ttl = 7  # IP_TTL: from the next packet on, also mid-connection
    conn.send(b"a", 2000)
    pkts = stack.transmit()
    assert [p[8] for p in pkts] == [7]
    assert parse_ip_tcp(pkts[0])[2].payload == b"a"  # header checksum still right
    # A segment for no connection draws a reset with the tunable's TTL (Linux's control socket).
    (rst,) = peer.send_ip(3000, seg(1, 2, ACK, dport=LPORT + 1))
    assert rst[8] == 99


def test_listener_ttl_on_syn_ack_and_inherited_by_the_child(stack, peer):
    lst = stack.listen(LPORT, 0)
    assert lst.ttl is None  # the tunable
    assert [p[8] for p in peer.send_ip(0, seg(IRS, 0, SYN, opts=MSS_OPT))] == [64]
    lst.ttl = 3  # IP_TTL on the listening socket
    assert [p[8] for p in peer.send_ip(0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + 1))] == [3]
    assert peer.send(1000, seg(P, C, ACK, sport=RPORT + 1)) == []
    conn = lst.accept()
    assert conn is not None and conn.remote_port == RPORT + 1 and conn.ttl == 3


def test_ipv6_hop_limit_in_packets():
    stack = make_stack(addr=L6)
    stack.config.set("net.ipv6.conf.all.hop_limit", 200)
    conn = stack.connect(R6, RPORT, 0, local_port=LPORT)
    (pkt,) = stack.transmit()
    assert conn.ttl == 200 and pkt[7] == 200
    stack.config.set("ip_default_ttl", 5)  # the IPv4 knob does not touch IPv6
    stack.receive(build_ip_tcp(R6, L6, seg(1, 2, ACK, dport=LPORT + 1)), 0)
    (rst,) = stack.transmit()
    assert rst[7] == 200


def test_ttl_tunables_are_validated_as_linux():
    cfg = Config()
    for key, bad in (("ip_default_ttl", 0), ("ip_default_ttl", 256), ("hop_limit", 0), ("hop_limit", 256)):
        try:
            cfg.set(key, bad)
        except ValueError as exc:
            assert key in str(exc)
        else:
            raise AssertionError(f"{key}={bad} accepted")
    assert cfg.key_name("net.ipv6.conf.default.hop_limit") == "hop_limit"
