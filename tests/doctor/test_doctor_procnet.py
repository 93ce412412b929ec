"""Parsing of /proc text captured from the real kernel (6.18) by
capture_samples.py: tests/doctor/data/snapshot/net/{tcp,tcp6,netstat,snmp,sockstat}.

The scenario in the capture (one process, comm "tsd-sample", pid 6598):
IPv4 listener 0.0.0.0:8080 with one connection never accept()ed, dual-stack
IPv6 listener [::]:8443, two established IPv4 pairs (3 bytes unread on one
server side), two IPv6 connections the server closed first (client CLOSE-WAIT,
server orphaned FIN-WAIT-2), one IPv4 client of the IPv6 listener, three
client-side TIME-WAIT, one SYN-SENT to a black hole, one raw-SYN request sock.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tcpstack.doctor.procnet import (
    KERNEL_STATES,
    RFC9293_STATES,
    AddressDecoder,
    ProcFormatError,
    parse_mib_pairs,
    parse_sockstat,
    parse_sysctl_value,
    parse_tcp_table,
)

DATA = Path(__file__).parent / "data" / "snapshot"


def read(rel: str) -> str:
    return (DATA / rel).read_text()


@pytest.fixture(scope="module")
def tcp4():
    return parse_tcp_table(read("net/tcp"), 4, AddressDecoder(little_endian=True))


@pytest.fixture(scope="module")
def tcp6():
    return parse_tcp_table(read("net/tcp6"), 6, AddressDecoder(little_endian=True))


def test_tcp4_state_counts(tcp4):
    assert len(tcp4) == 13
    assert Counter(s.state for s in tcp4) == {
        "LISTEN": 1,
        "ESTABLISHED": 7,
        "SYN-SENT": 1,
        "TIME-WAIT": 3,
        "SYN-RECEIVED": 1,
    }


def test_tcp4_listener_line(tcp4):
    (lst,) = [s for s in tcp4 if s.state == "LISTEN"]
    assert (lst.local_addr, lst.local_port, lst.remote_addr, lst.remote_port) == (
        "0.0.0.0",
        8080,
        "0.0.0.0",
        0,
    )
    assert lst.state_code == 0x0A
    assert lst.recv_q == 1  # accept-queue length: the connection never accept()ed
    assert lst.send_q == 0
    assert lst.inode == 13957
    assert lst.uid == 0


def test_tcp4_request_sock_prints_as_syn_recv(tcp4):
    # get_openreq4() prints TCP_SYN_RECV (03), not TCP_NEW_SYN_RECV (0C), and inode 0.
    (req,) = [s for s in tcp4 if s.state == "SYN-RECEIVED"]
    assert req.state_code == 0x03
    assert (req.local_addr, req.local_port) == ("198.18.0.1", 8080)
    assert (req.remote_addr, req.remote_port) == ("198.18.0.99", 40000)
    assert req.inode == 0


def test_tcp4_time_wait_has_no_inode(tcp4):
    tw = [s for s in tcp4 if s.state == "TIME-WAIT"]
    assert sorted(s.local_port for s in tw) == [0xD03E, 0xD04E, 0xD058]
    assert all(s.inode == 0 and s.remote_port == 8080 for s in tw)


def test_tcp4_queues(tcp4):
    unread = [s for s in tcp4 if s.recv_q and s.state == "ESTABLISHED"]
    assert [(s.local_port, s.remote_port, s.recv_q, s.inode) for s in unread] == [
        (8080, 0xD02A, 3, 13960)
    ]
    (syn_sent,) = [s for s in tcp4 if s.state == "SYN-SENT"]
    assert (syn_sent.remote_addr, syn_sent.remote_port, syn_sent.send_q) == ("198.18.0.99", 9, 1)
    # the accepted-by-nobody server side: ESTABLISHED but no file yet
    assert [s.remote_port for s in tcp4 if s.state == "ESTABLISHED" and s.inode == 0] == [0xD062]


def test_tcp6_addresses_and_states(tcp6):
    assert Counter(s.state for s in tcp6) == {
        "LISTEN": 1,
        "FIN-WAIT-2": 2,
        "CLOSE-WAIT": 2,
        "ESTABLISHED": 1,
    }
    (lst,) = [s for s in tcp6 if s.state == "LISTEN"]
    assert (lst.local_addr, lst.local_port, lst.family) == ("::", 8443, 6)
    cw = sorted(
        (s.local_addr, s.local_port, s.remote_addr, s.remote_port, s.recv_q)
        for s in tcp6
        if s.state == "CLOSE-WAIT"
    )
    assert cw == [("::1", 42244, "::1", 8443, 1), ("::1", 42252, "::1", 8443, 1)]
    (mapped,) = [s for s in tcp6 if s.state == "ESTABLISHED"]
    assert (mapped.local_addr, mapped.remote_addr, mapped.remote_port) == (
        "::ffff:127.0.0.1",
        "::ffff:127.0.0.1",
        0xA9F2,
    )
    assert all(s.inode == 0 for s in tcp6 if s.state == "FIN-WAIT-2")  # orphans


def test_address_decoder_byte_order():
    little = AddressDecoder(little_endian=True)
    big = AddressDecoder(little_endian=False)
    assert little("0100007F") == "127.0.0.1"
    assert big("7F000001") == "127.0.0.1"
    assert little("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert big("00000000000000000000FFFF7F000001") == "::ffff:127.0.0.1"
    assert little("B80D0120000000000000000001000000") == "2001:db8::1"
    with pytest.raises(ProcFormatError):
        little("0100007")
    with pytest.raises(ProcFormatError):
        little("01000000FF")


def test_state_table_covers_kernel_codes():
    assert set(KERNEL_STATES.values()) == set(RFC9293_STATES)
    assert KERNEL_STATES[0x0C] == "SYN-RECEIVED"  # TCP_NEW_SYN_RECV


def test_new_syn_recv_and_unknown_codes():
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 0100007F:9C40 0C 00000000:00000000 01:00000047 00000002     0        0 0 0 0\n"
        "   1: 0100007F:1F91 0100007F:9C41 0D 00000000:00000000 00:00000000 00000000  1000        0 42 1 0\n"
    )
    a, b = parse_tcp_table(text, 4)
    assert (a.state, a.retransmits) == ("SYN-RECEIVED", 2)
    assert (b.state, b.uid, b.inode) == ("UNKNOWN-0x0D", 1000, 42)


def test_parse_tolerates_header_only_and_blank_lines():
    assert parse_tcp_table("  sl  local_address rem_address   st\n", 4) == []
    assert parse_tcp_table("", 4) == []
    one = (
        "   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 7 1 0\n\n"
    )
    assert [s.local_port for s in parse_tcp_table(one, 4)] == [22]


def test_parse_rejects_malformed_lines():
    with pytest.raises(ProcFormatError, match="line 1"):
        parse_tcp_table("   0: 0100007F:0016 00000000:0000 0A\n", 4)
    with pytest.raises(ProcFormatError):
        parse_tcp_table("   0: 0100007F:0016 00000000:0000 ZZ 0:0 0:0 0 0 0 7\n", 4)


def test_netstat_and_snmp_counters():
    netstat = parse_mib_pairs(read("net/netstat"))
    snmp = parse_mib_pairs(read("net/snmp"))
    assert {"TcpExt", "IpExt", "MPTcpExt"} <= set(netstat)
    ext = netstat["TcpExt"]
    assert ext["TW"] == 5  # 3 TIME-WAIT + 2 FIN-WAIT-2 timewait mini-sockets
    assert ext["ListenOverflows"] == 0 and ext["SyncookiesSent"] == 0
    assert "TCPTimeWaitOverflow" in ext and "TCPAbortOnTimeout" in ext
    tcp = snmp["Tcp"]
    assert (tcp["ActiveOpens"], tcp["PassiveOpens"], tcp["CurrEstab"]) == (10, 9, 10)
    assert (tcp["InSegs"], tcp["OutSegs"], tcp["RetransSegs"]) == (45, 44, 0)
    assert tcp["MaxConn"] == -1
    assert set(snmp) == {"Ip", "Icmp", "Tcp", "Udp", "UdpLite"}


def test_mib_pairs_resynchronises_after_truncation():
    text = "TcpExt: A B\nTcpExt: 1 2\nTcp: X Y\nIpExt: P\nIpExt: 7\n"
    assert parse_mib_pairs(text) == {"TcpExt": {"A": 1, "B": 2}, "IpExt": {"P": 7}}


def test_sockstat():
    st = parse_sockstat(read("net/sockstat"))
    assert st["TCP"] == {"inuse": 9, "orphan": 0, "tw": 5, "alloc": 14, "mem": 14}
    assert st["sockets"] == {"used": 14}


def test_sysctl_values():
    assert parse_sysctl_value(read("sys/net/ipv4/ip_local_port_range")) == [32768, 60999]
    assert parse_sysctl_value(read("sys/net/ipv4/tcp_rmem")) == [4096, 131072, 33554432]
    assert parse_sysctl_value(read("sys/net/ipv4/tcp_tw_reuse")) == 2
    assert parse_sysctl_value("cubic\n") == "cubic"
