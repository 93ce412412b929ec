"""CUBIC, RFC 9438 (Linux's default congestion control).

Windows are kept in segments (floats) for the cubic function, as the RFC
writes it, and exposed in bytes through ``cwnd``.  Time is in microseconds.
"""

from __future__ import annotations

from .base import CongestionControl

C = 0.4  # RFC 9438 §4.2: C = 0.4
BETA = 0.7  # RFC 9438 §4.6: beta_cubic = 0.7
# RFC 9438 §4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta) for the Reno-friendly region
ALPHA = 3.0 * (1.0 - BETA) / (1.0 + BETA)


class Cubic(CongestionControl):
    name = "cubic"
    __slots__ = ("w_max", "k", "epoch_start", "cwnd_epoch", "w_est", "_acc", "_last_max", "hystart")

    def __init__(self, mss: int, init_cwnd_segments: int, now: int) -> None:
        super().__init__(mss, init_cwnd_segments, now)
        self.w_max = 0.0  # segments, the window just before the last reduction
        self._last_max = 0.0
        self.k = 0.0  # seconds
        self.epoch_start: int | None = None
        self.cwnd_epoch = 0.0
        self.w_est = 0.0
        self._acc = 0
        # HyStart++ (RFC 9406): leave slow start when queueing delay appears, instead
        # of overshooting the path by a whole window (Linux's CUBIC does HyStart
        # too).  Only in the initial slow start (§4.3): its state is made on the
        # first RTT sample and dropped when it ends (an idle TCB carries none).
        self.hystart: _HyStart | bool = True

    def on_ack(self, acked: int, flight: int, now: int, rtt_us: int) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            # RFC 9438 §4.10: slow start as in RFC 5681 (with byte counting, L = 2).
            acked = self._slow_start(acked)
            if rtt_us > 0 and self.hystart:
                hs = self.hystart
                if not isinstance(hs, _HyStart):
                    hs = self.hystart = _HyStart(now)
                if hs.sample(now, rtt_us):
                    self.ssthresh = self.cwnd  # leave slow start: congestion avoidance from here
                    self.hystart = False
            if acked <= 0:
                return
        cwnd_seg = self.cwnd / mss
        if self.epoch_start is None:
            # §4.2: a new congestion-avoidance epoch starts.
            self.epoch_start = now
            self.cwnd_epoch = cwnd_seg
            self.w_est = cwnd_seg
            if self.w_max <= cwnd_seg:
                self.k = 0.0
                self.w_max = cwnd_seg
            else:
                # K = cubic_root((W_max - cwnd_epoch) / C)  (eq. 2)
                self.k = ((self.w_max - cwnd_seg) / C) ** (1.0 / 3.0)
        rtt = max(rtt_us, 1) / 1e6
        t = (now - self.epoch_start) / 1e6
        # W_cubic(t + RTT) = C * (t + RTT - K)^3 + W_max  (eq. 1), the target one RTT ahead (§4.2).
        target = C * (t + rtt - self.k) ** 3 + self.w_max
        if target < cwnd_seg:
            target = cwnd_seg
        elif target > 1.5 * cwnd_seg:
            target = 1.5 * cwnd_seg  # §4.4: at most 1.5x per RTT
        # §4.3 Reno-friendly region: W_est grows by alpha per RTT worth of acked
        # segments; where it exceeds W_cubic(t), cwnd is set to W_est.
        # RFC 9438 §4.3: alpha_cubic, then 1 once W_est has regained cwnd_prior
        # (the window when ssthresh was last set), to match Reno's increase rate.
        alpha = 1.0 if self.w_est * mss >= self.prior_cwnd else ALPHA
        self.w_est += alpha * (acked / mss) / cwnd_seg
        w_cubic_now = C * (t - self.k) ** 3 + self.w_max
        if self.w_est > w_cubic_now:
            if self.w_est > cwnd_seg:
                self.cwnd = int(self.w_est * mss)
            return
        # §4.4/4.5: concave/convex region: cwnd += (target - cwnd) / cwnd per acked segment.
        inc = (target - cwnd_seg) / cwnd_seg * (acked / mss)
        self._acc += int(inc * mss)
        if self._acc >= 1:
            self.cwnd += self._acc
            self._acc = 0

    def ssthresh_on_loss(self, flight: int, now: int) -> int:
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        # §4.7 fast convergence: release bandwidth when W_max keeps shrinking.
        if cwnd_seg < self._last_max:
            self.w_max = cwnd_seg * (1.0 + BETA) / 2.0
        else:
            self.w_max = cwnd_seg
        self._last_max = cwnd_seg
        self.epoch_start = None
        self.hystart = False
        # §4.6: ssthresh = cwnd * beta_cubic (flight size when the sender is app-limited)
        base = min(self.cwnd, max(flight, 2 * mss)) if flight else self.cwnd
        return max(int(base * BETA), 2 * mss)

    def on_enter_recovery(self, flight: int, now: int) -> None:
        self.prior_cwnd = self.cwnd
        self.ssthresh = self.ssthresh_on_loss(flight, now)
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_exit_recovery(self, flight: int) -> None:
        self.cwnd = self.ssthresh
        self.epoch_start = None

    def on_rto(self, flight: int, now: int) -> None:
        self.prior_cwnd = self.cwnd
        self.ssthresh = self.ssthresh_on_loss(flight, now)
        self.cwnd = self.mss
        self.epoch_start = None

    def on_idle_restart(self, init_cwnd_segments: int) -> None:
        super().on_idle_restart(init_cwnd_segments)
        self.epoch_start = None


class _HyStart:
    """RFC 9406 §4.2's per-round minimum RTTs, with rounds approximated by the
    minimum RTT: slow start should end once this round's minimum RTT exceeds the
    last round's by RttThresh = clamp(lastRoundMinRTT / 8, 4 ms, 16 ms) over
    >= 8 samples."""

    __slots__ = ("round_start", "last_round_min", "cur_round_min", "rtt_samples")

    def __init__(self, now: int) -> None:
        self.round_start = now
        self.last_round_min = 0
        self.cur_round_min = 0
        self.rtt_samples = 0

    def sample(self, now: int, rtt_us: int) -> bool:
        """Take one RTT sample; True when slow start should end."""
        if self.cur_round_min == 0 or rtt_us < self.cur_round_min:
            self.cur_round_min = rtt_us
        self.rtt_samples += 1
        last = self.last_round_min
        if now - self.round_start >= (last or rtt_us):
            self.last_round_min = self.cur_round_min
            self.cur_round_min = 0
            self.rtt_samples = 0
            self.round_start = now
            return False
        if last and self.rtt_samples >= 8:
            thresh = min(max(last // 8, 4_000), 16_000)
            return self.cur_round_min >= last + thresh
        return False
