"""The interface every congestion control algorithm implements.

cwnd and ssthresh are in bytes.  Events come from the connection's loss
detection (RFC 5681 / RFC 6582 / RFC 6675); the algorithm adjusts the windows.
"""

from __future__ import annotations

from ..config import shared_int

INFINITE_SSTHRESH = 0x7FFFFFFF


class CongestionControl:
    name = "base"
    __slots__ = ("mss", "cwnd", "ssthresh", "prior_cwnd")

    def __init__(self, mss: int, init_cwnd_segments: int, now: int) -> None:
        self.mss = mss
        # RFC 6928: IW = 10 segments (Linux's default); RFC 5681 (3.1) allows up to 4.
        self.cwnd = shared_int(init_cwnd_segments * mss)
        self.ssthresh = INFINITE_SSTHRESH
        self.prior_cwnd = self.cwnd

    def set_mss(self, mss: int, init_cwnd_segments: int) -> None:
        """The MSS became known (after the handshake)."""
        self.mss = mss
        self.cwnd = shared_int(init_cwnd_segments * mss)

    def _slow_start(self, acked: int) -> int:
        """RFC 5681 (2) with byte counting, as Linux's tcp_slow_start: cwnd grows
        by everything newly acknowledged (no RFC 3465 L = 2*SMSS cap, which would
        crawl behind a receiver's stretch ACKs: with GRO Linux ACKs ~16 segments
        at a time), stopping at ssthresh; returns the acked bytes left over for
        congestion avoidance."""
        grown = min(self.cwnd + acked, self.ssthresh)
        left = acked - (grown - self.cwnd)
        self.cwnd = grown
        return left

    # --- events -----------------------------------------------------------------
    def on_ack(self, acked: int, flight: int, now: int, rtt_us: int) -> None:
        """New data acknowledged outside recovery: grow the window."""
        raise NotImplementedError

    def ssthresh_on_loss(self, flight: int, now: int) -> int:
        """The new ssthresh after a congestion signal (RFC 5681 eq. 4)."""
        return max(flight // 2, 2 * self.mss)

    def on_enter_recovery(self, flight: int, now: int) -> None:
        """Fast retransmit (RFC 5681 §3.2 step 2, RFC 6582 §3.2 step 2)."""
        self.prior_cwnd = self.cwnd
        self.ssthresh = self.ssthresh_on_loss(flight, now)
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_dupack_in_recovery(self) -> None:
        """RFC 6582 §3.2 step 3: inflate by one segment per further duplicate ACK."""
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        """RFC 6582 §3.2 step 5: deflate by the amount acked, add back one MSS if >= MSS."""
        self.cwnd = max(self.cwnd - acked, self.mss)
        if acked >= self.mss:
            self.cwnd += self.mss

    def on_exit_recovery(self, flight: int) -> None:
        """RFC 6582 §3.2 step 4 (full ACK): cwnd <- min(ssthresh, max(FlightSize, MSS) + MSS)."""
        self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)

    def on_cwnd_reduction(self, flight: int, now: int) -> None:
        """A loss repaired without recovery (a tail loss probe, RFC 8985 §7.4.2):
        reduce once, as Linux's CWR state does, with no window inflation."""
        self.prior_cwnd = self.cwnd
        self.ssthresh = self.ssthresh_on_loss(flight, now)
        self.cwnd = self.ssthresh

    def on_rto(self, flight: int, now: int) -> None:
        """RFC 5681 (4) and §3.1: ssthresh from the flight, cwnd <- 1 segment (loss window)."""
        self.prior_cwnd = self.cwnd
        self.ssthresh = self.ssthresh_on_loss(flight, now)
        self.cwnd = self.mss

    def on_idle_restart(self, init_cwnd_segments: int) -> None:
        """RFC 5681 §4.1: after an idle period longer than RTO, restart from min(IW, cwnd)."""
        self.cwnd = min(self.cwnd, init_cwnd_segments * self.mss)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh
