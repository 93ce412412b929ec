"""The sender's SACK scoreboard (RFC 2018, RFC 6675).

SACKed ranges are kept as two sorted lists of disjoint, non-adjacent
[start, end) intervals in absolute stream offsets (no wrap).  Adding a block
is a bisect plus a slice replacement; the number of intervals is bounded
(``MAX_BLOCKS``) so that a peer sending SACK blocks which fragment the
queue (the CVE-2019-11477/11478 "SACK Panic/Slowness" pattern) cannot make
per-ACK work or memory grow without bound: blocks that would exceed the
bound are ignored (counted as TCPSACKDiscard by the caller) — the data is
then simply retransmitted, which is always safe.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

MAX_BLOCKS = 256
_NONE: list[int] = ()  # type: ignore[assignment]  # never mutated: replaced on the first add


class Scoreboard:
    __slots__ = ("starts", "ends", "sacked")
    is_rack = False  # rack.Rack: this scoreboard also keeps the per-transmission log


    def __init__(self) -> None:
        # Shared empty tuples until the first block: most connections never see
        # a SACK block, and two empty lists would cost 112 bytes each time.
        self.starts: list[int] = _NONE
        self.ends: list[int] = _NONE
        self.sacked = 0  # total SACKed bytes

    def __len__(self) -> int:
        return len(self.starts)

    def clear(self) -> None:
        self.starts = self.ends = _NONE
        self.sacked = 0

    def add(self, s: int, e: int) -> int:
        """Record [s, e) as SACKed; returns the number of newly SACKed bytes,
        or -1 if the block was refused (too many fragments)."""
        if e <= s:
            return 0
        starts, ends = self.starts, self.ends
        if not starts:
            self.starts, self.ends = [s], [e]
            self.sacked += e - s
            return e - s
        i = bisect_left(ends, s)  # first interval ending at or after s
        j = bisect_right(starts, e, i)  # intervals i..j-1 touch [s, e]
        if i == j:
            if len(starts) >= MAX_BLOCKS:
                return -1
            starts.insert(i, s)
            ends.insert(i, e)
            self.sacked += e - s
            return e - s
        covered = sum(ends[k] - starts[k] for k in range(i, j))
        ns, ne = min(s, starts[i]), max(e, ends[j - 1])
        starts[i:j] = [ns]
        ends[i:j] = [ne]
        new = (ne - ns) - covered
        self.sacked += new
        return new

    def advance(self, head: int) -> None:
        """The cumulative ACK moved to ``head``: forget everything below it."""
        starts, ends = self.starts, self.ends
        if not starts or starts[0] >= head:
            return
        k = bisect_right(ends, head)
        for x in range(k):
            self.sacked -= ends[x] - starts[x]
        del starts[:k]
        del ends[:k]
        if not starts:
            self.starts = self.ends = _NONE  # all acknowledged: give the lists back
        elif starts[0] < head:
            self.sacked -= head - starts[0]
            starts[0] = head

    def __repr__(self) -> str:
        return f"Scoreboard({list(zip(self.starts, self.ends, strict=True))}, sacked={self.sacked})"

    def highest(self) -> int | None:
        return self.ends[-1] if self.ends else None

    def sacked_above(self, off: int) -> int:
        """SACKed bytes at or above ``off``."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, off)
        total = 0
        for k in range(i, len(starts)):
            total += ends[k] - max(starts[k], off)
        return total

    def holes(self, head: int) -> list[tuple[int, int]]:
        """Un-SACKed ranges from ``head`` up to the highest SACKed byte."""
        out = []
        cur = head
        for s, e in zip(self.starts, self.ends, strict=True):
            if s > cur:
                out.append((cur, s))
            if e > cur:
                cur = e
        return out

    def lost_holes(self, head: int, threshold: int) -> list[tuple[int, int]]:
        """RFC 6675 IsLost(), bytes form: the un-SACKed ranges from ``head`` that
        have more than ``threshold`` ((DupThresh - 1) * SMSS) SACKed bytes above
        them, lowest first.  One backward pass: O(intervals)."""
        starts, ends = self.starts, self.ends
        out: list[tuple[int, int]] = []
        above = 0
        for k in range(len(starts) - 1, -1, -1):
            above += ends[k] - starts[k]
            lo = ends[k - 1] if k > 0 else head
            if lo < head:
                lo = head
            if starts[k] > lo and above > threshold:
                out.append((lo, starts[k]))
        out.reverse()
        return out

    def unsacked(self, s: int, e: int) -> list[tuple[int, int]]:
        """The parts of [s, e) not SACKed, lowest first."""
        starts, ends = self.starts, self.ends
        out = []
        k = bisect_right(ends, s)
        cur = s
        while cur < e:
            if k < len(starts) and starts[k] <= cur:
                cur = ends[k]
                k += 1
                continue
            nxt = starts[k] if k < len(starts) and starts[k] < e else e
            out.append((cur, nxt))
            cur = nxt
        return out

    def is_sacked(self, off: int) -> bool:
        i = bisect_right(self.starts, off) - 1
        return i >= 0 and off < self.ends[i]


#: The scoreboard of every connection that has not seen a SACK block yet: shared
#: and empty (clear() and advance() leave it so); the connection replaces it with
#: its own before the first add().
NO_SACKS = Scoreboard()
