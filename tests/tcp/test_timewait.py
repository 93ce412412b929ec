"""TIME-WAIT: compact records, RFC 1337, RFC 6191, tcp_tw_reuse, tcp_max_tw_buckets."""

from __future__ import annotations

import gc
import sys

import pytest

from tcpstack.tcp import FixedIsn, Stack
from tcpstack.tcp.timewait import TW_ISN_GAP, reusable, unpack

from .conftest import (
    ACK,
    FIN,
    IRS,
    ISS,
    LOCAL,
    LPORT,
    MSS_OPT,
    REMOTE,
    RPORT,
    RST,
    SYN,
    C,
    Opt,
    P,
    Peer,
    State,
    make_stack,
    out,
    plain_config,
    seg,
)

NOP = Opt(1, None)


def ts(val: int, ecr: int) -> tuple[Opt, ...]:
    return (NOP, NOP, Opt(8, (val, ecr)))


def client_time_wait(stack: Stack, peer: Peer, lport: int = LPORT, t: int = 0):
    """An active close to TIME-WAIT, plain options (no timestamps)."""
    conn = stack.connect(REMOTE, RPORT, t, local_port=lport)
    peer.recv()
    peer.send(t + 1000, seg(IRS, ISS + 1, SYN | ACK, opts=MSS_OPT, dport=lport))
    peer.recv()
    conn.close(t + 2000)
    peer.recv()
    peer.send(t + 3000, seg(P, C + 1, FIN | ACK, dport=lport))
    peer.recv()
    assert conn.state is State.TIME_WAIT
    return conn


def ts_time_wait(stack: Stack, peer: Peer, t: int = 0, peer_ts: int = 100, lport: int | None = LPORT):
    """The same with timestamps on both sides; the peer's TSval is peer_ts (then +1, +2)."""
    conn = stack.connect(REMOTE, RPORT, t, local_port=lport)
    lp = conn.local_port
    (syn,) = peer.recv()
    peer.send(t + 1000, seg(IRS, ISS + 1, SYN | ACK, opts=MSS_OPT + ts(peer_ts, syn.ts[0]), dport=lp))
    peer.recv()
    conn.close(t + 2000)
    (fin,) = peer.recv()
    peer.send(t + 3000, seg(P, C + 1, FIN | ACK, opts=ts(peer_ts + 2, fin.ts[0]), dport=lp))
    peer.recv()
    assert conn.state is State.TIME_WAIT and conn.ts_ok
    return conn


def ts_stack(**cfg: object) -> Stack:
    c = plain_config(tcp_timestamps=1, **cfg)
    return make_stack(c)


# ---------------------------------------------------------------- the record
def test_record_is_31_packed_bytes_and_small(stack, peer):
    client_time_wait(stack, peer)
    ((key, rec),) = stack.timewait.items()
    assert type(rec) is bytes and len(rec) == 31
    assert sys.getsizeof(rec) == 64
    assert not gc.is_tracked(rec)  # no work for the garbage collector
    f = unpack(rec)
    assert (f.snd_nxt, f.rcv_nxt, f.window) == (C + 1, P + 1, 65535)
    assert f.expires == 3000 + 60_000_000
    # record + key tuple + the port int in it
    assert sys.getsizeof(rec) + sys.getsizeof(key) + sys.getsizeof(key[3]) <= 200


def test_two_thousand_entries_cost_under_256_bytes_each():
    st = make_stack()
    peer = Peer(st)
    for i in range(2000):
        client_time_wait(st, peer, lport=10_000 + i, t=i * 10_000)
    assert len(st.timewait) == 2000
    st.poll(25_000_000)  # the TCBs' stale timer entries go, and the TCBs with them
    gc.collect()
    per_entry = st._tw.memory() / 2000
    assert per_entry <= 256, per_entry


def test_orphaned_tcb_is_freed_and_a_held_one_is_told():
    st = make_stack()
    peer = Peer(st)
    held = client_time_wait(st, peer, lport=1000)
    client_time_wait(st, peer, lport=1001)  # dropped at once by the "application"
    st.poll(5_000_000)  # stale timer-heap entries still pointing at the TCB are popped
    gc.collect()
    assert len(st._tw._conns) == 1  # only the TCB still referenced
    st.poll(70_000_000)
    assert held.state is State.CLOSED and held.history[-2:] == (State.TIME_WAIT, State.CLOSED)
    assert st.timewait == {} and st.mib.TW == 2


def test_one_timer_for_the_whole_table(stack, peer):
    for i in range(5):
        client_time_wait(stack, peer, lport=2000 + i, t=i * 1_000_000)
    owners = [e[2] for e in stack._timers if e[2] is stack._tw]
    assert len(owners) == 1  # one heap entry for the whole table, not one per record
    assert stack.next_deadline() == 3000 + 60_000_000
    stack.poll(2_003_000 + 60_000_000)  # the first three are due
    assert len(stack.timewait) == 2 and stack.mib.TW == 3
    assert stack.next_deadline() == 3_003_000 + 60_000_000


def test_ss_view_shows_time_wait(stack, peer):
    client_time_wait(stack, peer)
    (view,) = [s for s in stack.sockets() if s.state == "TIME-WAIT"]
    assert view.key == (LOCAL, LPORT, REMOTE, RPORT) and view.rcv_nxt == P + 1
    assert stack.state_counts()["TIME-WAIT"] == 1


# ---------------------------------------------------------------- segments in TIME-WAIT
def test_retransmitted_fin_is_acked_and_restarts_at_most_once_a_second(stack, peer):
    client_time_wait(stack, peer)
    assert peer.send(10_000_000, seg(P, C + 1, FIN | ACK)) == [out(C + 1, P + 1, ACK)]
    assert peer.send(10_500_000, seg(P, C + 1, FIN | ACK)) == [out(C + 1, P + 1, ACK)]
    assert unpack(stack.timewait[(LOCAL, LPORT, REMOTE, RPORT)]).expires == 70_000_000
    peer.poll(70_000_000)
    assert stack.timewait == {}


def test_in_window_bare_ack_restarts_silently(stack, peer):
    client_time_wait(stack, peer)
    assert peer.send(5_000_000, seg(P + 1, C + 1, ACK)) == []
    assert unpack(stack.timewait[(LOCAL, LPORT, REMOTE, RPORT)]).expires == 65_000_000


def test_data_in_time_wait_is_answered_with_ack(stack, peer):
    client_time_wait(stack, peer)
    assert peer.send(5000, seg(P + 1, C + 1, ACK, payload=b"late")) == [out(C + 1, P + 1, ACK)]


def test_out_of_window_rst_is_ignored(stack, peer):
    client_time_wait(stack, peer)
    assert peer.send(5000, seg(P + 50, 0, RST)) == []
    assert len(stack.timewait) == 1


def test_in_window_rst_kills_it_and_counts_nothing(stack, peer):
    conn = client_time_wait(stack, peer)
    peer.send(5000, seg(P + 1, 0, RST))
    assert conn.state is State.CLOSED and stack.timewait == {}
    assert stack.mib.TW == 0 and stack.mib.TWKilled == 0  # Linux counts neither


def test_time_wait_ack_carries_timestamps():
    st = ts_stack()
    peer = Peer(st)
    ts_time_wait(st, peer)
    (ack,) = peer.send(7_000_000, seg(P, C + 1, FIN | ACK, opts=ts(103, 0)))
    assert ack.ts == (7000, 102)  # our clock in ms (offset 0), TS.Recent of the FIN


def test_paws_rejects_an_old_segment_in_time_wait():
    st = ts_stack()
    peer = Peer(st)
    ts_time_wait(st, peer, peer_ts=1000)
    assert peer.send(5000, seg(P + 1, C + 1, ACK, opts=ts(900, 0))) == [out(C + 1, P + 1, ACK, opts=ts(5, 1002))]
    assert st.mib.PAWSEstab == 1


# ---------------------------------------------------------------- a new SYN (RFC 6191)
def server_time_wait(stack: Stack, peer: Peer, timestamps: bool):
    """The server closes first (HTTP/1.0): TIME-WAIT on the listening port."""
    lst = stack.listen(LPORT, 0, reuse=True)
    opts = MSS_OPT + (ts(500, 0) if timestamps else ())
    (synack,) = peer.send(0, seg(IRS, 0, SYN, opts=opts))
    more = ts(501, synack.ts[0]) if timestamps else ()
    peer.send(10, seg(P, ISS + 1, ACK, opts=more))
    conn = lst.accept()
    conn.close(20)
    peer.recv()
    peer.send(30, seg(P, ISS + 2, FIN | ACK, opts=ts(502, synack.ts[0]) if timestamps else ()))
    assert conn.state is State.TIME_WAIT
    return lst


def test_syn_with_lower_seq_and_no_timestamps_is_acked_not_accepted(stack, peer):
    server_time_wait(stack, peer, timestamps=False)
    assert peer.send(40, seg(IRS - 5000, 0, SYN, opts=MSS_OPT)) == [out(ISS + 2, P + 1, ACK)]
    assert len(stack.timewait) == 1


def test_syn_with_newer_timestamp_but_lower_seq_is_accepted():
    """RFC 6191: with timestamps the timestamp decides, not the sequence number."""
    st = ts_stack()
    peer = Peer(st)
    server_time_wait(st, peer, timestamps=True)
    (synack,) = peer.send(40, seg(IRS - 5000, 0, SYN, opts=MSS_OPT + ts(600, 0)))
    assert synack.flags == SYN | ACK and synack.seq == (ISS + 2 + TW_ISN_GAP) & 0xFFFFFFFF
    assert st.timewait == {}


def test_syn_with_equal_timestamp_and_higher_seq_is_accepted():
    st = ts_stack()
    peer = Peer(st)
    server_time_wait(st, peer, timestamps=True)
    (synack,) = peer.send(40, seg(IRS + 100_000, 0, SYN, opts=MSS_OPT + ts(502, 0)))
    assert synack.flags == SYN | ACK


def test_syn_with_older_timestamp_is_rejected_by_paws():
    st = ts_stack()
    peer = Peer(st)
    server_time_wait(st, peer, timestamps=True)
    (ack,) = peer.send(40, seg(IRS + 100_000, 0, SYN, opts=MSS_OPT + ts(400, 0)))
    assert ack.flags == ACK and st.mib.PAWSEstab == 1 and len(st.timewait) == 1


# ---------------------------------------------------------------- tcp_max_tw_buckets
def test_max_tw_buckets_overflow_closes_at_once():
    st = make_stack(plain_config(tcp_max_tw_buckets=1))
    peer = Peer(st)
    client_time_wait(st, peer, lport=3000)
    conn = st.connect(REMOTE, RPORT, 10_000, local_port=3001)
    peer.recv()
    peer.send(11_000, seg(IRS, ISS + 1, SYN | ACK, opts=MSS_OPT, dport=3001))
    peer.recv()
    conn.close(12_000)
    peer.recv()
    peer.send(13_000, seg(P, C + 1, FIN | ACK, dport=3001))
    assert conn.state is State.CLOSED and len(st.timewait) == 1
    assert st.mib.TCPTimeWaitOverflow == 1


# ---------------------------------------------------------------- reusing the 4-tuple
def one_port_stack(**cfg: object) -> Stack:
    return Stack([LOCAL], plain_config(tcp_timestamps=1, ip_local_port_range="40000 40000", **cfg),
                 isn=FixedIsn(ISS), seed=1, ts_offset=lambda key: 0)


def test_tw_reuse_0_port_range_exhausted_is_eaddrnotavail():
    st = one_port_stack(tcp_tw_reuse=0)
    peer = Peer(st)
    ts_time_wait(st, peer, lport=None)
    with pytest.raises(OSError) as exc:
        st.connect(REMOTE, RPORT, 5_000_000)
    assert exc.value.errno == 99


def test_tw_reuse_1_takes_over_a_time_wait_port_with_timestamps():
    st = one_port_stack(tcp_tw_reuse=1)
    peer = Peer(st)
    old = ts_time_wait(st, peer, lport=None)
    with pytest.raises(OSError):  # less than a second since the last timestamp
        st.connect(REMOTE, RPORT, 500_000)
    conn = st.connect(REMOTE, RPORT, 1_003_000)
    assert conn.local_port == 40000 == old.local_port
    assert st.mib.TWRecycled == 1 and st.timewait == {}
    # Linux's tcp_twsk_unique: write_seq = tw_snd_nxt + 65535 + 2; TS.Recent inherited.
    assert conn.iss == (C + 1 + TW_ISN_GAP) & 0xFFFFFFFF
    assert conn.ts_recent == 102
    (syn,) = peer.recv()
    assert syn.flags == SYN and syn.seq == conn.iss
    assert old.state is State.CLOSED  # a TCB still held learns its TIME-WAIT is over


def test_tw_reuse_needs_timestamps():
    st = Stack([LOCAL], plain_config(tcp_tw_reuse=1, ip_local_port_range="40000 40000"),
               isn=FixedIsn(ISS), seed=1)
    peer = Peer(st)
    client_time_wait(st, peer, lport=40000)
    with pytest.raises(OSError) as exc:
        st.connect(REMOTE, RPORT, 10_000_000)
    assert exc.value.errno == 99


def test_tw_reuse_2_is_loopback_only():
    st = one_port_stack(tcp_tw_reuse=2)
    peer = Peer(st)
    ts_time_wait(st, peer, lport=None)
    with pytest.raises(OSError):
        st.connect(REMOTE, RPORT, 5_000_000)
    rec = next(iter(st.timewait.values()))
    assert reusable(rec, 5_000_000, st.config, "127.0.0.1", "127.0.0.2")
    assert not reusable(rec, 5_000_000, st.config, LOCAL, REMOTE)


def test_explicit_bind_reuses_time_wait_with_timestamps_whatever_tw_reuse():
    """Linux: a bound port goes through tcp_twsk_unique without twp, so only the
    timestamps matter."""
    st = one_port_stack(tcp_tw_reuse=0)
    peer = Peer(st)
    ts_time_wait(st, peer, lport=LPORT)
    conn = st.connect(REMOTE, RPORT, 100_000, local_port=LPORT)
    assert conn.state is State.SYN_SENT and st.mib.TWRecycled == 1


def test_explicit_bind_on_time_wait_without_timestamps_is_eaddrnotavail(stack, peer):
    client_time_wait(stack, peer)
    with pytest.raises(OSError) as exc:
        stack.connect(REMOTE, RPORT, 100_000, local_port=LPORT)
    assert exc.value.errno == 99


def test_other_destinations_share_ephemeral_ports():
    st = one_port_stack(tcp_tw_reuse=0)
    peer = Peer(st)
    ts_time_wait(st, peer, lport=None)
    conn = st.connect("198.18.0.9", RPORT, 100_000)  # another 4-tuple: the port is free for it
    assert conn.local_port == 40000


# ---------------------------------------------------------------- two stacks: the SYN that is not newer
def pump(a: Stack, b: Stack, now: int, rounds: int = 20) -> None:
    """Deliver packets between two stacks until both are quiet (no link delay)."""
    for _ in range(rounds):
        pa, pb = a.transmit(), b.transmit()
        if not pa and not pb:
            return
        for p in pa:
            b.receive(p, now)
        for p in pb:
            a.receive(p, now)


def test_an_old_syn_on_a_server_time_wait_is_cleared_by_the_clients_rst():
    """The classic Linux exchange: a client reconnects from the same port with an
    ISN below the server's TIME-WAIT RCV.NXT (no timestamps, so nothing proves
    it new).  The server ACKs what it expects; the client in SYN-SENT answers
    that unacceptable ACK with RST <SEQ=SEG.ACK>, which is exactly RCV.NXT and
    ends the TIME-WAIT (tcp_rfc1337=0); the client's retransmitted SYN then
    opens a new connection."""
    cfg = plain_config()
    server = Stack([LOCAL], cfg, isn=FixedIsn(ISS), seed=1)
    client = Stack([REMOTE], cfg.copy(), isn=FixedIsn(900_000), seed=2)
    lst = server.listen(LPORT, 0)
    c = client.connect(LOCAL, LPORT, 0, local_port=RPORT)
    pump(client, server, 0)
    s = lst.accept()
    s.close(1000)  # the server closes first: TIME-WAIT on the server
    pump(client, server, 1000)
    c.close(2000)
    pump(client, server, 2000)
    assert len(server.timewait) == 1 and c.state is State.CLOSED
    client.isn = FixedIsn(800_000)  # the new incarnation starts *below* the old one
    c2 = client.connect(LOCAL, LPORT, 3000, local_port=RPORT)
    pump(client, server, 3000)
    assert server.timewait == {} and client.mib.OutRsts == 1
    assert c2.state is State.SYN_SENT  # its SYN was answered by the ACK, not a SYN-ACK
    client.poll(1_003_000)  # SYN retransmission
    pump(client, server, 1_003_000)
    assert c2.state is State.ESTABLISHED
    s2 = lst.accept()
    assert s2 is not None and s2.irs == 800_000
