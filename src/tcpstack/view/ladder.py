"""Ladder (sequence) diagrams like the figures of RFC 9293 and textbooks.

One row per segment (an arrow from the sender's timeline to the receiver's,
labelled with flags, seq, ack, window, length and options) and one row per
state change, written on the side that changed.  Sequence and acknowledgment
numbers are relative to each side's ISN by default, as Wireshark and
tcpdump show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tcp import events as ev
from ..tcp.events import Event
from ..wire.tcp import Opt, Segment, flags_to_str, format_options

LEFT, RIGHT = 0, 1


@dataclass
class Row:
    time: int  # µs
    side: int  # LEFT or RIGHT: the side that sent the segment or changed state
    kind: str  # "seg", "state" or "note"
    text: str
    lost: bool = False
    seg: Segment | None = None
    data: dict[str, Any] = field(default_factory=dict)


def option_text(opts: tuple[Opt, ...]) -> str:
    """Options in tcpdump's spelling (mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7)."""
    return format_options(opts)


def flags_text(flags: int) -> str:
    """tcpdump's flag string: S, S., ., P., F., FP., R, R. (plus U, E, W)."""
    return flags_to_str(flags)


def segment_label(seg: Segment, seq_base: int | None, ack_base: int | None) -> str:
    """'[S.] seq=0 ack=1 win=65535 len=0 <mss 1460>' with relative numbers when bases are given."""
    s = seg.seq if seq_base is None else (seg.seq - seq_base) & 0xFFFFFFFF
    parts = [f"[{flags_text(seg.flags)}]", f"seq={s}"]
    if seg.flags & 0x10:
        a = seg.ack if ack_base is None else (seg.ack - ack_base) & 0xFFFFFFFF
        parts.append(f"ack={a}")
    parts.append(f"win={seg.window}")
    parts.append(f"len={len(seg.payload)}")
    if seg.options:
        parts.append(f"<{option_text(seg.options)}>")
    return " ".join(parts)


def rows_from_events(
    events: list[tuple[int, Event]],
    absolute: bool = False,
    lost: set[tuple[int, int, int, int, int]] | None = None,
) -> list[Row]:
    """Rows from (side, Event) pairs recorded on both hosts, in time order.

    ``lost`` holds (side, seq, ack, flags, len) of segments the network
    dropped, so their arrows are drawn as lost.
    """
    isn: dict[int, int] = {}
    for side, e in events:
        if e.kind == ev.SEND and e.detail.flags & 0x02 and side not in isn:
            isn[side] = e.detail.seq
    rows: list[Row] = []
    lost = lost or set()
    lost_seen: dict[tuple[int, int, int, int, int], int] = {}
    for side, e in events:
        if e.kind == ev.STATE:
            old, new, cause = e.detail
            rows.append(Row(e.time, side, "state", str(new.value if hasattr(new, "value") else new), data={"cause": cause}))
        elif e.kind == ev.SEND:
            seg: Segment = e.detail
            other = 1 - side
            seq_base = None if absolute else isn.get(side)
            ack_base = None if absolute else isn.get(other)
            key = (side, seg.seq, seg.ack, seg.flags, len(seg.payload))
            is_lost = False
            if key in lost:
                # The network lost one copy of this segment: mark the first send only.
                if lost_seen.get(key, 0) == 0:
                    is_lost = True
                    lost_seen[key] = 1
            rows.append(Row(e.time, side, "seg", segment_label(seg, seq_base, ack_base), is_lost, seg))
        elif e.kind == ev.INFO:
            rows.append(Row(e.time, side, "note", str(e.detail)))
        elif e.kind == ev.TIMER:
            rows.append(Row(e.time, side, "note", f"{e.detail} timer fired"))
    rows.sort(key=lambda r: r.time)  # stable: same-time rows keep event order
    return rows


def render_text(rows: list[Row], left: str = "client", right: str = "server", width: int = 110, max_rows: int | None = None) -> str:
    """The ladder as plain text (no colour codes; pipe-friendly)."""
    tw = 11  # time column
    col = 14  # state columns
    mid = max(40, width - tw - 2 * col - 4)
    lines = [f"{'time (ms)':>{tw}}  {left:<{col}}{'':{mid}}  {right:>{col}}"]
    lines.append(f"{'':>{tw}}  {'-' * len(left):<{col}}{'':{mid}}  {'-' * len(right):>{col}}")
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[: max_rows // 2] + [None] + rows[-max_rows // 2 :]  # type: ignore[list-item]
    for r in shown:
        if r is None:
            lines.append(f"{'':>{tw}}  {'... ' + str(len(rows) - (max_rows or 0)) + ' rows not shown (use --full) ...':^{col * 2 + mid}}")
            continue
        t = f"{r.time / 1000:>{tw}.3f}"
        if r.kind == "state":
            if r.side == LEFT:
                lines.append(f"{t}  {r.text:<{col}}")
            else:
                lines.append(f"{t}  {'':<{col}}{'':{mid}}  {r.text:>{col}}")
        elif r.kind == "note":
            text = f"({r.text})"
            if r.side == LEFT:
                lines.append(f"{t}  {'':<{col}}{text:<{mid}}")
            else:
                lines.append(f"{t}  {'':<{col}}{text:>{mid}}")
        else:
            label = f" {r.text} "
            if r.side == LEFT:
                body = "|--" + label
                tail = "--X lost" if r.lost else "-->|"
                arrow = body + "-" * max(1, mid - len(body) - len(tail)) + tail
            else:
                head = "X-- lost" if r.lost else "|<--"
                body = label + "--|"
                arrow = head + "-" * max(1, mid - len(head) - len(body)) + body
            lines.append(f"{t}  {'':<{col}}{arrow}")
    return "\n".join(lines) + "\n"


LEGEND = """\
How to read it: time runs down.  Each arrow is one segment: [S] SYN, [S.] SYN+ACK,
[.] ACK, [P.] data with PSH, [F.] FIN, [R] RST.  seq and ack are relative to each
side's initial sequence number (--absolute for raw values); win is the window the
sender advertises; len the payload bytes; <...> the TCP options.  A state name on
a side is the state that side entered at that moment (RFC 9293 §3.3.2).
"""
