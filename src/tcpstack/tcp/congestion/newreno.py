"""NewReno: RFC 5681 slow start and congestion avoidance, RFC 6582 recovery."""

from __future__ import annotations

from .base import CongestionControl


class NewReno(CongestionControl):
    name = "newreno"
    __slots__ = ("_ca_acc",)

    def __init__(self, mss: int, init_cwnd_segments: int, now: int) -> None:
        super().__init__(mss, init_cwnd_segments, now)
        self._ca_acc = 0  # bytes acked since the last congestion-avoidance increase

    def on_ack(self, acked: int, flight: int, now: int, rtt_us: int) -> None:
        if self.cwnd < self.ssthresh:
            acked = self._slow_start(acked)
            if acked <= 0:
                return
        # RFC 5681 (3) congestion avoidance: about one SMSS per RTT, counted in bytes.
        self._ca_acc += acked
        if self._ca_acc >= self.cwnd:
            self._ca_acc -= self.cwnd
            self.cwnd += self.mss

    # A congestion signal restarts the congestion-avoidance count (Linux zeroes
    # snd_cwnd_cnt in tcp_init_cwnd_reduction and tcp_enter_loss): bytes acked
    # against the old, larger window must not buy increments on the new one.
    def on_enter_recovery(self, flight: int, now: int) -> None:
        super().on_enter_recovery(flight, now)
        self._ca_acc = 0

    def on_rto(self, flight: int, now: int) -> None:
        super().on_rto(flight, now)
        self._ca_acc = 0

    def on_cwnd_reduction(self, flight: int, now: int) -> None:
        super().on_cwnd_reduction(flight, now)
        self._ca_acc = 0
