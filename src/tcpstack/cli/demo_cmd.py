"""`tcpstack demo`: a client and a server on two simulated hosts, as a ladder diagram."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..sim.link import LinkParams, parse_rate
from ..sim.transfer import CLOSE_MODES, run_transfer
from ..view.ladder import LEGEND, render_text, rows_from_events
from .tunables import add_tunable_args, config_from_args


def probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {p}")
    return p


def rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cc_samples(events: list[Any]) -> list[tuple[int, Any]]:
    """(time, CcSample) of the data sender (the client) from the engine's cc events."""
    from ..tcp import events as ev

    return [(e.time, e.detail) for side, e in events if side == 0 and e.kind == ev.CC]


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a client and a server in the simulator and draw the ladder",
                       description="Run a TCP conversation between two simulated hosts (virtual time, "
                       "deterministic from --seed) and print it as a ladder diagram.")
    p.add_argument("--bytes", type=int, default=2000, help="bytes the client sends (default 2000)")
    p.add_argument("--loss", type=probability, default=0.0, help="loss probability per packet")
    p.add_argument("--dup", type=probability, default=0.0, help="duplication probability")
    p.add_argument("--reorder", type=probability, default=0.0, help="reordering probability")
    p.add_argument("--corrupt", type=probability, default=0.0,
                   help="bit-corruption probability (flips the TCP/IP checksums can detect)")
    p.add_argument("--delay", type=float, default=10.0, help="one-way delay in ms (default 10)")
    p.add_argument("--bandwidth", type=rate, default=None, help="link rate, tc-style: 10mbit, 1gbit")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--close-first", choices=CLOSE_MODES, default="client",
                   help="who closes first (both = simultaneous close)")
    p.add_argument("--absolute", action="store_true", help="absolute sequence numbers")
    p.add_argument("--pcap", metavar="FILE", help="write the client's view as a pcap file")
    p.add_argument("--plot", metavar="FILE", help="draw the time-sequence and window graphs (PNG or SVG)")
    p.add_argument("--svg", metavar="FILE", help="draw the ladder as an SVG picture")
    p.add_argument("--full", action="store_true", help="print every row of a long ladder")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the ladder")
    add_tunable_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.bytes < 0:
        raise SystemExit("tcpstack: --bytes must not be negative")
    cfg = config_from_args(args)
    link = LinkParams(
        delay_us=int(args.delay * 1000),
        rate_bps=args.bandwidth,
        loss=args.loss,
        dup=args.dup,
        reorder=args.reorder,
        corrupt=args.corrupt,
        # Only flips the Internet checksum can see: a two-bit pattern that cancels out
        # in the one's-complement sum would be delivered as bad data, as on a real link.
        corrupt_detectable=True,
    )
    res = run_transfer(args.bytes, seed=args.seed, link=link, close_first=args.close_first,
                       config=cfg, pcap=args.pcap, record=not args.json or bool(args.plot or args.svg))
    if args.svg:
        from ..view.svg import svg_from_rows

        rows = rows_from_events(res.events, absolute=args.absolute, lost=res.lost)
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(svg_from_rows(rows, "client", "server", title=f"tcpstack demo: {args.bytes} bytes, seed {args.seed}"))
    if args.plot:
        from ..view.plot import PlotUnavailable, plot_segments, segments_from_events

        try:
            plot_segments(segments_from_events(res.events), args.plot, direction=0,
                          title=f"tcpstack demo: {args.bytes} bytes, seed {args.seed}",
                          cc=cc_samples(res.events))
        except PlotUnavailable as exc:
            raise SystemExit(f"tcpstack: {exc}") from None
    if args.json:
        json.dump(res.summary(), sys.stdout, indent=2)
        print()
    else:
        rows = rows_from_events(res.events, absolute=args.absolute, lost=res.lost)
        print(render_text(rows, "client", "server", max_rows=None if args.full else 120))
        print(LEGEND)
        ok = res.sent_sha256 == res.received_sha256
        print(f"{res.bytes} bytes sent, {res.received_bytes} received "
              f"({'sha256 equal' if ok else 'sha256 DIFFERS'}); {res.segments} segments, "
              f"{res.retransmits} retransmitted; {res.sim_time_s:.3f} s of simulated time")
        print("client: " + " -> ".join(res.client_states))
        print("server: " + " -> ".join(res.server_states))
    return 0 if res.completed and res.sent_sha256 == res.received_sha256 else 1
