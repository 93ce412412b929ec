"""`tcpstack trace FILE`: any capture as ladder diagrams, with both ends' states inferred."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..view import infer
from ..view.ladder import LEGEND, render_text

EXPERT_LEGEND = """\
Notes in parentheses are expert info, as Wireshark's TCP analysis gives it:
retransmission (fast, spurious), out-of-order, previous segment not captured,
dup ACK #n, zero window (probe), window full, window update, keep-alive, RST.
States are inferred from the segments (see docs/trace.md): an end's state
changes when a segment shows it, at the capture time of that segment.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "trace",
        help="draw the TCP connections of a pcap/pcapng capture as ladder diagrams",
        description="Read a capture (pcap or pcapng, from tcpdump, Wireshark/tshark or "
        "tcpstack) and draw each TCP connection as a ladder diagram, with the RFC 9293 "
        "states of both ends inferred from the segments and Wireshark-style expert info.",
    )
    p.add_argument("file", metavar="FILE", help="a pcap or pcapng capture")
    p.add_argument("--conn", metavar="N", type=int, action="append", default=[],
                   help="only connection N (as numbered by --list; repeatable)")
    p.add_argument("--port", type=int, action="append", default=[],
                   help="only connections with this port at either end (repeatable)")
    p.add_argument("--host", action="append", default=[],
                   help="only connections with this address at either end (repeatable)")
    p.add_argument("--list", action="store_true", help="one line per connection, no ladders")
    p.add_argument("--absolute", action="store_true",
                   help="absolute sequence numbers (default: relative to each side's ISN)")
    p.add_argument("--full", action="store_true",
                   help="print every row of a long ladder (and draw every segment with --svg)")
    p.add_argument("--json", action="store_true",
                   help="JSON: connections with their segments, expert notes and inferred states")
    p.add_argument("--svg", metavar="FILE",
                   help="also draw the ladder as an SVG picture (one file per connection: "
                   "FILE, or FILE-N.svg when several are selected)")
    p.add_argument("--svg-timing", choices=["auto", "fixed"], default="auto",
                   help="arrow slant in the SVG: from measured or estimated delays (auto) "
                   "or a fixed slant")
    p.add_argument("--plot", metavar="FILE",
                   help="time-sequence and window graphs (PNG or SVG by extension; needs matplotlib)")
    p.add_argument("--direction", choices=["auto", "client", "server"], default="auto",
                   help="which sender's data --plot shows (auto: the one that sent more)")
    p.set_defaults(func=run)


def _out_path(base: str, conn: infer.TcpConnection, several: bool) -> str:
    if not several:
        return base
    p = Path(base)
    return str(p.with_name(f"{p.stem}-{conn.index}{p.suffix}"))


def run(args: argparse.Namespace) -> int:
    try:
        cap, conns = infer.load(args.file)
    except FileNotFoundError:
        raise SystemExit(f"tcpstack trace: {args.file}: no such file") from None
    except ValueError as exc:
        raise SystemExit(f"tcpstack trace: {args.file}: {exc}") from None
    selected = list(infer.iter_selected(conns, args.conn, args.port, args.host))
    t0 = cap.packets[0].time if cap.packets else 0

    if args.json:
        doc = {
            "file": args.file,
            "ip_packets": cap.ip_packets,
            "tcp_segments": len(cap.packets),
            "skipped": cap.skipped,
            "merged_copies": cap.merged,
            "start_us": t0,
            "connections": [c.as_dict(t0, args.absolute) for c in selected],
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        _print_text(args, cap, conns, selected, t0)

    several = len(selected) > 1
    if args.svg:
        from ..view.svg import render_svg

        for c in selected:
            path = _out_path(args.svg, c, several)
            Path(path).write_text(
                render_svg(c, t0=t0, absolute=args.absolute, timing=args.svg_timing,
                           title=f"{Path(args.file).name}, connection {c.index}",
                           max_segments=len(c.segments) if args.full else 300),
                encoding="utf-8",
            )
            print(f"wrote {path}", file=sys.stderr)
    if args.plot:
        from ..view.plot import PlotUnavailable, plot_segments

        direction = {"auto": None, "client": infer.CLIENT, "server": infer.SERVER}[args.direction]
        for c in selected:
            path = _out_path(args.plot, c, several)
            try:
                plot_segments(c.tuples(), path, direction=direction, t0=t0,
                              title=f"{Path(args.file).name}, connection {c.index}: "
                              f"{infer.fmt_endpoint(c.client)} - {infer.fmt_endpoint(c.server)}")
            except PlotUnavailable as exc:
                raise SystemExit(f"tcpstack trace: {exc}") from None
            print(f"wrote {path}", file=sys.stderr)
    if not selected:
        print("tcpstack trace: no connection matches" if conns else
              "tcpstack trace: no TCP connection in the capture", file=sys.stderr)
        return 1
    return 0


def _summary_line(c: infer.TcpConnection, t0: int) -> str:
    exp = c.expert_summary()
    notes = ", ".join(f"{n} {k}" for k, n in exp.items()) or "no expert notes"
    return (f"#{c.index}  {infer.fmt_endpoint(c.client)} -> {infer.fmt_endpoint(c.server)}  "
            f"{len(c.segments)} segments, {(c.end - c.start) / 1e6:.3f} s from "
            f"{(c.start - t0) / 1e6:.3f} s"
            f"{'' if c.handshake_seen else ', no handshake (mid-connection)'}; {notes}")


def _print_text(args: argparse.Namespace, cap: infer.Capture, conns: list[infer.TcpConnection],
                selected: list[infer.TcpConnection], t0: int) -> None:
    skipped = sum(cap.skipped.values())
    print(f"{args.file}: {cap.ip_packets} IP packets, {len(cap.packets)} TCP segments"
          f"{f', {skipped} skipped' if skipped else ''}"
          f"{f', {cap.merged} second copies merged' if cap.merged else ''}; "
          f"{len(conns)} connection{'s' if len(conns) != 1 else ''}")
    if args.list or len(selected) > 1:
        for c in selected:
            print("  " + _summary_line(c, t0))
    if args.list:
        return
    for c in selected:
        print()
        print(f"connection {_summary_line(c, t0)}")
        rows = infer.rows_for_connection(c, t0=t0, absolute=args.absolute)
        print(render_text(rows, "client", "server", max_rows=None if args.full else 120), end="")
        for side, name in enumerate(infer.SIDE_NAMES):
            print(f"{name}: " + " -> ".join(c.state_sequence(side)))
        if c.rtt_us is not None:
            print(f"handshake RTT {c.rtt_us / 1000:.3f} ms at the capture point "
                  f"(capture point: {c.capture_point})")
    if selected:
        print()
        print(LEGEND, end="")
        print(EXPERT_LEGEND, end="")

