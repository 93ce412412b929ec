"""RACK loss detection (RFC 8985 §6), as Linux with tcp_recovery=1.

As in test_loss_probe.py the peer completes the handshake 10 ms after our
SYN-ACK: SRTT = min_rtt = 10 ms, so RACK's reordering window outside
recovery is min_rtt/4 = 2.5 ms, and Linux adds 2 ms (TCP_TIMEOUT_MIN) to the
reordering timer.  The RTO is 200 ms (the minimum).
"""

from __future__ import annotations

from tcpstack.tcp import FixedIsn, Stack
from tcpstack.tcp.sack import NO_SACKS

from .conftest import (
    ACK,
    IRS,
    ISS,
    LOCAL,
    MSS,
    PSH,
    SACK_PERM,
    Opt,
    Peer,
    established_server,
    make_stack,
    out,
    plain_config,
    seg,
)

T0 = 10_000
C = ISS + 1  # our first data byte
SACK_SYN = (Opt(2, MSS), SACK_PERM)
SACK_SYNACK = (Opt(2, MSS), Opt(1, None), Opt(1, None), SACK_PERM)


def sack_server(**cfg: object) -> tuple[Stack, Peer, object]:
    cfg = {"tcp_sack": 1, "tcp_recovery": 1, **cfg}
    stack = make_stack(plain_config(**cfg))
    peer = Peer(stack)
    _, conn = established_server(stack, peer, opts=SACK_SYN, synack_opts=SACK_SYNACK, rtt=T0)
    assert conn.rtt.srtt == conn.rtt.min_rtt == 10_000
    return stack, peer, conn


def sack(*blocks: tuple[int, int]) -> tuple[Opt, ...]:
    """A SACK option with blocks given as byte offsets of our data."""
    return (Opt(1, None), Opt(1, None), Opt(5, tuple(((C + s) & 0xFFFFFFFF, (C + e) & 0xFFFFFFFF) for s, e in blocks)))


def data(off: int, n: int = MSS, flags: int = ACK) -> object:
    return out(C + off, IRS + 1, flags, payload=b"x" * n)


def lost_first_of_twenty(**cfg: object) -> tuple[Stack, Peer, object]:
    """20 MSS queued, the initial window (10) sent at T0; the first segment is
    lost, the other nine SACKed at T0 + 10 ms: recovery retransmits it with
    new data behind it (cwnd 7 = 0.7 x 10)."""
    stack, peer, conn = sack_server(**cfg)
    conn.send(b"x" * (20 * MSS), T0)
    assert [(s.seq - C, len(s.payload)) for s in peer.recv()] == [(i * MSS, MSS) for i in range(10)]
    r = peer.send(T0 + 10_000, seg(IRS + 1, C, ACK, opts=sack((MSS, 10 * MSS))))
    assert r == [data(0)] + [data(i * MSS) for i in range(10, 15)] + [data(15 * MSS, flags=PSH | ACK)]
    assert conn.in_recovery and conn.cc.cwnd == 7 * MSS
    return stack, peer, conn


def test_a_lost_retransmission_is_sent_again_one_rtt_later_not_at_the_rto():
    stack, peer, conn = lost_first_of_twenty()
    # The retransmission is lost too; the new data sent with it is SACKed a
    # round trip later.  It was sent at the same time but above it, so the
    # retransmission is lost (reo_wnd is 0 in recovery): resent at once, as Linux
    # (TCPLostRetransmit), and the window lets more new data follow.
    r = peer.send(T0 + 20_000, seg(IRS + 1, C, ACK, opts=sack((MSS, 16 * MSS))))
    assert r == [data(0)] + [data(i * MSS) for i in range(16, 19)] + [data(19 * MSS, flags=PSH | ACK)]
    assert stack.mib.TCPLostRetransmit == 1 and stack.mib.TCPTimeouts == 0
    assert stack.mib.RetransSegs == 2
    # The second retransmission and the new data arrive: all acknowledged, recovery over.
    assert peer.send(T0 + 30_000, seg(IRS + 1, C + 20 * MSS, ACK)) == []
    assert not conn.in_recovery and stack.mib.TCPTimeouts == 0 and conn.rtx_at is None


def test_without_rack_a_lost_retransmission_waits_for_the_rto():
    stack, peer, conn = lost_first_of_twenty(tcp_recovery=0)
    r = peer.send(T0 + 20_000, seg(IRS + 1, C, ACK, opts=sack((MSS, 16 * MSS))))
    assert r == [data(i * MSS) for i in range(16, 19)] + [data(19 * MSS, flags=PSH | ACK)]
    assert stack.mib.RetransSegs == 1 and stack.mib.TCPLostRetransmit == 0
    # RFC 6675 does not mark a hole lost twice (HighRxt has passed it): nothing
    # resends offset 0 until the RTO.
    resent = []
    t = T0 + 20_000
    while not resent and t < T0 + 1_000_000:
        t = stack.next_deadline()
        resent = [s for s in peer.poll(t) if s.seq == C]
    assert stack.mib.TCPTimeouts == 1 and t >= T0 + 10_000 + 200_000


def two_segments_first_lost(**cfg: object) -> tuple[Stack, Peer, object]:
    """Two segments at T0; only the second arrives, SACKed at T0 + 10 ms."""
    stack, peer, conn = sack_server(**cfg)
    conn.send(b"x" * (2 * MSS), T0)
    assert len(peer.recv()) == 2
    assert peer.send(T0 + 10_000, seg(IRS + 1, C, ACK, opts=sack((MSS, 2 * MSS)))) == []
    return stack, peer, conn


def test_a_loss_with_one_segment_sacked_above_it_is_found_by_the_reordering_timer():
    # RACK.rtt = 10 ms, reo_wnd = min_rtt/4 = 2.5 ms: the first segment is lost
    # once it is 12.5 ms old; the timer fires at T0 + 10 ms + 2.5 ms + 2 ms.
    stack, peer, conn = two_segments_first_lost()
    assert stack.next_deadline() == T0 + 14_500
    assert peer.poll(T0 + 14_499) == []
    assert peer.poll(T0 + 14_500) == [data(0)]
    assert conn.in_recovery and stack.mib.TCPSackRecovery == 1
    assert stack.mib.TCPTimeouts == 0 and stack.mib.TCPLossProbes == 0
    # The retransmission arrives; recovery ends.
    assert peer.send(T0 + 24_500, seg(IRS + 1, C + 2 * MSS, ACK)) == []
    assert not conn.in_recovery and conn.rtx_at is None
    assert conn.sb is NO_SACKS  # nothing in flight: the log is given back


def test_reordering_within_the_window_is_not_a_loss():
    stack, peer, conn = two_segments_first_lost()
    # The first segment was only late: it arrives 1 ms after the SACK, within
    # reo_wnd.  No retransmission, no recovery; the reordering is noted.
    assert peer.send(T0 + 11_000, seg(IRS + 1, C + 2 * MSS, ACK)) == []
    assert conn.rtx_at is None and peer.poll(T0 + 14_500) == []
    assert stack.mib.RetransSegs == 0 and stack.mib.TCPSackRecovery == 0
    assert stack.mib.TCPSACKReorder == 1
    assert conn.sb.is_rack and conn.sb.reord  # kept: it outlives the flight


def test_without_rack_one_sacked_segment_waits_for_the_probe_and_the_rto():
    stack, peer, conn = two_segments_first_lost(tcp_recovery=0)
    # RFC 6675 needs DupThresh segments SACKed: the tail loss probe (2*SRTT +
    # 2 ms after the flight) resends the last segment, then the RTO the first.
    assert peer.poll(T0 + 21_999) == []
    assert peer.poll(T0 + 22_000) == [data(MSS, flags=PSH | ACK)]
    assert stack.mib.TCPLossProbes == 1
    assert peer.poll(T0 + 22_000 + 199_999) == []
    assert peer.poll(T0 + 22_000 + 200_000)[0] == data(0)
    assert stack.mib.TCPTimeouts == 1


def test_after_reordering_was_seen_reo_wnd_holds_in_recovery_and_dsack_widens_it():
    stack, peer, conn = two_segments_first_lost()
    peer.send(T0 + 11_000, seg(IRS + 1, C + 2 * MSS, ACK))
    rk = conn.sb
    conn.in_recovery = True
    assert conn._rack_reo_wnd(rk) == 2_500  # reordering seen: no longer 0 in recovery
    conn.in_recovery = False
    # A D-SACK (RFC 2883) says a retransmission was needless: reo_wnd_mult + 1
    # for 16 recoveries (RFC 8985 §6.2 step 4).
    conn.send(b"x" * MSS, T0 + 20_000)
    peer.recv()
    dsack = (Opt(1, None), Opt(1, None), Opt(5, ((C & 0xFFFFFFFF, (C + MSS) & 0xFFFFFFFF),)))
    peer.send(T0 + 30_000, seg(IRS + 1, C + 3 * MSS, ACK, opts=dsack))
    assert conn.sb is rk and rk.mult == 2 and rk.persist == 16
    assert conn._rack_reo_wnd(rk) == 5_000


def test_a_gso_super_segment_is_one_transmission_and_only_its_lost_part_is_resent():
    stack = Stack([LOCAL], plain_config(tcp_sack=1, tcp_recovery=1), isn=FixedIsn(ISS), seed=1,
                  ts_offset=lambda key: 0, gso_max=65536)
    peer = Peer(stack)
    _, conn = established_server(stack, peer, opts=SACK_SYN, synack_opts=SACK_SYNACK, rtt=T0)
    conn.send(b"x" * (10 * MSS), T0)
    assert len(stack.transmit_gso()) == 1  # ten MSS in one super-segment
    assert list(conn.sb.rec_end) == [10 * MSS]  # one unit in RACK's log
    # The device cut it; the first packet was lost and the other nine are SACKed.
    r = peer.send(T0 + 10_000, seg(IRS + 1, C, ACK, opts=sack((MSS, 10 * MSS))))
    assert r == [data(0)]
    assert list(conn.sb.rec_end) == [MSS, 10 * MSS]  # split where the retransmission ended
