"""Opening connections: RFC 9293 §3.5, §3.10.7.1–3, and the reset rules."""

from __future__ import annotations

import pytest

from tcpstack.tcp import FixedIsn, Stack
from tcpstack.wire.tcp import Opt

from .conftest import (
    ACK,
    IRS,
    ISS,
    LOCAL,
    LPORT,
    MSS_OPT,
    REMOTE,
    RPORT,
    RST,
    SYN,
    Peer,
    State,
    established_client,
    established_server,
    make_stack,
    out,
    plain_config,
    seg,
)


def test_active_open_sends_syn_and_enters_syn_sent(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    assert conn.state is State.SYN_SENT
    assert peer.recv() == [out(ISS, 0, SYN, 65535, opts=MSS_OPT)]
    assert stack.mib.ActiveOpens == 1


def test_syn_sent_syn_ack_establishes(stack, peer):
    conn = established_client(stack, peer)
    assert list(conn.history) == [State.CLOSED, State.SYN_SENT, State.ESTABLISHED]
    assert conn.snd_una == ISS + 1 and conn.rcv_nxt == IRS + 1
    assert stack.mib.CurrEstab == 1


def test_passive_open_listen_syn_received_established(stack, peer):
    lst, conn = established_server(stack, peer)
    assert list(lst.history) == [State.CLOSED, State.LISTEN]
    assert list(conn.history) == [State.SYN_RECEIVED, State.ESTABLISHED]
    assert stack.mib.PassiveOpens == 1
    assert lst.requests == {}


def test_half_open_request_is_compact_not_a_tcb(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    assert len(lst.requests) == 1 and stack.conns == {}
    assert stack.state_counts()["SYN-RECEIVED"] == 1


def test_syn_to_closed_port_gets_rst_ack(stack, peer):
    # §3.10.7.1: no ACK -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    assert peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT)) == [out(0, IRS + 1, RST | ACK, 0)]
    assert stack.mib.OutRsts == 1


def test_ack_to_closed_port_gets_rst_with_seq_of_ack(stack, peer):
    # §3.10.7.1: ACK -> <SEQ=SEG.ACK><CTL=RST>
    assert peer.send(0, seg(IRS, 777, ACK, payload=b"x")) == [out(777, 0, RST, 0)]


def test_rst_to_closed_port_is_dropped(stack, peer):
    assert peer.send(0, seg(IRS, 0, RST)) == []


def test_ack_in_listen_gets_rst(stack, peer):
    stack.listen(LPORT, 0)
    assert peer.send(0, seg(IRS, 4242, ACK)) == [out(4242, 0, RST, 0)]


def test_syn_sent_bad_ack_gets_rst(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    # SEG.ACK =< ISS is unacceptable: <SEQ=SEG.ACK><CTL=RST>
    assert peer.send(10, seg(IRS, ISS, SYN | ACK, opts=MSS_OPT)) == [out(ISS, 0, RST, 0)]
    assert conn.state is State.SYN_SENT


def test_syn_sent_rst_ack_refuses(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    assert peer.send(10, seg(0, ISS + 1, RST | ACK, 0)) == []
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, ConnectionRefusedError)
    with pytest.raises(ConnectionRefusedError):
        conn.recv(10, 20)
    assert stack.mib.AttemptFails == 1


def test_syn_sent_rst_with_unacceptable_ack_is_ignored(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    assert peer.send(10, seg(0, ISS + 5, RST | ACK, 0)) == []
    assert conn.state is State.SYN_SENT


def test_simultaneous_open():
    """Figure 8 of RFC 9293: SYNs cross, both go SYN-SENT -> SYN-RECEIVED -> ESTABLISHED."""
    a = Stack(["198.18.0.1"], plain_config(), isn=FixedIsn(100), seed=1)
    b = Stack(["198.18.0.2"], plain_config(), isn=FixedIsn(300), seed=2)
    ca = a.connect("198.18.0.2", 2000, 0, local_port=1000)
    cb = b.connect("198.18.0.1", 1000, 0, local_port=2000)
    syn_a, syn_b = a.transmit(), b.transmit()
    b.receive(syn_a[0], 10)
    a.receive(syn_b[0], 10)
    assert ca.state is State.SYN_RECEIVED and cb.state is State.SYN_RECEIVED
    # exchange until quiet
    for t in range(20, 200, 10):
        pa, pb = a.transmit(), b.transmit()
        if not pa and not pb:
            break
        for p in pa:
            b.receive(p, t)
        for p in pb:
            a.receive(p, t)
    assert ca.state is State.ESTABLISHED and cb.state is State.ESTABLISHED
    assert list(ca.history) == [State.CLOSED, State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED]
    assert cb.history == ca.history
    ca.send(b"hello", 300)
    for p in a.transmit():
        b.receive(p, 310)
    assert cb.recv(100, 320) == b"hello"


def test_syn_retries_then_timeout(stack, peer):
    stack.config.tcp_syn_retries = 2
    stack.config.tcp_syn_linear_timeouts = 0
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    assert len(peer.recv()) == 1
    # RFC 6298 (2.1)/(5.5): 1 s, then doubled.
    assert peer.poll(999_999) == []
    assert peer.poll(1_000_000) == [out(ISS, 0, SYN, 65535, opts=MSS_OPT)]
    assert stack.next_deadline() == 3_000_000
    assert peer.poll(3_000_000) == [out(ISS, 0, SYN, 65535, opts=MSS_OPT)]
    assert stack.next_deadline() == 7_000_000
    assert peer.poll(7_000_000) == []
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, TimeoutError)
    assert stack.mib.TCPSynRetrans == 2


def test_synack_retransmitted_then_request_dropped(stack, peer):
    stack.config.tcp_synack_retries = 2
    lst = stack.listen(LPORT, 0)
    synack = out(ISS, IRS + 1, SYN | ACK, 65535, opts=MSS_OPT)
    assert peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT)) == [synack]
    assert peer.poll(1_000_000) == [synack]
    assert peer.poll(3_000_000) == [synack]
    assert peer.poll(7_000_000) == []
    assert lst.requests == {}


def test_retransmitted_syn_gets_synack_again(stack, peer):
    stack.listen(LPORT, 0)
    synack = out(ISS, IRS + 1, SYN | ACK, 65535, opts=MSS_OPT)
    assert peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT)) == [synack]
    assert peer.send(500_000, seg(IRS, 0, SYN, opts=MSS_OPT)) == [synack]


def test_rst_in_syn_received_drops_request(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    assert peer.send(10, seg(IRS + 1, 0, RST)) == []
    assert lst.requests == {}


def test_bad_ack_in_syn_received_gets_rst(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    assert peer.send(10, seg(IRS + 1, ISS + 7, ACK)) == [out(ISS + 7, 0, RST, 0)]
    assert len(lst.requests) == 1


def test_mss_option_negotiation(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    peer.send(10, seg(IRS, ISS + 1, SYN | ACK, opts=(Opt(2, 1000),)))
    assert conn.snd_mss == 1000


def test_missing_mss_defaults_to_536(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    peer.send(10, seg(IRS, ISS + 1, SYN | ACK))
    assert conn.snd_mss == 536


def test_tiny_mss_is_clamped_to_floor(stack, peer):
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    peer.send(10, seg(IRS, ISS + 1, SYN | ACK, opts=(Opt(2, 1),)))
    assert conn.snd_mss == 48


def test_linux_option_layout_on_syn():
    """SYN with everything on: mss, sackOK, TS, nop, wscale (Linux's layout)."""
    st = Stack([LOCAL], isn=FixedIsn(ISS), seed=1, ts_offset=lambda k: 0)
    st.connect(REMOTE, RPORT, 5_000_000, local_port=LPORT)
    (syn,) = Peer(st).recv()
    assert syn.options == (Opt(2, 1460), Opt(4, None), Opt(8, (5000, 0)), Opt(1, None), Opt(3, 7))


def test_listen_twice_on_a_port_is_eaddrinuse(stack):
    stack.listen(LPORT, 0)
    with pytest.raises(OSError) as exc:
        stack.listen(LPORT, 0)
    assert exc.value.errno == 98


def test_listen_while_a_connection_on_the_port_is_in_syn_sent(stack, peer):
    # RFC 9293 §3.9.1.1 (MUST-42): an application can LISTEN on a port while a
    # connection with the same local port is in SYN-SENT -- with SO_REUSEADDR,
    # as on Linux (without it bind() says EADDRINUSE).
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    assert conn.state is State.SYN_SENT
    peer.recv()
    with pytest.raises(OSError) as exc:
        stack.listen(LPORT, 0)
    assert exc.value.errno == 98
    lst = stack.listen(LPORT, 0, reuse=True)
    # Both work: the SYN-ACK completes the active open, another peer's SYN reaches the listener.
    assert peer.send(1000, seg(IRS, ISS + 1, SYN | ACK, opts=MSS_OPT)) == [out(ISS + 1, IRS + 1, ACK)]
    assert conn.state is State.ESTABLISHED
    (synack,) = peer.send(2000, seg(7000, 0, SYN, opts=MSS_OPT, sport=RPORT + 1))
    assert synack.flags == SYN | ACK and synack.dst_port == RPORT + 1
    assert lst.state is State.LISTEN


def test_connect_from_foreign_address_is_eaddrnotavail(stack):
    with pytest.raises(OSError) as exc:
        stack.connect(REMOTE, RPORT, 0, local_addr="203.0.113.9")
    assert exc.value.errno == 99


def test_accept_queue_overflow_drops_final_ack(peer):
    st = peer.stack
    lst = st.listen(LPORT, 0, backlog=0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    peer.send(1, seg(IRS + 1, ISS + 1, ACK))  # backlog 0 still admits one (Linux: len > backlog)
    assert len(lst.accept_queue) == 1
    peer.send(2, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + 1))
    assert st.mib.ListenOverflows == 1 and st.mib.ListenDrops == 1


def test_local_address_is_ours():
    st = make_stack()
    assert LOCAL in st.addresses


def test_syn_linear_timeouts_like_linux(stack, peer):
    """Linux >= 6.5 (tcp_syn_linear_timeouts=4): after retransmission k the RTO stays
    at its initial value while k <= 4 and doubles afterwards (tcp_retransmit_timer),
    so SYNs leave at 1, 2, 3, 4, 5 s, then 7 s."""
    stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    times = []
    for _ in range(6):
        t = stack.next_deadline()
        times.append(t)
        assert len(peer.poll(t)) == 1
    assert times == [1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000, 7_000_000]


def test_syn_sent_bad_ack_resends_syn_quickly(stack, peer):
    stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    peer.send(10, seg(IRS, ISS + 99, ACK))  # a stale ACK from an old incarnation
    assert stack.next_deadline() == 2_010
    assert peer.poll(2_010) == [out(ISS, 0, SYN, 65535, opts=MSS_OPT)]


def test_connect_to_broadcast_or_multicast_is_refused(stack):
    # RFC 9293 MUST-46
    for addr in ("255.255.255.255", "224.0.0.1", "ff02::1"):
        with pytest.raises(OSError) as exc:
            stack.connect(addr, 80, 0)
        assert exc.value.errno == 101


def test_syn_from_a_multicast_source_is_dropped(stack):
    # RFC 9293 MUST-63: no SYN-ACK, no RST
    from tcpstack.wire.ip import build_ip_tcp

    stack.listen(LPORT, 0)
    stack.receive(build_ip_tcp("224.0.0.9", LOCAL, seg(IRS, 0, SYN, opts=MSS_OPT)), 0)
    assert stack.transmit() == [] and stack.mib.InErrs == 1


def test_ipv6_peer_without_mss_defaults_to_1220():
    st = Stack(["fd00:198:18::2"], plain_config(), isn=FixedIsn(ISS), seed=1)
    lst = st.listen(LPORT, 0)
    from tcpstack.wire.ip import build_ip_tcp

    st.receive(build_ip_tcp("fd00:198:18::1", "fd00:198:18::2", seg(IRS, 0, SYN)), 0)
    st.receive(build_ip_tcp("fd00:198:18::1", "fd00:198:18::2", seg(IRS + 1, ISS + 1, ACK)), 10)
    conn = lst.accept()
    assert conn is not None and conn.snd_mss == 1220  # RFC 9293 MUST-15


def test_karn_no_rtt_sample_from_a_retransmitted_segment(stack, peer):
    """RFC 6298 (3) / MUST-18: the ACK of a retransmitted segment gives no RTT sample."""
    conn = established_client(stack, peer)
    samples = conn.rtt.samples
    conn.send(b"once", 2000)
    peer.recv()
    t = stack.next_deadline()
    assert len(peer.poll(t)) == 1  # the RTO retransmission
    peer.send(t + 5_000_000, seg(IRS + 1, ISS + 5, ACK))  # a very late ACK
    assert conn.rtt.samples == samples
    assert conn.rtt.srtt < 1_000_000  # not polluted by the 5 s


def test_rst_in_window_in_syn_received_draws_challenge_ack(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    # RFC 5961 §3.2: not exactly RCV.NXT -> <SEQ=ISS+1><ACK=RCV.NXT><CTL=ACK>, the request stays.
    assert peer.send(10, seg(IRS + 100, 0, RST, win=0)) == [out(ISS + 1, IRS + 1, ACK)]
    assert len(lst.requests) == 1


def test_synack_in_syn_received_resets_and_drops_the_request(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    # Linux's embryonic reset: <SEQ=SEG.ACK><CTL=RST> and the half-open connection is gone.
    assert peer.send(10, seg(IRS + 100, ISS + 1, SYN | ACK, opts=MSS_OPT)) == [out(ISS + 1, 0, RST, 0)]
    assert lst.requests == {}
