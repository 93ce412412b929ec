"""The one observation hook of the engine.

Every segment in or out, every state transition, every drop and every user
-visible error is reported as an ``Event``.  The ladder diagram, ``ss``,
``stat``, pcap tooling, plots and tests all read these records; nothing
re-derives state from log text.  Events are only built when someone listens
(``Stack.observers`` non-empty), so an unobserved stack pays nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# Event kinds.
STATE = "state"  # detail: (old State, new State, cause str)
SEND = "send"  # detail: Segment sent
RECV = "recv"  # detail: Segment received (after demux, before processing)
DROP = "drop"  # detail: reason str (segment may be in `segment`)
ERROR = "error"  # detail: the OSError reported to the application
TIMER = "timer"  # detail: timer name ("rto", "persist", "keepalive", ...)
INFO = "info"  # detail: free-form str (e.g. "fast retransmit", "challenge ACK")
CC = "cc"  # detail: CcSample, after the sender transmitted (for cwnd / in-flight plots)


class CcSample(NamedTuple):
    cwnd: int  # bytes
    ssthresh: int  # bytes
    in_flight: int  # bytes, SND.NXT - SND.UNA
    snd_wnd: int  # bytes, the peer's window
    srtt: int  # µs


class Event(NamedTuple):
    time: int  # microseconds
    conn_id: int  # 0 for segments no connection owns
    kind: str
    local: tuple[str, int] | None
    remote: tuple[str, int] | None
    detail: Any
