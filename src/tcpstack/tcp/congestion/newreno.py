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
            # RFC 5681 (2) slow start, with appropriate byte counting L=2*SMSS (RFC 3465).
            self.cwnd += min(acked, 2 * self.mss)
        else:
            # RFC 5681 (3) congestion avoidance: about one SMSS per RTT, counted in bytes.
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += self.mss
