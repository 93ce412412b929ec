"""32-bit sequence-number arithmetic (RFC 9293 §3.4).

Sequence numbers live in a space of 2**32 that wraps; wraparound is the norm,
not a corner case.  Every comparison of two sequence numbers in the engine
goes through these functions: a raw ``<`` between sequence numbers is a bug.

Sequence numbers are plain ints in [0, 2**32) rather than instances of a
wrapper class: a class would allocate an object per field per segment on the
hot path.  The discipline the class would enforce is kept by this module
being the only place that compares them (see docs/architecture.md).
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(s: int, n: int) -> int:
    """s + n modulo 2**32 (n may be negative)."""
    return (s + n) & MASK


def diff(a: int, b: int) -> int:
    """The signed distance a - b, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def lt(a: int, b: int) -> bool:
    """a < b in sequence space."""
    return a != b and ((a - b) & MASK) >= HALF


def le(a: int, b: int) -> bool:
    """a =< b in sequence space."""
    return a == b or ((a - b) & MASK) >= HALF


def gt(a: int, b: int) -> bool:
    """a > b in sequence space."""
    return a != b and ((b - a) & MASK) >= HALF


def ge(a: int, b: int) -> bool:
    """a >= b in sequence space."""
    return a == b or ((b - a) & MASK) >= HALF


def in_window(s: int, start: int, size: int) -> bool:
    """start =< s < start + size (an empty window holds nothing)."""
    return ((s - start) & MASK) < size


def between(lo: int, s: int, hi: int) -> bool:
    """lo =< s =< hi, all in sequence space, assuming hi - lo < 2**31."""
    return ((s - lo) & MASK) <= ((hi - lo) & MASK)


def max_seq(a: int, b: int) -> int:
    return b if lt(a, b) else a
