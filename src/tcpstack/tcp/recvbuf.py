"""The receive side: in-order bytes waiting for the application, and the
out-of-order (reassembly) queue, both bounded by the receive buffer size.

Offsets are absolute stream offsets (Python ints, no wrap).  ``nxt`` is the
offset of RCV.NXT: everything below it is in order.  Out-of-order data is a
sorted list of disjoint, non-adjacent blocks [start, end) so that insertion
is a bisect and a hole being filled merges in O(blocks merged).

Against hostile peers (CVE-2018-5390 "SegmentSmack": many tiny out-of-order
segments), each block is charged a fixed overhead on top of its bytes and
the total is bounded by the buffer size: a segment that would exceed it is
dropped (counted TCPOFODrop), so memory and per-segment work stay bounded.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

BLOCK_OVERHEAD = 256  # bytes charged per out-of-order block (≈ what a block costs here)
# The out-of-order lists are shared empty tuples until the first out-of-order
# segment (most connections never see one; three empty lists cost 168 bytes).
_NONE: list = ()  # type: ignore[assignment]  # never mutated: replaced before use


class RecvBuffer:
    __slots__ = ("capacity", "nxt", "_ready", "_ready_len", "_ooo_starts", "_ooo_ends", "_ooo_data", "_ooo_bytes", "eof_offset")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.nxt = 0
        # A list, not a deque: an empty deque costs ~760 bytes per connection, and
        # the queue is consumed from the front a few chunks per read().  While
        # empty it is the shared empty tuple (an idle connection owns no list).
        self._ready: list[bytes | memoryview] = _NONE
        self._ready_len = 0
        self._ooo_starts: list[int] = _NONE
        self._ooo_ends: list[int] = _NONE
        self._ooo_data: list[bytes] = _NONE
        self._ooo_bytes = 0
        self.eof_offset: int | None = None

    # -- state -------------------------------------------------------------------
    @property
    def ready(self) -> int:
        """Bytes in order, waiting to be read."""
        return self._ready_len

    @property
    def ooo_bytes(self) -> int:
        return self._ooo_bytes

    @property
    def ooo_blocks(self) -> list[tuple[int, int]]:
        return list(zip(self._ooo_starts, self._ooo_ends, strict=True))

    @property
    def ooo_count(self) -> int:
        return len(self._ooo_starts)

    def first_blocks(self, k: int) -> list[tuple[int, int]]:
        return list(zip(self._ooo_starts[:k], self._ooo_ends[:k], strict=True))

    def block_containing(self, off: int) -> tuple[int, int] | None:
        """The out-of-order block holding stream offset ``off`` (a bisect)."""
        i = bisect_right(self._ooo_starts, off) - 1
        if i >= 0 and off < self._ooo_ends[i]:
            return (self._ooo_starts[i], self._ooo_ends[i])
        return None

    @property
    def free(self) -> int:
        """Space left for new in-order data: the basis of the advertised window."""
        return max(0, self.capacity - self._ready_len)

    def memory_charged(self) -> int:
        return self._ready_len + self._ooo_bytes + BLOCK_OVERHEAD * len(self._ooo_starts)

    # -- input -------------------------------------------------------------------
    def insert(self, rel: int, data: bytes | memoryview) -> int:
        """Store ``data`` that starts ``rel`` bytes past RCV.NXT (rel >= 0;
        the connection has trimmed it to the window).  Returns how many bytes
        RCV.NXT advanced (0 if the data went to the out-of-order queue, or
        was dropped as a duplicate or for lack of memory, which ``insert``
        reports by returning -1)."""
        n = len(data)
        if n == 0:
            return 0
        if rel == 0:
            try:
                self._ready.append(data)
            except AttributeError:  # the shared empty tuple: the first chunk since empty
                self._ready = [data]
            self._ready_len += n
            self.nxt += n
            advanced = n
            if self._ooo_starts:
                advanced += self._pull_ooo()
            return advanced
        return self._insert_ooo(self.nxt + rel, data)

    def _insert_ooo(self, start: int, data: bytes | memoryview) -> int:
        end = start + len(data)
        if not self._ooo_starts:
            self._ooo_starts, self._ooo_ends, self._ooo_data = [], [], []
        starts, ends, blobs = self._ooo_starts, self._ooo_ends, self._ooo_data
        i = bisect_left(ends, start)  # first block that ends at or after our start
        # Blocks i..j-1 overlap or touch [start, end).
        j = i
        while j < len(starts) and starts[j] <= end:
            j += 1
        if j == i:
            # Disjoint: a new block.  Bound the memory it costs.
            if self.memory_charged() + len(data) + BLOCK_OVERHEAD > self.capacity + BLOCK_OVERHEAD * 16:
                return -1
            starts.insert(i, start)
            ends.insert(i, end)
            blobs.insert(i, bytes(data))
            self._ooo_bytes += len(data)
            return 0
        if j == i + 1 and starts[i] <= start and end <= ends[i]:
            return -1  # entirely a duplicate of what we hold
        # Merge [start, end) with blocks i..j-1 into one block.
        new_start = min(start, starts[i])
        new_end = max(end, ends[j - 1])
        buf = bytearray(new_end - new_start)
        mv = memoryview(buf)
        for k in range(i, j):
            s = starts[k] - new_start
            mv[s : s + len(blobs[k])] = blobs[k]
            self._ooo_bytes -= len(blobs[k])
        s = start - new_start
        mv[s : s + len(data)] = data  # new data wins; identical bytes on a correct peer
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        blobs[i:j] = [bytes(buf)]
        self._ooo_bytes += new_end - new_start
        return 0

    def _pull_ooo(self) -> int:
        """Move out-of-order blocks that now touch RCV.NXT into the ready queue."""
        advanced = 0
        starts, ends, blobs = self._ooo_starts, self._ooo_ends, self._ooo_data
        while starts and starts[0] <= self.nxt:
            s, e, b = starts.pop(0), ends.pop(0), blobs.pop(0)
            self._ooo_bytes -= len(b)
            if e > self.nxt:
                part = memoryview(b)[self.nxt - s :]
                if self._ready is _NONE:
                    self._ready = []
                self._ready.append(part)
                self._ready_len += len(part)
                advanced += len(part)
                self.nxt = e
        if not starts:
            self._ooo_starts = self._ooo_ends = self._ooo_data = _NONE
        return advanced

    # -- output ------------------------------------------------------------------
    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` in-order bytes (b"" if none)."""
        ready = self._ready
        if not ready or max_bytes <= 0:
            return b""
        first = ready[0]
        if len(first) <= max_bytes and (len(ready) == 1 or len(first) == max_bytes):
            del ready[0]
            self._ready_len -= len(first)
            if not ready:
                self._ready = _NONE
            return bytes(first)
        parts = []
        need = max_bytes
        i = 0
        while i < len(ready) and need > 0:
            c = ready[i]
            if len(c) <= need:
                parts.append(c)
                i += 1
                need -= len(c)
            else:
                parts.append(memoryview(c)[:need])
                ready[i] = memoryview(c)[need:]
                need = 0
        del ready[:i]
        if not ready:
            self._ready = _NONE
        out = b"".join(parts)
        self._ready_len -= len(out)
        return out

    def clear(self) -> int:
        """Discard everything (abort); returns the unread in-order byte count."""
        n = self._ready_len
        self._ready = _NONE
        self._ready_len = 0
        self._ooo_starts = self._ooo_ends = self._ooo_data = _NONE
        self._ooo_bytes = 0
        return n
