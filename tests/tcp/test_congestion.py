"""The congestion-control algorithms alone: events in, windows out (bytes)."""

from __future__ import annotations

import pytest

from tcpstack.tcp.congestion.cubic import Cubic
from tcpstack.tcp.congestion.newreno import NewReno

MSS = 1000


@pytest.mark.parametrize("algo", [NewReno, Cubic])
def test_slow_start_stops_at_ssthresh_and_the_rest_goes_to_avoidance(algo):
    cc = algo(MSS, 10, 0)
    cc.ssthresh = 10_500
    cc.on_ack(2 * MSS, 10 * MSS, 1_000, 50_000)
    # RFC 5681 slow start would add 2 MSS; it stops at ssthresh (Linux's
    # tcp_slow_start) and the 1,500 bytes left over count in congestion
    # avoidance, which grows far less than a segment on them.
    assert 10_500 <= cc.cwnd < 10_500 + MSS // 4, cc.cwnd
    assert not cc.in_slow_start


def test_newreno_avoidance_count_restarts_after_a_loss():
    cc = NewReno(MSS, 10, 0)
    cc.ssthresh = 10 * MSS  # congestion avoidance at 10 segments
    for _ in range(9):
        cc.on_ack(MSS, 10 * MSS, 1_000, 50_000)
    assert cc.cwnd == 10 * MSS and cc._ca_acc == 9 * MSS
    cc.on_enter_recovery(10 * MSS, 2_000)
    assert cc.ssthresh == 5 * MSS
    cc.on_exit_recovery(5 * MSS)
    assert cc.cwnd == 5 * MSS
    # 9 segments acked before the loss bought nothing on the halved window:
    # the next increase needs a full new window of ACKs (one MSS per RTT).
    for _ in range(4):
        cc.on_ack(MSS, 5 * MSS, 3_000, 50_000)
    assert cc.cwnd == 5 * MSS
    cc.on_ack(MSS, 5 * MSS, 3_000, 50_000)
    assert cc.cwnd == 6 * MSS


def test_newreno_avoidance_count_restarts_after_a_timeout():
    cc = NewReno(MSS, 10, 0)
    cc.ssthresh = 10 * MSS
    for _ in range(9):
        cc.on_ack(MSS, 10 * MSS, 1_000, 50_000)
    cc.on_rto(10 * MSS, 2_000)
    assert cc.cwnd == MSS and cc.ssthresh == 5 * MSS and cc._ca_acc == 0


@pytest.mark.parametrize("algo", [NewReno, Cubic])
def test_slow_start_counts_a_stretch_ack_in_full(algo):
    # A receiver with GRO (Linux) ACKs ~16 segments at once; Linux's slow start
    # grows by all of them (no RFC 3465 L = 2*SMSS cap), else the window crawls.
    cc = algo(MSS, 10, 0)
    cc.on_ack(16 * MSS, 10 * MSS, 1_000, 0)
    assert cc.cwnd == 26 * MSS
