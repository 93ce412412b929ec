"""Data transfer, flow control, retransmission and every way of closing."""

from __future__ import annotations

import pytest

from tcpstack.tcp import FixedIsn, Stack

from .conftest import (
    ACK,
    FIN,
    IRS,
    ISS,
    LPORT,
    MSS_OPT,
    PSH,
    REMOTE,
    RPORT,
    RST,
    SYN,
    URG,
    C,
    Opt,
    P,
    Peer,
    State,
    established_client,
    established_server,
    make_stack,
    out,
    plain_config,
    seg,
)


# ---------------------------------------------------------------- data
def test_send_small_write_goes_out_with_psh(stack, peer):
    conn = established_client(stack, peer)
    assert conn.send(b"hello", 2000) == 5
    assert peer.recv() == [out(C, P, PSH | ACK, payload=b"hello")]


def test_receive_in_order_data_is_delivered_and_acked(stack, peer):
    conn = established_client(stack, peer)
    # Quick-ACK mode at connection start: each segment is ACKed at once (Linux).
    assert peer.send(2000, seg(P, C, PSH | ACK, payload=b"abc")) == [out(C, P + 3, ACK)]
    assert conn.recv(100, 2001) == b"abc"
    assert conn.recv(100, 2002) is None


def test_large_write_is_cut_into_mss_segments_within_cwnd(stack, peer):
    conn = established_client(stack, peer)
    data = bytes(range(256)) * 100  # 25,600 bytes
    conn.send(data, 2000)
    segs = peer.recv()
    # Initial window 10 segments (RFC 6928); MSS 1460.
    assert [len(s.payload) for s in segs] == [1460] * 10
    assert segs[0].seq == C and segs[1].seq == C + 1460
    assert b"".join(bytes(s.payload) for s in segs) == data[:14600]


def test_out_of_order_segments_are_reassembled(stack, peer):
    conn = established_client(stack, peer)
    # Hole at P: the later segment is queued and a duplicate ACK goes out at once.
    assert peer.send(2000, seg(P + 3, C, ACK, payload=b"def")) == [out(C, P, ACK)]
    assert conn.recv(10, 2001) is None
    assert peer.send(2002, seg(P, C, ACK, payload=b"abc")) == [out(C, P + 6, ACK)]
    assert conn.recv(10, 2003) == b"abcdef"


def test_overlapping_retransmission_is_trimmed(stack, peer):
    conn = established_client(stack, peer)
    peer.send(2000, seg(P, C, ACK, payload=b"abc"))
    # Overlaps the first 3 bytes: only "de" is new (§3.10.7.4: only new parts processed).
    assert peer.send(2001, seg(P, C, ACK, payload=b"abcde")) == [out(C, P + 5, ACK)]
    assert conn.recv(10, 2002) == b"abcde"


def test_ack_frees_send_buffer_and_stops_timer(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"x" * 100, 2000)
    peer.recv()
    assert conn.rtx_at is not None
    peer.send(3000, seg(P, C + 100, ACK))
    assert len(conn.sendbuf) == 0 and conn.rtx_at is None
    assert conn.rtt.samples == 2  # the SYN and the data


def test_rto_retransmits_and_backs_off(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    first = peer.recv()
    rto = conn.rtt.rto
    assert peer.poll(2000 + rto - 1) == []
    again = peer.poll(2000 + rto)
    assert again == first
    assert conn.rtt.rto == min(2 * rto, conn.rtt.max_rto)
    assert stack.mib.RetransSegs == 1 and stack.mib.TCPTimeouts == 1


def test_retries2_exhausted_gives_timeout_error(stack, peer):
    stack.config.tcp_retries2 = 3
    conn = established_client(stack, peer)
    conn.send(b"data", 2000)
    peer.recv()
    t = 2000
    for _ in range(10):
        d = stack.next_deadline()
        if d is None:
            break
        t = d
        peer.poll(t)
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, TimeoutError)
    with pytest.raises(TimeoutError):
        conn.send(b"more", t)


def test_fast_retransmit_on_three_duplicate_acks(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"z" * (1460 * 6), 2000)
    segs = peer.recv()
    assert len(segs) == 6
    # The first segment is lost; the peer ACKs P/C three times for later segments.
    for i in range(3):
        r = peer.send(3000 + i, seg(P, C, ACK))
    assert r[0] == segs[0]
    assert stack.mib.TCPFastRetrans == 1
    assert conn.in_recovery


def test_a_loss_right_at_the_recovery_point_is_a_new_fast_retransmit(stack, peer):
    # RFC 6582 §3.2 step 2: "covers more than recover", recover being the highest
    # sequence number sent when recovery began.  Once everything up to it is
    # acknowledged, losing the very next segment is a new loss: three duplicate
    # ACKs retransmit it at once rather than waiting for the RTO.
    conn = established_client(stack, peer)
    conn.send(b"z" * (1460 * 6), 2000)
    assert len(peer.recv()) == 6
    for i in range(3):
        peer.send(3000 + i, seg(P, C, ACK))
    assert conn.in_recovery and stack.mib.TCPFastRetrans == 1
    end = C + 6 * 1460
    assert conn.recover == end
    peer.send(4000, seg(P, end, ACK))  # the full ACK ends that recovery
    assert not conn.in_recovery
    conn.send(b"y" * (1460 * 6), 5000)
    new = peer.recv()
    assert new and new[0].seq == end
    for i in range(3):
        r = peer.send(6000 + i, seg(P, end, ACK))  # the segment at `recover` was lost
    assert r and r[0] == new[0]
    assert stack.mib.TCPFastRetrans == 2 and stack.mib.TCPTimeouts == 0


def test_an_application_limited_sender_does_not_inflate_cwnd(stack, peer):
    conn = established_client(stack, peer)
    assert conn.cc.cwnd == 10 * 1460
    now = 2000
    for _ in range(50):  # two segments per round trip, each round acknowledged
        conn.send(b"a" * 2920, now)
        assert len(peer.recv()) == 2
        now += 10_000
        peer.send(now, seg(P, conn.snd_nxt, ACK))
    assert conn.cc.cwnd == 10 * 1460


def test_zero_window_persist_probe_and_reopen(stack, peer):
    conn = established_client(stack, peer)
    peer.send(2000, seg(P, C, ACK, win=0))  # the peer closes its window
    assert conn.snd_wnd == 0
    conn.send(b"blocked", 3000)
    assert peer.recv() == []
    t = stack.next_deadline()
    assert t is not None
    # Linux-style probe: zero length, SEQ = SND.UNA - 1.
    assert peer.poll(t) == [out(C - 1, P, ACK)]
    t2 = stack.next_deadline()
    assert t2 - t > t - 3000  # backed off
    # The window opens (the probe's answer): data flows.
    assert peer.send(t + 10, seg(P, C, ACK, win=1000)) == [out(C, P, PSH | ACK, payload=b"blocked")]


def test_receiver_window_shrinks_with_unread_data_and_reopens(peer):
    st = peer.stack
    st.config.tcp_rmem = (4096, 4096, 4096)
    conn = established_client(st, peer, win=4096)
    r = peer.send(2000, seg(P, C, ACK, payload=b"a" * 3000))
    assert r == [out(C, P + 3000, ACK, win=1096)]
    r = peer.send(2001, seg(P + 3000, C, ACK, payload=b"b" * 1096))
    assert r == [out(C, P + 4096, ACK, win=0)]
    # Beyond the window: dropped and ACKed.
    assert peer.send(2002, seg(P + 4096, C, ACK, payload=b"c")) == [out(C, P + 4096, ACK, win=0)]
    # The application reads: a window update announces the space.
    assert conn.recv(4096, 2003) == b"a" * 3000 + b"b" * 1096
    assert peer.recv() == [out(C, P + 4096, ACK, win=4096)]


def test_nagle_holds_small_segment_until_ack(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"a", 2000)
    assert len(peer.recv()) == 1
    conn.send(b"b", 2001)
    conn.send(b"c", 2002)
    assert peer.recv() == []  # Nagle: outstanding data, small segment waits
    assert peer.send(3000, seg(P, C + 1, ACK)) == [out(C + 1, P, PSH | ACK, payload=b"bc")]


def test_nodelay_sends_small_segments_at_once(stack, peer):
    conn = established_client(stack, peer)
    conn.nodelay = True
    conn.send(b"a", 2000)
    conn.send(b"b", 2001)
    assert [bytes(s.payload) for s in peer.recv()] == [b"a", b"b"]


def test_sequence_numbers_wrap():
    """ISS just below 2**32: data crosses the wrap without a hiccup."""
    iss = 0xFFFFFFFF - 10
    st = Stack(["198.18.0.2"], plain_config(), isn=FixedIsn(iss), seed=1, ts_offset=lambda k: 0)
    peer = Peer(st)
    conn = st.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    irs = 0xFFFFFFFF - 3
    peer.send(10, seg(irs, iss + 1, SYN | ACK, opts=MSS_OPT))
    peer.recv()
    conn.send(b"0123456789abcdefghij", 20)
    (d,) = peer.recv()
    assert d.seq == (iss + 1) & 0xFFFFFFFF and d.ack == (irs + 1) & 0xFFFFFFFF
    peer.send(30, seg(irs + 1, iss + 21, ACK, payload=b"wrapping-data"))
    assert conn.recv(100, 31) == b"wrapping-data"
    assert conn.snd_una == (iss + 21) & 0xFFFFFFFF
    assert len(conn.sendbuf) == 0


class _OffloadPeer:
    """The remote end of a stack with checksum offload, for conversations of
    gigabytes: packets carry only the pseudo-header sum both ways."""

    def __init__(self, config, gso_max: int = 0) -> None:
        from .conftest import LOCAL

        self.local = LOCAL
        self.stack = Stack([LOCAL], config, isn=FixedIsn(ISS), seed=1, ts_offset=lambda k: 0,
                           checksum_offload=True, gso_max=gso_max)
        self.conn = self.stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
        self.recv()
        # The peer offers window scale 7: windows of up to 8 MiB.
        self.send(1000, seg(IRS, ISS + 1, SYN | ACK, opts=MSS_OPT + (Opt(1, None), Opt(3, 7))))
        self.recv()
        assert self.conn.state is State.ESTABLISHED

    def send(self, now: int, segment) -> None:
        from tcpstack.wire.ip import build_ip_tcp

        self.stack.receive(build_ip_tcp(REMOTE, self.local, segment, 64, 0, True), now)

    def recv(self) -> list:
        from tcpstack.wire.ip import parse_ip_tcp

        return [parse_ip_tcp(p, False)[2] for p in self.stack.transmit()]


GIB2 = 1 << 31  # half the sequence space


def test_fast_retransmit_after_more_than_2_31_bytes_without_a_loss():
    # recover (RFC 6582) starts at ISS and only moved at a loss: 2^31 bytes later,
    # SND.UNA >= recover read as false in sequence space and three duplicate ACKs
    # no longer started a fast retransmit (the next 2 GiB waited for the RTO).
    cfg = plain_config(tcp_window_scaling=1, tcp_congestion_control="newreno")
    peer = _OffloadPeer(cfg, gso_max=65536)
    conn = peer.conn
    chunk = b"x" * (1 << 20)
    now = 2000
    for _ in range(2 * GIB2 // len(chunk)):  # a MiB written per round trip, all delivered
        if (conn.snd_una - C) % (1 << 32) > GIB2 and conn.snd_una == conn.snd_nxt:
            break
        if len(conn.sendbuf) < len(chunk):
            conn.send(chunk, now)
        peer.recv()
        now += 1000
        peer.send(now, seg(P, conn.snd_nxt, ACK))
    assert (conn.snd_una - C) % (1 << 32) > GIB2 and conn.snd_una == conn.snd_nxt
    una = conn.snd_una
    conn.send(b"y" * (6 * 1460), now)
    assert len(peer.recv()) == 1  # one GSO super-segment of six MSS
    for i in range(3):  # the first of them was lost
        peer.send(now + 1000 + i, seg(P, una, ACK))
    assert conn.in_recovery
    assert [(s.seq, len(s.payload)) for s in peer.recv()] == [(una, 1460)]


def test_urgent_state_survives_more_than_2_31_bytes_read():
    peer = _OffloadPeer(plain_config(tcp_window_scaling=1))
    conn = peer.conn
    payload = b"d" * 65000
    nxt, now = P, 2000
    for _ in range(GIB2 // len(payload) + 2):
        peer.send(now, seg(nxt, C, ACK, payload=payload))
        assert conn.recv(1 << 20, now) == payload
        peer.recv()
        nxt += len(payload)
        now += 10
    assert (nxt - P) > GIB2
    assert conn.urgent_offset is None  # no urgent data was ever sent
    peer.send(now, seg(nxt, C, ACK | PSH | URG, payload=b"xy", urg=2))
    assert conn.urgent_offset == 1  # the mark is the second byte, as with a fresh connection


# ---------------------------------------------------------------- RFC 5961
def test_in_window_rst_not_exact_gets_challenge_ack(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P + 10, 0, RST)) == [out(C, P, ACK)]
    assert conn.state is State.ESTABLISHED
    assert stack.mib.TCPChallengeACK == 1


def test_exact_rst_resets(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P, 0, RST)) == []
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, ConnectionResetError)
    assert stack.mib.EstabResets == 1 and stack.mib.CurrEstab == 0


def test_out_of_window_rst_is_dropped_silently(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P + 10_000_000, 0, RST)) == []
    assert conn.state is State.ESTABLISHED


def test_syn_in_established_gets_challenge_ack(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P + 100, 0, SYN, opts=MSS_OPT)) == [out(C, P, ACK)]
    assert conn.state is State.ESTABLISHED


def test_ack_beyond_snd_nxt_is_dropped_with_ack(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P, C + 5000, ACK, payload=b"zz")) == [out(C, P, ACK)]
    assert conn.recv(10, 2001) is None  # the data was dropped with it


def test_unacceptable_sequence_number_gets_ack(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P - 5000, C, ACK, payload=b"old")) == [out(C, P, ACK)]
    assert conn.recv(10, 2001) is None


# ---------------------------------------------------------------- closing
def test_active_close_four_way_to_time_wait(stack, peer):
    conn = established_client(stack, peer)
    conn.close(2000)
    assert peer.recv() == [out(C, P, FIN | ACK)]
    assert conn.state is State.FIN_WAIT_1
    assert peer.send(3000, seg(P, C + 1, ACK)) == []
    assert conn.state is State.FIN_WAIT_2
    assert peer.send(4000, seg(P, C + 1, FIN | ACK)) == [out(C + 1, P + 1, ACK)]
    assert conn.state is State.TIME_WAIT
    assert stack.conns == {} and len(stack.timewait) == 1
    # 2*MSL = 60 s: a retransmitted FIN is ACKed again and restarts the timer.
    assert peer.send(30_004_000, seg(P, C + 1, FIN | ACK)) == [out(C + 1, P + 1, ACK)]
    peer.poll(64_004_000)
    assert conn.state is State.TIME_WAIT
    peer.poll(90_004_000)
    assert conn.state is State.CLOSED and stack.timewait == {}
    assert list(conn.history) == [State.CLOSED, State.SYN_SENT, State.ESTABLISHED, State.FIN_WAIT_1,
                            State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED]


def test_passive_close_close_wait_last_ack(stack, peer):
    lst, conn = established_server(stack, peer)
    assert peer.send(2000, seg(P, C, FIN | ACK)) == [out(C, P + 1, ACK)]
    assert conn.state is State.CLOSE_WAIT
    assert conn.recv(10, 2001) == b""  # end of stream
    conn.close(3000)
    assert peer.recv() == [out(C, P + 1, FIN | ACK)]
    assert conn.state is State.LAST_ACK
    assert peer.send(4000, seg(P + 1, C + 1, ACK)) == []
    assert conn.state is State.CLOSED
    assert conn.history[-4:] == (State.ESTABLISHED, State.CLOSE_WAIT, State.LAST_ACK, State.CLOSED)


def test_fin_after_data_acked_with_the_close_when_the_application_answers(stack, peer):
    lst, conn = established_server(stack, peer)
    assert peer.send(2000, seg(P, C, PSH | ACK, payload=b"hi")) == [out(C, P + 2, ACK)]  # quick ACK
    assert conn.recv(10, 2001) == b"hi"
    assert peer.send(100_000, seg(P + 2, C, FIN | ACK)) == []  # delayed: Linux's tcp_fin
    conn.close(110_000)  # the application answers within 40 ms: one FIN carries the ACK
    assert peer.recv() == [out(C, P + 3, FIN | ACK)]
    assert conn.state is State.LAST_ACK


def test_interactive_mode_delays_acks_until_the_timer_fires_once(stack, peer):
    lst, conn = established_server(stack, peer)
    assert peer.send(10_000, seg(P, C, PSH | ACK, payload=b"a" * 100)) == [out(C, P + 100, ACK)]
    conn.send(b"r" * 100, 20_000)  # a reply within 40 ms: interactive mode (Linux pingpong)
    assert [s.flags for s in peer.recv()] == [PSH | ACK]
    assert peer.send(30_000, seg(P + 100, C + 100, PSH | ACK, payload=b"b" * 100)) == []
    assert peer.poll(69_999) == []
    assert peer.poll(70_000) == [out(C + 100, P + 200, ACK)]  # the delayed-ACK timer: leave the mode
    assert peer.send(80_000, seg(P + 200, C + 100, PSH | ACK, payload=b"c" * 100)) == [out(C + 100, P + 300, ACK)]


def test_a_send_before_any_data_arrived_is_no_reply_even_early_on_the_clock(stack, peer):
    # Interactive mode needs a reply within ato of received data; before the first
    # data Linux's ato is 0, so no send makes the connection interactive -- however
    # close to time 0 it happens.  The response is then ACKed at once (quick ACK),
    # as it is when the same exchange starts later on the clock.
    conn = established_client(stack, peer)
    conn.send(b"GET", 2000)
    assert peer.recv() == [out(C, P, PSH | ACK, payload=b"GET")]
    assert not conn.pingpong
    assert peer.send(3000, seg(P, C + 3, PSH | ACK, payload=b"resp")) == [out(C + 3, P + 4, ACK)]


def test_close_wait_is_held_until_the_application_closes(stack, peer):
    lst, conn = established_server(stack, peer)
    peer.send(2000, seg(P, C, FIN | ACK))
    for t in (10**7, 10**9, 10**11):
        peer.poll(t)
        assert conn.state is State.CLOSE_WAIT
    assert stack.next_deadline() is None  # no timer: CLOSE-WAIT costs nothing while it waits


def test_fin_with_data_delivers_data_then_eof(stack, peer):
    conn = established_client(stack, peer)
    # As Linux's tcp_fin: the FIN puts the connection in interactive mode, so the
    # ACK waits the delayed-ACK timeout (40 ms) for the application's own FIN.
    assert peer.send(2000, seg(P, C, FIN | PSH | ACK, payload=b"bye")) == []
    assert conn.state is State.CLOSE_WAIT
    assert peer.poll(2000 + 39_999) == []
    assert peer.poll(2000 + 40_000) == [out(C, P + 4, ACK)]
    assert conn.recv(10, 2001) == b"bye"
    assert conn.recv(10, 2002) == b""


def test_out_of_order_fin_waits_for_the_data(stack, peer):
    conn = established_client(stack, peer)
    assert peer.send(2000, seg(P + 3, C, FIN | ACK, payload=b"def")) == [out(C, P, ACK)]
    assert conn.state is State.ESTABLISHED
    assert peer.send(2001, seg(P, C, ACK, payload=b"abc")) == [out(C, P + 7, ACK)]
    assert conn.state is State.CLOSE_WAIT
    assert conn.recv(10, 2002) == b"abcdef"


def test_simultaneous_close_goes_through_closing(stack, peer):
    conn = established_client(stack, peer)
    conn.close(2000)
    assert peer.recv() == [out(C, P, FIN | ACK)]
    # The peer's FIN crosses ours (it does not ACK our FIN yet).
    assert peer.send(2001, seg(P, C, FIN | ACK)) == [out(C + 1, P + 1, ACK)]
    assert conn.state is State.CLOSING
    assert peer.send(2002, seg(P + 1, C + 1, ACK)) == []
    assert conn.state is State.TIME_WAIT


def test_fin_and_ack_of_fin_together_go_to_time_wait_via_fin_wait_2(stack, peer):
    """§3.10.7.4: the ACK step enters FIN-WAIT-2 "and continues processing in that
    state"; the FIN step then enters TIME-WAIT (Linux does the same)."""
    conn = established_client(stack, peer)
    conn.close(2000)
    peer.recv()
    assert peer.send(2001, seg(P, C + 1, FIN | ACK)) == [out(C + 1, P + 1, ACK)]
    assert conn.history[-3:] == (State.FIN_WAIT_1, State.FIN_WAIT_2, State.TIME_WAIT)
    assert State.CLOSING not in conn.history


def test_half_close_keeps_receiving(stack, peer):
    conn = established_client(stack, peer)
    conn.shutdown(2000)  # SHUT_WR: the RFC's CLOSE
    assert peer.recv() == [out(C, P, FIN | ACK)]
    peer.send(2001, seg(P, C + 1, ACK))
    assert conn.state is State.FIN_WAIT_2
    peer.send(2002, seg(P, C + 1, PSH | ACK, payload=b"still talking"))
    assert conn.recv(100, 2003) == b"still talking"
    with pytest.raises(BrokenPipeError):
        conn.send(b"no", 2004)


def test_close_with_unread_data_sends_rst(stack, peer):
    conn = established_client(stack, peer)
    peer.send(2000, seg(P, C, ACK, payload=b"unread"))
    conn.close(2001)
    assert peer.recv() == [out(C, P + 6, RST | ACK, 0)]
    assert conn.state is State.CLOSED
    assert stack.mib.TCPAbortOnClose == 1


def test_abort_sends_rst(stack, peer):
    conn = established_client(stack, peer)
    conn.abort(2000)
    assert peer.recv() == [out(C, P, RST | ACK, 0)]
    assert conn.state is State.CLOSED


def test_orphaned_fin_wait_2_ends_after_fin_timeout(stack, peer):
    conn = established_client(stack, peer)
    conn.close(2000)
    peer.recv()
    peer.send(3000, seg(P, C + 1, ACK))
    assert conn.state is State.FIN_WAIT_2
    peer.poll(3000 + 60_000_000 - 1)
    assert conn.state is State.FIN_WAIT_2
    peer.poll(3000 + 60_000_000)
    assert conn.state is State.CLOSED


def test_data_after_close_is_answered_with_rst(stack, peer):
    conn = established_client(stack, peer)
    conn.close(2000)
    peer.recv()
    r = peer.send(3000, seg(P, C + 1, ACK, payload=b"late"))
    assert r == [out(C + 1, 0, RST, 0)]  # <SEQ=SEG.ACK><CTL=RST>, as Linux answers
    assert stack.mib.TCPAbortOnData == 1
    assert conn.state is State.CLOSED


def test_rst_in_time_wait_kills_it_unless_rfc1337(stack, peer):
    conn = established_client(stack, peer)
    conn.close(2000)
    peer.recv()
    peer.send(2001, seg(P, C + 1, FIN | ACK))
    peer.recv()
    assert conn.state is State.TIME_WAIT
    peer.send(2002, seg(P + 1, 0, RST))
    assert conn.state is State.CLOSED


def test_rfc1337_rst_does_not_assassinate_time_wait():
    st = make_stack(plain_config(tcp_rfc1337=1))
    peer = Peer(st)
    conn = established_client(st, peer)
    conn.close(2000)
    peer.recv()
    peer.send(2001, seg(P, C + 1, FIN | ACK))
    peer.recv()
    peer.send(2002, seg(P + 1, 0, RST))
    assert conn.state is State.TIME_WAIT


def test_new_syn_with_higher_seq_reuses_time_wait(stack, peer):
    lst = stack.listen(LPORT, 0)
    lst2, conn = lst, None
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    peer.recv()
    peer.send(10, seg(IRS + 1, ISS + 1, ACK))
    conn = lst.accept()
    conn.close(20)  # the server closes first: TIME-WAIT on the server
    peer.recv()
    peer.send(30, seg(IRS + 1, ISS + 2, FIN | ACK))
    peer.recv()
    assert conn.state is State.TIME_WAIT
    r = peer.send(40, seg(IRS + 100_000, 0, SYN, opts=MSS_OPT))
    assert len(r) == 1 and r[0].flags == SYN | ACK
    assert r[0].seq == (ISS + 2 + 65535 + 2) & 0xFFFFFFFF
    assert stack.timewait == {}
    del lst2


# ---------------------------------------------------------------- urgent data (RFC 6093)
def test_urgent_send_sets_urg_and_pointer_past_last_urgent_byte(stack, peer):
    conn = established_client(stack, peer)
    conn.send(b"abc", 2000, urgent=True)
    (s,) = peer.recv()
    assert s.flags & 0x20 and s.urg == 3 and bytes(s.payload) == b"abc"
    peer.send(3000, seg(P, C + 3, ACK))
    conn.send(b"plain", 4000)
    (s2,) = peer.recv()
    assert not s2.flags & 0x20 and s2.urg == 0


def test_urgent_data_is_delivered_inline(stack, peer):
    conn = established_client(stack, peer)
    peer.send(2000, seg(P, C, ACK | PSH | 0x20, payload=b"xyz!", urg=4))
    assert conn.recv(10, 2001) == b"xyz!"
    assert conn.rcv_up == P + 4


def test_urgent_offset_counts_down_to_the_mark_and_clears_past_it(stack, peer):
    # MUST-33: what the application learns. "hello" then 3 urgent bytes (pointer one past "!").
    conn = established_client(stack, peer)
    assert conn.urgent_offset is None
    peer.send(2000, seg(P, C, ACK | PSH, payload=b"hello"))
    peer.send(2001, seg(P + 5, C, ACK | PSH | URG, payload=b"ab!tail", urg=3))
    assert conn.rcv_up == P + 8
    assert conn.urgent_offset == 7  # "helloab" before the mark "!"
    assert conn.recv(7, 2002) == b"helloab" and conn.urgent_offset == 0  # at the mark
    assert conn.recv(1, 2003) == b"!" and conn.urgent_offset is None  # read past it
    assert conn.recv(10, 2004) == b"tail"


def test_urgent_pointer_ahead_of_the_data_is_pending_before_the_mark_arrives(stack, peer):
    conn = established_client(stack, peer)
    peer.send(2000, seg(P, C, ACK | PSH | URG, payload=b"abc", urg=10))
    assert conn.urgent_offset == 9 and conn.recvbuf.ready == 3  # mark not received yet


def test_urgent_pointer_is_tracked_with_an_initial_sequence_number_past_2_31(peer):
    # RCV.UP starts at IRS+1 (it used to start at 0, and max(RCV.UP, SEG.UP) in
    # sequence space then ignored every pointer 2^31 or more ahead of 0).
    stack = peer.stack
    irs = 0x9000_0000
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    peer.send(1000, seg(irs, ISS + 1, SYN | ACK, opts=MSS_OPT))
    assert conn.rcv_up == irs + 1 and conn.urgent_offset is None
    peer.send(2000, seg(irs + 1, ISS + 1, ACK | PSH | URG, payload=b"xy", urg=2))
    assert conn.rcv_up == irs + 3 and conn.urgent_offset == 1


# ---------------------------------------------------------------- delayed ACK
def test_delayed_ack_after_quickack_every_second_segment_or_40ms(stack, peer):
    conn = established_client(stack, peer)
    conn.quickack = 0
    # One full segment: no ACK yet, the delayed-ACK timer runs (40 ms).
    assert peer.send(2000, seg(P, C, ACK, payload=b"a" * 1460)) == []
    # A second full-sized segment: ACK at once (RFC 9293 §3.8.6.3 / RFC 5681 §4.2).
    assert peer.send(2001, seg(P + 1460, C, ACK, payload=b"b" * 1460)) == [out(C, P + 2920, ACK, win=65535)]
    # A lone segment is ACKed when the 40 ms timer fires.
    assert peer.send(3000, seg(P + 2920, C, ACK, payload=b"c" * 100)) == []
    assert peer.poll(3000 + 39_999) == []
    assert peer.poll(3000 + 40_000) == [out(C, P + 3020, ACK, win=65535)]
    assert stack.mib.DelayedACKs == 1
    assert conn.recv(10_000, 50_000) is not None


# ---------------------------------------------------------------- segmentation offload
def test_gso_sends_super_segments_with_per_mss_accounting():
    st = make_stack()
    st.gso_max = 65536
    peer = Peer(st)
    conn = established_client(st, peer)
    conn.send(b"z" * 30000, 2000)
    pkts = st.transmit_gso()
    # IW10 = 14,600 bytes: one super-segment of 10 MSS, cut by the device at 1460.
    assert [(len(parse(p).payload), g) for p, g in pkts] == [(14600, 1460)]
    assert conn.snd_nxt == C + 14600 and st.mib.OutSegs == 2 + 10  # SYN, ACK, then 10 on the wire
    # ACKs open cwnd; everything is accounted per MSS.
    more = peer.send(3000, seg(P, C + 14600, ACK))
    assert sum(len(s.payload) for s in more) == 15400
    assert all(len(s.payload) % 1460 == 0 or s is more[-1] for s in more)


def test_gro_super_segment_counts_as_many_for_delayed_ack(stack, peer):
    conn = established_client(stack, peer)
    conn.quickack = 0
    # One 4-MSS coalesced segment: ACKed at once (it is "two or more full segments").
    assert peer.send(2000, seg(P, C, ACK, payload=b"g" * 5840)) == [out(C, P + 5840, ACK)]


def parse(pkt):
    from tcpstack.wire.ip import parse_ip_tcp

    return parse_ip_tcp(pkt)[2]


def test_rst_with_the_fins_sequence_number_resets_close_wait(stack, peer):
    """Linux's tcp_reset_check: after the peer's FIN, a RST at RCV.NXT - 1 is exact."""
    lst, conn = established_server(stack, peer)
    peer.send(2000, seg(P, C, FIN | ACK))
    assert conn.state is State.CLOSE_WAIT
    assert peer.send(3000, seg(P, 0, RST)) == []  # P = the FIN's sequence number
    assert conn.state is State.CLOSED


def test_receive_batch_acks_in_order_data_once_per_batch(stack, peer):
    # A device read of six in-order segments: one ACK for all of them after the
    # batch (as GRO gives Linux), not one per two segments.
    from tcpstack.wire.ip import build_ip_tcp

    from .conftest import LOCAL, REMOTE

    conn = established_client(stack, peer)
    conn.quickack = 0  # past the quick-ACK start: the every-second-segment rule applies
    pkts = [build_ip_tcp(REMOTE, LOCAL, seg(P + i * 100, C, ACK, payload=b"d" * 100)) for i in range(6)]
    stack.receive_batch(pkts, 5000)
    assert peer.recv() == [out(C, P + 600, ACK)]
    assert conn.recv(1000, 5001) == b"d" * 600
    # Out of order inside a batch: each out-of-order segment draws its duplicate
    # ACK at once (fast retransmit counts them), covering the in-order one before.
    pkts = [build_ip_tcp(REMOTE, LOCAL, seg(P + 600 + i * 100, C, ACK, payload=b"e" * 100)) for i in (0, 2, 3)]
    stack.receive_batch(pkts, 6000)
    assert [s.ack for s in peer.recv()] == [P + 700, P + 700]


def test_receive_batch_bounds_a_batched_ack_to_sixteen_segments(stack, peer):
    from tcpstack.wire.ip import build_ip_tcp

    from .conftest import LOCAL, REMOTE

    conn = established_client(stack, peer)
    conn.quickack = 0
    pkts = [build_ip_tcp(REMOTE, LOCAL, seg(P + i * 100, C, ACK, payload=b"d" * 100)) for i in range(40)]
    stack.receive_batch(pkts, 5000)
    acks = [s.ack - P for s in peer.recv()]
    assert acks == [1600, 3200, 4000]


def test_receive_batch_of_acks_sends_what_one_by_one_would():
    # ACKs read together are answered by one sending pass after the batch; the
    # segments that leave are those one-by-one processing sends (PSH aside: it
    # marks the last segment of each sending pass, as Linux's tcp_write_xmit).
    from tcpstack.wire.ip import build_ip_tcp

    from .conftest import LOCAL, REMOTE, Peer, make_stack

    outs = []
    for batched in (False, True):
        st = make_stack()
        pr = Peer(st)
        conn = established_client(st, pr)
        conn.send(b"x" * 60_000, 2000)
        first = pr.recv()
        assert len(first) == 10  # the initial window
        acks = [build_ip_tcp(REMOTE, LOCAL, seg(P, C + k * 2920, ACK)) for k in range(1, 6)]
        if batched:
            st.receive_batch(acks, 3000)
        else:
            for a in acks:
                st.receive(a, 3000)
        outs.append([(s.seq, len(s.payload), s.flags & ~PSH) for s in pr.recv()])
    assert outs[0] == outs[1] and len(outs[0]) >= 10
