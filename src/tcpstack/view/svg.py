"""The ladder diagram as an SVG picture, drawn like a textbook figure.

Two vertical timelines (client left, server right), time running down, one
slanted arrow per segment from the sender's line at its send time to the
receiver's line at its receive time, labelled with flags, seq, ack, win and
len (and a SYN's options), each end's states written beside its line where
they change, expert notes in colour after the label.

How the slant is chosen (``timing``):

- A capture taken at one point sees each segment once, so it has one time
  per segment.  ``"auto"`` then estimates the other end of each arrow from
  the handshake: SYN -> SYN,ACK at the capture point is the round trip to
  the server, SYN,ACK -> ACK the round trip to the client, so a segment from
  the client left it (RTT to client)/2 before it passed the capture point
  and reached the server (RTT to server)/2 after (``TcpConnection.timing``).
  Arrows then slope as the real delays do.
- If the same segment was captured at two points (a capture merged from
  both ends), its two times are the ends of its arrow: measured, not estimated.
- Without a handshake, or when the round trip is under 1 ms (loopback, a
  veth pair) so the slope would be invisible, and with ``"fixed"``, every
  arrow gets the same small slant and only the order of events matters.

The vertical axis is time, stretched where segments are close together so
labels never overlap and squeezed where nothing happens (a long idle gap is
drawn as a break marked with its duration); the time of each segment is
written in the left margin.

Pure text generation with the standard library: no drawing dependency.
"""

from __future__ import annotations

import bisect
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from ..wire.tcp import ACK, SYN, Segment
from .infer import CLIENT, SERVER, TcpConnection, fmt_endpoint
from .ladder import LEFT, Row

__all__ = ["Arrow", "Mark", "draw_ladder", "render_svg", "svg_from_rows"]

# Geometry (px).
_TIME_W = 64  # left margin with times
_STATE_W = 118  # state column beside each timeline
_LANE_W = 560  # between the timelines
_X_LEFT = _TIME_W + _STATE_W
_X_RIGHT = _X_LEFT + _LANE_W
_WIDTH = _X_RIGHT + _STATE_W + 16
_TOP = 92  # first event
_FONT = 10.5
_LINE = 13  # text line height
_LABEL_FROM_SENDER = 30  # labels start this far (px, horizontally) from the sender's line

# Minimum vertical gaps (px) before an event, by (previous kind, this kind).
_FIXED_SLANT = 18  # S -> its own R in fixed mode
_GAP_SEND = 12  # before a send, after anything (fixed mode: after the previous tip)
_GAP_TIMED = 20
_MAX_GAP = 120
_BREAK = 26  # height of an idle-gap break

_COLOURS = {
    "retransmission": "#c0392b",
    "fast-retransmission": "#c0392b",
    "spurious-retransmission": "#c0392b",
    "out-of-order": "#c0392b",
    "rst": "#c0392b",
    "previous-segment-not-captured": "#c0392b",
    "duplicate-ack": "#d35400",
    "zero-window": "#8e44ad",
    "zero-window-probe": "#8e44ad",
    "zero-window-probe-ack": "#8e44ad",
    "window-full": "#8e44ad",
    "keep-alive": "#7f8c8d",
    "keep-alive-ack": "#7f8c8d",
}
_INK = "#222222"
_STATE_INK = "#1a4f9c"


@dataclass
class Arrow:
    """One segment: from ``side``'s timeline at ``send`` to the other's at ``recv`` (µs)."""

    send: int
    recv: int
    side: int  # LEFT or RIGHT: the sender
    label: str
    notes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    extra: str = ""  # a second line under the label (a SYN's options)
    lost: bool = False
    frame: int | None = None
    # Marks drawn where the arrow starts (the sender's) and ends (the receiver's).
    at_send: list[str] = field(default_factory=list)
    at_recv: list[str] = field(default_factory=list)


@dataclass
class Mark:
    """A state written beside one timeline at a time of its own (not at an arrow's end).

    With ``note`` set it is a remark instead ("rto timer fired"), written in
    the lane next to that side's timeline.
    """

    time: int
    side: int
    text: str
    note: bool = False


@dataclass
class _Event:
    key: tuple[int, int, int]
    kind: str  # "S", "R" or "M"
    time: int
    index: int  # into arrows or marks
    y: float = 0.0
    marks: dict[int, list[str]] = field(default_factory=dict)  # side -> texts
    notes: dict[int, list[str]] = field(default_factory=dict)  # side -> remarks


def _x(side: int) -> int:
    return _X_LEFT if side == LEFT else _X_RIGHT


def _layout(
    arrows: Sequence[Arrow], marks: Sequence[Mark], timed: bool, px_per_us: float
) -> tuple[list[_Event], list[tuple[float, float, int]]]:
    """Events in drawing order with their y; and the idle-gap breaks (y from, y to, µs)."""
    events: list[_Event] = []
    for i, a in enumerate(arrows):
        # Same-time events keep causal order: arrow i's start, its tip, then
        # arrow i+1's start (a capture's order is the order things happened).
        if timed:
            s = _Event((a.send, 2 * i, 0), "S", a.send, i)
            r = _Event((a.recv, 2 * i + 1, 0), "R", a.recv, i)
        else:
            # Fixed slant: the tip comes right after its own start.
            s = _Event((a.send, 2 * i, 0), "S", a.send, i)
            r = _Event((a.send, 2 * i + 1, 0), "R", a.send, i)
        s.marks[a.side] = list(a.at_send)
        r.marks[1 - a.side] = list(a.at_recv)
        events += [s, r]
    # Marks at the same time share one event (both sides' initial states on
    # one line); they come before a segment sent at that time.
    by_time: dict[int, _Event] = {}
    for j, m in enumerate(marks):
        ev = by_time.get(m.time)
        if ev is None:
            ev = by_time[m.time] = _Event((m.time, -1, j), "M", m.time, j)
            events.append(ev)
        if m.note:
            ev.notes.setdefault(m.side, []).append(m.text)
        else:
            ev.marks.setdefault(m.side, []).append(m.text)
    if not timed:
        # Keep the given order of arrows; marks go before the first arrow sent
        # at or after their time.
        order: list[_Event] = []
        pending = sorted((e for e in events if e.kind == "M"), key=lambda e: e.key)
        for e in (e for e in events if e.kind != "M"):
            while pending and e.kind == "S" and pending[0].time <= e.time:
                order.append(pending.pop(0))
            order.append(e)
        order += pending
        events = order
    else:
        events.sort(key=lambda e: e.key)
    breaks: list[tuple[float, float, int]] = []
    y = float(_TOP)
    prev: _Event | None = None
    for e in events:
        if prev is None:
            e.y = y
            prev = e
            continue
        stacked = max((len(v) for v in prev.marks.values()), default=0)
        room = _LINE * stacked
        noted = max((len(v) for v in prev.notes.values()), default=0)
        if noted:  # a remark in the lane must clear the next arrow's label above its line
            room = max(room, _LINE * noted + 10)
        dt = e.time - prev.time
        if timed:
            # One gap for starts and tips alike keeps a burst's arrows parallel,
            # so each label stays clear of its neighbours' lines.
            min_gap = _GAP_TIMED
            if prev.kind == "S" and arrows[prev.index].extra:
                min_gap += _LINE
            gap = max(min_gap, dt * px_per_us, room)
            if gap > _MAX_GAP and dt * px_per_us > _MAX_GAP:
                breaks.append((y, y + _MAX_GAP, dt))
                gap = _MAX_GAP
        else:
            if e.kind == "R":
                gap = float(_FIXED_SLANT)
            else:
                gap = max(float(_GAP_SEND), room)
                if prev.kind == "R" and arrows[prev.index].extra:
                    gap += _LINE
                if dt >= 20_000:  # 20 ms of silence: show it
                    breaks.append((y, y + gap + _BREAK, dt))
                    gap += _BREAK
        y += gap
        e.y = y
        prev = e
    return events, breaks


def _fmt_ms(us: float) -> str:
    ms = us / 1000
    if ms >= 1000:
        return f"{ms / 1000:.3f} s"
    return f"{ms:.3f} ms" if ms < 10 else f"{ms:.1f} ms"


def _text(x: float, y: float, s: str, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def draw_ladder(
    arrows: Sequence[Arrow],
    marks: Sequence[Mark] = (),
    *,
    left: tuple[str, str] = ("client", ""),
    right: tuple[str, str] = ("server", ""),
    title: str = "",
    t0: int = 0,
    timed: bool = False,
    px_per_us: float = 0.0,
    footer: Sequence[str] = (),
) -> str:
    """The SVG document for these arrows and marks.

    ``left``/``right`` are (name, address) headings; ``timed`` draws arrows
    from send to receive time with ``px_per_us`` of stretch (else a fixed
    slant); times in the margin are relative to ``t0``.
    """
    events, breaks = _layout(arrows, marks, timed, px_per_us)
    bottom = max((e.y for e in events), default=_TOP) + 2 * _LINE
    foot_y = bottom + 22
    footer = [w for f in footer for w in textwrap.wrap(f, int((_WIDTH - 16) / (_FONT * 0.61)))]
    height = int(foot_y + _LINE * len(footer) + 10)
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        f'font-size="{_FONT}">',
        "<title>" + escape(title or "TCP ladder diagram") + "</title>",
        "<defs>",
    ]
    colours = {_INK, *_COLOURS.values()}
    for c in sorted(colours):
        out.append(
            f'<marker id="head{c[1:]}" viewBox="0 0 10 10" refX="9.5" refY="5" markerWidth="8" '
            f'markerHeight="8" orient="auto-start-reverse"><path d="M0,1 L10,5 L0,9 z" fill="{c}"/></marker>'
        )
    out.append("</defs>")
    out.append(f'<rect width="{_WIDTH}" height="{height}" fill="white"/>')
    if title:
        out.append(_text(_WIDTH / 2, 22, title, "middle", font_size="13", font_weight="bold"))
    for (name, addr), x in ((left, _X_LEFT), (right, _X_RIGHT)):
        out.append(_text(x, 50, name, "middle", font_size="13", font_weight="bold"))
        if addr:
            out.append(_text(x, 50 + _LINE, addr, "middle", fill="#555555"))
    out.append(_text(8, 50, "time (ms)", "start", fill="#555555"))
    line_top = _TOP - 14
    for x in (_X_LEFT, _X_RIGHT):
        out.append(
            f'<line x1="{x}" y1="{line_top}" x2="{x}" y2="{bottom}" stroke="{_INK}" stroke-width="2"/>'
        )
    for y1, y2, dt in breaks:
        mid = (y1 + y2) / 2
        for x in (_X_LEFT, _X_RIGHT):
            out.append(
                f'<rect x="{x - 4}" y="{mid - 5:.1f}" width="8" height="10" fill="white"/>'
                f'<path d="M{x - 6},{mid - 2:.1f} l12,-4 M{x - 6},{mid + 4:.1f} l12,-4" '
                f'stroke="{_INK}" stroke-width="1.2"/>'
            )
        out.append(
            _text((_X_LEFT + _X_RIGHT) / 2, mid + 4, f"… {_fmt_ms(dt)} …", "middle",
                  fill="#777777", font_style="italic")
        )
    # Where each arrow starts and ends.
    ends: dict[tuple[int, str], float] = {}
    for e in events:
        if e.kind in ("S", "R"):
            ends[(e.index, e.kind)] = e.y
    last_time_y = -100.0
    for e in events:
        if e.kind == "S" and e.y - last_time_y >= _LINE:
            out.append(_text(8, e.y + 4, f"{(e.time - t0) / 1000:.3f}", "start", fill="#555555"))
            last_time_y = e.y
        for side, texts in e.marks.items():
            x = _x(side)
            for k, s in enumerate(texts):
                y = e.y + k * _LINE
                out.append(f'<circle cx="{x}" cy="{y:.1f}" r="3" fill="{_STATE_INK}"/>')
                if side == LEFT:
                    out.append(_text(x - 8, y + 4, s, "end", fill=_STATE_INK, font_weight="bold",
                                     class_="state"))
                else:
                    out.append(_text(x + 8, y + 4, s, "start", fill=_STATE_INK, font_weight="bold",
                                     class_="state"))
        for side, texts in e.notes.items():
            for k, s in enumerate(texts):
                if side == LEFT:
                    out.append(_text(_X_LEFT + 8, e.y + 4 + k * _LINE, f"({s})", "start",
                                     fill="#666666", font_style="italic", class_="note"))
                else:
                    out.append(_text(_X_RIGHT - 8, e.y + 4 + k * _LINE, f"({s})", "end",
                                     fill="#666666", font_style="italic", class_="note"))
    for i, a in enumerate(arrows):
        ys, yr = ends[(i, "S")], ends[(i, "R")]
        xs, xr = _x(a.side), _x(1 - a.side)
        colour = next((_COLOURS[k] for k, _ in a.notes if k in _COLOURS), _INK)
        if a.lost:
            # Drawn two thirds of the way, ending in a cross.
            xe = xs + (xr - xs) * 0.66
            ye = ys + (yr - ys) * 0.66
            out.append(
                f'<line x1="{xs}" y1="{ys:.1f}" x2="{xe:.1f}" y2="{ye:.1f}" stroke="{colour}" '
                f'stroke-width="1.4" class="arrow"/>'
                f'<path d="M{xe - 5:.1f},{ye - 5:.1f} l10,10 M{xe - 5:.1f},{ye + 5:.1f} l10,-10" '
                f'stroke="#c0392b" stroke-width="2"/>'
            )
        else:
            dash = ' stroke-dasharray="6,3"' if any(k == "rst" for k, _ in a.notes) else ""
            out.append(
                f'<line x1="{xs}" y1="{ys:.1f}" x2="{xr}" y2="{yr:.1f}" stroke="{colour}" '
                f'stroke-width="1.4" marker-end="url(#head{colour[1:]})"{dash} class="arrow"/>'
            )
        # The label along the arrow, starting a little way from the sender and
        # running toward the receiver (so long labels never cross the far
        # line, and crossing arrows' labels sit at opposite ends); it reads
        # left to right whichever way the arrow goes.
        f = _LABEL_FROM_SENDER / _LANE_W
        lx = xs + (xr - xs) * f
        ly = ys + (yr - ys) * f
        angle = math.degrees(math.atan2((yr - ys) * (1 if xr > xs else -1), abs(xr - xs)))
        anchor = "start" if xr > xs else "end"
        parts = [f'<tspan fill="{_INK}">{escape(a.label)}</tspan>']
        for kind, note in a.notes:
            parts.append(
                f'<tspan dx="7" fill="{_COLOURS.get(kind, "#555555")}">{escape(note)}</tspan>'
            )
        label = f'<text x="0" y="-4" text-anchor="{anchor}" class="label">{"".join(parts)}</text>'
        extra = (
            f'<text x="0" y="{_LINE - 2}" text-anchor="{anchor}" fill="#555555" '
            f'class="options">{escape(a.extra)}</text>'
            if a.extra
            else ""
        )
        out.append(f'<g transform="translate({lx:.1f},{ly:.1f}) rotate({angle:.2f})">{label}{extra}</g>')
    for k, s in enumerate(footer):
        out.append(_text(8, foot_y + k * _LINE, s, "start", fill="#555555"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- from a capture


def _short_label(seg: Segment, seq_base: int, ack_base: int) -> str:
    parts = [f"[{seg.flags_str}]", f"seq={(seg.seq - seq_base) & 0xFFFFFFFF}"]
    if seg.flags & ACK:
        parts.append(f"ack={(seg.ack - ack_base) & 0xFFFFFFFF}")
    parts.append(f"win={seg.window}")
    if seg.payload:
        parts.append(f"len={len(seg.payload)}")
    return " ".join(parts)


def _syn_options(seg: Segment) -> str:
    parts = []
    if seg.mss is not None:
        parts.append(f"mss {seg.mss}")
    if seg.sack_permitted:
        parts.append("sackOK")
    if seg.ts is not None:
        parts.append("TS")
    if seg.wscale is not None:
        parts.append(f"wscale {seg.wscale}")
    return ", ".join(parts)


def _crowded(times: Sequence[tuple[int, int, bool]], limit: int = 6) -> bool:
    """Whether, drawn with their real slopes, arrows would cross too many others to read.

    Counts for each arrow the other arrows' ends between its own; if a tenth
    of the arrows have more than ``limit``, labels would sit on other lines.
    """
    if len(times) < 2 * limit:
        return False
    points = sorted(t for send, recv, _m in times for t in (send, recv))
    crossing = sorted(
        bisect.bisect_left(points, recv) - bisect.bisect_right(points, send)
        for send, recv, _m in times
    )
    return crossing[int(len(crossing) * 0.9)] > limit


def render_svg(
    conn: TcpConnection,
    *,
    t0: int | None = None,
    absolute: bool = False,
    timing: str = "auto",
    title: str = "",
    max_segments: int = 300,
) -> str:
    """One connection of a capture as an SVG ladder (see the module docstring for ``timing``)."""
    if timing not in ("auto", "fixed"):
        raise ValueError(f"timing must be 'auto' or 'fixed', got {timing!r}")
    if t0 is None:
        t0 = conn.start
    segs = conn.segments[:max_segments]
    times = conn.timing()[: len(segs)]
    measured = any(m for _s, _r, m in times)
    rtt = conn.rtt_us or 0
    timed = timing == "auto" and (measured or (conn.delay_to is not None and rtt >= 1000))
    crowded = timed and _crowded(times)
    timed = timed and not crowded
    seq_base = (0, 0) if absolute else (conn.base(CLIENT), conn.base(SERVER))
    frames = {s.frame: i for i, s in enumerate(segs)}
    arrows: list[Arrow] = []
    for s, (send, recv, _m) in zip(segs, times, strict=True):
        seg = s.seg
        a = Arrow(
            send if timed else s.time,
            recv if timed else s.time,
            s.direction,
            _short_label(seg, seq_base[s.direction], seq_base[1 - s.direction]),
            [(e.kind, e.text) for e in s.expert],
            _syn_options(seg) if seg.flags & SYN else "",
            frame=s.frame,
        )
        arrows.append(a)
    marks: list[Mark] = []
    for c in conn.states:
        if c.frame is None:
            marks.append(Mark(c.time, c.side, c.state))
            continue
        i = frames.get(c.frame)
        if i is None:
            continue  # beyond max_segments
        (arrows[i].at_recv if c.at_receive else arrows[i].at_send).append(c.state)
    if timed:
        # Initial states just before the first event.
        first = min((a.send for a in arrows), default=conn.start)
        for m in marks:
            m.time = min(m.time, first)
        scale = 140 / max(rtt, 1)
    else:
        scale = 0.0
    footer = []
    if timed and measured:
        footer.append("Arrows run from send to receive time, both captured (two capture points).")
    elif timed:
        assert conn.delay_to is not None
        to_c, to_s = conn.delay_to
        footer.append(
            f"Captured at one point ({conn.capture_point}); arrows slope by the one-way delays "
            f"estimated from the handshake: {_fmt_ms(to_c)} to the client, {_fmt_ms(to_s)} to the server."
        )
    else:
        why = (
            "--svg-timing fixed" if timing == "fixed"
            else "too many segments in flight to draw their slopes readably" if crowded
            else "no handshake in the capture" if conn.delay_to is None
            else f"round trip {_fmt_ms(rtt)}, too short to show"
        )
        footer.append(f"Captured at one point; arrows drawn with a fixed slant ({why}).")
    footer.append(
        "seq/ack " + ("absolute" if absolute else "relative to each side's ISN")
        + "; states inferred from the segments; times (ms from the capture's start) are when "
        + ("each segment was sent." if timed and measured else
           "each segment was sent (estimated for segments seen after travelling)." if timed else
           "each segment passed the capture point.")
    )
    if len(conn.segments) > len(segs):
        footer.append(f"{len(conn.segments) - len(segs)} later segments not drawn.")
    return draw_ladder(
        arrows,
        marks,
        left=("client", fmt_endpoint(conn.client)),
        right=("server", fmt_endpoint(conn.server)),
        title=title,
        t0=t0,
        timed=timed,
        px_per_us=scale,
        footer=footer,
    )


def svg_from_rows(rows: Sequence[Row], left: str = "client", right: str = "server",
                  title: str = "") -> str:
    """An SVG ladder from ``view.ladder`` rows (e.g. ``tcpstack demo``'s), with a fixed slant.

    Rows carry one time per segment (the sender's), so arrows get the fixed
    slant; state rows become marks beside their side, note rows remarks in
    the lane next to their side.
    """
    arrows: list[Arrow] = []
    marks: list[Mark] = []
    for r in rows:
        if r.kind == "seg":
            text = r.text.split(" <", 1)
            a = Arrow(r.time, r.time, r.side, text[0], lost=r.lost)
            if len(text) > 1 and r.seg is not None and r.seg.flags & SYN:
                a.extra = _syn_options(r.seg)
            arrows.append(a)
        elif r.kind == "state":
            marks.append(Mark(r.time, r.side, r.text))
        elif r.kind == "note":
            marks.append(Mark(r.time, r.side, r.text, note=True))
    return draw_ladder(arrows, marks, left=(left, ""), right=(right, ""), title=title,
                       footer=["Arrows drawn with a fixed slant; times in ms."])

