"""The send queue: bytes written by the application and not yet acknowledged.

Data is kept as a list of immutable chunks (``bytes``; a writer's bytearray
is copied once on write, since the caller may reuse it).  Each chunk's stream
offset is kept beside it so that finding the byte at any offset is a bisect,
not a scan, and sending a segment is a memoryview slice, not a copy, unless
it spans chunks.  Offsets are absolute byte counts since the start of the
stream (Python ints do not wrap); the connection maps sequence numbers to
them.
"""

from __future__ import annotations

from bisect import bisect_right

# Small writes are merged into the previous chunk (one copy of a few KiB)
# rather than kept as thousands of tiny chunks.
_MERGE_BELOW = 2048
# Shared empty tuples while nothing is queued (an idle connection then owns no
# lists: two empty lists would cost 112 bytes).
_NONE: list = ()  # type: ignore[assignment]  # never mutated: replaced before use


class SendBuffer:
    __slots__ = ("capacity", "head", "tail", "_chunks", "_starts", "_h")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.head = 0  # stream offset of the oldest unacknowledged byte
        self.tail = 0  # stream offset just past the last byte written
        self._chunks: list[bytes] = _NONE
        self._starts: list[int] = _NONE
        self._h = 0  # index of the chunk holding `head`

    def __len__(self) -> int:
        return self.tail - self.head

    @property
    def free(self) -> int:
        return max(0, self.capacity - (self.tail - self.head))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; return the number of bytes taken."""
        n = min(len(data), self.free)
        if n <= 0:
            return 0
        if isinstance(data, bytes) and n == len(data):
            chunk = data
        else:
            chunk = bytes(memoryview(data)[:n])
        chunks = self._chunks
        if chunks is _NONE:
            self._chunks, self._starts = [chunk], [self.tail]
            self.tail += n
            return n
        if (
            n < _MERGE_BELOW
            and len(chunks) > self._h
            and len(chunks[-1]) < _MERGE_BELOW
        ):
            chunks[-1] = chunks[-1] + chunk
        else:
            chunks.append(chunk)
            self._starts.append(self.tail)
        self.tail += n
        return n

    def peek(self, offset: int, length: int) -> bytes | memoryview:
        """``length`` bytes starting at stream offset ``offset`` (must be buffered)."""
        if length <= 0:
            return b""
        if offset < self.head or offset + length > self.tail:
            raise ValueError(
                f"send buffer holds [{self.head}, {self.tail}), asked for [{offset}, {offset + length})"
            )
        starts = self._starts
        i = bisect_right(starts, offset, self._h) - 1
        chunk = self._chunks[i]
        rel = offset - starts[i]
        if rel + length <= len(chunk):
            if rel == 0 and length == len(chunk):
                return chunk
            return memoryview(chunk)[rel : rel + length]
        parts = [memoryview(chunk)[rel:]]
        need = length - (len(chunk) - rel)
        while need > 0:
            i += 1
            c = self._chunks[i]
            if len(c) >= need:
                parts.append(memoryview(c)[:need])
                need = 0
            else:
                parts.append(memoryview(c))
                need -= len(c)
        return b"".join(parts)

    def ack(self, n: int) -> None:
        """Drop ``n`` acknowledged bytes from the front."""
        if n <= 0:
            return
        if n > self.tail - self.head:
            raise ValueError(f"ack of {n} bytes but only {self.tail - self.head} are buffered")
        self.head += n
        starts, chunks = self._starts, self._chunks
        h = self._h
        last = len(chunks) - 1
        while h < last and starts[h + 1] <= self.head:
            chunks[h] = b""  # release memory now; the slot is compacted below
            h += 1
        if self.head == self.tail:
            self._chunks = self._starts = _NONE
            h = 0
        elif h > 32 and h * 2 > len(chunks):
            del chunks[:h]
            del starts[:h]
            h = 0
        self._h = h
