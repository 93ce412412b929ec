"""A listener under pressure: queue bounds, request expiry, overflow, SO_REUSEADDR, SO_LINGER 0."""

from __future__ import annotations

import sys

import pytest

from tcpstack.tcp.listener import Request

from .conftest import (
    ACK,
    FIN,
    IRS,
    ISS,
    LPORT,
    MSS_OPT,
    RPORT,
    RST,
    SYN,
    C,
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


def flood(peer: Peer, n: int, t: int = 0, first_port: int = 1024) -> None:
    for i in range(n):
        peer.send(t, seg(IRS + i, 0, SYN, opts=MSS_OPT, sport=first_port + i))


@pytest.mark.parametrize(("cookies", "limit"), [(0, 97), (1, 129), (2, 0)])
def test_syn_queue_never_exceeds_its_bound(cookies, limit):
    st = make_stack(plain_config(tcp_syncookies=cookies, tcp_max_syn_backlog=128))
    lst = st.listen(LPORT, 0, backlog=128)
    flood(Peer(st), 1000)
    assert lst.syn_queue_max == len(lst.requests) == limit
    if cookies:
        assert lst.syn_queue_limit == 129
        assert st.mib.SyncookiesSent == 1000 - limit
    else:
        assert lst.syn_queue_limit == 97
        assert st.mib.ListenDrops == 1000 - limit


def test_half_open_request_is_a_small_record():
    st = make_stack()
    lst = st.listen(LPORT, 0)
    flood(Peer(st), 1)
    (req,) = lst.requests.values()
    assert isinstance(req, Request) and not hasattr(req, "__dict__")
    assert sys.getsizeof(req) <= 200


def test_requests_expire_after_synack_retries_with_backoff():
    """tcp_synack_retries=5: SYN-ACKs at 0, 1, 3, 7, 15, 31 s; the request goes at 63 s."""
    st = make_stack(plain_config(tcp_syncookies=0))
    peer = Peer(st)
    lst = st.listen(LPORT, 0)
    flood(peer, 3)
    sent_at = []
    t = 0
    while t <= 70_000_000:
        for s in peer.poll(t):
            assert s.flags == SYN | ACK
            sent_at.append(t)
        t += 500_000
    assert sorted(set(sent_at)) == [1_000_000, 3_000_000, 7_000_000, 15_000_000, 31_000_000]
    assert len(sent_at) == 15 and st.mib.TCPSynRetrans == 15
    st.poll(62_900_000)
    assert lst.requests == {}


def test_a_queue_clogged_with_old_requests_is_pruned_after_two_retries():
    """Linux's reqsk_timer_handler: while the queue is more than half full of
    old requests, at most 2 SYN-ACK retransmissions (1, 3 s) and the request
    goes at 7 s -- until only half the room is taken; those keep the full
    tcp_synack_retries."""
    st = make_stack(plain_config(tcp_syncookies=0))
    peer = Peer(st)
    lst = st.listen(LPORT, 0, backlog=8)
    flood(peer, 9)  # backlog + 1: full
    assert len(lst.requests) == 9 and lst.young == 9
    sent: dict[int, int] = {}
    for t in range(0, 8_000_001, 250_000):
        n = len(peer.poll(t))
        if n:
            sent[t] = n
    assert sent == {1_000_000: 9, 3_000_000: 9, 7_000_000: 4}
    assert len(lst.requests) == 4 and lst.young == 0  # 4 * 2 <= max(8, backlog): no more pruning


def test_a_half_empty_queue_keeps_the_full_synack_retries():
    st = make_stack(plain_config(tcp_syncookies=0))
    peer = Peer(st)
    lst = st.listen(LPORT, 0, backlog=8)
    flood(peer, 4)  # 4 * 2 is not more than max(8, backlog)
    st.poll(8_000_000)
    assert len(lst.requests) == 4


def test_retransmitted_syn_gets_the_synack_again_without_a_new_request(stack, peer):
    lst = stack.listen(LPORT, 0)
    (a,) = peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    (b,) = peer.send(500_000, seg(IRS, 0, SYN, opts=MSS_OPT))
    assert a == b and len(lst.requests) == 1


def test_accept_queue_full_drops_syns_even_with_cookies():
    st = make_stack(plain_config(tcp_syncookies=2))
    peer = Peer(st)
    lst = st.listen(LPORT, 0, backlog=0)
    (synack,) = peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    peer.send(1, seg(P, synack.seq + 1, ACK))
    assert len(lst.accept_queue) == 1
    assert peer.send(2, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + 1)) == []
    assert st.mib.ListenOverflows == 1 and st.mib.ListenDrops == 1
    assert st.mib.SyncookiesSent == 1  # the second SYN got no cookie


def test_abort_on_overflow_answers_the_final_ack_with_rst():
    st = make_stack(plain_config(tcp_abort_on_overflow=1))
    peer = Peer(st)
    lst = st.listen(LPORT, 0, backlog=0)
    for i in range(2):
        peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + i))
    peer.send(1, seg(P, ISS + 1, ACK))
    assert peer.send(2, seg(P, ISS + 1, ACK, sport=RPORT + 1)) == [out(ISS + 1, 0, RST, 0, dport=RPORT + 1)]
    assert len(lst.accept_queue) == 1 and lst.requests == {}


def test_without_abort_on_overflow_the_request_waits_for_room():
    st = make_stack(plain_config())
    peer = Peer(st)
    lst = st.listen(LPORT, 0, backlog=1)  # 2 requests and 2 accepted connections fit
    for i in range(2):
        peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + i))
    peer.send(1, seg(P, ISS + 1, ACK))
    peer.send(1, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + 2))
    peer.send(2, seg(P, ISS + 1, ACK, sport=RPORT + 1))
    assert len(lst.accept_queue) == 2
    assert peer.send(3, seg(P, ISS + 1, ACK, sport=RPORT + 2)) == []  # dropped, request kept
    assert st.mib.ListenOverflows == 1 and len(lst.requests) == 1
    lst.accept()
    # The SYN-ACK retransmission re-elicits the ACK; now there is room.
    assert [s.flags for s in peer.poll(1_000_001)] == [SYN | ACK]
    peer.send(1_000_100, seg(P, ISS + 1, ACK, sport=RPORT + 2))
    assert len(lst.accept_queue) == 2 and lst.requests == {}


def test_closing_the_listener_resets_unaccepted_and_forgets_requests(stack, peer):
    lst = stack.listen(LPORT, 0)
    peer.send(0, seg(IRS, 0, SYN, opts=MSS_OPT))
    peer.send(1, seg(P, ISS + 1, ACK))
    flood(peer, 3, first_port=2000)
    lst.close(10)
    rst = [s for s in peer.recv() if s.flags & RST]
    assert len(rst) == 1 and lst.requests == {} and stack.listeners == {}
    assert lst.state is State.CLOSED


# ---------------------------------------------------------------- SO_REUSEADDR
def server_closed_first(stack, peer):
    """A server connection closed by the server: TIME-WAIT on LPORT."""
    lst, conn = established_server(stack, peer)
    conn.close(2000)
    peer.recv()
    peer.send(3000, seg(P, C + 1, FIN | ACK))
    assert conn.state is State.TIME_WAIT
    lst.close(4000)


def test_restart_without_reuseaddr_is_eaddrinuse_while_time_wait_lasts(stack, peer):
    server_closed_first(stack, peer)
    with pytest.raises(OSError) as exc:
        stack.listen(LPORT, 5000)
    assert exc.value.errno == 98 and "TIME-WAIT" in exc.value.strerror
    stack.poll(70_000_000)
    assert stack.listen(LPORT, 70_000_000).state is State.LISTEN


def test_restart_with_reuseaddr_binds_over_time_wait(stack, peer):
    server_closed_first(stack, peer)
    lst = stack.listen(LPORT, 5000, reuse=True)
    assert lst.state is State.LISTEN and len(stack.timewait) == 1


def test_reuseaddr_does_not_allow_two_listeners(stack):
    stack.listen(LPORT, 0, reuse=True)
    with pytest.raises(OSError) as exc:
        stack.listen(LPORT, 0, reuse=True)
    assert exc.value.errno == 98


def test_established_connections_on_the_port_need_reuseaddr(stack, peer):
    lst, conn = established_server(stack, peer)
    lst.close(10)
    with pytest.raises(OSError):
        stack.listen(LPORT, 20)
    assert stack.listen(LPORT, 20, reuse=True).state is State.LISTEN
    assert conn.state is State.ESTABLISHED


# ---------------------------------------------------------------- SO_LINGER 0
def test_linger_zero_close_aborts_with_rst_and_no_time_wait(stack, peer):
    conn = established_client(stack, peer)
    conn.linger = 0
    conn.close(2000)
    assert peer.recv() == [out(C, P, RST | ACK, 0)]  # Linux's active reset carries the ACK
    assert conn.state is State.CLOSED and stack.timewait == {} and stack.conns == {}
    assert stack.mib.TCPAbortOnLinger == 1 and stack.mib.OutRsts == 1
    # The peer's next segment finds no socket: RST again.
    assert peer.send(3000, seg(P, C, ACK, payload=b"x")) == [out(C, 0, RST, 0)]


def test_linger_zero_on_the_server_side_frees_the_port_at_once(stack, peer):
    lst, conn = established_server(stack, peer)
    conn.linger = 0
    conn.close(2000)
    assert [s.flags for s in peer.recv()] == [RST | ACK]
    lst.close(3000)
    assert stack.listen(LPORT, 4000).state is State.LISTEN  # nothing in TIME-WAIT
