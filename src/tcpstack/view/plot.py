"""Time-sequence and window graphs of one TCP connection (matplotlib).

Input is the neutral form every view takes: a list of ``(time_us,
direction, Segment)`` tuples, direction 0 for the client's segments and 1
for the server's -- what ``TcpConnection.tuples()`` gives for a capture,
what ``segments_from_events()`` gives for the engine's events (``tcpstack
demo``) and ``segments_from_rows()`` for ladder rows.

Two graphs, one above the other, sharing the time axis:

1. **Time-sequence graph** (Stevens / tcptrace style, as in Wireshark's
   Statistics > TCP Stream Graphs): the data sender's segments as vertical
   bars from their first to their last sequence number (relative to the ISN)
   at the time they were seen, data below the highest sequence already sent
   (retransmitted, or out of order) in red with tcptrace's "R"; the receiver's
   cumulative ACK as a step line, its advertised window's right edge (ACK +
   window) above it, and its SACK blocks as short purple bars.  A flat
   stretch of the ACK line with red bars is a loss and its repair; bars
   touching the window line mean the receiver's window limits the sender.
2. **Window graph**: bytes in flight (highest sequence sent minus highest
   ACK received, as Wireshark's tcp.analysis.bytes_in_flight, but updated at
   every segment of either side so an ACK's effect shows when it happens)
   and the receiver's advertised window, both in bytes, against time.

Windows are scaled by the shift each SYN announced (RFC 7323 §2.3); without
the handshake the scale is unknown and raw window values are drawn (said in
the legend).  ``analyse()`` computes the series without drawing, so tests
and other front ends can use the numbers.

matplotlib is imported only when drawing (it is the ``plot`` extra); the
Agg canvas is used directly, never pyplot, so nothing global changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from ..tcp import events as ev
from ..tcp.seq import diff, gt
from ..wire.tcp import ACK, FIN, RST, SYN, Segment
from .expert import analyze

__all__ = [
    "PlotUnavailable",
    "TimeSequence",
    "analyse",
    "plot_segments",
    "segments_from_events",
    "segments_from_rows",
]

SegmentTuple = tuple[int, int, Segment]

# tcptrace's "R": data below the highest sequence already sent.  Wireshark calls
# some of those out-of-order (a hole filled soon after), which seen at the
# sender is a retransmission all the same.
_RETRANS_KINDS = {
    "retransmission",
    "fast-retransmission",
    "spurious-retransmission",
    "out-of-order",
}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


@dataclass
class TimeSequence:
    """The series of both graphs; times in seconds since ``t0``, sequence numbers relative."""

    direction: int  # the data sender: 0 client, 1 server
    t0: int  # µs
    base: int  # the sender's ISN (or first seq - 1)
    scaled: bool  # windows scaled by the handshake's shifts (False: unknown, raw)
    data: list[tuple[float, int, int]] = field(default_factory=list)  # (t, first, end)
    retrans: list[tuple[float, int, int]] = field(default_factory=list)
    syn_fin: list[tuple[float, int, str]] = field(default_factory=list)  # (t, seq, "SYN"/"FIN")
    acks: list[tuple[float, int]] = field(default_factory=list)  # (t, ack)
    window_edge: list[tuple[float, int]] = field(default_factory=list)  # (t, ack + window)
    sacks: list[tuple[float, int, int]] = field(default_factory=list)  # (t, left, right)
    in_flight: list[tuple[float, int]] = field(default_factory=list)  # (t, bytes)
    rwnd: list[tuple[float, int]] = field(default_factory=list)  # (t, bytes)
    resets: list[float] = field(default_factory=list)


def segments_from_events(events: Iterable[tuple[int, ev.Event]]) -> list[SegmentTuple]:
    """(time, side, Segment) for each segment sent, from ``(side, Event)`` pairs of both hosts.

    This is what ``tcpstack demo`` records (``TransferResult.events``):
    the engine's SEND events, at the sender's time.
    """
    out = [(e.time, side, e.detail) for side, e in events if e.kind == ev.SEND]
    out.sort(key=lambda x: x[0])
    return out


def segments_from_rows(rows: Iterable[Any]) -> list[SegmentTuple]:
    """(time, side, Segment) from ``view.ladder.Row`` objects that carry a segment."""
    return [(r.time, r.side, r.seg) for r in rows if r.kind == "seg" and r.seg is not None]


def _scales(segments: Sequence[SegmentTuple]) -> dict[int, int] | None:
    offered: dict[int, int | None] = {}
    for _t, d, seg in segments:
        if seg.flags & SYN and d not in offered:
            offered[d] = seg.wscale
    if len(offered) < 2:
        return None
    if any(v is None for v in offered.values()):
        return {0: 0, 1: 0}
    return {d: min(v or 0, 14) for d, v in offered.items()}


def _pick_direction(segments: Sequence[SegmentTuple]) -> int:
    sent = [0, 0]
    for _t, d, seg in segments:
        sent[d] += len(seg.payload)
    return 1 if sent[1] > sent[0] else 0


def analyse(
    segments: Sequence[SegmentTuple], direction: int | None = None, t0: int | None = None
) -> TimeSequence:
    """The series of both graphs for the data sent by ``direction`` (default: the bigger sender)."""
    if not segments:
        raise ValueError("no segments to plot")
    if direction is None:
        direction = _pick_direction(segments)
    if t0 is None:
        t0 = segments[0][0]
    scales = _scales(segments)
    isn = next((s.seq for _t, d, s in segments if d == direction and s.flags & SYN), None)
    if isn is None:
        first = next((s.seq for _t, d, s in segments if d == direction), None)
        if first is None:
            first = next(s.ack for _t, d, s in segments if d != direction and s.flags & ACK)
        isn = (first - 1) & 0xFFFFFFFF
    ts = TimeSequence(direction, t0, isn, scales is not None)
    notes = analyze(segments)

    def rel(x: int) -> int:
        return diff(x, isn)

    snd_max: int | None = None
    snd_una: int | None = None
    for (t_us, d, seg), kinds in zip(segments, notes, strict=True):
        t = (t_us - t0) / 1e6
        flags = seg.flags
        if flags & RST:
            ts.resets.append(t)
        if d == direction:
            n = len(seg.payload)
            start = rel(seg.seq) + (1 if flags & SYN else 0)
            if n:
                retrans = any(k.kind in _RETRANS_KINDS for k in kinds)
                (ts.retrans if retrans else ts.data).append((t, start, start + n))
            if flags & SYN:
                ts.syn_fin.append((t, rel(seg.seq), "SYN"))
            if flags & FIN:
                ts.syn_fin.append((t, start + n, "FIN"))
            end = (seg.seq + seg.seg_len) & 0xFFFFFFFF
            if snd_max is None or gt(end, snd_max):
                snd_max = end
        elif flags & ACK:
            shift = scales.get(d, 0) if scales is not None else 0
            wnd = seg.window if flags & SYN else seg.window << shift
            if snd_una is None or gt(seg.ack, snd_una):
                snd_una = seg.ack
            a = rel(seg.ack)
            ts.acks.append((t, a))
            ts.window_edge.append((t, a + wnd))
            ts.rwnd.append((t, wnd))
            for left, right in seg.sack_blocks:
                ts.sacks.append((t, rel(left), rel(right)))
        # After every segment of either side: an ACK lowers it at once (Wireshark
        # samples only the sender's segments, which hides the drop until the next one).
        if snd_max is not None:
            flight = 0 if snd_una is None else max(0, diff(snd_max, snd_una))
            ts.in_flight.append((t, flight))
    return ts


def _steps(points: Sequence[tuple[float, int]]) -> tuple[list[float], list[int]]:
    return [p[0] for p in points], [p[1] for p in points]


def plot_segments(
    segments: Sequence[SegmentTuple],
    path: str | PathLike[str],
    *,
    direction: int | None = None,
    t0: int | None = None,
    title: str = "",
    names: tuple[str, str] = ("client", "server"),
    cc: Sequence[tuple[int, Any]] | None = None,
) -> TimeSequence:
    """Draw both graphs to ``path`` (PNG, SVG or PDF by its extension); returns the series.

    ``cc``: the sender's own congestion state as ``(time_us, CcSample)`` pairs
    (the engine's ``cc`` events, so only for our own stack, not for a capture):
    cwnd and ssthresh are drawn on the window graph."""
    ts = analyse(segments, direction, t0)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import EngFormatter
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'tcpstack[plot]'"
        ) from None
    fig = Figure(figsize=(10, 8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    sender, receiver = names[ts.direction], names[1 - ts.direction]
    fig.suptitle(title or "TCP connection", fontsize=11)

    # 1. Time-sequence graph.
    if ts.data:
        x = [d[0] for d in ts.data]
        ax1.vlines(x, [d[1] for d in ts.data], [d[2] for d in ts.data], colors="#1f3b73",
                   linewidth=1.6, label=f"data sent by the {sender}")
        ax1.plot(x, [d[2] for d in ts.data], "_", color="#1f3b73", markersize=5)
    if ts.retrans:
        x = [d[0] for d in ts.retrans]
        ax1.vlines(x, [d[1] for d in ts.retrans], [d[2] for d in ts.retrans], colors="#c0392b",
                   linewidth=2.5, label="retransmitted (or out-of-order) data (R)", zorder=3)
        ax1.plot(x, [d[2] for d in ts.retrans], "_", color="#c0392b", markersize=8, zorder=3)
        if len(ts.retrans) <= 60:  # tcptrace's "R" beside each one, while readable
            for t, _s, e in ts.retrans:
                ax1.annotate("R", (t, e), textcoords="offset points", xytext=(-3, 4),
                             fontsize=7, color="#c0392b", fontweight="bold")
    for t, s, what in ts.syn_fin:
        ax1.plot([t], [s], "D" if what == "SYN" else "s", color="#555555", markersize=4)
        ax1.annotate(what, (t, s), textcoords="offset points", xytext=(3, 3), fontsize=7,
                     color="#555555")
    if ts.acks:
        ax1.step(*_steps(ts.acks), where="post", color="#2e8b57", linewidth=1.2,
                 label=f"ACK from the {receiver}")
    if ts.window_edge:
        ax1.step(*_steps(ts.window_edge), where="post", color="#b8860b", linewidth=1.0,
                 label="receive window right edge (ACK + window)"
                 + ("" if ts.scaled else ", unscaled: scale unknown"))
    if ts.sacks:
        ax1.vlines([s[0] for s in ts.sacks], [s[1] for s in ts.sacks], [s[2] for s in ts.sacks],
                   colors="#8e44ad", linewidth=3.0, alpha=0.8, label="SACK blocks")
    for t in ts.resets:
        ax1.axvline(t, color="#c0392b", linestyle=":", linewidth=1)
    ax1.set_ylabel("relative sequence number (bytes)")
    ax1.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax1.set_title(f"time-sequence graph: data from the {sender}", fontsize=10)
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="upper left", fontsize=8)

    # 2. Bytes in flight and the advertised window.
    if ts.in_flight:
        ax2.step(*_steps(ts.in_flight), where="post", color="#1f3b73", linewidth=1.2,
                 label=f"bytes in flight ({sender} -> {receiver})")
    if ts.rwnd:
        ax2.step(*_steps(ts.rwnd), where="post", color="#b8860b", linewidth=1.2,
                 label=f"receive window advertised by the {receiver}"
                 + ("" if ts.scaled else " (unscaled)"))
    if cc:
        pts = [((t - ts.t0) / 1e6, s.cwnd) for t, s in cc]
        ax2.step(*_steps(pts), where="post", color="#2e8b57", linewidth=1.2, label=f"cwnd of the {sender}")
        ss = [((t - ts.t0) / 1e6, s.ssthresh) for t, s in cc if s.ssthresh < 0x7FFFFFFF]
        if ss:
            ax2.step(*_steps(ss), where="post", color="#2e8b57", linestyle=":", linewidth=1.0,
                     label=f"ssthresh of the {sender}")
    ax2.set_ylabel("bytes")
    ax2.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax2.set_xlabel("time (s)" + (" since the first segment" if t0 is None else ""))
    ax2.set_title("bytes in flight and advertised receive window" + (", cwnd" if cc else ""), fontsize=10)
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="upper left", fontsize=8)
    try:
        fig.savefig(path)
    except ValueError as exc:  # unknown extension
        raise ValueError(f"cannot write {path}: {exc}") from None
    return ts


