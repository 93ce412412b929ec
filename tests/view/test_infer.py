"""State inference and connection splitting on crafted captures: the cases a kernel run rarely shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpstack.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter
from tcpstack.view.infer import CLIENT, SERVER, load, rows_for_connection
from tcpstack.view.ladder import render_text
from tcpstack.wire.ip import build_ip_tcp
from tcpstack.wire.tcp import Segment

from .crafted import ACK, FIN, PSH, RST, SYN, Conv

EST = "ESTABLISHED"


def states(path: Path, n: int = 0) -> tuple[list[str], list[str]]:
    _cap, conns = load(path)
    c = conns[n]
    return c.state_sequence(CLIENT), c.state_sequence(SERVER)


def test_client_closes_first(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    cv.c(20, ACK | PSH, 1, 1, data=100)
    cv.s(30, ACK, 1, 101)
    cv.c(40, ACK | FIN, 101, 1)  # client: FIN-WAIT-1
    cv.s(50, ACK, 1, 102)  # server got it (CLOSE-WAIT); client: FIN-WAIT-2
    cv.s(60, ACK | FIN, 1, 102)  # server: LAST-ACK
    cv.c(70, ACK, 102, 2)  # client: TIME-WAIT; server: CLOSED
    client, server = states(cv.write(tmp_path / "c.pcap"))
    assert client == ["CLOSED", "SYN-SENT", EST, "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
    assert server == ["LISTEN", "SYN-RECEIVED", EST, "CLOSE-WAIT", "LAST-ACK", "CLOSED"]


def test_fin_ack_that_acknowledges_the_fin_goes_through_fin_wait_2(tmp_path: Path) -> None:
    """RFC 9293 §3.10.7.4: the ACK is processed (FIN-WAIT-2) before the FIN (TIME-WAIT)."""
    cv = Conv()
    cv.handshake()
    cv.c(40, ACK | FIN, 1, 1)
    cv.s(50, ACK | FIN, 1, 2)  # server closes at once: its FIN,ACK acknowledges ours
    cv.c(60, ACK, 2, 2)
    client, server = states(cv.write(tmp_path / "c.pcap"))
    assert client == ["CLOSED", "SYN-SENT", EST, "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
    assert server == ["LISTEN", "SYN-RECEIVED", EST, "CLOSE-WAIT", "LAST-ACK", "CLOSED"]


def test_simultaneous_close_goes_through_closing(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    cv.c(40, ACK | FIN, 1, 1)
    cv.s(40.1, ACK | FIN, 1, 1)  # crossed: does not acknowledge the client's FIN
    cv.c(50, ACK, 2, 2)  # client acknowledges the server's FIN while in FIN-WAIT-1
    cv.s(50.1, ACK, 2, 2)
    client, server = states(cv.write(tmp_path / "c.pcap"))
    assert client == ["CLOSED", "SYN-SENT", EST, "FIN-WAIT-1", "CLOSING", "TIME-WAIT"]
    # The capture shows the server's FIN acknowledged before it acknowledged ours.
    assert server == ["LISTEN", "SYN-RECEIVED", EST, "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]


def test_fin_lost_after_the_capture_point_is_not_taken_as_received(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    cv.c(40, ACK | FIN, 1, 1)  # lost on the way
    cv.c(300, ACK | FIN, 1, 1)  # retransmitted
    cv.s(310, ACK, 1, 2)
    _cap, (conn,) = load(cv.write(tmp_path / "c.pcap"))
    close_wait = next(c for c in conn.states if c.state == "CLOSE-WAIT")
    assert close_wait.frame == 6 and close_wait.side == SERVER
    assert [e.kind for e in conn.segments[4].expert] == ["retransmission"]


def test_mid_connection_capture_starts_established(tmp_path: Path) -> None:
    cv = Conv(client=("198.18.0.1", 51000), server=("198.18.0.2", 443))
    cv.s(0, ACK | PSH, 1001, 201, data=500)  # the first packet is the server's
    cv.c(1, ACK, 201, 1501)
    cv.c(5, ACK | FIN, 201, 1501)
    cv.s(6, ACK | FIN, 1501, 202)
    cv.c(7, ACK, 202, 1502)
    _cap, (conn,) = load(cv.write(tmp_path / "mid.pcap"))
    assert not conn.handshake_seen
    assert conn.client == ("198.18.0.1", 51000)  # the higher port, not the first sender
    assert conn.state_sequence(CLIENT) == [EST, "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
    assert conn.state_sequence(SERVER) == [EST, "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    assert conn.states[0].cause == "capture starts mid-connection"
    # Relative numbers count from the first byte seen, as Wireshark's do.
    assert conn.as_dict()["segments"][0]["seq"] == 1
    assert conn.capture_point == "unknown" and conn.rtt_us is None


def test_capture_missing_the_syn_starts_in_syn_sent(tmp_path: Path) -> None:
    cv = Conv()
    cv.s(10, SYN | ACK, 0, 1, options=cv.syn_options())
    cv.c(10, ACK, 1, 1)
    client, server = states(cv.write(tmp_path / "c.pcap"))
    assert client == ["SYN-SENT", EST]
    assert server == ["LISTEN", "SYN-RECEIVED", EST]


def test_refused_connection_has_no_listener(tmp_path: Path) -> None:
    cv = Conv()
    cv.c(0, SYN, 0, win=64240, options=cv.syn_options())
    cv.s(0.1, RST | ACK, 0, 1, win=0)
    _cap, (conn,) = load(cv.write(tmp_path / "c.pcap"))
    assert conn.state_sequence(CLIENT) == ["CLOSED", "SYN-SENT", "CLOSED"]
    assert conn.state_sequence(SERVER) == ["CLOSED"]
    assert conn.states[1].cause == "no listener: answered the SYN with RST"


def test_rst_in_syn_received_returns_the_server_to_listen(tmp_path: Path) -> None:
    """RFC 9293 §3.10.7.4: a passive open that gets a RST goes back to LISTEN."""
    cv = Conv()
    cv.c(0, SYN, 0, win=64240, options=cv.syn_options())
    cv.s(10, SYN | ACK, 0, 1, options=cv.syn_options())
    cv.c(20, RST, 1)
    client, server = states(cv.write(tmp_path / "c.pcap"))
    assert client == ["CLOSED", "SYN-SENT", EST, "CLOSED"]
    assert server == ["LISTEN", "SYN-RECEIVED", "LISTEN"]


def test_out_of_window_rst_is_not_acceptable(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    cv.c(20, ACK | PSH, 1, 1, data=100)
    cv.s(30, RST, 0x4000_0000)  # a blind RST far outside anything sent
    _cap, (conn,) = load(cv.write(tmp_path / "c.pcap"))
    assert conn.state_sequence(CLIENT)[-1] == EST
    assert conn.state_sequence(SERVER)[-1] == "CLOSED"  # its sender aborted, whatever it was


def test_retransmitted_syn_is_the_same_connection_and_port_reuse_a_new_one(tmp_path: Path) -> None:
    cv = Conv()
    cv.c(0, SYN, 0, win=64240, options=cv.syn_options())
    cv.c(1000, SYN, 0, win=64240, options=cv.syn_options())  # retransmitted SYN
    cv.s(1010, SYN | ACK, 0, 1, options=cv.syn_options())
    cv.c(1020, ACK | FIN, 1, 1)
    cv.s(1030, ACK | FIN, 1, 2)
    cv.c(1040, ACK, 2, 2)
    first = cv.packets[:]
    cv2 = Conv(isn_c=777_000, isn_s=999_000)  # the same 4-tuple, new ISNs
    cv2.handshake(t_ms=5000)
    cv2.c(5030, RST | ACK, 1, 1)
    with PcapWriter(tmp_path / "reuse.pcap") as w:
        for t, p in first + cv2.packets:
            w.write(t, p)
    _cap, conns = load(tmp_path / "reuse.pcap")
    assert [c.index for c in conns] == [1, 2]
    assert len(conns[0].segments) == 6 and len(conns[1].segments) == 4
    assert [e.kind for e in conns[0].segments[1].expert] == ["retransmission"]
    assert conns[0].state_sequence(CLIENT)[-1] == "TIME-WAIT"
    assert conns[1].state_sequence(CLIENT) == ["CLOSED", "SYN-SENT", EST, "CLOSED"]
    assert conns[1].isn[CLIENT] == 777_000


def test_truncated_and_pre_tso_packets_keep_their_lengths(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    cv.c(20, ACK | PSH, 1, 1, data=3000)
    cv.s(30, ACK, 1, 3001)
    path = tmp_path / "snap.pcap"
    with PcapWriter(path, snaplen=80) as w:  # like tcpdump -s 80
        for t, p in cv.packets:
            w.write(t, p)
    _cap, (conn,) = load(path)
    data = conn.segments[3]
    assert len(data.seg.payload) == 3000 and data.truncated
    assert conn.as_dict()["segments"][3]["truncated"] is True
    # A capture on the sender before segmentation offload: IPv4 total length 0.
    t, pkt = cv.packets[3]
    tso = pkt[:2] + b"\x00\x00" + pkt[4:]
    with PcapWriter(tmp_path / "tso.pcap") as w:
        w.write(t, tso)
    cap, (conn,) = load(tmp_path / "tso.pcap")
    assert len(conn.segments[0].seg.payload) == 3000


def test_non_tcp_and_malformed_packets_are_counted_not_fatal(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    udp = bytes.fromhex("4500001c000100004011") + b"\x00\x00" + bytes([198, 18, 0, 1, 198, 18, 0, 2]) + bytes(8)
    with PcapWriter(tmp_path / "mixed.pcap") as w:
        w.write(cv.packets[0][0], udp)
        w.write(cv.packets[0][0], b"\x45" + bytes(10))  # garbage
        for t, p in cv.packets:
            w.write(t, p)
    cap, conns = load(tmp_path / "mixed.pcap")
    assert cap.ip_packets == 5 and len(cap.packets) == 3
    assert cap.skipped == {"not TCP: protocol 17 (UDP)": 1,
                           "malformed: truncated IPv4 header: 11 bytes, need 20": 1}
    assert len(conns) == 1


def test_ipv6_and_ethernet(tmp_path: Path) -> None:
    cv = Conv(client=("2001:2::1", 40000), server=("2001:2::2", 80))
    cv.handshake()
    cv.c(20, ACK | FIN, 1, 1)
    cv.s(30, ACK | FIN, 1, 2)
    cv.c(40, ACK, 2, 2)
    path = tmp_path / "v6.pcap"
    with PcapWriter(path, linktype=LINKTYPE_ETHERNET) as w:
        for t, p in cv.packets:
            w.write(t, bytes(12) + b"\x86\xdd" + p)
    _cap, (conn,) = load(path)
    assert conn.client == ("2001:2::1", 40000)
    assert conn.as_dict()["client"] == "[2001:2::1]:40000"
    assert conn.state_sequence(SERVER)[-1] == "CLOSED"


def test_two_capture_points_give_send_and_receive_times(tmp_path: Path) -> None:
    """Each packet seen at the sender and again 5 ms later at the receiver."""
    cv = Conv()
    cv.handshake(rtt_ms=10)
    cv.c(20, ACK | FIN, 1, 1)
    cv.s(30, ACK | FIN, 1, 2)
    cv.c(40, ACK, 2, 2)
    both = sorted([(t, p) for t, p in cv.packets] + [(t + 5000, p) for t, p in cv.packets],
                  key=lambda x: x[0])
    with PcapWriter(tmp_path / "two.pcap", linktype=LINKTYPE_RAW) as w:
        for t, p in both:
            w.write(t, p)
    cap, (conn,) = load(tmp_path / "two.pcap")
    assert cap.merged == 6 and len(conn.segments) == 6
    assert all(s.recv_time == s.time + 5000 for s in conn.segments)
    # The receiver's transitions happen at the receive time.
    fw2 = next(c for c in conn.states if c.state == "FIN-WAIT-2")
    assert fw2.time == conn.segments[4].recv_time


def test_copies_without_ip_id_or_timestamps_are_not_merged(tmp_path: Path) -> None:
    """Without an IP ID or TS option a copy cannot be told from a retransmission."""
    seg = Segment(40000, 80, 1, 0, SYN, 1000)
    pkt = build_ip_tcp("198.18.0.1", "198.18.0.2", seg, ident=0)
    with PcapWriter(tmp_path / "syn2.pcap") as w:
        w.write(0, pkt)
        w.write(1000, pkt)
    cap, (conn,) = load(tmp_path / "syn2.pcap")
    assert cap.merged == 0 and len(conn.segments) == 2


def test_capture_point_and_delays_from_the_handshake(tmp_path: Path) -> None:
    cv = Conv()
    cv.c(0, SYN, 0, win=64240, options=cv.syn_options())
    cv.s(30, SYN | ACK, 0, 1, options=cv.syn_options())  # 30 ms to the server and back
    cv.c(30.2, ACK, 1, 1)  # the client answers at once: we are next to it
    _cap, (conn,) = load(cv.write(tmp_path / "c.pcap"))
    assert conn.capture_point == "client"
    assert conn.rtt_us == 30_200
    assert conn.delay_to == (100, 15_000)
    send, recv, measured = conn.timing()[0]
    assert (send, recv, measured) == (conn.segments[0].time - 100, conn.segments[0].time + 15_000, False)


def test_ladder_rows_put_sender_states_before_and_receiver_states_after(tmp_path: Path) -> None:
    cv = Conv()
    cv.handshake()
    cv.c(40, ACK | FIN, 1, 1)
    cv.s(50, ACK | FIN, 1, 2)
    cv.c(60, ACK, 2, 2)
    _cap, (conn,) = load(cv.write(tmp_path / "c.pcap"))
    rows = rows_for_connection(conn)
    kinds = [(r.kind, r.side, r.text.split()[0]) for r in rows]
    i = kinds.index(("seg", SERVER, "[F.]"))
    # CLOSE-WAIT and LAST-ACK (the server's, by sending) come before the arrow,
    # FIN-WAIT-2 (the client's, by receiving) after it.
    assert kinds[i - 2 : i] == [("state", SERVER, "CLOSE-WAIT"), ("state", SERVER, "LAST-ACK")]
    assert kinds[i + 1] == ("state", CLIENT, "FIN-WAIT-2")
    text = render_text(rows)
    assert "|<--" in text and "TIME-WAIT" in text
    assert [r.time for r in rows] == sorted(r.time for r in rows)


@pytest.mark.parametrize("absolute", [False, True])
def test_json_relative_and_absolute_numbers(tmp_path: Path, absolute: bool) -> None:
    cv = Conv(isn_c=4_294_967_000)  # wraps during the transfer
    cv.handshake()
    cv.c(20, ACK | PSH, 1, 1, data=1000)
    cv.s(30, ACK, 1, 1001)
    _cap, (conn,) = load(cv.write(tmp_path / "c.pcap"))
    segs = conn.as_dict(absolute=absolute)["segments"]
    if absolute:
        assert segs[3]["seq"] == (4_294_967_000 + 1) & 0xFFFFFFFF
        assert segs[4]["ack"] == (4_294_967_000 + 1001) & 0xFFFFFFFF
    else:
        assert (segs[3]["seq"], segs[4]["ack"]) == (1, 1001)


def test_simultaneous_open_is_one_connection(tmp_path: Path) -> None:
    """RFC 9293 §3.5 Figure 8: both ends send SYN, then SYN,ACK."""
    cv = Conv(client=("198.18.0.1", 5000), server=("198.18.0.2", 6000))
    cv.c(0, SYN, 0, win=64240, options=cv.syn_options())
    cv.s(0.1, SYN, 0, win=64240, options=cv.syn_options())
    cv.c(10, SYN | ACK, 0, 1, options=cv.syn_options())
    cv.s(10.1, SYN | ACK, 0, 1, options=cv.syn_options())
    cv.c(20, ACK | PSH, 1, 1, data=10)
    _cap, conns = load(cv.write(tmp_path / "simopen.pcap"))
    assert len(conns) == 1
    (conn,) = conns
    assert conn.state_sequence(CLIENT) == ["CLOSED", "SYN-SENT", "SYN-RECEIVED", EST]
    assert conn.state_sequence(SERVER) == ["CLOSED", "SYN-SENT", EST]


def test_timestamp_alone_merges_only_in_a_two_point_capture(tmp_path: Path) -> None:
    """A resend in the same timestamp tick (IP ID 0) is a resend; in a capture that
    IP IDs show was taken at two points, an ID-0 packet's copy is matched by its TS."""
    from tcpstack.wire.tcp import ts_opt

    def pkt(seq: int, flags: int, ident: int) -> bytes:
        seg = Segment(40000, 80, seq, 0, flags, 1000, 0, (ts_opt(7, 0),))
        return build_ip_tcp("198.18.0.1", "198.18.0.2", seg, ident=ident)

    with PcapWriter(tmp_path / "one.pcap") as w:
        w.write(0, pkt(1, SYN, 0))
        w.write(500, pkt(1, SYN, 0))  # resent within the same millisecond tick
    cap, (conn,) = load(tmp_path / "one.pcap")
    assert cap.merged == 0 and len(conn.segments) == 2

    with PcapWriter(tmp_path / "two.pcap") as w:
        w.write(0, pkt(1, SYN, 0))  # a SYN,ACK-like packet with ID 0 ...
        w.write(100, pkt(2, ACK, 11))
        w.write(200, pkt(3, ACK, 12))
        w.write(5000, pkt(1, SYN, 0))  # ... and the copies seen at the far end
        w.write(5100, pkt(2, ACK, 11))
        w.write(5200, pkt(3, ACK, 12))
    cap, (conn,) = load(tmp_path / "two.pcap")
    assert cap.merged == 3 and [s.recv_time for s in conn.segments] == [5000, 5100, 5200]
