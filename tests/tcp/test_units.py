"""Unit tests of the engine's small parts: sequence arithmetic, RTO, buffers, ISN, config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.tcp import seq
from tcpstack.tcp.config import Config
from tcpstack.tcp.isn import FixedIsn, Rfc6528Isn
from tcpstack.tcp.mib import Mib
from tcpstack.tcp.recvbuf import RecvBuffer
from tcpstack.tcp.rto import RtoEstimator
from tcpstack.tcp.sendbuf import SendBuffer
from tcpstack.tcp.state import LEGAL, TRANSITIONS, State, dot_diagram

U32 = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------ seq
def test_seq_comparisons_across_the_wrap():
    a, b = 0xFFFFFFF0, 0x00000010
    assert seq.lt(a, b) and seq.gt(b, a) and seq.le(a, b) and seq.ge(b, a)
    assert seq.diff(b, a) == 0x20 and seq.diff(a, b) == -0x20
    assert seq.add(a, 0x20) == b
    assert seq.in_window(0x5, a, 0x20) and not seq.in_window(b, a, 0x20)
    assert not seq.in_window(a, a, 0)


@given(U32, st.integers(1, 2**31 - 1))
def test_seq_add_then_compare(a, n):
    b = seq.add(a, n)
    assert seq.lt(a, b) and seq.gt(b, a) and seq.diff(b, a) == n
    assert not seq.lt(a, a) and seq.le(a, a)


# ------------------------------------------------------------------ RTO (RFC 6298)
def test_rto_first_sample_and_updates():
    r = RtoEstimator(1_000_000, 200_000, 120_000_000)
    assert r.rto == 1_000_000  # (2.1)
    r.sample(100_000)  # (2.2): SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR = 300 ms
    assert (r.srtt, r.rttvar, r.rto) == (100_000, 50_000, 300_000)
    r.sample(100_000)  # (2.3)
    assert r.srtt == 100_000 and r.rttvar == 37_500 and r.rto == 250_000


def test_rto_min_max_and_backoff():
    r = RtoEstimator(1_000_000, 200_000, 1_000_000)
    r.sample(1_000)
    assert r.rto == 200_000  # (2.4): rounded up to the minimum
    for _ in range(10):
        r.on_timeout()  # (5.5)
    assert r.rto == 1_000_000 and r.backoff == 10  # bounded by the maximum
    r.sample(1_000)
    assert r.backoff == 0 and r.rto == 200_000


# ------------------------------------------------------------------ buffers
def test_sendbuf_peek_across_chunks_and_ack():
    sb = SendBuffer(100_000)
    sb.write(b"a" * 3000)
    sb.write(b"b" * 3000)
    assert bytes(sb.peek(2990, 20)) == b"a" * 10 + b"b" * 10
    sb.ack(2995)
    assert sb.head == 2995 and len(sb) == 3005
    assert bytes(sb.peek(2995, 10)) == b"aaaaabbbbb"
    with pytest.raises(ValueError):
        sb.peek(0, 10)


def test_sendbuf_bounded_by_capacity():
    sb = SendBuffer(1000)
    assert sb.write(b"x" * 600) == 600
    assert sb.write(b"y" * 600) == 400
    assert sb.write(b"z") == 0


def test_sendbuf_copies_mutable_input():
    sb = SendBuffer(1000)
    buf = bytearray(b"hello")
    sb.write(buf)
    buf[:] = b"XXXXX"
    assert bytes(sb.peek(0, 5)) == b"hello"


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), max_size=60))
def test_recvbuf_reassembles_any_arrival_order(pieces):
    """Whatever order and overlap segments arrive in, in-order output is the stream."""
    stream = bytes(i % 251 for i in range(2300))
    rb = RecvBuffer(1 << 20)
    for off, n in pieces + [(0, 2300)]:
        rel = off - rb.nxt
        data = stream[off : off + n]
        if rel < 0:
            data = data[-rel:]
            rel = 0
        if data:
            rb.insert(rel, data)
    assert rb.read(10_000) == stream
    assert rb.ooo_bytes == 0


# ------------------------------------------------------------------ ISN (RFC 6528)
def test_isn_is_keyed_per_tuple_and_advances_with_time():
    g = Rfc6528Isn(b"k" * 32)
    k1 = ("198.18.0.1", 1000, "198.18.0.2", 80)
    k2 = ("198.18.0.1", 1001, "198.18.0.2", 80)
    assert g(k1, 0) != g(k2, 0)
    assert seq.diff(g(k1, 4_000_000), g(k1, 0)) == 1_000_000  # M: a 4 µs clock
    assert Rfc6528Isn(b"j" * 32)(k1, 0) != g(k1, 0)
    assert FixedIsn(2**32 + 5)(k1, 0) == 5


# ------------------------------------------------------------------ config and MIB
def test_config_accepts_sysctl_names_and_validates():
    c = Config()
    c.set("net.ipv4.tcp_syncookies", "2")
    c.set("tcp_rmem", "4096 65536 1048576")
    c.set("net.core.somaxconn", 1024)
    assert (c.tcp_syncookies, c.tcp_rmem, c.somaxconn) == (2, (4096, 65536, 1048576), 1024)
    with pytest.raises(KeyError, match="unknown tunable"):
        c.set("tcp_bogus", 1)
    with pytest.raises(ValueError, match="between 0 and 2"):
        c.set("tcp_syncookies", 3)
    with pytest.raises(ValueError, match="removed from Linux in 4.12"):
        c.set("net.ipv4.tcp_tw_recycle", 1)
    with pytest.raises(ValueError, match="integer"):
        c.set("tcp_sack", "yes")


def test_linux_defaults():
    c = Config()
    assert (c.tcp_syn_retries, c.tcp_synack_retries, c.tcp_fin_timeout, c.tcp_tw_reuse) == (6, 5, 60, 2)
    assert c.tcp_rto_min_us == 200_000 and c.tcp_rto_max_ms == 120_000
    assert c.ip_local_port_range == (32768, 60999) and c.tcp_congestion_control == "cubic"


def test_mib_names_match_nstat():
    m = Mib()
    m.InSegs += 3
    m.TCPChallengeACK += 1
    n = m.nstat()
    assert n["TcpInSegs"] == 3 and n["TcpExtTCPChallengeACK"] == 1 and "TcpExtListenOverflows" in n


# ------------------------------------------------------------------ states
def test_every_state_appears_in_the_transition_table():
    seen = {a for a, b in LEGAL} | {b for a, b in LEGAL}
    assert seen == set(State)
    assert len(TRANSITIONS) == len(LEGAL)


def test_state_diagram_in_docs_is_generated_from_the_table():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "state-diagram.dot"
    assert doc.read_text() == dot_diagram(), "run `make diagram` to regenerate docs/state-diagram.dot"
