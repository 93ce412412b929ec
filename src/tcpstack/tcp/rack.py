"""RACK loss detection (RFC 8985 §6) over a per-transmission log.

``Rack`` is the sender's scoreboard (``sack.Scoreboard``: what the peer
SACKed) together with what Linux keeps per skb for RACK: each transmission
unit's end offset, its latest transmission time, and two marks (retransmitted,
lost and not yet retransmitted).  Units are kept in stream-offset order as two
``array('q')``: ``rec_end`` (end offset; a unit starts where the previous one
ends, the first at ``base``, the cumulative-ACK point) and ``rec_ts`` (time in
µs shifted left by two, the marks in the low bits).  Sending new data is two
appends; a cumulative ACK deletes a prefix.  A GSO super-segment is one unit
covering several MSS, as one skb is on Linux; a retransmission that covers
part of a unit splits it (Linux's tcp_fragment).

Time order is implicit: first transmissions are appended in time order, so
above ``rtx_hi`` (the highest offset ever retransmitted) the units are sorted
by (time, end) and a scan can stop at the first one sent after the RACK
segment, as Linux's scan of its tsorted_sent_queue does.

The connection owns the policy (when to detect, entering recovery, the
reordering window, the timer); this module only keeps the log and applies
RFC 8985 §6.2's steps to it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

from .sack import Scoreboard

RETRANS = 1  # the unit's latest transmission is (or an earlier one was) a retransmission
LOST = 2  # RACK marked it lost and it has not been retransmitted since
SHIFT = 2
PERSIST_RECOVERIES = 16  # RFC 8985 §6.2 step 4: reo_wnd_mult persists for 16 recoveries


class Rack(Scoreboard):
    __slots__ = (
        "base", "rec_end", "rec_ts", "rtx_hi", "nlost",
        # RFC 8985 §6.1: RACK.xmit_ts, RACK.end_seq (an offset), RACK.rtt
        "xmit_ts", "end", "rtt", "advanced",
        # RACK.reordering_seen, RACK.reo_wnd_mult, RACK.reo_wnd_persist, RACK.dsack_round, a D-SACK arrived
        "reord", "mult", "persist", "dsack_round", "dsack",
    )
    is_rack = True

    def __init__(self, base: int) -> None:
        super().__init__()
        self.base = base
        self.rec_end = array("q")
        self.rec_ts = array("q")
        self.rtx_hi = base
        self.nlost = 0
        self.xmit_ts = -1
        self.end = 0
        self.rtt = 0
        self.advanced = False
        self.reord = False
        self.mult = 1
        self.persist = 0
        self.dsack_round: int | None = None
        self.dsack = False

    @property
    def pristine(self) -> bool:
        """Nothing here outlives the flight: the connection may drop this object
        when everything is acknowledged (an idle TCB keeps no log)."""
        return not self.reord and self.mult == 1 and not self.persist and self.dsack_round is None

    def clear(self) -> None:
        """An RTO (RFC 2018 §8: SACK information is not trusted after it): forget
        the SACKs and the lost marks; everything is resent from SND.UNA."""
        super().clear()
        ts = self.rec_ts
        if self.nlost:
            for i in range(len(ts)):
                ts[i] &= ~LOST
        self.nlost = 0

    # -- the log -------------------------------------------------------------------
    def _split(self, off: int) -> None:
        """Make ``off`` a unit boundary (Linux's tcp_fragment)."""
        ends = self.rec_end
        if off <= self.base or not ends or off >= ends[-1]:
            return
        i = bisect_left(ends, off)
        if ends[i] == off:
            return
        t = self.rec_ts[i]
        ends.insert(i, off)
        self.rec_ts.insert(i, t)
        if t & LOST:
            self.nlost += 1

    def retransmitted(self, s: int, e: int, now: int) -> None:
        """[s, e) was sent again at ``now``: its units take the new time (as Linux
        moves the skb to the tail of the time-sorted queue), lose the lost mark."""
        if e <= self.base:
            return
        if s < self.base:
            s = self.base
        self._split(s)
        self._split(e)
        ends, ts = self.rec_end, self.rec_ts
        stamp = now << SHIFT | RETRANS
        i = bisect_right(ends, s)
        n = len(ends)
        while i < n:
            if ts[i] & LOST:
                self.nlost -= 1
            ts[i] = stamp
            if ends[i] >= e:
                break
            i += 1
        if e > self.rtx_hi:
            self.rtx_hi = e

    # -- RACK_update (RFC 8985 §6.2 steps 1-3) --------------------------------------
    def _deliver(self, t: int, end: int, now: int, min_rtt: int) -> None:
        ts = t >> SHIFT
        rtt = now - ts
        if t & RETRANS and rtt < min_rtt:
            return  # step 2: this ACK is probably for the original transmission
        self.advanced = True
        if ts > self.xmit_ts or (ts == self.xmit_ts and end > self.end):
            self.xmit_ts, self.end, self.rtt = ts, end, rtt

    def acked(self, head: int, now: int, min_rtt: int) -> bool:
        """The cumulative ACK moved to ``head`` (before the scoreboard forgets what
        lies below it): RACK_update with the newly delivered units, reordering
        (step 3: a never-retransmitted unit delivered below the highest SACKed
        byte; returns True when this first shows it), and the log loses its
        acknowledged prefix."""
        base = self.base
        reord = False
        if head <= base:
            return False
        ends, ts = self.rec_end, self.rec_ts
        n = len(ends)
        k = bisect_right(ends, head)  # units fully acknowledged
        m = k + 1 if k < n else k  # and the one the ACK ends in, if any
        if m:
            if self.rtx_hi > base:
                best = max(ts[:m])
                i = ts.index(best)
            else:
                i = m - 1
                best = ts[i]
            self._deliver(best, min(ends[i], head), now, min_rtt)
            if self.starts and not self.reord:
                sstarts, sends = self.starts, self.ends
                nsb = len(sstarts)
                high = sends[-1]
                j = 0
                s = base
                for x in range(m):
                    if s >= high or s >= head:
                        break
                    while j < nsb and sends[j] <= s:
                        j += 1
                    if not ts[x] & RETRANS and not (j < nsb and sstarts[j] <= s):
                        self.reord = reord = True  # a hole filled by its original transmission
                        break
                    s = ends[x]
        if k:
            if self.nlost:
                for x in range(k):
                    if ts[x] & LOST:
                        self.nlost -= 1
            del ends[:k]
            del ts[:k]
        self.base = head
        return reord

    def sacked_range(self, s: int, e: int, now: int, min_rtt: int, prior_high: int) -> bool:
        """[s, e) was newly SACKed: RACK_update with the units in it.  Returns
        True if this shows reordering (step 3)."""
        ends, ts = self.rec_end, self.rec_ts
        i = bisect_right(ends, s)
        n = len(ends)
        best = -1
        bx = bend = 0
        reord = False
        while i < n:
            t = ts[i]
            start = ends[i - 1] if i else self.base
            if start >= e:
                break
            end = ends[i] if ends[i] < e else e
            x = t >> SHIFT
            if best < 0 or x > bx or (x == bx and end > bend):
                best, bx, bend = t, x, end
            if not t & RETRANS and end <= prior_high:
                reord = True
            i += 1
        if best >= 0:
            self._deliver(best, bend, now, min_rtt)
        if reord and not self.reord:
            self.reord = True
            return True
        return False

    # -- RACK_detect_loss (RFC 8985 §6.2 step 5) ---------------------------------------
    def detect(self, now: int, reo_wnd: int) -> tuple[int, int, int]:
        """Mark lost every unit, neither SACKed nor already marked, sent before
        the RACK segment and older than RACK.rtt + reo_wnd.  Returns (units newly
        marked, of which retransmissions, µs until the next one would be old
        enough (0: none waiting))."""
        self.advanced = False
        rack_ts, rack_end = self.xmit_ts, self.end
        if rack_ts < 0:
            return 0, 0, 0
        wait = self.rtt + reo_wnd
        ends, ts = self.rec_end, self.rec_ts
        sstarts, sends = self.starts, self.ends
        nsb = len(sstarts)
        rtx_hi = self.rtx_hi
        j = 0
        s = self.base
        new = lost_rtx = 0
        timeout = 0
        for i in range(len(ends)):
            e = ends[i]
            u = s  # the first byte of the unit not SACKed
            while j < nsb and sends[j] <= u:
                j += 1
            if j < nsb and sstarts[j] <= u:
                u = sends[j]
            if u >= e:
                s = e
                continue  # SACKed
            t = ts[i]
            x = t >> SHIFT
            if x > rack_ts or (x == rack_ts and u >= rack_end):
                if s >= rtx_hi:
                    break  # sorted by time from here: the rest were sent later still
                s = e
                continue
            s = e
            if t & LOST:
                continue  # marked, waiting for its retransmission
            remaining = x + wait - now
            if remaining <= 0:
                ts[i] = t | LOST
                new += 1
                if t & RETRANS:
                    lost_rtx += 1
            elif remaining > timeout:
                timeout = remaining
        self.nlost += new
        return new, lost_rtx, timeout

    def lost_ranges(self) -> list[tuple[int, int]]:
        """The un-SACKed parts of the units marked lost, lowest first (what NextSeg
        retransmits); units found SACKed meanwhile lose their mark."""
        out: list[tuple[int, int]] = []
        if not self.nlost:
            return out
        ends, ts = self.rec_end, self.rec_ts
        sstarts, sends = self.starts, self.ends
        nsb = len(sstarts)
        j = 0
        s = self.base
        found = 0
        nlost = self.nlost
        for i in range(len(ends)):
            e = ends[i]
            t = ts[i]
            if not t & LOST:
                s = e
                continue
            found += 1
            cur = s
            any_hole = False
            while j < nsb and sends[j] <= cur:
                j += 1
            k = j
            while cur < e:
                if k < nsb and sstarts[k] <= cur:
                    cur = sends[k]
                    k += 1
                    continue
                nxt = sstarts[k] if k < nsb and sstarts[k] < e else e
                out.append((cur, nxt))
                any_hole = True
                cur = nxt
            if not any_hole:
                ts[i] = t & ~LOST  # the original arrived after all
                self.nlost -= 1
            s = e
            if found == nlost:
                break
        return out
