"""Retransmission timeout estimator, RFC 6298.

Times are microseconds.  Linux departs from RFC 6298 in the minimum (200 ms
instead of 1 s, ``tcp_rto_min_us``) and we follow Linux, since it is the peer
everyone measures against.
"""

from __future__ import annotations

# RFC 6298 (2.3): alpha = 1/8, beta = 1/4, K = 4.
K = 4
# RFC 6298 §4: clock granularity G; our clock is in microseconds.
G_US = 1_000


class RtoEstimator:
    __slots__ = ("srtt", "rttvar", "rto", "bounds", "backoff", "samples", "min_rtt")

    def __init__(self, initial_us: int, min_us: int, max_us: int, bounds: tuple[int, int] | None = None) -> None:
        self.srtt: int = 0  # 0 = no measurement yet
        self.rttvar: int = 0
        # RFC 6298 (2.1): until a measurement is made, RTO <- 1 second.
        self.rto: int = initial_us
        # (min, max): one tuple, which a stack shares among its connections.
        self.bounds = bounds or (min_us, max_us)
        self.backoff = 0  # number of consecutive timeouts (5.5: RTO <- RTO * 2)
        self.samples = 0
        self.min_rtt = 0

    def sample(self, r: int) -> None:
        """Take one RTT measurement R (µs).  Karn's rule is the caller's job:
        RFC 6298 (3): never sample a retransmitted segment (unless timestamps
        disambiguate it)."""
        if r <= 0:
            r = 1
        if self.samples == 0:
            # (2.2) SRTT <- R, RTTVAR <- R/2
            self.srtt = r
            self.rttvar = r // 2
            self.min_rtt = r
        else:
            # (2.3) RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|; SRTT <- 7/8 SRTT + 1/8 R'
            self.rttvar = (3 * self.rttvar + abs(self.srtt - r)) // 4
            self.srtt = (7 * self.srtt + r) // 8
            if r < self.min_rtt:
                self.min_rtt = r
        self.samples += 1
        self.backoff = 0
        self._compute()

    @property
    def min_rto(self) -> int:
        return self.bounds[0]

    @property
    def max_rto(self) -> int:
        return self.bounds[1]

    def _compute(self) -> None:
        # (2.2)/(2.3) RTO <- SRTT + max(G, K*RTTVAR); (2.4) rounded up to the minimum; (2.5) max.
        rto = self.srtt + max(G_US, K * self.rttvar)
        lo, hi = self.bounds
        if rto < lo:
            rto = lo
        if rto > hi:
            rto = hi
        self.rto = rto

    def on_timeout(self) -> None:
        """(5.5) back off the timer: RTO <- RTO * 2, bounded by the maximum."""
        self.backoff += 1
        self.rto = min(self.rto * 2, self.bounds[1])

    def reset_backoff(self) -> None:
        """A new ACK arrived after a backoff: recompute from SRTT (RFC 6298 §5, note after 5.7)."""
        if self.backoff:
            self.backoff = 0
            if self.samples:
                self._compute()
