"""Engine bugs found while running the engine against the kernel (issue 5).

Each test is the smallest reproduction with crafted segments, marked
``xfail(strict=True)``: when the engine owner fixes the bug the test passes,
strict xfail turns that into a failure, and the marker is removed.
"""

from __future__ import annotations

from tcpstack.tcp import Config, FixedIsn, Stack, State
from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp
from tcpstack.wire.tcp import ACK, FIN, SYN, Opt, Segment

LOCAL, REMOTE = "198.18.0.2", "198.18.0.1"
LPORT, RPORT = 7000, 40000
ISS, IRS = 1000, 5000


def _feed(stack: Stack, seg: Segment, now: int) -> list[Segment]:
    stack.receive(build_ip_tcp(REMOTE, LOCAL, seg), now)
    return [parse_ip_tcp(p)[2] for p in stack.transmit()]


# Fixed in connection._window_field (rounds the offered window up): kept as a regression test.
def test_window_right_edge_never_moves_left_with_window_scaling() -> None:
    cfg = Config(tcp_timestamps=0, tcp_sack=0, tcp_window_scaling=1)
    stack = Stack([LOCAL], cfg, isn=FixedIsn(ISS), seed=1, ts_offset=lambda key: 0)
    lst = stack.listen(LPORT, 0)
    synack = _feed(stack, Segment(RPORT, LPORT, IRS, 0, SYN, 65535, 0, (Opt(2, 1460), Opt(3, 7))), 0)
    assert synack and synack[0].flags == SYN | ACK
    ws = synack[0].wscale
    assert ws == 7  # from tcp_rmem[2] = 6 MiB
    assert _feed(stack, Segment(RPORT, LPORT, IRS + 1, ISS + 1, ACK, 512), 1000) == []
    conn = lst.accept()
    assert conn is not None and conn.state is State.ESTABLISHED

    # The application reads nothing. Each 1000-byte segment is ACKed at once
    # (quick-ACK mode at connection start); record the right edge each ACK offers.
    edges = []
    nxt = IRS + 1
    for i in range(4):
        acks = _feed(stack, Segment(RPORT, LPORT, nxt, ISS + 1, ACK, 512, 0, (), b"x" * 1000), 2000 + i)
        nxt += 1000
        assert acks and acks[-1].ack == nxt
        edges.append(acks[-1].ack + (acks[-1].window << ws))
    # SHLD-14: the right edge must never move left.
    assert edges == sorted(edges), f"right edges offered: {edges}"


# Fixed in TimeWait.from_connection (keeps the queue readable until close()): a regression test.
def test_unread_data_survives_entering_time_wait() -> None:
    cfg = Config(tcp_timestamps=0, tcp_sack=0, tcp_window_scaling=0)
    stack = Stack([LOCAL], cfg, isn=FixedIsn(ISS), seed=1, ts_offset=lambda key: 0)
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    stack.transmit()
    from_peer = Segment(RPORT, LPORT, IRS, ISS + 1, SYN | ACK, 65535, 0, (Opt(2, 1460),))
    _feed(stack, from_peer, 1000)
    assert conn.state is State.ESTABLISHED
    conn.shutdown(2000)  # half-close: our FIN goes out, we keep receiving
    assert [s.flags & FIN for s in (parse_ip_tcp(p)[2] for p in stack.transmit())] == [FIN]
    _feed(stack, Segment(RPORT, LPORT, IRS + 1, ISS + 2, ACK, 65535), 3000)
    assert conn.state is State.FIN_WAIT_2
    # The peer's last data and its FIN arrive before the application reads.
    _feed(stack, Segment(RPORT, LPORT, IRS + 1, ISS + 2, ACK | FIN, 65535, 0, (), b"last words"), 4000)
    assert conn.state is State.TIME_WAIT
    assert conn.recv(100, 5000) == b"last words"
    assert conn.recv(100, 5000) == b""
