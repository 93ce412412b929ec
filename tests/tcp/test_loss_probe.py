"""Tail loss probe (RFC 8985 §7), as Linux sends it with SACK (tcp_early_retrans=3).

The peer completes the handshake 10 ms after our SYN-ACK, so SRTT = 10 ms and
the probe timeout for a flight of several segments is 2*SRTT + 2 ms = 22 ms.
"""

from __future__ import annotations

from tcpstack.tcp import Stack

from .conftest import (
    ACK,
    IRS,
    ISS,
    MSS,
    MSS_OPT,
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

T0 = 10_000  # the handshake's last ACK: SRTT 10 ms
SACK_SYN = (Opt(2, MSS), SACK_PERM)
SACK_SYNACK = (Opt(2, MSS), Opt(1, None), Opt(1, None), SACK_PERM)


def sack_server(**cfg: object) -> tuple[Stack, Peer, object]:
    """A passive open with SACK (and ``cfg``), ESTABLISHED at T0 with SRTT 10 ms."""
    cfg = {"tcp_sack": 1, **cfg}
    stack = make_stack(plain_config(**cfg))
    peer = Peer(stack)
    synack_opts = SACK_SYNACK if cfg["tcp_sack"] else MSS_OPT
    _, conn = established_server(stack, peer, opts=SACK_SYN, synack_opts=synack_opts, rtt=T0)
    assert conn.rtt.srtt == 10_000
    return stack, peer, conn


def probed_flight() -> tuple[Stack, Peer, object, int]:
    """3000 bytes sent at T0 (three segments) and the probe of the last one at T0 + 22 ms;
    and cwnd then."""
    stack, peer, conn = sack_server()
    conn.send(b"x" * 3000, T0)
    peer.recv()
    assert len(peer.poll(T0 + 22_000)) == 1
    return stack, peer, conn, conn.cc.cwnd


def test_probe_retransmits_the_last_segment_two_rtts_after_the_flight():
    stack, peer, conn = sack_server()
    conn.send(b"x" * 3000, T0)
    sent = peer.recv()
    assert [(s.seq - ISS - 1, len(s.payload)) for s in sent] == [(0, 1460), (1460, 1460), (2920, 80)]
    assert peer.poll(T0 + 21_999) == []
    probe = peer.poll(T0 + 22_000)
    assert probe == [out(ISS + 1 + 2920, IRS + 1, PSH | ACK, payload=b"x" * 80)]
    assert stack.mib.TCPLossProbes == 1 and stack.mib.TCPTimeouts == 0
    # Only one probe per episode: the next expiry is the RTO (200 ms from the probe).
    assert peer.poll(T0 + 22_000 + 199_999) == []
    (rto,) = peer.poll(T0 + 22_000 + 200_000)
    assert rto.seq == ISS + 1 and len(rto.payload) == 1460 and stack.mib.TCPTimeouts == 1


def test_a_probe_that_repaired_a_loss_reduces_cwnd_once():
    stack, peer, conn, cwnd = probed_flight()
    # The last segment had been lost: the probe completes the flight, and no
    # D-SACK comes; the next ACK, beyond the probe, settles it as a loss.
    assert peer.send(T0 + 32_000, seg(IRS + 1, ISS + 3001, ACK)) == []
    assert stack.mib.TCPLossProbeRecovery == 0 and conn.tlp is not None
    conn.send(b"y" * 100, T0 + 33_000)
    assert len(peer.recv()) == 1
    assert peer.send(T0 + 43_000, seg(IRS + 1, ISS + 3101, ACK)) == []
    assert stack.mib.TCPLossProbeRecovery == 1
    assert conn.cc.cwnd == conn.cc.ssthresh == 2920 < cwnd  # max(0.7 * 3000, 2 MSS)
    assert conn.tlp is None


def test_a_probe_reported_as_a_duplicate_leaves_cwnd_alone():
    stack, peer, conn, cwnd = probed_flight()
    # Nothing was lost (the ACK was just late): the probe arrives as a duplicate,
    # which the receiver reports with a D-SACK (RFC 2883).
    dsack = (Opt(5, (((ISS + 2921) & 0xFFFFFFFF, (ISS + 3001) & 0xFFFFFFFF),)),)
    assert peer.send(T0 + 32_000, seg(IRS + 1, ISS + 3001, ACK, opts=dsack)) == []
    assert stack.mib.TCPLossProbeRecovery == 0 and stack.mib.TCPDSACKRecv == 1
    assert conn.cc.cwnd >= cwnd and conn.tlp is None


def test_probe_sends_new_data_past_cwnd_when_the_window_allows():
    stack, peer, conn = sack_server()
    conn.send(b"x" * (20 * MSS), T0)
    sent = peer.recv()
    assert len(sent) == 10  # the initial window (RFC 6928)
    (probe,) = peer.poll(T0 + 22_000)
    assert probe.seq == ISS + 1 + 10 * MSS and len(probe.payload) == MSS  # new data, not a resend
    assert stack.mib.TCPLossProbes == 1 and stack.mib.RetransSegs == 0
    assert conn.cc.cwnd == 10 * MSS  # the probe borrowed no window


def test_a_single_segment_waits_for_the_rto_when_that_comes_first():
    # One segment in flight: PTO = 2*SRTT + 200 ms (the peer may delay its ACK)
    # = 220 ms, later than the 200 ms RTO, so the RTO fires and no probe is sent.
    stack, peer, conn = sack_server()
    conn.send(b"x" * 100, T0)
    assert len(peer.recv()) == 1
    assert peer.poll(T0 + 199_999) == []
    (rto,) = peer.poll(T0 + 200_000)
    assert rto.seq == ISS + 1 and stack.mib.TCPLossProbes == 0 and stack.mib.TCPTimeouts == 1


def test_no_probe_without_sack_or_when_turned_off():
    for cfg in ({"tcp_sack": 0}, {"tcp_early_retrans": 0}):
        stack, peer, conn = sack_server(**cfg)
        conn.send(b"x" * 3000, T0)
        peer.recv()
        assert peer.poll(T0 + 199_999) == [], cfg
        assert stack.mib.TCPLossProbes == 0


def test_an_ack_up_to_the_probe_end_waits_for_its_d_sack_before_calling_it_a_loss():
    stack, peer, conn, cwnd = probed_flight()
    # The ACK of the original last segment (it was only late) covers the flight
    # exactly: TLP.end_seq.  Not yet a loss: the probe's D-SACK may follow.
    assert peer.send(T0 + 32_000, seg(IRS + 1, ISS + 3001, ACK)) == []
    assert stack.mib.TCPLossProbeRecovery == 0 and conn.cc.cwnd >= cwnd
    # It does: the probe was a duplicate, nothing was lost.
    dsack = (Opt(5, (((ISS + 2921) & 0xFFFFFFFF, (ISS + 3001) & 0xFFFFFFFF),)),)
    assert peer.send(T0 + 32_001, seg(IRS + 1, ISS + 3001, ACK, opts=dsack)) == []
    assert stack.mib.TCPLossProbeRecovery == 0 and conn.cc.cwnd >= cwnd and conn.tlp is None


def test_no_loss_probe_once_sack_recovery_has_begun():
    # Ten segments out; the peer SACKs the 2nd to the 5th (the 1st is lost): SACK
    # recovery retransmits the first at once.  The probe timeout armed for the
    # flight (T0 + 22 ms) must not fire inside recovery (RFC 8985 §7.2: no probe
    # during recovery; Linux re-arms the RTO when it retransmits the head).
    stack, peer, conn = sack_server()
    conn.send(b"x" * (10 * MSS), T0)
    assert len(peer.recv()) == 10
    for i in range(2, 5):
        blk = (Opt(5, (((ISS + 1 + MSS) & 0xFFFFFFFF, (ISS + 1 + i * MSS) & 0xFFFFFFFF),)),)
        r = peer.send(T0 + 5_000 + i, seg(IRS + 1, ISS + 1, ACK, opts=blk))
    assert conn.in_recovery
    assert [(s.seq - ISS - 1, len(s.payload)) for s in r] == [(0, MSS)]
    assert peer.poll(T0 + 22_000) == []
    assert stack.mib.TCPLossProbes == 0 and conn.tlp is None
