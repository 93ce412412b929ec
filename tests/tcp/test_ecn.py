"""Explicit Congestion Notification (RFC 3168; RFC 9293 SHLD-8) as Linux's
tcp_ecn does it: crafted segments in, exact segments and TOS octets out."""

from __future__ import annotations

import itertools

import pytest

from tcpstack.tcp import Config, Stack
from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp
from tcpstack.wire.tcp import CWR, ECE, IP_CE, Opt

from .conftest import (
    ACK,
    IRS,
    ISS,
    LOCAL,
    LPORT,
    MSS,
    MSS_OPT,
    PSH,
    REMOTE,
    RPORT,
    SYN,
    C,
    P,
    Peer,
    Segment,
    established_client,
    make_stack,
    out,
    plain_config,
    seg,
)

ECT0, CE = 0b10, 0b11


def with_tos(pkts: list[bytes]) -> list[tuple[Segment, int]]:
    """Each IPv4 packet's segment and TOS octet."""
    return [(parse_ip_tcp(p)[2], p[1]) for p in pkts]


class EcnPeer(Peer):
    """The remote end, sending with a chosen TOS octet and showing ours."""

    def send_tos(self, now: int, segment: Segment, tos: int) -> list[tuple[Segment, int]]:
        return with_tos(self.send_ip(now, segment, tos))

    def recv_tos(self) -> list[tuple[Segment, int]]:
        return with_tos(self.stack.transmit())


def ecn_client(stack: Stack, peer: EcnPeer) -> object:
    """An active open with tcp_ecn=1 that the peer accepts (SYN-ACK with ECE only)."""
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    assert peer.recv_tos() == [(out(ISS, 0, SYN | ECE | CWR, opts=MSS_OPT), 0)]
    r = peer.send_tos(1000, seg(IRS, ISS + 1, SYN | ACK | ECE, opts=MSS_OPT), 0)
    assert r == [(out(C, P, ACK), 0)]  # a pure ACK: not ECT
    assert conn.ecn_ok and "ecn" in conn.info(1000)["options"]
    return conn


@pytest.fixture
def estack() -> Stack:
    return make_stack(plain_config(tcp_ecn=1, tcp_congestion_control="newreno"))


@pytest.fixture
def epeer(estack: Stack) -> EcnPeer:
    return EcnPeer(estack)


# ---------------------------------------------------------------- negotiation (§6.1.1)
def _shuttle(a: Stack, b: Stack, now: int) -> list[tuple[Segment, int]]:
    """Deliver what ``a`` has queued to ``b``; return those segments with their TOS."""
    pkts = a.transmit()
    for pkt in pkts:
        b.receive(pkt, now)
    return with_tos(pkts)


@pytest.mark.parametrize(("client_ecn", "server_ecn"), list(itertools.product((0, 1, 2), repeat=2)))
def test_negotiation_in_every_combination_of_tcp_ecn(client_ecn: int, server_ecn: int) -> None:
    client = make_stack(plain_config(tcp_ecn=client_ecn), iss=IRS, addr=REMOTE)
    server = make_stack(plain_config(tcp_ecn=server_ecn), seed=2)
    lst = server.listen(LPORT, 0)
    conn = client.connect(LOCAL, LPORT, 0, local_port=RPORT)
    (syn, syn_tos), = _shuttle(client, server, 0)
    (synack, synack_tos), = _shuttle(server, client, 100)
    (ack, ack_tos), = _shuttle(client, server, 200)
    child = lst.accept()
    assert child is not None
    # Only tcp_ecn=1 asks (ECE|CWR on the SYN); 1 and 2 answer (ECE alone on the SYN-ACK).
    asked = client_ecn == 1
    agreed = asked and server_ecn != 0
    assert syn.flags == (SYN | ECE | CWR if asked else SYN)
    assert synack.flags == (SYN | ACK | ECE if agreed else SYN | ACK)
    assert ack.flags == ACK
    assert syn_tos == synack_tos == ack_tos == 0  # no handshake packet is ECN-capable
    assert conn.ecn_ok is agreed and child.ecn_ok is agreed
    conn.send(b"d" * 100, 300)
    (data, data_tos), = _shuttle(client, server, 300)
    assert data_tos == (ECT0 if agreed else 0) and bytes(data.payload) == b"d" * 100


def test_syn_ack_with_ece_and_cwr_is_not_ecn_setup(estack: Stack, epeer: EcnPeer) -> None:
    conn = estack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    epeer.recv()
    epeer.send_tos(1000, seg(IRS, ISS + 1, SYN | ACK | ECE | CWR, opts=MSS_OPT), 0)
    assert not conn.ecn_ok  # RFC 3168 §6.1.1: ECE set and CWR clear, or no ECN
    conn.send(b"x", 2000)
    assert [t for _, t in epeer.recv_tos()] == [0]


@pytest.mark.parametrize(("flags", "tos", "agreed"), [
    (SYN | ECE | CWR, 0, True),
    (SYN | ECE, 0, False),  # not an ECN-setup SYN
    (SYN | CWR, 0, False),
    (SYN | ECE | CWR, ECT0, False),  # an ECN-capable SYN: Linux refuses ECN (RFC 3168 §6.1.1)
])
def test_listener_answers_only_an_ecn_setup_syn(flags: int, tos: int, agreed: bool) -> None:
    stack = make_stack(plain_config())  # tcp_ecn=2, Linux's default: accept, never ask
    peer = EcnPeer(stack)
    lst = stack.listen(LPORT, 0)
    r = peer.send_tos(0, seg(IRS, 0, flags, opts=MSS_OPT), tos)
    assert r == [(out(ISS, P, SYN | ACK | (ECE if agreed else 0), opts=MSS_OPT), 0)]
    peer.send(1000, seg(P, C, ACK))
    child = lst.accept()
    assert child is not None and child.ecn_ok is agreed


def test_retransmitted_syn_falls_back_to_no_ecn(estack: Stack, epeer: EcnPeer) -> None:
    estack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    assert epeer.recv()[0].flags == SYN | ECE | CWR
    # RFC 3168 §6.1.1.1: a middlebox may drop ECN-setup SYNs; Linux's retry goes without.
    assert [s.flags for s in epeer.poll(1_000_000)] == [SYN]


def test_syn_cookie_keeps_ecn_in_the_timestamp() -> None:
    cfg = Config(tcp_syncookies=2)  # timestamps on: the cookie's TSval carries WS/SACK/ECN
    stack = make_stack(cfg)
    peer = EcnPeer(stack)
    lst = stack.listen(LPORT, 0)
    syn_opts = (Opt(2, MSS), Opt(8, (777, 0)))
    ((synack, _),) = peer.send_tos(0, seg(IRS, 0, SYN | ECE | CWR, opts=syn_opts), 0)
    assert synack.flags == SYN | ACK | ECE and stack.mib.SyncookiesSent == 1
    tsval = synack.ts
    assert tsval is not None
    peer.send(1000, seg(P, synack.seq + 1, ACK, opts=(Opt(8, (778, tsval[0])),)))
    child = lst.accept()
    assert child is not None and child.ecn_ok and stack.mib.SyncookiesRecv == 1


# ---------------------------------------------------------------- the sender (§6.1.2, §6.1.5)
def test_ect0_on_new_data_only_not_on_acks_or_retransmissions(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    conn.tos = 0xB8  # the application's DSCP stays; the stack owns the ECN bits
    # Data from the peer: our pure ACK is not ECT (§6.1.4).
    r = epeer.send_tos(2000, seg(P, C, ACK | PSH, payload=b"q"), ECT0)
    assert r == [(out(C, P + 1, ACK), 0xB8)]
    conn.send(b"a" * 100, 3000)
    assert epeer.recv_tos() == [(out(C, P + 1, ACK | PSH, payload=b"a" * 100), 0xB8 | ECT0)]
    # The next pure ACK (delayed or not: interactive mode) clears the bits again.
    r = epeer.send_tos(4000, seg(P + 1, C + 100, ACK | PSH, payload=b"r"), ECT0)
    assert [t for _, t in r] in ([], [0xB8])
    estack.poll(4000 + 200_000)
    assert [t for _, t in r + epeer.recv_tos()] == [0xB8]


def test_retransmission_tos_is_not_ect(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    conn.send(b"a" * 100, 2000)
    assert [t for _, t in epeer.recv_tos()] == [ECT0]
    estack.poll(2000 + 1_000_000)  # RTO
    ((rtx, tos),) = epeer.recv_tos()
    assert rtx.seq == C and len(rtx.payload) == 100 and tos == 0
    assert conn.total_retrans == 1


def test_ece_ack_reduces_cwnd_once_per_window_and_the_next_data_carries_cwr(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    n = 10 * MSS
    conn.send(b"z" * n, 2000)
    segs = epeer.recv_tos()
    assert len(segs) == 10 and all(t == ECT0 for _, t in segs)
    cwnd0 = conn.cc.cwnd
    # The first ACK echoes CE: one reduction (to half the flight, RFC 3168 §6.1.2 / RFC 5681 eq. 4).
    epeer.send_tos(3000, seg(P, C + 2 * MSS, ACK | ECE), 0)
    flight = 10 * MSS
    assert conn.cc.ssthresh == flight // 2 and conn.cc.cwnd == flight // 2 < cwnd0
    assert conn.cwr_high == C + n and estack.mib.TCPDeliveredCE == 2 and conn.delivered_ce == 2
    # More ECE ACKs for the same window: no further reduction, no growth.
    for i in range(3, 9):
        epeer.send_tos(3000 + i, seg(P, C + i * MSS, ACK | ECE), 0)
        assert conn.cc.cwnd == flight // 2
    # New data after the reduction: the first segment carries CWR, the next does not.
    conn.send(b"y" * 2 * MSS, 4000)
    out_segs = epeer.recv_tos()
    conn.send(b"w" * MSS, 4001)
    out_segs += epeer.recv_tos()
    flags = [s.flags & (CWR | ECE) for s, _ in out_segs]
    assert flags[0] == CWR and all(f == 0 for f in flags[1:]) and all(t == ECT0 for _, t in out_segs)
    # The receiver saw CWR and stopped echoing: ACKs past cwr_high end the episode.
    epeer.send_tos(5000, seg(P, C + n + MSS, ACK), 0)
    assert conn.cwr_high is None
    # A new ECE in the next window reduces again.
    before = conn.cc.cwnd
    epeer.send_tos(6000, seg(P, C + n + 2 * MSS, ACK | ECE), 0)
    assert conn.cc.cwnd < before and conn.cwr_high is not None


def test_ece_on_an_unacceptable_ack_is_ignored(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    conn.send(b"z" * 1000, 2000)
    epeer.recv()
    cwnd = conn.cc.cwnd
    epeer.send_tos(3000, seg(P, C + 5000, ACK | ECE), 0)  # acknowledges data never sent
    assert conn.cc.cwnd == cwnd and conn.cwr_high is None


def test_ecn_signals_on_a_segment_outside_the_window_are_ignored(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    conn.send(b"z" * (4 * MSS), 2000)
    epeer.recv()
    cwnd = conn.cc.cwnd
    far = P + 1_000_000  # far outside the receive window
    # An ECE "ACK" whose sequence number fails the acceptability test: only the
    # duplicate ACK §3.10.7.4 asks for, no congestion response.
    r = epeer.send_tos(3000, seg(far, C + MSS, ACK | ECE), 0)
    assert r == [(out(C + 4 * MSS, P, ACK), 0)]
    assert conn.cc.cwnd == cwnd and conn.cwr_high is None and estack.mib.TCPDeliveredCE == 0
    # CE-marked data outside the window: dropped, and not echoed.
    r = epeer.send_tos(3001, seg(far, C, ACK, payload=b"a" * 10), CE)
    assert r == [(out(C + 4 * MSS, P, ACK), 0)]
    assert not conn.ecn_demand_cwr


def test_cwr_follows_a_fast_retransmit_reduction_too(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    conn.send(b"z" * (10 * MSS), 2000)
    assert len(epeer.recv()) == 10
    for i in range(3):
        r = epeer.send_tos(3000 + i, seg(P, C, ACK), 0)
    assert conn.in_recovery and [(s.seq, len(s.payload)) for s, _ in r] == [(C, MSS)]
    # New data after the reduction (one more duplicate ACK lets it out): CWR on it.
    conn.send(b"n" * MSS, 3100)
    sent = epeer.recv_tos()
    for i in range(4):
        sent += epeer.send_tos(3101 + i, seg(P, C, ACK), 0)
    ((new, tos),) = sent
    assert new.seq == C + 10 * MSS and tos == ECT0
    assert new.flags & (CWR | ECE) == CWR


def test_a_loss_in_a_window_ecn_already_reduced_does_not_reduce_again() -> None:
    stack = make_stack(plain_config(tcp_ecn=1, tcp_congestion_control="cubic"))
    peer = EcnPeer(stack)
    conn = ecn_client(stack, peer)
    conn.send(b"z" * (10 * MSS), 2000)
    assert len(peer.recv()) == 10
    # The first segment is delivered CE-marked: the ACK echoes it, one reduction.
    peer.send_tos(3000, seg(P, C + MSS, ACK | ECE), 0)
    ssthresh = conn.cc.ssthresh
    assert ssthresh == int(10 * MSS * 0.7) and conn.cwr_high == C + 10 * MSS
    # The second segment of the same window was lost: three duplicate ACKs.
    for i in range(3):
        peer.send_tos(3001 + i, seg(P, C + MSS, ACK | ECE), 0)
    assert conn.in_recovery
    assert conn.cc.ssthresh == ssthresh


def test_without_ecn_ece_means_nothing(stack: Stack, peer: Peer) -> None:
    conn = established_client(stack, peer)
    conn.send(b"z" * 1000, 2000)
    peer.recv()
    cwnd = conn.cc.cwnd
    peer.send(3000, seg(P, C + 1000, ACK | ECE))
    assert not conn.ecn_ok and conn.cc.cwnd >= cwnd and conn.cwr_high is None


# ---------------------------------------------------------------- the receiver (§6.1.3)
def test_ce_on_data_is_echoed_with_ece_until_cwr(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    conn.quickack = 0
    # CE-marked data: ACKed at once (Linux's quick ACK on CE) with ECE.
    r = epeer.send_tos(2000, seg(P, C, ACK, payload=b"a" * 100), CE)
    assert r == [(out(C, P + 100, ACK | ECE), 0)]
    assert estack.mib.InCEPkts == 1 and conn.ecn_seen
    # ECE stays on every ACK, for unmarked data too, and on our data.
    r = epeer.send_tos(2001, seg(P + 100, C, ACK, payload=b"b" * 100), ECT0)
    assert [s.flags for s, _ in r] == [ACK | ECE]
    conn.send(b"reply", 2002)
    ((d, t),) = epeer.recv_tos()
    assert d.flags == ACK | PSH | ECE and t == ECT0
    # Data with CWR: the echo stops and the ACK goes at once.
    r = epeer.send_tos(2003, seg(P + 200, C + 5, ACK | CWR, payload=b"c" * 10), ECT0)
    assert r == [(out(C + 5, P + 210, ACK), 0)]
    r = epeer.send_tos(2004, seg(P + 210, C + 5, ACK, payload=b"d" * 10), ECT0)
    assert all(not s.flags & ECE for s, _ in r)
    assert estack.mib.InECT0Pkts == 3
    assert "ecnseen" in conn.info(2005)["options"]


def test_cwr_on_a_pure_ack_does_not_stop_the_echo(estack: Stack, epeer: EcnPeer) -> None:
    conn = ecn_client(estack, epeer)
    epeer.send_tos(2000, seg(P, C, ACK, payload=b"a" * 100), CE)
    epeer.send_tos(2001, seg(P + 100, C, ACK | CWR), 0)  # Linux: tcp_ecn_accept_cwr is for data only
    assert conn.ecn_demand_cwr


def test_ce_is_a_pseudo_flag_only_with_ecn_parsing() -> None:
    pkt = build_ip_tcp(REMOTE, LOCAL, seg(P, C, ACK, payload=b"x"), tos=0xB8 | CE)
    assert parse_ip_tcp(pkt)[2].flags == ACK
    assert parse_ip_tcp(pkt, ecn=True)[2].flags == ACK | IP_CE
    pkt6 = build_ip_tcp("2001:2::1", "2001:2::2", seg(P, C, ACK, payload=b"x"), tos=ECT0)
    assert parse_ip_tcp(pkt6, ecn=True)[2].flags >> 10 == ECT0
