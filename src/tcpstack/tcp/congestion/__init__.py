"""Congestion control algorithms behind one small interface (``base.CongestionControl``).

The connection owns loss detection and recovery bookkeeping (duplicate ACKs,
the recovery point, SACK); an algorithm only decides cwnd and ssthresh.
"""

from __future__ import annotations

from .base import CongestionControl
from .cubic import Cubic
from .newreno import NewReno


def create(name: str, mss: int, init_cwnd_segments: int, now: int) -> CongestionControl:
    if name in ("newreno", "reno"):
        return NewReno(mss, init_cwnd_segments, now)
    if name == "cubic":
        return Cubic(mss, init_cwnd_segments, now)
    raise ValueError(f"unknown congestion control {name!r}; choose newreno or cubic")


__all__ = ["CongestionControl", "Cubic", "NewReno", "create"]
